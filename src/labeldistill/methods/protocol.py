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

from ..data import TaskData, remap_classes
from ..evaluate import Recipe, step_grid
from ..progress import Progress
from ..seeding import derive_seeds, generator


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
        return sorted(set(self.cfg.evaluate.step_grid)) or step_grid(self.cfg.data.num_base_examples)

    # -- the simple protocol's data --------------------------------------------
    @property
    def base_x(self) -> torch.Tensor:
        """The base images, normalised as the learner sees them: (n, C, H, W)."""
        return self.data.base_x

    @property
    def base_labels(self) -> torch.Tensor:
        """The base images' original classes as target classes: their own class within a dataset;
        across datasets the reference's remapping, as the true-label baseline uses (SPEC 5)."""
        d = self.data
        if self.cfg.data.source == self.cfg.data.target or self.cfg.data.source == "fake":
            return d.base_original_labels
        return remap_classes(d.base_original_labels, d.num_classes)

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
    # Models the method trained whose test accuracy is reported for context, never used to choose
    # anything (a teacher): {"teacher": model} adds info["teacher"]["test_accuracy"].
    reference_models: dict[str, torch.nn.Module] = field(default_factory=dict)
