"""The method registry: every registered method runs through the same protocol; methods of one's own."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from labeldistill import config as C
from labeldistill.cli import main
from labeldistill.errors import ConfigError
from labeldistill.experiment import run_experiment
from labeldistill.methods import KINDS, Method, get_method, list_methods, method_names

TINY = {"data.source": "mnist5k", "data.target": "mnist5k", "data.num_base_examples": 10,
        "data.target_set_size": 600, "distill.epochs": 2, "distill.batch_size": 200, "evaluate.num_test_models": 3,
        "evaluate.step_grid": [20, 40], "evaluate.kd_teacher_epochs": 1, "solve.num_networks": 2,
        "solve.target_size": 300}
DOCS = Path(__file__).resolve().parents[1] / "docs" / "usage.md"


@pytest.mark.parametrize("name", method_names())
def test_every_registered_method_runs_through_the_protocol(name, tmp_path):
    """Whatever the method, the run writes labels for the base images, the kind and head the
    registry declares, finite test losses and an artifact."""
    spec = get_method(name)
    assert spec.kind in KINDS and spec.title and spec.summary
    cfg = C.apply(C.Config(), {**TINY, "method": name, "name": "run"})
    result = run_experiment(cfg, out=str(tmp_path), device="cpu", handle_signals=False)
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["kind"] == spec.kind and saved["head"] == spec.head
    labels = torch.tensor(saved["labels"])
    assert labels.shape == (10, 10) and torch.isfinite(labels).all()
    assert len(saved["test_accuracy"]) == 3 and all(v is not None for v in saved["test_loss"])
    assert saved["test_accuracy_mean"] == pytest.approx(result["test_accuracy_mean"])
    assert (tmp_path / "run" / "distilled.safetensors").is_file()
    if spec.learns_over_epochs:
        assert [h["epoch"] for h in saved["history"]] == [1, 2] and saved["effective"]["epochs"] == 2
    else:
        assert saved["num_steps"] in (20, 40) and saved["effective"]["step_grid"] == [20, 40]
    if spec.kind == "images":
        assert saved["synthetic_pixels_shape"] == [10, 1, 28, 28]


def test_the_methods_command_lists_every_registered_method(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out[:-1]] == method_names()
    assert "package.module:make_labels" in out[-1]


def test_registered_methods_are_ordered_and_unique():
    names = [m.name for m in list_methods()]
    assert len(names) == len(set(names)) >= 8
    assert names[:2] == ["ld-rr", "ld-or2"]  # the paper's methods lead the reports


MYMETHODS = '''
import torch
import torch.nn.functional as F


def true_labels(ctx):
    """One-hot labels of the base images' own classes."""
    return F.one_hot(ctx.base_labels, ctx.num_classes).float()


def wrong_shape(ctx):
    return torch.zeros(3, ctx.num_classes)


def not_distributions(ctx):
    return torch.ones(ctx.base_x.shape[0], ctx.num_classes)


def with_nan(ctx):
    return torch.full((ctx.base_x.shape[0], ctx.num_classes), float("nan"))


def fails(ctx):
    raise ValueError("my bug")


def sees(ctx):
    assert not hasattr(ctx.data, "test_x") or ctx.data.test_x is None
    assert ctx.target_x.shape[0] == ctx.target_y.shape[0] > 0
    g = ctx.generator
    return torch.softmax(torch.randn(ctx.base_x.shape[0], ctx.num_classes, generator=g), 1)


