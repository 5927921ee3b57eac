"""Task data of an experiment (SPEC 2): splits, preprocessing, base examples.

Everything is preloaded once as tensors on the run's device; minibatches are
drawn later by indexing with explicit generators.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F

from .budget import check_budget
from .config import Config
from .errors import ConfigError, DataError
from .seeding import generator
from .sources import DEFAULT_TEST_FRACTION, DatasetInfo, get_info, load_raw
from .views import make_views


@dataclass
class TaskData:
    """Preprocessed tensors of one experiment; images are (N, C, H, W) float32, normalised."""

    source: DatasetInfo
    target: DatasetInfo
    target_x: torch.Tensor
    target_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    base_x: torch.Tensor
    base_pixels: torch.Tensor  # (n, C, H, W) in [0, 1]: target preprocessing before normalisation
    base_indices: torch.Tensor  # indices into the source's training split (-1 for fake noise)
    base_original_labels: torch.Tensor  # source classes (-1 for fake noise)
    mean: torch.Tensor  # (C, 1, 1)
    std: torch.Tensor
    origin: str = ""
    sizes: SplitSizes | None = None  # the effective target-set, validation and batch sizes
    # views.Views of the base images: then base_x holds the views (what gets labelled), and
    # base_pixels, base_indices and base_original_labels stay those of the base images
    views: Any = None

    @property
    def num_classes(self) -> int:
        return self.target.num_classes

    @property
    def channels(self) -> int:
        return self.target.channels

    @property
    def image_size(self) -> int:
        return self.target.image_size

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.mean) / self.std


def with_views(data: TaskData, views) -> TaskData:
    """The task data with its examples to label replaced by `views` (views.Views), or as it is (None)."""
    return data if views is None else replace(data, base_x=views.images, views=views)


def with_config_views(cfg: Config, data: TaskData) -> TaskData:
    """The task data with the views `cfg` asks for (none: as it is), once their labels are known to
    fit the storage budget (budget.check_budget)."""
    check_budget(cfg, data.base_pixels, data.num_classes)
    return with_views(data, make_views(cfg, data.base_x))


def to_pixels(images: torch.Tensor, channels: int, size: int) -> torch.Tensor:
    """uint8 (N, H, W) or (N, H, W, 3) -> float (N, channels, size, size) in [0, 1].

    Source images get the target's shape: grayscale becomes three equal
    channels, colour becomes luminance, and other sizes are resized (bilinear).
    """
    x = images.float().div_(255.0)
    x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)
    if x.shape[1] != channels:
        if channels == 3:
            x = x.expand(-1, 3, -1, -1)
        else:
            w = torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)
            x = (x * w).sum(1, keepdim=True)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.contiguous()


def _stats(info: DatasetInfo, device) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(info.mean, device=device).view(-1, 1, 1)
    std = torch.tensor(info.std, device=device).view(-1, 1, 1)
    return mean, std


def preprocess(images: torch.Tensor, info: DatasetInfo, device=None) -> torch.Tensor:
    """Raw uint8 images -> the normalised float tensors a model of target `info` sees."""
    device = device if device is not None else images.device
    mean, std = _stats(info, device)
    return (to_pixels(images.to(device), info.channels, info.image_size) - mean) / std


def dataset_options(data_cfg) -> dict:
    """How datasets named by a path are read (ignored by registered ones): from a
    config's `data` section, or a mapping of it (a run's or an artifact's saved config)."""
    get = data_cfg.get if isinstance(data_cfg, dict) else lambda k, default: getattr(data_cfg, k, default)
    return {"image_size": get("image_size", None), "test_fraction": get("test_fraction", DEFAULT_TEST_FRACTION),
            "image_column": get("image_column", None), "label_column": get("label_column", None)}


