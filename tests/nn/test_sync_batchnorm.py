"""SyncBatchNorm: plain batch norm outside a process group, and with 2 gloo ranks exactly batch
norm over the two halves' concatenation; convert_sync_batchnorm."""
from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

import normlab.nn as nl
from parity import assert_close, assert_same_error, copy_params, randomize_affine
from sync_ranks import C, MODES, SCENARIOS, inputs, make_layer, rank_slice, run_two_ranks, snapshot

TORCH_BN = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}
OURS_BN = {2: nl.BatchNorm1d, 3: nl.BatchNorm1d, 4: nl.BatchNorm2d, 5: nl.BatchNorm3d}
KEYS = ("output", "input grad", "weight grad", "bias grad", "running_mean", "running_var",
        "num_batches_tracked")


def steps(layer: nn.Module, xs, dys, modes) -> list[dict]:
    """One forward (and backward in training) per mode; what to compare after each."""
    records = []
    for x, dy, mode in zip(xs, dys, modes):
        layer.train(mode == "train")
        x = x.clone().requires_grad_()
        y = layer(x)
        y.backward(dy)
        records.append(snapshot(layer, y, x.grad))
    return records


# ---------------------------------------------------------------- one process: batch norm


@pytest.mark.parametrize("shape", [(6, C), (4, C, 5), (3, C, 4, 2), (2, C, 3, 2, 2)])
@pytest.mark.parametrize("affine,track,momentum",
                         [(True, True, 0.1), (False, True, None), (True, False, 0.1)])
def test_without_process_group_is_batch_norm(shape, affine, track, momentum):
    g = torch.Generator().manual_seed(len(shape))
    kw = dict(momentum=momentum, affine=affine, track_running_stats=track, dtype=torch.float64)
    sync, ours, ref = nl.SyncBatchNorm(C, **kw), OURS_BN[len(shape)](C, **kw), TORCH_BN[len(shape)](C, **kw)
    randomize_affine(ref, g)
    copy_params(ref, sync)
    copy_params(ref, ours)
    modes = ("train", "train", "eval")
    xs = [torch.randn(shape, generator=g, dtype=torch.float64) * 2 + 3 for _ in modes]
    dys = [torch.randn(shape, generator=g, dtype=torch.float64) for _ in modes]
    got, same, expected = (steps(m, xs, dys, modes) for m in (sync, ours, ref))
    for step, (a, b, e) in enumerate(zip(got, same, expected)):
        for key in KEYS:
            if a[key] is not None:  # the same functional path as normlab's BatchNorm: bitwise
                assert torch.equal(a[key], b[key]), f"step {step}: {key} differs from BatchNorm"
            assert_close(a[key], e[key], f"step {step}: {key} vs torch")


def test_float32_and_channels_last_without_process_group():
    x = torch.randn(4, C, 5, 5).to(memory_format=torch.channels_last) * 3 + 1
    sync, ref = nl.SyncBatchNorm(C), nn.BatchNorm2d(C)
    assert_close(sync(x), ref(x), "output")
    assert_close(sync.running_var, ref.running_var, "running_var")


def test_repr_state_dict_and_attributes_match_torch():
    for kw in (dict(), dict(eps=1e-3, momentum=None, affine=False, track_running_stats=False)):
        ours, ref = nl.SyncBatchNorm(5, **kw), nn.SyncBatchNorm(5, **kw)
        assert repr(ours) == repr(ref)
        assert list(ours.state_dict()) == list(ref.state_dict())
        assert ours.process_group is None and ref.process_group is None
    group = object()  # any object is kept as it is, as torch does
    assert nl.SyncBatchNorm(2, process_group=group).process_group is group


