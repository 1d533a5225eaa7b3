"""Datasets and fast in-memory loaders: Fashion-MNIST, MNIST, and the synthetic regression task."""
from normlab.data.fashion_mnist import (
    DATASETS,
    FASHION_MNIST,
    MNIST_INFO,
    ChecksumError,
    DatasetInfo,
    DatasetNotFoundError,
    DownloadError,
    FashionMNIST,
    IdxImageDataset,
    MNIST,
    Resource,
    fetch,
    load_dataset,
    load_fashion_mnist,
    load_mnist,
    pixel_mean_std,
)
from normlab.data.idx import CorruptFileError, DataError, read_idx, write_idx
from normlab.data.loader import ImageTransform, TensorLoader
from normlab.data.synthetic import load_poly_regression, make_poly_regression, split_loaders

__all__ = [
    "DATASETS", "FASHION_MNIST", "MNIST_INFO", "ChecksumError", "CorruptFileError", "DataError",
    "DatasetInfo", "DatasetNotFoundError", "DownloadError", "FashionMNIST", "IdxImageDataset", "ImageTransform", "MNIST",
    "Resource", "TensorLoader", "fetch", "load_dataset", "load_fashion_mnist", "load_mnist",
    "load_poly_regression", "make_poly_regression", "pixel_mean_std", "read_idx", "split_loaders",
    "write_idx",
]
