"""replace_modules: the one walk that swaps modules in a model (convert_norms, freeze_norms and
convert_sync_batchnorm are each a `replace` function handed to it)."""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

__all__ = ["replace_modules"]


def replace_modules(model: nn.Module, replace: Callable[[nn.Module], nn.Module | None]) -> nn.Module:
    """`model` with every module m for which replace(m) gives a module swapped for that module,
    in place, under the same name and in the same place among its siblings; where replace(m) is
    None, m stays and its children are visited. A swapped module's children are not visited.
    Returns the model to use: a new module when replace(model) itself gives one."""
    new = replace(model)
    if new is not None:
        return new
    for name, child in model.named_children():
        new = replace_modules(child, replace)
        if new is not child:
            setattr(model, name, new)
    return model
