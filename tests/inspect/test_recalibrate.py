"""recalibrate: "cumulative" is torch's update_bn, "precise" the statistics of all the values seen, by hand."""
import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.optim.swa_utils import update_bn
from torch.testing import assert_close

import normlab.nn as nl
from normlab.inspect import recalibrate


def batches(sizes=(8, 8, 8, 5), seed=0):
    """(images, labels) pairs with a shifted mean per batch, and a smaller last batch."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, 1, 6, 6, generator=g) * (1 + i) + i, torch.zeros(n, dtype=torch.long))
            for i, n in enumerate(sizes)]


def cnn(bn2d=nn.BatchNorm2d, bn1d=nn.BatchNorm1d, **kw):
    """conv -> bn -> relu -> linear -> bn, with trained-looking running statistics, in eval mode."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), bn2d(3, **kw), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 5), bn1d(5, **kw))
    with torch.no_grad():
        for bn in (net[1], net[5]):
            bn.weight.uniform_(0.5, 2)
            bn.bias.uniform_(-1, 1)
            bn.running_mean.uniform_(-3, 3)
            bn.running_var.uniform_(0.1, 4)
    return net.eval()


def assert_same_state(a, b):
    for (key, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), key


@pytest.mark.parametrize("num_batches", [None, 2])
@pytest.mark.parametrize("norms", [(nn.BatchNorm2d, nn.BatchNorm1d), (nl.BatchNorm2d, nl.BatchNorm1d)],
                         ids=["torch", "normlab"])
def test_cumulative_is_torch_update_bn(num_batches, norms):
    data = batches()
    ours, reference = cnn(*norms), cnn(*norms)
    update_bn(data[:num_batches], reference)
    assert recalibrate(ours, data, "cumulative", num_batches=num_batches) is ours
    assert_same_state(ours, reference)
    assert int(ours[1].num_batches_tracked) == (num_batches or len(data))
    assert not torch.equal(ours[1].running_mean, cnn(*norms)[1].running_mean)  # it did change


def test_normlab_and_torch_layers_recalibrate_to_the_same_statistics():
    ours, theirs = cnn(nl.BatchNorm2d, nl.BatchNorm1d), cnn()
    for method in ("cumulative", "precise"):
        recalibrate(ours, batches(), method)
        recalibrate(theirs, batches(), method)
        for key, value in theirs.state_dict().items():
            assert_close(ours.state_dict()[key], value, msg=f"{method}: {key}")


def norm_inputs_by_hand(net, data):
    """Both norms' inputs for every batch, the model in train mode (each norm uses its batch's statistics)."""
    inputs = {1: [], 5: []}
    for x, _ in data:
        h = net[0](x)                                                # (N, 3, 4, 4): the first norm's input
        inputs[1].append(h)
        h = F.batch_norm(h, None, None, net[1].weight, net[1].bias, training=True, eps=net[1].eps)
        inputs[5].append(net[4](F.relu(h).flatten(1)))               # (N, 5): the second norm's input
    return {i: torch.cat(hs).transpose(0, 1).flatten(1).double() for i, hs in inputs.items()}  # (C, values)


@pytest.mark.parametrize("num_batches", [None, 3])
def test_precise_is_the_statistics_of_all_values_seen(num_batches):
    data, net = batches(), cnn(nl.BatchNorm2d, nl.BatchNorm1d)
    with torch.no_grad():
        expected = norm_inputs_by_hand(net, data[:num_batches])
    tracked = int(net[1].num_batches_tracked)
    recalibrate(net, data, "precise", num_batches=num_batches)
    for i, values in expected.items():
        assert_close(net[i].running_mean, values.mean(1).float())
        assert_close(net[i].running_var, values.var(1).float())   # unbiased over all the values
    assert int(net[1].num_batches_tracked) == tracked  # precise keeps the count
    assert all(p.grad is None for p in net.parameters())


def test_precise_counts_the_spread_of_batch_means_that_cumulative_misses():
    """Batches whose means differ: cumulative averages the per-batch variances, precise also adds the
    variance of the means, by the law of total variance (equal batches of n values, N in all):
        precise = ((n − 1)·Σ_b var_b + n·Σ_b (mean_b − mean)²) / (N − 1)."""
    data = batches(sizes=(8, 8, 8, 8))
    a, b = cnn(), cnn()
    recalibrate(a, data, "cumulative")
    recalibrate(b, data, "precise")
    with torch.no_grad():
        values = norm_inputs_by_hand(cnn(), data)[1].view(3, 4, -1)   # (C, batch, n)
    n, B = values.shape[2], values.shape[1]
    batch_means, batch_vars = values.mean(2), values.var(2)
    assert_close(a[1].running_var, batch_vars.mean(1).float())
    total = ((n - 1) * batch_vars.sum(1) + n * (batch_means - batch_means.mean(1, keepdim=True)).square().sum(1))
    assert_close(b[1].running_var, (total / (n * B - 1)).float())
    assert (b[1].running_var > a[1].running_var).all()                # the shifted batch means count
    assert_close(a[1].running_mean, b[1].running_mean)               # equal batches: the same mean


@pytest.mark.parametrize("method", ["cumulative", "precise"])
def test_modes_and_momenta_are_restored(method):
    net = cnn(momentum=0.01).train()
    net[5].momentum = None
    net[1].eval()              # a frozen layer stays frozen
    modes = [m.training for m in net.modules()]
    recalibrate(net, batches(), method)
    assert [m.training for m in net.modules()] == modes
    assert (net[1].momentum, net[5].momentum) == (0.01, None)


def test_layers_without_running_statistics_are_left_alone():
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3, track_running_stats=False), nn.Flatten(),
                        nn.Linear(48, 2), nn.BatchNorm1d(2))
    for method in ("cumulative", "precise"):
        recalibrate(net, batches(), method)
        assert net[1].running_mean is None and net[4].num_batches_tracked is not None


def test_precise_recalibrates_the_books_layer_with_its_biased_variance():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nl.D2LBatchNorm(36, num_dims=2))
    data = batches()
    precise = recalibrate(copy.deepcopy(net), data, "precise")[1]
    x = [b.flatten(1) for b, _ in data]
    assert_close(precise.moving_mean, torch.cat(x).mean(0).view(1, -1))
    assert_close(precise.moving_var, torch.cat(x).var(0, unbiased=False).view(1, -1))   # biased, as the book keeps it
    assert precise.momentum == 0.9
    with pytest.warns(UserWarning, match=r"leaves D2LBatchNorm layers \(1\) as they are; method='precise'"):
        cumulative = recalibrate(copy.deepcopy(net), data, "cumulative")[1]
    assert torch.equal(cumulative.moving_mean, net[1].moving_mean)


@pytest.mark.parametrize("kw, message", [
    ({"method": "swa"}, "unknown recalibration method 'swa'; choose one of: cumulative, precise"),
    ({"num_batches": 0}, "num_batches takes a positive number of batches or None"),
])
def test_bad_arguments_say_what_fits(kw, message):
    with pytest.raises(ValueError, match=message):
        recalibrate(cnn(), batches(), **kw)
