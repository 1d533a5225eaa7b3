"""Figures from a run's stats.jsonl, drawn on normlab.plotting's figure.

    gamma_beta.png    γ and β of each norm layer against epoch: the mean over channels, and a band
                      from the smallest to the largest channel
    norm_inputs.png   what each norm layer is fed, against epoch: the mean over channels of the
                      per-channel input mean, and of the per-channel input std (no band: the
                      channels' spread is in stats.jsonl). How far these move
                      while the earlier layers learn is the "internal covariate shift" BN was
                      introduced to remove
    grad_norms.png    ‖∂loss/∂W‖₂ of every layer with a weight: against epoch, and against depth at
                      the first and the last recorded step (the seeds' motivation for BN: without
                      it, gradients near the output are much larger than near the input)

Lines are coloured by depth, from dark (near the input) to light (near the output).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from normlab.inspect.stats import module_path
from normlab.plotting import figure, save_figure

__all__ = ["save_stats_plots", "PLOT_FILES"]

PLOT_FILES = ("gamma_beta.png", "norm_inputs.png", "grad_norms.png")
LEGEND_MAX = 10  # more layers than this: no legend, the colours say the depth


def save_stats_plots(records: list[dict[str, Any]], out_dir: str | Path, title: str = "") -> list[Path]:
    """Draw the figures that `records` (read_stats) can fill into `out_dir`; returns their paths."""
    out_dir = Path(out_dir)
    steps = [r for r in records if r["kind"] == "step"]
    paths = []
    if records and records[0]["norms"]:
        paths.append(_gamma_beta(_by_step(records), out_dir / "gamma_beta.png", title))
    if any("input_mean" in layer for r in steps for layer in r["norms"].values()):
        paths.append(_norm_inputs(steps, out_dir / "norm_inputs.png", title))
    if steps and steps[0].get("grad_norm"):
        paths.append(_grad_norms(steps, out_dir / "grad_norms.png", title))
    return paths


def _by_step(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per step (a step record and an epoch record can share a step: same γ and β)."""
    return list({r["step"]: r for r in records}.values())


def _colors(n: int):
    from matplotlib import colormaps
    cmap = colormaps["viridis"]
    return [cmap(i / max(n - 1, 1) * 0.9) for i in range(n)]


def _series(records, layer: str, key: str, stat: str):
    """(epochs, values) of records[...]["norms"][layer][key][stat], where the layer has that tensor."""
    points = [(r["epoch"], r["norms"][layer][key][stat]) for r in records if key in r["norms"].get(layer, {})]
    return [x for x, _ in points], [y for _, y in points]


def _per_layer_panels(records, path: Path, title: str, panels) -> Path:
    """One panel per (key, label, band): a line per norm layer (its mean over channels), with a min-max band."""
    layers = list(records[-1]["norms"])
    fig = figure(4.5 * len(panels), 3.4)
    for i, (key, label, band) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for layer, color in zip(layers, _colors(len(layers))):
            xs, ys = _series(records, layer, key, "mean")
            if not xs:
                continue
            ax.plot(xs, ys, color=color, label=module_path(layer))
            if band:
                ax.fill_between(xs, _series(records, layer, key, "min")[1], _series(records, layer, key, "max")[1],
                                color=color, alpha=0.15, linewidth=0)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(True)
    _legend(fig, len(layers))
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def _legend(fig, n: int) -> None:
    ax = fig.axes[0]
    if n <= LEGEND_MAX:
        ax.legend(fontsize=7)
    else:
        ax.text(0.02, 0.98, f"{n} layers: dark near the input, light near the output", transform=ax.transAxes,
                fontsize=7, va="top")


def _gamma_beta(records, path: Path, title: str) -> Path:
    return _per_layer_panels(records, path, title, [("gamma", "γ (mean, min-max band)", True),
                                                    ("beta", "β (mean, min-max band)", True)])


def _norm_inputs(steps, path: Path, title: str) -> Path:
    return _per_layer_panels(steps, path, title, [("input_mean", "norm input: mean of channel means", False),
                                                  ("input_std", "norm input: mean of channel stds", False)])


def _grad_norms(steps, path: Path, title: str) -> Path:
    layers = list(steps[-1]["grad_norm"])
    colors = _colors(len(layers))
    fig = figure(9, 3.4)
    ax = fig.add_subplot(1, 2, 1)
    for layer, color in zip(layers, colors):
        points = [(r["epoch"], r["grad_norm"][layer]) for r in steps if layer in r.get("grad_norm", {})]
        ax.plot([x for x, _ in points], [y for _, y in points], color=color, label=module_path(layer))
    ax.set(xlabel="epoch", ylabel="‖∂loss/∂W‖₂", yscale="log")
    ax.grid(True)
    _legend(fig, len(layers))
    depth = fig.add_subplot(1, 2, 2)
    for record, style in ((steps[0], "o--"), (steps[-1], "s-")):
        norms = record.get("grad_norm", {})
        depth.plot(range(len(layers)), [norms.get(layer, float("nan")) for layer in layers], style,
                   label=f"step {record['step']} (epoch {record['epoch']:.2f})")
    depth.set_xticks(range(len(layers)), [module_path(layer) for layer in layers], rotation=90, fontsize=6)
    depth.set(xlabel="layer (input → output)", yscale="log")
    depth.grid(True)
    depth.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
