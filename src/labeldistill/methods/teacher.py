"""Teacher labels (`baseline-kd`): a teacher trained on the target set labels the base images,
softmax(logits / T) with T chosen on validation (SPEC 10).

A teacher labels images in the target's classes, so cross-dataset base images
(letters labelled as digits) need no class remapping.
"""
from __future__ import annotations

import torch

from ..errors import ConfigError, RunError
from ..evaluate import CHANCE_MARGIN
from ..kd import SCHEDULES, logits_of, train_teachers
from .choose import real_valued
from .direct import direct_method
from .protocol import MethodContext


def describe(result: dict) -> list[str]:
    cfg = result.get("config") or {}
    teachers = (cfg.get("teacher") or {}).get("num_teachers",
                                              (cfg.get("evaluate") or {}).get("kd_num_teachers", 1))  # older runs
    schedule = (cfg.get("teacher") or {}).get("schedule", "constant")
    return ([f"{teachers} teachers"] if teachers > 1 else []) + ([f"{schedule} lr"] if schedule != "constant" else [])


def validate(cfg) -> None:
    t = cfg.teacher

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    need(t.temperature > 0, f"teacher.temperature must be positive, got {t.temperature}")
    need(t.train_epochs >= 1, f"teacher.train_epochs must be at least 1, got {t.train_epochs}")
    need(t.train_lr > 0, f"teacher.train_lr must be positive, got {t.train_lr}")
    need(t.num_teachers >= 1, f"teacher.num_teachers must be at least 1, got {t.num_teachers}")
    need(t.train_batch_size >= 1, f"teacher.train_batch_size must be at least 1, got {t.train_batch_size}")
    need(t.schedule in SCHEDULES, f"teacher.schedule must be one of {', '.join(SCHEDULES)}, got {t.schedule!r}")


@direct_method("baseline-kd", title="teacher labels", order=50, describe=describe, validate=validate, options="teacher",
               summary="softmax(logits / T) of a teacher (or an ensemble) trained on the target set")
def teacher_labels(ctx: MethodContext):
    cfg, data = ctx.cfg, ctx.data
    # Teachers are trained once per run: a method that tries several recipes (auto) labels
    # every candidate's images with the same ones.
    model, teacher = train_teachers(cfg, data, ctx.arch, ctx.progress, ctx.cache)
    logits = logits_of(model, data.base_x)
    chance = 100.0 * CHANCE_MARGIN / data.num_classes
    if not bool(torch.isfinite(logits).all()) or teacher["val_accuracy"] <= chance:
        # A teacher at chance labels the base examples with noise: every candidate would be wrong.
        raise RunError(f"the teacher diverged or did not learn (validation accuracy {teacher['val_accuracy']:.2f} %, "
                       f"chance {100.0 / data.num_classes:.2f} %); lower teacher.train_lr (now "
                       f"{cfg.teacher.train_lr:g}) or raise teacher.train_epochs (now {cfg.teacher.train_epochs})")
    temps = cfg.evaluate.label_temperatures or (cfg.teacher.temperature,)
    return (real_valued(cfg, logits, "teacher logits", temps, {}),
            {"teacher": teacher, "reference_models": {"teacher": model}})
