"""Normalization written from scratch: batch_norm, instance_norm, group_norm, layer_norm.

One core does the work. For x of shape (N, C, *) it normalizes every channel c with statistics
taken over all other dims (M = N·∏spatial values per channel):

    mean = Σx / M                     var = Σx² / M − mean²        (biased: the output uses it)
    invstd = 1 / √(var + eps)
    y = γ·(x − mean)·invstd + β  =  x·scale + shift,   scale = γ·invstd,  shift = β − mean·scale

and its backward is the closed form (x̂ = (x − mean)·invstd; sums run over the M values):

    ∂L/∂β = Σ dy        ∂L/∂γ = Σ dy·x̂ = invstd·(Σ dy·x − mean·Σ dy)
    ∂L/∂x = γ·invstd·(dy − Σdy/M − x̂·Σ dy·x̂/M)              (training: statistics depend on x)
    ∂L/∂x = γ·invstd·dy                                        (eval: running statistics)

The other norms are batch norm on a reshaped view: instance norm treats each (sample, channel)
as a channel of a batch of one, group norm each (sample, group), layer norm each row of the
normalized trailing dims. Float16 and bfloat16 are computed in float32 and rounded once at the end.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["batch_norm", "instance_norm", "group_norm", "layer_norm"]

_HALF_TYPES = (torch.float16, torch.bfloat16)


def _compute_dtype(x: Tensor) -> torch.dtype:
    """float32 for the half types (their sums lose digits fast), the input's dtype otherwise."""
    return torch.float32 if x.dtype in _HALF_TYPES else x.dtype


def _channel_view(v: Tensor, ndim: int) -> Tensor:
    """(C,) -> (C, 1, ..., 1), which broadcasts against (N, C, *) input of rank ndim."""
    return v.view([-1] + [1] * (ndim - 2))


def _rows_by_channel(t: Tensor) -> Tensor | None:
    """(M, C) view of a channels-last tensor (N, *, C in memory), or None if it is not one."""
    moved = t.movedim(1, -1)  # (N, *, C): contiguous exactly when t is channels-last (or 2-D)
    return moved.reshape(-1, t.shape[1]) if moved.is_contiguous() else None


