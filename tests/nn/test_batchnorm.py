"""BatchNorm1d/2d/3d against torch.nn, step by step: outputs, gradients, running statistics."""
from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import normlab.nn as nl
from parity import (assert_close, assert_close_or_as_accurate, assert_same_error, copy_params,
                    examples, randomize_affine)

PAIRS = {2: (nl.BatchNorm1d, torch.nn.BatchNorm1d), 3: (nl.BatchNorm1d, torch.nn.BatchNorm1d),
         4: (nl.BatchNorm2d, torch.nn.BatchNorm2d), 5: (nl.BatchNorm3d, torch.nn.BatchNorm3d)}


@st.composite
def shapes(draw):
    """(N, C, *spatial) of rank 2-5; a third of them with exactly 2 values per channel."""
    rank = draw(st.integers(2, 5))
    C = draw(st.integers(1, 4))
    if draw(st.integers(0, 2)) == 0:  # N·∏spatial == 2, the smallest batch torch accepts
        sizes = [1] * (rank - 1)
        sizes[draw(st.integers(0, rank - 2))] = 2
        N, spatial = sizes[0], sizes[1:]
    else:
        N = draw(st.integers(1, 5))
        spatial = [draw(st.integers(1, 4)) for _ in range(rank - 2)]
        if N * math.prod(spatial) == 1:
            N = 2
    return (N, C, *spatial)


momenta = st.one_of(st.sampled_from([None, 0.0, 1.0, 0.1]), st.floats(0.01, 0.99))
eps_values = st.one_of(st.sampled_from([1e-5, 1e-3]), st.floats(1e-6, 1.0))


def make_twins(shape, eps, momentum, affine, track, bias, dtype, generator):
    ours_cls, torch_cls = PAIRS[len(shape)]
    kw = dict(eps=eps, momentum=momentum, affine=affine, track_running_stats=track,
              bias=bias, dtype=dtype)
    ours, ref = ours_cls(shape[1], **kw), torch_cls(shape[1], **kw)
    randomize_affine(ref, generator)
    copy_params(ref, ours)
    return ours, ref


def assert_state_equal(ours, ref, what):
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert_close(getattr(ours, name), getattr(ref, name), f"{what}: {name}")


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=shapes(), eps=eps_values, momentum=momenta, affine=st.booleans(),
       track=st.booleans(), bias=st.booleans(),
       dtype=st.sampled_from([torch.float64, torch.float32]), channels_last=st.booleans(),
       modes=st.lists(st.sampled_from(["train", "eval"]), min_size=2, max_size=5),
       seed=st.integers(0, 2**31 - 1))
def test_steps_match_torch(shape, eps, momentum, affine, track, bias, dtype, channels_last,
                           modes, seed):
    g = torch.Generator().manual_seed(seed)
    ours, ref = make_twins(shape, eps, momentum, affine, track, bias, dtype, g)
    # In float32 a float64 twin gives the truth, for cases where torch itself is off by > 1e-5.
    truth = copy.deepcopy(ref).double() if dtype == torch.float32 else None
    for step, mode in enumerate(modes):
        what = f"step {step} ({mode})"
        for m in (ours, ref, truth):
            if m is not None:
                m.train(mode == "train")
        # Random scale and offset per step: the running statistics must follow real shifts.
        scale = 0.5 + 2 * torch.rand(1, generator=g, dtype=torch.float64)
        offset = 3 * torch.randn(1, generator=g, dtype=torch.float64)
        x64 = torch.randn(shape, generator=g, dtype=torch.float64) * scale + offset
        if channels_last and len(shape) in (4, 5):
            x64 = x64.to(memory_format=torch.channels_last if len(shape) == 4
                         else torch.channels_last_3d)
        dy64 = torch.randn(shape, generator=g, dtype=torch.float64)
        runs = [run_step(m, x64.to(dtype), dy64.to(dtype)) for m in (ours, ref)]
        runs.append(run_step(truth, x64.to(dtype).double(), dy64.to(dtype).double())
                    if truth is not None else {})
        for key in runs[1]:
            assert_close_or_as_accurate(runs[0][key], runs[1][key], runs[2].get(key),
                                        f"{what}: {key}")
        assert_close(ours.num_batches_tracked, ref.num_batches_tracked,
                     f"{what}: num_batches_tracked")


