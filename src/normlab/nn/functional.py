"""Normalization written from scratch: batch_norm, instance_norm, group_norm, layer_norm.

One core does the work. For x of shape (N, C, *) it normalizes every channel c with statistics
taken over all other dims (M = N·∏spatial values per channel), in two passes as torch does, so
that a large mean cannot cancel the variance's digits:

    mean = Σx / M                var = Σ(x − mean)² / M          (biased: the output uses it)
    invstd = 1 / √(var + eps)    y = (x − mean)·scale + β,       scale = γ·invstd

and its backward is the closed form (x̂ = (x − mean)·invstd; sums run over the M values):

    ∂L/∂β = Σdy        ∂L/∂γ = Σdy·x̂
    ∂L/∂x = γ·invstd·(dy − Σdy/M − x̂·Σdy·x̂/M)               (training: statistics depend on x)
    ∂L/∂x = γ·invstd·dy                                        (eval: running statistics)

The other norms are batch norm on a reshaped view: instance norm treats each (sample, channel)
as a channel of a batch of one, group norm each (sample, group), layer norm each row of the
normalized trailing dims. Float16 and bfloat16 are computed in float32 and rounded once at the end.

Speed, eager: the core first views x so that each channel's values lie in contiguous runs, and
writes every formula once against that view (_by_channel): (M, C) when C is the fastest dim
(2-D or channels-last input; a channel is a column, sums run down dim 0), else (N, C, L) with
L = ∏spatial (a channel is N rows of L values, sums run over dims 0 and 2). Σdy·(x − mean) is
one torch.linalg.vecdot call, or cache-sized slices on one thread and for large tensors. The
elementwise steps run in place: the forward allocates only x − mean, which becomes y; the
backward allocates x − mean and dy − Σdy/M, which becomes dx, fused with the (x − mean) term in
one addcmul_, and reuses γ·invstd from the forward. On small inputs, where each op costs its
call more than its pass over memory, the forward keeps x − mean for the backward instead, and
small (M, C) batches with γ and β (a Linear layer's output) take _normalize_rows and
_rows_backward: the same formulas written out with no helper between them, since there every
Python call shows in the step time (docs/BENCHMARKS.md). For the same reason _normalize_rows and
the eval forward take their scalar operands (M, eps) as cached 0-dim tensors of the input's
dtype (_constant), and _batch_norm calls the C++ entry point of Function.apply directly when
no functorch transform or torch.compile needs its Python preamble.

torch.func: the autograd.Function has the form functorch's transforms need (setup_context), a
vmap rule (B batch norms at once are one batch norm over B·C channels) and, under those
transforms only, a forward-mode rule (jvp), so vmap, grad, jacrev, jacfwd, hessian and
functional_call work on every norm here as on torch's (tests/nn/test_functorch.py).
"""
from __future__ import annotations

import functools

import torch
from torch import Tensor

__all__ = ["batch_norm", "instance_norm", "group_norm", "layer_norm"]

_HALF_TYPES = (torch.float16, torch.bfloat16)
_ROWS_TYPES = (torch.float32, torch.float64)
_SLICE = 1 << 16  # elements per slice in _dot; also "small": x − mean is kept for the backward
_ONE_CALL = 1 << 22  # up to here, with several threads, _dot is one call (no slices)


def _compute_dtype(x: Tensor) -> torch.dtype:
    """float32 for the half types (their sums lose digits fast), the input's dtype otherwise."""
    return torch.float32 if x.dtype in _HALF_TYPES else x.dtype


def _cast(t: Tensor, dtype: torch.dtype) -> Tensor:
    """t in dtype; skips the dispatch of a no-op .to(), which adds up on small tensors."""
    return t if t.dtype == dtype else t.to(dtype)


def _channel_view(v: Tensor, ndim: int) -> Tensor:
    """(C,) -> (C, 1, ..., 1), which broadcasts against (N, C, *) input of rank ndim."""
    return v if ndim == 2 else v.view([-1] + [1] * (ndim - 2))


