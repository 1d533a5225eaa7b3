"""Shared fixtures: every test sees an empty cache and no $NORMLAB_DATA unless it sets them; tiny
learnable image runs (`loaders`, `config`) for the trainer and inspection tests; small experiments
on the regression task (`poly_spec`, `poly_spec_file`)."""
import os

import pytest
import tomli_w
import torch

from normlab.data import ImageTransform, TensorLoader
from normlab.experiments import parse_spec
from normlab.train import RunConfig
from normlab.train.config import override


@pytest.fixture(autouse=True)
def isolated_data_env(tmp_path_factory, monkeypatch):
    monkeypatch.delenv("NORMLAB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))


@pytest.fixture(scope="session")
def real_fashion_mnist():
    """Skip (fail in CI, where .ci/run installs it) when the real Fashion-MNIST is not on this machine."""
    from normlab.data import FASHION_MNIST
    from normlab.data.fashion_mnist import locate

    if locate(FASHION_MNIST, FASHION_MNIST.resources) is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have Fashion-MNIST: .ci/run installs dataset-fashion-mnist")
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")


def tiny_images(n=96, size=8, seed=0):
    """Images whose label is the brightest quadrant: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 120, (n, size, size), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 4, (n,), generator=g)
    h = size // 2
    for label, (r, c) in enumerate([(0, 0), (0, h), (h, 0), (h, h)]):
        x[y == label, r:r + h, c:c + h] += 100
    return x, y


@pytest.fixture
def loaders():
    def make(batch_size=16, seed=0, n_train=96, n_test=32):
        x, y = tiny_images(n_train + n_test)
        t = ImageTransform()
        return (TensorLoader(x[:n_train], y[:n_train], batch_size=batch_size, seed=seed, transform=t),
                TensorLoader(x[n_train:], y[n_train:], batch_size=batch_size, shuffle=False, transform=t))
    return make


@pytest.fixture
def config():
    def make(**updates):
        base = {"epochs": 3, "lr": 0.1, "device": "cpu", "seed": 0, "batch_size": 16}
        return override(RunConfig(), {**base, **updates})
    return make


def poly(variants=None, seeds=(0, 1), epochs=2, **extra):
    """A small experiment on the synthetic regression task: no data files, under a second a run."""
    return {"name": "tiny", "data": {"dataset": "poly"}, "model": {"name": "mlp"},
            "train": {"epochs": epochs, "device": "cpu", "points_per_epoch": 1},
            "variants": variants or {"none": {"norm": "none"}, "bn": {"norm": "batch"}},
            "seeds": list(seeds), **extra}


@pytest.fixture
def poly_spec():
    """poly(...) as a Spec."""
    return lambda **kw: parse_spec(poly(**kw))


@pytest.fixture
def poly_spec_file(tmp_path):
    """poly(...) written to tmp_path/tiny.toml, as a user's spec file; returns the path."""
    def make(**kw):
        path = tmp_path / "tiny.toml"
        path.write_text(tomli_w.dumps(poly(**kw)))
        return path
    return make
