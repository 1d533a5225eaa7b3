"""A multilayer perceptron with any norm before or after each hidden activation.

Without options it is the book's concise MLP (d2l.ai §5.2): Flatten, Linear(784, 256), ReLU,
Linear(256, 10). The seeds' placement study (their `net_class1`: 2 inputs, 4 hidden units, 1
output, BN "pre" or "post" the activation, relu/sigmoid/tanh) is

    create_model("mlp", in_features=2, hidden=(4,), num_classes=1, norm="batch",
                 norm_position="before_act" | "after_act", activation="relu" | "sigmoid" | "tanh")

before_act is their "pre" (Linear → norm → act) and after_act their "post" (Linear → act → norm,
the norm feeding the next Linear). The norm acts on vectors (dim=1), so `instance`, which needs
spatial positions, is refused with a clear error.
"""
from __future__ import annotations

import torch
from torch import nn

from normlab.nn.blocks import linear_norm_act

from .base import ZooModel, resolve_norm
from .registry import register_model

__all__ = ["MLP", "mlp", "ACTIVATIONS"]

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


class MLP(ZooModel):
    """Flatten, then Linear [+ norm] + activation per hidden size, then Linear to the outputs."""

    model_name = "mlp"

    def __init__(self, *, in_features: int | None = None, hidden=(256,),
                 activation: str = "relu", bias: bool = True, norm: str | None = None,
                 norm_position: str = "before_act", num_classes: int = 10,
                 in_channels: int = 1, norm_kwargs: dict | None = None):
        if activation not in ACTIVATIONS:
            raise ValueError(f"mlp: unknown activation {activation!r}; choose one of: "
                             f"{', '.join(ACTIVATIONS)}")
        in_features = in_channels * 28 * 28 if in_features is None else in_features
        norm_layer = resolve_norm(self.model_name, norm, 1, norm_kwargs)
        layers, f_in = [nn.Flatten()], in_features        # (N, C, H, W) -> (N, C·H·W)
        for f_out in hidden:
            layers += linear_norm_act(f_in, f_out, norm_layer=norm_layer, bias=bias,
                                      act_layer=ACTIVATIONS[activation], position=norm_position)
            f_in = f_out
        layers.append(nn.Linear(f_in, num_classes, bias=bias))
        super().__init__(*layers, in_channels=in_channels, num_classes=num_classes, norm=norm,
                         norm_position=norm_position)
        self.in_features = in_features

    def describe_sizes(self) -> str:
        return f"mlp takes {self.in_features} features per example"

    def check_input(self, x: torch.Tensor) -> None:
        if x.dim() < 2 or x[0].numel() != self.in_features:
            raise ValueError(f"mlp takes {self.in_features} features per example, (N, "
                             f"{self.in_features}) or any (N, ...) of that size; "
                             f"got {tuple(x.shape)}")


@register_model
def mlp(*, in_features: int | None = None, hidden=(256,), activation: str = "relu",
        bias: bool = True, norm: str | None = None, norm_position: str = "before_act",
        num_classes: int = 10, in_channels: int = 1, norm_kwargs: dict | None = None) -> MLP:
    """The book's MLP (d2l.ai §5.2: 784 -> 256 -> 10) or any other widths; in_features
    defaults to one in_channels×28×28 image."""
    hidden = (hidden,) if isinstance(hidden, int) else tuple(hidden)
    return MLP(in_features=in_features, hidden=hidden, activation=activation, bias=bias,
               norm=norm, norm_position=norm_position, num_classes=num_classes,
               in_channels=in_channels, norm_kwargs=norm_kwargs)
