"""Choosing among candidate labels on the validation split (SPEC 5 and 10).

A direct method turns the task data into one or more *candidates*: labels for
the base examples and the learner's loss that goes with them. True labels and
label smoothing give one candidate; teacher labels (`baseline-kd`) and kernel
label solving (`label-solve`) give real-valued labels (logits, solved vectors)
that the 'ce' learner needs as distributions, so they offer softmax(y / t) for
every configured temperature t, or the raw vectors for the 'mse' learner
(`real_valued`). `choose_on_validation` trains validation models on every
candidate and keeps the candidate and number of steps with the lowest
validation error; it receives the validation split only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Sequence

import torch

from ..errors import RunError
from ..evaluate import Recipe, diverged, lr_advice, train_and_evaluate
from ..progress import STEP_SEARCH, Meter, Progress, meter_callback


@dataclass
class Candidate:
    """Labels of the base examples and the learner loss they are meant for."""

    name: str
    labels: torch.Tensor
    loss: str
    info: dict = field(default_factory=dict)  # what made them: temperature, lambda, ...


def real_valued(cfg, values: torch.Tensor, what: str, temperatures: Sequence[float], info: dict) -> list[Candidate]:
    """Real-valued labels as the configured learner needs them: raw for 'mse', softmax(y / t) for 'ce'."""
    if cfg.evaluate.loss == "mse":
        return [Candidate(f"{what}, raw", values, "mse", dict(info))]
    return [Candidate(f"{what}, softmax(y / {t:g})", torch.softmax(values / t, dim=-1), "ce",
                      {**info, "temperature": t}) for t in temperatures]


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
