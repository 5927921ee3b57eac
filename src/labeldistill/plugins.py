"""Objects of the user's own named as `package.module:object` (models, methods)."""
from __future__ import annotations

import importlib

from .errors import ConfigError


def is_object_path(name: object) -> bool:
    """Whether a name is a `package.module:object` path."""
    return isinstance(name, str) and ":" in name


def import_object(name: str, what: str, form: str) -> object:
    """The object `name` = 'package.module:attr[.attr]' points to; errors name `what` (e.g.
    "architecture 'x:y'") and the expected `form` (e.g. 'package.module:factory')."""
    module_name, _, attr = name.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{what}: write it as '{form}'")
    try:
        obj = importlib.import_module(module_name)
    except Exception as exc:  # ModuleNotFoundError, or anything the module raises on import
        first = " ".join(str(exc).split())[:200]
        raise ConfigError(f"{what}: cannot import module '{module_name}' ({type(exc).__name__}: "
                          f"{first}); put the folder that holds it on PYTHONPATH") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{what}: module '{module_name}' has no '{attr}'")
        obj = getattr(obj, part)
    return obj
