"""The run's curves, drawn on normlab.plotting's figure.

`save_curves` draws what the book's Animator draws: train loss and train accuracy five times
per epoch, test accuracy at each epoch end, against epoch (test MSE for regression).
"""
from __future__ import annotations

from pathlib import Path

from normlab.plotting import figure, save_figure


def save_curves(history, path: str | Path, title: str = "", epochs: int | None = None) -> Path:
    """Train loss, train acc (at each curve point) and test acc (at each epoch end) against epoch."""
    fig = figure()
    ax = fig.add_subplot()
    xs = [p["x"] for p in history.points]
    ax.plot(xs, [p["train_loss"] for p in history.points], "-", label="train loss")
    if history.points and "train_acc" in history.points[0]:
        ax.plot(xs, [p["train_acc"] for p in history.points], "m--", label="train acc")
    ends = [m["epoch"] for m in history.epochs]
    for key, style in (("test_acc", "g-."), ("test_mse", "g-.")):
        if history.epochs and key in history.epochs[0]:
            ax.plot(ends, [m[key] for m in history.epochs], style, label=key.replace("_", " "))
    if any(m.get("test_mse") is not None for m in history.epochs):
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_xlim(0, max(epochs or 1, 1))  # the book starts at 1 and hides the first epoch's points
    ax.grid(True)
    ax.legend()
    if title:
        ax.set_title(title, fontsize=9)
    return save_figure(fig, path)
