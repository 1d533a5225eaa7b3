"""What a run reports and keeps, as callbacks on the Trainer; the CLI decides which and where.

Each hook receives the Trainer: on_train_start, on_step_start (before a training batch's forward),
on_after_backward (gradients ready, before the optimizer step), on_step_end, on_epoch_end(metrics),
on_train_end (also when the run stops early: Interrupted or DivergenceError, before the caller's
final checkpoint). Statistics recording (stats.jsonl) is normlab.inspect.stats.StatsRecorder.
Every file is written atomically (temporary name, then rename): a killed run leaves the previous
complete file, never half of one.
"""
from __future__ import annotations

import importlib.util
import io
import json
import pickle
import signal
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from normlab import __version__
from normlab._io import atomic_write_bytes, atomic_write_text
from normlab._tqdm import tqdm
from normlab.train import config as config_mod


class ProgressBar:
    """A tqdm bar per epoch with the running loss and accuracy; off when not a TTY (or `disable=True`)."""

    def __init__(self, disable: bool | None = None):
        self.disable, self.bar = disable, None

    def on_step_end(self, trainer) -> None:
        if self.bar is None:
            self.bar = tqdm(total=len(trainer.train_iter), initial=trainer.step - 1, disable=self.disable,
                            desc=f"epoch {trainer.epoch + 1}/{trainer.config.train.epochs}", leave=False)
        s = trainer.sums
        postfix = {"loss": f"{s['loss'] / s['count']:.3f}"}
        if not trainer.regression:
            postfix["acc"] = f"{s['correct'] / s['count']:.3f}"
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(1)

    def on_epoch_end(self, trainer, metrics) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class MetricsLog:
    """`metrics.jsonl`: one JSON object per epoch, the whole file rewritten at each epoch end."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_epoch_end(self, trainer, metrics) -> None:
        atomic_write_text(self.path, "".join(json.dumps(m) + "\n" for m in trainer.history.epochs))


class Checkpoint:
    """`checkpoint.pt`: everything needed to resume exactly, saved at every epoch end (and on request)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def save(self, trainer) -> Path:
        state = trainer.state_dict()
        state.update(config=config_mod.to_dict(trainer.config), normlab_version=__version__)
        buffer = io.BytesIO()  # serialized first: torch.save on a full disk fails with a RuntimeError, a write with ENOSPC
        torch.save(state, buffer)
        atomic_write_bytes(self.path, buffer.getvalue())
        return self.path

    def on_epoch_end(self, trainer, metrics) -> None:
        self.save(trainer)


def load_checkpoint(path: str | Path, model_name: str | None = None) -> dict[str, Any]:
    """Load a checkpoint with weights_only=True; errors say what is missing or mismatched."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint to resume from: {path} does not exist "
                                "(a run writes it at the end of its first epoch); start a new run instead")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: name it, without torch's advice to load it unsafely
        raise ValueError(f"{path} is damaged: {_why_unreadable(path, e)}. normlab writes a checkpoint whole or "
                         "not at all, so this one was changed after it was written (a disk error, a copy cut "
                         "short): restore it from a copy, or train the run again") from None
    saved = state.get("config", {}).get("model", {}).get("name")
    if model_name is not None and saved != model_name:
        raise ValueError(f"{path} is a checkpoint of model {saved!r}, not {model_name!r}; "
                         f"resume it as model {saved!r}, or give another run directory")
    return state


def _why_unreadable(path: Path, error: Exception) -> str:
    if not zipfile.is_zipfile(path):
        return "it is not the zip archive that torch.save writes (truncated, or another kind of file)"
    if isinstance(error, pickle.UnpicklingError):
        return "it holds objects beyond tensors and plain values, which a safe load (weights_only=True) refuses"
    return f"torch cannot read it ({str(error).splitlines()[0][:200]})"


class CurvesPlot:
    """`curves.png`, the book's Animator figure, redrawn at each epoch end (needs matplotlib: the [plot] extra)."""

    def __init__(self, path: str | Path, title: str = ""):
        self.path, self.title = Path(path), title
        self.available = importlib.util.find_spec("matplotlib") is not None
        if not self.available:
            warnings.warn("matplotlib is not installed, so no curves.png is drawn; "
                          "pip install 'normlab[plot]' to get it", stacklevel=2)

    def on_epoch_end(self, trainer, metrics) -> None:
        if self.available:
            from normlab.train.plots import save_curves
            save_curves(trainer.history, self.path, title=self.title, epochs=trainer.config.train.epochs)


class StopOnSignal:
    """Turn the first Ctrl-C (SIGINT) or SIGTERM into a stop at the next batch boundary; a second Ctrl-C aborts."""

    def __init__(self):
        self.trainer, self.previous = None, {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def on_train_start(self, trainer) -> None:
        self.trainer = trainer

    def _handle(self, signum, frame):
        if self.trainer is None or self.trainer.stop_requested:
            raise KeyboardInterrupt
        self.trainer.stop_requested = True
