"""Fashion-MNIST (Xiao et al., 2017) and MNIST: locate, verify, download, load.

Where the IDX files are looked for (each folder may hold them directly or in a `fashion-mnist/`
or `mnist/` subfolder):

    1. an explicit `root`, and only there
    2. else $NORMLAB_DATA, and only there
    3. else ~/.cache/normlab ($XDG_CACHE_HOME/normlab when that is set), then
       /usr/share/datasets/fashion-mnist (Debian's `dataset-fashion-mnist` package)
    4. a download from the official mirrors, when `download=True`, into the first of 1-3

A location the user names (1 or 2) is the only one: when the files are not there, that is an
error, not a quiet fall-back to another copy (and never train files from one folder and test
files from another). An empty $NORMLAB_DATA is an error too.

Every file is verified by MD5 before use. The official checksums are those of the `.gz` files;
a copy that was re-compressed (Debian's is) or stored uncompressed is verified by the MD5 of
its decompressed content instead, so both prove the same bytes.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch

from normlab._io import atomic_open, naming
from normlab._tqdm import tqdm
from normlab.data.idx import CorruptFileError, DataError, decompress, parse_idx
from normlab.data.loader import ImageTransform, TensorLoader


class ChecksumError(CorruptFileError):
    """A file's MD5 is not the official one."""


class DatasetNotFoundError(DataError, FileNotFoundError):
    """The dataset is in none of the lookup places and download is off."""


class DownloadError(DataError):
    """Every mirror failed."""


@dataclass(frozen=True)
class Resource:
    """One official file: its name, the MD5 of the .gz, and the MD5 of its decompressed content."""

    filename: str
    md5: str
    raw_md5: str

    @property
    def raw_name(self) -> str:
        return self.filename.removesuffix(".gz")


@dataclass(frozen=True)
class DatasetInfo:
    name: str                     # as shown to users
    dirname: str                  # subfolder under a data root
    mirrors: tuple[str, ...]      # base URLs, tried in turn
    train: tuple[Resource, Resource]  # images, labels
    test: tuple[Resource, Resource]
    num_train: int
    num_test: int
    image_size: tuple[int, int] = (28, 28)
    system_dirs: tuple[str, ...] = ()  # where a distribution package installs it
    system_package: str = ""      # that package's name (Debian's)

    @property
    def resources(self) -> tuple[Resource, ...]:
        return self.train + self.test


