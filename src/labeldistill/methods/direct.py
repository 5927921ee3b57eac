"""Direct methods: labels made without meta-learning, then the step search on validation.

`direct_method(...)` declares one: its candidates function turns a
`MethodContext` into candidate labels (and facts about how they were made);
`run_direct` trains validation models on each candidate, keeps the candidate,
learner and number of steps with the lowest validation error, and returns them
as a `MethodOutput`. A new direct method is one file with one decorated
function (see true_labels.py).
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable

from ..evaluate import lr_advice
from ..progress import INITIAL_LABELS
from .choose import Candidate, Choice, choose_on_validation
from .protocol import MethodContext, MethodOutput
from .registry import Method, register_method

CandidatesFn = Callable[[MethodContext], "tuple[list[Candidate], dict]"]


def direct_method(name: str, *, title: str, summary: str, order: int = 100, head: str = "linear",
                  options: str | None = None, validate: Callable | None = None, describe: Callable | None = None,
                  register: bool = True) -> Callable[[CandidatesFn], CandidatesFn]:
    """Declare `candidates(ctx) -> (candidates, info)` as the direct method `name` (the fields are
    `registry.Method`'s)."""
    def declare(candidates: CandidatesFn) -> CandidatesFn:
        method = as_method(name, candidates, title=title, summary=summary, order=order, head=head,
                           options=options, validate=validate, describe=describe)
        if register:
            register_method(method)
        candidates.method = method  # so that `method: "module:function"` finds the declaration
        return candidates
    return declare


def as_method(name: str, candidates: CandidatesFn, **fields) -> Method:
    return Method(name=name, kind="direct", run=lambda ctx: run_direct(ctx, candidates), candidates=candidates,
                  **fields)


def run_direct(ctx: MethodContext, candidates: CandidatesFn) -> MethodOutput:
    """The method's candidates, then the learner and steps chosen on the validation split."""
    cfg, data = ctx.cfg, ctx.data
    t0 = time.perf_counter()
    offered, info = candidates(ctx)
    # Validated as they will be stored (storage.label_dtype, storage.top_k)
    offered = [replace(c, labels=ctx.stored(c.labels, c.loss)) for c in offered]
    info = dict(info)
    reference_models = info.pop("reference_models", {})
    choice = choose_on_validation(ctx.recipe, data.base_x, offered, ctx.seeds("val", count=cfg.evaluate.num_val_models),
                                  ctx.step_grid(), data.val_x, data.val_y, progress=ctx.progress)
    note_diverged(ctx, choice)
    ctx.emit("step_search", num_steps=choice.num_steps, val_error=choice.val_error, labels=choice.candidate.name)
    if "teacher" in info and "temperature" in choice.candidate.info:
        info["teacher"] = {**info["teacher"], "temperature": choice.candidate.info["temperature"]}
    if len(offered) > 1 or choice.candidate.info:
        info["label_choice"] = {"name": choice.candidate.name, "loss": choice.candidate.loss,
                                **choice.candidate.info, "candidates": [c.name for c in offered]}
    return MethodOutput(labels=choice.candidate.labels, images=data.base_x, num_steps=choice.num_steps,
                        val_error=choice.val_error, recipe=choice.recipe, history=choice.history, info=info,
                        train_seconds=time.perf_counter() - t0, reference_models=reference_models,
                        views=data.views)


def start_from(ctx: MethodContext, method: Method) -> Choice:
    """The labels a direct method chooses on validation with the context's learner (one validation
    model, the 'ce' loss): the start of meta-learned labels (distill.init_labels)."""
    recipe = replace(ctx.recipe, loss="ce")
    direct_ctx = replace(ctx, cfg=replace(ctx.cfg, method=method.name, evaluate=replace(ctx.cfg.evaluate, loss="ce")),
                         recipe=recipe)
    offered, _ = method.candidates(direct_ctx)
    choice = choose_on_validation(recipe, ctx.data.base_x, offered, ctx.seeds("init", count=1), ctx.step_grid(),
                                  ctx.data.val_x, ctx.data.val_y, progress=ctx.progress, phase=INITIAL_LABELS)
    note_diverged(ctx, choice)
    return choice


def note_diverged(ctx: MethodContext, choice: Choice) -> None:
    """Say when the step search left out step counts whose validation models diverged:
    the choice is sound, but a lower learning rate may search them all."""
    skipped = sum(1 for h in choice.history if h.get("diverged"))
    if skipped:
        ctx.emit("notice", message=f"the step search left out {skipped} of {len(choice.history)} step counts at "
                                   f"which validation models diverged; {lr_advice(choice.recipe)} to search them all")
