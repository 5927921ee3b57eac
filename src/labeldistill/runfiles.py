"""The shapes of the files in a run directory, checked when a file is read.

A file that parses but has the wrong shape (`[]` for a result, a missing key, a
string where a number belongs) becomes one `RunFileError` line that names the
file and the field, wherever it is read: report, plot, export, evaluate and
resume. Only what labeldistill reads is checked; a field written by a later
version is left alone, and so is a config key this version does not know.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Callable

from .errors import LabelDistillError, RunFileError

# ---------------------------------------------------------------------------
# kinds of values


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def _list_of(check: Callable[[Any], bool], nonempty: bool = False) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, list) and (len(v) > 0 or not nonempty) and all(check(x) for x in v)


def _matrix(v: Any) -> bool:
    """A non-empty list of equally long, non-empty rows of numbers (soft labels)."""
    return (_list_of(_list_of(_number, nonempty=True), nonempty=True)(v)
            and len({len(row) for row in v}) == 1)


KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "str": (lambda v: isinstance(v, str), "a string"),
    "int": (_int, "a whole number"),
    "int?": (_optional(_int), "a whole number or null"),
    "number": (_number, "a number"),
    "number?": (_optional(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)), "a number or null"),
    "dict": (lambda v: isinstance(v, dict), "a mapping"),
    "numbers": (_list_of(_number, nonempty=True), "a non-empty list of numbers"),
    "numbers?": (_list_of(_optional(_number)), "a list of numbers or nulls"),
    "ints": (_list_of(_int, nonempty=True), "a non-empty list of whole numbers"),
    "ints?": (_list_of(_int), "a list of whole numbers"),
    "strs": (_list_of(lambda v: isinstance(v, str)), "a list of strings"),
    "matrix": (_matrix, "a non-empty list of equally long lists of numbers"),
    "records": (_list_of(lambda v: isinstance(v, dict)), "a list of mappings"),
}


def _fail(path: Path | str, what: str) -> RunFileError:
    return RunFileError(f"malformed {path}: {what}; restore the file or run the experiment again")


def check_fields(obj: Any, path: Path | str, required: dict[str, str], optional: dict[str, str] | None = None,
                 where: str = "") -> dict:
    """`obj` must be a mapping holding every `required` field (and any `optional` one) of its kind;
    `where` is the dotted place of `obj` in the file ('history[3].'), `path` the file."""
    if not isinstance(obj, dict):
        what = f"'{where[:-1]}'" if where else "the file"
        raise _fail(path, f"{what} must be a mapping, not {type(obj).__name__}")
    for key in required:
        if key not in obj:
            raise _fail(path, f"the field '{where}{key}' is missing")
    for key, kind in {**required, **(optional or {})}.items():
        check, text = KINDS[kind]
        if key in obj and not check(obj[key]):
            raise _fail(path, f"'{where}{key}' must be {text}, got {_show(obj[key])}")
    return obj


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# ---------------------------------------------------------------------------
# config.json (and the config inside result.json)


def check_config(obj: Any, path: Path, where: str = "") -> dict:
    """A resolved config: a mapping whose sections are mappings and whose known keys hold
    values of their field's type as written by `config.to_dict` (unknown keys are left alone:
    an older or newer version's)."""
    from . import config as config_mod

    check_fields(obj, path, {}, where=where)
    sections = config_mod._section_types()
    for key, value in obj.items():
        if key in sections:
            check_fields(value, path, {}, where=f"{where}{key}.")
            types = config_mod._field_types(sections[key])
            for leaf, v in value.items():
                if leaf in types:
                    _check_typed(v, types[leaf], path, f"{where}{key}.{leaf}")
        elif key in config_mod._field_types(config_mod.Config):
            _check_typed(value, config_mod._field_types(config_mod.Config)[key], path, f"{where}{key}")
    return obj


def _check_typed(value: Any, tp: Any, path: Path, key: str) -> None:
    """`value` as `config.to_dict` writes a field of type `tp`: of that type already, not text to convert."""
    from . import config as config_mod

    try:
        coerced = config_mod.coerce(value, tp, key)
    except LabelDistillError as exc:
        raise _fail(path, str(exc)) from None
    if isinstance(coerced, tuple):
        coerced = list(coerced)
    if coerced != value:  # e.g. the text "3" where the number 3 belongs
        raise _fail(path, f"'{key}' must be stored as {type(coerced).__name__}, got {_show(value)}")


# ---------------------------------------------------------------------------
# result.json

RESULT_REQUIRED = {
    "name": "str", "method": "str", "source": "str", "target": "str", "arch": "str",
    "num_base_examples": "int", "seed": "int", "test_accuracy": "numbers", "test_accuracy_mean": "number",
    "test_accuracy_std": "number", "num_steps": "int", "labels": "matrix", "base_indices": "ints",
    "history": "records", "config": "dict",
}
RESULT_OPTIONAL = {
    "head": "str", "test_loss": "numbers?", "val_error": "number?", "best_epoch": "int?",
    "base_class_names": "strs", "base_original_labels": "ints?", "train_seconds": "number",
    "test_seconds": "number", "effective": "dict", "learner": "dict", "seeds": "dict", "artifact": "str", "num_steps_analysis": "dict",
    "architecture_transfer": "dict", "optimizer_transfer": "dict", "views": "dict", "storage": "dict",
}
SUMMARY = {"test_accuracy_mean": "number", "test_accuracy_std": "number"}
EPOCH_RECORD = {"epoch": "int", "train_error": "number?", "meta_loss": "number?", "model_loss": "number?",
                "num_steps": "int"}
