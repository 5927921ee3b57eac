"""Methods that make labels directly, without meta-learning (SPEC 5 and 10).

Each method turns the task data into one or more *candidates*: labels for the
base examples and the learner's loss that goes with them. True labels and
label smoothing give one candidate; teacher labels (`baseline-kd`) and
kernel label solving (`label-solve`) give real-valued labels (logits, solved
vectors) that the 'ce' learner needs as distributions, so they offer
softmax(y / t) for every configured temperature t, or the raw vectors for the
'mse' learner. `choose_on_validation` trains validation models on every
candidate and keeps the candidate and number of steps with the lowest
validation error; it receives the validation split only.

A label maker is `maker(cfg, data, arch, progress=None)`; long work reports to
`progress` (see `labeldistill.progress`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import torch

from .data import TaskData, remap_classes
from .errors import RunError
from .evaluate import CHANCE_MARGIN, Recipe, diverged, lr_advice, train_and_evaluate
from .labels import one_hot
from .progress import STEP_SEARCH, Meter, Progress, meter_callback

# label-solve's temperatures when evaluate.label_temperatures is empty.
SOLVE_TEMPERATURES = (0.1, 0.3, 1.0)


@dataclass
class Candidate:
    """Labels of the base examples and the learner loss they are meant for."""

    name: str
    labels: torch.Tensor
    loss: str
    info: dict = field(default_factory=dict)  # what made them: temperature, lambda, ...


def _true_labels(cfg, data: TaskData, arch: str, progress: Progress | None = None):
    if cfg.data.source == cfg.data.target or cfg.data.source == "fake":
        classes = data.base_original_labels
    else:
        classes = remap_classes(data.base_original_labels, data.num_classes)
    smoothing = cfg.evaluate.label_smoothing if cfg.method == "baseline-ls" else 0.0
    labels = one_hot(classes, data.num_classes, smoothing).to(data.base_x.device)
    name = f"one-hot, smoothing {smoothing}" if smoothing else "one-hot"
    return [Candidate(name, labels, cfg.evaluate.loss, {"smoothing": smoothing})], {"remapped_labels": classes}


def _real_valued(cfg, values: torch.Tensor, what: str, temperatures: Sequence[float], info: dict) -> list[Candidate]:
    """Real-valued labels as the configured learner needs them: raw for 'mse', softmax(y / t) for 'ce'."""
    if cfg.evaluate.loss == "mse":
        return [Candidate(f"{what}, raw", values, "mse", dict(info))]
    return [Candidate(f"{what}, softmax(y / {t:g})", torch.softmax(values / t, dim=-1), "ce",
                      {**info, "temperature": t}) for t in temperatures]


def _teacher(cfg, data: TaskData, arch: str, progress: Progress | None = None):
    # A teacher trained on the target set labels images in the target's classes, so
    # cross-dataset base examples (letters labelled as digits) need no class remapping.
    from .kd import teacher_logits

    logits, teacher, model = teacher_logits(cfg, data, arch, progress)
    chance = 100.0 * CHANCE_MARGIN / data.num_classes
    if not bool(torch.isfinite(logits).all()) or teacher["val_accuracy"] <= chance:
        # A teacher at chance labels the base examples with noise: every candidate would be wrong.
        raise RunError(f"the teacher diverged or did not learn (validation accuracy {teacher['val_accuracy']:.2f} %, "
                       f"chance {100.0 / data.num_classes:.2f} %); lower evaluate.kd_teacher_lr (now "
                       f"{cfg.evaluate.kd_teacher_lr:g}) or raise evaluate.kd_teacher_epochs (now "
                       f"{cfg.evaluate.kd_teacher_epochs})")
    temps = cfg.evaluate.label_temperatures or (cfg.evaluate.kd_temperature,)
    return _real_valued(cfg, logits, "teacher logits", temps, {}), {"teacher": teacher, "teacher_model": model}


def _label_solve(cfg, data: TaskData, arch: str, progress: Progress | None = None):
    from .solve import label_solve

    solved, info = label_solve(cfg, data, arch, progress)
    temps = cfg.evaluate.label_temperatures or SOLVE_TEMPERATURES
    candidates = []
    for lam, labels in solved.items():
        candidates += _real_valued(cfg, labels.to(data.base_x.device), f"solved (lambda {lam:g})", temps,
                                   {"ridge_lambda": lam})
    return candidates, {"solve": info}


LABEL_MAKERS: dict[str, Callable] = {
    "baseline": _true_labels,
    "baseline-ls": _true_labels,
    "baseline-kd": _teacher,
    "label-solve": _label_solve,
}


def label_candidates(cfg, data: TaskData, arch: str,
                     progress: Progress | None = None) -> tuple[list[Candidate], dict]:
    """The method's candidate labels and facts about how they were made (for the result).

    The method sees the target set, the validation set and the base examples, never the
    test split: it is removed before the call.
    """
    return LABEL_MAKERS[cfg.method](cfg, replace(data, test_x=None, test_y=None), arch, progress)


def earliest_lowest(errors: list[float]) -> int:
    """Index of the first lowest value: a later step count replaces the best only when
    strictly lower, as in the reference's step search (SPEC 5)."""
    best = 0
    for i, e in enumerate(errors):
        if e < errors[best]:
            best = i
    return best


