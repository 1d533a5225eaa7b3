"""An experiment spec: one TOML file -> a list of named runs (grid × variants × seeds).

    name = "bn_layers"                        the experiment's name (default: the file's stem)
    description = "..."                       one paragraph for the report
    seeds = [0, 1, 2]                         one run per seed for every variant and grid point
    metrics = ["test_acc", "best_test_acc"]   the report's columns (default: by task, see METRICS)
    baseline = "all"                          the variant the report's verdicts compare against (default: the first)

    [data] [model] [optim] [train]            the base run config, as in `normlab train --config`
    [grid]                                    config key -> list of values; the runs cover every combination
    lr = [0.5, 1.0]
    [variants]                                name -> overrides; one group of runs per variant
    all = {}
    only_2_4 = {"model.options.norm_slots" = [2, 4]}
    [scale.quick]                             overrides for `--scale quick` (also `seeds`)
    train_subset = 2000
    [scale.quick.variants.alexnet]            overrides for one variant at that scale
    resize = 193

Each run's config resolves, later wins: the dataclass defaults, the book settings of the run's
model (`normlab models`), the base sections, the grid point, the variant, the scale, the scale's
per-variant overrides, and the seed (`train.seed`). Every key is checked against the run config's
fields, so a typo fails before anything trains.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from normlab.train import config as cfg
from normlab.train.config import ConfigError, RunConfig

PRESETS = Path(__file__).with_name("presets")
TOP_KEYS = ("name", "description", "seeds", "metrics", "baseline", "data", "model", "optim", "train",
            "grid", "variants", "scale")
SCALES = ("quick", "full")
SCALE_KEYS = ("seeds", "variants")   # besides config keys
# the report's columns: a final value (last epoch), a best value (over epochs), a throughput
METRICS = ("test_acc", "best_test_acc", "test_mse", "best_test_mse", "train_loss", "train_acc",
           "examples_per_sec", "epoch_seconds")
DEFAULT_METRICS = {"classification": ("test_acc", "best_test_acc", "train_loss", "examples_per_sec"),
                   "regression": ("test_mse", "best_test_mse", "train_loss", "examples_per_sec")}


class SpecError(ConfigError):
    """A spec that does not fit; the message names the file and lists what would."""


@dataclass(frozen=True)
class Run:
    """One run of an experiment: `group` is what seeds are averaged over (variant and grid point)."""
    name: str
    group: str
    variant: str
    point: dict[str, Any]
    seed: int
    config: RunConfig


@dataclass(frozen=True)
class Spec:
    name: str
    description: str = ""
    base: dict[str, dict[str, Any]] = field(default_factory=dict)  # {section: {name: value}}
    grid: dict[str, list] = field(default_factory=dict)
    variants: dict[str, dict[str, Any]] = field(default_factory=lambda: {"base": {}})
    seeds: tuple[int, ...] = (0,)
    metrics: tuple[str, ...] = ()
    scales: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str = ""                 # the file it came from, for messages and the report
    baseline: str = ""               # the variant that the verdicts compare against; "" is the first

    def __post_init__(self):
        if not self.baseline:
            object.__setattr__(self, "baseline", next(iter(self.variants)))

    def report_metrics(self, regression: bool) -> tuple[str, ...]:
        """The spec's metrics, else the task's defaults (test MSE for the regression task)."""
        return self.metrics or DEFAULT_METRICS["regression" if regression else "classification"]


def list_presets() -> list[str]:
    """The shipped studies (`normlab experiment --list`)."""
    return sorted(p.stem for p in PRESETS.glob("*.toml"))


def spec_path(name_or_path: str | Path) -> Path:
    """A spec file: an existing path, else a shipped preset of that name."""
    path = Path(name_or_path)
    if path.is_file() or path.suffix == ".toml":
        return path
    if str(name_or_path) in list_presets():
        return PRESETS / f"{name_or_path}.toml"
    raise SpecError(f"no spec file or preset {str(name_or_path)!r}; the presets are: {', '.join(list_presets())}")


def load_spec(name_or_path: str | Path) -> Spec:
    """Read and check a spec file (or a preset name); errors name the file."""
    path = spec_path(name_or_path)
    try:
        data = cfg.tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"spec file {path} not found; the presets are: {', '.join(list_presets())}") from None
    except cfg.tomllib.TOMLDecodeError as e:
        raise SpecError(f"{path}: not valid TOML: {e}") from None
    try:
        preset = path.parent == PRESETS and path.stem == str(name_or_path)
        return parse_spec(data, default_name=path.stem, source=f"preset {path.stem}" if preset else str(path))
    except ConfigError as e:
        raise SpecError(f"{path}: {e}") from None


def parse_spec(data: dict[str, Any], default_name: str = "experiment", source: str = "") -> Spec:
    """A Spec from a parsed TOML document; every key and value is checked here, before any run."""
    unknown = [k for k in data if k not in TOP_KEYS]
    if unknown:
        raise SpecError(f"unknown spec key {unknown[0]!r}; valid keys: {', '.join(TOP_KEYS)}")
    base = {s: data[s] for s in cfg.SECTIONS if s in data}
    try:
        cfg.from_dict(base)  # the base sections' keys and types
    except ConfigError as e:
        raise SpecError(str(e)) from None
    grid = _table(data, "grid")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SpecError(f"grid axis {key!r} takes a non-empty list of values, got {values!r}")
        for value in values:
            _check_overrides({key: value}, f"grid axis {key!r}")
    variants = _table(data, "variants") or {"base": {}}
    for name, overrides in variants.items():
        if not isinstance(overrides, dict):
            raise SpecError(f"variant {name!r} takes a table of overrides, got {overrides!r}")
        _check_overrides(overrides, f"variant {name!r}")
    scales = _table(data, "scale")
    for scale, overrides in scales.items():
        _check_scale(scale, overrides, variants)
    spec = Spec(name=str(data.get("name", default_name)), description=str(data.get("description", "")),
                base=base, grid=grid, variants=variants, seeds=_seeds(data.get("seeds", [0]), "seeds"),
                metrics=tuple(data.get("metrics", ())), scales=scales, source=source,
                baseline=str(data.get("baseline", "")))
    if spec.baseline not in variants:
        raise SpecError(f"baseline {spec.baseline!r} is not a variant; the variants are: {', '.join(variants)}")
    bad = [m for m in spec.metrics if m not in METRICS]
    if bad:
        raise SpecError(f"unknown metric {bad[0]!r}; valid metrics: {', '.join(METRICS)}")
    return spec


def _table(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise SpecError(f"[{key}] must be a table, got {value!r}")
    return value


def _seeds(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(s, int) and not isinstance(s, bool) for s in value):
        raise SpecError(f"{where} takes a non-empty list of integers, got {value!r}")
    return tuple(value)


def _check_overrides(overrides: dict[str, Any], where: str) -> None:
    try:
        cfg.override(RunConfig(), overrides)
    except ConfigError as e:
        raise SpecError(f"{where}: {e}") from None


def _check_scale(scale: str, overrides: Any, variants: dict[str, Any]) -> None:
    if scale not in SCALES:
        raise SpecError(f"unknown scale [scale.{scale}]; valid scales: {', '.join(SCALES)}")
    if not isinstance(overrides, dict):
        raise SpecError(f"[scale.{scale}] must be a table, got {overrides!r}")
    if "seeds" in overrides:
        _seeds(overrides["seeds"], f"[scale.{scale}] seeds")
    _check_overrides({k: v for k, v in overrides.items() if k not in SCALE_KEYS}, f"[scale.{scale}]")
    for name, extra in overrides.get("variants", {}).items():
        if name not in variants:
            raise SpecError(f"[scale.{scale}.variants.{name}]: no variant {name!r}; "
                            f"the variants are: {', '.join(variants)}")
        _check_overrides(extra, f"[scale.{scale}.variants.{name}]")


def _layers_model(layers: list[dict[str, Any]]) -> str:
    """The model the run ends up with (the last layer that names one wins)."""
    name = RunConfig().model.name
    for layer in layers:
        for key, value in layer.items():
            if key in ("model.name", "name"):
                name = value
    return name


def build_config(layers: list[dict[str, Any]]) -> RunConfig:
    """Defaults -> the run's model's book settings -> each layer of overrides in turn."""
    model = _layers_model(layers)
    config = cfg.override(RunConfig(), {"model.name": model, **cfg.book_settings(model)})
    for layer in layers:
        config = cfg.override(config, layer)
    return config


def expand(spec: Spec, scale: str = "full") -> list[Run]:
    """Every run of `spec` at `scale`: variants × grid points × seeds, in that order."""
    if scale not in SCALES:
        raise SpecError(f"unknown scale {scale!r}; choose one of: {', '.join(SCALES)}")
    scaled = dict(spec.scales.get(scale, {}))
    seeds = _seeds(scaled["seeds"], "seeds") if "seeds" in scaled else spec.seeds
    per_variant = scaled.pop("variants", {})
    scale_overrides = {k: v for k, v in scaled.items() if k not in SCALE_KEYS}
    base = {f"{s}.{k}": v for s, values in spec.base.items() for k, v in values.items()}
    points = [dict(zip(spec.grid, values)) for values in itertools.product(*spec.grid.values())]
    runs = []
    for variant, overrides in spec.variants.items():
        for point in points:
            group = _group_name(variant, point, single=len(spec.variants) == 1 and bool(point))
            for seed in seeds:
                layers = [base, point, overrides, scale_overrides, per_variant.get(variant, {}),
                          {"train.seed": seed}]
                try:
                    config = build_config(layers)
                except ConfigError as e:
                    raise SpecError(f"run {group} seed {seed}: {e}") from None
                runs.append(Run(f"{group}-seed{seed}", group, variant, point, seed, config))
    return runs


def _group_name(variant: str, point: dict[str, Any], single: bool) -> str:
    """`variant` plus the grid point, e.g. `bn-lr1.0`; file-name safe."""
    parts = [] if single else [variant]
    parts += [f"{key.rsplit('.', 1)[-1]}{_text(value)}" for key, value in point.items()]
    return re.sub(r"[^A-Za-z0-9._=+-]", "_", "-".join(parts))


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "_".join(map(str, value))
    if isinstance(value, dict):
        return "_".join(f"{k}{_text(v)}" for k, v in value.items())
    return str(value)