def run_step(module, x, dy):
    """Forward and backward of one step, then an SGD step on γ and β; returns what to compare."""
    x = x.clone().requires_grad_()
    y = module(x)
    y.backward(dy)
    out = {"output": y.detach(), "input grad": x.grad}
    for name in ("weight", "bias"):
        p = getattr(module, name)
        out[f"{name} grad"] = None if p is None else p.grad
    with torch.no_grad():  # so that γ and β move between steps
        for p in module.parameters():
            p -= 0.1 * p.grad
            p.grad = None
    for name in ("running_mean", "running_var"):
        buf = getattr(module, name)
        out[name] = None if buf is None else buf.clone()
    return out


def test_momentum_none_is_cumulative_average():
    torch.manual_seed(0)
    bn = nl.BatchNorm1d(3, momentum=None, dtype=torch.float64)
    batches = [torch.randn(8, 3, dtype=torch.float64) * (k + 1) + k for k in range(4)]
    for x in batches:
        bn(x)
    means = torch.stack([x.mean(0) for x in batches]).mean(0)
    variances = torch.stack([x.var(0) for x in batches]).mean(0)  # unbiased, as torch keeps it
    assert_close(bn.running_mean, means, "running_mean")
    assert_close(bn.running_var, variances, "running_var")
    assert bn.num_batches_tracked.item() == 4 and bn.num_batches_tracked.dtype == torch.int64


@pytest.mark.parametrize("momentum", [0.0, 1.0])
def test_momentum_edges(momentum):
    """momentum 0 keeps the initial statistics; momentum 1 keeps only the last batch's."""
    bn = nl.BatchNorm2d(2, momentum=momentum, dtype=torch.float64)
    x = torch.randn(4, 2, 3, 3, dtype=torch.float64) * 2 + 5
    bn(x)
    if momentum == 0.0:
        assert_close(bn.running_mean, torch.zeros(2, dtype=torch.float64), "mean")
        assert_close(bn.running_var, torch.ones(2, dtype=torch.float64), "var")
    else:
        assert_close(bn.running_mean, x.mean((0, 2, 3)), "mean")
        assert_close(bn.running_var, x.var((0, 2, 3)), "var")


def test_seeds_momentum_demonstration():
    """The seeds' experiment: N(0,1) then N(1,4) batches leave running mean 0.1 and var 1.3.

    running_mean = 0.9·(0.9·0 + 0.1·0) + 0.1·1 = 0.1
    running_var  = 0.9·(0.9·1 + 0.1·1) + 0.1·4 = 1.3
    """
    torch.manual_seed(0)
    bn = nl.BatchNorm2d(3)  # momentum 0.1
    bn(torch.randn(1, 3, 255, 255))
    bn(torch.randn(1, 3, 255, 255) * 2 + 1)
    torch.testing.assert_close(bn.running_mean, torch.full((3,), 0.1), atol=0.01, rtol=0)
    torch.testing.assert_close(bn.running_var, torch.full((3,), 1.3), atol=0.02, rtol=0)


def test_training_under_no_grad_updates_running_stats():
    ours, ref = nl.BatchNorm2d(3), torch.nn.BatchNorm2d(3)
    x = torch.randn(4, 3, 5, 5) + 2
    with torch.no_grad():
        y_ours, y_ref = ours(x), ref(x)
    assert_close(y_ours, y_ref, "output")
    assert ours.running_mean.abs().min() > 0.05, "running_mean did not move"
    assert_state_equal(ours, ref, "no_grad")