def _by_channel(t: Tensor, rows: bool | None = None) -> Tensor:
    """t (N, C, *) as the view the core computes on: (M, C) when C is the fastest dim in memory
    (2-D or channels-last input), else (N, C, L) with L = ∏spatial (a copy only for odd
    strides). rows=True or False forces the first or second form: dy takes x's form."""
    if t.dim() == 2:
        return t
    if rows is None:  # C fastest: (N, *, C) is contiguous (a plain layout never counts as that)
        rows = not t.is_contiguous() and t.movedim(1, -1).is_contiguous()
    if rows:
        return t.movedim(1, -1).reshape(-1, t.shape[1])
    return t.reshape(t.shape[0], t.shape[1], _prod(t.shape[2:]))


def _from_view(v: Tensor, like: Tensor) -> Tensor:
    """_by_channel undone: v in the shape of like (N, C, *); from (M, C), channels-last strides."""
    if v.dim() == like.dim():
        return v
    if v.dim() == 2:  # (N·∏spatial, C) -> (N, *spatial, C) -> (N, C, *spatial)
        return v.view(like.shape[0], *like.shape[2:], like.shape[1]).movedim(-1, 1)
    return v.view(like.shape)


def _fresh_for_view(x: Tensor, rows: bool, dtype: torch.dtype) -> Tensor:
    """An uninitialized tensor of x's shape, laid out so that _by_channel(·, rows) is a view of
    it: (N, C, *) contiguous, or with rows, C fastest ((N, *, C) in memory: channels-last)."""
    if not rows or x.dim() == 2:
        return torch.empty(x.shape, dtype=dtype, device=x.device)
    strides, step = [0] * x.dim(), 1
    for d in (1, *range(x.dim() - 1, 1, -1), 0):  # from the fastest dim: C, then spatial, then N
        strides[d], step = step, step * x.shape[d]
    return torch.empty_strided(x.shape, strides, dtype=dtype, device=x.device)


def _values_per_channel(t: Tensor) -> int:
    """M = N·∏spatial, the values per channel of t (N, C, *) or of its view; 0 when t is empty,
    also with no channels at all (an empty batch of layer or group norm: C = N·G = 0)."""
    return t.numel() // t.shape[1] if t.shape[1] else 0


def _per_channel(p: Tensor, v: Tensor) -> Tensor:
    """(C,) shaped to broadcast against the view v: (C,) against (M, C), (C, 1) against (N, C, L)."""
    return p if v.dim() == 2 else p.unsqueeze(1)


def _sum(v: Tensor, mean: bool = False) -> Tensor:
    """Σv (or, with mean=True, its mean) per channel of the view v: -> (C,)."""
    if v.dim() == 2:
        return v.mean(0) if mean else v.sum(0)
    return v.mean((0, 2)) if mean else v.sum((0, 2))


def _sum_sq(v: Tensor) -> Tensor:
    """Σv² per channel of the view v.

    (N, C, L), eager: the norm of each contiguous row of L values, squared, summed over N;
    torch.linalg.vector_norm along the fastest dim reads v once at the speed of a sum and
    writes nothing big (torch.var_mean over dims (0, 2, 3) is many times slower).
    """
    if v.dim() == 2 or torch.compiler.is_compiling():
        return _dot(v, v)
    return torch.linalg.vector_norm(v, dim=2).square().sum(0)


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Σa·b per channel of two views of the same form.

    Eager: one torch.linalg.vecdot call for small tensors, and up to _ONE_CALL elements when
    several threads can share it; otherwise a·b one slice of samples (or rows) at a time, so the
    product stays in cache and never becomes a full-size temporary. Under torch.compile the
    plain formula is best: inductor fuses the product into the reduction.
    """
    if torch.compiler.is_compiling():
        return (a * b).sum((0,) if a.dim() == 2 else (0, 2))
    if a.numel() <= _SLICE or (a.numel() <= _ONE_CALL and torch.get_num_threads() > 1):
        # one call: vecdot multiplies and sums in C++, and several threads share the work
        # (a cache-sized slice is too small for torch to split)
        if a.dim() == 2:
            return torch.linalg.vecdot(a, b, dim=0)
        return torch.linalg.vecdot(a, b, dim=2).sum(0)
    step = max(1, _SLICE // max(1, _prod(a.shape[1:])))  # samples (or rows) per slice
    return sum(_sum(a_k * b_k) for a_k, b_k in zip(a.split(step), b.split(step)))


def _view_stats(v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-channel mean, biased variance, and the full-size v − mean, for the view v."""
    C, M = v.shape[1], _values_per_channel(v)
    if M == 0:  # empty batch: nothing to average (the caller leaves the running stats alone)
        return v.new_zeros(C), v.new_ones(C), v.clone()
    mean = _sum(v, mean=True)
    centred = v - _per_channel(mean, v)
    return mean, _sum_sq(centred).div_(M), centred


