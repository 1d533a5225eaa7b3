"""ResNet (He et al., 2016): the book's ResNet-18 and a CIFAR-style ResNet-20.

d2l.ai §8.6. A residual block computes relu(F(x) + shortcut(x)) with
F = conv3 → norm → relu → conv3 → norm (before_act) and shortcut = x, or a strided 1×1 conv
when the block halves the side and changes the channel count. With norm_position="after_act"
each norm moves behind its activation: conv3 → relu → norm → conv3, then + shortcut → relu → norm.
The convs keep their biases, as the book's do.

    resnet18  (N, 1, 96, 96): conv7 s2 + max-pool -> 64×24×24, four stages of two blocks
              (64, 128, 256, 512 channels; 24, 12, 6, 3 side), global avg pool, Linear(512, 10)
    resnet20  (N, 1, 28, 28): conv3 -> 16×28×28, three stages of three blocks (16, 32, 64
              channels; 28, 14, 7 side), global avg pool, Linear(64, 10); 6·3 + 2 = 20 layers
"""
from __future__ import annotations

import torch
from torch import nn

from normlab.nn.blocks import conv_norm_act, norm_act

from .base import Norms, ZooModel, spatial_out
from .registry import register_model

__all__ = ["ResNet", "Residual", "resnet18", "resnet20"]

# (channels, blocks) per stage
STAGES_18 = ((64, 2), (128, 2), (256, 2), (512, 2))
STAGES_20 = ((16, 3), (32, 3), (64, 3))


class Residual(nn.Module):
    """The book's residual block; use_1x1conv puts a strided 1×1 conv on the shortcut."""

    def __init__(self, in_channels: int, out_channels: int, *, use_1x1conv: bool = False,
                 stride: int = 1, norm_layer=None, norm_position: str = "before_act"):
        super().__init__()
        before = norm_position == "before_act"
        self.branch = nn.Sequential(   # F(x); the second norm sits before the sum or after it
            *conv_norm_act(in_channels, out_channels, 3, stride, 1, norm_layer=norm_layer,
                           position=norm_position),
            *conv_norm_act(out_channels, out_channels, 3, 1, 1, act_layer=None,
                           norm_layer=norm_layer if before else None))
        self.shortcut = (nn.Conv2d(in_channels, out_channels, 1, stride) if use_1x1conv
                         else nn.Identity())
        self.out = nn.Sequential(*norm_act(out_channels, None if before else norm_layer,
                                           nn.ReLU, norm_position))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.branch(x) + self.shortcut(x))

    def out_size(self, h: int) -> int:
        return spatial_out(self.branch, h)


def resnet_stage(in_channels: int, out_channels: int, num_blocks: int, *, first: bool = False,
                 **kw) -> nn.Sequential:
    """num_blocks residual blocks; the first halves the side unless `first` (the book's b2)."""
    blocks = []
    for i in range(num_blocks):
        if i == 0 and not first:
            blocks.append(Residual(in_channels, out_channels, use_1x1conv=True, stride=2, **kw))
        else:
            blocks.append(Residual(out_channels, out_channels, **kw))
    return nn.Sequential(*blocks)


class ResNet(ZooModel):
    """A stem, residual stages (the first keeps the side), global average pooling, Linear."""

    model_name = "resnet"

    def __init__(self, stages, *, stem: str = "imagenet", norm: str | None = "batch",
                 norm_position: str = "before_act", num_classes: int = 10, in_channels: int = 1,
                 norm_kwargs: dict | None = None, model_name: str = "resnet"):
        norms = Norms(model_name, norm, norm_kwargs)
        kw = dict(norm_layer=norms.conv, norm_position=norm_position)
        c = stages[0][0]
        if stem == "imagenet":   # the book's b1: conv7 s2 + max-pool, a quarter of the side
            first = nn.Sequential(*conv_norm_act(in_channels, c, 7, 2, 3, norm_layer=norms.conv,
                                                 position=norm_position),
                                  nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
        else:                    # CIFAR: one conv3, the side kept
            first = nn.Sequential(*conv_norm_act(in_channels, c, 3, 1, 1, norm_layer=norms.conv,
                                                 position=norm_position))
        body = []
        for i, (c_out, n) in enumerate(stages):
            body.append(resnet_stage(c, c_out, n, first=i == 0, **kw))
            c = c_out
        super().__init__(first, *body, nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(),
                         nn.Linear(c, num_classes), in_channels=in_channels,
                         num_classes=num_classes, norm=norm, norm_position=norm_position)
        self.model_name = model_name


@register_model
def resnet18(*, norm: str | None = "batch", norm_position: str = "before_act",
             num_classes: int = 10, in_channels: int = 1,
             norm_kwargs: dict | None = None) -> ResNet:
    """The book's ResNet-18 (d2l.ai §8.6), batch norm by default, trained at 96×96."""
    net = ResNet(STAGES_18, stem="imagenet", norm=norm, norm_position=norm_position,
                 num_classes=num_classes, in_channels=in_channels, norm_kwargs=norm_kwargs,
                 model_name="resnet18")
    net.book_size = 96
    return net


@register_model
def resnet20(*, norm: str | None = "batch", norm_position: str = "before_act",
             num_classes: int = 10, in_channels: int = 1,
             norm_kwargs: dict | None = None) -> ResNet:
    """ResNet-20 (He et al., 2016, §4.2: CIFAR-style, 3 stages × 3 blocks, 16/32/64 channels)
    for 28×28 input, with the book's residual block (conv biases, 1×1-conv shortcut when the
    side halves): about 0.27M parameters, so a residual network trains on a CPU in minutes."""
    net = ResNet(STAGES_20, stem="cifar", norm=norm, norm_position=norm_position,
                 num_classes=num_classes, in_channels=in_channels, norm_kwargs=norm_kwargs,
                 model_name="resnet20")
    net.book_size = None
    return net
