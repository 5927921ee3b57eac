"""Experiment configuration: frozen dataclasses, YAML/JSON files, typed overrides.

An experiment is fully described by a `Config`. Files may be nested YAML/JSON
(the sections below) or the reference implementation's flat JSON files, which
are translated unchanged (`from_legacy`). Overrides use dotted keys
(`distill.epochs=2`) or, for convenience, the unique leaf name (`epochs=2`).
Unknown keys and wrong types are errors with a "did you mean" hint.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from . import builtin_configs
from .naming import run_name_problem, safe_run_name
from .errors import ConfigError, did_you_mean

LOSSES = ("ce", "mse")
OPTIMIZERS = ("adam", "sgd", "momentum")
HEADS = ("rr", "linear")

# Inner minibatch sizes of the reference for 10, 20, 50, 100, 200, 500 base examples.
_INNER_BATCH = {10: 10, 20: 10, 50: 25, 100: 50, 200: 50, 500: 50}
# The reference's CIFAR-100 files use an inner minibatch of 100 (one per class of its 100 base examples).
_INNER_BATCH_CIFAR100 = 100


def default_epochs(target: str, num_base_examples: int) -> int:
    """The reference's epochs (SPEC 4.4): 400 up to 100 base examples, 800 above;
    CIFAR-100 800; Kuzushiji-49 (209k target examples an epoch) 100 up to 100, 200 above."""
    many = num_base_examples > 100
    if target == "cifar100":
        return 800
    if target == "k49":
        return 200 if many else 100
    return 800 if many else 400


@dataclass(frozen=True)
class DataConfig:
    source: str = "mnist"
    target: str = "mnist"
    num_base_examples: int = 100
    # None: balanced for within-dataset runs, unbalanced for cross-dataset runs.
    balanced: bool | None = None
    # None: the whole target set (e.g. 50,000 for MNIST).
    target_set_size: int | None = None
    root: str | None = None
    download: bool = True
    # Datasets named by a path (a .npz file or an image folder; see sources/paths.py):
    # None keeps the data's own image size, N resizes every image to NxN.
    image_size: int | None = None
    # An image folder without train/ and test/ is split by class, this fraction to test
    # (fixed seed: the same split for every run). Same default as sources.DEFAULT_TEST_FRACTION.
    test_fraction: float = 0.2
    # A Hugging Face dataset folder (save_to_disk): the columns of the images and the labels;
    # None finds them (the Image / ClassLabel feature, else a usual name such as image / label).
    image_column: str | None = None
    label_column: str | None = None
    # Normalisation of the target (and the source images it sees), per channel in [0, 1]
    # units; None: the registry's values, or those of the training split of a dataset of one's own.
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


@dataclass(frozen=True)
class DistillConfig:
    # None: the reference's count for the target and base-example count (`default_epochs`).
    epochs: int | None = None
    batch_size: int = 1024
    # None: the reference's table (10, 10, 25, 50, 50, 50 for 10..500 base examples; 100 for CIFAR-100).
    inner_batch_size: int | None = None
    inner_lr: float = 0.01
    label_lr: float = 0.001
    # Where the labels start: 'uniform' (the paper), or the labels a direct method chooses on
    # validation ('baseline-kd': teacher labels, 'label-solve': solved labels, 'baseline'
    # / 'baseline-ls'); meta-learning then improves them (label distillation only).
    init_labels: str = "uniform"
    model_lr: float = 0.001
    calibration_lr: float = 0.01
    ridge_lambda: float = 1.0
    head_momentum: float = 0.99
    # Gradient paths of the RR head's model update, online and in evaluation models
    # (heads.RR_GRADIENTS): 'detached' (W a constant in the model's loss) or 'reference'
    # (the reference script's: 0.01 * W_local differentiated through the features and,
    # while distilling, the labels after the step's label update).
    rr_gradients: str = "detached"
    # None: 50, or 200 with more than 100 base examples; 100 for CIFAR-100 and Kuzushiji-49.
    stats_gap: int | None = None
    validate_every: int = 5
    checkpoint_every: int = 1


@dataclass(frozen=True)
class EvalConfig:
    num_test_models: int = 20
    label_smoothing: float = 0.1
    optimizer: str = "adam"
    lr: float | None = None
    batch_size: int = 1024
    # Number-of-steps analysis: test models evaluated at best + these offsets.
    num_steps_analysis: bool = False
    step_offsets: tuple[int, ...] = (-50, -20, -10, 0, 10, 20, 50, 100)
    # Architecture transfer: also test with these architectures.
    test_architectures: tuple[str, ...] = ()
    # Optimiser flexibility: also test with these optimisers.
    test_optimizers: tuple[str, ...] = ()
    # The learner of evaluation models (every method): 'ce' trains on label distributions
    # (the paper's), 'mse' regresses the logits onto real-valued labels (solved labels,
    # teacher logits). `augment`: random translations by up to this many pixels (0: none).
    loss: str = "ce"
    augment: int = 0
    # Direct methods with real-valued labels (label-solve, baseline-kd) under the 'ce' loss
    # map them to distributions softmax(y / t); the t with the lowest validation error wins.
    # Empty: teacher.temperature for baseline-kd, (0.1, 0.3, 1.0) for label-solve.
    label_temperatures: tuple[float, ...] = ()
    # Direct methods: validation models per candidate and the steps they are measured at
    # (empty: the reference's grid of SPEC 5).
    num_val_models: int = 1
    step_grid: tuple[int, ...] = ()
    # Head of the evaluation models (step search, validation, test): 'rr' (features +
    # global ridge-regression head + scale, SPEC 4.2) or 'linear'. None: the method's own,
    # rr for ld-rr/dd-rr, linear otherwise. The reference trained a baseline with the head
    # of the script that ran it (`..._rr_...` or `..._or2_...` files).
    head: str | None = None


@dataclass(frozen=True)
class TeacherConfig:
    """Teacher labels (method baseline-kd, and distill.init_labels: baseline-kd): a teacher of
    the evaluation architecture trained on the target set labels the base examples with
    softmax(logits / temperature)."""

    temperature: float = 4.0
    train_epochs: int = 2
    train_lr: float = 0.001
    train_batch_size: int = 128
    # More than 1: an ensemble of teachers (own initialisations and data orders), logits averaged.
    num_teachers: int = 1
    # The learning rate over training: constant, or annealed to 0 along a cosine
    schedule: str = "constant"


@dataclass(frozen=True)
class SolveConfig:
    """Kernel label solving (method label-solve, SPEC 10)."""

    # Random networks of the evaluation architecture whose features make the kernel.
    num_networks: int = 32
    # Target examples the labels are fitted to (a seeded subset; None: the whole target set).
    target_size: int | None = 10000
    # Ridge parameters (relative to the kernel's mean diagonal), chosen on validation.
    ridge_lambdas: tuple[float, ...] = (0.001,)


@dataclass(frozen=True)
class ViewsConfig:
    """Labelled augmented views of the base images (SPEC 12, labeldistill.views): per_image views
    of every base image, each a mix of it with another base image, then a random affine
    transform. 0 views: the base images themselves, one label each (the paper)."""

    per_image: int = 0
    include_original: bool = True  # the first view of every image is the image itself
    rotate: float = 15.0  # degrees
    scale: float = 0.1  # in [1 - scale, 1 + scale]
    translate: float = 0.1  # a fraction of the image side
    mix: str = "cutmix"  # none | mixup | cutmix
    mix_alpha: float = 1.0  # the mixing weight ~ Beta(alpha, alpha)


@dataclass(frozen=True)
class StorageConfig:
    """How the labels are stored, and the budget they must fit (labeldistill.budget)."""

    label_dtype: str = "float32"  # float32 | float16
    top_k: int = 0  # keep each label's k largest entries, stored as values and class indices (0: all)
    # 'images': with views, the labels take no more bytes than the base images they label;
    # 'none': no limit
    budget: str = "images"


@dataclass(frozen=True)
class AutoConfig:
    """method: auto (methods/auto.py): recipes tried one setting at a time, each chosen by
    validation error, within a time budget."""

    time_budget: float = 600.0  # seconds for all the recipes tried (the test models come after)
    methods: tuple[str, ...] = ("baseline-ls", "label-solve", "baseline-kd")  # label makers tried
    views_per_image: tuple[int, ...] = (0, -1)  # views per image tried; -1: as many as the storage budget allows
    mixes: tuple[str, ...] = ("cutmix", "mixup")  # views.mix tried
    view_strengths: tuple[float, ...] = (1.0, 2.0)  # views.rotate, scale and translate times these
    num_teachers: tuple[int, ...] = (1, 3)  # teacher.num_teachers tried (teacher labels)
    augment: tuple[int, ...] = (0, 2)  # evaluate.augment (the learner's translations) tried
    teacher_schedules: tuple[str, ...] = ("constant", "cosine")  # teacher.schedule tried (teacher labels)
    # The temperatures teacher labels are chosen among (evaluate.label_temperatures of those recipes);
    # empty: evaluate.label_temperatures, or teacher.temperature
    teacher_temperatures: tuple[float, ...] = (1.0, 2.0, 4.0)


@dataclass(frozen=True)
class Config:
    name: str = ""
    method: str = "ld-rr"
    seed: int = 0
    # None: LeNet for grayscale targets, AlexCifarNet for colour ones.
    arch: str | None = None
    device: str = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    solve: SolveConfig = field(default_factory=SolveConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    views: ViewsConfig = field(default_factory=ViewsConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    auto: AutoConfig = field(default_factory=AutoConfig)

    # ---- derived values -------------------------------------------------
    @property
    def run_name(self) -> str:
        if self.name:
            return self.name
        d = self.data
        from .sources import short_name  # a dataset path becomes its file or folder name

        return safe_run_name(f"{self.method}_{short_name(d.source)}_to_{short_name(d.target)}_"
                             f"{d.num_base_examples}be_{self.seed}s")

    @property
    def epochs(self) -> int:
        if self.distill.epochs is not None:
            return self.distill.epochs
        return default_epochs(self.data.target, self.data.num_base_examples)

    @property
    def stats_gap(self) -> int:
        """Window and patience of the online model's resets (SPEC 4.3)."""
        if self.distill.stats_gap is not None:
            return self.distill.stats_gap
        from .sources import DATASETS

        info = DATASETS.get(self.data.target)
        if info is not None and info.stats_gap is not None:
            return info.stats_gap
        return 200 if self.data.num_base_examples > 100 else 50

    @property
    def num_examples(self) -> int:
        """Labelled examples: views.per_image views of every base image, or the base images."""
        return self.data.num_base_examples * (self.views.per_image or 1)

    @property
    def inner_batch_size(self) -> int:
        if self.distill.inner_batch_size is not None:
            return self.distill.inner_batch_size
        n = self.num_examples
        if self.data.target == "cifar100":
            return min(_INNER_BATCH_CIFAR100, n)
        for size in sorted(_INNER_BATCH):
            if n <= size:
                return min(_INNER_BATCH[size], n)
        return 50

    @property
    def balanced(self) -> bool:
        if self.data.balanced is not None:
            return self.data.balanced
        return self.data.source == self.data.target


