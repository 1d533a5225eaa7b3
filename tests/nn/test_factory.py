"""get_norm_layer / create_norm / list_norms / convert_norms."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import normlab.nn as nl
from parity import assert_close

NAMES = ["none", "batch", "batch_torch", "batch_d2l", "layer", "group", "instance",
         # the research layers (tests/nn/test_research.py)
         "batch_renorm", "ghost_batch", "whiten_zca", "iternorm", "rank_gauss", "frozen_batch",
         "switchable", "batch_mean_only", "batch_var_only"]


def test_list_norms():
    assert nl.list_norms() == NAMES


@pytest.mark.parametrize("name,dim", [(n, d) for n in NAMES for d in (1, 2)
                                      if (n, d) != ("instance", 1)])  # no vector form: see below
def test_every_norm_keeps_shape_and_gives_gradients(name, dim):
    shape = (4, 6) if dim == 1 else (4, 6, 5, 5)
    layer = nl.create_norm(name, 6, dim=dim)
    x = torch.randn(shape, requires_grad=True)
    y = layer(x)
    assert y.shape == shape and torch.isfinite(y).all()
    y.pow(2).sum().backward()
    assert x.grad is not None
    for pname, p in layer.named_parameters():
        assert p.grad is not None, f"no gradient for {pname}"


@pytest.mark.parametrize("name,dim,cls", [
    ("batch", 1, nl.BatchNorm1d), ("batch", 2, nl.BatchNorm2d), ("batch", 3, nl.BatchNorm3d),
    ("batch_renorm", 1, nl.BatchRenorm), ("ghost_batch", 2, nl.GhostBatchNorm),
    ("whiten_zca", 2, nl.DecorrelatedBatchNorm), ("iternorm", 1, nl.IterNorm),
    ("rank_gauss", 2, nl.RankGaussNorm), ("frozen_batch", 2, nl.FrozenBatchNorm),
    ("switchable", 2, nl.SwitchableNorm), ("switchable", 1, nl.SwitchableNorm),
    ("batch_mean_only", 1, nl.BatchMeanOnly), ("batch_var_only", 2, nl.BatchVarOnly),
    ("batch_torch", 2, nn.BatchNorm2d), ("instance", 3, nl.InstanceNorm3d),
    ("layer", 1, nl.LayerNorm), ("none", 2, nn.Identity),
])
def test_classes(name, dim, cls):
    assert type(nl.create_norm(name, 8, dim=dim)) is cls


def test_none_is_identity():
    assert nl.get_norm_layer(None) is nn.Identity
    assert isinstance(nl.create_norm("none", 8), nn.Identity)


@pytest.mark.parametrize("C,groups", [(6, 2), (16, 16), (64, 32), (48, 16), (120, 8), (7, 1)])
def test_group_uses_gcd_with_32(C, groups):
    layer = nl.create_norm("group", C)
    assert isinstance(layer, nl.GroupNorm) and layer.num_groups == groups
    assert nl.create_norm("group", C, num_groups=1).num_groups == 1


def test_layer_on_maps_is_groupnorm_of_one_group():
    layer = nl.create_norm("layer", 4)
    assert isinstance(layer, nl.GroupNorm) and layer.num_groups == 1
    x = torch.randn(3, 4, 5, 5, dtype=torch.float64)
    expected = nn.functional.layer_norm(x, (4, 5, 5))  # statistics over C, H, W per sample
    assert_close(layer.double()(x), expected, "layer on a map")


def test_keywords_pass_through():
    bn = nl.create_norm("batch", 5, eps=1e-3, momentum=None, affine=False)
    assert bn.eps == 1e-3 and bn.momentum is None and bn.weight is None
    assert nl.create_norm("batch_d2l", 5, momentum=0.8).momentum == 0.8


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError) as info:
        nl.get_norm_layer("batchnorm")
    assert str(info.value) == ("unknown norm 'batchnorm'; choose one of: none, batch, "
                               "batch_torch, batch_d2l, layer, group, instance, batch_renorm, "
                               "ghost_batch, whiten_zca, iternorm, rank_gauss, frozen_batch, "
                               "switchable, batch_mean_only, batch_var_only")


@pytest.mark.parametrize("name,dim", [("instance", 1), ("batch_d2l", 3), ("batch", 4)])
def test_unsupported_dims_explain_themselves(name, dim):
    with pytest.raises(ValueError, match="dim"):
        nl.get_norm_layer(name, dim=dim)


# --- convert_norms -------------------------------------------------------------------------

def small_net(norm: str) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nl.create_norm(norm, 4), nn.ReLU(),
        nn.Conv2d(4, 6, 3), nl.create_norm(norm, 6), nn.ReLU(), nn.Flatten(),
        nn.Linear(6 * 4 * 4, 8), nl.create_norm(norm, 8, dim=1), nn.ReLU(),
        nn.Linear(8, 3)).double()


def briefly_trained(norm="batch", steps=20):
    model = small_net(norm)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(16, 1, 8, 8, generator=g, dtype=torch.float64) * 2 + 1
        target = torch.randint(0, 3, (16,), generator=g)
        loss = nn.functional.cross_entropy(model(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def kinds(model):
    return [type(m).__name__ for m in model if "Norm" in type(m).__name__]


@pytest.mark.parametrize("start,to", [("batch", "batch_torch"), ("batch_torch", "batch"),
                                      ("batch", "batch_d2l"), ("batch_d2l", "batch")])
def test_convert_keeps_eval_outputs(start, to):
    model = briefly_trained(start).eval()
    x = torch.randn(10, 1, 8, 8, dtype=torch.float64) + 1
    with torch.no_grad():  # no_grad: the book's layer uses its moving statistics only then
        before = model(x)
        converted = nl.convert_norms(model, to=to)
        after = converted(x)
    assert converted is model
    expected = {"batch": "BatchNorm", "batch_torch": "BatchNorm", "batch_d2l": "D2LBatchNorm"}[to]
    assert all(k.startswith(expected) for k in kinds(model)), kinds(model)
    assert_close(after, before, "eval outputs after convert_norms")
    assert not converted[1].training


def test_convert_to_torch_keeps_state_exactly():
    model = briefly_trained("batch")
    states = [m.state_dict() for m in model if isinstance(m, nl.BatchNorm2d)]
    nl.convert_norms(model, to="batch_torch")
    assert type(model[1]) is nn.BatchNorm2d and type(model[8]) is nn.BatchNorm1d
    assert model[1].training, "training mode should be kept"
    for new, old in zip([model[1], model[4]], states):
        for key, value in old.items():
            assert torch.equal(new.state_dict()[key], value), key
    assert model[1].num_batches_tracked.item() == 20


@pytest.mark.parametrize("flags", [dict(affine=False, track_running_stats=False),
                                   dict(bias=False, momentum=None)])
def test_convert_keeps_flags_and_dtype(flags):
    bn = nl.BatchNorm1d(4, dtype=torch.float64, **flags)
    new = nl.convert_norms(bn, to="batch_torch")
    assert type(new) is nn.BatchNorm1d and repr(new) == repr(bn)
    assert all(t.dtype == torch.float64 for t in new.state_dict().values() if t.is_floating_point())
    x = torch.randn(5, 4, dtype=torch.float64)
    assert_close(new(x), bn(x), "output")


def test_convert_top_level_module_and_bad_target():
    bn = nl.BatchNorm2d(3, momentum=None, affine=False)
    new = nl.convert_norms(bn, to="batch_torch")
    assert type(new) is nn.BatchNorm2d and repr(new) == repr(bn)
    with pytest.raises(ValueError, match="batch, batch_torch, batch_d2l"):
        nl.convert_norms(bn, to="group")
    with pytest.raises(ValueError, match="cannot stand in"):
        nl.convert_norms(bn, to="batch_d2l")


@pytest.mark.parametrize("dim", [1, 2])
def test_every_norm_the_factory_builds_is_in_the_registry(dim):
    """normlab.nn.NORM_TYPES is the one list of norm-layer types (inspect reads it): a new norm
    in the factory that is missing there fails here."""
    for name in nl.list_norms():
        if name == "none" or (name == "instance" and dim == 1):
            continue
        layer = nl.create_norm(name, 8, dim=dim)
        assert nl.is_norm(layer), f"{name}: {type(layer).__name__} is not in normlab.nn.NORM_TYPES"
    assert not nl.is_norm(nl.create_norm("none", 8)) and not nl.is_norm(torch.nn.Conv2d(1, 1, 1))


def test_replace_modules_swaps_in_place_keeps_order_and_can_replace_the_root():
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Linear(3, 3)),
                                torch.nn.Linear(3, 1))
    seen = []

    def replace(m):
        seen.append(type(m).__name__)
        return torch.nn.Identity() if isinstance(m, torch.nn.Sequential) and len(m) == 2 else None

    assert nl.replace_modules(model, replace) is model
    assert [type(m).__name__ for m in model] == ["Linear", "Identity", "Linear"]
    assert seen == ["Sequential", "Linear", "Sequential", "Linear"], "a replaced module's children are not visited"
    root = torch.nn.BatchNorm1d(3)
    assert isinstance(nl.replace_modules(root, lambda m: torch.nn.Identity()), torch.nn.Identity)
