"""AlexNet (Krizhevsky, Sutskever & Hinton, 2012) as the book adapts it to Fashion-MNIST.

d2l.ai §8.1: one input channel, 224×224 (Fashion-MNIST resized), 10 classes, dropout 0.5.

    (N, 1, 224, 224) -conv11 s4 p1-> 96×54×54 -max3 s2-> 96×26×26 -conv5 p2-> 256×26×26
    -max-> 256×12×12 -conv3 ×3-> 384, 384, 256 ×12×12 -max-> 256×5×5 -> 6400 -> 4096 -> 4096 -> 10
"""
from __future__ import annotations

from torch import nn

from normlab.nn.blocks import conv_norm_act, linear_norm_act

from .base import Norms, ZooModel
from .registry import register_model

__all__ = ["AlexNet", "alexnet"]

# (out_channels, kernel, stride, padding, max-pool after it)
CONVS = ((96, 11, 4, 1, True), (256, 5, 1, 2, True), (384, 3, 1, 1, False),
         (384, 3, 1, 1, False), (256, 3, 1, 1, True))


class AlexNet(ZooModel):
    """The book's AlexNet, a norm after each conv and hidden Linear layer when asked."""

    model_name = "alexnet"
    book_size = 224
    flat_size = 5

    def __init__(self, *, dropout: float = 0.5, norm: str | None = None,
                 norm_position: str = "before_act", num_classes: int = 10, in_channels: int = 1,
                 fc_norm: str | None = None, norm_kwargs: dict | None = None):
        norms = Norms(self.model_name, norm, norm_kwargs, fc_norm)
        act = dict(act_layer=nn.ReLU, position=norm_position)
        layers, c_in = [], in_channels
        for c_out, k, s, p, pool in CONVS:
            layers += conv_norm_act(c_in, c_out, k, s, p, norm_layer=norms.conv, **act)
            layers += [nn.MaxPool2d(kernel_size=3, stride=2)] if pool else []
            c_in = c_out
        layers.append(nn.Flatten())                          # (N, 256, 5, 5) -> (N, 6400)
        for f_in in (c_in * 5 * 5, 4096):
            layers += [*linear_norm_act(f_in, 4096, norm_layer=norms.fc, **act), nn.Dropout(dropout)]
        layers.append(nn.Linear(4096, num_classes))
        super().__init__(*layers, in_channels=in_channels, num_classes=num_classes, norm=norm,
                         norm_position=norm_position)


@register_model
def alexnet(*, dropout: float = 0.5, norm: str | None = None, norm_position: str = "before_act",
            num_classes: int = 10, in_channels: int = 1, fc_norm: str | None = None,
            norm_kwargs: dict | None = None) -> AlexNet:
    """The book's AlexNet (d2l.ai §8.1) for 224×224 one-channel input: 46,764,746 parameters."""
    return AlexNet(dropout=dropout, norm=norm, norm_position=norm_position,
                   num_classes=num_classes, in_channels=in_channels, fc_norm=fc_norm,
                   norm_kwargs=norm_kwargs)