def _batch_stats(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-channel mean, biased variance, and the full-size x − mean, for x (N, C, *)."""
    mean, var, centred = _view_stats(_by_channel(x))
    return mean, var, _from_view(centred, x)


def _normalize(x, weight, bias, running_mean, running_var, training: bool, momentum: float,
               eps: float):
    """The forward: y = (x − mean)·scale + β with scale = γ·invstd; in training it also moves
    the running statistics towards the batch's. Returns y, mean, invstd, scale, and the view of
    x − mean when the backward should reuse it (small training input, eager), else None."""
    cdtype = _compute_dtype(x)
    xc = _cast(x, cdtype)
    if not training:  # the running statistics (the caller copies mean if backward needs it)
        mean = _cast(running_mean, cdtype)
        eps_ = eps if torch.compiler.is_compiling() else _constant(eps, cdtype)  # (dynamo: a number)
        invstd = (_cast(running_var, cdtype) + eps_).rsqrt_()
        scale = invstd if weight is None else _cast(weight, cdtype) * invstd
        # y = x·scale + (β − mean·scale), torch's folded form: elementwise only, so on x as it is
        shift = (torch.mul(mean, scale).neg_() if bias is None
                 else torch.addcmul(_cast(bias, cdtype), mean, scale, value=-1))
        if x.dim() == 2:
            y = torch.addcmul(shift, xc, scale)
        else:
            y = (xc * _channel_view(scale, x.dim())).add_(_channel_view(shift, x.dim()))
        return _cast(y, x.dtype), mean, invstd, scale, None
    v = _by_channel(xc)
    mean, var, centred = _view_stats(v)
    _lerp_running_stats(running_mean, running_var, mean, var, _values_per_channel(v), momentum)
    invstd = (var + eps).rsqrt_()
    scale = invstd if weight is None else _cast(weight, cdtype) * invstd
    shift = None if bias is None else _cast(bias, cdtype)
    # y = (x − mean)·scale + β, written through the per-channel view of a buffer in x's shape
    # and layout: the autograd.Function must return a tensor that is no view, or `y += r` on
    # its output (the book's Residual block) would be refused, as it is not on torch's. Small
    # input: each op costs its call more than its pass over memory, so x − mean is kept for the
    # backward (one op fewer there); large input: the backward recomputes it.
    keep = v.numel() <= _SLICE and not torch.compiler.is_compiling()
    y = _fresh_for_view(x, v.dim() == 2, cdtype)
    yv = _by_channel(y, rows=v.dim() == 2)  # a view of y: (M, C) or (N, C, L), as v
    if shift is not None and v.dim() == 2:  # (M, C): scale and shift in one pass
        torch.addcmul(shift, centred, scale, out=yv)
    else:  # (N, C, L): two passes beat one broadcast addcmul there
        torch.mul(centred, _per_channel(scale, v), out=yv)
        if shift is not None:
            yv.add_(_per_channel(shift, v))
    return _cast(y, x.dtype), mean, invstd, scale, centred if keep else None


def _update_running_stats(running_mean, running_var, mean, var, x, momentum: float) -> None:
    """running ← (1 − momentum)·running + momentum·batch value, in place (a lerp); the running
    variance takes the unbiased variance var·M/(M − 1). An empty batch changes nothing."""
    _lerp_running_stats(running_mean, running_var, mean, var, _values_per_channel(x), momentum)


def _lerp_running_stats(running_mean, running_var, mean, var, M: int, momentum: float) -> None:
    """_update_running_stats for statistics of M values per channel (e.g. over several ranks)."""
    if M == 0:
        return
    if running_mean is not None:
        running_mean.lerp_(_cast(mean, running_mean.dtype), momentum)
    if running_var is not None:
        running_var.lerp_(_cast(var * (M / max(M - 1, 1)), running_var.dtype), momentum)


@functools.lru_cache(maxsize=256)
def _constant(value: float, dtype: torch.dtype) -> Tensor:
    """value as a 0-dim tensor of dtype, made once. An op with a Python number operand wraps it
    in a new tensor on every call (about 1 µs on this CPU, against 0.7 µs for a whole (C,)
    op), and a 0-dim operand of another dtype is copied to the op's dtype; one of the op's own
    dtype costs neither and gives the same result. Used where such costs show: the small-input
    fast path and the eval forward."""
    return torch.tensor(value, dtype=dtype)


def _is_small_rows(x, weight, bias, training: bool) -> bool:
    """Whether _normalize_rows applies: small, non-empty (M, C) training input, γ and β of its
    dtype (float32 or float64), eager."""
    return (training and x.dim() == 2 and 0 < x.numel() <= _SLICE and x.dtype in _ROWS_TYPES
            and weight is not None and bias is not None and weight.dtype == bias.dtype == x.dtype
            and not torch.compiler.is_compiling())


def _normalize_rows(x, weight, bias, running_mean, running_var, momentum: float, eps: float):
    """_normalize for small (M, C) training input, written out: at this size each Python call
    costs about as much as an op, so nothing stands between the formulas. Returns y, mean,
    invstd, scale and x − mean (kept for the backward)."""
    M = x.shape[0]
    mean = x.sum(0).div_(_constant(M, x.dtype))  # as x.mean(0) computes it, without wrapping M
    centred = x - mean
    sum_sq = torch.linalg.vecdot(centred, centred, dim=0)  # Σ(x − mean)² = M·var
    # _lerp_running_stats's update, from Σ(x − mean)² with M − 1 as a cached operand (M > 0 here)
    if running_mean is not None:
        running_mean.lerp_(_cast(mean, running_mean.dtype), momentum)
    if running_var is not None:  # the unbiased variance Σ(x − mean)²/(M − 1)
        running_var.lerp_(_cast(sum_sq / _constant(max(M - 1, 1), x.dtype), running_var.dtype), momentum)
    invstd = torch.add(_constant(eps, x.dtype), sum_sq, alpha=1 / M).rsqrt_()  # 1/√(Σ/M + eps)
    scale = weight * invstd
    return torch.addcmul(bias, centred, scale), mean, invstd, scale, centred


def _rows_backward(dy, centred, invstd, scale):
    """_batch_norm_backward for _normalize_rows (dx, dγ and dβ all wanted), written out."""
    M = dy.shape[0]
    sum_dy = dy.sum(0)
    sum_dy_xhat = torch.linalg.vecdot(dy, centred, dim=0).mul_(invstd)
    dx = torch.sub(dy, sum_dy, alpha=1 / M)
    dx = dx.addcmul_(centred, invstd * sum_dy_xhat, value=-1 / M).mul_(scale)
    return dx, sum_dy_xhat, sum_dy


class _BatchNormFunction(torch.autograd.Function):
    """_normalize with the closed-form backward, written as torch.func's transforms (vmap, grad,
    jacrev, functional_call) need: forward takes no ctx and returns, beside y, what backward
    reuses (mean, invstd, scale, and x − mean or an empty stand-in); setup_context saves it;
    vmap is the rule for batches of batch norms. The running statistics are updated inside forward, which
    autograd runs without recording a graph."""

    @staticmethod
    def forward(x, weight, bias, running_mean, running_var, training: bool, momentum: float,
                eps: float):
        if _is_small_rows(x, weight, bias, training):
            return _normalize_rows(x, weight, bias, running_mean, running_var, momentum, eps)
        y, mean, invstd, scale, centred = _normalize(x, weight, bias, running_mean, running_var,
                                                     training, momentum, eps)
        if not training:  # a copy: a later update of the buffer must not reach backward
            mean = mean.clone()
        if scale is invstd:  # no γ: the same tensor must not be two outputs
            scale = invstd.clone()
        # x − mean not kept: an empty stand-in, since torch.compile's backward needs tensors
        return y, mean, invstd, scale, x.new_empty(0) if centred is None else centred

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, running_mean, running_var, training, momentum, eps = inputs
        y, mean, invstd, scale, centred = output
        ctx.mark_non_differentiable(*output[1:])
        ctx.save_for_backward(x, weight, mean, invstd, scale)
        ctx.save_for_forward(x, weight, mean, invstd, scale)
        ctx.centred = centred if centred.dim() > 1 else None  # the view of x − mean, or None
        ctx.rows = _is_small_rows(x, weight, bias, training)
        ctx.training, ctx.eps = training, eps
        ctx.bias_dtype = None if bias is None else bias.dtype
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, dy, *_):
        if dy is None:  # no gradient reached y: every input gradient is zero
            return None, None, None, None, None, None, None, None
        x, weight, mean, invstd, scale = ctx.saved_tensors
        centred = ctx.centred
        needs = ctx.needs_input_grad
        grad_mode = torch.is_grad_enabled()
        if ctx.rows and not grad_mode and needs[0] and needs[1] and needs[2]:
            return _rows_backward(dy, centred, invstd, scale) + (None,) * 5
        if grad_mode:
            # create_graph=True: the gradients must be functions of x and γ for second
            # derivatives, so recompute the statistics (training) and the scale from them.
            if ctx.training:
                mean, invstd = _stats_with_grad(_cast(x, mean.dtype), ctx.eps)
            scale = invstd if weight is None else _cast(weight, invstd.dtype) * invstd
            centred = None  # recomputed from x, with its graph
        dx, dweight, dbias = _batch_norm_backward(dy, x, weight, mean, invstd, scale,
                                                  ctx.training, needs, centred=centred)
        dbias = None if dbias is None else _cast(dbias, ctx.bias_dtype)
        return dx, dweight, dbias, None, None, None, None, None

    @staticmethod
    def vmap(info, in_dims, x, weight, bias, running_mean, running_var, training, momentum, eps):
        """B batch norms at once (x: (B, N, C, *) with the vmapped dim moved first) are one batch
        norm over (N, B·C, *): each problem's channels are channels of their own. γ, β and the
        running statistics are shared ((C,), repeated B times) or per problem ((B, C)); training
        updates per-problem running statistics in place, and refuses shared ones, as torch does
        (B batches cannot all update one buffer)."""
        B = info.batch_size
        stats = ((running_mean, in_dims[3]), (running_var, in_dims[4]))
        if training and any(t is not None and d is None for t, d in stats):
            raise RuntimeError(_VMAP_SHARED_STATS)
        x = x.movedim(in_dims[0], 1) if in_dims[0] is not None else x.unsqueeze(1).expand(-1, B, *x.shape[1:])
        N, C = x.shape[0], x.shape[2]

        def per_problem(t, d):  # (C,) shared or (B, C) -> (B·C,)
            if t is None:
                return None
            return t.repeat(B) if d is None else t.movedim(d, 0).reshape(B * C)

        flat = [per_problem(t, d) for t, d in zip((weight, bias, running_mean, running_var), in_dims[1:5])]
        y, mean, invstd, scale, centred = _BatchNormForwardMode.apply(
            x.reshape(N, B * C, *x.shape[3:]), *flat, training, momentum, eps)
        for (t, d), new in zip(stats, flat[2:]):  # per-problem statistics that reshape copied:
            if training and t is not None and new.data_ptr() != t.data_ptr():  # write them back
                t.movedim(d, 0).copy_(new.view(B, C))
        y = y.view(x.shape).movedim(1, 0)  # (N, B·C, *) -> (B, N, C, *)
        by_problem = [t.view(B, C) for t in (mean, invstd, scale)]
        if centred.dim() == 1:  # the empty stand-in: x − mean was not kept
            return (y, *by_problem, centred), (0, 0, 0, 0, None)
        # the core's view of x − mean, (N, B·C, L) or (M, B·C), with the problems first
        centred = centred.view(*centred.shape[:1], B, C, *centred.shape[2:]).movedim(1, 0)
        return (y, *by_problem, centred), (0, 0, 0, 0, 0)


class _BatchNormForwardMode(_BatchNormFunction):
    """_BatchNormFunction with forward-mode derivatives (torch.func.jvp, jacfwd, hessian), taken
    under functorch transforms only: torch.compile cannot trace a Function with a custom jvp."""

    @staticmethod
    def jvp(ctx, dx, dweight, dbias, *_):
        """The derivative of y along the tangents (dx, dγ, dβ), x̂ = (x − mean)·invstd:

            training: dy = γ·invstd·(dx − mean(dx) − x̂·mean(x̂·dx)) + dγ·x̂ + dβ
            eval:     dy = γ·invstd·dx + dγ·x̂ + dβ
        """
        x, weight, mean, invstd, scale = ctx.saved_tensors
        cdtype = mean.dtype
        dims = [0, *range(2, x.dim())]
        view = functools.partial(_channel_view, ndim=x.dim())
        xhat = (_cast(x, cdtype) - view(mean)) * view(invstd)
        dy = torch.zeros_like(xhat)
        if dx is not None:
            dx = _cast(dx, cdtype)
            if ctx.training:
                dx = dx - dx.mean(dims, keepdim=True) - xhat * (xhat * dx).mean(dims, keepdim=True)
            dy = dy + dx * view(scale)
        if dweight is not None:
            dy = dy + xhat * view(_cast(dweight, cdtype))
        if dbias is not None:
            dy = dy + view(_cast(dbias, cdtype))
        return _cast(dy, x.dtype), None, None, None, None


_VMAP_SHARED_STATS = (
    "Batch norm got a batched tensor as input while the running_mean or running_var, which will be "
    "updated in place, were not batched.\nIf you are using a module and do not need eval mode, please "
    "set `track_running_stats` to be False.If you are using a prebuilt module and do not need eval mode, "
    "please see the functorch website for resources on how to patch your module to work with vmap")


def _stats_with_grad(x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """mean and invstd as differentiable functions of x (for double backward)."""
    dims = [0] + list(range(2, x.dim()))
    var, mean = torch.var_mean(x, dims, correction=0)
    return mean, (var + eps).rsqrt()


def _batch_norm_backward(dy, x, weight, mean, invstd, scale, training, needs,
                         all_sums=None, count: int | None = None, centred=None):
    """Closed-form gradients (see the module docstring); sums are per channel over M values.
    scale is γ·invstd (invstd without γ); centred is the view of x − mean if the forward kept it.

    Synchronized batch norm passes `all_sums`, which turns this rank's (Σdy, Σdy·x̂) into the
    sums over every rank's values, and `count`, their number M: ∂L/∂x takes those, while
    ∂L/∂γ and ∂L/∂β stay this rank's share."""
    cdtype = mean.dtype
    v = _by_channel(x)
    dyv = _by_channel(_cast(dy, cdtype), rows=v.dim() == 2)  # laid out as x is
    M = _values_per_channel(v) if count is None else count
    sum_dy = _sum(dyv)
    dx = sum_dy_xhat = None
    in_place = not torch.is_grad_enabled()  # False when differentiating this backward
    if needs[1] or (needs[0] and training):
        if centred is None:
            centred = _cast(v, cdtype) - _per_channel(mean, v)  # x − mean
        if in_place and needs[0] and training and _SLICE < v.numel() <= _ONE_CALL \
                and not torch.compiler.is_compiling():
            # the product dy·(x − mean) in a full-size buffer that then becomes dx: one fresh
            # allocation fewer than a dot product's temporary plus dx (each costs page faults;
            # larger tensors take _dot's cache-sized slices instead)
            dx = torch.mul(dyv, centred)
            sum_dy_xhat = _sum(dx).mul_(invstd)  # Σdy·x̂
        else:
            sum_dy_xhat = _dot(dyv, centred).mul_(invstd)  # Σdy·x̂
    if needs[0] and training:
        # dx = γ·invstd·(dy − Σdy/M − (x − mean)·c2/M), c2 = invstd·Σdy·x̂: torch's order, so
        # dx is exactly 0 where dy and x are constant; 1/M rides along as a scalar factor.
        sums = (sum_dy, sum_dy_xhat) if all_sums is None else all_sums(sum_dy, sum_dy_xhat)
        inv_m = 1 / max(M, 1)
        sum_dy_all, c2 = _per_channel(sums[0], v), _per_channel(invstd * sums[1], v)
        # dy − Σdy/M first, as torch does: exact where dy is nearly constant
        dx = torch.sub(dyv, sum_dy_all, alpha=inv_m, out=dx)
        if in_place:  # dx − (x − mean)·c2/M fused into one pass, then ·γ·invstd
            dx = dx.addcmul_(centred, c2, value=-inv_m).mul_(_per_channel(scale, v))
        else:  # differentiable: no in-place updates
            dx = (dx - centred * c2 * inv_m) * _per_channel(scale, v)
        dx = _cast(_from_view(dx, x), x.dtype)
    elif needs[0]:
        dx = _cast(_from_view(dyv * _per_channel(scale, v), x), x.dtype)
    dweight = _cast(sum_dy_xhat, weight.dtype) if needs[1] else None
    dbias = sum_dy if needs[2] else None
    return dx, dweight, dbias


