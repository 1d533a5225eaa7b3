"""convert_norms between batch and batch_torch keeps γ, β and the running statistics, so a
trained model's eval outputs do not change."""
import pytest
import torch
from torch import nn

from normlab.models import create_model
from normlab.nn import BatchNorm1d, BatchNorm2d, convert_norms


def _trained(name, norm, side, **kw):
    """A model whose running statistics and γ/β have moved off their initial values."""
    torch.manual_seed(0)
    net = create_model(name, norm=norm, **kw)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        net(torch.rand(8, 1, side, side)).square().mean().backward()
        opt.step()
    return net.eval()


def _kinds(net):
    return {type(m) for m in net.modules() if "BatchNorm" in type(m).__name__}


@pytest.mark.parametrize("name, side, kw", [("lenet_bn", 28, {}), ("resnet20", 8, {}),
                                            ("mlp", 28, {"norm_position": "after_act"})])
def test_batch_to_batch_torch_and_back_keeps_eval_outputs(name, side, kw):
    net = _trained(name, "batch", side, **kw)
    assert _kinds(net) <= {BatchNorm1d, BatchNorm2d} and _kinds(net)
    x = torch.rand(4, 1, side, side)
    with torch.no_grad():
        before = net(x)
        torch_net = convert_norms(net, to="batch_torch")
        assert _kinds(torch_net) <= {nn.BatchNorm1d, nn.BatchNorm2d}
        torch.testing.assert_close(torch_net(x), before)
        back = convert_norms(torch_net, to="batch")
        assert _kinds(back) <= {BatchNorm1d, BatchNorm2d}
        torch.testing.assert_close(back(x), before)


def test_the_running_statistics_really_moved():
    """Guards the test above: with fresh statistics it would prove little."""
    net = _trained("lenet_bn", "batch", 28)
    assert not torch.equal(net[1].running_mean, torch.zeros(6))
    assert int(net[1].num_batches_tracked) == 3