def test_track_running_stats_false_uses_batch_stats_in_eval():
    ours = nl.BatchNorm2d(3, track_running_stats=False).eval()
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert getattr(ours, name) is None, name
    x = torch.randn(4, 3, 2, 2) * 3 + 1
    y = ours(x)
    torch.testing.assert_close(y.mean((0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)


def test_eval_with_running_stats_is_the_affine_formula():
    bn = nl.BatchNorm1d(2, dtype=torch.float64).eval()
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([1.0, -2.0]))
        bn.running_var.copy_(torch.tensor([4.0, 0.25]))
        bn.weight.copy_(torch.tensor([2.0, 3.0])), bn.bias.copy_(torch.tensor([0.5, -0.5]))
    x = torch.randn(5, 2, dtype=torch.float64)
    expected = (x - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    assert_close(bn(x), expected, "eval output")


@pytest.mark.parametrize("shape", [(8, 3), (4, 3, 5, 5)])
def test_eval_backward_uses_the_statistics_of_its_forward(shape):
    """A training step between an eval forward and its backward moves the running statistics in
    place; the backward still differentiates what the forward computed. (torch's layer reads
    the moved buffers there and returns the gradient of a function it never computed.)"""
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    dy = torch.randn(*shape, dtype=torch.float64)
    grads = []
    for step_between in (False, True):
        bn = PAIRS[len(shape)][0](3, dtype=torch.float64)
        randomize_affine(bn, torch.Generator().manual_seed(0))
        with torch.no_grad():
            bn.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0]))
            bn.running_var.copy_(torch.tensor([2.0, 0.5, 3.0]))
        y = bn.eval()(x)
        if step_between:
            bn.train()(torch.randn(*shape, dtype=torch.float64) * 5 + 3)
            assert not torch.equal(bn.running_mean, torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64))
        grads.append(torch.autograd.grad(y, (x, bn.weight, bn.bias), dy))
    for name, a, b in zip(("input", "weight", "bias"), *grads):
        assert_close(a, b, f"{name} grad")


LAYOUTS = {  # x for a 3-channel layer, in the layouts the per-channel view treats differently
    "2-D": lambda: torch.randn(8, 3),
    "3-D": lambda: torch.randn(4, 3, 5),
    "NCHW": lambda: torch.randn(4, 3, 5, 6),
    "channels-last": lambda: torch.randn(4, 3, 5, 6).to(memory_format=torch.channels_last),
    "transposed": lambda: torch.randn(4, 3, 6, 5).transpose(2, 3),
    "channel slice": lambda: torch.randn(4, 5, 5, 6)[:, :3],
    "5-D channels-last": lambda: torch.randn(2, 3, 4, 5, 6).to(memory_format=torch.channels_last_3d),
    "large NCHW": lambda: torch.randn(64, 3, 40, 40),  # past the size where x − mean is not kept
    "large channels-last": lambda: torch.randn(64, 3, 40, 40).to(memory_format=torch.channels_last),
}


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_output_takes_in_place_ops_as_torch(layout, train):
    """`y = bn(x); y += shortcut` (the book's Residual block) works, with torch's gradients and,
    in training, torch's output strides: the output is no view of a tensor made inside the
    autograd.Function. (In eval the output keeps x's own layout, where torch's is contiguous.)"""
    torch.manual_seed(0)
    x = LAYOUTS[layout]().double()
    ours_cls, torch_cls = PAIRS[x.dim()]
    ours, ref = ours_cls(3, dtype=torch.float64).train(train), torch_cls(3, dtype=torch.float64).train(train)
    shortcut = torch.randn(x.shape, dtype=torch.float64)
    results = []
    for bn in (ours, ref):
        xi = x.detach().clone(memory_format=torch.preserve_format).requires_grad_()
        y = bn(xi)
        y += shortcut
        (y ** 2).sum().backward()
        results.append((y, xi.grad, bn.weight.grad, bn.bias.grad))
    (y_ours, *grads_ours), (y_ref, *grads_ref) = results
    assert y_ours.stride() == y_ref.stride()
    assert_close(y_ours, y_ref, "output")
    for name, a, b in zip(("input", "weight", "bias"), grads_ours, grads_ref):
        assert_close(a, b, f"{name} grad")


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("shape", [(0, 3), (0, 3, 4), (0, 3, 4, 4)])
def test_empty_batch_behaves_as_torch(train, shape):
    ours_cls, torch_cls = PAIRS[len(shape)]
    ours, ref = ours_cls(3).train(train), torch_cls(3).train(train)
    x_ours, x_ref = (torch.randn(*shape, requires_grad=True) for _ in range(2))
    y_ours, y_ref = ours(x_ours), ref(x_ref)
    assert y_ours.shape == y_ref.shape == shape
    y_ours.sum().backward(), y_ref.sum().backward()
    assert_close(ours.weight.grad, ref.weight.grad, "weight grad")
    assert_close(ours.bias.grad, ref.bias.grad, "bias grad")
    assert_state_equal(ours, ref, "empty batch")


