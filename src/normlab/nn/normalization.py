"""LayerNorm, GroupNorm and InstanceNorm1d/2d/3d, exact to torch.nn.

As for batch norm, each module shell (signature, parameters, buffers, repr, argument checks,
state_dict rules) is torch's own class, identical by construction; the forward and its math
are ours, in normlab.nn.functional.

- LayerNorm (Ba et al., 2016, https://arxiv.org/abs/1607.06450): statistics over the trailing
  `normalized_shape` dims of each sample, elementwise γ and β of that shape.
- GroupNorm (Wu & He, 2018, https://arxiv.org/abs/1803.08494): statistics over each group of
  C/G channels and the spatial dims of each sample; per-channel γ and β.
- InstanceNorm (Ulyanov et al., 2016, https://arxiv.org/abs/1607.08022): statistics over the
  spatial dims of each (sample, channel); optional running statistics as batch norm keeps them.
"""
from __future__ import annotations

from torch import Tensor, nn
from torch.nn.modules.instancenorm import _InstanceNorm as _TorchInstanceNormShell

from . import functional as F

__all__ = ["LayerNorm", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d"]


class LayerNorm(nn.LayerNorm):
    """y = (x − E[x]) / √(Var[x] + eps) · γ + β over the last len(normalized_shape) dims."""

    def forward(self, input: Tensor) -> Tensor:
        return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)


class GroupNorm(nn.GroupNorm):
    """y = (x − E_g[x]) / √(Var_g[x] + eps) · γ_c + β_c, statistics per sample and group."""

    def forward(self, input: Tensor) -> Tensor:
        return F.group_norm(input, self.num_groups, self.weight, self.bias, self.eps)


class _InstanceNorm(_TorchInstanceNormShell):
    """torch's InstanceNorm forward (input checks, unbatched input) calling our functional.

    Statistics per (sample, channel) in training, and in eval unless track_running_stats:
        running_mean ← (1 − momentum)·running_mean + momentum·mean_n(mean(x[n]))
    momentum=None counts as 0 (torch's rule: the running statistics then never move).
    """

    def _apply_instance_norm(self, input: Tensor) -> Tensor:
        return F.instance_norm(
            input, self.running_mean, self.running_var, self.weight, self.bias,
            self.training or not self.track_running_stats,
            self.momentum if self.momentum is not None else 0.0, self.eps)


class InstanceNorm1d(_InstanceNorm):
    """Instance norm over (N, C, L) or unbatched (C, L) input."""

    def _get_no_batch_dim(self) -> int:
        return 2

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() not in (2, 3):
            raise ValueError(f"expected 2D or 3D input (got {input.dim()}D input)")


class InstanceNorm2d(_InstanceNorm):
    """Instance norm over (N, C, H, W) or unbatched (C, H, W) input."""

    def _get_no_batch_dim(self) -> int:
        return 3

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() not in (3, 4):
            raise ValueError(f"expected 3D or 4D input (got {input.dim()}D input)")


class InstanceNorm3d(_InstanceNorm):
    """Instance norm over (N, C, D, H, W) or unbatched (C, D, H, W) input."""

    def _get_no_batch_dim(self) -> int:
        return 4

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() not in (4, 5):
            raise ValueError(f"expected 4D or 5D input (got {input.dim()}D input)")