NOT_CALLABLE = 3
'''


def _on_path(tmp_path, monkeypatch, name: str, text: str):
    """A module `name` of the user's own, importable for this test only."""
    folder = tmp_path / "mods"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.py").write_text(text)
    monkeypatch.syspath_prepend(str(folder))
    sys.modules.pop(name, None)
    return folder


@pytest.fixture
def mymethods(tmp_path, monkeypatch):
    yield _on_path(tmp_path, monkeypatch, "mymethods", MYMETHODS)
    sys.modules.pop("mymethods", None)


def test_a_user_method_of_true_labels_equals_the_baseline_exactly(mymethods, tmp_path):
    """The acceptance check: same base images, same learner, same step search, same accuracies."""
    common = {**TINY, "evaluate.num_test_models": 4}
    base = run_experiment(C.apply(C.Config(), {**common, "method": "baseline", "name": "b"}), out=str(tmp_path),
                          device="cpu", handle_signals=False)
    mine = run_experiment(C.apply(C.Config(), {**common, "method": "mymethods:true_labels", "name": "m"}),
                          out=str(tmp_path), device="cpu", handle_signals=False)
    assert mine["base_indices"].tolist() == base["base_indices"].tolist()
    assert torch.equal(mine["labels"], base["labels"])
    assert mine["num_steps"] == base["num_steps"]
    assert mine["test_accuracy"] == base["test_accuracy"]
    assert mine["kind"] == "direct" and mine["method"] == "mymethods:true_labels"


def test_a_user_method_sees_no_test_split_and_gets_a_seeded_generator(mymethods, tmp_path):
    cfg = C.apply(C.Config(), {**TINY, "method": "mymethods:sees", "name": "s"})
    a = run_experiment(cfg, out=None, device="cpu", handle_signals=False)
    b = run_experiment(cfg, out=None, device="cpu", handle_signals=False)
    assert torch.equal(a["labels"], b["labels"])  # the generator is seeded from the run's seed


@pytest.mark.parametrize("obj, words", [
    ("mymethods:wrong_shape", ["shape (3, 10)", "expected (10, 10)"]),
    ("mymethods:not_distributions", ["not distributions", "evaluate.loss=mse"]),
    ("mymethods:with_nan", ["NaN"]),
    ("mymethods:fails", ["failed: ValueError: my bug"]),
    ("mymethods:NOT_CALLABLE", ["is a int", "make_labels(ctx)"]),
    ("mymethods:missing", ["has no 'missing'"]),
    ("nosuchmodule:f", ["cannot import module 'nosuchmodule'", "PYTHONPATH"]),
    ("ld-r2", ["unknown method 'ld-r2'", "did you mean", "package.module:object"]),
])
def test_bad_methods_are_one_line(mymethods, tmp_path, capsys, obj, words):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(f"name: bad\nmethod: '{obj}'\ndata: {{source: mnist5k, target: mnist5k, num_base_examples: "
                        "10, target_set_size: 600}\nevaluate: {num_test_models: 2, step_grid: [20]}\n")
    assert main(["run", str(cfg_file), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("labeldistill: error:"), err
    for w in words:
        assert w in err, (w, err)
    assert not list((tmp_path / "out").glob("*/result.json"))


def test_a_richer_user_method_implements_the_protocol(tmp_path, monkeypatch):
    """A `Method` object of one's own: its run gets the context and returns a MethodOutput."""
    folder = tmp_path / "mods"
    folder.mkdir()
    (folder / "richer.py").write_text(textwrap.dedent('''
        import torch
        from labeldistill.methods import Method, MethodOutput


        def run(ctx):
            labels = torch.full((ctx.base_x.shape[0], ctx.num_classes), 1.0 / ctx.num_classes)
            return MethodOutput(labels=labels, images=ctx.base_x, num_steps=30, val_error=50.0,
                                recipe=ctx.recipe, info={"mine": {"note": "uniform"}})


        UNIFORM = Method("uniform", "uniform labels", "direct", run, candidates=lambda ctx: ([], {}))
    '''))
    monkeypatch.syspath_prepend(str(folder))
    cfg = C.apply(C.Config(), {**TINY, "method": "richer:UNIFORM", "name": "u"})
    result = run_experiment(cfg, out=str(tmp_path / "out"), device="cpu", handle_signals=False)
    assert result["num_steps"] == 30 and result["mine"] == {"note": "uniform"}
    assert torch.allclose(result["labels"], torch.full((10, 10), 0.1))


def test_a_second_method_of_a_registered_name_is_refused():
    from labeldistill.methods import register_method

    spec = get_method("baseline")
    assert isinstance(spec, Method)
    with pytest.raises(ValueError, match="already registered"):
        register_method(spec)


def test_init_labels_is_checked_by_the_method_registry():
    from labeldistill.methods import check_config

    with pytest.raises(ConfigError, match="needs a method that meta-learns labels"):
        check_config(C.apply(C.Config(), {"method": "baseline", "distill.init_labels": "baseline-kd"}))
    with pytest.raises(ConfigError, match="unknown distill.init_labels 'teacher'"):
        check_config(C.apply(C.Config(), {"method": "ld-rr", "distill.init_labels": "teacher"}))


def test_the_docs_example_of_a_method_of_ones_own_runs_as_written(tmp_path):
    """docs/usage.md, "Methods of your own": the module and the command, exactly as written."""
    text = DOCS.read_text()
    section = text[text.index("## Methods of your own"):]
    section = section[:section.index("\n## ", 5)]
    python = section.split("```python\n", 1)[1].split("```", 1)[0]
    command = section.split("```bash\n", 1)[1].split("```", 1)[0].strip()
    assert python.startswith("# mymethods.py")
    (tmp_path / "mymethods.py").write_text(python)
    argv = command.split()
    assert argv[:2] == ["PYTHONPATH=.", "labeldistill"]
    # PYTHONPATH=. as written (kept in front of any path the test session itself runs with)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (".", os.environ.get("PYTHONPATH")) if p)}
    fast = ["--set", "evaluate.num_test_models=2", "--set", "evaluate.step_grid=[50]", "--set",
            "evaluate.test_optimizers=[]", "--set", "evaluate.num_steps_analysis=false"]
    p = subprocess.run([sys.executable, "-m", "labeldistill.cli", *argv[2:], *fast], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    saved = json.loads(next((tmp_path / "runs").glob("*/result.json")).read_text())
    assert saved["method"] == "mymethods:true_labels" and len(saved["test_accuracy"]) == 2
    # the second function of the example is a method too
    p = subprocess.run([sys.executable, "-m", "labeldistill.cli", *argv[2:], *fast, "--set",
                        "method=mymethods:nearest_mean"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr


REVIEW = '''
import torch
import torch.nn.functional as F
from labeldistill.methods import Candidate, direct_method


