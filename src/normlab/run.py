"""A run directory: build the data and the model from a RunConfig, train with the standard callbacks.

    runs/<name>/config.toml      the fully resolved config
                metrics.jsonl    one JSON object per epoch
                curves.png       the book's Animator figure
                checkpoint.pt    model, optimizer, schedule, RNG states, position (weights_only=True)
                summary.json     status, final and best metrics, parameters, device, versions
                stats.jsonl      with train.record_stats: γ/β, running stats, norm inputs, gradient norms

Used by `normlab train` and the experiment runner; neither prints from here. It sits above
normlab.train and normlab.inspect and assembles both (the stats recorder is inspect's).
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from normlab import __version__
from normlab._io import atomic_write_text
from normlab.data import TensorLoader, load_dataset, load_poly_regression
from normlab.data.fashion_mnist import DATASET_CLASSES
from normlab.train import config as config_mod
from normlab.train import distributed
from normlab.train.callbacks import Checkpoint, CurvesPlot, MetricsLog, ProgressBar, load_checkpoint
from normlab.train.config import ConfigError, RunConfig
from normlab.train.loop import DivergenceError, History, Interrupted, Trainer

__all__ = ["run", "build_loaders", "build_model", "resume_config", "load_trained", "recalibration_effect",
           "latest_run", "default_out", "norm_name", "check_out", "RUN_FILES"]

# what a run writes into its directory; a fresh run replaces them all
RUN_FILES = ("curves.png", "metrics.jsonl", "checkpoint.pt", "config.toml", "summary.json", "stats.jsonl")

DATASETS = {**DATASET_CLASSES, "poly": None}  # poly: the seeds' regression task (normlab.data.synthetic)


def build_loaders(cfg, seed: int) -> tuple[TensorLoader, TensorLoader]:
    """The (train_iter, test_iter) that `cfg` (a DataConfig) describes; the order is seeded by `seed`."""
    if cfg.dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {cfg.dataset!r}; choose one of: {', '.join(DATASETS)}")
    if cfg.dataset == "poly":
        return load_poly_regression(batch_size=cfg.batch_size, seed=seed)
    return load_dataset(DATASETS[cfg.dataset], cfg.batch_size, resize=cfg.resize, root=cfg.root,
                        drop_last=cfg.drop_last, seed=seed, normalize=cfg.normalize,
                        train_subset=cfg.train_subset, test_subset=cfg.test_subset,
                        augment=cfg.augment, augment_shift=cfg.augment_shift)


def build_model(cfg, dataset: str, sync_bn: bool = False) -> torch.nn.Module:
    """The zoo model that `cfg` (a ModelConfig) names; regression data gets one output.
    sync_bn: its batch norms become normlab.nn.SyncBatchNorm (statistics over all ranks)."""
    from normlab.models import create_model
    from normlab.nn import SyncBatchNorm, convert_sync_batchnorm

    if dataset == "poly" and cfg.name != "mlp":
        raise ConfigError(f"dataset poly (2 features, 1 target) needs model mlp, not {cfg.name!r}")
    shape = {"num_classes": 1, "in_features": 2} if dataset == "poly" else {}
    model = create_model(cfg.name, norm=cfg.norm, norm_position=cfg.norm_position, **shape, **cfg.options)
    if not sync_bn:
        return model
    model = convert_sync_batchnorm(model)
    if not any(isinstance(m, SyncBatchNorm) for m in model.modules()):
        raise ConfigError(f"train.sync_bn: model {cfg.name!r} with this norm has no batch norm layer to "
                          "synchronize; it applies to norm batch or batch_torch (turn sync_bn off for the others)")
    return model


def norm_name(config: RunConfig) -> str:
    """The norm the run uses: the configured one, else the model's default ("none" for no norm)."""
    from normlab.models import model_defaults

    return config.model.norm or model_defaults(config.model.name).get("norm") or "none"


def default_out(config: RunConfig, root: str | Path = "runs") -> Path:
    """runs/<model>-<norm>-<timestamp>"""
    return Path(root) / f"{config.model.name}-{norm_name(config)}-{time.strftime('%Y%m%d-%H%M%S')}"


def latest_run(config: RunConfig, root: str | Path = "runs") -> Path | None:
    """The newest run directory of this model and norm that has a checkpoint (what a resume
    continues when no run directory is named)."""
    runs = sorted(Path(root).glob(f"{config.model.name}-{norm_name(config)}-*/checkpoint.pt"))
    return runs[-1].parent if runs else None


