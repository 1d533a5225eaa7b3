"""Normalization written from scratch: batch_norm, instance_norm, group_norm, layer_norm.

One core does the work: batch norm of x (N, C, *) over every dim but the channel dim, with
M = N·∏spatial values per channel. Read top to bottom, the code is this math:

    forward     mean   = Σx/M                                      (C,)
                var    = Σ(x − mean)²/M                             (C,)  biased: the output uses it
                invstd = 1/√(var + eps)                             (C,)
                y      = (x − mean)·γ·invstd + β                    (N, C, *)
    running     running_mean ← (1 − momentum)·running_mean + momentum·mean
    statistics  running_var  ← (1 − momentum)·running_var  + momentum·var·M/(M − 1)
                (training only; eval normalizes with them instead of mean and var)
    backward    x̂ = (x − mean)·invstd, the sums over the M values of each channel:
                ∂L/∂β = Σdy        ∂L/∂γ = Σdy·x̂
                ∂L/∂x = γ·invstd·(dy − Σdy/M − x̂·Σdy·x̂/M)        training: mean, var depend on x
                ∂L/∂x = γ·invstd·dy                                 eval

The statistics take two passes (the mean, then the squares about it), as torch's do, so that a
large mean cannot cancel the variance's digits. Float16 and bfloat16 are computed in float32
and rounded once at the end. The other norms are batch norm on a reshaped view: instance norm
treats each (sample, channel) as a channel of a batch of one, group norm each (sample, group),
layer norm each row of the normalized trailing dims.

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


def _compute_dtype(x: Tensor) -> torch.dtype:
    """float32 for the half types (their sums lose digits fast), the input's dtype otherwise."""
    return torch.float32 if x.dtype in _HALF_TYPES else x.dtype


def _per_channel(v: Tensor, ndim: int) -> Tensor:
    """A (C,) tensor shaped (C, 1, ..., 1), so that it applies per channel to (N, C, *) input
    of rank ndim: x − _per_channel(mean, x.dim()) subtracts each channel's mean."""
    return v if ndim == 2 else v.view([-1] + [1] * (ndim - 2))


def _reduce_dims(x: Tensor) -> list[int]:
    """Every dim of x (N, C, *) but the channel dim: [0, 2, 3, ...]."""
    return [0, *range(2, x.dim())]


def _torch_layout(x: Tensor) -> torch.memory_format:
    """The layout torch's kernel gives its output for input x: channels-last if x is laid out
    so, else contiguous (whatever x's own strides: a transposed input gets a plain output)."""
    channels_last = {4: torch.channels_last, 5: torch.channels_last_3d}.get(x.dim())
    if channels_last and not x.is_contiguous() and x.is_contiguous(memory_format=channels_last):
        return channels_last
    return torch.contiguous_format


def _values_per_channel(x: Tensor) -> int:
    """M = N·∏spatial, the values per channel of x (N, C, *); 0 when x is empty, also with no
    channels at all (an empty batch of layer or group norm: C = N·G = 0)."""
    return x.numel() // x.shape[1] if x.shape[1] else 0


def _dot_per_channel(a: Tensor, b: Tensor) -> Tensor:
    """Σa·b over every dim but the channel dim, for a and b of shape (N, C, *): (C,).

    Written as one dot product per row (torch.linalg.vecdot), it needs no full-size temporary
    a·b (a fresh 5 MB buffer at LeNet's first map). With plain (a·b).sum for Σ(x − mean)² and
    Σdy·(x − mean) and a temporary in the backward's last step too, BN-LeNet's training step was
    1.37× the previous layer's (docs/BENCHMARKS.md). Rows: the M values of a channel in 2-D
    input, each (sample, channel)'s ∏spatial values in contiguous maps; other layouts take the
    plain formula."""
    if a.dim() == 2:
        return torch.linalg.vecdot(a, b, dim=0)
    if a.is_contiguous() and b.is_contiguous():
        return torch.linalg.vecdot(a.flatten(2), b.flatten(2), dim=2).sum(0)
    return (a * b).sum(_reduce_dims(a))