def test_loads_a_torch_batch_norm_state_dict():
    ref = nn.BatchNorm2d(C)
    randomize_affine(ref, torch.Generator().manual_seed(0))
    ref(torch.randn(4, C, 3, 3) + 2)  # running statistics away from (0, 1)
    ours = nl.SyncBatchNorm(C)
    buf = io.BytesIO()
    torch.save(ref.state_dict(), buf)
    buf.seek(0)
    ours.load_state_dict(torch.load(buf))
    x = torch.randn(2, C, 3, 3)
    for name, value in ref.state_dict().items():
        assert torch.equal(ours.state_dict()[name], value), name
    assert_close(ours.eval()(x), ref.eval()(x), "eval output")


def test_rejects_input_of_fewer_than_2_dims():
    assert_same_error(lambda: nl.SyncBatchNorm(C)(torch.randn(C)),
                      lambda: nn.SyncBatchNorm(C)(torch.randn(C)))


def test_one_value_per_channel_in_one_process_raises():
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        nl.SyncBatchNorm(C)(torch.randn(1, C))


# ---------------------------------------------------------------- convert_sync_batchnorm


def small_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, C, 3), nl.BatchNorm2d(C), nn.ReLU(),
        nn.Conv2d(C, 4, 1, bias=False), nn.BatchNorm2d(4, momentum=None, eps=1e-3),
        nl.GroupNorm(2, 4), nl.D2LBatchNorm(4, num_dims=4), nl.GhostBatchNorm(4),
        nn.Sequential(nn.Flatten(), nn.Linear(4 * 36, 6), nn.BatchNorm1d(6, affine=False)),
        nl.BatchNorm1d(6, track_running_stats=False), nn.SyncBatchNorm(6))


def test_convert_sync_batchnorm_replaces_only_the_batch_norms():
    model = small_model()
    model(torch.randn(8, 2, 8, 8))  # running statistics away from (0, 1)
    model.eval()
    model[4].train()  # the training flag is kept per layer
    before = copy.deepcopy(model)
    kept = dict(model.named_modules())
    x = torch.randn(5, 2, 8, 8)
    converted = nl.convert_sync_batchnorm(model, process_group=None)
    assert converted is model  # changed in place, as torch's
    names = {name: type(m) for name, m in converted.named_modules()}
    for name in ("1", "4", "8.2", "9"):
        assert names[name] is nl.SyncBatchNorm, name
        old, new = kept[name], converted.get_submodule(name)
        for attr in ("num_features", "eps", "momentum", "affine", "track_running_stats", "training"):
            assert getattr(new, attr) == getattr(old, attr), f"{name}.{attr}"
        for attr in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            assert getattr(new, attr) is getattr(old, attr), f"{name}.{attr} is not the same object"
    for name in ("0", "3", "5", "6", "7", "10"):  # convs, group, book, ghost, torch's SyncBatchNorm
        assert converted.get_submodule(name) is kept[name], name
    converted[4].eval()
    before[4].eval()
    # eval: the same running statistics; torch's layers now computed by normlab's batch norm
    assert_close(converted(x), before(x), "eval output")
    h = before[0](x)  # normlab's BatchNorm2d and the SyncBatchNorm it became: bitwise equal
    assert torch.equal(converted[1](h), before[1](h))
    assert [n for n, _ in converted.state_dict().items()] == list(before.state_dict())


def test_convert_keeps_bias_false_dtype_and_requires_grad():
    bn = nn.BatchNorm2d(C, bias=False, dtype=torch.float64)
    bn.weight.requires_grad_(False)
    sync = nl.SyncBatchNorm.convert_sync_batchnorm(bn)  # a batch norm itself: a new module
    assert type(sync) is nl.SyncBatchNorm and sync.bias is None
    assert sync.weight is bn.weight and not sync.weight.requires_grad
    assert sync.weight.dtype == sync.running_var.dtype == torch.float64
    assert repr(sync) == repr(nn.SyncBatchNorm.convert_sync_batchnorm(nn.BatchNorm2d(C, bias=False)))


def test_convert_puts_the_process_group_on_every_layer():
    group = object()
    model = nl.convert_sync_batchnorm(nn.Sequential(nl.BatchNorm1d(2), nn.BatchNorm3d(2)), group)
    assert all(m.process_group is group for m in model)