def _batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps):
    """batch_norm without torch's Python-level argument checks (shared by the other norms)."""
    _check_channels(x, weight, bias, running_mean, running_var)
    if not training and (running_mean is None or running_var is None):
        raise RuntimeError("running_mean must be defined in evaluation mode")
    if torch._C._are_functorch_transforms_active():  # torch.func: vmap, grad, jacfwd, ...
        return _BatchNormForwardMode.apply(x, weight, bias, running_mean, running_var, training,
                                           momentum, eps)[0]
    if not (torch.is_grad_enabled() and (x.requires_grad or (weight is not None and weight.requires_grad)
                                         or (bias is not None and bias.requires_grad))):
        # no graph to record (inference): skip the autograd.Function
        return _normalize(x, weight, bias, running_mean, running_var, training, momentum, eps)[0]
    # Function.apply is a Python preamble (for functorch transforms and torch.compile) around
    # the C++ entry point torch._C._FunctionBase.apply; when neither is active, call that entry
    # point directly: the preamble costs about 5 µs, 4% of a (256, 120) training step
    # (docs/BENCHMARKS.md).
    if torch.compiler.is_compiling():
        return _BatchNormFunction.apply(x, weight, bias, running_mean, running_var, training,
                                        momentum, eps)[0]
    return _C_APPLY(x, weight, bias, running_mean, running_var, training, momentum, eps)[0]


