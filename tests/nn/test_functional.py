"""The functional forms: gradcheck/gradgradcheck in float64, half types, channels-last, errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as TF
from torch.autograd import gradcheck, gradgradcheck

from normlab.nn import functional as F
from parity import assert_close, assert_same_error

f64 = dict(dtype=torch.float64)


def leaf(*shape, offset=0.0):
    return (torch.randn(*shape, **f64) + offset).requires_grad_()


@pytest.mark.parametrize("shape", [(4, 3), (3, 2, 5), (2, 3, 3, 2), (2, 2, 2, 2, 2)])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_gradcheck_and_gradgradcheck(shape, training, affine):
    torch.manual_seed(0)
    C = shape[1]
    x = leaf(*shape, offset=1.0)
    params = (leaf(C), leaf(C)) if affine else ()
    rm, rv = torch.randn(C, **f64), torch.rand(C, **f64) + 0.5

    def f(x, *wb):
        # Fresh copies: the running statistics must not drift between gradcheck's evaluations.
        return F.batch_norm(x, rm.clone(), rv.clone(), *wb, training=training, eps=1e-3)

    assert gradcheck(f, (x, *params))
    assert gradgradcheck(f, (x, *params))


def test_batch_norm_gradcheck_channels_last():
    x = leaf(2, 3, 3, 2).detach().to(memory_format=torch.channels_last).requires_grad_()
    w, b = leaf(3), leaf(3)
    assert gradcheck(lambda x, w, b: F.batch_norm(x, None, None, w, b, True), (x, w, b))


@pytest.mark.parametrize("name,call", [
    ("instance", lambda x, w, b: F.instance_norm(x, None, None, w, b)),
    ("group", lambda x, w, b: F.group_norm(x, 3, w, b)),
    ("layer", lambda x, w, b: F.layer_norm(x, (6, 2), w.view(6, 1).expand(6, 2) * 1.0,
                                           b.view(6, 1).expand(6, 2) * 1.0)),
])
def test_other_norms_gradcheck_and_gradgradcheck(name, call):
    torch.manual_seed(1)
    x, w, b = leaf(2, 6, 2), leaf(6), leaf(6)
    assert gradcheck(call, (x, w, b))
    assert gradgradcheck(call, (x, w, b))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_types_reduce_in_float32(dtype):
    """Values near 60: Σx² over the batch is ~10⁸, far past float16's 65504. A half-precision
    reduction would overflow or lose the variance; ours reduces in float32."""
    torch.manual_seed(0)
    x64 = torch.randn(32, 4, 16, 16, **f64) + 60
    x = x64.to(dtype).requires_grad_()
    w = torch.ones(4, dtype=dtype, requires_grad=True)
    y = F.batch_norm(x, None, None, w, None, training=True)
    assert y.dtype == dtype and torch.isfinite(y).all()
    expected = TF.batch_norm(x.detach().double(), None, None, training=True)
    torch.testing.assert_close(y.double(), expected, atol=0.05, rtol=0)
    y.float().pow(2).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.dtype == dtype and w.grad.dtype == dtype


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_types_match_torch(dtype):
    torch.manual_seed(0)
    x = torch.randn(8, 3, 5, 5).to(dtype)
    rm, rv = torch.zeros(3, dtype=dtype), torch.ones(3, dtype=dtype)
    rm_t, rv_t = rm.clone(), rv.clone()
    y = F.batch_norm(x, rm, rv, training=True)
    y_t = TF.batch_norm(x, rm_t, rv_t, training=True)
    assert_close(y, y_t, "output")
    assert_close(rm, rm_t, "running_mean")
    assert_close(rv, rv_t, "running_var")


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5), (3, 3, 2, 2)])
@pytest.mark.parametrize("wanted", ["input", "params", "weight"])
def test_gradients_when_only_some_inputs_want_them(shape, wanted):
    """A first layer's input wants no gradient, frozen γ and β want none: the gradients that
    are wanted still match torch's, and the others stay None."""
    torch.manual_seed(1)
    x, dy = torch.randn(shape, **f64) * 2 + 1, torch.randn(shape, **f64)
    w, b = torch.rand(3, **f64) + 0.5, torch.randn(3, **f64)
    wants = {"input": (True, False, False), "params": (False, True, True),
             "weight": (False, True, False)}[wanted]
    grads = []
    for fn in (F.batch_norm, TF.batch_norm):
        leaves = [t.clone().requires_grad_(want) for t, want in zip((x, w, b), wants)]
        fn(leaves[0], None, None, leaves[1], leaves[2], training=True).backward(dy)
        grads.append([t.grad for t in leaves])
    for name, ours, ref in zip(("input", "weight", "bias"), *grads):
        assert (ours is None) == (ref is None), name
        if ref is not None:
            assert_close(ours, ref, f"{name} grad")


