"""What a method is given and what it gives back.

`MethodContext` holds the prepared task data without the test split, the
learner the validation models use, seeds, and an event sink; a meta-learning
method also gets its run folder and stop guard for checkpoints. The simplest
method of one's own reads only `base_x`, `base_labels`, `target_x`,
`target_y`, `num_classes` and `generator` (docs/usage.md, "Methods of your own").

`MethodOutput` is what every method returns: the images and labels the test
models train on, the number of steps and learner chosen on validation, and
what the choice was made with.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch

from ..budget import compress
from ..data import TaskData, remap_classes
from ..evaluate import Recipe, step_grid
from ..labels import one_hot
from ..progress import Progress
from ..seeding import derive_seeds, generator
from ..views import true_labels as view_true_labels


# Step counts searched with views when evaluate.step_grid is empty: a pool of views takes
# longer to learn than the reference's few base images.
VIEW_STEP_GRID = (500, 1000, 1500, 2000, 3000)


@dataclass
class MethodContext:
    cfg: Any  # the run's Config
    data: TaskData  # test_x / test_y are None: a method never sees the test split
    arch: str
    recipe: Recipe  # how validation models learn (evaluate.*, the method's head)
    device: torch.device
    # emit("event", key=value, ...): a fact of the run, logged to metrics.jsonl and passed to progress
    emit: Callable[..., None] = lambda event, **info: None
    progress: Progress | None = None  # where long work reports how far it is (labeldistill.progress)
    run_dir: Any = None  # results.RunDir, for a meta-learning method's checkpoints
    stop: Any = None  # signals.StopGuard: stop between two steps when requested
    checkpoint: dict | None = None  # the state to resume from
    # What the outer run adds to every checkpoint (the data's fingerprint, checked on resume)
    checkpoint_extra: Callable[[], dict] = dict
    # What a method may keep for the rest of the run (trained teachers), shared by the contexts
    # derived from this one
    cache: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.data.test_x is not None or self.data.test_y is not None:
            self.data = replace(self.data, test_x=None, test_y=None)

    # -- seeds ---------------------------------------------------------------
    def seeds(self, *names, count: int) -> list[int]:
        """`count` seeds derived from the run's seed and `names` (e.g. seeds("val", count=3))."""
        return derive_seeds(self.cfg.seed, *names, count=count)

    @property
    def generator(self) -> torch.Generator:
        """A generator seeded from the run's seed, for a method's own random draws."""
        return generator(self.cfg.seed, "method", self.cfg.method)

    def step_grid(self) -> list[int]:
        """Step counts at which validation models are measured: evaluate.step_grid, or the
        reference's grid for the number of base examples (SPEC 5)."""
        if self.cfg.evaluate.step_grid:
            return sorted(set(self.cfg.evaluate.step_grid))
        return list(VIEW_STEP_GRID) if self.data.views is not None else step_grid(self.cfg.data.num_base_examples)

    def stored(self, labels: torch.Tensor, loss: str) -> torch.Tensor:
        """`labels` as the run stores them (storage.label_dtype, storage.top_k: budget.compress):
        what validation models must train on so that the choice holds for what is tested."""
        return compress(labels, self.cfg.storage.label_dtype, self.cfg.storage.top_k, loss)

    # -- the simple protocol's data --------------------------------------------
    @property
    def base_x(self) -> torch.Tensor:
        """The base images, normalised as the learner sees them: (n, C, H, W)."""
        return self.data.base_x

    @property
    def base_image_labels(self) -> torch.Tensor:
        """The base images' original classes as target classes: their own class within a dataset;
        across datasets the reference's remapping, as the true-label baseline uses (SPEC 5)."""
        d = self.data
        if self.cfg.data.source == self.cfg.data.target or self.cfg.data.source == "fake":
            return d.base_original_labels
        return remap_classes(d.base_original_labels, d.num_classes)

    @property
    def base_labels(self) -> torch.Tensor:
        """The class of every row of `base_x` (`base_image_labels`); with views, that of the base
        image each view was made from (a mixed view also holds another image: `true_labels`)."""
        classes = self.base_image_labels
        views = self.data.views
        return classes if views is None else classes[views.params.sources[:, 0]]

    def true_labels(self, smoothing: float = 0.0) -> torch.Tensor:
        """(len(base_x), num_classes) true labels, (1 - smoothing) * y + smoothing / C: one-hot classes
        of the base images, or, with views, each view's two classes in proportion to their share."""
        views = self.data.views
        if views is None:
            y = one_hot(self.base_image_labels, self.num_classes)
        else:
            y = view_true_labels(views.params, self.base_image_labels, self.num_classes)
        if smoothing:
            y = y * (1.0 - smoothing) + smoothing / self.num_classes
        return y.to(self.base_x.device)

    @property
    def target_x(self) -> torch.Tensor:
        """The target training split without the validation and test examples."""
        return self.data.target_x

    @property
    def target_y(self) -> torch.Tensor:
        return self.data.target_y

    @property
    def num_classes(self) -> int:
        return self.data.num_classes


@dataclass
class MethodOutput:
    labels: torch.Tensor  # (n, num_classes) labels of `images`
    images: torch.Tensor  # (n, C, H, W) normalised images the test models train on
    num_steps: int  # training steps of the test models, chosen on validation
    val_error: float  # validation error (%) of the choice
    recipe: Recipe  # how the test models learn: the learner the choice was validated with
    history: list[dict] = field(default_factory=list)  # epochs, or the step search's measurements
    info: dict = field(default_factory=dict)  # added to the result: teacher, solve, label_choice, ...
    best_epoch: int | None = None
    pixels: torch.Tensor | None = None  # synthetic images in [0, 1] (kind "images")
    train_seconds: float = 0.0
    views: Any = None  # views.Views the labels belong to (one label per view); None: one per image
    # Models the method trained whose test accuracy is reported for context, never used to choose
    # anything (a teacher): {"teacher": model} adds info["teacher"]["test_accuracy"].
    reference_models: dict[str, torch.nn.Module] = field(default_factory=dict)
