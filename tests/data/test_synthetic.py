import pytest
import torch

from normlab.data import load_poly_regression, make_poly_regression, split_loaders


def seeds_tensorGenReg(num_examples=1000, w=(2, -1, 1), bias=True, delta=0.01, deg=1):
    """The seeds' helper, restated from its definition, drawing from torch's global generator."""
    if bias:
        num_inputs = len(w) - 1
        features_true = torch.randn(num_examples, num_inputs)
        w_true = torch.tensor(w[:-1]).reshape(-1, 1).float()
        b_true = torch.tensor(w[-1]).float()
        labels_true = torch.mm(torch.pow(features_true, deg), w_true) + b_true
        features = torch.cat((features_true, torch.ones(len(features_true), 1)), 1)
    else:
        features = torch.randn(num_examples, len(w))
        labels_true = torch.mm(torch.pow(features, deg), torch.tensor(w).reshape(-1, 1).float())
    return features, labels_true + torch.randn(size=labels_true.shape) * delta


@pytest.mark.parametrize("kwargs", [dict(w=(2, -1), bias=False, deg=2), dict(w=(2, -1, 1), bias=True, deg=1),
                                    dict(w=(1.5, 0.5, -2), bias=False, deg=3)])
def test_same_data_as_the_seeds_helper(kwargs):
    torch.manual_seed(420)  # the seeds' study
    ref_x, ref_y = seeds_tensorGenReg(**kwargs)
    x, y = make_poly_regression(1000, noise=0.01, seed=420, **kwargs)
    torch.testing.assert_close(x, ref_x, rtol=0, atol=0)
    torch.testing.assert_close(y, ref_y)


def test_noise_free_labels_are_the_polynomial():
    x, y = make_poly_regression(50, w=(2, -1), deg=2, noise=0.0, seed=0)
    assert x.shape == (50, 2) and y.shape == (50, 1)
    torch.testing.assert_close(y[:, 0], 2 * x[:, 0] ** 2 - x[:, 1] ** 2)


def test_bias_appends_a_constant_feature():
    x, y = make_poly_regression(20, w=(3, 1, 5), bias=True, deg=1, noise=0.0, seed=1)
    assert torch.equal(x[:, 2], torch.ones(20))
    torch.testing.assert_close(y[:, 0], 3 * x[:, 0] + x[:, 1] + 5)


def test_noise_level():
    x, y = make_poly_regression(20000, noise=0.5, seed=2)
    residual = y[:, 0] - (2 * x[:, 0] ** 2 - x[:, 1] ** 2)
    assert abs(residual.std().item() - 0.5) < 0.01


def test_split_is_seeded_disjoint_and_covering():
    x, y = make_poly_regression(1000, seed=0)
    train_iter, test_iter = split_loaders(x, y, batch_size=10, seed=5)
    assert (train_iter.num_examples, test_iter.num_examples) == (700, 300)
    assert (len(train_iter), len(test_iter)) == (70, 30)
    rows = torch.cat([train_iter.tensors[0], test_iter.tensors[0]])
    assert torch.equal(rows.sort(dim=0).values, x.sort(dim=0).values)
    again, _ = split_loaders(x, y, batch_size=10, seed=5)
    assert torch.equal(again.tensors[0], train_iter.tensors[0])
    xb, yb = next(iter(test_iter))
    assert xb.shape == (10, 2) and yb.shape == (10, 1)


def test_load_poly_regression_is_reproducible():
    a, _ = load_poly_regression(seed=3)
    b, _ = load_poly_regression(seed=3)
    assert all(torch.equal(p, q) for (p, _), (q, _) in zip(a, b))


@pytest.mark.parametrize("call, message", [
    (lambda: make_poly_regression(0), "n must be positive"),
    (lambda: make_poly_regression(10, w=(1,), bias=True), "at least two entries"),
    (lambda: split_loaders(torch.zeros(10, 2), torch.zeros(10, 1), train_fraction=1.0), r"train_fraction must be in \(0, 1\)"),
    (lambda: split_loaders(torch.zeros(2, 2), torch.zeros(2, 1), train_fraction=0.3), "leaves one side empty"),
])
def test_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()
