"""The text `normlab inspect` prints: the first norm layer's γ and β, a per-layer table, and what
stats.jsonl recorded. Each function returns a string; the CLI prints.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from normlab.inspect.stats import affine_params, describe_norms, module_path, norm_layers
from normlab.models.summary import format_table
from normlab.nn import D2LBatchNorm

__all__ = ["first_norm_text", "norm_table", "stats_text"]


def first_norm_text(model: nn.Module) -> str:
    """The first norm layer's γ and β as the seeds printed them:

        net[1].gamma.reshape((-1,)), net[1].beta.reshape((-1,))
        (tensor([2.0412, 4.2506, ...]),
         tensor([-0.7424, 2.6919, ...]))

    (normlab's and torch's layers call them weight and bias; the book's layer gamma and beta).
    """
    layers = norm_layers(model)
    if not layers:
        return "this model has no norm layer, so no γ and β to show"
    name, m = layers[0]
    path = module_path(name)
    head = f"the first norm layer, {path}: {m}"
    gamma, beta = affine_params(m)
    if gamma is None or beta is None:
        return f"{head}\nit has no γ and β (affine=False)"
    g, b = ("gamma", "beta") if isinstance(m, D2LBatchNorm) else ("weight", "bias")
    return f"{head}\n{path}.{g}.reshape((-1,)), {path}.{b}.reshape((-1,))\n({gamma!r},\n {beta!r})"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def norm_table(model: nn.Module) -> str:
    """Every norm layer: type, channels, γ and β (mean and std over channels), running mean and var (means)."""
    rows = describe_norms(model)
    if not rows:
        return "no norm layers"
    head = ("layer", "type", "channels", "γ mean", "γ std", "β mean", "β std", "running mean", "running var")
    body = [(module_path(r["name"]), r["type"], r["channels"], *map(_num, (
        r["gamma_mean"], r["gamma_std"], r["beta_mean"], r["beta_std"], r["running_mean"], r["running_var"])))
        for r in rows]
    return format_table(head, body, align="llrrrrrrr")


def stats_text(records: list[dict[str, Any]]) -> str:
    """What stats.jsonl holds: its schedule, then the norms' inputs and the gradient norms at the
    first and the last recorded step."""
    steps = [r for r in records if r["kind"] == "step"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    lines = [f"stats.jsonl: {len(steps)} step records (steps {_span(steps)}) and {len(epochs)} epoch-end records"]
    if not steps:
        return "\n".join(lines)
    first, last = steps[0], steps[-1]
    when = f"step {first['step']} -> step {last['step']}"
    inputs = [(module_path(name), *(_num(r["norms"].get(name, {}).get(key, {}).get("mean"))
                                    for key in ("input_mean", "input_std") for r in (first, last)))
              for name in last["norms"]]
    if inputs:
        lines += ["", f"the norms' inputs, averaged over channels ({when}):",
                  format_table(("layer", "mean first", "mean last", "std first", "std last"), inputs, align="lrrrr")]
    grads = [(module_path(name), _sci(first.get("grad_norm", {}).get(name)), _sci(value))
             for name, value in last.get("grad_norm", {}).items()]
    if grads:
        lines += ["", f"gradient norms ‖∂loss/∂W‖₂, input to output ({when}):",
                  format_table(("layer", "first", "last"), grads, align="lrr")]
    return "\n".join(lines)


def _span(steps: list[dict[str, Any]]) -> str:
    if not steps:
        return "none"
    every = steps[1]["step"] - steps[0]["step"] if len(steps) > 1 else steps[0]["step"]
    return f"{steps[0]['step']}..{steps[-1]['step']}, every {every}"


def _sci(value: float | None) -> str:
    return "-" if value is None else f"{value:.3e}"
