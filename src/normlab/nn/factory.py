"""Norm layers by name: get_norm_layer, create_norm, list_norms, convert_norms.

Every norm is built as `norm_layer(num_channels, **kw)`, channel count first, so blocks can take
any of them. `dim` says what the layer sees: 1 for vectors after a Linear layer ((N, C), or
(N, C, L) for the batch norms), 2 for (N, C, H, W) maps, 3 for (N, C, D, H, W) volumes.

    none         nn.Identity (it ignores its arguments)
    batch        normlab's BatchNorm{dim}d
    batch_torch  torch.nn.BatchNorm{dim}d, the reference
    batch_d2l    the book's layer, D2LBatchNorm(C, num_dims=2 for vectors, 4 for maps)
    layer        maps: GroupNorm(1, C), statistics over C, H, W per sample with per-channel
                 γ, β; vectors: LayerNorm(C) over the features
    group        GroupNorm(gcd(C, 32), C) unless num_groups= is given: 32 groups where C allows,
                 else the largest divisor of 32 that divides C (LeNet's 6 channels: 2 groups;
                 16 channels: 16; 120 features: 8)
    instance     InstanceNorm{dim}d (maps only: a vector has one value per channel)

The research layers (normlab.nn.research, docs/research_norms.md) take any (N, C, *) input:

    batch_renorm     BatchRenorm(C): r_max 1 → 3, d_max 0 → 5 warm-up as in the paper
    ghost_batch      GhostBatchNorm(C, virtual_batch_size=32)
    whiten_zca       DecorrelatedBatchNorm(C, group_size=gcd(C, 16)): needs N·∏spatial > group_size
    iternorm         IterNorm(C, group_size=gcd(C, 16), T=5)
    rank_gauss       RankGaussNorm(C)
    frozen_batch     FrozenBatchNorm(C): no parameters (see freeze_norms)
    switchable       SwitchableNorm(C): BN, LN and IN statistics; BN and LN only for dim=1
    batch_mean_only  BatchMeanOnly(C)
    batch_var_only   BatchVarOnly(C)
"""
from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from .batchnorm import BatchNorm1d, BatchNorm2d, BatchNorm3d, D2LBatchNorm
from .normalization import GroupNorm, InstanceNorm1d, InstanceNorm2d, InstanceNorm3d, LayerNorm
from .replace import replace_modules
from .research import (RESEARCH_NORMS, BatchMeanOnly, BatchRenorm, BatchVarOnly, DecorrelatedBatchNorm,
                       FrozenBatchNorm, GhostBatchNorm, IterNorm, RankGaussNorm, SwitchableNorm)

__all__ = ["get_norm_layer", "create_norm", "list_norms", "convert_norms", "NORM_TYPES", "is_norm"]

# Every class of normalization layer, torch's and normlab's: what code that looks for the norm
# layers in a model (normlab.inspect, the tests) checks against. _NormBase covers torch's and
# normlab's BatchNorm*d, SyncBatchNorm and InstanceNorm*d.
NORM_TYPES = (_NormBase, nn.LayerNorm, nn.GroupNorm, D2LBatchNorm, *RESEARCH_NORMS)


def is_norm(module: nn.Module) -> bool:
    """Whether `module` is a normalization layer (one of NORM_TYPES)."""
    return isinstance(module, NORM_TYPES)

_OURS = {1: BatchNorm1d, 2: BatchNorm2d, 3: BatchNorm3d}
_TORCH = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_INSTANCE = {1: InstanceNorm1d, 2: InstanceNorm2d, 3: InstanceNorm3d}
_BATCH_KINDS = ("batch", "batch_torch", "batch_d2l")


def _group_norm(num_channels: int, num_groups: int | None = None, **kw) -> GroupNorm:
    """GroupNorm with gcd(C, 32) groups unless num_groups is given."""
    return GroupNorm(num_groups or math.gcd(num_channels, 32), num_channels, **kw)


def _instance(dim: int):
    if dim == 1:
        raise ValueError("norm 'instance' needs spatial dims (dim=2 or 3): after a Linear layer "
                         "each channel has a single value, so its instance variance is 0")
    return _INSTANCE[dim]


def _d2l(dim: int):
    if dim == 3:
        raise ValueError("norm 'batch_d2l' supports dim=1 (vectors) and dim=2 (maps) only, "
                         "as the book's layer does")
    return partial(D2LBatchNorm, num_dims=2 if dim == 1 else 4)


_NORMS = {
    "none": lambda dim: nn.Identity,
    "batch": lambda dim: _OURS[dim],
    "batch_torch": lambda dim: _TORCH[dim],
    "batch_d2l": _d2l,
    "layer": lambda dim: LayerNorm if dim == 1 else partial(GroupNorm, 1),
    "group": lambda dim: _group_norm,
    "instance": _instance,
    "batch_renorm": lambda dim: BatchRenorm,
    "ghost_batch": lambda dim: GhostBatchNorm,
    "whiten_zca": lambda dim: DecorrelatedBatchNorm,
    "iternorm": lambda dim: IterNorm,
    "rank_gauss": lambda dim: RankGaussNorm,
    "frozen_batch": lambda dim: FrozenBatchNorm,
    "switchable": lambda dim: partial(SwitchableNorm, instance=False) if dim == 1 else SwitchableNorm,
    "batch_mean_only": lambda dim: BatchMeanOnly,
    "batch_var_only": lambda dim: BatchVarOnly,
}


