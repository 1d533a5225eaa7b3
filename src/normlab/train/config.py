"""Run configuration as data: four frozen dataclasses, read from TOML, overridden by `--set`.

    [data]   dataset, batch_size, resize, ...        DataConfig
    [model]  name, norm, norm_position, options      ModelConfig
    [optim]  optimizer, lr, momentum, schedule, ...  OptimConfig
    [train]  epochs, seed, device, amp, ...          TrainConfig

Resolution order, later wins: the dataclass defaults, the model's book settings
(`BOOK_SETTINGS`), a `--config` file, `--set key=value` overrides, the explicit CLI flags.
The resolved config is written with every run as `config.toml`; a field that is None is left
out of the file (TOML has no null) and reads back as its default, None.
"""
from __future__ import annotations

import dataclasses
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

import tomli_w


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "fashion-mnist"     # fashion-mnist | mnist | poly
    batch_size: int = 256
    resize: int | None = None          # 224 for AlexNet/VGG/NiN, 96 for GoogLeNet/ResNet-18/DenseNet
    root: str | None = None            # a folder to look in first for the IDX files
    normalize: bool = False            # standardize with the training set's pixel mean/std
    train_subset: int | None = None    # use only the first N training examples (quick runs)
    test_subset: int | None = None
    drop_last: bool = False            # drop the last, smaller batch (batch norm needs > 1 value)
    augment: bool = False              # training images: random left-right flip, and shift...
    augment_shift: int = 2             # ...by up to this many pixels (0: flip only)


@dataclass(frozen=True)
class ModelConfig:
    name: str = "lenet_bn"
    norm: str | None = None            # None: the model's own default
    norm_position: str | None = None   # before_act | after_act
    options: dict = field(default_factory=dict)  # other builder keywords, e.g. width_divisor


@dataclass(frozen=True)
class OptimConfig:
    optimizer: str = "sgd"             # sgd | adam | adamw
    lr: float = 0.9                    # the book's LeNet
    momentum: float = 0.0              # the book's SGD has none
    nesterov: bool = False
    weight_decay: float = 0.0
    decay_vectors: bool = True         # False: no weight decay on biases and norm γ/β (1-D parameters)
    schedule: str = "none"             # none | step | cosine (per step, to 0 at the end of the run)
    step_epochs: int = 3               # step schedule: multiply lr by step_gamma every step_epochs
    step_gamma: float = 0.1
    warmup_epochs: float = 0.0         # linear warm-up from 0, before the schedule
    label_smoothing: float = 0.0


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    seed: int = 0
    device: str = "auto"               # auto | cpu | cuda | mps | cuda:N
    amp: str = "none"                  # none | bf16 | fp16 (CUDA autocast)
    channels_last: bool = False
    compile: bool = False              # torch.compile the model
    init: str = "xavier"               # xavier (the book's) | torch (keep torch's own)
    points_per_epoch: int = 5          # train-curve points per epoch, as the book's Animator
    record_stats: bool = False         # stats.jsonl: γ/β, running stats, norm inputs, gradient norms
    record_every: int = 50             # ...every this many optimizer steps, and at each epoch end
    diverge_factor: float = 100.0      # a step loss above this × the first step's has diverged (0: no bound)...
    max_loss: float | None = None      # ...or, if set, above this value instead
    sync_bn: bool = False              # under torchrun: batch statistics over all ranks (normlab.nn.SyncBatchNorm)


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


SECTIONS = {f.name: f.type for f in dataclasses.fields(RunConfig)}
_CLASSES = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig, "train": TrainConfig}

# The book's settings for each model (d2l chapters 6-8, as the seeds ran them): lr, batch, input size.
BOOK_SETTINGS: dict[str, dict[str, Any]] = {
    "lenet": {"optim.lr": 0.9, "data.batch_size": 256},
    "lenet_bn": {"optim.lr": 1.0, "data.batch_size": 256},
    "alexnet": {"optim.lr": 0.01, "data.batch_size": 128, "data.resize": 224},
    "vgg": {"optim.lr": 0.05, "data.batch_size": 128, "data.resize": 224, "model.options": {"width_divisor": 4}},
    "nin": {"optim.lr": 0.1, "data.batch_size": 128, "data.resize": 224},
    "googlenet": {"optim.lr": 0.1, "data.batch_size": 128, "data.resize": 96},
    "resnet18": {"optim.lr": 0.05, "data.batch_size": 256, "data.resize": 96},
    "resnet20": {"optim.lr": 0.1, "data.batch_size": 128},
    "densenet": {"optim.lr": 0.1, "data.batch_size": 256, "data.resize": 96},
    # the seeds' BN-placement study (tensorGenReg, net_class1): 2 -> 4 -> 1, SGD lr 0.03, 20 epochs
    "mlp": {"optim.lr": 0.03, "data.batch_size": 10, "data.dataset": "poly", "train.epochs": 20,
            "model.options": {"hidden": [4]}},
}


