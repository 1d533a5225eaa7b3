"""What every model in the zoo shares: the norm arguments and the input-size check.

A zoo model is an nn.Sequential (so `for layer in net` and `net[1].gamma` work as in the book)
whose forward first checks the input against the sizes the model takes, and raises a ValueError
naming the model and its smallest input, before any layer runs:

    alexnet takes inputs from 193×193 to 224×224 (the book uses 224×224); got 28×28

The sizes come from shape arithmetic over the layers (`spatial_out`), not from trial forwards:
conv and pooling layers map h ↦ ⌊(h + 2p − d(k − 1) − 1)/s⌋ + 1, adaptive pooling to its output
size, blocks with branches say what they do through an `out_size(h)` method, and the walk stops
at the first Flatten. A model that flattens into a Linear layer (LeNet, AlexNet, VGG) needs an
exact spatial size there (`flat_size`), so it takes a range of inputs; one that ends in global
average pooling takes every size from its smallest up.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from functools import cached_property

import torch
from torch import nn

from normlab.nn import get_norm_layer
from normlab.nn.blocks import check_norm_position

__all__ = ["ZooModel", "spatial_out", "resolve_norm"]

_MAX_SIZE = 4096  # the largest input side searched for a model's size range


def _window_out(h: int, kernel, stride, padding, dilation=1, ceil_mode=False) -> int:
    k, s, p, d = (x[0] if isinstance(x, tuple) else x for x in (kernel, stride, padding, dilation))
    span = h + 2 * p - d * (k - 1) - 1
    if span < 0:
        return 0
    out = (math.ceil if ceil_mode else math.floor)(span / s) + 1
    if ceil_mode and (out - 1) * s >= h + p:  # torch: the last window must start inside the input
        out -= 1
    return out


def spatial_out(module: nn.Module, h: int) -> int:
    """The spatial side after `module` for a side of h at its input, 0 if some layer gets an
    empty input. Stops at the first Flatten or Linear (the side there is returned)."""
    if hasattr(module, "out_size"):
        return module.out_size(h)
    if isinstance(module, nn.Sequential):
        for child in module:
            if isinstance(child, (nn.Flatten, nn.Linear)) or h < 1:
                break
            h = spatial_out(child, h)
        return max(h, 0)
    if isinstance(module, nn.Conv2d):
        return _window_out(h, module.kernel_size, module.stride, module.padding, module.dilation)
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        return _window_out(h, module.kernel_size, module.stride or module.kernel_size,
                           module.padding, getattr(module, "dilation", 1), module.ceil_mode)
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        size = module.output_size
        return size[0] if isinstance(size, tuple) else size
    return h


def resolve_norm(model: str, norm: str | None, dim: int = 2, norm_kwargs: dict | None = None,
                 hint: str = ""):
    """get_norm_layer(norm, dim) as a callable C -> module, or None for no norm.

    Errors name the model: an unknown norm lists the valid ones, and a norm that cannot take a
    layer's channel count (e.g. GroupNorm with num_groups=4 on 6 channels) says which count.
    """
    try:
        layer = get_norm_layer(norm, dim)
    except ValueError as e:
        raise ValueError(f"{model}: {e}{hint}") from None
    if layer is nn.Identity:
        return None
    kw = _norm_kwargs(model, norm, norm_kwargs)

    def build(num_features: int) -> nn.Module:
        try:
            return layer(num_features, **kw)
        except TypeError as e:      # an option this norm does not have
            raise ValueError(f"{model}: norm {norm!r} does not take norm_kwargs {kw}: {e}") from None
        except ValueError as e:     # e.g. a group count that does not divide the channels
            extra = f" with {kw}" if kw else ""
            raise ValueError(f"{model}: norm {norm!r}{extra} cannot normalize "
                             f"{num_features} channels: {e}") from None
    return build


CUMULATIVE = "cumulative"  # norm_kwargs momentum = "cumulative" is momentum=None: TOML has no null


def _norm_kwargs(model: str, norm: str | None, norm_kwargs: dict | None) -> dict:
    """A copy of norm_kwargs with momentum "cumulative" read as None, torch's cumulative average
    (running statistics = the plain mean over the num_batches_tracked batches seen), so a TOML
    config or spec can ask for it: `norm_kwargs = { momentum = "cumulative" }`."""
    kw = dict(norm_kwargs or {})
    momentum = kw.get("momentum")
    if isinstance(momentum, str):
        if momentum.lower() != CUMULATIVE:
            raise ValueError(f"{model}: norm_kwargs momentum takes a number (0.1 is torch's default) or "
                             f"{CUMULATIVE!r} (momentum=None: the cumulative average), got {momentum!r}")
        kw["momentum"] = None
    if "momentum" in kw and kw["momentum"] is None and str(norm).lower() == "batch_d2l":
        raise ValueError(f"{model}: norm 'batch_d2l' (the book's layer) keeps no num_batches_tracked, so it has "
                         "no cumulative average; give momentum a number (the book's 0.9 is torch's 0.1)")
    return kw


class ZooModel(nn.Sequential):
    """nn.Sequential with the zoo's common attributes and an input check in forward.

    Subclasses set `model_name`, `book_size` (the side the book feeds it) and, if they flatten
    into a Linear layer, `flat_size` (the spatial side that Linear expects).
    """

    model_name = "model"
    book_size: int | None = None
    flat_size: int | None = None

    def __init__(self, *layers: nn.Module, in_channels: int = 1, num_classes: int = 10,
                 norm: str | None = None, norm_position: str = "before_act"):
        super().__init__(*layers)
        self.in_channels, self.num_classes = in_channels, num_classes
        self.norm, self.norm_position = norm, check_norm_position(norm_position)

    def _side_ok(self, h: int) -> bool:
        out = spatial_out(self, h)
        return out >= 1 and (self.flat_size is None or out == self.flat_size)

    @cached_property
    def input_range(self) -> tuple[int, int | None]:
        """(smallest, largest) input side this model takes; largest None if unbounded."""
        # spatial_out is non-decreasing in h, so the sides that fit are one interval
        lo = next((h for h in range(1, _MAX_SIZE + 1) if self._side_ok(h)), None)
        if lo is None:
            raise ValueError(f"{self.model_name}: no input side up to {_MAX_SIZE} fits")
        if self.flat_size is None:
            return lo, None
        hi = lo
        while hi < _MAX_SIZE and self._side_ok(hi + 1):
            hi += 1
        return lo, hi

    def describe_sizes(self) -> str:
        lo, hi = self.input_range
        book = f" (the book uses {self.book_size}×{self.book_size})" if self.book_size else ""
        if hi is None:
            return f"{self.model_name} takes inputs of {lo}×{lo} or larger{book}"
        if hi == lo:
            return f"{self.model_name} takes {lo}×{lo} inputs only{book}"
        return f"{self.model_name} takes inputs from {lo}×{lo} to {hi}×{hi}{book}"

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError naming the model and the sizes it takes if x does not fit."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{self.model_name} expects (N, {self.in_channels}, H, W) input; "
                             f"got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if not (self._side_ok(h) and self._side_ok(w)):
            raise ValueError(f"{self.describe_sizes()}; got {h}×{w}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return super().forward(x)

    def __getitem__(self, idx):
        """net[i] is a layer; net[a:b] a plain nn.Sequential of those layers (no input check:
        a slice starts anywhere)."""
        if isinstance(idx, slice):
            return nn.Sequential(OrderedDict(list(self._modules.items())[idx]))
        return super().__getitem__(idx)


class Norms:
    """The norm choice of one model, resolved: `conv` for maps (dim=2) and `fc` for vectors
    after Linear layers (dim=1), each a callable C -> module, or None for no norm.

    fc_norm None means "the same as norm". Norms that cannot act on vectors (instance: one value
    per channel, so its variance is 0) raise a ValueError that says to pass fc_norm.
    """

    def __init__(self, model: str, norm: str | None, norm_kwargs: dict | None = None,
                 fc_norm: str | None = None):
        self.model, self.norm, self.norm_kwargs = model, norm, norm_kwargs
        self.fc_name = norm if fc_norm is None else fc_norm
        self.conv = resolve_norm(model, norm, 2, norm_kwargs)

    @cached_property
    def fc(self):
        hint = (" (its fully connected layers take a norm too: pass fc_norm='none', or another "
                "norm, for them)")
        return resolve_norm(self.model, self.fc_name, 1, self.norm_kwargs, hint)
