"""GoogLeNet (Szegedy et al., 2015) as the book writes it.

d2l.ai §8.4: five stages and nine Inception blocks, for 96×96 one-channel input:

    stage 1   conv7 s2 + max-pool             (N, 64, 24, 24)
    stage 2   conv1 + conv3 + max-pool        (N, 192, 12, 12)
    stage 3   2 Inception + max-pool          (N, 480, 6, 6)
    stage 4   5 Inception + max-pool          (N, 832, 3, 3)
    stage 5   2 Inception + global avg pool   (N, 1024)
    then      Linear(1024, 10)

An Inception block runs four paths side by side and concatenates them on the channel axis; every
path keeps the side, so only the channel count changes (c1 + c2[1] + c3[1] + c4).
"""
from __future__ import annotations

import torch
from torch import nn

from normlab.nn.blocks import ConvNormAct, conv_norm_act

from .base import Norms, ZooModel
from .registry import register_model

__all__ = ["GoogLeNet", "Inception", "googlenet", "INCEPTIONS"]

# Inception(in_channels, c1, (c2_reduce, c2), (c3_reduce, c3), c4) per stage, as in the book
INCEPTIONS = {
    3: ((192, 64, (96, 128), (16, 32), 32),
        (256, 128, (128, 192), (32, 96), 64)),
    4: ((480, 192, (96, 208), (16, 48), 64),
        (512, 160, (112, 224), (24, 64), 64),
        (512, 128, (128, 256), (24, 64), 64),
        (512, 112, (144, 288), (32, 64), 64),
        (528, 256, (160, 320), (32, 128), 128)),
    5: ((832, 256, (160, 320), (32, 128), 128),
        (832, 384, (192, 384), (48, 128), 128)),
}


class Inception(nn.Module):
    """Four paths: 1×1 | 1×1 → 3×3 | 1×1 → 5×5 | 3×3 max-pool → 1×1; each conv + [norm +] ReLU.

    norm_layer: a callable C -> module from the factory, or None (the book's block).
    """

    def __init__(self, in_channels: int, c1: int, c2, c3, c4: int, *, norm_layer=None,
                 norm_position: str = "before_act"):
        super().__init__()
        kw = dict(norm_layer=norm_layer, position=norm_position)
        self.p1_1 = ConvNormAct(in_channels, c1, 1, **kw)
        self.p2_1 = ConvNormAct(in_channels, c2[0], 1, **kw)
        self.p2_2 = ConvNormAct(c2[0], c2[1], 3, padding=1, **kw)
        self.p3_1 = ConvNormAct(in_channels, c3[0], 1, **kw)
        self.p3_2 = ConvNormAct(c3[0], c3[1], 5, padding=2, **kw)
        self.p4_1 = nn.MaxPool2d(kernel_size=3, stride=1, padding=1)
        self.p4_2 = ConvNormAct(in_channels, c4, 1, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p1 = self.p1_1(x)
        p2 = self.p2_2(self.p2_1(x))
        p3 = self.p3_2(self.p3_1(x))
        p4 = self.p4_2(self.p4_1(x))
        return torch.cat((p1, p2, p3, p4), dim=1)   # (N, c1 + c2[1] + c3[1] + c4, H, W)

    def out_size(self, h: int) -> int:
        return h  # every path keeps the side


class GoogLeNet(ZooModel):
    """The book's GoogLeNet: stages 1-5 (nn.Sequential each) and the Linear classifier."""

    model_name = "googlenet"
    book_size = 96

    def __init__(self, *, norm: str | None = None, norm_position: str = "before_act",
                 num_classes: int = 10, in_channels: int = 1, norm_kwargs: dict | None = None):
        norms = Norms(self.model_name, norm, norm_kwargs)
        kw = dict(norm_layer=norms.conv, position=norm_position)
        inc = dict(norm_layer=norms.conv, norm_position=norm_position)

        def pool():
            return nn.MaxPool2d(kernel_size=3, stride=2, padding=1)   # halves the side
        stage1 = nn.Sequential(*conv_norm_act(in_channels, 64, 7, 2, 3, **kw), pool())
        stage2 = nn.Sequential(*conv_norm_act(64, 64, 1, **kw),
                               *conv_norm_act(64, 192, 3, padding=1, **kw), pool())
        stage3 = nn.Sequential(*(Inception(*cfg, **inc) for cfg in INCEPTIONS[3]), pool())
        stage4 = nn.Sequential(*(Inception(*cfg, **inc) for cfg in INCEPTIONS[4]), pool())
        stage5 = nn.Sequential(*(Inception(*cfg, **inc) for cfg in INCEPTIONS[5]),
                               nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten())   # (N, 1024)
        super().__init__(stage1, stage2, stage3, stage4, stage5, nn.Linear(1024, num_classes),
                         in_channels=in_channels, num_classes=num_classes, norm=norm,
                         norm_position=norm_position)


@register_model
def googlenet(*, norm: str | None = None, norm_position: str = "before_act",
              num_classes: int = 10, in_channels: int = 1,
              norm_kwargs: dict | None = None) -> GoogLeNet:
    """The book's GoogLeNet (d2l.ai §8.4), trained at 96×96."""
    return GoogLeNet(norm=norm, norm_position=norm_position, num_classes=num_classes,
                     in_channels=in_channels, norm_kwargs=norm_kwargs)
