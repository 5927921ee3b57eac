"""Distilled datasets as portable, self-describing files.

A run writes two files into its directory:

- ``distilled.safetensors``: the tensors. ``pixels`` are the base images after
  the target's channel/size preprocessing, in [0, 1] (uint8 when that is
  lossless, else float32); ``labels`` (n, C) float32 soft labels; for real
  base images ``base_indices`` (into the source's training split) and
  ``base_original_labels``.
- ``distilled.json``: the card. What the tensors are (format version, kind,
  method, source and target datasets, class names), how to preprocess them
  (``(pixels - mean) / std``), the evaluation recipe that produced the
  reported accuracy (architecture, head, optimiser, learning rate, inner batch
  size, number of steps, ridge-regression settings, the model seeds), the
  accuracy itself, and SHA-256 checksums of every tensor and of the tensor file.

`load_distilled(path)` checks all of that and returns a `DistilledDataset`, a
`torch.utils.data.Dataset` of (normalised image, soft label) pairs.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from .budget import budget_name, pack, sparse, storage, stored_pixels, unpack
from .errors import ConfigError, DataError, RunFileError
from .evaluate import Recipe
from .heads import RR_GRADIENTS
from .methods import evaluation_head
from .runfiles import check_card
from .views import Views, ViewSpec

FORMAT = "labeldistill-distilled-dataset"
FORMAT_VERSION = 1
TENSOR_FILE = "distilled.safetensors"
CARD_FILE = "distilled.json"
SYNTHETIC_FILE = "synthetic_images.pt"  # image runs of earlier versions kept their pixels here too (read only)
RECIPE_KEYS = ("arch", "head", "optimizer", "lr", "batch_size", "ridge_lambda", "head_momentum", "calibration_lr")
# Recipe fields added after format version 1 was fixed: written always, read with the
# value that cards without them were trained with.
OPTIONAL_RECIPE_KEYS = {"rr_gradients": "detached", "loss": "ce", "augment": 0}
LOSS_TEXT = {"ce": "soft cross-entropy, mean over the minibatch of sum_c -y_c log softmax(logits)_c",
             "mse": "squared error, mean over the minibatch and classes of (logits_c - y_c)^2 (real-valued labels)"}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tensor_sha256(t: torch.Tensor) -> str:
    """Checksum of a tensor's dtype, shape and little-endian bytes."""
    t = t.detach().cpu().contiguous()
    header = f"{t.dtype}|{tuple(t.shape)}|".encode()
    return _sha256(header + t.reshape(-1).view(torch.uint8).numpy().tobytes()) if t.numel() else _sha256(header)


def pixels_to_float(pixels: torch.Tensor) -> torch.Tensor:
    """Stored pixels -> float32 in [0, 1], exactly as `data.to_pixels` computes them."""
    return pixels.float().div_(255.0) if pixels.dtype == torch.uint8 else pixels.float()


# ---------------------------------------------------------------------------
# writing


def save_artifact(directory: str | Path, pixels: torch.Tensor, labels: torch.Tensor, card: dict,
                  extra: dict[str, torch.Tensor] | None = None, label_dtype: str = "float32", top_k: int = 0,
                  views=None, budget: str | None = None) -> Path:
    """Write `distilled.safetensors` and `distilled.json` into `directory` atomically.

    `card` holds the descriptive fields (see `run_card`); this function adds the
    format, shapes, dtypes and checksums. The labels are stored in `label_dtype`,
    dense or as their `top_k` entries (budget.pack); with `views`
    (views.Views), one label per view and the views' parameters. Returns the card's path.
    """
    from safetensors.torch import save

    from .results import atomic_write_bytes, atomic_write_json

    directory = Path(directory)
    tensors = {"pixels": stored_pixels(pixels), **pack(labels, label_dtype, top_k)}
    if views is not None:
        tensors.update(views.params.tensors())
    for k, v in (extra or {}).items():
        tensors[k] = v.detach().cpu().contiguous()
    n = tensors["pixels"].shape[0]
    examples = n if views is None else len(views.params)
    if labels.shape[0] != examples:
        raise ValueError(f"{examples} {'views' if views is not None else 'images'} but {labels.shape[0]} labels")
    blob = save(tensors, metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
    full = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        **card,
        "num_examples": examples, "num_classes": int(labels.shape[1]),
        "num_base_images": n,
        **({"views": views.card()} if views is not None else {}),
        "labels": {"dtype": label_dtype, "top_k": top_k if sparse(int(labels.shape[1]), top_k) else 0,
                   "stored_as": "label_values and label_indices (each label's top_k entries)"
                   if sparse(int(labels.shape[1]), top_k) else "labels (dense)"},
        "storage": storage(pixels, labels, label_dtype, top_k, budget),
        "tensor_file": TENSOR_FILE, "tensor_file_sha256": _sha256(blob),
        "tensors": {k: {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape),
                        "sha256": tensor_sha256(v)} for k, v in tensors.items()},
    }
    atomic_write_bytes(directory / TENSOR_FILE, blob)
    atomic_write_json(directory / CARD_FILE, full)
    return directory / CARD_FILE