STEP_RECORD = {"num_steps": "int", "val_error": "number?"}
EFFECTIVE = {"target_set_size": "int?", "available_target_set_size": "int?", "epochs": "int"}
LEARNER = {"head": "str", "loss": "str", "augment": "int", "optimizer": "str", "lr": "number",
           "batch_size": "int"}


def check_result(obj: Any, path: Path) -> dict:
    """A finished run's result: what `report`, `plot`, `export` and a resume read from it."""
    r = check_fields(obj, path, RESULT_REQUIRED, RESULT_OPTIONAL)
    views = r.get("views")
    if views is not None:
        check_fields(views, path, {"per_image": "int", "num_views": "int", "seed": "int"}, where="views.")
        if views["num_views"] != len(r["labels"]) or views["num_views"] != views["per_image"] * len(r["base_indices"]):
            raise _fail(path, f"{len(r['labels'])} labels but {views['num_views']} views of "
                              f"{len(r['base_indices'])} base images")
    elif len(r["base_indices"]) != len(r["labels"]):
        raise _fail(path, f"{len(r['labels'])} labels but {len(r['base_indices'])} base_indices")
    history = r["history"]
    kind = EPOCH_RECORD if history and "epoch" in history[0] else STEP_RECORD
    for i, record in enumerate(history):
        check_fields(record, path, kind, {"val_error": "number?", "val_loss": "number?"}, where=f"history[{i}].")
    check_config(r["config"], path, where="config.")
    check_fields(r.get("effective", {}), path, {}, EFFECTIVE, where="effective.")
    check_fields(r.get("learner", {}), path, {}, LEARNER, where="learner.")
    for key in ("num_steps_analysis", "architecture_transfer", "optimizer_transfer"):
        for name, summary in r.get(key, {}).items():
            where = f"{key}.{name}."
            extra = {"num_steps": "int"} if key == "num_steps_analysis" else {}
            extra.update({"lr": "number?"} if key == "optimizer_transfer" else {})
            check_fields(summary, path, {**SUMMARY, **extra}, {"num_steps_analysis": "dict"}, where=where)
            if key == "num_steps_analysis" and not re.fullmatch(r"-?\d+", name):
                raise _fail(path, f"'{key}' is keyed by step offsets (whole numbers), got {name!r}")
            for offset, s in summary.get("num_steps_analysis", {}).items():
                check_fields(s, path, {**SUMMARY, "num_steps": "int"}, where=f"{where}num_steps_analysis.{offset}.")
                if not re.fullmatch(r"-?\d+", offset):
                    raise _fail(path, f"'{where}num_steps_analysis' is keyed by step offsets, got {offset!r}")
    return r


# ---------------------------------------------------------------------------
# metrics.jsonl


def check_metrics_record(obj: Any, path: Path, line: int) -> dict:
    """One line of the metrics log: a mapping with a string `event` and, for epochs, a whole epoch."""
    where = f"{path}, line {line}"
    record = check_fields(obj, where, {}, {"event": "str"})
    if record.get("event") == "epoch":
        check_fields(record, where, {"epoch": "int"})
    return record


# ---------------------------------------------------------------------------
# distilled.json, the artifact's card

CARD_REQUIRED = {
    "kind": "str", "method": "str", "source": "str", "target": "str", "class_names": "strs", "image": "dict",
    "recipe": "dict", "tensors": "dict", "tensor_file": "str", "tensor_file_sha256": "str",
    "num_examples": "int", "num_classes": "int",
}
CARD_OPTIONAL = {"name": "str", "seed": "int", "accuracy": "dict", "config": "dict", "data_origin": "str"}
CARD_IMAGE = {"channels": "int", "size": "int", "mean": "numbers", "std": "numbers"}
CARD_RECIPE = {"arch": "str", "head": "str", "optimizer": "str", "lr": "number?", "batch_size": "int",
               "ridge_lambda": "number", "head_momentum": "number", "calibration_lr": "number", "num_steps": "int"}
CARD_RECIPE_OPTIONAL = {"rr_gradients": "str", "loss": "str", "augment": "int", "learning_rate": "number"}
CARD_TENSOR = {"dtype": "str", "shape": "ints?", "sha256": "str"}


def check_card(card: Any, path: Path) -> dict:
    """An artifact card past its format check: every field `load_distilled` and `evaluate` read."""
    check_fields(card, path, CARD_REQUIRED, CARD_OPTIONAL)
    missing = [k for k in CARD_RECIPE if k not in card["recipe"]]
    if missing:
        raise _fail(path, f"the card lacks recipe field(s) {', '.join(missing)}")
    check_fields(card["recipe"], path, CARD_RECIPE, CARD_RECIPE_OPTIONAL, where="recipe.")
    check_fields(card["image"], path, CARD_IMAGE, where="image.")
    for name, spec in card["tensors"].items():
        check_fields(spec, path, CARD_TENSOR, where=f"tensors.{name}.")
    if Path(card["tensor_file"]).name != card["tensor_file"] or card["tensor_file"] in ("", ".", ".."):
        raise _fail(path, f"'tensor_file' must be a file name beside the card, got {_show(card['tensor_file'])}")
    check_fields(card.get("accuracy", {}), path, {}, {"mean": "number", "std": "number", "seeds": "ints?"},
                 where="accuracy.")
    if "config" in card:
        check_config(card["config"], path, where="config.")
    return card