class ConfigError(ValueError):
    """A config key or value that does not fit; the message lists what would."""


def valid_keys() -> list[str]:
    return [f"{s}.{f.name}" for s, cls in _CLASSES.items() for f in dataclasses.fields(cls)]


def _field(key: str) -> tuple[str, dataclasses.Field]:
    """`section.name` (or a bare name that only one section has) -> (section, field)."""
    matches = [(s, f) for s, cls in _CLASSES.items() for f in dataclasses.fields(cls)
               if key in (f"{s}.{f.name}", f.name)]
    if len(matches) != 1:
        what = "ambiguous" if matches else "unknown"
        raise ConfigError(f"{what} config key {key!r}; valid keys: {', '.join(valid_keys())}")
    return matches[0]


def _types(section: str, f: dataclasses.Field) -> tuple[type, ...]:
    hint = typing.get_type_hints(_CLASSES[section])[f.name]
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else ()
    return tuple(a for a in args) if args else (hint,)


# The numbers a field takes, checked wherever a value is parsed (a config file, --set, the CLI's
# flags, a study's spec): key -> (lowest, whether the lowest itself is allowed, highest or None).
# record_every, diverge_factor and max_loss are checked where they are used, with their own words.
LIMITS = {
    "data.batch_size": (1, True, None), "data.resize": (1, True, None), "data.train_subset": (1, True, None),
    "data.test_subset": (1, True, None), "data.augment_shift": (0, True, None),
    "optim.lr": (0, False, None), "optim.momentum": (0, True, None), "optim.weight_decay": (0, True, None),
    "optim.step_epochs": (1, True, None), "optim.step_gamma": (0, False, None),
    "optim.warmup_epochs": (0, True, None), "optim.label_smoothing": (0, True, 1),
    "train.epochs": (1, True, None), "train.points_per_epoch": (1, True, None),
}


DEVICES = re.compile(r"auto|cpu|mps|cuda(:\d+)?")   # train.device: what resolve_device knows


def _check_limits(key: str, value: Any) -> None:
    if key == "train.device" and not DEVICES.fullmatch(value):
        raise ConfigError(f"config key train.device takes auto, cpu, cuda, cuda:N or mps, got {value!r}")
    if key not in LIMITS or value is None:
        return
    low, low_allowed, high = LIMITS[key]
    too_low = value < low if low_allowed else value <= low
    if too_low or (high is not None and value > high) or value != value:  # value != value: NaN
        bound = f"{'at least' if low_allowed else 'above'} {low}" + (f" and at most {high}" if high is not None else "")
        raise ConfigError(f"config key {key} must be {bound}, got {value!r}")


def coerce(key: str, value: Any) -> Any:
    """`value` (a TOML value, or a string from `--set`) converted to the type of config field `key`,
    and checked against the field's LIMITS."""
    value = _coerce_type(key, value)
    section, f = _field(key)
    _check_limits(f"{section}.{f.name}", value)
    return value


def _coerce_type(key: str, value: Any) -> Any:
    section, f = _field(key)
    allowed = _types(section, f)
    # "none" is a word for an optional number, but a value for a text field: model.norm = "none" is no norm
    if type(None) in allowed and (value is None or isinstance(value, str) and str not in allowed
                                  and value.lower() in ("none", "null", "")):
        return None
    for t in allowed:
        if t is type(None):
            continue
        if isinstance(value, t) and not (t is int and isinstance(value, bool)):
            return value
        if t is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return _parse(value, t)
            except ValueError:
                continue
    names = " or ".join(getattr(t, "__name__", str(t)) for t in allowed)
    raise ConfigError(f"config key {section}.{f.name} takes {names}, got {value!r}")


def _parse(text: str, t: type) -> Any:
    if t is bool:
        if text.lower() in ("true", "yes", "1", "on"):
            return True
        if text.lower() in ("false", "no", "0", "off"):
            return False
        raise ValueError(text)
    if t is dict:
        value = tomllib.loads(f"v = {text}")["v"]  # an inline table: {width_divisor = 4}
        if not isinstance(value, dict):
            raise ValueError(text)
        return value
    return t(text)