@dataclass(frozen=True)
class TargetImages:
    """How the target shapes and names the images of a card: from a run's data, or from the
    card of its stored artifact (so that re-exporting needs no dataset)."""

    class_names: list[str]
    channels: int
    size: int
    mean: list[float]
    std: list[float]
    origin: str | None  # where the data were read from

    @classmethod
    def of_data(cls, data) -> "TargetImages":
        tgt = data.target
        return cls(list(tgt.class_names), tgt.channels, tgt.image_size, [float(v) for v in tgt.mean],
                   [float(v) for v in tgt.std], data.origin)

    @classmethod
    def of_card(cls, card: dict) -> "TargetImages":
        img = card["image"]
        return cls(list(card["class_names"]), img["channels"], img["size"], [float(v) for v in img["mean"]],
                   [float(v) for v in img["std"]], card.get("data_origin"))


def run_card(cfg, target: TargetImages, recipe, num_steps: int, kind: str, result) -> dict:
    """The descriptive part of a run's card (everything but checksums and shapes)."""
    from . import config as config_mod

    return {
        "kind": kind,  # 'labels' (real base images, learned or baseline labels) or 'images' (synthetic)
        "name": cfg.run_name, "method": cfg.method, "seed": cfg.seed,
        "source": cfg.data.source, "target": cfg.data.target,
        **({"data_origin": target.origin} if target.origin is not None else {}),
        "class_names": list(target.class_names),
        "image": {
            "channels": target.channels, "size": target.size, "mean": target.mean, "std": target.std,
            "pixels": "float in [0, 1] (stored as uint8 k/255 when lossless), shape (N, C, H, W), after the "
                      "target's preprocessing: grayscale<->colour conversion and bilinear resize to HxW",
            "normalize": "(pixels - mean) / std, per channel",
        },
        "recipe": {**{k: getattr(recipe, k) for k in (*RECIPE_KEYS, *OPTIONAL_RECIPE_KEYS)},
                   "learning_rate": recipe.learning_rate, "num_steps": int(num_steps),
                   "loss_definition": LOSS_TEXT[recipe.loss],
                   "minibatch": "batch_size labelled examples (base images, or their views) drawn without replacement at "
                                "every step"
                                + (f", each translated by up to {recipe.augment} pixels (edges replicated)"
                                   if recipe.augment else "")},
        "accuracy": {"mean": result["test_accuracy_mean"], "std": result["test_accuracy_std"],
                     "num_models": len(result["test_accuracy"]), "values": result["test_accuracy"],
                     "split": "test", "seeds": result["seeds"]["test_models"]},
        "config": config_mod.to_dict(cfg),
    }


