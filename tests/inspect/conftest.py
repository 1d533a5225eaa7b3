"""Small runs for the inspection tests: random 8×8 images (4 classes), 96 to train on, 32 to test."""
import pytest
import torch

from normlab.data import ImageTransform, TensorLoader
from normlab.train import RunConfig
from normlab.train.config import override


@pytest.fixture
def loaders():
    def make(batch_size=16, seed=0, n_train=96, n_test=32):
        g = torch.Generator().manual_seed(seed)
        x = torch.randint(0, 256, (n_train + n_test, 8, 8), generator=g, dtype=torch.uint8)
        y = torch.randint(0, 4, (n_train + n_test,), generator=g)
        t = ImageTransform()
        return (TensorLoader(x[:n_train], y[:n_train], batch_size=batch_size, seed=seed, transform=t),
                TensorLoader(x[n_train:], y[n_train:], batch_size=batch_size, shuffle=False, transform=t))
    return make


@pytest.fixture
def config():
    def make(**updates):
        base = {"epochs": 3, "lr": 0.1, "device": "cpu", "seed": 0, "batch_size": 16, "record_stats": True}
        return override(RunConfig(), {**base, **updates})
    return make

