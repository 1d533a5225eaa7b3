"""What happens inside the norm layers while a model trains: γ/β, running statistics, the norms'
inputs and every layer's gradient norm, recorded to `stats.jsonl` in the run directory.

`StatsRecorder` is the Trainer callback behind `normlab train --record-stats` (or
`train.record_stats = true` in a config or an experiment spec). Every `record_every` optimizer
steps it writes a "step" record, and at every epoch end an "epoch" record, one JSON object a line:

    {"kind": "step", "step": 50, "epoch": 0.2128,    optimizer steps done; epochs done (fractional)
     "norms": {"1": {"type": "BatchNorm2d",          every norm layer, by module name (net[1])
                     "gamma": S, "beta": S,          when the layer is affine
                     "running_mean": S, "running_var": S,     when the layer keeps them
                     "input_mean": S, "input_std": S}},       per channel; step records only
     "grad_norm": {"0": 0.031, "1": 0.004, ...}}     ‖∂loss/∂weight‖₂ of every layer with a weight;
                                                     step records only
    S = {"mean", "std", "min", "max": over the channels, "values": the full vector}

A channel is dim 1 of the layer's input, as batch norm counts them: (N, C, H, W) gives C means,
each over N·H·W values; input_std is the biased (population) std, the one batch norm divides by.
Input statistics and gradients are the recorded step's own (its forward, its backward, before the
update); γ, β and the running statistics are read after its update. The forward pre-hooks that
see the norms' inputs exist only during a recorded step's forward: other steps run as without
recording. With train.compile, recorded steps run the uncompiled module (a compiled graph does
not run hooks added after compiling), so their numbers can differ from compiled ones by rounding.
D2LBatchNorm's gamma, beta, moving_mean and moving_var are recorded under the same keys (its
moving_var is the biased one).

The file is rewritten whole and atomically at every epoch end and when the run ends (finished,
stopped by Ctrl-C, or diverged), always before the checkpoint is written. A resumed run first drops
the records past its checkpoint's position; training from there is exact, so it writes them again,
identically: a stopped (or killed) and resumed run ends with the same records as an uninterrupted
one, none twice, none lost. A diverged run keeps the records up to its last good step.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from normlab._io import atomic_write_text
from normlab.nn import NORM_TYPES, D2LBatchNorm, is_norm

__all__ = ["NORM_TYPES", "StatsRecorder", "norm_layers", "weighted_layers", "affine_params",
           "running_stats", "describe_norms", "read_stats", "module_path"]

# NORM_TYPES (normlab.nn's registry): what counts as a norm layer here. γ, β and running_mean /
# running_var are read where a layer keeps them (whitening's running matrix and rank-Gauss's
# quantiles are not read).


# ---------------------------------------------------------------- what a model holds

def norm_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every normalization layer in `model`, in module order."""
    return [(name, m) for name, m in model.named_modules() if is_norm(m)]


def module_path(name: str) -> str:
    """How to reach a module from the model, as the seeds wrote it: "1" -> net[1], "b2.0.bn1" -> net.b2[0].bn1."""
    return "net" + "".join(f"[{part}]" if part.isdigit() else f".{part}" for part in name.split(".")) if name else "net"