def resume_config(out: str | Path | None, model: str | None = None, config_file: str | Path | None = None,
                  sets: dict[str, Any] | None = None, flags: dict[str, Any] | None = None,
                  root: str | Path = "runs") -> tuple[RunConfig, Path]:
    """(config, run directory) to resume: `out`, or else the newest run under `root` of the model
    and norm that model/config_file/sets/flags resolve to (config_mod.resolve's arguments). The
    config is the run's own config.toml with `sets` and `flags` applied, which may change only
    what a resumed run can (config_mod.RESUMABLE: epochs and device)."""
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    run_dir = Path(out) if out else latest_run(config_mod.resolve(model, config_file, sets, flags), root)
    if run_dir is None or not (run_dir / "config.toml").is_file():
        where = run_dir or f"no run directory of this model and norm under {root}/ has a checkpoint"
        raise ConfigError(f"found no run to resume ({where}); name the run directory, or start a new run")
    saved = config_mod.load(run_dir / "config.toml")
    if model and model != saved.model.name:
        raise ConfigError(f"{run_dir} is a run of model {saved.model.name!r}, not {model!r}")
    asked = config_mod.override(config_mod.override(saved, sets or {}), flags)
    changed = config_mod.unresumable_changes(saved, asked)
    if changed:
        raise ConfigError(f"a resumed run keeps its config ({run_dir / 'config.toml'}); only "
                          f"{', '.join(sorted(config_mod.RESUMABLE))} may change, not {', '.join(changed)}")
    return asked, run_dir


def run(config: RunConfig, out: str | Path, resume: bool = False, quiet: bool = False,
        extra_callbacks=()) -> tuple[str, Trainer]:
    """Train as `config` says into run directory `out`; returns (status, trainer).

    status: "finished", "interrupted" (a checkpoint was written; resume continues exactly) or
    "diverged" (DivergenceError: the last good checkpoint is kept). Other errors propagate.
    Under torchrun every process calls this; rank 0 alone writes `out` (`extra_callbacks` run on
    every rank). A callback that runs on rank 0 only must not run the model: DDP's collectives
    would wait for the other ranks.
    """
    with distributed.process_group(config.train.device) as replica:
        return _run(config, Path(out), resume, quiet, extra_callbacks, replica)


def _run(config: RunConfig, out: Path, resume: bool, quiet: bool, extra_callbacks, replica) -> tuple[str, Trainer]:
    if replica.is_main:
        check_out(out)  # before the data loads
    state = _resume_state(out, config, replica) if resume else None
    torch.manual_seed(config.train.seed)  # the model's own init (init="torch") is seeded too
    model = build_model(config.model, config.data.dataset, sync_bn=config.train.sync_bn)
    train_iter, test_iter = build_loaders(config.data, config.train.seed)
    recorder = stats_recorder(config, out)  # checks train.record_every before anything is written
    checkpoint = Checkpoint(out / "checkpoint.pt")
    callbacks = list(extra_callbacks)
    if replica.is_main:
        title = f"{config.model.name}, norm {norm_name(config)}, lr {config.optim.lr}"
        callbacks = [ProgressBar(disable=True if quiet else None), MetricsLog(out / "metrics.jsonl"),
                     *recorder, checkpoint, CurvesPlot(out / "curves.png", title), *callbacks]
    trainer = Trainer(model, train_iter, test_iter, config, callbacks)  # a device that is not there fails here
    if state is not None:
        trainer.load_state_dict(state)
    if replica.is_main:  # the run starts: only now is its directory written
        start_run_dir(out, config, fresh=state is None)
    status, error = "finished", None
    try:
        trainer.run()
    except Interrupted:
        status = "interrupted"
        if replica.is_main:
            checkpoint.save(trainer)
    except DivergenceError as e:
        status, error = "diverged", str(e)
    except distributed.RankLostError as e:
        status, error = "failed", str(e)
    except OSError as e:  # a full disk, a lost mount: the last good checkpoint stays, the summary says why
        if replica.is_main:
            with contextlib.suppress(OSError):
                write_summary(out / "summary.json", config, trainer, "failed", f"{type(e).__name__}: {e}")
        raise
    finally:
        for callback in callbacks:
            if isinstance(callback, ProgressBar):
                callback.close()
    if replica.is_main:
        write_summary(out / "summary.json", config, trainer, status, error)
    if status == "failed":
        raise distributed.RankLostError(error)
    distributed.leave_together(replica)  # finished, interrupted or diverged: every rank is here
    if error is not None:
        raise DivergenceError(error)
    return status, trainer


