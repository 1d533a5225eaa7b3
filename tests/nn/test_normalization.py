"""LayerNorm, GroupNorm, InstanceNorm1d/2d/3d against torch.nn: numbers, state, errors, repr."""
from __future__ import annotations

import copy
import warnings
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import normlab.nn as nl
from parity import (assert_close, assert_close_or_as_accurate, assert_same_error, copy_params,
                    examples, randomize_affine)

dtypes = st.sampled_from([torch.float64, torch.float32])
eps_values = st.one_of(st.just(1e-5), st.floats(1e-6, 1.0))


def compare_steps(ours, ref, shapes, dtype, g, modes=("train",)):
    """Feed both modules the same inputs and output gradients; compare everything after each."""
    truth = copy.deepcopy(ref).double() if dtype == torch.float32 else None
    for step, (shape, mode) in enumerate(zip(shapes, modes * len(shapes))):
        for m in (ours, ref, truth):
            if m is not None:
                m.train(mode == "train")
        offset = torch.randn(1, generator=g, dtype=torch.float64)
        x64 = torch.randn(shape, generator=g, dtype=torch.float64) * 2 + offset
        dy64 = torch.randn(shape, generator=g, dtype=torch.float64)
        results = [one_step(m, x64.to(dtype), dy64.to(dtype)) for m in (ours, ref)]
        results.append(one_step(truth, x64.to(dtype).double(), dy64.to(dtype).double())
                       if truth else {})
        for key in results[1]:
            assert_close_or_as_accurate(results[0][key], results[1][key], results[2].get(key),
                                        f"step {step} ({mode}): {key}")


def one_step(module, x, dy):
    x = x.clone().requires_grad_()
    y = module(x)
    y.backward(dy)
    out = {"output": y.detach(), "input grad": x.grad}
    for name, p in module.named_parameters():
        out[f"{name} grad"], p.grad = p.grad, None
    for name, b in module.named_buffers():
        out[name] = b.clone()
    return out


def twins(ours_cls, torch_cls, args, kw, dtype, g):
    ours, ref = ours_cls(*args, dtype=dtype, **kw), torch_cls(*args, dtype=dtype, **kw)
    randomize_affine(ref, g)
    copy_params(ref, ours)
    assert repr(ours) == repr(ref)
    assert list(ours.state_dict()) == list(ref.state_dict())
    return ours, ref


@settings(max_examples=examples(30), deadline=None)
@given(lead=st.lists(st.integers(1, 4), min_size=1, max_size=2),
       norm=st.lists(st.integers(1, 4), min_size=1, max_size=2),
       eps=eps_values, affine=st.booleans(), bias=st.booleans(), dtype=dtypes,
       seed=st.integers(0, 2**31 - 1))
