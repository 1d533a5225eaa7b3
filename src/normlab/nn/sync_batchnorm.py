"""Synchronized batch normalization: batch statistics over all ranks of a process group.

Batch norm (Ioffe & Szegedy, 2015, https://arxiv.org/abs/1502.03167) whose training statistics
are those of the whole distributed batch, as in MegDet's cross-GPU batch norm (Peng et al., 2018,
https://arxiv.org/abs/1711.07240) and torch.nn.SyncBatchNorm. With R ranks, rank r holding n_r
values per channel (n_r = N_r·∏spatial, possibly 0), M = Σn_r:

    forward, one all_gather of each rank's (n_r, mean_r, M2_r = Σ(x − mean_r)²), merged in rank
    order by Chan et al.'s parallel formula, so that every rank gets bitwise the same statistics:
        mean = Σ n_r·mean_r / M
        var  = (Σ M2_r + Σ n_r·(mean_r − mean)²) / M              (biased: the output uses it)
        y    = (x − mean)·γ·invstd + β,   invstd = 1/√(var + eps)
        running_mean ← (1 − momentum)·running_mean + momentum·mean
        running_var  ← (1 − momentum)·running_var  + momentum·var·M/(M − 1)

    backward, one all_reduce (SUM) of each rank's [Σdy, Σdy·x̂] (sums over its values), then
    functional's closed form with those global sums:
        ∂L/∂x = γ·invstd·(dy − Σ_all dy/M − (x − mean)·invstd²·Σ_all dy·(x − mean)/M)
        ∂L/∂γ = Σ_local dy·x̂     ∂L/∂β = Σ_local dy      (x̂ = (x − mean)·invstd)

∂L/∂γ and ∂L/∂β are this rank's share, as torch's are: DistributedDataParallel averages the
parameter gradients over the ranks itself. Synchronization happens only in training (`.train()`)
inside an initialized process group of more than one rank; otherwise the layer is normlab's
BatchNorm (eval with running statistics communicates nothing). Unlike torch's, it runs on the CPU
too (gloo). Float16 and bfloat16 are computed in float32; the gathered statistics in float64, so
that the counts are exact and the merge loses nothing.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from . import functional as F
from .batchnorm import BatchNorm1d, BatchNorm2d, BatchNorm3d, _BatchNorm
from .replace import replace_modules

__all__ = ["SyncBatchNorm", "convert_sync_batchnorm"]

# What convert_sync_batchnorm replaces: plain batch norms, ours and torch's (and subclasses).
# Not torch.nn.SyncBatchNorm, normlab's research layers or D2LBatchNorm: other methods.
_CONVERTIBLE = (BatchNorm1d, BatchNorm2d, BatchNorm3d, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class SyncBatchNorm(_BatchNorm):
    """Batch norm over (N, C, *) input with the statistics of every rank in `process_group`
    (default: the whole world); torch.nn.SyncBatchNorm's signature and behaviour, on any device.

    Every rank of the group must call forward (and backward) together, as for any collective;
    a rank with an empty batch (N = 0) takes part with n_r = 0. See the module docstring for
    the formulas.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, process_group=None,
                 device=None, dtype=None, *, bias: bool = True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype,
                         bias=bias)
        self.process_group = process_group

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        if input.size(1) == 0:
            raise ValueError("SyncBatchNorm number of input channels should be non-zero")
        group = self._sync_group()
        if group is None:  # a single rank, or eval: plain batch norm
            return super().forward(input)
        # batch_norm's checks, before the collective (a rank that fails later would hang the rest)
        running_mean, running_var = ((self.running_mean, self.running_var)
                                     if self.track_running_stats else (None, None))
        F._check_channels(input, self.weight, self.bias, running_mean, running_var)
        if self.eps <= 0.0:
            raise ValueError(f"batch_norm eps must be positive during training, but got {self.eps}")
        momentum = self._exponential_average_factor()
        return _sync_batch_norm(input, self.weight, self.bias, running_mean, running_var,
                                momentum, self.eps, group)

    def _sync_group(self):
        """The process group to synchronize over, or None when this forward needs none:
        eval, no initialized process group, or a group of one rank (torch's need_sync)."""
        if not self.training or not dist.is_available() or not dist.is_initialized():
            return None
        group = self.process_group or dist.group.WORLD
        return group if dist.get_world_size(group) > 1 else None

    @classmethod
    def convert_sync_batchnorm(cls, module: nn.Module, process_group=None) -> nn.Module:
        """convert_sync_batchnorm(module, process_group), as torch.nn.SyncBatchNorm has it."""
        return convert_sync_batchnorm(module, process_group)


