"""The paper's baselines: true labels of the base images, one-hot or smoothed (SPEC 5)."""
from __future__ import annotations

from .choose import Candidate
from .direct import direct_method
from .protocol import MethodContext


def _true_labels(ctx: MethodContext, smoothing: float):
    # Across datasets the base images' classes are remapped onto the target's (SPEC 5); a view
    # mixing two images has both classes in proportion.
    labels = ctx.true_labels(smoothing)
    name = f"one-hot, smoothing {smoothing}" if smoothing else "one-hot"
    if ctx.data.views is not None:
        name = f"true classes of the views, smoothing {smoothing}" if smoothing else "true classes of the views"
    return ([Candidate(name, labels, ctx.cfg.evaluate.loss, {"smoothing": smoothing})],
            {"base_remapped_labels": ctx.base_image_labels})


@direct_method("baseline", title="true labels", order=60, summary="one-hot true labels of the base images")
def true_labels(ctx: MethodContext):
    return _true_labels(ctx, 0.0)


@direct_method("baseline-ls", title="label smoothing", order=70,
               summary="true labels smoothed by evaluate.label_smoothing (0.1)")
def smoothed_labels(ctx: MethodContext):
    return _true_labels(ctx, ctx.cfg.evaluate.label_smoothing)
