"""Runs made by an older version (whose configs lack options added since) still resume."""
from __future__ import annotations

import pytest

from labeldistill import config as config_mod
from labeldistill.experiment import _same_config
from labeldistill.errors import RunError
from labeldistill.results import RunDir


def test_an_option_added_later_at_its_default_is_the_same_config(tmp_path):
    cfg = config_mod.from_dict({"method": "ld-rr", "data": {"source": "mnist5k", "target": "mnist5k"}})
    old = config_mod.to_dict(cfg)
    del old["solve"]  # sections and keys an older version did not have
    del old["evaluate"]["loss"], old["evaluate"]["augment"]
    run_dir = RunDir(tmp_path / "run")
    _same_config(old, cfg, run_dir, "run")  # no error
    changed = config_mod.with_overrides(cfg, ["evaluate.augment=2"])
    with pytest.raises(RunError, match=r"differs in: evaluate.augment\)"):
        _same_config(old, changed, run_dir, "run")
    with pytest.raises(RunError, match=r"differs in: distill.epochs\)"):
        _same_config(old, config_mod.with_overrides(cfg, ["distill.epochs=3"]), run_dir, "run")
