"""Finding a method by name, a user's own included, and checking a config against it.

Methods of the user's own: `method: "package.module:object"`.

The object is either a `Method` (the registry's full protocol: any kind, its
own run) or a function `make_labels(ctx)` that returns labels for the base
images, a (num_base_examples, num_classes) tensor or array: a direct method
whose labels then go through the same step search on validation, test,
results and artifact as every built-in method. `ctx` is a
`protocol.MethodContext` (base_x, base_labels, target_x, target_y,
num_classes, generator, cfg, ...; never the test split).
"""
from __future__ import annotations

from dataclasses import replace

import torch

from ..errors import ConfigError
from ..plugins import import_object, is_object_path
from .choose import Candidate
from .direct import as_method
from .protocol import MethodContext
from .registry import Method, list_methods, registered

FORM = "package.module:make_labels"


def get_method(name: str) -> Method:
    """The registered method `name`, or the user's method a `package.module:object` path names."""
    if not is_object_path(name):
        return registered(name)
    obj = import_object(name, f"method '{name}'", FORM)
    declared = getattr(obj, "method", None)  # a function declared with @direct_method
    if isinstance(declared, Method):
        obj = declared
    if isinstance(obj, Method):
        return replace(obj, name=name)
    if not callable(obj):
        raise ConfigError(f"method '{name}': '{name.partition(':')[2]}' is a {type(obj).__name__}; give a function "
                          "make_labels(ctx) returning a (num_base_examples, num_classes) tensor, or a "
                          "labeldistill.methods.Method")
    doc = ((getattr(obj, "__doc__", None) or "").strip().splitlines() or [""])[0]
    return as_method(name, _labels_of(name, obj), title=name.partition(":")[2], summary=doc or "a method of your own",
                     order=90)


def _labels_of(name: str, make_labels):
    def candidates(ctx: MethodContext):
        try:
            labels = make_labels(ctx)
        except ConfigError:
            raise
        except Exception as exc:  # the user's code failed: one line naming it, not our traceback
            first = " ".join(str(exc).split())[:200]
            raise ConfigError(f"method '{name}' failed: {type(exc).__name__}: {first}") from None
        labels = check_labels(name, labels, ctx)
        return [Candidate(name.partition(":")[2], labels, ctx.cfg.evaluate.loss)], {}
    return candidates


def check_labels(name: str, labels, ctx: MethodContext) -> torch.Tensor:
    """The labels as float32 on the run's device, or a one-line error saying what is wrong."""
    try:
        labels = torch.as_tensor(labels)
    except Exception:  # noqa: BLE001 - anything not array-like
        raise ConfigError(f"method '{name}' returned a {type(labels).__name__}; return a tensor or array of shape "
                          "(num_base_examples, num_classes)") from None
    want = (ctx.base_x.shape[0], ctx.num_classes)
    if tuple(labels.shape) != want:
        raise ConfigError(f"method '{name}' returned labels of shape {tuple(labels.shape)}; expected {want} "
                          "(one row per base image, or per view with views, one column per target class)")
    if not (labels.is_floating_point() or labels.dtype in (torch.int64, torch.int32, torch.uint8, torch.bool)):
        raise ConfigError(f"method '{name}' returned labels of type {labels.dtype}; return real numbers")
    labels = labels.detach().to(device=ctx.base_x.device, dtype=torch.float32)  # labels, not a graph
    if not bool(torch.isfinite(labels).all()):
        raise ConfigError(f"method '{name}' returned labels with NaN or infinite values")
    if ctx.cfg.evaluate.loss == "ce":
        if bool((labels < 0).any()) or not torch.allclose(labels.sum(1), torch.ones(want[0], device=labels.device),
                                                           atol=1e-4):
            raise ConfigError(f"method '{name}' returned rows that are not distributions (non-negative, summing to "
                              "1), which the 'ce' learner needs; return probabilities (e.g. a softmax) or set "
                              "evaluate.loss=mse for real-valued labels")
    return labels


def check_config(cfg) -> Method:
    """The config's method exists and accepts the config's options; returns the method."""
    method = get_method(cfg.method)
    if cfg.distill.init_labels != "uniform" and method.kind != "meta":
        meta = ", ".join(m.name for m in list_methods() if m.kind == "meta")
        raise ConfigError(f"distill.init_labels={cfg.distill.init_labels} needs a method that meta-learns labels "
                          f"({meta}), not {cfg.method}")
    if cfg.views.per_image and method.kind == "images":
        raise ConfigError(f"views label real base images, and {cfg.method} learns synthetic images; set "
                          "views.per_image=0 or use a method that makes labels")
    if method.validate is not None:
        method.validate(cfg)
    return method


def evaluation_head(cfg) -> str:
    """The head of the evaluation models: evaluate.head, else the method's own."""
    return cfg.evaluate.head or get_method(cfg.method).head