# ---------------------------------------------------------------- two ranks (gloo)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    """Both ranks' records of every scenario: one spawned job of 2 gloo processes (a few s)."""
    if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
        pytest.skip("this torch build has no torch.distributed with gloo")
    return run_two_ranks(tmp_path_factory.mktemp("sync_batchnorm"))


def one_process(sc) -> list[dict]:
    """The reference: torch.nn's batch norm on the whole batch in float64, loss (y·w).sum() as
    the ranks'. Eval without running statistics normalizes each rank's half on its own."""
    ref = make_layer(TORCH_BN[sc.rank], sc, dtype=torch.float64)
    records = []
    for step, mode in enumerate(MODES):
        ref.train(mode == "train")
        x, w = inputs(sc, step)
        x.requires_grad_()
        halves = [x] if sc.track or mode == "train" else [x[rank_slice(sc, r)] for r in (0, 1)]
        y = torch.cat([ref(h) for h in halves if h.shape[0] > 0])
        (y * w).sum().backward()
        records.append(snapshot(ref, y, x.grad))
    return records


@pytest.mark.parametrize("sc", SCENARIOS, ids=[sc.name for sc in SCENARIOS])
def test_two_ranks_equal_one_process_with_the_whole_batch(ranks, sc):
    expected = [{k: v.to(sc.dtype) if v is not None and v.is_floating_point() else v
                 for k, v in record.items()} for record in one_process(sc)]
    for step, (mode, e) in enumerate(zip(MODES, expected)):
        got = [ranks[r][sc.name][step] for r in (0, 1)]
        for r in (0, 1):
            part, what = rank_slice(sc, r), f"step {step} ({mode}), rank {r}"
            assert_close(got[r]["output"], e["output"][part], f"{what}: output")
            if mode == "train":
                assert_close(got[r]["input grad"], e["input grad"][part], f"{what}: input grad")
        for name in ("weight grad", "bias grad"):  # each rank's share; DDP sums (averages) them
            if mode == "train" and e[name] is not None:
                assert_close(got[0][name] + got[1][name], e[name], f"step {step}: {name} summed")
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            if e[name] is not None:  # every rank computes bitwise the same statistics
                assert torch.equal(got[0][name], got[1][name]), f"step {step}: {name} differs by rank"
            assert_close(got[0][name], e[name], f"step {step}: {name}")


def test_a_group_of_one_rank_does_not_synchronize(ranks):
    """process_group of the rank alone: each rank is plain batch norm on its own half, which
    differs from the whole batch's (so the comparison above can fail)."""
    sc = SCENARIOS[0]
    expected = one_process(sc)[0]["output"]
    for r in (0, 1):
        part = rank_slice(sc, r)
        local = make_layer(OURS_BN[sc.rank], sc)(inputs(sc, 0)[0][part]).detach()
        assert torch.equal(ranks[r]["own group"][0]["output"], local)
        with pytest.raises(AssertionError):
            assert_close(local, expected[part], "unsynchronized output")


def test_eval_does_not_communicate(ranks):
    """Every eval step above ran with the collectives replaced by an error; rank 0 also ran an
    eval forward alone, which would have hung had it called a collective."""
    sc = SCENARIOS[0]
    layer = make_layer(nl.SyncBatchNorm, sc).eval()
    assert torch.equal(ranks[0]["eval on rank 0 alone"], layer(inputs(sc, 0)[0]).detach())


def test_a_global_count_of_one_value_per_channel_raises_on_every_rank(ranks):
    """1 value on rank 0 and none on rank 1 (one value on each, a count of 2, is a scenario)."""
    for r in (0, 1):
        message = ranks[r]["count 1 error"]
        assert message is not None, f"rank {r} did not raise"
        assert message.startswith("ValueError: Expected more than 1 value per channel when training"), message


def test_wrong_channel_count_raises_batch_norms_error(ranks):
    for r in (0, 1):
        assert ranks[r]["channels error"] == f"RuntimeError: weight should contain {C + 1} elements not {C}"
