"""Network in Network (Lin, Chen & Yan, 2013) as the book writes it.

d2l.ai §8.3: each NiN block is a conv followed by two 1×1 convs (per-pixel fully connected
layers), each with a ReLU; no Linear layer at all: the last block has one channel per class and
global average pooling turns (N, 10, 5, 5) into the (N, 10) scores.
"""
from __future__ import annotations

from torch import nn

from normlab.nn.blocks import conv_norm_act

from .base import Norms, ZooModel
from .registry import register_model

__all__ = ["NiN", "nin"]


def nin_block(in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int,
              norms: Norms, norm_position: str) -> nn.Sequential:
    """conv(k, s, p) + 1×1 conv + 1×1 conv, each followed by [norm +] ReLU."""
    kw = dict(norm_layer=norms.conv, position=norm_position)
    return nn.Sequential(
        *conv_norm_act(in_channels, out_channels, kernel_size, stride, padding, **kw),
        *conv_norm_act(out_channels, out_channels, 1, **kw),
        *conv_norm_act(out_channels, out_channels, 1, **kw))


class NiN(ZooModel):
    """The book's NiN: four NiN blocks, three 3×3/2 max-pools, dropout, global average pool."""

    model_name = "nin"
    book_size = 224

    def __init__(self, *, dropout: float = 0.5, norm: str | None = None,
                 norm_position: str = "before_act", num_classes: int = 10, in_channels: int = 1,
                 norm_kwargs: dict | None = None):
        norms = Norms(self.model_name, norm, norm_kwargs)
        kw = dict(norms=norms, norm_position=norm_position)
        super().__init__(
            nin_block(in_channels, 96, 11, 4, 0, **kw),        # 224 -> 54
            nn.MaxPool2d(3, stride=2),                          # -> 26
            nin_block(96, 256, 5, 1, 2, **kw),
            nn.MaxPool2d(3, stride=2),                          # -> 12
            nin_block(256, 384, 3, 1, 1, **kw),
            nn.MaxPool2d(3, stride=2),                          # -> 5
            nn.Dropout(dropout),
            nin_block(384, num_classes, 3, 1, 1, **kw),         # one channel per class
            nn.AdaptiveAvgPool2d((1, 1)),
            nn.Flatten(),                                       # (N, 10, 1, 1) -> (N, 10)
            in_channels=in_channels, num_classes=num_classes, norm=norm,
            norm_position=norm_position)


@register_model
def nin(*, dropout: float = 0.5, norm: str | None = None, norm_position: str = "before_act",
        num_classes: int = 10, in_channels: int = 1, norm_kwargs: dict | None = None) -> NiN:
    """The book's NiN (d2l.ai §8.3) for 224×224 one-channel input."""
    return NiN(dropout=dropout, norm=norm, norm_position=norm_position, num_classes=num_classes,
               in_channels=in_channels, norm_kwargs=norm_kwargs)