def split_train(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (target set, validation set) indices of a training split of size n."""
    perm = torch.randperm(n, generator=generator(seed, "split"))
    n_val = validation_size(n, val_fraction)
    return perm[n_val:], perm[:n_val]


def validation_size(n: int, val_fraction: float) -> int:
    return int(n * val_fraction + 0.5)


# Targets whose whole target set is always used: the reference's Kuzushiji-49 branch
# never applies target_set_size (its files say 50000 of 209,128).
_WHOLE_TARGET_SET = ("k49",)


@dataclass(frozen=True)
class SplitSizes:
    """What a run uses of its target's training split, and what was adjusted to get there."""

    target_set: int  # effective target-set size
    available: int  # the whole target set (training split minus validation)
    validation: int
    batch_size: int  # effective target minibatch of the outer loop
    notes: tuple[str, ...] = ()  # one line per value adjusted, for the run's log

    def as_dict(self) -> dict:
        return {"target_set_size": self.target_set, "available_target_set_size": self.available,
                "validation_set_size": self.validation, "batch_size": self.batch_size}


def split_sizes(cfg: Config, num_train: int, target_batches: bool = True) -> SplitSizes:
    """The effective sizes of a run whose target has `num_train` training images.

    As in the reference scripts, a target_set_size above the target set is clamped
    to it (`min(target_set_size, 50000)` on MNIST, every reference file says 50000,
    CIFAR ones too), Kuzushiji-49 ignores it, and the outer loop's minibatch is at
    most the target set (a DataLoader's batch is never larger than its dataset).
    The config keeps what the user wrote; `notes` say what was adjusted.
    """
    d = cfg.data
    info = get_info(d.target, **dataset_options(d))
    validation = validation_size(num_train, info.val_fraction)
    available = num_train - validation
    if available < 1:
        raise DataError(f"dataset '{d.target}' has only {num_train} training images: too few to split off a "
                        "validation set and keep a target set")
    size, notes = available, []
    requested = d.target_set_size
    if requested is not None:
        if d.target in _WHOLE_TARGET_SET:
            notes.append(f"data.target_set_size={requested} is ignored for '{d.target}', as in the reference: "
                         f"its whole target set of {available} examples is used")
        elif requested > available:
            notes.append(f"data.target_set_size={requested} is more than the {available} target-set examples of "
                         f"'{d.target}'; using all {available} (min(target_set_size, {available}), as the "
                         "reference scripts do)")
        else:
            size = requested
    batch = cfg.distill.batch_size
    if batch > size:
        if target_batches:  # direct methods never draw target minibatches
            notes.append(f"distill.batch_size={batch} is more than the {size}-example target set; each outer "
                         f"step uses the whole target set ({size} examples)")
        batch = size
    return SplitSizes(size, available, validation, batch, tuple(notes))


def select_balanced(labels: torch.Tensor, num: int, num_classes: int, seed: int) -> torch.Tensor:
    """num / C examples per class; with more source classes than C, the first C
    classes met in a shuffled pass are used. Returns indices in pass order."""
    perm = torch.randperm(labels.shape[0], generator=generator(seed, "base"))
    order = labels[perm].tolist()
    used: list[int] = []
    for c in order:
        if c not in used:
            used.append(c)
            if len(used) == num_classes:
                break
    if num < len(used):
        raise ConfigError(f"balanced selection needs at least {len(used)} base examples (one per class), got {num}")
    quota = {c: num // len(used) + (1 if i < num % len(used) else 0) for i, c in enumerate(used)}
    chosen = []
    for i, c in zip(perm.tolist(), order):
        if quota.get(c, 0) > 0:
            chosen.append(i)
            quota[c] -= 1
            if len(chosen) == num:
                break
    if len(chosen) < num:
        raise DataError(f"the source has too few examples for {num} balanced base examples")
    return torch.tensor(chosen, dtype=torch.long)


def select_unbalanced(n: int, num: int, seed: int) -> torch.Tensor:
    """A uniformly random set of base examples, whatever their classes."""
    if num > n:
        raise ConfigError(f"data.num_base_examples={num} exceeds the {n} source training images")
    return torch.randperm(n, generator=generator(seed, "base"))[:num]


def remap_classes(original: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Map source classes to target class ids in order of first appearance (baselines)."""
    mapping: dict[int, int] = {}
    for c in original.tolist():
        if c not in mapping:
            mapping[c] = len(mapping)
    if len(mapping) > num_classes:
        raise ConfigError(
            f"the base examples cover {len(mapping)} source classes but the target has only {num_classes}; "
            "a true-label baseline needs at most one source class per target class (use fewer base examples "
            "or balanced selection)")
    return torch.tensor([mapping[c] for c in original.tolist()], dtype=torch.long)


def prepare(cfg: Config, device: torch.device | str = "cpu", root=None, target_batches: bool = True) -> TaskData:
    """Load, split and preprocess the target; select and preprocess the base examples.
    `target_batches`: whether the method draws target minibatches (meta-learning does), so
    that a batch size above the target set is worth a notice."""
    d = cfg.data
    root = root if root is not None else d.root
    opts = dataset_options(d)
    # data.mean / data.std, if given, normalise the target and the source images it sees
    target_info = get_info(d.target, **opts, mean=getattr(d, "mean", None), std=getattr(d, "std", None))
    source_info = get_info(d.source, **opts)
    raw = load_raw(d.target, root=root, download=d.download, **opts)
    if raw.x_test is None:
        raise DataError(f"dataset '{d.target}' has no test split and cannot be a target")
    c, s = target_info.channels, target_info.image_size
    mean, std = _stats(target_info, device)

    def prep(images: torch.Tensor) -> torch.Tensor:
        return preprocess(images, target_info, device)

    sizes = split_sizes(cfg, raw.x_train.shape[0], target_batches)
    train_idx, val_idx = split_train(raw.x_train.shape[0], target_info.val_fraction, cfg.seed)
    train_idx = train_idx[: sizes.target_set]

    n = d.num_base_examples
    if d.source == "fake":
        g = generator(cfg.seed, "fake")
        pixels = torch.rand(n, c, s, s, generator=g).to(device)
        indices = torch.full((n,), -1, dtype=torch.long)
        original = torch.arange(n) % target_info.num_classes
        origin = "fake"
    else:
        src = raw if d.source == d.target else load_raw(d.source, root=root, download=d.download, **opts)
        if cfg.balanced:
            indices = select_balanced(src.y_train, n, target_info.num_classes, cfg.seed)
        else:
            indices = select_unbalanced(src.y_train.shape[0], n, cfg.seed)
        pixels = to_pixels(src.x_train[indices].to(device), c, s)
        original = src.y_train[indices].clone()
        origin = src.origin
    return TaskData(
        source=source_info, target=target_info,
        target_x=prep(raw.x_train[train_idx]), target_y=raw.y_train[train_idx].to(device),
        val_x=prep(raw.x_train[val_idx]), val_y=raw.y_train[val_idx].to(device),
        test_x=prep(raw.x_test), test_y=raw.y_test.to(device),
        base_x=(pixels - mean) / std, base_pixels=pixels,
        base_indices=indices, base_original_labels=original,
        mean=mean, std=std, origin=origin, sizes=sizes,
    )


def data_fingerprint(data: TaskData) -> dict:
    """What a resume must find as the run started: the base examples and the splits' labels
    and shapes (exact, hashed), and sums of the images (compared within float tolerance,
    since a run may resume on another device). Cheap next to one epoch."""
    h = hashlib.sha256()
    for t in (data.base_indices, data.base_original_labels, data.target_y, data.val_y, data.test_y,
              data.target_x, data.val_x, data.test_x):
        h.update(repr(tuple(t.shape)).encode())
        if not t.is_floating_point():
            h.update(t.detach().cpu().long().numpy().tobytes())
    # Per base image: its sum and two fixed random projections (a flipped or shifted image differs too).
    pixels = data.base_pixels.detach().flatten(1).double().cpu()
    weights = torch.rand(pixels.shape[1], 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return {"sha256": h.hexdigest(),
            "base_pixel_sums": torch.cat([pixels.sum(1, keepdim=True), pixels @ weights], 1),
            "split_sums": torch.stack([x.detach().sum(dtype=torch.float64)
                                       for x in (data.target_x, data.val_x, data.test_x)]).cpu()}