def test_layer_norm_matches_torch(lead, norm, eps, affine, bias, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    ours, ref = twins(nl.LayerNorm, torch.nn.LayerNorm, (norm,),
                      dict(eps=eps, elementwise_affine=affine, bias=bias), dtype, g)
    compare_steps(ours, ref, [tuple(lead + norm)] * 2, dtype, g)


@st.composite
def group_cases(draw):
    groups = draw(st.integers(1, 4))
    C = groups * draw(st.integers(1, 3))
    N = draw(st.integers(1, 3))
    spatial = draw(st.lists(st.integers(1, 4), min_size=0, max_size=3))
    if N * C // groups * math.prod(spatial) == 1:
        N = 2
    return groups, (N, C, *spatial)


@settings(max_examples=examples(30), deadline=None)
@given(case=group_cases(), eps=eps_values, affine=st.booleans(), bias=st.booleans(),
       dtype=dtypes, seed=st.integers(0, 2**31 - 1))
def test_group_norm_matches_torch(case, eps, affine, bias, dtype, seed):
    groups, shape = case
    g = torch.Generator().manual_seed(seed)
    ours, ref = twins(nl.GroupNorm, torch.nn.GroupNorm, (groups, shape[1]),
                      dict(eps=eps, affine=affine, bias=bias), dtype, g)
    compare_steps(ours, ref, [shape] * 2, dtype, g)


INSTANCE = {1: (nl.InstanceNorm1d, torch.nn.InstanceNorm1d),
            2: (nl.InstanceNorm2d, torch.nn.InstanceNorm2d),
            3: (nl.InstanceNorm3d, torch.nn.InstanceNorm3d)}


@settings(max_examples=examples(40), deadline=None)
@given(dims=st.integers(1, 3), N=st.integers(1, 3), C=st.integers(1, 3),
       spatial_seed=st.lists(st.integers(1, 3), min_size=3, max_size=3),
       batched=st.booleans(), eps=eps_values,
       momentum=st.one_of(st.sampled_from([None, 0.0, 1.0]), st.floats(0.01, 0.99)),
       affine=st.booleans(), track=st.booleans(), dtype=dtypes,
       modes=st.lists(st.sampled_from(["train", "eval"]), min_size=2, max_size=4),
       seed=st.integers(0, 2**31 - 1))
def test_instance_norm_matches_torch(dims, N, C, spatial_seed, batched, eps, momentum, affine,
                                     track, dtype, modes, seed):
    spatial = spatial_seed[:dims]
    if math.prod(spatial) == 1:
        spatial[0] = 2
    shape = (N, C, *spatial) if batched else (C, *spatial)
    g = torch.Generator().manual_seed(seed)
    ours_cls, torch_cls = INSTANCE[dims]
    ours, ref = twins(ours_cls, torch_cls, (C,),
                      dict(eps=eps, momentum=momentum, affine=affine, track_running_stats=track),
                      dtype, g)
    compare_steps(ours, ref, [shape] * len(modes), dtype, g, tuple(modes))


# --- errors and warnings, compared with torch ---------------------------------------------

@pytest.mark.parametrize("dims,bad_rank", [(1, 4), (2, 2), (2, 5), (3, 3)])
def test_instance_norm_rank_errors(dims, bad_rank):
    ours_cls, torch_cls = INSTANCE[dims]
    x = torch.randn((2, 3, 2, 2, 2)[:bad_rank])
    assert_same_error(lambda: ours_cls(3)(x), lambda: torch_cls(3)(x))


def test_instance_norm_needs_more_than_one_spatial_element():
    x = torch.randn(2, 3, 1)
    err = assert_same_error(lambda: nl.InstanceNorm1d(3)(x), lambda: torch.nn.InstanceNorm1d(3)(x))
    assert "more than 1 spatial element" in str(err)


def test_instance_norm_affine_channel_mismatch():
    x = torch.randn(2, 4, 5)
    assert_same_error(lambda: nl.InstanceNorm1d(3, affine=True)(x),
                      lambda: torch.nn.InstanceNorm1d(3, affine=True)(x))
    with pytest.warns(UserWarning, match="does not match num_features"):
        nl.InstanceNorm1d(3)(x)


def test_instance_norm_old_checkpoint_running_stats_rejected_as_torch():
    sd = torch.nn.InstanceNorm1d(3, track_running_stats=True).state_dict()
    del sd["num_batches_tracked"]
    sd._metadata[""].pop("version")  # a checkpoint from before torch 0.4
    assert_same_error(lambda: nl.InstanceNorm1d(3).load_state_dict(copy.deepcopy(sd)),
                      lambda: torch.nn.InstanceNorm1d(3).load_state_dict(copy.deepcopy(sd)))


def test_group_norm_divisibility_error():
    err = assert_same_error(lambda: nl.GroupNorm(4, 6), lambda: torch.nn.GroupNorm(4, 6))
    assert "must be divisible" in str(err)


def test_group_norm_one_value_per_group_error():
    x = torch.randn(1, 3, 1)
    assert_same_error(lambda: nl.GroupNorm(3, 3)(x), lambda: torch.nn.GroupNorm(3, 3)(x))


def test_layer_norm_shape_error():
    x = torch.randn(2, 3)
    assert_same_error(lambda: nl.LayerNorm(4)(x), lambda: torch.nn.LayerNorm(4)(x))


def test_layer_norm_invariants():
    """Keras-style invariant: each row comes out with mean 0 and variance 1 (γ=1, β=0)."""
    x = torch.randn(5, 7, dtype=torch.float64) * 3 + 2
    y = nl.LayerNorm(7, eps=0.0, dtype=torch.float64)(x)
    assert_close(y.mean(-1), torch.zeros(5, dtype=torch.float64), "row means")
    assert_close(y.var(-1, correction=0), torch.ones(5, dtype=torch.float64), "row variances")


# --- empty and zero-size input (issue 16) -------------------------------------------------

EMPTY_CASES = [
    (nl.LayerNorm, torch.nn.LayerNorm, (5,), (0, 5)),
    (nl.LayerNorm, torch.nn.LayerNorm, (5,), (3, 0, 5)),
    (nl.LayerNorm, torch.nn.LayerNorm, ((2, 3),), (0, 2, 3)),
    (nl.LayerNorm, torch.nn.LayerNorm, (0,), (3, 0)),
    (nl.GroupNorm, torch.nn.GroupNorm, (2, 4), (0, 4)),
    (nl.GroupNorm, torch.nn.GroupNorm, (2, 4), (0, 4, 3, 3)),
    (nl.GroupNorm, torch.nn.GroupNorm, (2, 4), (2, 4, 0, 3)),
    (nl.GroupNorm, torch.nn.GroupNorm, (4, 4), (2, 4, 3, 0, 2)),
    (nl.InstanceNorm1d, torch.nn.InstanceNorm1d, (4,), (0, 4, 3)),
    (nl.InstanceNorm1d, torch.nn.InstanceNorm1d, (4,), (2, 4, 0)),
    (nl.InstanceNorm1d, torch.nn.InstanceNorm1d, (4,), (4, 0)),  # unbatched
    (nl.InstanceNorm2d, torch.nn.InstanceNorm2d, (4,), (0, 4, 3, 3)),
    (nl.InstanceNorm2d, torch.nn.InstanceNorm2d, (4,), (2, 4, 0, 3)),
    (nl.InstanceNorm3d, torch.nn.InstanceNorm3d, (4,), (0, 4, 2, 2, 2)),
    (nl.InstanceNorm3d, torch.nn.InstanceNorm3d, (4,), (2, 4, 2, 0, 2)),
]
INSTANCE_FLAGS = [dict(), dict(affine=True), dict(affine=True, track_running_stats=True)]


def empty_cases():
    for ours_cls, torch_cls, args, shape in EMPTY_CASES:
        flags = INSTANCE_FLAGS if issubclass(ours_cls, torch.nn.modules.instancenorm._InstanceNorm) \
            else [dict()]
        for kw in flags:
            for train in (True, False):
                yield pytest.param(ours_cls, torch_cls, args, kw, shape, train,
                                   id=f"{ours_cls.__name__}{args}-{kw}-{shape}-{'train' if train else 'eval'}")


@pytest.mark.parametrize("ours_cls,torch_cls,args,kw,shape,train", list(empty_cases()))
def test_empty_input_behaves_as_torch(ours_cls, torch_cls, args, kw, shape, train):
    """An empty batch (N = 0) or a zero-size dim gives an empty output, an empty input gradient,
    zero gradients for γ and β (sums over no values), unchanged buffers and no warning; torch's
    layer gives the same, except in two cases where torch breaks and normlab departs from it:
    InstanceNorm with affine or running statistics on N = 0 (torch: an internal "IndexError:
    select(): index 0 out of range") and GroupNorm's γ gradient with a zero-size spatial dim
    (torch: NaN, a mean over no values)."""
    g = torch.Generator().manual_seed(0)
    ours, ref = twins(ours_cls, torch_cls, args, kw, torch.float32, g)
    ours.train(train), ref.train(train)
    before = {name: b.clone() for name, b in ours.named_buffers()}
    x, dy = torch.randn(shape), torch.randn(shape)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = one_step(ours, x, dy)
    expected = {"output": torch.empty(shape), "input grad": torch.zeros(shape),
                **{f"{name} grad": torch.zeros_like(p) for name, p in ours.named_parameters()}, **before}
    assert set(result) == set(expected)
    for key in expected:
        assert_close(result[key], expected[key], key)
    torch_breaks = shape[0] == 0 and (kw.get("affine") or kw.get("track_running_stats"))
    if torch_breaks:
        with pytest.raises(IndexError, match="select"):
            ref(x)
        return
    theirs = one_step(ref, x, dy)
    if ours_cls is nl.GroupNorm and 0 in shape[2:]:
        assert theirs["weight grad"].isnan().all()
        theirs["weight grad"] = expected["weight grad"]
    for key in theirs:
        assert_close(result[key], theirs[key], f"against torch: {key}")


@pytest.mark.parametrize("shape", [(0, 4, 5), (2, 4, 0), (2, 0, 5)])
def test_empty_input_functional_forms(shape):
    from normlab.nn import functional as F
    x = torch.randn(shape)
    for name, args in (("layer_norm", ((5,) if shape[-1] == 5 else (0,),)), ("group_norm", (1,)),
                       ("instance_norm", ())):
        assert_close(getattr(F, name)(x, *args), getattr(torch.nn.functional, name)(x, *args), name)