def _global_stats(x: Tensor, group) -> tuple[Tensor, Tensor, Tensor, int]:
    """mean and biased variance per channel over the values of every rank (float64, (C,)),
    this rank's x − mean_r (a full-size buffer to reuse) and M, the global count per channel."""
    C = x.shape[1]
    n = F._values_per_channel(x)
    mean_r, var_r, centred = F._batch_stats(x)  # an empty batch gives mean 0, var 1
    mine = torch.cat([x.new_full((1,), n, dtype=torch.float64),
                      mean_r.to(torch.float64), var_r.to(torch.float64) * n])
    gathered = [torch.empty_like(mine) for _ in range(dist.get_world_size(group))]
    dist.all_gather(gathered, mine, group=group)  # one collective; list in rank order
    stats = torch.stack(gathered)  # (R, 1 + 2C): n_r, mean_r, M2_r
    counts, means, m2s = stats[:, :1], stats[:, 1:C + 1], stats[:, C + 1:]
    M = int(counts.sum().item())
    if M == 0:  # every rank empty: nothing to normalize, nothing to learn from
        return means[0], torch.ones_like(means[0]), centred, 0
    mean = (counts * means).sum(0) / M
    m2 = m2s.sum(0) + (counts * (means - mean).square()).sum(0)  # Chan et al.'s merge
    return mean, m2 / M, centred, M


@torch.compiler.disable  # collectives and a count read with .item(): torch.compile runs it as it is
def _sync_batch_norm(x, weight, bias, running_mean, running_var, momentum: float, eps: float, group):
    return _SyncBatchNormFunction.apply(x, weight, bias, running_mean, running_var, momentum, eps, group)


class _SyncBatchNormFunction(torch.autograd.Function):
    """The forward and backward of the module docstring; one collective in each."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum: float, eps: float,
                group):
        cdtype, ndim = F._compute_dtype(x), x.dim()
        xc = x.to(cdtype)
        mean64, var64, y, M = _global_stats(xc, group)
        if M == 1:  # the same M on every rank, so every rank raises
            raise ValueError("Expected more than 1 value per channel when training, got 1 value "
                             f"per channel over the process group (input size {list(x.shape)} "
                             "on this rank)")
        F._lerp_running_stats(running_mean, running_var, mean64, var64, M, momentum)
        mean, invstd = mean64.to(cdtype), (var64 + eps).rsqrt().to(cdtype)
        scale = invstd if weight is None else weight.to(cdtype) * invstd
        torch.sub(xc, F._per_channel(mean, ndim), out=y)  # x − mean, into _batch_stats' buffer
        y = y.mul_(F._per_channel(scale, ndim))
        if bias is not None:
            y = y.add_(F._per_channel(bias.to(cdtype), ndim))
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.count, ctx.group = M, group
        ctx.bias_dtype = None if bias is None else bias.dtype
        return y.to(x.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x, weight, mean, invstd = ctx.saved_tensors

        def all_sums(sum_dy: Tensor, sum_dy_xhat: Tensor) -> tuple[Tensor, Tensor]:
            """Σ over the ranks of both (C,) sums, in one collective. As torch, it runs only when x
            needs a gradient, which is the same on every rank."""
            both = torch.cat([sum_dy, sum_dy_xhat])
            dist.all_reduce(both, op=dist.ReduceOp.SUM, group=ctx.group)
            return both.chunk(2)

        # M is 0 only when every rank is empty (then dy is empty too)
        dx, dweight, dbias = F._batch_norm_backward(dy, x, weight, mean, invstd, True,
                                                    ctx.needs_input_grad, all_sums, max(ctx.count, 1))
        dbias = None if dbias is None else dbias.to(ctx.bias_dtype)
        return dx, dweight, dbias, None, None, None, None, None


def convert_sync_batchnorm(module: nn.Module, process_group=None) -> nn.Module:
    """module with every BatchNorm1d/2d/3d (normlab's or torch.nn's) replaced by a SyncBatchNorm
    with the same settings, the same Parameter objects and buffers, and the same training flag;
    a batch norm passed as `module` itself comes back as a new SyncBatchNorm. Other norms (group,
    layer, D2LBatchNorm, the research layers, an existing SyncBatchNorm) are left as they are.
    As torch.nn.SyncBatchNorm.convert_sync_batchnorm, the model is changed in place."""
    return replace_modules(module, lambda m: _to_sync(m, process_group) if isinstance(m, _CONVERTIBLE) else None)


def _to_sync(bn: nn.Module, process_group) -> SyncBatchNorm:
    sync = SyncBatchNorm(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats,
                         process_group, bias=bn.bias is not None)
    if bn.affine:  # the same Parameter objects: an optimizer built before still updates them
        sync.weight, sync.bias = bn.weight, bn.bias
    sync.running_mean, sync.running_var = bn.running_mean, bn.running_var
    sync.num_batches_tracked = bn.num_batches_tracked
    sync.train(bn.training)
    if hasattr(bn, "qconfig"):
        sync.qconfig = bn.qconfig
    return sync
