"""Teacher labels (`baseline-kd`): a teacher trained on the target set labels the base images,
softmax(logits / T) with T chosen on validation (SPEC 10).

A teacher labels images in the target's classes, so cross-dataset base images
(letters labelled as digits) need no class remapping.
"""
from __future__ import annotations

import torch

from ..errors import RunError
from ..evaluate import CHANCE_MARGIN
from ..kd import teacher_logits
from .choose import real_valued
from .direct import direct_method
from .protocol import MethodContext


def describe(result: dict) -> list[str]:
    teachers = ((result.get("config") or {}).get("evaluate") or {}).get("kd_num_teachers", 1)
    return [f"{teachers} teachers"] if teachers > 1 else []


@direct_method("baseline-kd", title="teacher labels", order=50, describe=describe,
               summary="softmax(logits / T) of a teacher (or an ensemble) trained on the target set")
def teacher_labels(ctx: MethodContext):
    cfg, data = ctx.cfg, ctx.data
    logits, teacher, model = teacher_logits(cfg, data, ctx.arch, ctx.progress)
    chance = 100.0 * CHANCE_MARGIN / data.num_classes
    if not bool(torch.isfinite(logits).all()) or teacher["val_accuracy"] <= chance:
        # A teacher at chance labels the base examples with noise: every candidate would be wrong.
        raise RunError(f"the teacher diverged or did not learn (validation accuracy {teacher['val_accuracy']:.2f} %, "
                       f"chance {100.0 / data.num_classes:.2f} %); lower evaluate.kd_teacher_lr (now "
                       f"{cfg.evaluate.kd_teacher_lr:g}) or raise evaluate.kd_teacher_epochs (now "
                       f"{cfg.evaluate.kd_teacher_epochs})")
    temps = cfg.evaluate.label_temperatures or (cfg.evaluate.kd_temperature,)
    return (real_valued(cfg, logits, "teacher logits", temps, {}),
            {"teacher": teacher, "reference_models": {"teacher": model}})