def check_out(out: Path, what: str = "run directory") -> None:
    """Fail at once, before anything loads, when `out` cannot become a `what` (a file is in the way,
    or the place is not writable)."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} is a file, so it cannot be the {what}; choose another path")
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir():
        raise NotADirectoryError(f"{existing} is a file, so no {what} can be made at {out}; choose another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"{existing} is not writable, so the {what} {out} cannot be written; "
                              "choose a place you can write to")


def start_run_dir(out: Path, config: RunConfig, fresh: bool) -> None:
    """Make `out` ready for the run that starts now: a fresh run removes an earlier run's files (the
    CLI asks for --overwrite first), and half-written temporaries of a killed process go."""
    out.mkdir(parents=True, exist_ok=True)
    for stale in [*out.glob(".*.part"), *([out / name for name in RUN_FILES] if fresh else [])]:
        stale.unlink(missing_ok=True)
    atomic_write_text(out / "config.toml", config_mod.dumps(config))


def _resume_state(out: Path, config: RunConfig, replica) -> dict[str, Any]:
    """The checkpoint to resume from, read on rank 0 (weights_only=True) and sent to every rank;
    a missing or bad file is the same error on every rank."""
    state, error = None, None
    if replica.is_main:
        try:
            state = load_checkpoint(out / "checkpoint.pt", config.model.name)
        except (FileNotFoundError, ValueError) as e:
            error = e
    state, error = distributed.broadcast_object((state, error), replica)
    if error is not None:
        raise error
    return state


def load_trained(run_dir: str | Path) -> tuple[RunConfig, torch.nn.Module]:
    """(config, model) of a run directory: the model rebuilt from config.toml with the checkpoint's
    weights and buffers (loaded with weights_only=True), on the CPU, in eval mode."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no run directory {run_dir}; a run trained into it makes one")
    if not (run_dir / "config.toml").is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory: it has no config.toml "
                                "(`normlab train` and `normlab experiment` write one into every run directory)")
    if not (run_dir / "checkpoint.pt").is_file():
        raise FileNotFoundError(f"{run_dir} has no checkpoint.pt: a run writes it at the end of its first epoch, "
                                "and this one stopped before; train it again for at least one epoch")
    config = config_mod.load(run_dir / "config.toml")
    state = load_checkpoint(run_dir / "checkpoint.pt", config.model.name)
    torch.manual_seed(config.train.seed)
    model = build_model(config.model, config.data.dataset)
    model.load_state_dict(state["model"])
    return config, model.eval()


def recalibration_effect(config: RunConfig, model: torch.nn.Module, method: str = "reset",
                         num_batches: int | None = None, device: str = "auto") -> dict[str, Any] | None:
    """Recalibrate `model`'s batch-norm running statistics on its run's training data
    (normlab.inspect.recalibrate) and evaluate on the test set before and after. Returns
    {"metric": "test acc" or "test mse", "before", "after", "batches" used, "of" available,
    "device"}; None when the model has no batch norm with running statistics. The model
    keeps the new statistics; no file changes."""
    from normlab.inspect import recalibrate
    from normlab.inspect.recalibrate import running_stat_layers
    from normlab.train.loop import evaluate, resolve_device

    if not running_stat_layers(model):
        return None
    device = resolve_device(device)
    model.to(device)
    train_iter, test_iter = build_loaders(config.data, config.train.seed)
    regression = config.data.dataset == "poly"
    before = evaluate(model, test_iter, device, regression=regression)
    recalibrate(model, train_iter, method, num_batches=num_batches, device=device)
    after = evaluate(model, test_iter, device, regression=regression)
    used = len(train_iter) if num_batches is None else min(num_batches, len(train_iter))
    return {"metric": "test mse" if regression else "test acc", "before": before, "after": after,
            "batches": used, "of": len(train_iter), "device": device}


def stats_recorder(config: RunConfig, out: Path) -> list:
    """[StatsRecorder] when the config records statistics (train.record_stats), else []. It goes before
    the checkpoint, so stats.jsonl never lags the checkpoint that a resumed run starts from."""
    if not config.train.record_stats:
        return []
    from normlab.inspect.stats import StatsRecorder
    return [StatsRecorder(out / "stats.jsonl", every=config.train.record_every)]


def write_summary(path: Path, config: RunConfig, trainer: Trainer, status: str, error: str | None) -> None:
    history: History = trainer.history
    key = "test_mse" if trainer.regression else "test_acc"
    best = (min if trainer.regression else max)(history.epochs, key=lambda m: m[key], default=None)
    summary: dict[str, Any] = {
        "status": status, "error": error, "model": config.model.name, "norm": config.model.norm,
        "epochs_done": len(history), "epochs": config.train.epochs, "final": history.epochs[-1] if history.epochs else None,
        f"best_{key}": best[key] if best else None, "best_epoch": best["epoch"] if best else None,
        "parameters": sum(p.numel() for p in trainer.model.parameters()),
        "device": str(trainer.device), "world_size": trainer.replica.world_size,
        "torch": torch.__version__, "normlab": __version__, "python": platform.python_version(),
    }
    atomic_write_text(path, json.dumps(summary, indent=2) + "\n")