def save_run_artifact(directory: str | Path, cfg, data, recipe, found: dict, result) -> Path:
    """The end-of-run hook of `distill.run_experiment`: the run's artifact is the one stored
    copy of its images (real base images or synthetic ones) and their labels."""
    synthetic = found.get("pixels") is not None
    if synthetic:
        pixels = found["pixels"]
        n = pixels.shape[0]
        extra = {"base_indices": torch.full((n,), -1, dtype=torch.long),
                 "base_original_labels": found["labels"].argmax(1).cpu()}
    else:
        pixels = data.base_pixels
        extra = {"base_indices": data.base_indices.long(), "base_original_labels": data.base_original_labels.long()}
    card = run_card(cfg, TargetImages.of_data(data), recipe, found["num_steps"], "images" if synthetic else "labels",
                    result)
    s = cfg.storage
    return save_artifact(directory, pixels, found["labels"], card, extra, s.label_dtype, s.top_k,
                         found.get("views"), budget_name(s, found.get("views")))


def export_run(run_dir: str | Path, root: str | None = None, device: str | torch.device = "cpu") -> Path:
    """(Re)write the artifact of a finished run from its config.json and result.json.

    The images come from what the run stored: its artifact, when that is still readable
    (then no dataset is read), or the `synthetic_images.pt` of older image runs. Real base
    images without a readable artifact are selected again from the config's seed, exactly
    as the run selected them; a mismatch with the recorded indices is an error.
    """
    from . import config as config_mod
    from .results import RunDir

    rd = RunDir(run_dir)
    if not rd.is_finished():
        raise DataError(f"{rd.path} holds no finished run (no result.json); finish or resume it first")
    result = rd.read_result()
    try:
        cfg = config_mod.from_dict(rd.read_config())
    except ConfigError as exc:
        raise RunFileError(f"{rd.path / 'config.json'}: {exc}") from None
    stored = _readable_artifact(rd.path, result)
    views = None
    if stored is not None:
        pixels, target = stored.pixels.cpu(), TargetImages.of_card(stored.card)
        extra = {k: stored.tensors[k] for k in ("base_indices", "base_original_labels") if k in stored.tensors}
        kind = stored.card["kind"]
        views = stored.views
    else:
        pixels, target, extra, kind = _images_from_data(rd, result, cfg, root, device)
        recorded = result.get("views")
        if recorded:  # made again as the run made them: its specification and seed
            mean, std = (torch.tensor(v, dtype=torch.float32).view(-1, 1, 1) for v in (target.mean, target.std))
            views = Views.make(ViewSpec.from_dict(recorded), (pixels_to_float(pixels).cpu() - mean) / std,
                               int(recorded["seed"]))
    card = run_card(cfg, target, Recipe.from_config(cfg, result.arch, result.head or evaluation_head(cfg)), result.num_steps, kind, result)
    s = cfg.storage
    path = save_artifact(rd.path, pixels, result.labels, card, extra, s.label_dtype, s.top_k, views, budget_name(s, views))
    if result.artifact != CARD_FILE:
        rd.write_result(replace(result, artifact=CARD_FILE))
    return path


def _readable_artifact(run_dir: Path, result) -> "DistilledDataset | None":
    """The run's stored artifact, or None when it is missing or damaged (export rewrites it)."""
    card = run_dir / (result.artifact or CARD_FILE)
    if not card.is_file():
        return None
    try:
        return load_distilled(card)
    except DataError:
        return None


def _images_from_data(rd, result, cfg, root, device) -> tuple[torch.Tensor, TargetImages, dict, str]:
    """A run without a readable artifact: its synthetic images from `synthetic_images.pt`
    (older image runs), or its real base images selected again from the data."""
    from .data import prepare

    synthetic_file = rd.path / SYNTHETIC_FILE
    if "synthetic_pixels_shape" in result.extra and not synthetic_file.is_file():
        raise DataError(f"the synthetic images of {rd.path} were stored only in its artifact ({CARD_FILE} and "
                        f"{TENSOR_FILE}), which is missing or damaged; restore those files (the images cannot be "
                        "made again without running the experiment)")
    data = prepare(cfg, device, root=root)
    target = TargetImages.of_data(data)
    if synthetic_file.is_file():
        pixels = torch.load(synthetic_file, map_location="cpu", weights_only=True)
        n = pixels.shape[0]
        return pixels, target, {"base_indices": torch.full((n,), -1, dtype=torch.long),
                                "base_original_labels": result.labels.argmax(1)}, "images"
    if data.base_indices.tolist() != result.base_indices.tolist():
        raise DataError(f"the base examples selected from the data under {root or 'the default data root'} differ "
                        f"from those recorded in {rd.result_path}; point --data-root at the run's data")
    extra = {"base_indices": data.base_indices.long(), "base_original_labels": data.base_original_labels.long()}
    return data.base_pixels, target, extra, "labels"