def list_norms() -> list[str]:
    """The names get_norm_layer accepts."""
    return list(_NORMS)


def get_norm_layer(name: str | None, dim: int = 2):
    """The class (or partial, or function) for norm `name`: norm_layer(num_channels, **kw).

    None means "none" (nn.Identity). See the module docstring for each name's convention.
    """
    key = "none" if name is None else str(name).lower()
    if key not in _NORMS:
        raise ValueError(f"unknown norm {name!r}; choose one of: {', '.join(list_norms())}")
    if dim not in (1, 2, 3):
        raise ValueError(f"dim must be 1 (vectors), 2 (maps) or 3 (volumes), got {dim!r}")
    return _NORMS[key](dim)


def create_norm(name: str | None, num_features: int, *, dim: int = 2, **kw) -> nn.Module:
    """get_norm_layer(name, dim)(num_features, **kw)."""
    return get_norm_layer(name, dim)(num_features, **kw)


def _kind(module: nn.Module) -> str | None:
    """Which batch norm a module is, or None if it is none."""
    if isinstance(module, D2LBatchNorm):
        return "batch_d2l"
    if isinstance(module, tuple(_OURS.values())):
        return "batch"
    if isinstance(module, tuple(_TORCH.values())):  # not Lazy or SyncBatchNorm: left alone
        return "batch_torch"
    return None


def convert_norms(model: nn.Module, to: str = "batch_torch") -> nn.Module:
    """Swap every batch-norm layer in `model` for the kind `to`, keeping γ, β, the running
    statistics and num_batches_tracked, so eval outputs do not change. Returns the model
    (a new module if `model` itself is a batch norm).

    Between batch and batch_torch the state_dict moves unchanged (same keys). To or from
    batch_d2l: gamma/beta/moving_mean/moving_var ↔ weight/bias/running_mean/running_var and
    momentum ↔ 1 − momentum; num_batches_tracked becomes 0.
    """
    if to not in _BATCH_KINDS:
        raise ValueError(f"convert_norms converts batch norms; to must be one of: "
                         f"{', '.join(_BATCH_KINDS)}, got {to!r}")
    return replace_modules(model, lambda m: None if _kind(m) is None else _convert(m, to))


def _convert(m: nn.Module, to: str) -> nn.Module:
    kind = _kind(m)
    if kind == to:
        return m
    floats = [t for t in (*m.parameters(), *m.buffers()) if t.is_floating_point()]
    like = dict(device=floats[0].device, dtype=floats[0].dtype) if floats else {}
    if to == "batch_d2l":
        new = _to_d2l(m, like)
    elif kind == "batch_d2l":
        cls = (_OURS if to == "batch" else _TORCH)[m.gamma.dim() // 2]  # (1, C) or (1, C, 1, 1)
        new = cls(m.gamma.shape[1], eps=m.eps, momentum=1 - m.momentum, **like)
        new.load_state_dict(_exact_state(m))
    else:  # batch <-> batch_torch: the same arguments and the same state_dict keys
        cls = (_OURS if to == "batch" else _TORCH)[_dim_of(m)]
        new = cls(m.num_features, eps=m.eps, momentum=m.momentum, affine=m.affine,
                  track_running_stats=m.track_running_stats, bias=m.bias is not None, **like)
        new.load_state_dict(m.state_dict())
    return new.train(m.training)


def _dim_of(m: nn.Module) -> int:
    for dim, (ours, theirs) in enumerate(zip(_OURS.values(), _TORCH.values()), start=1):
        if isinstance(m, (ours, theirs)):
            return dim
    raise ValueError(f"cannot tell the input rank of {type(m).__name__}")


def _exact_state(m: D2LBatchNorm) -> dict[str, torch.Tensor]:
    """D2LBatchNorm's tensors under torch's state_dict keys."""
    return {"weight": m.gamma.detach().reshape(-1), "bias": m.beta.detach().reshape(-1),
            "running_mean": m.moving_mean.reshape(-1), "running_var": m.moving_var.reshape(-1),
            "num_batches_tracked": torch.tensor(0, dtype=torch.long)}


def _to_d2l(m: nn.Module, like: dict) -> D2LBatchNorm:
    if not (m.affine and m.track_running_stats and m.bias is not None and m.momentum is not None):
        raise ValueError("batch_d2l has γ, β, moving statistics and a fixed momentum; it cannot "
                         f"stand in for {m!r}")
    dim = _dim_of(m)
    if dim == 3:
        raise ValueError("batch_d2l supports vectors and 2-D maps only, not BatchNorm3d")
    new = D2LBatchNorm(m.num_features, num_dims=2 if dim == 1 else 4,
                       momentum=1 - m.momentum, eps=m.eps).to(**like)
    with torch.no_grad():
        for ours, theirs in (("gamma", "weight"), ("beta", "bias"),
                             ("moving_mean", "running_mean"), ("moving_var", "running_var")):
            target = getattr(new, ours)
            target.copy_(getattr(m, theirs).view_as(target))
    return new
