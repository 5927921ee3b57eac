"""Every way of making a distilled dataset, found in one place.

`get_method(name)` gives a registered method or a user's `package.module:object`;
`list_methods()` the registered ones in report order. A built-in method is
declared where it is defined, in a module of this package (true_labels.py,
teacher.py, label_solve.py, meta.py, ...): every module here is imported below,
so a new method is one new file.
"""
from __future__ import annotations

import importlib
import pkgutil

from .choose import Candidate, Choice, choose_on_validation, earliest_lowest, real_valued
from .direct import direct_method
from .lookup import check_config, evaluation_head, get_method
from .protocol import MethodContext, MethodOutput
from .registry import KINDS, METHODS, Method, list_methods, method_names, register_method

for _module in pkgutil.iter_modules(__path__):  # built-in methods register themselves on import
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["Candidate", "Choice", "KINDS", "METHODS", "Method", "MethodContext", "MethodOutput", "check_config",
           "choose_on_validation", "direct_method", "earliest_lowest", "evaluation_head", "get_method",
           "list_methods", "method_names", "real_valued", "register_method"]
