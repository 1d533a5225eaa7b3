"""LeNet-5 (LeCun et al., 1998) as the book writes it, and the seeds' BN-LeNet.

d2l.ai §7.6 (LeNet) and §8.5 (batch normalization). Both are one flat nn.Sequential, so
`for layer in net` prints the book's table and `net[1]` is the first norm of BN-LeNet.

    lenet     (N, 1, 28, 28) -conv5 p2-> 6×28×28 -avg-> 6×14×14 -conv5-> 16×10×10 -avg-> 16×5×5
              -> 400 -> 120 -> 84 -> 10; sigmoid after every conv and hidden Linear
    lenet_bn  no padding: 6×24×24 -> 6×12×12 -> 16×8×8 -> 16×4×4 -> 256 -> 120 -> 84 -> 10,
              a norm (batch by default) after each conv and hidden Linear, before the sigmoid
"""
from __future__ import annotations

from torch import nn

from normlab.nn.blocks import conv_norm_act, linear_norm_act

from .base import Norms, ZooModel
from .registry import register_model

__all__ = ["LeNet", "lenet", "lenet_bn"]

NORM_SLOTS = (1, 2, 3, 4)  # BN-LeNet's norm positions: after conv1, conv2, fc1, fc2


class LeNet(ZooModel):
    """LeNet with an optional norm after each conv and hidden Linear layer.

    padding=2 is the book's LeNet (28×28 in, 16·5·5 = 400 features); padding=0 is BN-LeNet's
    (16·4·4 = 256). `norm_slots` picks which of the four norm positions hold the norm; the others
    hold nn.Identity, so indices (net[1], net[5], ...) stay those of the full model.
    `fc_dropout=p` adds Dropout(p) after each hidden activation of the fully connected part.
    """

    model_name = "lenet"
    book_size = 28

    def __init__(self, *, padding: int = 2, norm: str | None = None,
                 norm_position: str = "before_act", norm_slots=None, fc_dropout: float = 0.0,
                 num_classes: int = 10, in_channels: int = 1, fc_norm: str | None = None,
                 norm_kwargs: dict | None = None, model_name: str = "lenet"):
        norms = Norms(model_name, norm, norm_kwargs, fc_norm)
        slots = _check_slots(model_name, norm_slots)
        fc = norms.fc if any(s in slots for s in (3, 4)) else None

        def slot(i, layer):  # with norm_slots, an empty slot holds an Identity
            if norm_slots is None or (i in slots and layer is not None):
                return layer
            return lambda c: nn.Identity()
        act = dict(act_layer=nn.Sigmoid, position=norm_position)
        flat = 16 * 5 * 5 if padding == 2 else 16 * 4 * 4

        def drop():   # a fresh Dropout per place, or nothing
            return [nn.Dropout(fc_dropout)] if fc_dropout else []
        super().__init__(
            *conv_norm_act(in_channels, 6, 5, padding=padding, norm_layer=slot(1, norms.conv), **act),
            nn.AvgPool2d(kernel_size=2, stride=2),
            *conv_norm_act(6, 16, 5, norm_layer=slot(2, norms.conv), **act),
            nn.AvgPool2d(kernel_size=2, stride=2),
            nn.Flatten(),                                        # (N, 16, 5, 5) -> (N, 400)
            *linear_norm_act(flat, 120, norm_layer=slot(3, fc), **act), *drop(),
            *linear_norm_act(120, 84, norm_layer=slot(4, fc), **act), *drop(),
            nn.Linear(84, num_classes),
            in_channels=in_channels, num_classes=num_classes, norm=norm, norm_position=norm_position)
        self.model_name, self.flat_size = model_name, (5 if padding == 2 else 4)


def _check_slots(model: str, norm_slots) -> tuple[int, ...]:
    if norm_slots is None:
        return NORM_SLOTS
    if isinstance(norm_slots, int):
        norm_slots = (norm_slots,)
    slots = tuple(sorted({int(s) for s in norm_slots}))
    bad = [s for s in slots if s not in NORM_SLOTS]
    if bad:
        raise ValueError(f"{model}: norm_slots {bad} out of range; its norm positions are "
                         f"1, 2 (after the convs) and 3, 4 (after the hidden Linear layers)")
    return slots


@register_model
def lenet(*, norm: str | None = None, norm_position: str = "before_act", num_classes: int = 10,
          in_channels: int = 1, fc_norm: str | None = None,
          norm_kwargs: dict | None = None) -> LeNet:
    """The book's LeNet (d2l.ai §7.6): 61,706 parameters; with a norm, one after each conv and
    hidden Linear layer."""
    return LeNet(padding=2, norm=norm, norm_position=norm_position, num_classes=num_classes,
                 in_channels=in_channels, fc_norm=fc_norm, norm_kwargs=norm_kwargs)


@register_model
def lenet_bn(*, norm: str | None = "batch", norm_position: str = "before_act",
             norm_slots=NORM_SLOTS, fc_dropout: float = 0.0, num_classes: int = 10,
             in_channels: int = 1, fc_norm: str | None = None,
             norm_kwargs: dict | None = None) -> LeNet:
    """The seeds' BN-LeNet (d2l.ai §8.5): no padding, 256 flattened features, batch norm.

    norm_slots ⊆ {1, 2, 3, 4} keeps the norm in those positions (the seeds' "which layers"
    study: e.g. (2, 4) keeps only the second and fourth); fc_dropout=0.5 with norm_slots=(1, 2)
    is their "BN against dropout" study. norm="batch_d2l" is the book's own layer.
    """
    return LeNet(padding=0, norm=norm, norm_position=norm_position, norm_slots=norm_slots,
                 fc_dropout=fc_dropout, num_classes=num_classes, in_channels=in_channels,
                 fc_norm=fc_norm, norm_kwargs=norm_kwargs, model_name="lenet_bn")