# ---------------------------------------------------------------------------
# generic helpers


def _section_types() -> dict[str, type]:
    return {"data": DataConfig, "distill": DistillConfig, "evaluate": EvalConfig, "solve": SolveConfig,
            "teacher": TeacherConfig, "views": ViewsConfig, "storage": StorageConfig,
            "auto": AutoConfig}


# Keys of earlier versions and where they live now: configs and run folders written with them load.
RENAMED_KEYS = {"evaluate.kd_temperature": "teacher.temperature", "evaluate.kd_teacher_epochs": "teacher.train_epochs",
                "evaluate.kd_teacher_lr": "teacher.train_lr", "evaluate.kd_teacher_batch_size": "teacher.train_batch_size",
                "evaluate.kd_num_teachers": "teacher.num_teachers"}


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _all_keys() -> dict[str, str]:
    """Every dotted key -> its leaf name."""
    keys = {}
    for name, tp in _field_types(Config).items():
        if name in _section_types():
            for leaf in _field_types(_section_types()[name]):
                keys[f"{name}.{leaf}"] = leaf
        else:
            keys[name] = name
    return keys


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert `value` (from a file or a command-line string) to type `tp` or fail clearly."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return coerce(value, inner[0], key)
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in re.split(r"[,\s]+", value.strip("[]() ")) if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return tuple(coerce(v, args[0], key) for v in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "no", "0", "off"):
            return False
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        number = None
        if isinstance(value, (int, float)):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None:
            if not math.isfinite(number):  # no setting of an experiment is meaningful at nan or inf
                raise ConfigError(f"{key} must be a finite number, got {value!r}")
            return number
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key} must be a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")  # pragma: no cover