# what Function.apply ends in
_C_APPLY = super(torch.autograd.Function, _BatchNormFunction).apply


def _check_channels(x, weight, bias, running_mean, running_var) -> None:
    """torch's check that every per-channel tensor given has C = x.shape[1] elements."""
    C = x.shape[1]
    for name, v in (("weight", weight), ("bias", bias), ("running_mean", running_mean),
                    ("running_var", running_var)):
        if v is not None and v.numel() != C:
            raise RuntimeError(f"{name} should contain {C} elements not {v.numel()}")


def _verify_batch_size(size) -> None:
    """torch's rule: training needs more than one value per channel (N·∏spatial > 1)."""
    values = size[0]
    for s in size[2:]:
        values *= s
    if values == 1:
        raise ValueError(
            f"Expected more than 1 value per channel when training, got input size {size}")


def batch_norm(input: Tensor, running_mean: Tensor | None, running_var: Tensor | None,
               weight: Tensor | None = None, bias: Tensor | None = None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """Batch normalization over dim 1 of input (N, C, *), torch.nn.functional's signature.

    training=True: normalize with the batch's mean and biased variance, and update the given
    running statistics in place:
        running_mean ← (1 − momentum)·running_mean + momentum·mean(x)
        running_var  ← (1 − momentum)·running_var  + momentum·var_unbiased(x),
        var_unbiased = var_biased · M/(M − 1).
    training=False: normalize with running_mean and running_var.
    """
    if training:
        _verify_batch_size(input.size())
        if eps <= 0.0:
            raise ValueError(f"batch_norm eps must be positive during training, but got {eps}")
    elif eps < 0.0:
        raise ValueError(f"batch_norm eps must be non-negative, but got {eps}")
    if input.dim() < 2:
        input.size(1)  # fails with torch's IndexError
    return _batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)