@pytest.mark.parametrize("flags", [dict(), dict(affine=False), dict(bias=False),
                                   dict(track_running_stats=False), dict(momentum=None, eps=1e-3)])
@pytest.mark.parametrize("rank", [2, 4, 5])
def test_repr_params_buffers_and_state_dict_keys_match(flags, rank):
    ours_cls, torch_cls = PAIRS[rank]
    ours, ref = ours_cls(5, **flags), torch_cls(5, **flags)
    assert repr(ours) == repr(ref)
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
    for name, buf in ref.named_buffers():
        assert getattr(ours, name).dtype == buf.dtype, name


def test_signature_bias_is_keyword_only():
    with pytest.raises(TypeError):
        nl.BatchNorm2d(3, 1e-5, 0.1, True, True, None, None, False)
    assert nl.BatchNorm2d(3, bias=False).bias is None


def trained_pair(rank=4, steps=3):
    ours_cls, torch_cls = PAIRS[rank]
    src = torch_cls(4, dtype=torch.float64)
    randomize_affine(src, torch.Generator().manual_seed(1))
    shape = (6, 4, 3, 3, 2)[:rank]
    for _ in range(steps):
        src(torch.randn(shape, dtype=torch.float64) * 2 + 1)
    return ours_cls(4, dtype=torch.float64), src, shape


@pytest.mark.parametrize("direction", ["torch->normlab", "normlab->torch"])
def test_state_dict_round_trip(direction):
    ours, ref, shape = trained_pair()
    if direction == "normlab->torch":  # train ours instead, then load into a fresh torch layer
        ours.load_state_dict(ref.state_dict())
        ours(torch.randn(shape, dtype=torch.float64))
        ref = torch.nn.BatchNorm2d(4, dtype=torch.float64)
        ref.load_state_dict(ours.state_dict())
        assert ref.num_batches_tracked.item() == 4
    else:
        buf = io.BytesIO()
        torch.save(ref.state_dict(), buf)
        buf.seek(0)
        ours.load_state_dict(torch.load(buf, weights_only=True))
        assert ours.num_batches_tracked.item() == 3
    x = torch.randn(shape, dtype=torch.float64)
    assert_close(ours.eval()(x), ref.eval()(x), "eval output after loading")
    assert_state_equal(ours, ref, direction)


def old_checkpoint(module):
    """A pre-0.4.1 style state_dict: no num_batches_tracked, metadata version 1."""
    sd = module.state_dict()
    del sd["num_batches_tracked"]
    sd._metadata[""]["version"] = 1
    return sd


def test_old_checkpoint_without_num_batches_tracked_loads_as_torch():
    _, ref, _ = trained_pair()
    ours = nl.BatchNorm2d(4, dtype=torch.float64)
    fresh_ref = torch.nn.BatchNorm2d(4, dtype=torch.float64)
    ours.load_state_dict(old_checkpoint(ref))          # strict: the version rule fills the key in
    fresh_ref.load_state_dict(old_checkpoint(ref))
    assert_state_equal(ours, fresh_ref, "old checkpoint")
    assert ours.num_batches_tracked.item() == 0