def run_pixels(run_dir: str | Path, result) -> torch.Tensor | None:
    """The images a finished run's labels belong to, (n, C, H, W) float in [0, 1], as the run
    stored them: its artifact (checked as `load_distilled` checks it), or, for image
    distillation runs from before artifacts, `synthetic_images.pt`. None when the run stored
    neither (an old run of real base images: re-read them from the source by their indices)."""
    run_dir = Path(run_dir)
    card = run_dir / (result.get("artifact") or CARD_FILE)
    if card.is_file():
        return load_distilled(card).pixels
    synthetic = run_dir / SYNTHETIC_FILE
    if synthetic.is_file():
        return torch.load(synthetic, map_location="cpu", weights_only=True).float()
    return None


# ---------------------------------------------------------------------------
# reading


class DistilledDataset(torch.utils.data.Dataset):
    """A distilled dataset: items are (normalised image (C, H, W), soft label (C,)).

    Attributes: `images` (N, C, H, W) normalised, `pixels` in [0, 1], `labels`
    (N, num_classes), `card` (the JSON metadata), `recipe` (an
    `evaluate.Recipe`), `num_steps`, `class_names`, `mean`, `std`, `path`.
    """

    def __init__(self, pixels: torch.Tensor, labels: torch.Tensor, card: dict, tensors: dict, path: Path,
                 views=None):
        from .views import Views, apply

        self.card, self.path, self.tensors = card, path, tensors
        img = card["image"]
        self.mean = torch.tensor(img["mean"], dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(img["std"], dtype=torch.float32).view(-1, 1, 1)
        self.pixels = pixels_to_float(pixels)
        self.base_images = (self.pixels - self.mean) / self.std
        self.views = None
        if views is not None:  # one label per view: the views are made again from the base images
            spec, seed, params = views
            self.views = Views(spec, seed, params, apply(self.base_images, params))
        self.images = self.base_images if self.views is None else self.views.images
        self.labels = labels

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i):
        return self.images[i], self.labels[i]

    @property
    def class_names(self) -> list[str]:
        return list(self.card["class_names"])

    @property
    def num_classes(self) -> int:
        return self.labels.shape[1]

    @property
    def num_steps(self) -> int:
        return int(self.card["recipe"]["num_steps"])

    @property
    def recipe(self):
        r = self.card["recipe"]
        extra = {k: r.get(k, default) for k, default in OPTIONAL_RECIPE_KEYS.items()}
        if extra["loss"] not in LOSS_TEXT:  # cards before the loss option stored its description here
            extra["loss"] = "ce"
        return Recipe(**{k: r[k] for k in RECIPE_KEYS}, **extra)

    @property
    def accuracy(self) -> dict:
        return dict(self.card.get("accuracy", {}))

    def to(self, device) -> "DistilledDataset":
        self.images, self.pixels, self.labels, self.base_images = (
            t.to(device) for t in (self.images, self.pixels, self.labels, self.base_images))
        self.mean, self.std = self.mean.to(device), self.std.to(device)
        return self

    def __repr__(self) -> str:
        c = self.card
        return (f"DistilledDataset({len(self)} {c['kind']} examples, {c['method']}, {c['source']}->{c['target']}, "
                f"{self.num_classes} classes, recipe {c['recipe']['arch']}/{c['recipe']['head']} "
                f"{c['recipe']['num_steps']} steps)")


