"""Every way of making a distilled dataset, found in one place.

`get_method(name)` gives a registered method or a user's `package.module:object`;
`list_methods()` the registered ones in report order. Built-in methods are
declared where they are defined (true_labels.py, teacher.py, label_solve.py,
meta.py) and registered by the imports below.
"""
from __future__ import annotations

from . import label_solve, meta, teacher, true_labels  # noqa: F401 - built-in methods register themselves
from .choose import Candidate, Choice, choose_on_validation, earliest_lowest, real_valued
from .direct import direct_method
from .protocol import MethodContext, MethodOutput
from .registry import KINDS, METHODS, Method, list_methods, method_names, register_method
from .lookup import check_config, evaluation_head, get_method

__all__ = ["Candidate", "Choice", "check_config", "evaluation_head", "KINDS", "METHODS", "Method", "MethodContext", "MethodOutput", "choose_on_validation",
           "direct_method", "earliest_lowest", "get_method", "list_methods", "method_names", "real_valued",
           "register_method"]
