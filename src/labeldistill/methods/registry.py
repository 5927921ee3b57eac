"""The method registry: every way of making a distilled dataset, declared once where it is defined.

A method is a `Method`: its name (the config's `method:`), the title and order
it has in reports, its kind, the evaluation head its labels are meant for,
the config section of its own options, and one entry point `run(ctx)` that
takes the prepared data (never the test split: see `protocol.MethodContext`)
and returns a typed `protocol.MethodOutput`. The outer run (experiment.py)
validates, tests, writes results and artifacts the same way for every method.

Kinds:
- "direct": labels made without meta-learning; `candidates(ctx)` offers one or
  more sets of labels and the step search on the validation split picks one
  (true labels, label smoothing, teacher labels, label solving, a user's
  `make_labels` function);
- "meta": labels of real images meta-learned over epochs (the paper);
- "images": pixels of synthetic images meta-learned, labels fixed;
- "search": runs other methods' recipes and keeps the one with the lowest validation error (auto).

Built-in methods register themselves when `labeldistill.methods` is imported;
a user's method is `method: "package.module:object"` (see `user.py`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..errors import ConfigError, did_you_mean

KINDS = ("direct", "meta", "images", "search")
HEADS = ("linear", "rr")


@dataclass(frozen=True)
class Method:
    name: str
    title: str  # in reports and figures
    kind: str
    run: Callable[[Any], Any]  # (MethodContext) -> MethodOutput
    summary: str = ""  # one line for `labeldistill methods`
    order: int = 100  # rows of a report: lower first
    head: str = "linear"  # the evaluation head unless evaluate.head says otherwise
    options: str | None = None  # the config section of its own options (e.g. "solve")
    # direct methods: (MethodContext) -> (list[Candidate], info); meta-learned labels may start
    # from them (distill.init_labels)
    candidates: Callable[[Any], Any] | None = None
    # (Config) -> None: raise ConfigError for options this method cannot run with
    validate: Callable[[Any], None] | None = None
    # (result dict) -> ["5 teachers", ...]: what sets a run apart from the method's defaults, so
    # that report rows and figure legends never mix runs of different settings
    describe: Callable[[dict], list[str]] | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"method {self.name}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.head not in HEADS:
            raise ValueError(f"method {self.name}: head must be one of {HEADS}, got {self.head!r}")
        if self.kind == "direct" and self.candidates is None:
            raise ValueError(f"method {self.name}: a direct method needs candidates")

    @property
    def learns_over_epochs(self) -> bool:
        """Meta-learning methods run `distill.epochs` epochs over the target set."""
        return self.kind in ("meta", "images")


METHODS: dict[str, Method] = {}


def register_method(method: Method, overwrite: bool = False) -> Method:
    """Add `method` to the registry under its name (a second method of that name is refused
    unless `overwrite`)."""
    if ":" in method.name:
        raise ValueError(f"a registered method's name cannot contain ':' ({method.name!r}): "
                         "'module:object' names a user's method")
    if method.name in METHODS and not overwrite:
        raise ValueError(f"a method named {method.name!r} is already registered")
    METHODS[method.name] = method
    return method


def list_methods() -> list[Method]:
    """Registered methods in report order."""
    return sorted(METHODS.values(), key=lambda m: (m.order, m.name))


def method_names() -> list[str]:
    return [m.name for m in list_methods()]


def registered(name: str) -> Method:
    """The registered method `name`, or a one-line error listing the known ones."""
    if name not in METHODS:
        raise ConfigError(f"unknown method '{name}'{did_you_mean(name, METHODS)}; known: {', '.join(method_names())}, "
                          "or 'package.module:object' for a method of your own")
    return METHODS[name]