def override(config: RunConfig, updates: dict[str, Any]) -> RunConfig:
    """A copy of `config` with `{"section.name" or "name": value}` applied, each value type-checked."""
    sections = {s: {} for s in _CLASSES}
    options = dict(config.model.options)
    for key, value in updates.items():
        if key.startswith(("model.options.", "options.")):  # one builder keyword: model.options.width_divisor=8
            options[key.rsplit(".", 1)[1]] = _parse_literal(value) if isinstance(value, str) else value
            sections["model"]["options"] = options
            continue
        section, f = _field(key)
        sections[section][f.name] = coerce(key, value)
        if f.name == "options":
            options = dict(sections[section][f.name])
    return RunConfig(**{s: dataclasses.replace(getattr(config, s), **kw) for s, kw in sections.items()})


def _parse_literal(text: str) -> Any:
    """A TOML literal (8, 0.5, true, [4, 4], "relu"), or the text itself when it is none."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_set(items: list[str]) -> dict[str, str]:
    """`["optim.lr=0.5", "epochs=3"]` -> {"optim.lr": "0.5", "epochs": "3"}."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"a setting takes key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def from_dict(data: dict[str, Any], base: RunConfig | None = None) -> RunConfig:
    """A RunConfig from `{section: {name: value}}` (a parsed TOML file) applied over `base`."""
    updates = {}
    for section, values in data.items():
        if section not in _CLASSES or not isinstance(values, dict):
            raise ConfigError(f"unknown config section [{section}]; valid sections: {', '.join(_CLASSES)}")
        updates.update({f"{section}.{name}": value for name, value in values.items()})
    return override(base or RunConfig(), updates)


RECIPES = Path(__file__).with_name("recipes")


def list_recipes() -> list[str]:
    """The named configs shipped with normlab (`normlab train --config NAME`)."""
    return sorted(p.stem for p in RECIPES.glob("*.toml"))


def config_path(name_or_path: str | Path) -> Path:
    """A config file's path: an existing file, else a shipped recipe of that name."""
    path = Path(name_or_path)
    if path.is_file() or path.suffix == ".toml" or str(name_or_path) not in list_recipes():
        return path
    return RECIPES / f"{name_or_path}.toml"


def read_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file (or a recipe name) as a dict, parsed, never evaluated; errors name the file."""
    path = config_path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found; the shipped recipes are: {', '.join(list_recipes())}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None


def load(path: str | Path, base: RunConfig | None = None) -> RunConfig:
    """Read a TOML config file over `base`."""
    try:
        return from_dict(read_toml(path), base)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def to_dict(config: RunConfig) -> dict[str, dict[str, Any]]:
    """`{section: {name: value}}` without the None values (TOML has no null)."""
    return {s: {k: v for k, v in dataclasses.asdict(getattr(config, s)).items() if v is not None} for s in _CLASSES}


def flatten(config: RunConfig) -> dict[str, Any]:
    """`{"section.name": value}` for every field, None included."""
    return {f"{s}.{k}": v for s in _CLASSES for k, v in dataclasses.asdict(getattr(config, s)).items()}


RESUMABLE = frozenset({"train.epochs", "train.device"})  # what a resumed run may change


def unresumable_changes(saved: RunConfig, wanted: RunConfig) -> list[str]:
    """The keys in which `wanted` differs from a run's `saved` config and that a resumed run cannot change."""
    before, after = flatten(saved), flatten(wanted)
    return sorted(k for k in after if after[k] != before[k] and k not in RESUMABLE)


def dumps(config: RunConfig) -> str:
    return tomli_w.dumps(to_dict(config))


def book_settings(model: str) -> dict[str, Any]:
    """The book's settings for `model` ({} for a model the book does not train)."""
    return dict(BOOK_SETTINGS.get(model, {}))


def resolve(model: str | None = None, config_file: str | Path | None = None,
            sets: dict[str, Any] | None = None, flags: dict[str, Any] | None = None) -> RunConfig:
    """Defaults -> the model's book settings -> config file -> --set -> explicit flags (None = not given).

    The model is the one named on the command line, else the config file's, else lenet_bn.
    """
    file_data = read_toml(config_file) if config_file is not None else {}
    name = model or file_data.get("model", {}).get("name") or RunConfig().model.name
    config = override(RunConfig(), {"model.name": name, **book_settings(name)})
    if file_data:
        try:
            config = from_dict(file_data, config)
        except ConfigError as e:
            raise ConfigError(f"{config_file}: {e}") from None
    config = override(config, sets or {})
    return override(config, {k: v for k, v in (flags or {}).items() if v is not None} | {"model.name": name})