@dataclass
class Choice:
    candidate: Candidate
    recipe: Recipe
    num_steps: int
    val_error: float
    history: list[dict]


def choose_on_validation(recipe: Recipe, base_x: torch.Tensor, candidates: Sequence[Candidate],
                         seeds: Sequence[int], grid: Sequence[int], val_x: torch.Tensor,
                         val_y: torch.Tensor, progress: Progress | None = None,
                         phase: str = STEP_SEARCH) -> Choice:
    """Train `len(seeds)` models per candidate, measure their mean validation error at every
    step of `grid`; the lowest wins, the earliest step and then the first candidate on ties
    (strictly lower replaces, SPEC 5). Reports to `progress` as `phase`, in steps of all
    candidates together.

    A step count at which any validation model had diverged, and every later one, is never
    chosen (up to the first divergence the models are those of a shorter run, which did not
    diverge); when no step of any candidate is left, a `RunError` says what to lower.
    """
    best: Choice | None = None
    history = []
    what = [f"candidate {k}/{len(candidates)}: {c.name}" if len(candidates) > 1 else f"labels: {c.name}"
            for k, c in enumerate(candidates, 1)]
    meter = Meter(progress, phase, len(candidates) * len(seeds) * max(grid), "step", per=len(seeds), detail=what[0])
    for cand, detail in zip(candidates, what):
        meter.update(detail=detail)
        r = replace(recipe, loss=cand.loss)
        val = train_and_evaluate(r, base_x, cand.labels, seeds, max(grid), val_x, val_y, eval_steps=grid,
                                 progress=meter_callback(meter))
        errors = val.errors.mean(1).tolist()
        losses = val.losses.mean(1).tolist()
        bad = diverged(val, cand.labels.shape[-1]).any(1).cummax(0).values.tolist()
        for s, e, l, b in zip(val.steps, errors, losses, bad):
            history.append({"num_steps": s, "val_error": e, "val_loss": l, **({"diverged": True} if b else {}),
                            **({"candidate": cand.name} if len(candidates) > 1 else {})})
        usable = [math.inf if b else e for e, b in zip(errors, bad)]
        i = earliest_lowest(usable)
        if usable[i] < (math.inf if best is None else best.val_error):
            best = Choice(cand, r, val.steps[i], errors[i], [])
    meter.close()
    if best is None:
        which = "every label candidate" if len(candidates) > 1 else "the labels"
        raise RunError(f"the validation models of {which} diverged at every step count of the step search "
                       f"(from {min(grid)} steps); {lr_advice(recipe)}")
    best.history = history
    return best
