"""conv/linear + norm + activation: the one place where norm placement lives.

Every model in the zoo builds its layers here, so `norm_position` means the same everywhere:

    before_act   conv → norm → act     (the seeds' placement and the default; Ioffe & Szegedy)
    after_act    conv → act → norm

The helpers return plain lists of modules, so a model can splice them into one flat
nn.Sequential and print layer by layer exactly as the book does (`Conv2d`, `BatchNorm2d`,
`Sigmoid`, ...). `norm_layer` is what `normlab.nn.get_norm_layer` returns (a class or partial
taking the channel count first), or None for no norm layer at all (the book's models without
batch norm; nn.Identity would add a line to every printout). Blocks never import a norm class.
"""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

__all__ = ["NORM_POSITIONS", "check_norm_position", "norm_act", "conv_norm_act",
           "linear_norm_act", "ConvNormAct"]

NORM_POSITIONS = ("before_act", "after_act")

NormLayer = Callable[[int], nn.Module] | None
ActLayer = Callable[[], nn.Module] | None


def check_norm_position(position: str) -> str:
    """`position` if it is one of NORM_POSITIONS, else a ValueError naming them."""
    if position not in NORM_POSITIONS:
        raise ValueError(f"unknown norm_position {position!r}; choose one of: "
                         f"{', '.join(NORM_POSITIONS)}")
    return position


def norm_act(num_features: int, norm_layer: NormLayer, act_layer: ActLayer,
             position: str = "before_act") -> list[nn.Module]:
    """[norm, act] before the activation, [act, norm] after it; a None part is left out."""
    check_norm_position(position)
    norm = [norm_layer(num_features)] if norm_layer is not None else []
    act = [act_layer()] if act_layer is not None else []
    return norm + act if position == "before_act" else act + norm


def conv_norm_act(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                  padding: int = 0, *, norm_layer: NormLayer = None, act_layer: ActLayer = nn.ReLU,
                  position: str = "before_act", bias: bool = True) -> list[nn.Module]:
    """Conv2d followed by norm_act. The conv keeps its bias by default, as the book's models do
    (a norm right after it makes the bias redundant, but removing it changes the definition)."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=bias)
    return [conv, *norm_act(out_channels, norm_layer, act_layer, position)]


def linear_norm_act(in_features: int, out_features: int, *, norm_layer: NormLayer = None,
                    act_layer: ActLayer = nn.ReLU, position: str = "before_act",
                    bias: bool = True) -> list[nn.Module]:
    """Linear followed by norm_act; norm_layer must be a dim=1 norm (vectors)."""
    linear = nn.Linear(in_features, out_features, bias=bias)
    return [linear, *norm_act(out_features, norm_layer, act_layer, position)]


class ConvNormAct(nn.Sequential):
    """conv_norm_act as one module, for blocks with branches (Inception, residual, dense)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, **kw):
        super().__init__(*conv_norm_act(in_channels, out_channels, kernel_size, stride,
                                        padding, **kw))