def _locate(path: str | Path) -> tuple[Path, Path]:
    p = Path(path)
    if p.is_dir():
        card = p / CARD_FILE
        if not card.is_file():
            raise DataError(f"{p} holds no {CARD_FILE}; pass a run directory of a finished run or a {CARD_FILE} file")
    elif p.suffix == ".safetensors":
        card = p.with_suffix(".json")
    elif p.suffix == ".json":
        card = p
    elif not p.exists():
        raise DataError(f"no such artifact: {p}; pass a run directory, a {CARD_FILE} or a {TENSOR_FILE}")
    else:
        raise DataError(f"{p} is not a distilled dataset; pass a run directory, a {CARD_FILE} or a {TENSOR_FILE}")
    if not card.is_file():
        raise DataError(f"missing card {card}: a distilled dataset needs both {CARD_FILE} and {TENSOR_FILE}")
    return card, p


def _read_card(card_path: Path) -> dict:
    try:
        card = json.loads(card_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"corrupt card {card_path} ({exc}); restore the file or re-run the experiment") from None
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        raise DataError(f"{card_path} is not a labeldistill distilled-dataset card (no format '{FORMAT}')")
    version = card.get("format_version")
    if version != FORMAT_VERSION:
        raise DataError(f"{card_path} has format version {version!r}; this labeldistill reads version "
                        f"{FORMAT_VERSION}: upgrade labeldistill or re-export the artifact")
    check_card(card, card_path)  # every field read below, of its kind
    if card["recipe"].get("rr_gradients", "detached") not in RR_GRADIENTS:
        raise DataError(f"card {card_path} has an unknown recipe rr_gradients "
                        f"{card['recipe']['rr_gradients']!r}; known: {', '.join(RR_GRADIENTS)}")
    return card