def _channel_sums(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel Σa and Σa·b over every dim but 1, without materializing a·b when possible.

    a, b: (N, C, *). Returns two (C,) tensors. Contiguous input: Σa·b for each (n, c) row is a
    batch of N·C dot products (one BLAS call reading a and b once); channels-last input: rows
    of C values, reduced along dim 0.
    """
    N, C = a.shape[0], a.shape[1]
    a_rows = _rows_by_channel(a)
    if a_rows is not None and a.dim() > 2 and a.is_contiguous():
        a_rows = None  # (N, C, 1, ...) is both layouts; the contiguous path is cheaper
    if a_rows is not None:  # 2-D (N, C) or channels-last: (M, C)
        b_rows = b.movedim(1, -1).reshape(-1, C)
        return a_rows.sum(0), (a_rows * b_rows).sum(0)
    a3, b3 = a.reshape(N, C, -1), b.reshape(N, C, -1)  # (N, C, L), a view when contiguous
    L = a3.shape[2]
    dots = torch.bmm(a3.reshape(N * C, 1, L), b3.reshape(N * C, L, 1))  # (N·C, 1, 1)
    return a3.sum((0, 2)), dots.view(N, C).sum(0)


def _batch_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Biased per-channel mean and variance of x (N, C, *) in one pass of sums, without grad."""
    with torch.no_grad():
        M = x.numel() // x.shape[1]
        sum_x, sum_xx = _channel_sums(x, x)
        mean = sum_x / M
        var = (sum_xx / M - mean * mean).clamp_min_(0)  # rounding can dip just below 0
    return mean, var


def _stats_with_grad(x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """mean and invstd as differentiable functions of x (for double backward)."""
    dims = [0] + list(range(2, x.dim()))
    var, mean = torch.var_mean(x, dims, correction=0)
    return mean, (var + eps).rsqrt()


class _BatchNormFunction(torch.autograd.Function):
    """y = x·scale + shift with the closed-form backward; mean/invstd come in precomputed."""

    @staticmethod
    def forward(ctx, x, weight, bias, mean, invstd, training: bool, eps: float):
        xc = x.to(_compute_dtype(x))
        scale = invstd if weight is None else weight.to(xc.dtype) * invstd
        shift = -mean * scale if bias is None else bias.to(xc.dtype) - mean * scale
        # One fused op: x·scale + shift, with the per-channel (C,) vectors broadcast.
        y = torch.addcmul(_channel_view(shift, x.dim()), xc, _channel_view(scale, x.dim()))
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.training, ctx.eps = training, eps
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx, dy):
        x, weight, mean, invstd = ctx.saved_tensors
        if ctx.training and torch.is_grad_enabled():
            # create_graph=True: the statistics must be functions of x for second derivatives.
            mean, invstd = _stats_with_grad(x.to(mean.dtype), ctx.eps)
        dx, dweight, dbias = _batch_norm_backward(dy, x, weight, mean, invstd, ctx.training,
                                                  ctx.needs_input_grad[:3])
        return dx, dweight, dbias, None, None, None, None


def _batch_norm_backward(dy, x, weight, mean, invstd, training, needs):
    """Closed-form gradients (see the module docstring); sums are per channel over M values."""
    ndim, cdtype = x.dim(), mean.dtype
    M = x.numel() // x.shape[1]
    dyc, xc = dy.to(cdtype), x.to(cdtype)
    sum_dy, sum_dy_x = _channel_sums(dyc, xc)
    sum_dy_xhat = (sum_dy_x - mean * sum_dy) * invstd  # Σ dy·x̂
    k1 = invstd if weight is None else weight.to(cdtype) * invstd  # γ·invstd
    dx = None
    if needs[0]:
        if training:
            # dx = k1·dy + k2·x + k3: the centring of dy and x̂ folded into per-channel terms.
            k2 = -k1 * invstd * sum_dy_xhat / M
            k3 = -k1 * sum_dy / M - k2 * mean
            dx = torch.addcmul(_channel_view(k3, ndim), dyc, _channel_view(k1, ndim))
            dx = dx.addcmul_(xc, _channel_view(k2, ndim))
        else:
            dx = dyc * _channel_view(k1, ndim)
        dx = dx.to(x.dtype)
    dweight = sum_dy_xhat.to(weight.dtype) if needs[1] else None
    dbias = sum_dy.to(dy.dtype if weight is None else weight.dtype) if needs[2] else None
    return dx, dweight, dbias


def _update_running(running: Tensor, batch_value: Tensor, momentum: float) -> None:
    """running ← (1 − momentum)·running + momentum·batch_value, in place."""
    with torch.no_grad():
        running.mul_(1 - momentum).add_(batch_value.to(running.dtype), alpha=momentum)


def _batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps):
    """batch_norm without torch's Python-level argument checks (shared by the other norms)."""
    C = x.shape[1]
    _check_vector("weight", weight, C)
    _check_vector("bias", bias, C)
    _check_vector("running_mean", running_mean, C)
    _check_vector("running_var", running_var, C)
    cdtype = _compute_dtype(x)
    if training:
        M = x.numel() // C
        if M == 0:  # empty batch: nothing to average; the running statistics stay as they are
            mean, var = x.new_zeros(C, dtype=cdtype), x.new_ones(C, dtype=cdtype)
        else:
            mean, var = _batch_stats(x.to(cdtype))
            if running_mean is not None:
                _update_running(running_mean, mean, momentum)
            if running_var is not None:  # the running estimate takes the unbiased variance
                _update_running(running_var, var * (M / max(M - 1, 1)), momentum)
    else:
        if running_mean is None or running_var is None:
            raise RuntimeError("running_mean must be defined in evaluation mode")
        mean, var = running_mean.to(cdtype).clone(), running_var.to(cdtype)
    invstd = (var + eps).rsqrt()
    return _BatchNormFunction.apply(x, weight, bias, mean, invstd, training, eps)


def _check_vector(name: str, v: Tensor | None, C: int) -> None:
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
    if training and eps <= 0.0:
        raise ValueError(f"batch_norm eps must be positive during training, but got {eps}")
    if eps < 0.0:
        raise ValueError(f"batch_norm eps must be non-negative, but got {eps}")
    input.size(1)  # a 1-D input fails here with torch's IndexError
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
    with torch.no_grad():
        if use_input_stats and running_mean is not None:
            running_mean.copy_(rm.view(N, C).mean(0))
        if use_input_stats and running_var is not None:
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
    x = input.reshape(1, N * num_groups, -1)  # (1, N·G, C/G·∏spatial)
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
