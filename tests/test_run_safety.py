"""Run folders that are safe (issue 17): nothing outside --out, one writer per folder,
--overwrite keeps the old result until the new one exists, umask modes, safe checkpoints.

Finished runs here are direct baselines on the embedded mnist5k sample (a few seconds);
runs that need a checkpoint are the tiny LD-rr config of test_resume.
"""
from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from labeldistill import cli, sweep
from labeldistill import experiment as distill_mod
from labeldistill.config import Config, apply, to_dict, validate
from labeldistill.errors import ConfigError, Interrupted, RunError
from labeldistill.results import LOCK_FILE, RunDir, atomic_write_json, run_name_problem, safe_run_name
from test_resume import _env, _wait_for_epochs, _with_hook, tiny

BASELINE = {"name": "b", "method": "baseline", "seed": 1, "device": "cpu",
            "data": {"source": "mnist5k", "target": "mnist5k", "num_base_examples": 10},
            "evaluate": {"num_test_models": 1, "step_grid": [10, 20]}}


def _config_file(folder: Path, **changes) -> Path:
    path = folder / "b.yaml"
    path.write_text(yaml.safe_dump({**BASELINE, **changes}))
    return path


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err.strip()


def _tree(folder: Path) -> dict:
    """Every file below `folder` with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------
# a run name is one safe path component


@pytest.mark.parametrize("name", ["..", ".", "a/b", "../x", "a\\b", "tab\there", "nul\0byte", "x" * 300, " lead"])
def test_unsafe_names_never_touch_anything_outside_out(name, tmp_path, capsys):
    parent = tmp_path / "parent"
    out = parent / "runs"
    out.mkdir(parents=True)
    (parent / "mine.txt").write_text("the user's own file")
    (parent / "config.json").write_text("{}")
    (parent / "result.json").write_text("{}")
    cfg = _config_file(tmp_path, name=name)
    before = _tree(tmp_path)
    code = cli.main(["run", str(cfg), "--out", str(out), "--overwrite", "--quiet"])
    assert code == 2
    line = _one_line_error(capsys)
    assert "a run name is one folder name inside --out" in line
    assert _tree(tmp_path) == before
    assert sorted(p.name for p in parent.iterdir()) == ["config.json", "mine.txt", "result.json", "runs"]


def test_the_library_refuses_unsafe_names_even_without_validation(tmp_path):
    """Config objects built without `validate` (API callers) meet the same rule in RunDir."""
    (tmp_path / "sentinel").write_text("keep")
    out = tmp_path / "runs"
    for name in ("..", ".", "a/../.."):
        with pytest.raises(RunError, match="a run folder must be a single folder inside --out"):
            distill_mod.run_experiment(apply(Config(), {"name": name}), out=str(out), overwrite=True)
    assert not out.exists() and (tmp_path / "sentinel").read_text() == "keep"
    # a run folder that is a link out of --out is refused too
    out.mkdir()
    (out / "b").symlink_to(tmp_path)
    with pytest.raises(RunError, match="leads outside the output folder"):
        RunDir.under(out, "b")


def test_empty_name_is_automatic_and_the_automatic_name_is_safe():
    assert validate(apply(Config(), {"name": ""})).run_name == "ld-rr_mnist_to_mnist_100be_0s"
    with pytest.raises(ConfigError, match="start or end with spaces"):
        validate(apply(Config(), {"name": "  "}))
    assert Config().run_name == "ld-rr_mnist_to_mnist_100be_0s"
    unvalidated = apply(Config(), {"method": "../../x\n", "data.source": "a/../../b.npz"})
    assert run_name_problem(unvalidated.run_name) is None
    for text in ("..", "../../etc", "a/b\\c", "\0x\ty", ".hidden", "é" * 150):
        safe = safe_run_name(text)
        assert run_name_problem(safe) is None and not safe.startswith("."), (text, safe)


# ---------------------------------------------------------------------------
# one writer per folder


def test_a_busy_folder_refuses_run_resume_and_sweep_in_one_line(tmp_path, capsys):
    cfg = _config_file(tmp_path)
    out = tmp_path / "runs"
    holder = RunDir(out / "b")
    with holder.locked():
        assert (out / "b" / LOCK_FILE).read_text().split()[0] == str(os.getpid())
        for extra in ([], ["--resume"], ["--overwrite"]):
            assert cli.main(["run", str(cfg), "--out", str(out), "--quiet", *extra]) == 2
            line = _one_line_error(capsys)
            assert line == (f"labeldistill: error: {out / 'b'} is in use by another labeldistill process "
                            f"(PID {os.getpid()}); wait for it to finish or stop it")
        jobs = sweep.plan([cfg], out)
        report = sweep.run_sweep(jobs, sweep.LocalBackend(1), progress=False)
        [outcome] = report.outcomes
        assert outcome.status == "failed"
        assert f"in use by another labeldistill process (PID {os.getpid()})" in outcome.message
        assert outcome.message in jobs[0].log_path.read_text()
        assert sorted(p.name for p in (out / "b").iterdir()) == [LOCK_FILE]  # nothing was run beside the holder
    assert not (out / "b").exists(), "a folder left empty by its locker is removed"
    assert cli.main(["run", str(cfg), "--out", str(out), "--quiet"]) == 0
    assert (out / "b" / "result.json").is_file() and not (out / "b" / LOCK_FILE).exists()


def test_two_runs_at_once_then_kill_9_and_an_immediate_resume(tmp_path):
    """The second of two concurrent runs refuses naming the first's PID and leaves it intact;
    after a kill -9 of the first, an immediate --resume is not blocked by a stale lock."""
    config = tmp_path / "t.yaml"
    config.write_text(yaml.safe_dump({**BASELINE, "name": "t", "method": "ld-rr", "seed": 2,
                                      "data": {**BASELINE["data"], "num_base_examples": 20, "target_set_size": 512},
                                      "distill": {"epochs": 200, "batch_size": 64, "validate_every": 100},
                                      "evaluate": {"num_test_models": 1}}))
    run = tmp_path / "out" / "t"
    cmd = [sys.executable, "-m", "labeldistill.cli", "run", str(config), "--out", str(tmp_path / "out"), "--quiet"]
    first = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_epochs(first, run, 1)
    for extra in ([], ["--resume"]):
        second = subprocess.run(cmd + extra, env=_env(), capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        assert second.stderr == (f"labeldistill: error: {run} is in use by another labeldistill process "
                                 f"(PID {first.pid}); wait for it to finish or stop it\n")
    assert first.poll() is None, "the first run goes on"
    first.send_signal(signal.SIGKILL)
    first.communicate()
    assert (run / LOCK_FILE).is_file() and (run / "checkpoint.pt").is_file()  # the dead holder's lock file stays
    t0 = time.monotonic()
    again = subprocess.Popen(cmd + ["--resume"], env=_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_epochs(again, run, _epochs_in(run) + 1)
    assert time.monotonic() - t0 < 120
    again.send_signal(signal.SIGTERM)
    _, err = again.communicate(timeout=120)
    assert again.returncode == 143 and "checkpoint saved" in err and "in use" not in err


def _epochs_in(run: Path) -> int:
    return sum('"event": "epoch"' in line for line in (run / "metrics.jsonl").read_text().splitlines())


# ---------------------------------------------------------------------------
# --overwrite keeps the old result until the new run has finished


def test_interrupted_overwrite_keeps_the_previous_result_and_a_resume_replaces_it(tmp_path, capsys, monkeypatch):
    cfg = _config_file(tmp_path)
    out = tmp_path / "runs"
    run = out / "b"
    assert cli.main(["run", str(cfg), "--out", str(out), "--quiet"]) == 0
    old = _tree(run)

    def interrupted(self, *args, **kwargs):
        raise Interrupted(signal.SIGINT, "while training the test models")

    monkeypatch.setattr(distill_mod.Experiment, "test", interrupted)
    assert cli.main(["run", str(cfg), "--out", str(out), "--quiet", "--overwrite"]) == 130
    line = _one_line_error(capsys)
    assert f"the previous result is kept in {run / 'previous'}" in line
    assert _tree(run / "previous") == old
    assert not (run / "result.json").exists()
    # a second --overwrite that is interrupted too keeps the same previous result
    assert cli.main(["run", str(cfg), "--out", str(out), "--quiet", "--overwrite"]) == 130
    capsys.readouterr()
    assert _tree(run / "previous") == old
    # a plain run says where the previous result is; the resume finishes and replaces it
    monkeypatch.undo()
    assert cli.main(["run", str(cfg), "--out", str(out), "--quiet"]) == 2
    assert "holds an unfinished run" in (line := _one_line_error(capsys)) and "previous result is kept" in line
    (run / ".result.json.dead.tmp").write_text("left by a kill")
    assert cli.main(["run", str(cfg), "--out", str(out), "--quiet", "--resume"]) == 0
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "distilled.json", "distilled.safetensors",
                                                     "metrics.jsonl", "result.json"]
    new = json.loads((run / "result.json").read_text())
    assert new["test_accuracy"] == json.loads(old["result.json"])["test_accuracy"]  # same seed, same result


def test_a_kill_while_setting_aside_is_undone_under_the_next_lock(tmp_path):
    run = RunDir(tmp_path / "r")
    for name in ("result.json", "config.json", "distilled.json"):
        atomic_write_json(run.path / name, {"file": name})
    aside = run.path / ".previous.partial"
    aside.mkdir()
    os.replace(run.path / "result.json", aside / "result.json")  # a kill after the first move
    (run.path / ".config.json.1234.tmp").write_text("{")
    with run.locked():
        assert run.is_finished() and not aside.exists()
        assert not list(run.path.glob("*.tmp"))
        run.set_aside()
        assert sorted(p.name for p in run.path.iterdir()) == [LOCK_FILE, "previous"]
        assert json.loads((run.previous_path / "result.json").read_text()) == {"file": "result.json"}
        atomic_write_json(run.result_path, {"file": "new"})  # the new run finished, then a kill
    with run.locked():
        assert not run.previous_path.exists()


# ---------------------------------------------------------------------------
# files: modes from the umask, temporary files cleaned


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_run_files_get_the_mode_of_the_umask(umask, mode, tmp_path):
    cfg = apply(Config(), {"name": "b", "method": "baseline", "seed": 1, "device": "cpu", "data.source": "mnist5k",
                           "data.target": "mnist5k", "data.num_base_examples": 10, "evaluate.num_test_models": 1,
                           "evaluate.step_grid": "10,20"})
    before = os.umask(umask)
    try:
        distill_mod.run_experiment(cfg, out=str(tmp_path), handle_signals=False)
    finally:
        os.umask(before)
    files = sorted((tmp_path / "b").iterdir())
    assert [f.name for f in files] == ["config.json", "distilled.json", "distilled.safetensors", "metrics.jsonl",
                                       "result.json"]
    assert {f.name: oct(f.stat().st_mode & 0o777) for f in files} == {f.name: oct(mode) for f in files}


# ---------------------------------------------------------------------------
# checkpoints: plain values only, the same data, an epoch within the run


class _Planted:
    """What an attacker would plant: unpickling calls Path.touch(sentinel)."""

    def __init__(self, sentinel: Path):
        self.sentinel = sentinel

    def __reduce__(self):
        return Path.touch, (self.sentinel,)


def test_a_planted_pickle_is_refused_and_not_run(tmp_path, capsys):
    cfg = tiny()
    run = RunDir(tmp_path / "out" / "t")
    run.write_config(to_dict(cfg))
    sentinel = tmp_path / "pwned"
    torch.save({"config": to_dict(cfg), "epoch": 1, "payload": _Planted(sentinel)}, run.checkpoint_path)
    with pytest.raises(pickle.UnpicklingError):  # the object does work when unpickled the old way
        torch.load(run.checkpoint_path, weights_only=True)
    config = tmp_path / "t.json"
    config.write_text(json.dumps(to_dict(cfg)))
    code = cli.main(["run", str(config), "--out", str(tmp_path / "out"), "--resume", "--quiet"])
    assert code == 2
    line = _one_line_error(capsys)
    assert line.startswith(f"labeldistill: error: refused to load {run.checkpoint_path}: it holds objects other "
                           "than tensors and plain values")
    assert not sentinel.exists()
    torch.load(run.checkpoint_path, weights_only=False)  # proof that the planted object would have run
    assert sentinel.exists()


def _interrupt_in_epoch_2(monkeypatch, cfg, out: Path) -> RunDir:
    steps_per_epoch = -(-3333 // cfg.distill.batch_size)
    _with_hook(monkeypatch, lambda learner, distilled, n: n == steps_per_epoch + 1
               and os.kill(os.getpid(), signal.SIGINT))
    with pytest.raises(Interrupted):
        distill_mod.run_experiment(cfg, out=str(out))
    monkeypatch.undo()
    return RunDir(out / cfg.run_name)


def test_resume_checks_the_data_fingerprint_and_old_checkpoints_still_resume(tmp_path, monkeypatch):
    cfg = tiny()
    run = _interrupt_in_epoch_2(monkeypatch, cfg, tmp_path)
    state = torch.load(run.checkpoint_path, weights_only=True)  # plain types and tensors only
    assert state["epoch"] == 1 and len(state["data_fingerprint"]["sha256"]) == 64
    original = distill_mod.prepare

    def other_images(*args, **kwargs):
        data = original(*args, **kwargs)
        data.base_pixels = data.base_pixels.flip(-1)
        return data

    monkeypatch.setattr(distill_mod, "prepare", other_images)
    with pytest.raises(RunError, match=r"the data differ from those the run in .* started with") as info:
        distill_mod.run_experiment(cfg, out=str(tmp_path), resume=True, handle_signals=False)
    assert "\n" not in str(info.value)
    monkeypatch.undo()
    assert run.checkpoint_path.is_file() and not run.is_finished()
    # a checkpoint of the previous version (no fingerprint) resumes as before
    del state["data_fingerprint"]
    run.save_checkpoint(state)
    result = distill_mod.run_experiment(cfg, out=str(tmp_path), resume=True, handle_signals=False)
    assert result["best_epoch"] is not None and run.is_finished()


@pytest.mark.parametrize("epoch", [-1, 99, "3", None])
def test_a_checkpoint_epoch_outside_the_run_is_one_line(epoch, tmp_path):
    cfg = tiny()
    run = RunDir(tmp_path / "t")
    run.write_config(to_dict(cfg))
    run.save_checkpoint({"config": to_dict(cfg), "epoch": epoch})
    with pytest.raises(RunError, match=r"is at epoch .* outside this run's 0\.\.4; delete it") as info:
        distill_mod._prepare_run_dir(run, cfg, resume=True, overwrite=False)
    assert "\n" not in str(info.value)
