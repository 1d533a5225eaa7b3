"""VGG (Simonyan & Zisserman, 2014) as the book writes it.

d2l.ai §8.2: blocks of 3×3 convs (padding 1) and a 2×2 max-pool; five blocks halve 224 to 7,
then 512·7·7 = 25088 -> 4096 -> 4096 -> 10 with dropout 0.5. The book trains VGG-11 with every
conv width divided by 4 (`width_divisor=4`); the fully connected widths stay 4096.
"""
from __future__ import annotations

from torch import nn

from normlab.nn.blocks import conv_norm_act, linear_norm_act

from .base import Norms, ZooModel
from .registry import register_model

__all__ = ["VGG", "vgg", "cfgs", "VGG11"]

# (number of convs, out_channels) per block
cfgs = {
    "vgg11": ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512)),   # the book's
    "vgg13": ((2, 64), (2, 128), (2, 256), (2, 512), (2, 512)),
    "vgg16": ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512)),
    "vgg19": ((2, 64), (2, 128), (4, 256), (4, 512), (4, 512)),
}
VGG11 = cfgs["vgg11"]


def vgg_block(num_convs: int, in_channels: int, out_channels: int, norms: Norms,
              norm_position: str) -> nn.Sequential:
    """num_convs × (conv3 p1 [+ norm] + ReLU), then MaxPool2d(2, 2): halves the side."""
    layers = []
    for _ in range(num_convs):
        layers += conv_norm_act(in_channels, out_channels, 3, padding=1, norm_layer=norms.conv,
                                position=norm_position)
        in_channels = out_channels
    return nn.Sequential(*layers, nn.MaxPool2d(kernel_size=2, stride=2))


class VGG(ZooModel):
    """VGG from a table of (num_convs, out_channels) blocks, followed by the 3-layer head."""

    model_name = "vgg"
    book_size = 224

    def __init__(self, arch=VGG11, *, width_divisor: int = 1, dropout: float = 0.5,
                 norm: str | None = None, norm_position: str = "before_act",
                 num_classes: int = 10, in_channels: int = 1, fc_norm: str | None = None,
                 norm_kwargs: dict | None = None):
        arch = _arch(arch, width_divisor)
        norms = Norms(self.model_name, norm, norm_kwargs, fc_norm)
        blocks, c_in = [], in_channels
        for num_convs, c_out in arch:
            blocks.append(vgg_block(num_convs, c_in, c_out, norms, norm_position))
            c_in = c_out
        side = 224 >> len(arch)                            # 5 halvings: 224 -> 7
        head, f_in = [], c_in * side * side
        for _ in range(2):
            head += [*linear_norm_act(f_in, 4096, norm_layer=norms.fc, position=norm_position),
                     nn.Dropout(dropout)]
            f_in = 4096
        super().__init__(*blocks, nn.Flatten(), *head, nn.Linear(4096, num_classes),
                         in_channels=in_channels, num_classes=num_classes, norm=norm,
                         norm_position=norm_position)
        self.flat_size = side


def _arch(arch, width_divisor: int) -> tuple[tuple[int, int], ...]:
    if isinstance(arch, str):
        if arch not in cfgs:
            raise ValueError(f"vgg: unknown arch {arch!r}; choose one of: {', '.join(cfgs)} "
                             "or give ((num_convs, channels), ...)")
        arch = cfgs[arch]
    if width_divisor < 1 or any(c // width_divisor < 1 for _, c in arch):
        raise ValueError(f"vgg: width_divisor={width_divisor} leaves a block without channels")
    return tuple((int(n), int(c) // width_divisor) for n, c in arch)


@register_model
def vgg(*, arch=VGG11, width_divisor: int = 1, dropout: float = 0.5, norm: str | None = None,
        norm_position: str = "before_act", num_classes: int = 10, in_channels: int = 1,
        fc_norm: str | None = None, norm_kwargs: dict | None = None) -> VGG:
    """VGG (d2l.ai §8.2), VGG-11 by default (128,806,154 parameters); the book trains it with
    width_divisor=4. arch: a name in cfgs or ((num_convs, channels), ...)."""
    return VGG(arch, width_divisor=width_divisor, dropout=dropout, norm=norm,
               norm_position=norm_position, num_classes=num_classes, in_channels=in_channels,
               fc_norm=fc_norm, norm_kwargs=norm_kwargs)