FASHION_MNIST = DatasetInfo(
    name="Fashion-MNIST",
    dirname="fashion-mnist",
    mirrors=(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
    train=(Resource("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
           Resource("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe", "9018921c3c673c538a1fc5bad174d6f9")),
    test=(Resource("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79", "8181f5470baa50b63fa0f6fddb340f0a"),
          Resource("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310", "15d484375f8d13e6eb1aabb0c3f46965")),
    num_train=60000,
    num_test=10000,
    system_dirs=("/usr/share/datasets/fashion-mnist",),
    system_package="dataset-fashion-mnist",
)

MNIST_INFO = DatasetInfo(
    name="MNIST",
    dirname="mnist",
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    train=(Resource("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873", "6bbc9ace898e44ae57da46a324031adb"),
           Resource("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432", "a25bea736e30d166cdddb491f175f624")),
    test=(Resource("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3", "2646ac647ad5339dbf082846283269ea"),
          Resource("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c", "27ae3e4e09519cfbb04c329615203637")),
    num_train=60000,
    num_test=10000,
)

DATASETS = {"fashion-mnist": FASHION_MNIST, "mnist": MNIST_INFO}


# ---------------------------------------------------------------- where the files are

def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "normlab"


def data_roots(root: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """The user-writable roots, in lookup order, each with the label `normlab data status` shows:
    the one the user names (`root`, else $NORMLAB_DATA), else the cache."""
    if root is not None:
        return [("root", Path(root))]
    if "NORMLAB_DATA" in os.environ:
        if not os.environ["NORMLAB_DATA"].strip():
            raise DataError("NORMLAB_DATA is set but empty; name the folder that holds the data, or unset it "
                            f"to use the cache ({cache_dir()}) and the system's copy")
        return [("$NORMLAB_DATA", Path(os.environ["NORMLAB_DATA"]))]
    return [("cache", cache_dir())]


def candidate_dirs(info: DatasetInfo, root=None) -> list[tuple[str, Path]]:
    """Every folder searched for `info`'s files, in lookup order: the system's copy only when the
    user names no location."""
    dirs = []
    for label, base in data_roots(root):
        dirs += [(label, base), (label, base / info.dirname)]
    if dirs[0][0] == "cache":
        dirs += [("system", Path(d)) for d in info.system_dirs]
    return dirs


def find_file(folder: Path, resource: Resource) -> Path | None:
    """The resource in `folder`, gzipped or raw, or None."""
    for name in (resource.filename, resource.raw_name):
        if (folder / name).is_file():
            return folder / name
    return None


def locate(info: DatasetInfo, resources, root=None) -> tuple[str, Path] | None:
    """The first folder, in lookup order, that holds all `resources`."""
    for label, folder in candidate_dirs(info, root):
        if all(find_file(folder, r) for r in resources):
            return label, folder
    return None


def download_dir(info: DatasetInfo, root=None) -> Path:
    return data_roots(root)[0][1] / info.dirname


# ---------------------------------------------------------------- verification

def md5_of(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def verified_content(path: Path, resource: Resource, verify: bool = True) -> tuple[bytes, str]:
    """The decompressed bytes of `path`, and how they were verified.

    Raises ChecksumError naming the file when neither the file's MD5 (the official .gz) nor
    the MD5 of its content matches.
    """
    with naming(path):
        raw = path.read_bytes()
    content = decompress(raw, path) if path.suffix == ".gz" else raw
    if not verify:
        return content, "not verified"
    if path.suffix == ".gz" and md5_of(raw) == resource.md5:
        return content, "md5 ok"
    got = md5_of(content)
    if got != resource.raw_md5:
        raise ChecksumError(
            f"{path}: MD5 mismatch: content MD5 is {got}, expected {resource.raw_md5} "
            f"(or {resource.md5} for the official .gz). The file is damaged or not the official one; "
            "delete it and fetch it again (download=True, or `normlab data fetch`)."
        )
    return content, "md5 ok (content)"


# ---------------------------------------------------------------- download

def download_file(url: str, dest: Path, resource: Resource, timeout: float = 60.0) -> Path:
    """Stream `url` to a temporary file beside `dest`, verify it, then rename it to `dest`.

    Nothing is left at `dest` (or beside it) unless the MD5 matched.
    """
    with atomic_open(dest, "wb") as f:
        digest, received = hashlib.md5(), 0
        with urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=None, leave=False) as bar:
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    f.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if total is not None and received != total:
            raise OSError(f"transfer cut off after {received} of {total} bytes")
        if digest.hexdigest() != resource.md5:
            raise ChecksumError(f"MD5 mismatch: got {digest.hexdigest()}, expected {resource.md5}")
    return dest


def fetch(info: DatasetInfo, root=None, resources=None) -> Path:
    """Fetch `resources` (default: all four files) of `info` into the download folder.

    Each file is tried at every mirror in turn; files already present and verified are kept.
    """
    folder = download_dir(info, root)
    folder.mkdir(parents=True, exist_ok=True)
    for resource in resources or info.resources:
        existing = find_file(folder, resource)
        if existing is not None:
            try:
                verified_content(existing, resource)
                continue
            except CorruptFileError:
                pass  # replaced below; the new file is renamed over it only once verified
        errors = []
        for mirror in info.mirrors:
            url = mirror + resource.filename
            try:
                download_file(url, folder / resource.filename, resource)
                break
            # URLError, timeouts and cut transfers are OSErrors; a malformed response is an HTTPException
            except (OSError, http.client.HTTPException, ChecksumError) as e:
                errors.append(f"  {url}: {e}")
        else:
            raise DownloadError(
                f"could not download {info.name} file {resource.filename}; every mirror failed:\n"
                + "\n".join(errors)
                + "\nNo file was written. " + _fix_hint(info)
            )
    return folder


def _fix_hint(info: DatasetInfo) -> str:
    ways = [f"`apt-get install {info.system_package}` (Debian/Ubuntu)"] if info.system_package else []
    ways += ["download=True (`normlab data fetch " + info.dirname + "`) on a machine with internet",
             "NORMLAB_DATA=/path/to/a/folder holding " + ", ".join(r.filename for r in info.resources)]
    return "Fix: " + "; or ".join(ways) + "."


# ---------------------------------------------------------------- the dataset

class IdxImageDataset(torch.utils.data.Dataset):
    """An MNIST-style dataset as two in-memory tensors: `data` (N, 28, 28) uint8, `targets` (N,) int64.

    Subclasses name their files and checksums (`info`) and their `classes`.

    Args:
        root: a folder to look in first (see the module docstring for the full lookup order).
        train: the 60000 training images, else the 10000 test images.
        download: fetch from the official mirrors when no folder has the files.
        verify: check MD5s (turn off only for data you made yourself).

    `dataset[i]` gives `(image float32 (1, 28, 28) in [0, 1], label)`, as the book's
    torchvision dataset with ToTensor does; the loaders use the tensors directly.
    """

    info: DatasetInfo
    classes: list[str]

    def __init__(self, root=None, train: bool = True, download: bool = False, verify: bool = True):
        info = self.info
        resources = info.train if train else info.test
        found = locate(info, resources, root)
        if found is None and download:
            fetch(info, root, resources)
            found = locate(info, resources, root)
        if found is None:
            looked = "\n".join(f"  {folder}  ({label})" for label, folder in candidate_dirs(info, root))
            raise DatasetNotFoundError(
                f"{info.name} ({'train' if train else 'test'}) not found; looked for "
                f"{resources[0].filename} and {resources[1].filename} in:\n{looked}\n{_fix_hint(info)}"
            )
        self.source, self.folder = found
        self.train = train
        self.files = [find_file(self.folder, r) for r in resources]
        try:
            images, labels = (parse_idx(verified_content(path, r, verify)[0], str(path))
                              for path, r in zip(self.files, resources))
        except CorruptFileError as e:
            if self.source != "system":
                raise
            # A file the package manager owns: reinstalling is the fix, not deleting it.
            raise type(e)(f"{e}\nThis copy belongs to the system package; restore it with "
                          f"`apt-get install --reinstall {info.system_package}`.") from None
        self.data, self.targets = self._check(images, labels, verify)

    def _check(self, images: torch.Tensor, labels: torch.Tensor, verify: bool):
        info, (image_file, label_file) = self.info, self.files
        if images.dtype != torch.uint8 or images.dim() != 3 or tuple(images.shape[1:]) != info.image_size:
            raise CorruptFileError(f"{image_file}: expected uint8 images of N×{info.image_size[0]}×{info.image_size[1]}, "
                                   f"got {images.dtype} of shape {tuple(images.shape)}")
        if labels.dtype != torch.uint8 or labels.dim() != 1:
            raise CorruptFileError(f"{label_file}: expected a 1-D uint8 label vector, "
                                   f"got {labels.dtype} of shape {tuple(labels.shape)}")
        if len(images) != len(labels):
            raise CorruptFileError(f"{image_file} holds {len(images)} images but {label_file} holds {len(labels)} labels; "
                                   "the two files are from different releases or one is damaged")
        if len(labels) and int(labels.max()) >= len(self.classes):
            raise CorruptFileError(f"{label_file}: label {int(labels.max())} out of range 0-{len(self.classes) - 1}")
        expected = info.num_train if self.train else info.num_test
        if verify and len(images) != expected:  # only reachable if checksums were edited
            raise CorruptFileError(f"{image_file}: {len(images)} images, the official file has {expected}")
        return images, labels.to(torch.int64)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.data[i].unsqueeze(0).to(torch.float32) / 255, int(self.targets[i])

    def __repr__(self) -> str:
        split = "train" if self.train else "test"
        return f"{type(self).__name__}({split}, {len(self)} images, from {self.folder} [{self.source}])"


class FashionMNIST(IdxImageDataset):
    """Fashion-MNIST (Xiao et al., 2017): 60000 + 10000 grey 28×28 images of ten kinds of clothing.

    `FashionMNIST(root=None, train=True, download=False, verify=True)`; see IdxImageDataset.
    """

    info = FASHION_MNIST
    classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]  # Zalando's names, label order


class MNIST(IdxImageDataset):
    """MNIST (LeCun et al., 1998): 60000 + 10000 grey 28×28 handwritten digits; see IdxImageDataset."""


    info = MNIST_INFO
    classes = [str(digit) for digit in range(10)]


DATASET_CLASSES: dict[str, type[IdxImageDataset]] = {"fashion-mnist": FashionMNIST, "mnist": MNIST}


def pixel_mean_std(images: torch.Tensor) -> tuple[float, float]:
    """Mean and (population) standard deviation of all pixels of uint8 images, scaled to [0, 1]."""
    x = images.to(torch.float64).div_(255)
    return float(x.mean()), float(x.std(correction=0))


def load_dataset(dataset: type[IdxImageDataset], batch_size: int, resize=None, root=None, shuffle: bool = True,
                 drop_last: bool = False, seed: int | None = None, normalize: bool = False, device=None,
                 download: bool = False, train_subset: int | None = None, test_subset: int | None = None,
                 augment: bool = False, augment_shift: int = 2) -> tuple[TensorLoader, TensorLoader]:
    """`(train_iter, test_iter)` for `dataset`; see `load_fashion_mnist`.

    `train_subset`/`test_subset` keep the first N examples; `augment` flips and shifts the
    training images (ImageTransform), never the test images.
    """
    train, test = dataset(root, train=True, download=download), dataset(root, train=False, download=download)
    train_x, train_y = train.data[:train_subset], train.targets[:train_subset]
    test_x, test_y = test.data[:test_subset], test.targets[:test_subset]
    mean, std = pixel_mean_std(train_x) if normalize else (None, None)  # training-set statistics for both
    train_iter = TensorLoader(train_x, train_y, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                              seed=seed, device=device,
                              transform=ImageTransform(resize, mean, std, augment=augment, shift=augment_shift))
    test_iter = TensorLoader(test_x, test_y, batch_size=batch_size, shuffle=False,
                             transform=ImageTransform(resize, mean, std), device=device)
    return train_iter, test_iter


def load_fashion_mnist(batch_size: int, resize=None, root=None, shuffle: bool = True, drop_last: bool = False,
                       seed: int | None = None, normalize: bool = False, device=None,
                       download: bool = False) -> tuple[TensorLoader, TensorLoader]:
    """Fashion-MNIST as `(train_iter, test_iter)`, like the book's `d2l.load_data_fashion_mnist`.

    Each iterator yields `(X, y)`: X float32 (batch, 1, H, W) in [0, 1] (standardized with the
    training set's pixel mean and std when `normalize`), y int64. The training order is
    reshuffled every epoch from `seed`; the test set is served in order. `resize` (an int or
    (H, W)) scales by bilinear interpolation. `len(train_iter)` is the number of batches.
    """
    return load_dataset(FashionMNIST, batch_size, resize, root, shuffle, drop_last, seed, normalize, device, download)


def load_mnist(batch_size: int, resize=None, root=None, shuffle: bool = True, drop_last: bool = False,
               seed: int | None = None, normalize: bool = False, device=None,
               download: bool = False) -> tuple[TensorLoader, TensorLoader]:
    """MNIST as `(train_iter, test_iter)`; the same interface as `load_fashion_mnist`."""
    return load_dataset(MNIST, batch_size, resize, root, shuffle, drop_last, seed, normalize, device, download)