def instance_norm(input: Tensor, running_mean: Tensor | None = None,
                  running_var: Tensor | None = None, weight: Tensor | None = None,
                  bias: Tensor | None = None, use_input_stats: bool = True,
                  momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """Normalize each (sample, channel) over its spatial dims; torch's signature.

    It is batch norm on x viewed as (1, N·C, *). With running statistics, each of the N·C
    instances updates its own copy and the copies are averaged over the batch:
        running_mean ← (1 − momentum)·running_mean + momentum·mean_n(mean over space of x[n])
    (and likewise running_var with the unbiased per-instance variance).
    """
    if use_input_stats:
        size, spatial = input.size(), 1
        for s in size[2:]:
            spatial *= s
        if spatial == 1:
            raise ValueError(
                f"Expected more than 1 spatial element when training, got input size {size}")
    N, C = input.shape[0], input.shape[1]
    x = input.reshape(1, N * C, *input.shape[2:])  # (1, N·C, *): one channel per instance

    def per_instance(v):
        return None if v is None else v.repeat(N)  # (C,) -> (N·C,)

    rm, rv = per_instance(running_mean), per_instance(running_var)
    y = _batch_norm(x, rm, rv, per_instance(weight), per_instance(bias),
                    use_input_stats, momentum, eps)
    with torch.no_grad():  # an empty batch leaves them alone, as batch norm's
        if use_input_stats and running_mean is not None and N > 0:
            running_mean.copy_(rm.view(N, C).mean(0))
        if use_input_stats and running_var is not None and N > 0:
            running_var.copy_(rv.view(N, C).mean(0))
    return y.view(input.shape)


def _affine(y: Tensor, weight: Tensor | None, bias: Tensor | None, view) -> Tensor:
    """y·weight + bias with weight and bias reshaped by `view` to broadcast against y."""
    if weight is not None and bias is not None:
        return torch.addcmul(view(bias), y, view(weight))
    if weight is not None:
        return y * view(weight)
    return y if bias is None else y + view(bias)


def group_norm(input: Tensor, num_groups: int, weight: Tensor | None = None,
               bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Normalize each (sample, group of C/G channels) over its channels and spatial dims.

    y = (x − mean_g)/√(var_g + eps)·γ_c + β_c, the statistics per sample and group,
    the affine per channel. It is batch norm on x viewed as (1, N·G, C/G·∏spatial).
    """
    if input.dim() < 2:
        raise RuntimeError(
            f"Expected at least 2 dimensions for input tensor but received {input.dim()}")
    N, C = input.shape[0], input.shape[1]
    _verify_batch_size([N * C // num_groups, num_groups] + list(input.size()[2:]))
    shape = list(input.shape)
    if C % num_groups != 0:
        raise RuntimeError("Expected number of channels in input to be divisible by num_groups, "
                           f"but got input of shape {shape} and num_groups={num_groups}")
    for name, v in (("weight", weight), ("bias", bias)):
        if v is not None and (v.dim() != 1 or v.numel() != C):
            raise RuntimeError(
                f"Expected {name} to be a vector of size equal to the number of channels in "
                f"input, but got {name} of shape {list(v.shape)} and input of shape {shape}")
    x = input.reshape(1, N * num_groups, C // num_groups * _prod(shape[2:]))  # (1, N·G, C/G·∏sp)
    y = _batch_norm(x, None, None, None, None, True, 0.0, eps).view(input.shape)
    return _affine(y, weight, bias, lambda v: _channel_view(v, input.dim()))


def layer_norm(input: Tensor, normalized_shape, weight: Tensor | None = None,
               bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Normalize over the trailing dims `normalized_shape`; elementwise affine over them.

    y = (x − E[x])/√(Var[x] + eps)·γ + β, statistics per leading index. It is batch norm on x
    viewed as (1, rows, ∏normalized_shape).
    """
    shape = [int(s) for s in ([normalized_shape] if isinstance(normalized_shape, int)
                              else normalized_shape)]
    k = len(shape)
    if input.dim() < k or list(input.shape[input.dim() - k:]) != shape:
        raise RuntimeError(f"Given normalized_shape={shape}, expected input with shape "
                           f"[*, {', '.join(map(str, shape))}], but got input of size"
                           f"{list(input.shape)}")
    for name, v in (("weight", weight), ("bias", bias)):
        if v is not None and list(v.shape) != shape:
            raise RuntimeError(f"Expected {name} to be of same shape as normalized_shape, but got "
                               f"{name} of shape {list(v.shape)} and normalized_shape = {shape}")
    x = input.reshape(1, -1, max(1, _prod(shape)))  # (1, rows, features)
    y = _batch_norm(x, None, None, None, None, True, 0.0, eps).view(input.shape)
    return _affine(y, weight, bias, lambda v: v)


def _prod(sizes) -> int:
    p = 1
    for s in sizes:
        p *= s
    return p