def test_missing_num_batches_tracked_in_new_checkpoint_fails_as_torch():
    _, ref, _ = trained_pair()
    sd = ref.state_dict()
    del sd["num_batches_tracked"]  # version 2 metadata: the key is required
    assert_same_error(lambda: nl.BatchNorm2d(4, dtype=torch.float64).load_state_dict(sd),
                      lambda: torch.nn.BatchNorm2d(4, dtype=torch.float64).load_state_dict(sd))


def test_reset_running_stats_and_parameters():
    bn = nl.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.fill_(2), bn.bias.fill_(1)
    bn(torch.randn(4, 3, 2, 2) + 3)
    bn.reset_running_stats()
    assert torch.equal(bn.running_mean, torch.zeros(3))
    assert torch.equal(bn.running_var, torch.ones(3))
    assert bn.num_batches_tracked.item() == 0 and torch.equal(bn.weight, torch.full((3,), 2.0))
    bn.reset_parameters()
    assert torch.equal(bn.weight, torch.ones(3)) and torch.equal(bn.bias, torch.zeros(3))


def test_to_moves_buffers():
    bn = nl.BatchNorm2d(3).to(torch.float64)
    assert bn.running_mean.dtype == torch.float64 and bn.num_batches_tracked.dtype == torch.int64


# --- errors, compared with torch's type and message -------------------------------------

@pytest.mark.parametrize("rank,bad_rank", [(2, 4), (2, 1), (4, 3), (4, 5), (5, 4)])
def test_rank_errors(rank, bad_rank):
    ours_cls, torch_cls = PAIRS[rank]
    x = torch.randn((2, 3, 2, 2, 2)[:bad_rank])
    err = assert_same_error(lambda: ours_cls(3)(x), lambda: torch_cls(3)(x))
    assert isinstance(err, ValueError)


@pytest.mark.parametrize("shape", [(1, 3), (1, 3, 1), (1, 3, 1, 1), (1, 3, 1, 1, 1)])
def test_one_value_per_channel_in_training_raises(shape):
    ours_cls, torch_cls = PAIRS[len(shape)]
    x = torch.randn(shape)
    err = assert_same_error(lambda: ours_cls(3)(x), lambda: torch_cls(3)(x))
    assert "Expected more than 1 value per channel when training" in str(err)
    assert ours_cls(3).eval()(x).shape == shape  # eval is fine with one value


def test_batch_of_one_with_spatial_dims_trains():
    """The rule is N·H·W == 1, not N == 1: one image with several pixels trains fine."""
    ours, ref = nl.BatchNorm2d(3), torch.nn.BatchNorm2d(3)
    x = torch.randn(1, 3, 2, 1)
    assert_close(ours(x), ref(x), "output")
    assert_state_equal(ours, ref, "N=1")


def test_torch_compile_traces_without_graph_breaks():
    """fullgraph=True fails on any graph break; aot_eager traces forward and backward through
    dynamo and AOTAutograd without needing a C++ compiler."""
    ours = nl.BatchNorm2d(3, dtype=torch.float64)
    ref = torch.nn.BatchNorm2d(3, dtype=torch.float64)
    compiled = torch.compile(ours, backend="aot_eager", fullgraph=True)
    for mode in ("train", "train", "eval"):
        ours.train(mode == "train"), ref.train(mode == "train")
        x = torch.randn(4, 3, 5, 5, dtype=torch.float64) * 2 + 1
        x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
        y_ours, y_ref = compiled(x_ours), ref(x_ref)
        assert_close(y_ours, y_ref, f"{mode}: output")
        y_ours.pow(2).sum().backward(), y_ref.pow(2).sum().backward()
        assert_close(x_ours.grad, x_ref.grad, f"{mode}: input grad")
        assert_state_equal(ours, ref, mode)
