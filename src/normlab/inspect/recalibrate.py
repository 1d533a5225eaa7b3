"""Recompute the batch norms' running statistics from data, with the weights fixed.

Training leaves running_mean/running_var as an exponential average over batches seen while the
weights were still moving; recalibrating replaces them with statistics of the final weights.

    cumulative  torch.optim.swa_utils.update_bn: reset the running statistics, set momentum=None
                (the cumulative average over num_batches_tracked), run the batches in train mode:
                    running_mean = (1/B) Σ_b mean_b(x),   running_var = (1/B) Σ_b var_unbiased_b(x)
                num_batches_tracked = B. Only torch's _BatchNorm subclasses (torch's and normlab's
                BatchNorm1d/2d/3d): D2LBatchNorm layers are left as they are, with a warning.
    precise     precise-BN (Wu & Johnson, 2021, https://arxiv.org/abs/2105.07576; fvcore's
                update_bn_stats): the same average of per-batch statistics, collected by forward
                pre-hooks from each layer's input rather than by the layer's own update rule,
                so it also serves D2LBatchNorm (moving_var: the average of its biased variances).
                num_batches_tracked is kept.

In exact arithmetic the two give the same numbers for torch's and normlab's batch norms (equal
weights for every batch, including a smaller last one): they differ by rounding only, which makes
each a check of the other. Every batch runs in train mode (the earlier layers normalize with the
batch's statistics, as during training), with no gradients; afterwards each module's train/eval
mode and each layer's momentum are as they were. `num_batches` caps the batches read (None: all).
"""
from __future__ import annotations

import itertools
import warnings

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from normlab.nn import D2LBatchNorm

__all__ = ["recalibrate", "running_stat_layers", "METHODS"]

METHODS = ("cumulative", "precise")


def recalibrate(model: nn.Module, loader, method: str = "cumulative", num_batches: int | None = None,
                device: torch.device | str | None = None) -> nn.Module:
    """Recompute the running statistics of `model`'s batch norms over `loader`; returns `model`.

    `loader` yields input tensors or (input, target, ...) tuples. Batches go to `device`, by
    default the device of the model's first parameter or buffer.
    """
    if method not in METHODS:
        raise ValueError(f"unknown recalibration method {method!r}; choose one of: {', '.join(METHODS)}")
    if num_batches is not None and (not isinstance(num_batches, int) or num_batches < 1):
        raise ValueError(f"num_batches takes a positive number of batches or None (all), got {num_batches!r}")
    if device is None:
        device = next(itertools.chain(model.parameters(), model.buffers()), torch.empty(0)).device
    batches = loader if num_batches is None else itertools.islice(loader, num_batches)
    modes = {m: m.training for m in model.modules()}
    try:
        if method == "cumulative":
            _cumulative(model, batches, device)
        else:
            _precise(model, batches, device)
    finally:
        for m, training in modes.items():  # per module: a frozen (eval) layer stays frozen
            m.train(training)
    return model


def _cumulative(model: nn.Module, batches, device) -> None:
    skipped = [name for name, m in model.named_modules() if isinstance(m, D2LBatchNorm)]
    if skipped:
        warnings.warn(f"recalibrate(method='cumulative') uses torch's update_bn, which leaves "
                      f"D2LBatchNorm layers ({', '.join(skipped)}) as they are; "
                      "method='precise' recalibrates them too", stacklevel=3)
    torch.optim.swa_utils.update_bn(batches, model, device=device)


def _precise(model: nn.Module, batches, device) -> None:
    layers = [m for m in model.modules() if _tracks(m)]
    sums = {m: None for m in layers}   # m -> [Σ mean_b, Σ var_b] in float64, per channel
    counts = dict.fromkeys(layers, 0)

    def hook(m, args):
        x = args[0].detach()
        x = x.transpose(0, 1).reshape(x.shape[1], -1).double()  # (N, C, *) -> (C, N·*)
        # torch's running_var takes the unbiased variance, the book's moving_var the biased one
        stats = torch.stack([x.mean(dim=1), x.var(dim=1, correction=0 if isinstance(m, D2LBatchNorm) else 1)])
        sums[m] = stats if sums[m] is None else sums[m] + stats
        counts[m] += 1

    handles = [m.register_forward_pre_hook(hook) for m in layers]
    tracked = {m: m.num_batches_tracked.clone() for m in layers if isinstance(m, _BatchNorm)}
    model.train()
    try:
        # D2LBatchNorm takes its mode from grad state: with grad on, it normalizes with the batch
        grad = any(isinstance(m, D2LBatchNorm) for m in layers)
        with torch.set_grad_enabled(grad):
            for batch in batches:
                model(_input(batch).to(device))
    finally:
        for handle in handles:
            handle.remove()
    with torch.no_grad():
        for m in layers:
            if counts[m]:
                mean, var = _buffers(m)
                mean.copy_((sums[m][0] / counts[m]).view_as(mean))
                var.copy_((sums[m][1] / counts[m]).view_as(var))
        for m, count in tracked.items():  # the forwards counted their batches
            m.num_batches_tracked.copy_(count)


def running_stat_layers(model: nn.Module) -> list[str]:
    """The names of the batch norms in `model` that recalibrate rewrites (those with running statistics)."""
    return [name for name, m in model.named_modules() if _tracks(m)]


def _tracks(m: nn.Module) -> bool:
    """A batch norm with running statistics to recalibrate."""
    if isinstance(m, D2LBatchNorm):
        return True
    return isinstance(m, _BatchNorm) and m.track_running_stats and m.running_mean is not None


def _buffers(m: nn.Module):
    if isinstance(m, D2LBatchNorm):
        return m.moving_mean, m.moving_var
    return m.running_mean, m.running_var


def _input(batch):
    """The input of a batch: the batch itself, or the first item of an (input, target) pair."""
    return batch[0] if isinstance(batch, (list, tuple)) else batch
