"""Recompute the batch norms' running statistics from data, with the weights fixed.

Training leaves running_mean/running_var as an exponential average over batches seen while the
weights were still moving; recalibrating replaces them with statistics of the final weights.

    cumulative  torch.optim.swa_utils.update_bn: reset the running statistics, set momentum=None
                (the cumulative average over num_batches_tracked), run the batches in train mode:
                    running_mean = (1/B) Σ_b mean_b(x),   running_var = (1/B) Σ_b var_unbiased_b(x)
                num_batches_tracked = B. Only torch's _BatchNorm subclasses (torch's and normlab's
                BatchNorm1d/2d/3d): D2LBatchNorm layers are left as they are, with a warning.
    precise     precise-BN (Wu & Johnson, 2021, https://arxiv.org/abs/2105.07576; fvcore's
                update_bn_stats with its population variance estimator): the statistics of the
                population of all values seen, as if the batches were one batch,
                    running_mean = mean(x over all batches)
                    running_var  = var_unbiased(x over all batches)
                          = (Σ_b (n_b − 1)·var_b + Σ_b n_b·(mean_b − running_mean)²) / (Σ_b n_b − 1),
                with n_b the values per channel in batch b: each batch weighs by its size, and
                the spread of the batch means counts. Collected by forward pre-hooks from each
                layer's input (float64, batches merged by Chan's formula), so it also serves
                D2LBatchNorm (its moving_var takes the biased variance, the book's convention).
                num_batches_tracked is kept.

The two differ where the batches differ: "cumulative" averages the per-batch variances, so it
misses the variance of the batch means across batches (and weighs a smaller last batch fully);
"precise" is the exact statistic of the data the layer saw. Every batch runs in train mode (the
earlier layers normalize with the batch's statistics, as during training), with no gradients;
afterwards each module's train/eval mode and each layer's momentum are as they were.
`num_batches` caps the batches read (None: all).
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
    population = {}  # m -> (values per channel so far, their mean, Σ(x − mean)²), float64

    def hook(m, args):
        x = args[0].detach()
        x = x.transpose(0, 1).reshape(x.shape[1], -1).double()  # (N, C, *) -> (C, N·*)
        n, mean = x.shape[1], x.mean(dim=1)
        m2 = (x - mean[:, None]).square().sum(dim=1)
        if m in population:  # merge with the batches so far (Chan, Golub & LeVeque)
            n_a, mean_a, m2_a = population[m]
            total, delta = n_a + n, mean - mean_a
            n, mean, m2 = total, mean_a + delta * (n / total), m2_a + m2 + delta.square() * (n_a * n / total)
        population[m] = (n, mean, m2)

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
        for m, (n, mean, m2) in population.items():
            # torch's running_var holds the unbiased variance, the book's moving_var the biased one
            var = m2 / (n if isinstance(m, D2LBatchNorm) else max(n - 1, 1))
            running_mean, running_var = _buffers(m)
            running_mean.copy_(mean.view_as(running_mean))
            running_var.copy_(var.view_as(running_var))
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