@pytest.mark.parametrize("rank", [4, 5])
def test_channels_last_matches_contiguous(rank):
    torch.manual_seed(0)
    shape = (3, 4, 5, 2, 3)[:rank]
    fmt = torch.channels_last if rank == 4 else torch.channels_last_3d
    x = torch.randn(shape, **f64)
    xs = [x.clone().requires_grad_(), x.clone().to(memory_format=fmt).requires_grad_()]
    w = torch.rand(4, **f64)
    ys = [F.batch_norm(xi, None, None, w, None, training=True) for xi in xs]
    dy = torch.randn(shape, **f64)
    for y in ys:
        y.backward(dy)
    assert ys[1].is_contiguous(memory_format=fmt), "output should keep the channels-last layout"
    assert_close(ys[1], ys[0], "output")
    assert_close(xs[1].grad, xs[0].grad, "input grad")


def test_running_stats_update_in_place_with_unbiased_variance():
    x = torch.tensor([[1.0], [3.0]], **f64)  # one channel, values 1 and 3
    rm, rv = torch.zeros(1, **f64), torch.ones(1, **f64)
    F.batch_norm(x, rm, rv, training=True, momentum=0.5)
    assert rm.item() == pytest.approx(0.5 * 0 + 0.5 * 2)
    assert rv.item() == pytest.approx(0.5 * 1 + 0.5 * 2)  # unbiased variance of {1, 3} is 2


@pytest.mark.parametrize("call", [
    lambda f: f.batch_norm(torch.randn(1, 3), None, None, training=True),
    lambda f: f.batch_norm(torch.randn(1, 3, 1, 1), None, None, training=True),
    lambda f: f.batch_norm(torch.randn(2, 3), None, None, training=True, eps=0.0),
    lambda f: f.batch_norm(torch.randn(2, 3), torch.zeros(3), torch.ones(3), eps=-1.0),
    lambda f: f.batch_norm(torch.randn(2, 3), None, None, torch.ones(4), training=True),
    lambda f: f.batch_norm(torch.randn(2, 3), None, None, torch.ones(3), torch.ones(4), training=True),
    lambda f: f.batch_norm(torch.randn(2, 3), torch.zeros(4), torch.ones(4)),
    lambda f: f.batch_norm(torch.randn(2, 3), torch.zeros(3), torch.ones(2)),
    lambda f: f.batch_norm(torch.randn(2, 3), None, None),
    lambda f: f.batch_norm(torch.randn(2), None, None, training=True),
    lambda f: f.instance_norm(torch.randn(2, 3, 1)),
    lambda f: f.group_norm(torch.randn(2, 6, 4), 4),
    lambda f: f.group_norm(torch.randn(2, 6, 4), 3, torch.ones(5)),
    lambda f: f.group_norm(torch.randn(6), 3),
    lambda f: f.group_norm(torch.randn(1, 3, 1), 3),
    lambda f: f.layer_norm(torch.randn(2, 3), [4]),
    lambda f: f.layer_norm(torch.randn(3), [2, 3]),
    lambda f: f.layer_norm(torch.randn(2, 3), [3], torch.ones(4)),
])
def test_errors_match_torch(call):
    assert_same_error(lambda: call(F), lambda: call(TF))


SIZE_CASES = {  # inputs that reach each size-dependent branch of the core (issue 17)
    2**17: {"maps": (32, 16, 16, 16), "vectors": (8192, 16)},
    2**22: {"maps": (64, 16, 64, 64), "vectors": (262144, 16)},
    2**22 + 2**16: {"maps": (68, 16, 64, 64)},
}


def size_cases():
    for numel, shapes in SIZE_CASES.items():
        for kind, shape in shapes.items():
            layouts = ["contiguous", "channels_last"] if kind == "maps" else ["contiguous"]
            for layout in layouts:
                for threads in (1, 2):
                    yield pytest.param(shape, layout, threads, id=f"{numel}-{kind}-{layout}-{threads}threads")


@pytest.mark.parametrize("shape,layout,threads", list(size_cases()))
def test_large_inputs_match_torch_at_one_and_two_threads(shape, layout, threads):
    """Forward, backward and running statistics against torch's batch_norm at 2^17 and 2^22
    elements (and just past 2^22), where the core changes how it sums, on 1 and 2 threads."""
    g = torch.Generator().manual_seed(len(shape) * threads)
    C = shape[1]
    x = torch.randn(shape, generator=g, **f64) * 3 + 1
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    dy = torch.randn(shape, generator=g, **f64)
    weight, bias = torch.rand(C, generator=g, **f64) + 0.5, torch.randn(C, generator=g, **f64)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        results = []
        for bn in (F.batch_norm, TF.batch_norm):
            xi, w, b = (t.clone().requires_grad_() for t in (x, weight, bias))
            rm, rv = torch.zeros(C, **f64), torch.ones(C, **f64)
            y = bn(xi, rm, rv, w, b, True, 0.1, 1e-5)
            y.backward(dy)
            results.append({"output": y.detach(), "input grad": xi.grad, "weight grad": w.grad,
                            "bias grad": b.grad, "running_mean": rm, "running_var": rv})
    finally:
        torch.set_num_threads(before)
    for key in results[1]:
        assert_close(results[0][key], results[1][key], key)