def with_grad(ctx):
    w = torch.zeros(ctx.num_classes, requires_grad=True)
    return F.one_hot(ctx.base_labels, ctx.num_classes).float() + 0 * w


@direct_method("fancy_review", title="fancy", summary="two candidates of one's own", register=False)
def fancy(ctx):
    one_hot = F.one_hot(ctx.base_labels, ctx.num_classes).float()
    return [Candidate("sharp", one_hot, "ce"), Candidate("soft", 0.5 * one_hot + 0.05, "ce")], {}
'''


@pytest.fixture
def review_module(tmp_path, monkeypatch):
    yield _on_path(tmp_path, monkeypatch, "reviewmethods", REVIEW)
    sys.modules.pop("reviewmethods", None)


def test_labels_with_a_graph_are_taken_as_plain_labels(review_module, tmp_path):
    cfg = C.apply(C.Config(), {**TINY, "method": "reviewmethods:with_grad", "name": "g"})
    result = run_experiment(cfg, out=str(tmp_path), device="cpu", handle_signals=False)
    assert len(result["test_accuracy"]) == 3 and not result["labels"].requires_grad


def test_a_function_declared_with_direct_method_runs_from_its_module(review_module, tmp_path):
    cfg = C.apply(C.Config(), {**TINY, "method": "reviewmethods:fancy", "name": "f"})
    result = run_experiment(cfg, out=str(tmp_path), device="cpu", handle_signals=False)
    assert result["label_choice"]["candidates"] == ["sharp", "soft"]
    assert get_method("reviewmethods:fancy").title == "fancy"


def test_meta_learned_labels_can_start_from_a_users_method(mymethods, tmp_path):
    from labeldistill.methods import check_config

    cfg = C.apply(C.Config(), {**TINY, "method": "ld-rr", "distill.init_labels": "mymethods:true_labels",
                               "name": "i"})
    check_config(cfg)
    result = run_experiment(cfg, out=str(tmp_path), device="cpu", handle_signals=False)
    assert len(result["history"]) == 2
    with pytest.raises(ConfigError, match="unknown distill.init_labels .ld-or2.; known: uniform"):
        check_config(C.apply(C.Config(), {"method": "ld-rr", "distill.init_labels": "ld-or2"}))