def weighted_layers(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, weight) of every module that owns a weight (D2LBatchNorm's is gamma), in module order."""
    layers = []
    for name, m in model.named_modules():
        own = dict(m.named_parameters(recurse=False))
        weight = own.get("gamma" if isinstance(m, D2LBatchNorm) else "weight")
        if weight is not None:
            layers.append((name, weight))
    return layers


def affine_params(m: nn.Module) -> tuple[Tensor | None, Tensor | None]:
    """γ and β as flat vectors (None for a layer without them)."""
    if isinstance(m, D2LBatchNorm):
        return m.gamma.detach().reshape(-1), m.beta.detach().reshape(-1)
    weight, bias = getattr(m, "weight", None), getattr(m, "bias", None)
    return (None if weight is None else weight.detach().reshape(-1),
            None if bias is None else bias.detach().reshape(-1))


def running_stats(m: nn.Module) -> tuple[Tensor | None, Tensor | None]:
    """(running_mean, running_var) as flat vectors; None when the layer keeps none."""
    if isinstance(m, D2LBatchNorm):
        return m.moving_mean.reshape(-1), m.moving_var.reshape(-1)
    mean, var = getattr(m, "running_mean", None), getattr(m, "running_var", None)
    return (None if mean is None else mean.reshape(-1), None if var is None else var.reshape(-1))


def num_channels(m: nn.Module) -> int:
    """The layer's channel count (LayerNorm: the number of normalized elements)."""
    for name in ("num_features", "num_channels"):
        if hasattr(m, name):
            return int(getattr(m, name))
    if hasattr(m, "normalized_shape"):
        return math.prod(m.normalized_shape)
    return m.gamma.shape[1]  # D2LBatchNorm: (1, C) or (1, C, 1, 1)


def summarize(t: Tensor) -> dict[str, Any]:
    """{"mean", "std", "min", "max"} over the vector (std: population), and "values": the vector."""
    v = t.detach().float().reshape(-1)
    mean, std, lo, hi = torch.stack([v.mean(), v.std(correction=0), v.min(), v.max()]).tolist()
    return {"mean": mean, "std": std, "min": lo, "max": hi, "values": v.tolist()}


def describe_norms(model: nn.Module) -> list[dict[str, Any]]:
    """One row per norm layer: name, type, channels and the means of γ, β and the running stats
    (with γ's and β's std over the channels); None where a layer has no such tensor."""
    rows = []
    for name, m in norm_layers(model):
        gamma, beta = affine_params(m)
        mean, var = running_stats(m)
        rows.append({"name": name, "type": type(m).__name__, "channels": num_channels(m),
                     "gamma_mean": _mean(gamma), "gamma_std": _std(gamma),
                     "beta_mean": _mean(beta), "beta_std": _std(beta),
                     "running_mean": _mean(mean), "running_var": _mean(var)})
    return rows


def _mean(t: Tensor | None) -> float | None:
    return None if t is None else t.float().mean().item()


def _std(t: Tensor | None) -> float | None:
    return None if t is None else t.float().std(correction=0).item()


def read_stats(path: str | Path) -> list[dict[str, Any]]:
    """The records of a stats.jsonl file ([] when there is none)."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not a stats.jsonl that normlab wrote ({e}); "
                         "remove it, or train again with train.record_stats on") from None


# ---------------------------------------------------------------- the callback

class StatsRecorder:
    """Record the norms' state, their inputs and the gradient norms to `path` (stats.jsonl).

    `every`: record every this many optimizer steps (counted over the whole run), and at each epoch end.
    """

    def __init__(self, path: str | Path, every: int = 50):
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ValueError(f"train.record_every takes a positive number of steps, got {every!r}")
        self.path, self.every = Path(path), every
        self.records: list[dict[str, Any]] = []
        self.recording = False
        self._handles, self._inputs, self._grads = [], {}, {}
        self._saved_forward = None  # the trainer's (maybe compiled) forward while a recorded step runs eagerly

    def steps_done(self, trainer) -> int:
        """Optimizer steps done over the whole run."""
        return trainer.epoch * len(trainer.train_iter) + trainer.step

    # -------------------------------------------------- Trainer hooks

    def on_train_start(self, trainer) -> None:
        done = self.steps_done(trainer)  # > 0 when resumed: keep what the checkpoint had seen
        self.records = [r for r in read_stats(self.path) if r["step"] <= done] if done else []
        self.write()

    def on_step_start(self, trainer) -> None:
        self.recording = (self.steps_done(trainer) + 1) % self.every == 0
        if self.recording:
            self._inputs, self._grads = {}, {}
            self._handles = [m.register_forward_pre_hook(self._input_hook(name))
                             for name, m in norm_layers(trainer.model)]
            # a torch.compile'd graph runs no hooks registered after compiling: this step runs eagerly,
            # through what was compiled (the model, or its DistributedDataParallel wrapper under torchrun)
            eager = getattr(trainer.forward, "_orig_mod", trainer.forward)
            self._saved_forward, trainer.forward = trainer.forward, eager

    def on_after_backward(self, trainer) -> None:
        if not self.recording:
            return
        self._end_recorded_forward(trainer)  # the forward is over
        layers = [(name, w) for name, w in weighted_layers(trainer.model) if w.grad is not None]
        if layers:
            norms = torch.stack([torch.linalg.vector_norm(w.grad.detach().float()) for _, w in layers])
            self._grads = dict(zip((name for name, _ in layers), norms.tolist()))

    def on_step_end(self, trainer) -> None:
        if self.recording:
            self.records.append(self._record(trainer, "step"))
            self.recording = False

    def on_epoch_end(self, trainer, metrics) -> None:
        self.records.append(self._record(trainer, "epoch"))
        self.write()

    def on_train_end(self, trainer) -> None:  # also on a stop (Ctrl-C) or a divergence
        self._end_recorded_forward(trainer)
        self.recording = False
        self.write()

    # -------------------------------------------------- records

    def write(self) -> None:
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.records))

    def _input_hook(self, name: str):
        def hook(module, args):
            x = args[0].detach()
            if x.dim() >= 2:  # (N, C, *) -> (C, N·*): one row of values per channel
                x = x.transpose(0, 1).reshape(x.shape[1], -1).float()
                self._inputs[name] = (x.mean(dim=1), x.std(dim=1, correction=0))
        return hook

    def _end_recorded_forward(self, trainer) -> None:
        """Remove the input hooks and give the trainer its own forward back."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if self._saved_forward is not None:
            trainer.forward, self._saved_forward = self._saved_forward, None

    def _record(self, trainer, kind: str) -> dict[str, Any]:
        done = self.steps_done(trainer)
        record = {"kind": kind, "step": done, "epoch": round(done / len(trainer.train_iter), 6),
                  "norms": {name: self._norm_state(name, m, kind) for name, m in norm_layers(trainer.model)}}
        if kind == "step":
            record["grad_norm"] = self._grads
        return record

    def _norm_state(self, name: str, m: nn.Module, kind: str) -> dict[str, Any]:
        state: dict[str, Any] = {"type": type(m).__name__}
        gamma, beta = affine_params(m)
        mean, var = running_stats(m)
        tensors = {"gamma": gamma, "beta": beta, "running_mean": mean, "running_var": var}
        if kind == "step" and name in self._inputs:
            tensors["input_mean"], tensors["input_std"] = self._inputs[name]
        state.update({key: summarize(t) for key, t in tensors.items() if t is not None})
        return state
