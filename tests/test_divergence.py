"""Evaluation models that diverge stop the run with one line naming the setting to lower.

Before, `--set evaluate.lr=1e6` finished with exit 0 and "test accuracy 9.80 +- 0.00 %":
NaN weights predict class 0 and read as a plausible accuracy.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from labeldistill import cli
from labeldistill.errors import RunError
from labeldistill.evaluate import EvalResult, Recipe, diverged
from labeldistill.methods import Candidate, choose_on_validation

TINY = {
    "name": "tiny", "method": "ld-rr", "seed": 1, "device": "cpu",
    "data": {"source": "mnist5k", "target": "mnist5k", "num_base_examples": 20},
    "distill": {"epochs": 1, "batch_size": 256, "validate_every": 1},
    "evaluate": {"num_test_models": 2, "step_grid": [10, 30]},
}


def run_cli(tmp: Path, capsys, method: str, *sets: str) -> tuple[int, str]:
    cfg = {**TINY, "method": method}
    path = tmp / "tiny.json"
    path.write_text(json.dumps(cfg))
    args = ["run", str(path), "--out", str(tmp / "out")]
    for s in sets:
        args += ["--set", s]
    rc = cli.main(args)
    return rc, capsys.readouterr().err


def test_diverged_flags_nonfinite_and_exploded_chance_models():
    errors = torch.tensor([[90.2, 90.2, 20.0, 90.2]], dtype=torch.float64)
    losses = torch.tensor([[math.nan, 1e4, 1e4, math.log(10)]], dtype=torch.float64)
    flags = diverged(EvalResult([10], errors, losses), 10).tolist()
    # NaN; chance with an exploded loss; an overconfident but learning model; an untrained one
    assert flags == [[True, True, False, False]]


@pytest.mark.parametrize("method,sets,where", [
    ("baseline", ["evaluate.lr=1e6"], "step search"),
    ("baseline", ["evaluate.optimizer=sgd", "evaluate.lr=1e3"], "step search"),
    ("ld-rr", ["evaluate.lr=1e6"], "validation models of epoch 1"),
    # validation (1 model) picks 10 steps; a test model explodes to a finite loss at chance
    ("baseline", ["evaluate.optimizer=momentum", "evaluate.lr=2"], "1 of 2 test models diverged"),
])
def test_diverging_evaluation_is_one_line_naming_the_setting(method, sets, where, tmp_path, capsys):
    rc, err = run_cli(tmp_path, capsys, method, *sets)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert where in lines[0] and "diverged" in lines[0] and "lower evaluate.lr" in lines[0]
    assert not list((tmp_path / "out").rglob("result.json"))


def test_normal_lr_passes_and_artifact_evaluate_with_huge_lr_errors(tmp_path, capsys):
    rc, err = run_cli(tmp_path, capsys, "ld-rr")
    assert rc == 0, err
    result = json.loads((tmp_path / "out" / "tiny" / "result.json").read_text())
    assert all(math.isfinite(v) for v in result["test_loss"])
    rc = cli.main(["evaluate", str(tmp_path / "out" / "tiny"), "--lr", "1e6", "--models", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "2 of 2 models diverged" in err and "--lr" in err


def _task(n=20, classes=10):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 28, 28, generator=g)
    y = torch.arange(n) % classes
    return x, y, torch.nn.functional.one_hot(y, classes).float()


def test_a_diverging_candidate_is_never_chosen():
    x, y, onehot = _task()
    # Labels scaled by 1e6 for the squared-error learner blow the model up; the one-hot
    # candidate comes second, so only the divergence check keeps the first from winning
    # (a NaN model's 90 % error ties or beats an untrained one's at step 10).
    cands = [Candidate("huge", onehot * 1e6, "mse"), Candidate("one-hot", onehot, "ce")]
    recipe = Recipe(arch="lenet", optimizer="sgd", lr=0.1)
    choice = choose_on_validation(recipe, x, cands, [0], [10], x, y)
    assert choice.candidate.name == "one-hot" and choice.val_error == 90.0  # the tie the huge one would win
    assert any(h.get("diverged") and h["candidate"] == "huge" for h in choice.history)
    assert not any(h.get("diverged") and h["candidate"] == "one-hot" for h in choice.history)


def test_every_candidate_diverging_is_an_error():
    x, y, onehot = _task()
    recipe = Recipe(arch="lenet", optimizer="adam", lr=1e6)
    with pytest.raises(RunError, match=r"lower evaluate.lr \(now 1e\+06 with the adam optimizer"):
        choose_on_validation(recipe, x, [Candidate("one-hot", onehot, "ce")], [0], [10, 20], x, y)


def test_a_teacher_at_chance_is_one_line_naming_its_settings(tmp_path, capsys):
    # Before: the diverged teacher's noise became the labels, "test accuracy 10.00 %", exit 0.
    rc, err = run_cli(tmp_path, capsys, "baseline-kd", "evaluate.kd_teacher_lr=1e6", "evaluate.kd_teacher_epochs=1")
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "the teacher diverged or did not learn" in err and "lower teacher.train_lr (now 1e+06)" in err
    (tmp_path / "ok").mkdir()
    rc, err = run_cli(tmp_path / "ok", capsys, "baseline-kd", "evaluate.kd_teacher_epochs=1")
    assert rc == 0, err


def test_collapsed_test_models_at_chance_are_said_but_kept(tmp_path, capsys):
    # SGD with momentum at lr 1 kills the units: one class predicted, loss near log C (not
    # exploding), so this is not divergence; the result stays, with a note naming the lr.
    rc, err = run_cli(tmp_path, capsys, "baseline", "evaluate.optimizer=momentum", "evaluate.lr=1",
                      "evaluate.step_grid=[10,30,100,300]")
    assert rc == 0, err
    assert "note: the test models are at chance" in err and "lower evaluate.lr (now 1 with the momentum" in err
    assert len(list((tmp_path / "out").glob("tiny*/result.json"))) == 1  # named after its overrides
