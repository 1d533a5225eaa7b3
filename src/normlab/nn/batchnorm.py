"""Batch normalization (Ioffe & Szegedy, 2015, https://arxiv.org/abs/1502.03167).

BatchNorm1d/2d/3d behave exactly like torch.nn's: the module shell (parameters, buffers, repr,
reset_parameters/reset_running_stats, state_dict keys and the version-2 loading rule that fills
in a missing num_batches_tracked) is torch's own `_BatchNorm`, so it is identical by
construction; the forward and all of its math are ours (normlab.nn.functional.batch_norm).

D2LBatchNorm is the book's from-scratch layer (d2l.ai, chapter "Batch Normalization") as the
seeds wrote it, kept as a reference for the studies.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm as _TorchBatchNormShell

from . import functional as F

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "D2LBatchNorm", "d2l_batch_norm"]


class _BatchNorm(_TorchBatchNormShell):
    """Training (or eval without running statistics) normalizes with the batch statistics:

        y = (x − mean(x)) / √(var_biased(x) + eps) · γ + β

    and, when tracking, updates (num_batches_tracked ← num_batches_tracked + 1)
        running_mean ← (1 − momentum)·running_mean + momentum·mean(x)
        running_var  ← (1 − momentum)·running_var  + momentum·var_unbiased(x)
    with momentum = 1/num_batches_tracked when momentum is None (the cumulative average).
    Eval with running statistics: y = (x − running_mean)/√(running_var + eps)·γ + β.
    The mode is `self.training` alone: a training forward under no_grad still updates the
    running statistics, as torch's does.
    """

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        momentum = self._exponential_average_factor()
        # Batch statistics in training, and in eval when there are no running statistics.
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        # Running buffers go in only to be updated (training + tracking) or used (eval).
        pass_buffers = not self.training or self.track_running_stats
        return F.batch_norm(
            input,
            self.running_mean if pass_buffers else None,
            self.running_var if pass_buffers else None,
            self.weight, self.bias, use_batch_stats, momentum, self.eps)

    def _exponential_average_factor(self) -> float:
        """Counts a training batch (when tracking) and returns this step's momentum:
        self.momentum, or 1/num_batches_tracked when it is None (0.0 when nothing is updated)."""
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average over the batches seen
                momentum = 1.0 / float(self.num_batches_tracked)
        return momentum


class BatchNorm1d(_BatchNorm):
    """Batch norm over (N, C) or (N, C, L) input; torch.nn.BatchNorm1d's signature and behaviour."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() != 2 and input.dim() != 3:
            raise ValueError(f"expected 2D or 3D input (got {input.dim()}D input)")


class BatchNorm2d(_BatchNorm):
    """Batch norm over (N, C, H, W) input; torch.nn.BatchNorm2d's signature and behaviour."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() != 4:
            raise ValueError(f"expected 4D input (got {input.dim()}D input)")


class BatchNorm3d(_BatchNorm):
    """Batch norm over (N, C, D, H, W) input; torch.nn.BatchNorm3d's signature and behaviour."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() != 5:
            raise ValueError(f"expected 5D input (got {input.dim()}D input)")


def d2l_batch_norm(X, gamma, beta, moving_mean, moving_var, eps, momentum):
    """The book's function, as written: returns (Y, new moving_mean, new moving_var).

    Mode from torch.is_grad_enabled(); the moving average keeps `momentum` of the old value:
        moving_mean ← momentum·moving_mean + (1 − momentum)·mean(X)
        moving_var  ← momentum·moving_var  + (1 − momentum)·var_biased(X)
    """
    if not torch.is_grad_enabled():
        X_hat = (X - moving_mean) / torch.sqrt(moving_var + eps)
    else:
        assert len(X.shape) in (2, 4)
        if len(X.shape) == 2:
            mean = X.mean(dim=0)
            var = ((X - mean) ** 2).mean(dim=0)
        else:
            mean = X.mean(dim=(0, 2, 3), keepdim=True)
            var = ((X - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)
        X_hat = (X - mean) / torch.sqrt(var + eps)
        moving_mean = momentum * moving_mean + (1.0 - momentum) * mean
        moving_var = momentum * moving_var + (1.0 - momentum) * var
    Y = gamma * X_hat + beta
    return Y, moving_mean.data, moving_var.data


class D2LBatchNorm(nn.Module):
    """The book's BatchNorm layer (d2l.ai), with its moving statistics registered as buffers.

    Kept as the reference the studies compare against. It differs from BatchNorm*d in five ways:

    1. Mode from grad state, not from `.training`: with grad enabled it normalizes with batch
       statistics and updates them (even after `.eval()`); under `torch.no_grad()` it uses the
       moving statistics (even in `.train()` mode).
    2. Biased moving variance: moving_var takes var_biased(x), torch's running_var takes
       var_unbiased(x) = var_biased(x)·M/(M − 1), M the values per channel.
    3. Momentum on the old value: moving ← momentum·moving + (1 − momentum)·batch, so the book's
       0.9 is torch's 0.1 (torch_momentum = 1 − book_momentum).
    4. Buffers: the book kept plain tensor attributes, which `.to()` and state_dict miss; here
       they are buffers (`moving_mean`, `moving_var`, shape (1, C) or (1, C, 1, 1)): the only
       change to the book's code.
    5. No num_batches_tracked, so no cumulative average (momentum=None), and no
       track_running_stats / affine switches; γ and β are named gamma and beta.
    """

    def __init__(self, num_features: int, num_dims: int, momentum: float = 0.9, eps: float = 1e-5):
        super().__init__()
        shape = (1, num_features) if num_dims == 2 else (1, num_features, 1, 1)
        self.momentum, self.eps = momentum, eps
        self.gamma = nn.Parameter(torch.ones(shape))
        self.beta = nn.Parameter(torch.zeros(shape))
        self.register_buffer("moving_mean", torch.zeros(shape))
        self.register_buffer("moving_var", torch.ones(shape))

    def forward(self, X: Tensor) -> Tensor:
        Y, moving_mean, moving_var = d2l_batch_norm(
            X, self.gamma, self.beta, self.moving_mean, self.moving_var,
            eps=self.eps, momentum=self.momentum)
        with torch.no_grad():  # the book rebinds the attributes; buffers are updated in place
            self.moving_mean.copy_(moving_mean)
            self.moving_var.copy_(moving_var)
        return Y

    def extra_repr(self) -> str:
        return (f"{self.gamma.shape[1]}, num_dims={self.gamma.dim()}, "
                f"momentum={self.momentum}, eps={self.eps}")