def _subtract_product(d: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """d − a·b, in place on d (a fresh tensor of the caller's) in one pass, without a full-size
    a·b: that temporary made BN-LeNet's training step 1.10-1.28× slower (docs/BENCHMARKS.md).
    Under functorch transforms the plain formula, since vmap has no rule for addcmul_."""
    if torch._C._are_functorch_transforms_active():
        return d - a * b
    return d.addcmul_(a, b, value=-1)


# ---------------------------------------------------------------- forward

def _batch_stats(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """mean (C,), biased variance (C,) and x − mean (N, C, *) of x (N, C, *), in two passes.
    An empty batch has no statistics: mean 0 and variance 1, which change nothing."""
    M = _values_per_channel(x)
    if M == 0:
        return x.new_zeros(x.shape[1]), x.new_ones(x.shape[1]), x.clone()
    mean = x.mean(_reduce_dims(x))                       # pass 1: Σx/M
    centred = x - _per_channel(mean, x.dim())            # x − mean
    var = _dot_per_channel(centred, centred) / M         # pass 2: Σ(x − mean)²/M
    return mean, var, centred


def _normalize(x, weight, bias, running_mean, running_var, training: bool, momentum: float,
               eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """The forward: y = (x − mean)·γ·invstd + β, with the batch's statistics in training (which
    also move the running statistics) and the running ones in eval. Returns y, mean, invstd."""
    dtype = _compute_dtype(x)
    xc = x.to(dtype).contiguous(memory_format=_torch_layout(x))  # y takes xc's layout
    view = functools.partial(_per_channel, ndim=x.dim())
    if training:
        mean, var, centred = _batch_stats(xc)
        _update_running_stats(running_mean, running_var, mean, var, x, momentum)
    else:  # a copy of the running mean: a later update of the buffer must not reach backward
        mean, var = running_mean.to(dtype, copy=True), running_var.to(dtype)
        centred = xc - view(mean)
    invstd = (var + eps).rsqrt()
    scale = invstd if weight is None else weight.to(dtype) * invstd   # γ·invstd (C,)
    y = centred.mul_(view(scale))        # centred is ours, a fresh tensor: y takes its place
    if bias is not None:
        y = y.add_(view(bias.to(dtype)))
    return y.to(x.dtype), mean, invstd


def _update_running_stats(running_mean, running_var, mean, var, x, momentum: float) -> None:
    """running ← (1 − momentum)·running + momentum·batch value, in place (a lerp); the running
    variance takes the unbiased variance var·M/(M − 1). An empty batch changes nothing."""
    _lerp_running_stats(running_mean, running_var, mean, var, _values_per_channel(x), momentum)


def _lerp_running_stats(running_mean, running_var, mean, var, M: int, momentum: float) -> None:
    """_update_running_stats for statistics of M values per channel (e.g. over several ranks)."""
    if M == 0:
        return
    if running_mean is not None:
        running_mean.lerp_(mean.to(running_mean.dtype), momentum)
    if running_var is not None:
        running_var.lerp_((var * (M / max(M - 1, 1))).to(running_var.dtype), momentum)


# ---------------------------------------------------------------- backward

def _batch_norm_backward(dy, x, weight, mean, invstd, training: bool, needs,
                         all_sums=None, count: int | None = None):
    """∂L/∂x, ∂L/∂γ, ∂L/∂β in closed form (the module docstring), each None unless `needs` asks.

    Synchronized batch norm passes `all_sums`, which turns this rank's (Σdy, Σdy·x̂) into the
    sums over every rank's values, and `count`, their number M: ∂L/∂x takes those, while ∂L/∂γ
    and ∂L/∂β stay this rank's share. Its in-place steps touch only tensors it made itself, so
    autograd can differentiate it too (create_graph=True; gradgradcheck in test_functional.py)."""
    dtype = mean.dtype
    dy, xc = dy.to(dtype), x.to(dtype)
    dims, view = _reduce_dims(x), functools.partial(_per_channel, ndim=x.dim())
    M = max(_values_per_channel(x) if count is None else count, 1)
    scale = invstd if weight is None else weight.to(dtype) * invstd   # γ·invstd (C,)
    sum_dy = dy.sum(dims)                                              # Σdy (C,)
    if needs[1] or (needs[0] and training):
        centred = xc - view(mean)                                      # x − mean
        sum_dy_xhat = _dot_per_channel(dy, centred) * invstd           # Σdy·x̂ (C,)
    dx = None
    if needs[0] and training:
        sums = (sum_dy, sum_dy_xhat) if all_sums is None else all_sums(sum_dy, sum_dy_xhat)
        # dy − Σdy/M first, as torch does: exact where dy is nearly constant; then
        # − x̂·Σdy·x̂/M = −(x − mean)·invstd·Σdy·x̂/M, then ·γ·invstd
        dx = dy - view(sums[0] / M)
        dx = _subtract_product(dx, centred, view(invstd * sums[1] / M))
        dx *= view(scale)
    elif needs[0]:
        dx = dy * view(scale)
    dx = None if dx is None else dx.to(x.dtype)
    dweight = sum_dy_xhat.to(weight.dtype) if needs[1] else None
    dbias = sum_dy if needs[2] else None
    return dx, dweight, dbias


# ---------------------------------------------------------------- the autograd.Function

class _BatchNormFunction(torch.autograd.Function):
    """_normalize with the closed-form backward, in the form torch.func's transforms need:
    forward takes no ctx and returns y with the mean and invstd it used, setup_context saves
    them, and vmap is the rule for batches of batch norms. The running statistics are updated
    inside forward, which autograd runs without recording a graph."""

    @staticmethod
    def forward(x, weight, bias, running_mean, running_var, training: bool, momentum: float,
                eps: float):
        return _normalize(x, weight, bias, running_mean, running_var, training, momentum, eps)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, running_mean, running_var, training, momentum, eps = inputs
        y, mean, invstd = output
        ctx.mark_non_differentiable(mean, invstd)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.save_for_forward(x, weight, mean, invstd)
        ctx.training, ctx.eps = training, eps
        ctx.bias_dtype = None if bias is None else bias.dtype
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, dy, *_):
        if dy is None:  # no gradient reached y: every input gradient is zero
            return None, None, None, None, None, None, None, None
        x, weight, mean, invstd = ctx.saved_tensors
        if torch.is_grad_enabled() and ctx.training:
            # create_graph=True: for second derivatives the gradients must be functions of x,
            # so the batch statistics are recomputed with their graph
            var, mean = torch.var_mean(x.to(mean.dtype), _reduce_dims(x), correction=0)
            invstd = (var + ctx.eps).rsqrt()
        dx, dweight, dbias = _batch_norm_backward(dy, x, weight, mean, invstd, ctx.training,
                                                  ctx.needs_input_grad)
        dbias = None if dbias is None else dbias.to(ctx.bias_dtype)
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
        y, mean, invstd = _BatchNormForwardMode.apply(
            x.reshape(N, B * C, *x.shape[3:]), *flat, training, momentum, eps)
        for (t, d), new in zip(stats, flat[2:]):  # per-problem statistics that reshape copied:
            if training and t is not None and new.data_ptr() != t.data_ptr():  # write them back
                t.movedim(d, 0).copy_(new.view(B, C))
        y = y.view(x.shape).movedim(1, 0)  # (N, B·C, *) -> (B, N, C, *)
        return (y, mean.view(B, C), invstd.view(B, C)), (0, 0, 0)


class _BatchNormForwardMode(_BatchNormFunction):
    """_BatchNormFunction with forward-mode derivatives (torch.func.jvp, jacfwd, hessian), taken
    under functorch transforms only: torch.compile cannot trace a Function with a custom jvp."""

    @staticmethod
    def jvp(ctx, dx, dweight, dbias, *_):
        """The derivative of y along the tangents (dx, dγ, dβ), x̂ = (x − mean)·invstd:

            training: dy = γ·invstd·(dx − mean(dx) − x̂·mean(x̂·dx)) + dγ·x̂ + dβ
            eval:     dy = γ·invstd·dx + dγ·x̂ + dβ
        """
        x, weight, mean, invstd = ctx.saved_tensors
        dtype = mean.dtype
        dims, view = _reduce_dims(x), functools.partial(_per_channel, ndim=x.dim())
        xhat = (x.to(dtype) - view(mean)) * view(invstd)
        dy = torch.zeros_like(xhat)
        if dx is not None:
            dx = dx.to(dtype)
            if ctx.training:
                dx = dx - dx.mean(dims, keepdim=True) - xhat * (xhat * dx).mean(dims, keepdim=True)
            scale = invstd if weight is None else weight.to(dtype) * invstd
            dy = dy + dx * view(scale)
        if dweight is not None:
            dy = dy + xhat * view(dweight.to(dtype))
        if dbias is not None:
            dy = dy + view(dbias.to(dtype))
        return dy.to(x.dtype), None, None


_VMAP_SHARED_STATS = (
    "Batch norm got a batched tensor as input while the running_mean or running_var, which will be "
    "updated in place, were not batched.\nIf you are using a module and do not need eval mode, please "
    "set `track_running_stats` to be False.If you are using a prebuilt module and do not need eval mode, "
    "please see the functorch website for resources on how to patch your module to work with vmap")


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
    return _BatchNormFunction.apply(x, weight, bias, running_mean, running_var, training,
                                    momentum, eps)[0]


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
    return _affine(y, weight, bias, lambda v: _per_channel(v, input.dim()))


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
