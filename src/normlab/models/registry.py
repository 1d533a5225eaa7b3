"""The model registry: @register_model builders, create_model(name, **kw), list_models()."""
from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

__all__ = ["register_model", "create_model", "list_models", "model_defaults"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a builder under its function name (a decorator)."""
    if fn.__name__ in _MODELS:
        raise ValueError(f"model {fn.__name__!r} is registered twice")
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """The names create_model accepts, in registration order."""
    return list(_MODELS)


def create_model(name: str, **kw) -> nn.Module:
    """Build model `name`; keyword arguments that are None are dropped, so the model's own
    defaults stand (lenet_bn keeps its batch norm when norm=None is passed)."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")
    builder = _MODELS[name]
    kw = {k: v for k, v in kw.items() if v is not None}
    params = inspect.signature(builder).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kw) - set(params))
        if unknown:
            raise ValueError(f"{name}: unknown option(s) {', '.join(unknown)}; "
                             f"it takes: {', '.join(params)}")
    return builder(**kw)


def model_defaults(name: str) -> dict:
    """The builder's keyword defaults, e.g. model_defaults("lenet_bn")["norm"] == "batch"."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")
    return {k: p.default for k, p in inspect.signature(_MODELS[name]).parameters.items()
            if p.default is not inspect.Parameter.empty}
