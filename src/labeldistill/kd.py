"""Knowledge-distillation baseline (method `baseline-kd`).

A teacher (the run's architecture with a linear head) is trained on the full
target set (the training split minus the validation set) with Adam; the base
examples then get the soft labels softmax(teacher(x~) / T). Because the
teacher labels images in the *target's* classes, this works for cross-dataset
base examples too (EMNIST letters labelled as MNIST digits), where true labels
need a class remapping. The student side is the ordinary evaluation recipe
(soft cross-entropy on these labels), exactly as for the other baselines.
"""
from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

from .evaluate import Recipe, init_model
from .progress import TEACHERS, Meter, Progress
from .seeding import derive_seed, generator, seeded_global_rng


SCHEDULES = ("constant", "cosine")


def train_teacher(arch: str, x: torch.Tensor, y: torch.Tensor, num_classes: int, *, epochs: int,
                  batch_size: int, lr: float, seed: int, meter: Meter | None = None,
                  name: str = "teacher", schedule: str = "constant") -> torch.nn.Module:
    """A model trained with Adam on (x, y) for `epochs` passes in seeded random order, at a
    constant learning rate or one annealed to 0 along a cosine over all steps (`schedule`);
    `meter` advances by one per step, its detail names `name` and the epoch."""
    model = init_model(Recipe(arch=arch), derive_seed(seed, "teacher_init"), x.shape[1], num_classes,
                       x.shape[-1]).to(x.device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = None
    if schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * math.ceil(x.shape[0] / batch_size))
    elif schedule != "constant":
        raise ValueError(f"unknown teacher schedule {schedule!r}; known: {', '.join(SCHEDULES)}")
    g = generator(seed, "teacher_order")
    model.train()
    with seeded_global_rng(derive_seed(seed, "teacher_random_ops"), x.device):  # dropout in a model of one's own
        _fit(model, opt, x, y, epochs, batch_size, g, meter, name, scheduler)
    return model.eval()


def _fit(model, opt, x, y, epochs: int, batch_size: int, g: torch.Generator, meter: Meter | None,
         name: str, scheduler=None) -> None:
    for epoch in range(epochs):
        if meter is not None:
            meter.update(detail=f"{name}, epoch {epoch + 1}/{epochs}")
        order = torch.randperm(x.shape[0], generator=g).to(x.device)
        for start in range(0, x.shape[0], batch_size):
            sel = order[start:start + batch_size]
            loss = F.cross_entropy(model(x[sel]), y[sel])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if scheduler is not None:
                scheduler.step()
            if meter is not None:
                meter.advance()


@torch.no_grad()
def logits_of(model: torch.nn.Module, x: torch.Tensor, batch: int = 1024) -> torch.Tensor:
    return torch.cat([model(x[i:i + batch]) for i in range(0, x.shape[0], batch)])


def soft_labels(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(logits / T): T = 1 is the teacher's own prediction, larger T is flatter."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return torch.softmax(logits.float() / temperature, dim=-1)


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return 100.0 * float((logits_of(model, x).argmax(-1) == y).float().mean())


class Ensemble(torch.nn.Module):
    """Teachers whose logits are averaged."""

    def __init__(self, models: list[torch.nn.Module]):
        super().__init__()
        self.models = torch.nn.ModuleList(models)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.models]).mean(0)


def teacher_seed(seed: int, index: int) -> int:
    """The seed of teacher `index` of an ensemble; the first is the single teacher's."""
    return seed if index == 0 else derive_seed(seed, "teacher", index)


# Cache entries: the time the last teacher took to train, and all teachers together
TEACHER_SECONDS, TEACHERS_TOTAL = "seconds per teacher", "seconds training teachers"


def _teacher_keys(cfg, arch: str) -> list[tuple]:
    e = cfg.teacher
    return [("teacher", arch, teacher_seed(cfg.seed, i), e.train_epochs, e.train_lr, e.train_batch_size, e.schedule)
            for i in range(e.num_teachers)]


def untrained_teachers(cfg, arch: str, cache: dict) -> int:
    """How many of the teachers `cfg` asks for `cache` does not hold yet."""
    return sum(k not in cache for k in _teacher_keys(cfg, arch))


def train_teachers(cfg, data, arch: str, progress: Progress | None = None,
                   cache: dict | None = None) -> tuple[torch.nn.Module, dict]:
    """A teacher trained on the target set and facts about it (its validation accuracy). With
    `teacher.num_teachers` > 1 the teacher is an ensemble of that many, each with its own
    initialisation and data order, whose logits are averaged. Training reports to `progress`
    as the phase 'training teachers', in steps of all teachers together. With `cache` (a dict
    kept for the run), a teacher already trained with the same seed and settings is reused:
    an ensemble of three after one teacher trains two more."""
    e = cfg.teacher
    count = e.num_teachers
    cache = {} if cache is None else cache
    keys = _teacher_keys(cfg, arch)
    todo = [i for i in range(count) if keys[i] not in cache]
    t0 = time.perf_counter()
    steps = len(todo) * e.train_epochs * math.ceil(data.target_x.shape[0] / e.train_batch_size)
    names = [f"teacher {i + 1}/{count}" if count > 1 else "teacher" for i in range(count)]
    first = names[todo[0]] if todo else names[0]
    with Meter(progress, TEACHERS, steps, "step", detail=f"{first}, epoch 1/{e.train_epochs}") as meter:
        for i in todo:
            cache[keys[i]] = train_teacher(arch, data.target_x, data.target_y, data.num_classes,
                                           epochs=e.train_epochs, batch_size=e.train_batch_size, lr=e.train_lr,
                                           seed=teacher_seed(cfg.seed, i), meter=meter, name=names[i],
                                           schedule=e.schedule)
    if todo:  # what one teacher costs, for a caller that plans how many more to train
        spent = time.perf_counter() - t0
        cache[TEACHER_SECONDS] = spent / len(todo)
        cache[TEACHERS_TOTAL] = cache.get(TEACHERS_TOTAL, 0.0) + spent
    teachers = [cache[k] for k in keys]
    teacher = teachers[0] if len(teachers) == 1 else Ensemble(teachers).eval()
    info = {"arch": arch, "epochs": e.train_epochs, "batch_size": e.train_batch_size,
            "lr": e.train_lr, **({"schedule": e.schedule} if e.schedule != "constant" else {}),
            "val_accuracy": accuracy(teacher, data.val_x, data.val_y)}
    if len(teachers) > 1:
        info["num_teachers"] = len(teachers)
        info["member_val_accuracy"] = [accuracy(t, data.val_x, data.val_y) for t in teachers]
    return teacher, info


def teacher_logits(cfg, data, arch: str,
                   progress: Progress | None = None) -> tuple[torch.Tensor, dict, torch.nn.Module]:
    """The logits of a teacher trained on the target set (`train_teachers`) for the base
    examples, facts about the teacher and the teacher itself."""
    teacher, info = train_teachers(cfg, data, arch, progress)
    return logits_of(teacher, data.base_x), info, teacher


def kd_labels(cfg, data, arch: str) -> tuple[torch.Tensor, dict]:
    """Soft labels softmax(teacher(x~) / T) at the configured temperature; and teacher facts."""
    logits, info, _ = teacher_logits(cfg, data, arch)
    return soft_labels(logits, cfg.teacher.temperature), {**info, "temperature": cfg.teacher.temperature}
