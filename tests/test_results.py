"""Typed run results: one versioned `RunResult` written and read in results.py; results of the
previous version still load; the artifact is the stored copy of a run's images."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import labeldistill as ld
from labeldistill import datasets
from labeldistill.artifact import load_distilled
from labeldistill.cli import main
from labeldistill.errors import RunFileError
from labeldistill.report import find_runs
from labeldistill.results import RESULT_VERSION, RunDir, RunResult

# result.json and config.json of `labeldistill run mnist5k_baseline --set evaluate.num_test_models=2
# --set evaluate.step_grid=[50]`, written by the version before results had a version (main at ac5b290).
V1 = Path(__file__).parent / "fixtures" / "result_v1"
V1_NAME = "tiny_mnist5k_baseline_num_test_models=2_step_grid=50"
TINY = {"evaluate.num_test_models": 1, "evaluate.step_grid": [20]}


def v1_run(tmp_path) -> Path:
    run = tmp_path / "out" / V1_NAME
    shutil.copytree(V1, run)
    return run


def test_result_round_trips_through_its_file_with_typed_fields(tmp_path):
    old = json.loads((V1 / "result.json").read_text())
    r = RunResult.from_dict(old)
    assert r.version == 1 and "version" not in old
    assert r.labels.dtype == torch.float32 and r.labels.tolist() == old["labels"]
    assert r.base_indices.dtype == torch.long and r.base_indices.tolist() == old["base_indices"]
    assert r.extra["num_steps_analysis"] == old["num_steps_analysis"]  # fields of no attribute ride along
    rd = RunDir(tmp_path / "run")
    rd.path.mkdir()
    rd.write_result(r)
    written = json.loads(rd.result_path.read_text())
    assert written == {**old, "version": RESULT_VERSION}  # nothing lost, only the version added
    back = rd.read_result()
    assert back.version == RESULT_VERSION and back.to_dict() == r.to_dict()
    assert torch.equal(back.labels, r.labels) and back["method"] == "baseline" and back["labels"] is back.labels
    assert set(back) == set(written) - {"version"} and back["test_error"] == old["test_error"]


def test_result_of_a_newer_or_bad_version_is_one_line(tmp_path):
    old = json.loads((V1 / "result.json").read_text())
    with pytest.raises(RunFileError, match="result version 3, written by a newer labeldistill.*upgrade"):
        RunResult.from_dict({**old, "version": RESULT_VERSION + 1}, "x/result.json")
    with pytest.raises(RunFileError, match="'version' must be a whole number"):
        RunResult.from_dict({**old, "version": "2"}, "x/result.json")
    with pytest.raises(RunFileError, match="'labels' must be"):
        RunDir(tmp_path).write_result({**old, "labels": []})  # a run's result is checked before it is written
    assert not (tmp_path / "result.json").exists()


def test_a_run_folder_of_the_previous_version_reports_resumes_exports_and_evaluates(tmp_path, capsys):
    run = v1_run(tmp_path)
    (found,) = find_runs([tmp_path / "out"])
    assert found.result.version == 1 and found["test_accuracy_mean"] == 55.2
    assert main(["report", str(tmp_path / "out"), "--out", str(tmp_path / "rep")]) == 0
    assert "55.20" in (tmp_path / "rep" / "report.md").read_text()
    # --resume of a finished run returns its result unchanged, without running again.
    before = (run / "result.json").read_bytes()
    assert main(["run", "mnist5k_baseline", "--set", "evaluate.num_test_models=2", "--set", "evaluate.step_grid=[50]",
                 "--out", str(tmp_path / "out"), "--resume", "--quiet"]) == 0
    assert (run / "result.json").read_bytes() == before
    # export writes the artifact from the stored result; evaluate reads it.
    assert main(["export", str(run)]) == 0
    card = json.loads((run / "distilled.json").read_text())
    assert card["accuracy"]["values"] == found["test_accuracy"]
    assert RunDir(run).read_result().artifact == "distilled.json"
    capsys.readouterr()
    assert main(["evaluate", str(run), "--quiet"]) == 0
    assert "test accuracy" in capsys.readouterr().out.lower()


@pytest.fixture(scope="module")
def baseline_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return out, ld.distill("mnist5k", method="baseline", num_base_examples=10, out=out, name="base10", overrides=TINY)


def _no_dataset_reads(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("the dataset was read again")
    monkeypatch.setattr(datasets, "load_raw", refuse)


def test_api_images_are_the_stored_base_images_not_a_reread(baseline_run, monkeypatch):
    from labeldistill.api import _reread_base_images
    from labeldistill.datasets import get_info

    out, r = baseline_run
    cfg = ld.config.from_dict(RunDir(r.run_dir).read_config())
    reread = _reread_base_images(cfg, get_info("mnist5k"), None, r.result)
    assert r.images.shape == (10, 1, 28, 28) and torch.equal(r.images, reread)
    assert torch.equal(load_distilled(r.artifact).pixels, reread)
    _no_dataset_reads(monkeypatch)  # a finished run read back: its images come from the artifact
    again = ld.distill("mnist5k", method="baseline", num_base_examples=10, out=out, name="base10",
                       overrides=TINY, resume=True)
    assert again.result.pixels is None and torch.equal(again.images, reread)


def test_plot_draws_base_images_from_the_artifact_without_the_dataset(baseline_run, monkeypatch, tmp_path):
    from labeldistill.plots import base_images

    out, r = baseline_run
    _no_dataset_reads(monkeypatch)
    (run,) = find_runs([out])
    shown = base_images(run)
    assert shown.shape == (10, 28, 28) and torch.equal(torch.from_numpy(shown), r.images[:, 0])
    assert main(["plot", str(out), "--out", str(tmp_path / "fig")]) == 0
    assert (tmp_path / "fig" / "runs" / "base10_labels.png").is_file()


def test_image_distillation_without_out_returns_its_synthetic_images(tmp_path):
    tiny = {**TINY, "data.target_set_size": 1024, "distill.batch_size": 512}
    r = ld.distill("mnist5k", method="dd-rr", num_base_examples=10, epochs=1, out=None, overrides=tiny)
    assert r.images.shape == (10, 1, 28, 28) and r.run_dir is None and r.artifact is None
    kept = ld.distill("mnist5k", method="dd-rr", num_base_examples=10, epochs=1, out=tmp_path, overrides=tiny)
    assert torch.equal(r.images, kept.images)  # same seed, same images, with or without a folder
    assert torch.equal(load_distilled(kept.artifact).pixels, kept.images)
