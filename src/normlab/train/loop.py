"""One training loop for classification and regression: the book's `train_ch6`, made exact and resumable.

    for epoch:                       train_iter reshuffles from (seed, epoch)
        for batch:                   forward, loss, backward, step, schedule (per step)
                                     callbacks.on_step_start / on_after_backward / on_step_end
        evaluate                     test_acc (classification) or test_mse (regression)
        callbacks.on_epoch_end       metrics log, checkpoint, curves: chosen by the caller

`train` returns the History and prints nothing; the CLI picks the callbacks and the files.
Everything that decides the numbers (weights, optimizer, schedule, RNG states, the position in
the epoch, the running sums) is in `Trainer.state_dict()`, so a run resumed from a checkpoint,
even one written mid-epoch, ends with the same weights and metrics as an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import inspect
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from normlab.train import distributed
from normlab.train.config import ConfigError, RunConfig

TRAIN_KEYS = ("epoch", "train_loss", "train_acc", "test_acc", "test_mse", "examples_per_sec",
              "train_seconds", "epoch_seconds", "lr")


class DivergenceError(RuntimeError):
    """The loss became NaN or infinite, or rose above the divergence bound (see
    `Trainer.check_divergence`); the run stops and the last good checkpoint stays."""


class Interrupted(Exception):
    """A stop was requested (Ctrl-C); raised at a batch boundary, where the state is consistent."""


# ---------------------------------------------------------------- set-up helpers

def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks cuda, then mps, then cpu."""
    if name != "auto":
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for, but torch sees no CUDA device; use device 'cpu' or 'auto'")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every RNG state, as tensors and plain values (so checkpoints load with weights_only=True)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def init_weights(model: nn.Module, scheme: str = "xavier") -> None:
    """`xavier`: the book's xavier_uniform_ on every Conv and Linear weight; `torch`: leave torch's init."""
    if scheme == "torch":
        return
    if scheme != "xavier":
        raise ValueError(f"unknown init {scheme!r}; choose one of: xavier, torch")
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            nn.init.xavier_uniform_(m.weight)


OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("none", "step", "cosine")