def resolve_key(key: str) -> str:
    """Map a dotted key or a unique leaf name to its dotted key (keys of earlier versions to
    their place now: `RENAMED_KEYS`)."""
    keys = _all_keys()
    if key in keys:
        return key
    renamed = RENAMED_KEYS.get(key) or RENAMED_KEYS.get(f"evaluate.{key}")
    if renamed is not None:
        return renamed
    if key in _section_types():
        example = next(iter(_field_types(_section_types()[key])))
        raise ConfigError(f"'{key}' is a section; set its keys, e.g. {key}.{example}=...")
    matches = [k for k, leaf in keys.items() if leaf == key]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ConfigError(f"ambiguous key '{key}': use one of {', '.join(matches)}")
    candidates = list(keys) + sorted(set(keys.values()))
    raise ConfigError(f"unknown config key '{key}'{did_you_mean(key, candidates)}")


def flat_keys(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping (a saved config, of any version) as dotted keys, checking nothing."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flat_keys(v, f"{prefix}{k}.") if isinstance(v, Mapping) else {f"{prefix}{k}": v})
    return out


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if not isinstance(k, str):
            raise ConfigError(f"config keys must be strings, got {k!r}")
        dotted = f"{prefix}{k}"
        if isinstance(v, Mapping):
            if dotted not in _section_types():
                raise ConfigError(f"unknown config section '{dotted}'{did_you_mean(dotted, _section_types())}")
            out.update(_flatten(v, dotted + "."))
        else:
            out[dotted] = v
    return out


def apply(cfg: Config, values: Mapping[str, Any]) -> Config:
    """Return `cfg` with dotted (or unique leaf) keys set, each coerced to its field type."""
    sections: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    for raw_key, value in values.items():
        key = resolve_key(raw_key)
        if "." in key:
            sec, leaf = key.split(".", 1)
            tp = _field_types(_section_types()[sec])[leaf]
            sections.setdefault(sec, {})[leaf] = coerce(value, tp, key)
        else:
            top[key] = coerce(value, _field_types(Config)[key], key)
    for sec, vals in sections.items():
        top[sec] = dataclasses.replace(getattr(cfg, sec), **vals)
    return dataclasses.replace(cfg, **top)


def to_dict(cfg: Config) -> dict[str, Any]:
    d = dataclasses.asdict(cfg)
    for sec in _section_types():
        for k, v in d[sec].items():
            if isinstance(v, tuple):
                d[sec][k] = list(v)
    return d


def effective_dict(cfg: Config, head: str | None = None) -> dict[str, Any]:
    """`to_dict` with the values left to defaults (None) replaced by what a run uses,
    so that two configs that run the same experiment compare equal. `head`: the evaluation
    head the method gives when evaluate.head is unset (the method registry knows it)."""
    d = to_dict(cfg)
    d["distill"].update(epochs=cfg.epochs, inner_batch_size=cfg.inner_batch_size, stats_gap=cfg.stats_gap)
    d["data"]["balanced"] = cfg.balanced
    d["evaluate"]["head"] = cfg.evaluate.head or head
    return d


def from_dict(d: Mapping[str, Any]) -> Config:
    if not isinstance(d, Mapping):
        raise ConfigError("a config file must hold a mapping of keys to values")
    if is_legacy(d):
        return from_legacy(d)
    return validate(apply(Config(), _flatten(d)))


# ---------------------------------------------------------------------------
# the reference implementation's flat JSON files

LEGACY_KEYS = {
    "epochs", "batch_size", "inner_batch_size", "num_base_examples", "expname", "source",
    "target", "balanced_source", "baseline", "resnet", "num_steps_analysis",
    "test_various_models", "target_set_size", "random_seed", "label_smoothing", "inner_lr",
    "num_inner_steps",
}
_LEGACY_ONLY = {"expname", "balanced_source", "baseline", "resnet", "test_various_models", "random_seed", "num_inner_steps"}
# Short dataset names used in the reference's experiment names.
SHORT_NAMES = {"mn": "mnist", "emn": "emnist", "km": "kmnist", "k49": "k49", "c10": "cifar10",
               "c100": "cifar100", "cub": "cub", "svhn": "svhn", "fmn": "fashion_mnist", "fake": "fake"}
_LEGACY_DATASETS = {"emnist_letters": "emnist", "kuzushiji49": "k49", "kmnist49": "k49",
                    "cifar-10": "cifar10", "cifar-100": "cifar100", "fashionmnist": "fashion_mnist",
                    "fmnist": "fashion_mnist"}


def is_legacy(d: Mapping[str, Any]) -> bool:
    return bool(set(d) & _LEGACY_ONLY) and not (set(d) & set(_section_types()))


def from_legacy(d: Mapping[str, Any]) -> Config:
    """Translate a reference-implementation flat JSON file (SPEC section 8)."""
    unknown = set(d) - LEGACY_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(f"unknown key '{key}' in a reference-format config{did_you_mean(key, LEGACY_KEYS)}")
    name = str(d.get("expname", ""))
    tokens = name.split("_")
    baseline = coerce(d.get("baseline", False), bool, "baseline")
    smoothing = coerce(d.get("label_smoothing", 0) or 0, float, "label_smoothing")
    values: dict[str, Any] = {"name": name}
    if baseline:
        values["method"] = "baseline-ls" if smoothing > 0 else "baseline"
        # The reference's baselines learn with the head of the script that ran them (SPEC 5).
        if "rr" in tokens:
            values["evaluate.head"] = "rr"
        elif "or2" in tokens:
            values["evaluate.head"] = "linear"
    else:
        variant = "or2" if "or2" in tokens else "rr"
        kind = "dd" if tokens and tokens[0] == "dd" else "ld"
        values["method"] = f"{kind}-{variant}"
    mapping = {
        "epochs": "distill.epochs", "batch_size": "distill.batch_size",
        "inner_batch_size": "distill.inner_batch_size", "inner_lr": "distill.inner_lr",
        "num_base_examples": "data.num_base_examples", "target_set_size": "data.target_set_size",
        "balanced_source": "data.balanced", "random_seed": "seed",
        "num_steps_analysis": "evaluate.num_steps_analysis",
    }
    for old, new in mapping.items():
        if old in d:
            values[new] = d[old]
    for key in ("source", "target"):
        if key in d:
            ds = str(d[key]).lower()
            values[f"data.{key}"] = _LEGACY_DATASETS.get(ds, SHORT_NAMES.get(ds, ds))
    if smoothing > 0:
        values["evaluate.label_smoothing"] = smoothing
    if coerce(d.get("resnet", False), bool, "resnet"):
        values["arch"] = "resnet"
    if coerce(d.get("test_various_models", False), bool, "test_various_models"):
        values["evaluate.test_architectures"] = ["lenet", "alexcifarnet", "resnet"]
    cfg = apply(Config(), values)
    return validate(cfg)


# ---------------------------------------------------------------------------
# files and validation


def load(path: str | Path, overrides: Iterable[str] = ()) -> Config:
    """Load a YAML, JSON or TOML config file, or a config shipped with the package by its name
    (`labeldistill configs` lists them), then apply `key=value` overrides."""
    path = _config_path(path)
    cfg = from_dict(parse_file(path))
    return with_overrides(cfg, overrides)


def _config_path(path: str | Path) -> Path:
    """A file that exists, else the shipped config of that name."""
    path = Path(path)
    if path.is_file():
        return path
    if path.exists():
        raise ConfigError(f"{path} is not a config file; give a .yaml, .json or .toml file or a shipped config's name")
    shipped = builtin_configs.find(str(path))
    if shipped is not None:
        return shipped
    hint = did_you_mean(path.stem, builtin_configs.named_configs()) if path.parent == Path(".") else ""
    raise ConfigError(f"config file not found: {path}{hint}; `labeldistill configs` lists the shipped configs")


CONFIG_SUFFIXES = (".yaml", ".yml", ".json", ".toml")


def parse_file(path: Path) -> Any:
    """The contents of a config file, parsed by its extension; a parse error is one line
    that keeps the parser's line and column."""
    suffix = path.suffix.lower()
    if suffix not in CONFIG_SUFFIXES:
        raise ConfigError(f"{path}: unknown config file type '{path.suffix}'; use {', '.join(CONFIG_SUFFIXES)}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text file; a config is a {', '.join(CONFIG_SUFFIXES)} file") from None
    try:
        if suffix == ".json":
            return json.loads(text)
        if suffix == ".toml":
            return _toml().loads(text)
        import yaml

        return yaml.safe_load(text) or {}
    except json.JSONDecodeError as exc:
        where, msg = f"line {exc.lineno}, column {exc.colno}", exc.msg
    except Exception as exc:  # noqa: BLE001 - any parse error becomes one line
        mark = getattr(exc, "problem_mark", None)  # yaml's MarkedYAMLError: 0-based line and column
        if mark is not None:
            where = f"line {mark.line + 1}, column {mark.column + 1}"
            msg = ", ".join(str(m) for m in (getattr(exc, "context", None), exc.problem) if m)
        else:  # tomllib's message ends with "(at line L, column C)"
            where, msg = "", " ".join(str(exc).split()) or type(exc).__name__
    raise ConfigError(f"cannot parse {path}: {where + ': ' if where else ''}{msg}")


def _toml():
    try:
        import tomllib  # python 3.11+
    except ModuleNotFoundError:
        import tomli as tomllib  # the same parser, a dependency on python 3.10
    return tomllib


def parse_overrides(overrides: Iterable[str]) -> dict[str, str]:
    values = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key=value, e.g. distill.epochs=10")
        key, value = item.split("=", 1)
        values[key.strip()] = value.strip()
    return values


def with_overrides(cfg: Config, overrides: Iterable[str]) -> Config:
    """`cfg` with `key=value` overrides, renamed after those that change the experiment
    (`override_name`), so that a run with other settings never shares a run folder."""
    values = parse_overrides(overrides)
    if not values:
        return cfg
    changed = validate(apply(cfg, values))
    keys = {resolve_key(k) for k in values}
    return dataclasses.replace(changed, name=override_name(cfg, changed, keys))


# ---------------------------------------------------------------------------
# run names that follow the experiment

# Keys that do not change what a run computes, so an override of them keeps the run's name
# and a finished run with another value of them is the same experiment:
# - name: names the run (`--set name=X` names it X exactly);
# - device: where it runs (the CLI's --device is not part of the name either);
# - distill.checkpoint_every: how often state is saved; a resume continues bit for bit;
# - data.root, data.download: where the dataset's files are and whether they may be fetched,
#   not which dataset (like --data-root);
# - evaluate.batch_size: read by no computation (evaluation minibatches are the inner batch size).
NEUTRAL_KEYS = frozenset({"name", "device", "distill.checkpoint_every", "data.root", "data.download",
                          "evaluate.batch_size"})
# Keys the automatic name (`Config.run_name` without a name) already spells out.
_AUTO_NAME_KEYS = frozenset({"method", "seed", "data.source", "data.target", "data.num_base_examples"})
# A name ending in the paper's seed part (`..._0s`) gets that part replaced.
_SEED_SUFFIX = re.compile(r"_\d+s$")
MAX_NAME_LENGTH = 120


def experiment_dict(cfg: Config, head: str | None = None) -> dict[str, Any]:
    """`effective_dict` without the neutral keys: equal exactly when two configs run the same experiment."""
    flat = _flatten(effective_dict(cfg, head))
    return {k: v for k, v in flat.items() if k not in NEUTRAL_KEYS}


def _name_value(key: str, value: Any) -> str:
    """A value as it appears in a run name: paths as their file or folder name, one safe word."""
    from .sources import short_name

    if isinstance(value, (list, tuple)):
        return ",".join(_name_value(key, v) for v in value) or "none"
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        text = repr(value)  # shortest text that reads back as the same number
        return text[:-2] if text.endswith(".0") else text
    text = short_name(str(value)) if key in ("data.source", "data.target") else str(value)
    return re.sub(r"[^A-Za-z0-9.,=+-]+", "_", text).strip("._") or "_"


def _name_key(key: str) -> str:
    """The leaf name where it is unique (`lr`), else the dotted key (`evaluate.batch_size`). A
    renamed key keeps its earlier name part, so run folders named before the rename still match."""
    earlier = {now: before for before, now in RENAMED_KEYS.items()}
    if key in earlier:
        return earlier[key].rsplit(".", 1)[-1]
    leaf = key.rsplit(".", 1)[-1]
    return leaf if list(_all_keys().values()).count(leaf) == 1 else key


def override_name(before: Config, after: Config, keys: Iterable[str]) -> str:
    """The name of `after`, made from `before` by overriding the dotted `keys`.

    An explicit `name` override is taken as it is. Otherwise every overridden key whose
    effective value changed, neutral keys aside, is added as `key=value` (sorted, so the
    order of the overrides does not matter), after a name that already ends in the
    paper's seed part has had that part replaced. An automatic name keeps following its
    own pattern. A name longer than MAX_NAME_LENGTH keeps its start and ends in a hash of
    the whole.
    """
    keys = set(keys)
    if "name" in keys:
        return after.name
    old, new = experiment_dict(before), experiment_dict(after)
    changed = sorted(k for k in keys - NEUTRAL_KEYS if old.get(k) != new.get(k))
    name = before.name
    if not name:  # the automatic name already says the method, data, base examples and seed
        changed = [k for k in changed if k not in _AUTO_NAME_KEYS]
        if not changed:
            return ""
        name = after.run_name
    elif "seed" in changed and _SEED_SUFFIX.search(name):
        name = _SEED_SUFFIX.sub(f"_{after.seed}s", name)
        changed.remove("seed")
    tokens = sorted(f"{_name_key(k)}={_name_value(k, new[k])}" for k in changed)
    full = "_".join([name, *tokens])
    if len(full) <= MAX_NAME_LENGTH:
        return full
    import hashlib

    digest = hashlib.sha256(full.encode()).hexdigest()[:10]
    return f"{full[:MAX_NAME_LENGTH - len(digest) - 1]}_{digest}"


def validate(cfg: Config) -> Config:
    """Check values that need no data: names, ranges and sizes."""
    from .heads import RR_GRADIENTS
    from .models import check_arch
    from .sources import DATASETS, check_dataset_name, is_path_name

    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ConfigError(msg)

    if cfg.name:  # empty: the automatic name (Config.run_name)
        problem = run_name_problem(cfg.name)
        shown = repr(cfg.name if len(cfg.name) <= 40 else cfg.name[:40] + "...")
        need(problem is None, f"name {shown} {problem}; a run name is one folder name inside --out: "
                              "choose another, or leave it empty for an automatic name")
    # The method and its options are the method registry's to check (methods.check_config).
    need(bool(cfg.method), "method must be set: `labeldistill methods` lists them")
    for key in ("source", "target"):
        check_dataset_name(getattr(cfg.data, key), key)
    need(cfg.data.target != "fake", "data.target cannot be 'fake': fake noise is only a source of base examples")
    if cfg.arch is not None:
        check_arch(cfg.arch)
    for arch in cfg.evaluate.test_architectures:
        check_arch(arch)
    need(cfg.device in ("auto", "cpu") or re.fullmatch(r"cuda(:\d+)?", cfg.device) is not None,
         f"device must be auto, cpu, cuda or cuda:N (e.g. cuda:0), got '{cfg.device}'")
    d, t, e = cfg.data, cfg.distill, cfg.evaluate
    need(d.num_base_examples >= 1, f"data.num_base_examples must be at least 1, got {d.num_base_examples}")
    if d.image_size is not None:
        need(d.image_size >= 2, f"data.image_size must be at least 2 pixels (or null: the data's own size), "
             f"got {d.image_size}")
        need(is_path_name(d.source) or is_path_name(d.target),
             "data.image_size applies to datasets read from a path (a .npz file, an image folder or a Hugging Face "
             "dataset folder); registered datasets keep their own size")
    need(0 < d.test_fraction < 1, f"data.test_fraction must be between 0 and 1, got {d.test_fraction}")
    if d.std is not None:
        need(len(d.std) >= 1 and min(d.std) > 0, f"data.std must be positive for every channel, got {list(d.std)}")
    if d.mean is not None:
        need(len(d.mean) >= 1, "data.mean needs one value per channel")
    # The classes of a path dataset are known once it is read: data.prepare checks it then.
    num_classes = DATASETS[d.target].num_classes if d.target in DATASETS else 0
    if cfg.balanced and cfg.data.source != "fake":
        need(d.num_base_examples >= num_classes,
             f"data.num_base_examples={d.num_base_examples} is fewer than the {num_classes} classes of '{d.target}' "
             "with balanced selection; use at least one per class or set data.balanced=false")
    if d.target_set_size is not None:
        need(d.target_set_size >= 1, f"data.target_set_size must be positive, got {d.target_set_size}")
    if t.epochs is not None:
        need(t.epochs >= 1, f"distill.epochs must be at least 1, got {t.epochs}")
    need(t.batch_size >= 1, f"distill.batch_size must be at least 1, got {t.batch_size}")
    # The views and storage sections before anything derived from them (the inner batch size
    # counts views): views.per_image=-1 is reported as itself.
    from .budget import check_storage
    from .views import ViewSpec

    ViewSpec(**dataclasses.asdict(cfg.views))  # its own checks, one line each
    check_storage(cfg.storage)
    need(1 <= cfg.inner_batch_size <= cfg.num_examples,
         f"the inner batch size ({cfg.inner_batch_size}) must be between 1 and the number of labelled examples "
         f"({cfg.num_examples}: data.num_base_examples" + (" times views.per_image)" if cfg.views.per_image else ")"))
    for key in ("inner_lr", "label_lr", "model_lr", "calibration_lr", "ridge_lambda"):
        need(getattr(t, key) > 0, f"distill.{key} must be positive, got {getattr(t, key)}")
    need(0 <= t.head_momentum < 1, f"distill.head_momentum must be in [0, 1), got {t.head_momentum}")
    need(t.rr_gradients in RR_GRADIENTS, f"unknown distill.rr_gradients '{t.rr_gradients}'"
         f"{did_you_mean(t.rr_gradients, RR_GRADIENTS)}; known: {', '.join(RR_GRADIENTS)}")
    if t.stats_gap is not None:
        need(t.stats_gap >= 1, f"distill.stats_gap must be at least 1, got {t.stats_gap}")
    need(t.validate_every >= 1, f"distill.validate_every must be at least 1, got {t.validate_every}")
    need(t.checkpoint_every >= 0, f"distill.checkpoint_every must be 0 (off) or more, got {t.checkpoint_every}")
    need(e.num_test_models >= 1, f"evaluate.num_test_models must be at least 1, got {e.num_test_models}")
    need(0 <= e.label_smoothing < 1, f"evaluate.label_smoothing must be in [0, 1), got {e.label_smoothing}")
    need(e.batch_size >= 1, f"evaluate.batch_size must be at least 1, got {e.batch_size}")
    if e.head is not None:
        need(e.head in HEADS, f"evaluate.head must be rr or linear (or unset: the method's own), got '{e.head}'"
             f"{did_you_mean(e.head, HEADS)}")
    for opt in (e.optimizer, *e.test_optimizers):
        need(opt in OPTIMIZERS, f"unknown optimizer '{opt}'{did_you_mean(opt, OPTIMIZERS)}; known: {', '.join(OPTIMIZERS)}")
    if e.lr is not None:
        need(e.lr > 0, f"evaluate.lr must be positive, got {e.lr}")
    need(e.loss in LOSSES, f"unknown evaluate.loss '{e.loss}'{did_you_mean(e.loss, LOSSES)}; known: {', '.join(LOSSES)}")
    need(e.augment >= 0, f"evaluate.augment must be 0 (off) or a number of pixels, got {e.augment}")
    need(all(t > 0 for t in e.label_temperatures),
         f"evaluate.label_temperatures must be positive, got {list(e.label_temperatures)}")
    need(e.num_val_models >= 1, f"evaluate.num_val_models must be at least 1, got {e.num_val_models}")
    need(all(s >= 1 for s in e.step_grid), f"evaluate.step_grid must hold positive step counts, got {list(e.step_grid)}")
    # The options of one method (teacher.*, solve.*) are checked by that method (methods/).
    return cfg
