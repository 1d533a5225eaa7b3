"""Integration tests on the real Fashion-MNIST (Debian's dataset-fashion-mnist, or $NORMLAB_DATA).

Run in CI, where .ci/run installs the data; skipped elsewhere when it is absent.
"""
import pytest
import torch

from normlab.data import FashionMNIST, load_fashion_mnist, pixel_mean_std

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("real_fashion_mnist")]


@pytest.fixture(scope="module")
def train():
    return FashionMNIST(train=True)


@pytest.fixture(scope="module")
def test():
    return FashionMNIST(train=False)


def test_official_counts_shapes_and_balanced_classes(train, test):
    assert train.data.shape == (60000, 28, 28) and test.data.shape == (10000, 28, 28)
    assert train.data.dtype == torch.uint8
    assert torch.equal(train.targets.bincount(), torch.full((10,), 6000))
    assert torch.equal(test.targets.bincount(), torch.full((10,), 1000))


def test_known_pixel_statistics(train):
    mean, std = pixel_mean_std(train.data)
    assert round(mean, 4) == 0.2860 and round(std, 4) == 0.3530  # the values every tutorial quotes


def test_full_epoch_at_the_books_batch_size(test):
    train_iter, test_iter = load_fashion_mnist(256, seed=0)
    assert (len(train_iter), len(test_iter)) == (235, 40)
    seen, count = torch.zeros(10, dtype=torch.int64), 0
    for X, y in train_iter:
        assert X.dtype == torch.float32 and X.shape[1:] == (1, 28, 28)
        seen += y.bincount(minlength=10)
        count += len(y)
    assert count == 60000 and torch.equal(seen, torch.full((10,), 6000))
    X, y = next(iter(test_iter))  # the test set is served in file order
    assert torch.equal(X[:, 0] * 255, test.data[:256].float()) and torch.equal(y, test.targets[:256])


@pytest.mark.parametrize("resize", [224, 96])
def test_resized_batches_for_the_big_models(resize):
    train_iter, _ = load_fashion_mnist(128, resize=resize, seed=0)
    X, y = next(iter(train_iter))
    assert X.shape == (128, 1, resize, resize) and y.shape == (128,)
    assert 0 <= X.min() and X.max() <= 1