def make_optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    """The optimizer `cfg` names over `model`'s parameters. With `decay_vectors=False`, weight decay
    spares the 1-D parameters (biases, and the norms' γ and β), a common refinement."""
    params = list(model.parameters())
    if cfg.weight_decay and not cfg.decay_vectors:
        params = [{"params": [p for p in params if p.dim() > 1]},
                  {"params": [p for p in params if p.dim() <= 1], "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    if cfg.optimizer in ("adam", "adamw"):
        cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
        return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}")


def lr_factor(cfg, step: int, steps_per_epoch: int, epochs: int) -> float:
    """The schedule's multiplier of the base lr before optimizer step `step` (0-based, per batch).

        warm-up   t < W:  (t + 1) / W
        step      gamma ** (epoch // step_epochs)
        cosine    ½ (1 + cos(π · (t − W) / (T − W)))     → 0 at the last step T
    """
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return (step + 1) / warmup
    if cfg.schedule == "none":
        return 1.0
    if cfg.schedule == "step":
        return cfg.step_gamma ** ((step // steps_per_epoch) // cfg.step_epochs)
    if cfg.schedule == "cosine":
        total = max(epochs * steps_per_epoch - warmup, 1)
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / total))
    raise ValueError(f"unknown schedule {cfg.schedule!r}; choose one of: {', '.join(SCHEDULES)}")


# ---------------------------------------------------------------- the loop

@dataclass
class History:
    """Per-epoch metrics, and the train-curve points the book's Animator draws (5 per epoch)."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    points: list[dict[str, float]] = field(default_factory=list)  # {"x": epoch + fraction, train_loss, train_acc}

    def __getitem__(self, i):
        return self.epochs[i]

    def __len__(self) -> int:
        return len(self.epochs)

    @property
    def last(self) -> dict[str, float]:
        return self.epochs[-1]


def overall_examples_per_sec(epochs: list[dict[str, float]]) -> float | None:
    """Examples/sec over all of a run's training steps, from its per-epoch rates.

    Every epoch trains on the same number of examples, so the total rate is the harmonic mean
    n / Σ(1/rate), what the book's closing line prints. None when no epoch has a rate.
    """
    rates = [e["examples_per_sec"] for e in epochs if e.get("examples_per_sec")]
    return len(rates) / sum(1 / r for r in rates) if rates else None


class Trainer:
    """Holds everything a run needs; `run()` trains to `config.train.epochs`. See `train`."""

    def __init__(self, model: nn.Module, train_iter, test_iter, config: RunConfig, callbacks=()):
        self.config, self.callbacks = config, list(callbacks)
        self.replica = replica = distributed.current()  # rank 0 of 1 unless under torchrun
        if replica.distributed:
            distributed.check_batch_size(config.data.batch_size, replica)
        self.train_iter, self.test_iter = (distributed.shard(it, replica) for it in (train_iter, test_iter))
        self.device = distributed.replica_device(resolve_device(config.train.device), replica)
        self.regression = config.data.dataset == "poly"
        _check_divergence_bound(config.train)
        seed_everything(config.train.seed)
        init_weights(model, config.train.init)
        if config.train.sync_bn:
            _check_sync_batchnorm(model)
        memory_format = torch.channels_last if config.train.channels_last else torch.preserve_format
        self.model = model.to(self.device, memory_format=memory_format)
        self.forward = self.model
        if replica.distributed:  # gradients averaged over ranks; plain BN buffers follow rank 0's
            self.forward = _ddp(self.model, self.device, sync_buffers=not config.train.sync_bn)
            if replica.rank:  # own dropout masks per rank; rank 0 keeps a single process's stream
                torch.manual_seed(config.train.seed * 1_000_003 + replica.rank)
        self.forward = torch.compile(self.forward) if config.train.compile else self.forward
        self.optimizer = make_optimizer(self.model, config.optim)
        steps, epochs = len(train_iter), config.train.epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda t: lr_factor(config.optim, t, steps, epochs))
        self.loss_fn = nn.MSELoss() if self.regression else nn.CrossEntropyLoss(label_smoothing=config.optim.label_smoothing)
        self.autocast, self.scaler = self._amp(config.train.amp)
        self.history = History()
        self.first_loss: float | None = None  # the run's first step loss: the divergence bound's base
        self.epoch, self.step = 0, 0      # the next batch to run: epoch `epoch`, batch `step`
        self.sums = self._zero_sums()     # running sums of the current epoch
        self.stop_requested = False       # set by a signal handler or a callback
        self._stop_agreed = False         # ...and agreed by all ranks (so they stop at the same batch)
        self._rank_rng: list | None = None  # every rank's RNG state, gathered for a checkpoint

    def _amp(self, amp: str):
        if amp == "none":
            return contextlib.nullcontext, None
        dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
        if amp not in dtypes:
            raise ValueError(f"unknown amp {amp!r}; choose one of: none, {', '.join(dtypes)}")
        if self.device.type != "cuda":
            raise ValueError(f"amp {amp!r} needs a CUDA device (autocast), this run is on {self.device}; "
                             "set train.amp to 'none', or train.device to 'cuda'")
        scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None
        return (lambda: torch.autocast("cuda", dtype=dtypes[amp])), scaler

    @staticmethod
    def _zero_sums() -> dict[str, float]:
        return {"loss": 0.0, "correct": 0.0, "count": 0, "step_seconds": 0.0, "train_seconds": 0.0}

    # -------------------------------------------------- state, for checkpoints and resume

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler else None,
                "rng": rng_state(), **({"rng_ranks": self._rank_rng} if self._rank_rng else {}),
                "epoch": self.epoch, "step": self.step, "sums": dict(self.sums), "first_loss": self.first_loss,
                "history": {"epochs": self.history.epochs, "points": self.history.points}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        ranks = state.get("rng_ranks") or [state["rng"]]
        if self.replica.rank < len(ranks):  # a new rank (more processes than the run had) keeps its own seed
            set_rng_state(ranks[self.replica.rank])
        self.epoch, self.step, self.sums = state["epoch"], state["step"], dict(state["sums"])
        self.first_loss = state.get("first_loss")  # absent before issue 16: the next step's loss
        self.history = History(list(state["history"]["epochs"]), list(state["history"]["points"]))

    # -------------------------------------------------- running

    def run(self) -> History:
        self._call("on_train_start")
        try:
            while self.epoch < self.config.train.epochs:
                epoch_start = time.perf_counter() - self.sums["train_seconds"]
                self.train_epoch()
                metrics = self._epoch_metrics(epoch_start)
                self.history.epochs.append(metrics)
                self.epoch, self.step, self.sums = self.epoch + 1, 0, self._zero_sums()
                self._gather_rng()
                self._call("on_epoch_end", metrics)
        except (Interrupted, DivergenceError) as e:
            if isinstance(e, Interrupted):
                self._gather_rng()  # for the checkpoint the caller writes; every rank stops at the same batch
            self._call("on_train_end")  # a stop or a divergence ends the run too: callbacks flush what they hold
            raise
        self._call("on_train_end")
        return self.history

    def train_epoch(self) -> dict[str, float]:
        """Train from the current position to the end of epoch `self.epoch`; returns the running sums
        (loss, correct, count, step_seconds, train_seconds). Evaluation and callbacks' epoch hooks are run()'s."""
        self.model.train()
        self.train_iter.set_epoch(self.epoch, start_batch=self.step)
        n_batches = len(self.train_iter)
        marks = _point_marks(n_batches, self.config.train.points_per_epoch)
        t_load = time.perf_counter()
        for X, y in self.train_iter:
            self.sums["train_seconds"] += time.perf_counter() - t_load
            self._call("on_step_start")
            with self._collectives(f"epoch {self.epoch + 1}, step {self.step + 1}"):
                self._train_step(X, y)
            self.step += 1
            if self.step in marks:
                self.history.points.append(self._point(self.epoch + self.step / n_batches))
            self._call("on_step_end")
            t_load = time.perf_counter()
            if self._stop_now() and self.step < n_batches:
                raise Interrupted(f"stopped at epoch {self.epoch + 1}, batch {self.step} of {n_batches}")
        return self.sums

    def _train_step(self, X: torch.Tensor, y: torch.Tensor) -> None:
        t0 = time.perf_counter()
        X, y = self._to_device(X), y.to(self.device, non_blocking=True)
        with self.autocast(), _explain_single_value_batches(len(y)):
            y_hat = self.forward(X)
            loss = self.loss_fn(y_hat, y)  # the mean over this process's examples
        n = len(y)
        loss_sum = loss.item() * n if n else 0.0
        correct = 0.0 if self.regression else float((y_hat.argmax(dim=1) == y).sum())
        if self.replica.distributed:  # sums over all ranks; the loss so that DDP's average is the global mean's gradient
            n_all, loss_sum, correct = self._reduce_step(n, loss_sum, correct)
            loss = loss * (self.replica.world_size * n / n_all) if n else y_hat.sum() * 0.0
            n = n_all
        self.check_divergence(loss_sum / n)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)  # true gradients for the hook; step() will not unscale twice
        self._call("on_after_backward")           # gradients ready, weights not yet updated
        if self.scaler is None:
            self.optimizer.step()
        else:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.scheduler.step()
        self.sums["loss"] += loss_sum
        self.sums["correct"] += correct
        self.sums["count"] += n
        elapsed = time.perf_counter() - t0
        self.sums["step_seconds"] += elapsed
        self.sums["train_seconds"] += elapsed

    def check_divergence(self, loss: float) -> None:
        """Raise DivergenceError, before the step updates anything, when this step's loss (over
        all ranks) is NaN or infinite, or above the bound: train.max_loss if set, else
        train.diverge_factor × the run's first step loss (0: no bound). A run can diverge
        without a NaN: saturated sigmoids keep the loss finite at 1e13 (lr 1e12)."""
        cfg = self.config.train
        if math.isfinite(loss):
            if self.first_loss is None:
                self.first_loss = loss
            bound = cfg.max_loss if cfg.max_loss is not None else cfg.diverge_factor * self.first_loss
            if not (bound > 0 and loss > bound):
                return  # every sane step ends here: the message below is made only for a divergence
            source = ("train.max_loss" if cfg.max_loss is not None else
                      f"{cfg.diverge_factor:g} × the first step's loss {self.first_loss:.4g}; train.diverge_factor")
            what = f"rose to {loss:.4g}, above the divergence bound {bound:.4g} ({source}),"
        else:
            what = f"became {loss}"
        raise DivergenceError(
            f"the loss {what} at epoch {self.epoch + 1}, step {self.step + 1} "
            f"(lr {self.optimizer.param_groups[0]['lr']:.4g}); the run stopped before this step's update. "
            "Lower the learning rate (optim.lr) and train again.")

    def _reduce_step(self, n: int, loss_sum: float, correct: float) -> tuple[int, float, float]:
        """(examples, loss sum, correct) summed over the ranks, and whether any rank asked to stop."""
        n_all, loss_sum, correct, stops = distributed.all_reduce_sum([n, loss_sum, correct, float(self.stop_requested)])
        self._stop_agreed = stops > 0
        return int(n_all), loss_sum, correct

    def _stop_now(self) -> bool:
        return self._stop_agreed if self.replica.distributed else self.stop_requested

    def _collectives(self, what: str):
        """A failed collective (another rank gone) becomes a RankLostError naming `what`."""
        return distributed.lost_rank_explained(what) if self.replica.distributed else contextlib.nullcontext()

    def _gather_rng(self) -> None:
        if self.replica.distributed:
            self._rank_rng = distributed.gather_objects(rng_state(), self.replica)

    def _to_device(self, X: torch.Tensor) -> torch.Tensor:
        X = X.to(self.device, non_blocking=True)
        if self.config.train.channels_last and X.dim() == 4:
            X = X.contiguous(memory_format=torch.channels_last)
        return X

    def _point(self, x: float) -> dict[str, float]:
        s = self.sums
        point = {"x": round(x, 6), "train_loss": s["loss"] / s["count"]}
        if not self.regression:
            point["train_acc"] = s["correct"] / s["count"]
        return point

    def _epoch_metrics(self, epoch_start: float) -> dict[str, float]:
        s = self.sums
        metrics = {"epoch": self.epoch + 1, "train_loss": s["loss"] / s["count"]}
        reduce = self.replica.distributed
        with self._collectives(f"the evaluation after epoch {self.epoch + 1}"):
            if self.regression:
                metrics["test_mse"] = evaluate(self.forward, self.test_iter, self.device, regression=True, reduce=reduce)
            else:
                metrics["train_acc"] = s["correct"] / s["count"]
                metrics["test_acc"] = evaluate(self.forward, self.test_iter, self.device, autocast=self.autocast,
                                               reduce=reduce)
        metrics.update(examples_per_sec=s["count"] / s["step_seconds"], train_seconds=s["train_seconds"],
                       epoch_seconds=time.perf_counter() - epoch_start,
                       lr=self.optimizer.param_groups[0]["lr"])
        return metrics

    def _call(self, hook: str, *args) -> None:
        for callback in self.callbacks:
            getattr(callback, hook, lambda *a: None)(self, *args)


def _check_divergence_bound(cfg) -> None:
    if not (cfg.diverge_factor == 0 or cfg.diverge_factor > 1):
        raise ConfigError(f"train.diverge_factor must be above 1 (a step loss that many times the first "
                          f"step's has diverged; 100 by default) or 0 for no bound, got {cfg.diverge_factor}")
    if cfg.max_loss is not None and not cfg.max_loss > 0:
        raise ConfigError(f"train.max_loss must be a positive loss (or unset), got {cfg.max_loss}")


def _ddp(model: nn.Module, device: torch.device, sync_buffers: bool) -> nn.Module:
    """DistributedDataParallel; `sync_buffers`: copy rank 0's buffers (BN running statistics) before each
    forward, torch's default (SyncBatchNorm keeps them identical by itself)."""
    DDP = torch.nn.parallel.DistributedDataParallel
    # torch >= 2.13 names the option forward_sync_buffers and deprecates broadcast_buffers
    option = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DDP).parameters else "broadcast_buffers"
    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None, **{option: sync_buffers})


