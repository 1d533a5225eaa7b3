"""Every model × every norm × both positions: builds, runs forward and backward on a small
batch, gives finite (N, num_classes) outputs and a gradient to every parameter.

Inputs are about the smallest each model takes (instance norm needs at least 2×2 at its last
position, so it gets a larger one) and VGG runs at 1/16 of its conv widths: the test is about
structure, not capacity. The batch is 2, except for two research norms (docs/research_norms.md):
whiten_zca needs more values per channel than its group size (16 at most) at every norm, and after
a Linear layer or at a 1×1 map a sample gives one, so it gets 17 samples; batch_var_only divides by
the batch std without centring, so where two samples give nearly equal values (GoogLeNet's 1×1
maps) it multiplies them by mean/std, layer after layer, until float32 overflows: it gets 4.
"""
import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from normlab.models import create_model, list_models
from normlab.nn import D2LBatchNorm, list_norms
from normlab.nn.research import RESEARCH_NORMS

# model: (extra options, input side, input side for instance norm)
SMALL = {
    "lenet": ({}, 28, 28),
    "lenet_bn": ({}, 28, 28),
    "alexnet": ({}, 193, 193),                   # its smallest input; 224 in the book
    "vgg": ({"width_divisor": 16}, 224, 224),    # flattens 7×7, so 224 it is
    "nin": ({}, 67, 99),                         # 99: 2×2 at the last NiN block
    "googlenet": ({}, 32, 64),
    "resnet18": ({}, 32, 64),
    "resnet20": ({}, 8, 8),
    "densenet": ({}, 32, 64),
    "mlp": ({}, 28, 28),
}
# models with norms after Linear layers, where `instance` (one value per channel) cannot go
FC_NORMS = {"lenet", "lenet_bn", "alexnet", "vgg", "mlp"}
NORM_TYPES = (_NormBase, nn.GroupNorm, nn.LayerNorm, D2LBatchNorm, *RESEARCH_NORMS)
BATCH = {"whiten_zca": 17, "batch_var_only": 4}  # see the docstring; default 2


def test_every_model_has_a_small_configuration():
    assert sorted(SMALL) == sorted(list_models())


def _build(name, norm, position, kw):
    if norm == "instance" and name in FC_NORMS:
        with pytest.raises(ValueError, match=rf"^{name}: norm 'instance' needs spatial dims"):
            create_model(name, norm=norm, norm_position=position, **kw)
        if name == "mlp":
            return None
        kw = {**kw, "fc_norm": "layer"}   # instance on the maps, layer norm on the vectors
    return create_model(name, norm=norm, norm_position=position, **kw)


@pytest.mark.parametrize("position", ["before_act", "after_act"])
@pytest.mark.parametrize("norm", list_norms())
@pytest.mark.parametrize("name", list(SMALL))
def test_forward_backward_every_parameter_learns(name, norm, position):
    torch.manual_seed(0)
    kw, side, side_instance = SMALL[name]
    side = side_instance if norm == "instance" else side
    net = _build(name, norm, position, kw)
    if net is None:
        return
    assert net.norm_position == position
    n = BATCH.get(norm, 2)
    x = torch.randn(n, 1, side, side)
    out = net(x)
    assert out.shape == (n, 10)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    for pname, p in net.named_parameters():
        assert p.grad is not None, f"no gradient for {pname}"
        assert torch.isfinite(p.grad).all(), f"non-finite gradient for {pname}"
    norms = [m for m in net.modules() if isinstance(m, NORM_TYPES)]
    assert bool(norms) == (norm != "none"), "norm layers present iff a norm was asked for"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", list(SMALL))
def test_runs_on_cuda_and_summary_follows_the_model(name):
    from normlab.models import summary
    kw, side, _ = SMALL[name]
    net = create_model(name, norm="batch", **kw).cuda()
    out = net(torch.randn(2, 1, side, side, device="cuda"))
    out.square().mean().backward()
    assert out.shape == (2, 10) and all(p.grad.is_cuda for p in net.parameters())
    shape = (1, net.in_features) if name == "mlp" else (1, 1, side, side)
    assert summary(net, shape).output_shape == (1, 10)