def load_distilled(path: str | Path, device: str | torch.device = "cpu") -> DistilledDataset:
    """Load and verify a distilled dataset (a run directory, its card or its tensor file).

    Raises `DataError` (one line) for a missing, truncated, corrupt or
    mismatched artifact.
    """
    card_path, _ = _locate(path)
    card = _read_card(card_path)
    tensor_path = card_path.parent / card["tensor_file"]
    if not tensor_path.is_file():
        raise DataError(f"missing tensor file {tensor_path} named by {card_path}; copy both files together")
    blob = tensor_path.read_bytes()
    if _sha256(blob) != card["tensor_file_sha256"]:
        raise DataError(f"checksum mismatch: {tensor_path} does not match {card_path.name} (truncated, corrupted "
                        "or from another run); restore the matching pair of files")
    from safetensors.torch import load

    try:
        tensors = load(blob)
    except Exception as exc:  # noqa: BLE001 - any parse failure is one line
        raise DataError(f"cannot read {tensor_path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    for name, spec in card["tensors"].items():
        if name not in tensors:
            raise DataError(f"{tensor_path} lacks the tensor '{name}' listed in {card_path.name}")
        t = tensors[name]
        if list(t.shape) != list(spec["shape"]) or str(t.dtype).replace("torch.", "") != spec["dtype"]:
            raise DataError(f"tensor '{name}' in {tensor_path} is {str(t.dtype).replace('torch.', '')} "
                            f"{list(t.shape)} but the card says {spec['dtype']} {spec['shape']}")
        if tensor_sha256(t) != spec["sha256"]:
            raise DataError(f"checksum mismatch for tensor '{name}' in {tensor_path}; the artifact is corrupted")
    sparse_labels = "label_values" in card["tensors"]
    for name in ("pixels", *(("label_values", "label_indices") if sparse_labels else ("labels",))):
        if name not in tensors or name not in card["tensors"]:
            raise DataError(f"{tensor_path} lacks the tensor '{name}'")
    n, c = card["num_examples"], card["num_classes"]
    if sparse_labels and (tensors["label_values"].shape != tensors["label_indices"].shape
                          or tensors["label_values"].dim() != 2 or _largest(tensors["label_indices"]) >= c):
        raise DataError(f"the top-k labels in {tensor_path} do not fit {c} classes")
    pixels, labels = tensors["pixels"], unpack(tensors, c)
    views = None
    if "views" in card:
        views = _stored_views(card, tensors, card_path)
    img = card["image"]
    base = card.get("num_base_images", n)
    expect = (base, img["channels"], img["size"], img["size"])
    if tuple(pixels.shape) != expect:
        raise DataError(f"the card describes {n} images of {img['channels']}x{img['size']}x{img['size']} but "
                        f"'pixels' has shape {list(pixels.shape)}")
    if tuple(labels.shape) != (n, c) or len(card["class_names"]) != c:
        raise DataError(f"the card describes {n} examples of {c} classes ({len(card['class_names'])} class names) "
                        f"but 'labels' has shape {list(labels.shape)}")
    if len(img["mean"]) != img["channels"] or len(img["std"]) != img["channels"]:
        raise DataError(f"card {card_path}: mean/std need one value per channel ({img['channels']})")
    # Real-valued labels (solved labels, teacher logits) belong with the 'mse' learner only.
    real_valued = card["recipe"].get("loss") == "mse"
    if not bool(torch.isfinite(labels).all()) or (not real_valued and bool((labels < 0).any())):
        raise DataError(f"the soft labels in {tensor_path} hold negative or non-finite values")
    if pixels.dtype != torch.uint8 and (not bool(torch.isfinite(pixels).all()) or pixels.min() < 0 or pixels.max() > 1):
        raise DataError(f"the pixels in {tensor_path} are outside [0, 1]")
    return DistilledDataset(pixels, labels, card, tensors, card_path, views).to(device)


def _largest(t: torch.Tensor) -> int:
    return int(t.max()) if t.numel() else 0


def _stored_views(card: dict, tensors: dict, card_path: Path):
    """The views of an artifact: their stored parameters, which must be those its specification
    and seed draw (so that the views are made again exactly as the run made them)."""
    from .views import ViewParams, ViewSpec, draw_params

    missing = [k for k in ("view_sources", "view_weight", "view_mix", "view_box", "view_theta") if k not in tensors]
    if missing:
        raise DataError(f"{card_path} describes views but its tensors lack {', '.join(missing)}")
    try:
        spec = ViewSpec.from_dict(card["views"])
        seed = int(card["views"]["seed"])
    except (ConfigError, KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{card_path}: its views section cannot be read ({exc})") from None
    params = ViewParams.from_tensors(tensors)
    base = card.get("num_base_images", 0)
    if len(params) != card["num_examples"] or _largest(params.sources) >= base:
        raise DataError(f"{card_path}: {len(params)} view parameters for {card['num_examples']} labels of {base} "
                        "base images")
    img = card["image"]
    if not params.equals(draw_params(spec, base, img["size"], img["size"], seed)):
        raise DataError(f"{card_path}: the stored view parameters differ from those views.seed {seed} draws; the "
                        "artifact was altered")
    return spec, seed, params


# ---------------------------------------------------------------------------
# evaluation with any learner


def evaluate_artifact(ds: DistilledDataset, *, arch: str | None = None, optimizer: str | None = None,
                      lr: float | None = None, head: str | None = None, batch_size: int | None = None,
                      num_steps: int | None = None, num_models: int | None = None, seed: int | None = None,
                      rr_gradients: str | None = None, root: str | None = None,
                      device: str | torch.device = "cpu", download: bool = True, progress=None) -> dict:
    """Train fresh models on a distilled dataset, test them on the target's test set.

    Unset arguments come from the card's recipe. Without `seed`, the models use
    the seeds of the run's own test models (so the card's recipe reproduces
    its accuracy exactly); with `seed`, fresh seeds derived from it. The models
    report to `progress(event, info)` as the phase 'test models'.
    """
    from dataclasses import replace

    from .progress import TESTING, Meter, meter_callback

    from .sources import get_info
    from .evaluate import DEFAULT_LR, accuracy_summary, check_not_diverged, lr_advice, train_and_evaluate
    from .models import check_arch
    from .seeding import derive_seed

    card = ds.card
    recipe = ds.recipe
    changes: dict[str, Any] = {}
    if arch is not None:
        changes["arch"] = check_arch(arch)
    if head is not None:
        if head not in ("linear", "rr"):
            raise DataError(f"unknown head '{head}'; use linear or rr")
        changes["head"] = head
    if optimizer is not None:
        if optimizer not in DEFAULT_LR:
            raise DataError(f"unknown optimizer '{optimizer}'; use one of {', '.join(DEFAULT_LR)}")
        if optimizer != recipe.optimizer:
            changes["lr"] = None  # another optimiser: its own default learning rate unless --lr
        changes["optimizer"] = optimizer
    if lr is not None:
        if not lr > 0 or not math.isfinite(lr):
            raise DataError(f"the learning rate must be positive, got {lr}")
        changes["lr"] = lr
    if batch_size is not None:
        if batch_size < 1:
            raise DataError(f"the batch size must be at least 1, got {batch_size}")
        changes["batch_size"] = batch_size
    if rr_gradients is not None:
        if rr_gradients not in RR_GRADIENTS:
            raise DataError(f"unknown rr_gradients '{rr_gradients}'; use one of {', '.join(RR_GRADIENTS)}")
        changes["rr_gradients"] = rr_gradients
    recipe = replace(recipe, **changes)
    steps = ds.num_steps if num_steps is None else int(num_steps)
    if steps < 1:
        raise DataError(f"the number of steps must be at least 1, got {steps}")
    run_seeds = list(card.get("accuracy", {}).get("seeds") or [])
    count = num_models if num_models is not None else (len(run_seeds) or 20)
    if count < 1:
        raise DataError(f"the number of models must be at least 1, got {count}")
    if seed is None and len(run_seeds) >= count:
        seeds = run_seeds[:count]
    else:
        base = seed if seed is not None else card.get("seed", 0)
        seeds = [derive_seed(base, "evaluate", i) for i in range(count)]
    from .data import dataset_options

    data_cfg = (card.get("config") or {}).get("data") or {}
    opts = dataset_options(data_cfg)  # how a path target was read
    norm = {"mean": data_cfg.get("mean"), "std": data_cfg.get("std")}  # data.mean / data.std, if the run set them
    test_x, test_y = load_test_set(card["target"], root=root, device=device, download=download, **norm, **opts)
    info = get_info(card["target"], **opts, **norm)
    if list(info.mean) != [float(v) for v in card["image"]["mean"]] or info.num_classes != ds.num_classes:
        raise DataError(f"the artifact's preprocessing or classes do not match the target dataset '{card['target']}' "
                        "of this labeldistill version")
    if tuple(test_x.shape[1:]) != tuple(ds.images.shape[1:]):
        raise DataError(f"test images of '{card['target']}' are {list(test_x.shape[1:])} but the artifact's are "
                        f"{list(ds.images.shape[1:])}")
    images, labels = ds.images.to(device), ds.labels.to(device)
    with Meter(progress, TESTING, len(seeds) * steps, "step", per=len(seeds), detail=f"{len(seeds)} models") as meter:
        res = train_and_evaluate(recipe, images, labels, seeds, steps, test_x, test_y, progress=meter_callback(meter))
    check_not_diverged(res, ds.num_classes, "models", lr_advice(recipe, "--lr"))
    summary = accuracy_summary(res.at(steps)[0])
    return {"artifact": str(ds.path), "method": card["method"], "kind": card["kind"],
            "source": card["source"], "target": card["target"], "num_examples": len(ds),
            "recipe": {**asdict(recipe), "learning_rate": recipe.learning_rate, "num_steps": steps},
            "seeds": seeds, **summary, "num_models": len(summary["test_accuracy"]),
            "card_accuracy": card.get("accuracy", {}).get("mean")}


def load_test_set(name: str, root: str | None = None, device: str | torch.device = "cpu",
                  download: bool = True, mean=None, std=None, **options) -> tuple[torch.Tensor, torch.Tensor]:
    """The target's official test split, preprocessed exactly as `data.prepare` does
    (`options`: how a dataset of one's own is read; `mean`, `std`: data.mean / data.std)."""
    from .data import preprocess
    from .sources import get_info, load_raw

    info = get_info(name, **options, mean=mean, std=std)
    raw = load_raw(name, root=root, download=download, **options)
    if raw.x_test is None:
        raise DataError(f"dataset '{name}' has no test split to evaluate on")
    return preprocess(raw.x_test, info, device), raw.y_test.to(device)