def _check_sync_batchnorm(model: nn.Module) -> None:
    """train.sync_bn asks for batch statistics over all ranks: the model must have been built so."""
    from normlab.nn import SyncBatchNorm

    if not any(isinstance(m, SyncBatchNorm) for m in model.modules()):
        raise ValueError("train.sync_bn is set, but the model has no SyncBatchNorm: build it with "
                         "normlab.run.build_model(..., sync_bn=True) or convert it with "
                         "normlab.nn.convert_sync_batchnorm(model)")


@contextlib.contextmanager
def _explain_single_value_batches(batch_size: int):
    """Batch norm cannot normalize one value per channel; say why, and what to do, in the user's terms."""
    try:
        yield
    except ValueError as e:
        if "Expected more than 1 value per channel" not in str(e):
            raise
        raise ValueError(
            f"{e}. A training batch of {batch_size} gives batch norm a single value per channel, whose "
            "variance is 0. Use a batch size > 1; if only the last batch is that small, drop it with "
            "data.drop_last = true.") from None


def _point_marks(n_batches: int, per_epoch: int) -> set[int]:
    """Batch counts after which a curve point is taken: every n/per_epoch batches and the last (the book's rule)."""
    every = max(n_batches // per_epoch, 1)
    return {i for i in range(1, n_batches + 1) if i % every == 0} | {n_batches}


@torch.no_grad()
def evaluate(model, data_iter, device=None, regression: bool = False, autocast=contextlib.nullcontext,
             reduce: bool = False) -> float:
    """Accuracy (classification) or mean squared error (regression) over `data_iter`, in eval mode;
    `reduce`: over every rank's part of the data (each process evaluates its shard)."""
    module = getattr(model, "_orig_mod", model)
    was_training = module.training
    module.eval()
    total, count = 0.0, 0
    for X, y in data_iter:
        X, y = X.to(device), y.to(device)
        with autocast():
            y_hat = model(X)
        if regression:
            total += float(((y_hat.float() - y) ** 2).sum())
        else:
            total += float((y_hat.argmax(dim=1) == y).sum())
        count += y.numel()
    module.train(was_training)
    if reduce:
        total, count = distributed.all_reduce_sum([total, count])
    return total / count


def train(model: nn.Module, train_iter, test_iter, config: RunConfig, callbacks=(), resume: dict | None = None) -> History:
    """Train `model` as `config` says and return its History (per-epoch metrics and curve points).

    `resume`: a `Trainer.state_dict()` (a checkpoint), from which the run continues exactly.
    """
    trainer = Trainer(model, train_iter, test_iter, config, callbacks)
    if resume is not None:
        trainer.load_state_dict(resume)
    return trainer.run()
