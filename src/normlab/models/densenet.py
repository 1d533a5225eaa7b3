"""DenseNet (Huang et al., 2017) as the book writes it.

d2l.ai §8.7. A dense block's convs each see the concatenation of everything before them and add
`growth_rate` channels; transition blocks halve the channels (1×1 conv) and the side (2×2 avg
pool). The convs are pre-activation: norm → ReLU → conv (norm_position="after_act": ReLU → norm
→ conv). For 96×96 input:

    b1: conv7 s2 + max-pool -> 64×24×24; dense 4 convs -> 192 ch; transition -> 96×12×12;
    dense -> 224; transition -> 112×6×6; dense -> 240; transition -> 120×3×3; dense -> 248;
    norm + ReLU, global avg pool, Linear(248, 10)
"""
from __future__ import annotations

import torch
from torch import nn

from normlab.nn.blocks import conv_norm_act, norm_act

from .base import Norms, ZooModel
from .registry import register_model

__all__ = ["DenseNet", "DenseBlock", "densenet"]


def conv_block(in_channels: int, out_channels: int, norm_layer, norm_position) -> nn.Sequential:
    """[norm +] ReLU, then conv3 p1 (pre-activation)."""
    return nn.Sequential(*norm_act(in_channels, norm_layer, nn.ReLU, norm_position),
                         nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1))


class DenseBlock(nn.Module):
    """num_convs conv blocks; each output is concatenated to its input on the channel axis."""

    def __init__(self, num_convs: int, in_channels: int, growth_rate: int, *, norm_layer=None,
                 norm_position: str = "before_act"):
        super().__init__()
        self.net = nn.Sequential(*(
            conv_block(in_channels + i * growth_rate, growth_rate, norm_layer, norm_position)
            for i in range(num_convs)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.net:
            x = torch.cat((x, blk(x)), dim=1)   # (N, C + growth_rate, H, W)
        return x

    def out_size(self, h: int) -> int:
        return h


def transition_block(in_channels: int, out_channels: int, norm_layer,
                     norm_position) -> nn.Sequential:
    """[norm +] ReLU, 1×1 conv to out_channels, 2×2 average pool (halves the side)."""
    return nn.Sequential(*norm_act(in_channels, norm_layer, nn.ReLU, norm_position),
                         nn.Conv2d(in_channels, out_channels, kernel_size=1),
                         nn.AvgPool2d(kernel_size=2, stride=2))


class DenseNet(ZooModel):
    """The book's DenseNet: 4 dense blocks of 4 convs, growth rate 32, 3 transitions."""

    model_name = "densenet"
    book_size = 96

    def __init__(self, *, num_convs=(4, 4, 4, 4), growth_rate: int = 32,
                 norm: str | None = "batch", norm_position: str = "before_act",
                 num_classes: int = 10, in_channels: int = 1, norm_kwargs: dict | None = None):
        norms = Norms(self.model_name, norm, norm_kwargs)
        kw = dict(norm_layer=norms.conv, norm_position=norm_position)
        b1 = nn.Sequential(*conv_norm_act(in_channels, 64, 7, 2, 3, norm_layer=norms.conv,
                                          position=norm_position),
                           nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
        blocks, c = [], 64
        for i, n in enumerate(num_convs):
            blocks.append(DenseBlock(n, c, growth_rate, **kw))
            c += n * growth_rate
            if i != len(num_convs) - 1:
                blocks.append(transition_block(c, c // 2, **kw))
                c //= 2
        super().__init__(b1, *blocks, *norm_act(c, norms.conv, nn.ReLU, norm_position),
                         nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Linear(c, num_classes),
                         in_channels=in_channels, num_classes=num_classes, norm=norm,
                         norm_position=norm_position)


@register_model
def densenet(*, num_convs=(4, 4, 4, 4), growth_rate: int = 32, norm: str | None = "batch",
             norm_position: str = "before_act", num_classes: int = 10, in_channels: int = 1,
             norm_kwargs: dict | None = None) -> DenseNet:
    """The book's DenseNet (d2l.ai §8.7), batch norm by default, trained at 96×96."""
    return DenseNet(num_convs=num_convs, growth_rate=growth_rate, norm=norm,
                    norm_position=norm_position, num_classes=num_classes,
                    in_channels=in_channels, norm_kwargs=norm_kwargs)
