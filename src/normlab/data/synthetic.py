"""Synthetic data: the polynomial regression of the seeds' BN-placement study (tensorGenReg).

    features x ~ N(0, I)                      (n, len(w)), plus a column of ones when bias
    label    y = Σ_j w_j · x_j^deg (+ b) + noise · ε,   ε ~ N(0, 1)     (n, 1)

With `bias=True` the last entry of `w` is the intercept b, as in the seeds' helper.
Draws happen in the seeds' order (features, then noise), so `seed=s` gives the same data as
`torch.manual_seed(s)` followed by the seeds' `tensorGenReg(...)`.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from normlab.data.loader import TensorLoader


def make_poly_regression(n: int = 1000, w: Sequence[float] = (2, -1), bias: bool = False, deg: int = 2,
                         noise: float = 0.01, seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`(features (n, d) float32, labels (n, 1) float32)` of a degree-`deg` polynomial plus noise.

    The seeds' study uses `w=(2, -1), bias=False, deg=2`: y = 2·x1² − x2² + 0.01·ε.
    """
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    if len(w) < (2 if bias else 1):
        raise ValueError(f"w needs at least {'two entries (weights and the intercept)' if bias else 'one weight'}, got {list(w)}")
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    weights = torch.tensor(w[:-1] if bias else w, dtype=torch.float32).reshape(-1, 1)  # (d, 1)
    x = torch.randn(n, len(weights), generator=generator)
    y = x.pow(deg) @ weights
    if bias:
        y = y + float(w[-1])
        x = torch.cat([x, torch.ones(n, 1)], dim=1)  # the seeds append the constant feature
    y = y + torch.randn(y.shape, generator=generator) * noise
    return x, y


def split_loaders(features: torch.Tensor, labels: torch.Tensor, batch_size: int = 10,
                  train_fraction: float = 0.7, seed: int | None = None) -> tuple[TensorLoader, TensorLoader]:
    """A seeded random train/test split, as `(train_iter, test_iter)` (the seeds' `split_loader`).

    The training iterator reshuffles every epoch; the test iterator serves in order.
    """
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    n = len(features)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    perm = torch.randperm(n, generator=generator)
    n_train = int(n * train_fraction)
    train, test = perm[:n_train], perm[n_train:]
    if len(train) == 0 or len(test) == 0:
        raise ValueError(f"a split of {n} examples at {train_fraction} leaves one side empty")
    return (TensorLoader(features[train], labels[train], batch_size=batch_size, shuffle=True, seed=seed),
            TensorLoader(features[test], labels[test], batch_size=batch_size, shuffle=False))


def load_poly_regression(batch_size: int = 10, n: int = 1000, w: Sequence[float] = (2, -1), bias: bool = False,
                         deg: int = 2, noise: float = 0.01, train_fraction: float = 0.7,
                         seed: int | None = None) -> tuple[TensorLoader, TensorLoader]:
    """`make_poly_regression` then `split_loaders`, with one seed for both."""
    features, labels = make_poly_regression(n, w, bias, deg, noise, seed)
    return split_loaders(features, labels, batch_size, train_fraction, seed)


def write_idx_dataset(folder, info, n_train: int = 20, n_test: int = 10, seed: int = 0, gz: bool = True,
                      num_classes: int = 10):
    """Write a tiny random dataset under `info`'s file names into `folder` (for tests and demos).

    Returns a copy of `info` whose checksums are those of the written files, so it verifies
    exactly as the real dataset does. With `gz=False` the files are stored uncompressed.
    """
    from dataclasses import replace
    from pathlib import Path

    from normlab.data.fashion_mnist import Resource, md5_of
    from normlab.data.idx import idx_bytes, write_idx

    folder = Path(folder)
    generator = torch.Generator().manual_seed(seed)
    h, w = info.image_size
    resources = []
    for resource, n, is_images in zip(info.resources, (n_train, n_train, n_test, n_test), (True, False) * 2):
        tensor = (torch.randint(0, 256, (n, h, w), generator=generator, dtype=torch.uint8) if is_images
                  else torch.randint(0, num_classes, (n,), generator=generator, dtype=torch.uint8))
        name = resource.filename if gz else resource.raw_name
        path = write_idx(folder / name, tensor)
        raw = idx_bytes(tensor)
        resources.append(Resource(resource.filename, md5_of(path.read_bytes()) if gz else "", md5_of(raw)))
    return replace(info, train=tuple(resources[:2]), test=tuple(resources[2:]), num_train=n_train, num_test=n_test)
