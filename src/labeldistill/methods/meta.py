"""Meta-learning methods (SPEC 4 and 7): the paper's label distillation and image distillation.

`ld-rr` and `ld-or2` meta-learn soft labels of real base images; `dd-rr` and
`dd-or2` meta-learn the pixels of synthetic images with fixed labels. The
suffix is the meta-gradient: ridge regression on the online model's features
(`rr`, with the RR evaluation head) or second order through one inner step
(`or2`). The epochs, resets, validation and checkpoints are `meta.loop`'s.
"""
from __future__ import annotations

from ..config import default_epochs
from ..errors import ConfigError, did_you_mean
from ..meta.loop import MetaLoop
from ..plugins import is_object_path
from .direct import start_from
from .lookup import get_method
from .protocol import MethodContext, MethodOutput
from .registry import Method, list_methods, register_method


def _run(kind: str, variant: str):
    def run(ctx: MethodContext) -> MethodOutput:
        start = None
        if kind == "labels" and ctx.cfg.distill.init_labels != "uniform":
            init = get_method(ctx.cfg.distill.init_labels)
            start = start_from(ctx, init)
            ctx.emit("initial_labels", method=init.name, labels=start.candidate.name, num_steps=start.num_steps,
                     val_error=start.val_error)
        loop = MetaLoop(ctx, kind=kind, variant=variant)
        return loop.run(ctx.checkpoint, start)
    return run


def _validate_init(cfg) -> None:
    init = cfg.distill.init_labels
    if init == "uniform":
        return
    direct = [m.name for m in list_methods() if m.kind == "direct"]
    if init not in direct and not is_object_path(init):
        raise ConfigError(f"unknown distill.init_labels '{init}'{did_you_mean(init, direct)}; known: uniform, "
                          f"{', '.join(direct)}, or 'package.module:make_labels'")
    method = get_method(init)
    if method.kind != "direct":
        raise ConfigError(f"distill.init_labels={init} is a {method.kind} method; labels can start from a direct "
                          "method's (its candidates are chosen on validation)")
    if method.validate is not None:  # the starting labels' own options
        method.validate(cfg)


def _describe(variant: str):
    def describe(result: dict) -> list[str]:
        """Epochs other than the reference's, and the RR meta-gradient's lambda other than 1."""
        cfg = result.get("config") or {}
        di, data = cfg.get("distill") or {}, cfg.get("data") or {}
        parts = []
        epochs = (result.get("effective") or {}).get("epochs", di.get("epochs"))
        if epochs is not None and data.get("target") and epochs != default_epochs(data["target"],
                                                                                  result["num_base_examples"]):
            parts.append(f"{epochs} epochs")
        if variant == "rr" and di.get("ridge_lambda", 1.0) != 1.0:
            parts.append(f"lambda {di['ridge_lambda']:g}")
        return parts
    return describe


for _name, _title, _kind, _variant, _order, _summary in (
        ("ld-rr", "LD RR", "labels", "rr", 10, "labels meta-learned with ridge-regression meta-gradients (the paper)"),
        ("ld-or2", "LD or2", "labels", "or2", 20, "labels meta-learned with second-order meta-gradients (the paper)"),
        ("dd-rr", "DD RR (images)", "images", "rr", 30, "pixels of synthetic images meta-learned (RR), fixed labels"),
        ("dd-or2", "DD or2 (images)", "images", "or2", 35, "pixels of synthetic images meta-learned (or2), fixed labels")):
    register_method(Method(_name, _title, "meta" if _kind == "labels" else "images", _run(_kind, _variant),
                           summary=_summary, order=_order, head="rr" if _variant == "rr" else "linear",
                           options="distill", validate=_validate_init if _kind == "labels" else None,
                           describe=_describe(_variant)))
