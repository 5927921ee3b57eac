"""Long runs survive SIGKILL, SIGINT/SIGTERM and numerical failures.

The subprocess tests run the real command line on a tiny offline config
(mnist5k, 20 base examples, resets every few steps so that the reset tracker
and fresh online models are part of what must be restored) and require the
resumed run's labels and test accuracies to equal an uninterrupted run's
exactly (CPU, fixed seed, the same machine).

Nothing here depends on one machine's float trajectory: the resets are forced
by the config (a power-of-two target minibatch and a tiny stats_gap bound how
long a model can live, see `max_life`), not found by trying seeds, so they
happen on every CPU kind (AVX2 or AVX-512 kernels, any thread count).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from labeldistill import experiment as distill_mod
from labeldistill.meta import loop as loop_mod
from labeldistill.config import Config, apply, to_dict
from labeldistill.errors import Interrupted, RunError
from labeldistill.meta.or2 import SecondOrder
from labeldistill.meta.rr import RidgeRegression
from labeldistill.results import RunDir
from labeldistill.signals import StopGuard, stop_guard
from test_reset import max_life

# 16 full minibatches of 8 per epoch, 96 steps; a model lives at most max_life(2, 8) = 36 steps,
# so every machine makes at least two resets.
TARGET_SET, BATCH, GAP, EPOCHS = 128, 8, 2, 6
assert EPOCHS * (TARGET_SET // BATCH) >= 2 * max_life(GAP, BATCH) and TARGET_SET % BATCH == 0

SRC = Path(__file__).resolve().parents[1] / "src"
CONFIG = """\
name: tiny
method: ld-rr
seed: 5
device: cpu
data: {source: mnist5k, target: mnist5k, num_base_examples: 20, target_set_size: %d}
distill: {epochs: %d, batch_size: %d, validate_every: 2, checkpoint_every: 1, stats_gap: %d}
evaluate: {num_test_models: 2}
""" % (TARGET_SET, EPOCHS, BATCH, GAP)


def _env():
    return {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _start(args, cwd):
    return subprocess.Popen([sys.executable, "-m", "labeldistill.cli", *args], cwd=cwd, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _epochs_logged(run: Path) -> int:
    try:
        lines = (run / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    return sum(1 for line in lines if line.endswith("}") and '"event": "epoch"' in line)


def _wait_for_epochs(proc, run: Path, n: int, timeout: float = 240) -> float:
    """Wait until epoch n is logged; return the wall time epoch n took (to aim a kill into n + 1)."""
    deadline = time.monotonic() + timeout
    while _epochs_logged(run) < n:
        if proc.poll() is not None:
            pytest.fail(f"run ended before epoch {n}: {proc.communicate()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no epoch {n} after {timeout} s")
        time.sleep(0.01)
    seconds = [json.loads(line)["seconds"] for line in (run / "metrics.jsonl").read_text().splitlines()
               if line.endswith("}") and '"event": "epoch"' in line]
    return seconds[n - 1] - (seconds[n - 2] if n > 1 else 0.0)


def _result(run: Path) -> dict:
    return json.loads((run / "result.json").read_text())


def _assert_same_result(a: dict, b: dict) -> None:
    assert torch.equal(torch.tensor(a["labels"]), torch.tensor(b["labels"]))
    assert a["test_accuracy"] == b["test_accuracy"]
    assert a["test_error"] == b["test_error"]
    assert a["num_steps"] == b["num_steps"] and a["best_epoch"] == b["best_epoch"]
    drop = {"seconds"}
    strip = [[{k: v for k, v in h.items() if k not in drop} for h in r["history"]] for r in (a, b)]
    assert strip[0] == strip[1]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run, started at once; tests wait for it only when they compare."""
    tmp = tmp_path_factory.mktemp("reference")
    (tmp / "tiny.yaml").write_text(CONFIG)
    proc = _start(["run", "tiny.yaml", "--out", "out", "--quiet"], tmp)

    def get() -> dict:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        result = _result(tmp / "out" / "tiny")
        assert result["history"][-1]["num_resets"] >= 2, "max_life guarantees resets: the tracker is broken"
        return result

    yield get
    if proc.poll() is None:
        proc.kill()


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(reference, tmp_path):
    (tmp_path / "tiny.yaml").write_text(CONFIG)
    run = tmp_path / "out" / "tiny"
    proc = _start(["run", "tiny.yaml", "--out", "out", "--quiet"], tmp_path)
    epoch_seconds = _wait_for_epochs(proc, run, 2)
    time.sleep(epoch_seconds / 3)  # into the next epoch: the kill lands between two checkpoints
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "result.json").exists()
    assert (run / "checkpoint.pt").is_file()
    resumed = _start(["run", "tiny.yaml", "--out", "out", "--quiet", "--resume"], tmp_path)
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert "Traceback" not in err
    assert not (run / "checkpoint.pt").exists()
    _assert_same_result(_result(run), reference())


@pytest.mark.parametrize("signum", [signal.SIGTERM,
                                    pytest.param(signal.SIGINT, marks=pytest.mark.slow)])  # SIGINT: in-process below
def test_signal_stops_cleanly_and_the_printed_command_resumes(reference, tmp_path, signum):
    (tmp_path / "tiny.yaml").write_text(CONFIG)
    run = tmp_path / "out" / "tiny"
    proc = _start(["run", "tiny.yaml", "--out", "out", "--quiet"], tmp_path)
    epoch_seconds = _wait_for_epochs(proc, run, 1)
    time.sleep(epoch_seconds / 3)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    name = signal.Signals(signum).name
    assert lines[0].startswith(f"labeldistill: interrupted by {name} ")
    assert "checkpoint saved" in lines[0]
    command = lines[0].split("resume with: ", 1)[1]
    assert command == "labeldistill run tiny.yaml --out out --quiet --resume"
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    assert state["epoch"] >= 1
    assert not (run / "result.json").exists()
    resumed = _start(command.split()[1:], tmp_path)
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    _assert_same_result(_result(run), reference())


# ---------------------------------------------------------------------------
# in-process: faster, and able to inject failures at an exact step

TINY = {"name": "t", "method": "ld-rr", "seed": 2, "device": "cpu", "data.source": "mnist5k",
        "data.target": "mnist5k", "data.num_base_examples": 20, "distill.epochs": 4,
        "distill.batch_size": 512, "distill.validate_every": 2, "distill.stats_gap": 5,
        "evaluate.num_test_models": 1}


def tiny(**changes) -> Config:
    return apply(Config(), {**TINY, **changes})


def _with_hook(monkeypatch, hook):
    """Call hook(learner, global_step) after every outer step of either variant."""
    count = {"n": 0}
    for cls in (RidgeRegression, SecondOrder):
        original = cls.step

        def step(self, *args, _original=original, **kwargs):
            out = _original(self, *args, **kwargs)
            count["n"] += 1
            hook(self, args[0], count["n"])
            return out

        monkeypatch.setattr(cls, "step", step)
    return count


@pytest.fixture(scope="module")
def tiny_refs(tmp_path_factory):
    cache = {}

    def get(method: str) -> dict:
        if method not in cache:
            cache[method] = distill_mod.run_experiment(tiny(method=method), handle_signals=False)
        return cache[method]

    return get


@pytest.mark.parametrize("method", ["ld-rr", "ld-or2", "dd-rr"])
def test_sigint_at_a_step_then_resume_is_exact(method, tiny_refs, tmp_path, monkeypatch):
    """A real SIGINT in the middle of epoch 2: checkpoint at that step, then an exact resume."""
    steps_per_epoch = -(-3333 // 512)  # mnist5k target set / batch size
    at = steps_per_epoch + 3

    def hook(learner, distilled, n):
        if n == at:
            os.kill(os.getpid(), signal.SIGINT)

    _with_hook(monkeypatch, hook)
    cfg = tiny(method=method)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(Interrupted) as info:
        distill_mod.run_experiment(cfg, out=str(tmp_path))
    assert signal.getsignal(signal.SIGINT) is before, "handlers must be restored"
    assert info.value.exit_code == 130
    assert "at epoch 2 step 3" in str(info.value)
    run = RunDir(tmp_path / "t")
    state = run.load_checkpoint()
    assert state["epoch"] == 1 and state["partial"]["step"] == 3
    monkeypatch.undo()
    result = distill_mod.run_experiment(cfg, out=str(tmp_path), resume=True)
    ref = tiny_refs(method)
    assert torch.equal(result["labels"], ref["labels"])
    assert result["test_accuracy"] == ref["test_accuracy"]
    assert [h["train_loss"] for h in result["history"]] == [h["train_loss"] for h in ref["history"]]


def test_kill_during_testing_redoes_only_the_test(tiny_refs, tmp_path, monkeypatch):
    cfg = tiny()
    calls = {"n": 0}
    original = distill_mod.Experiment.test

    def failing_test(self, *args, **kwargs):
        calls["n"] += 1
        raise KeyboardInterrupt  # what a SIGKILL during testing leaves behind: the final checkpoint
    monkeypatch.setattr(distill_mod.Experiment, "test", failing_test)
    with pytest.raises(KeyboardInterrupt):
        distill_mod.run_experiment(cfg, out=str(tmp_path), handle_signals=False)
    run = RunDir(tmp_path / "t")
    assert run.load_checkpoint()["epoch"] == cfg.distill.epochs
    monkeypatch.setattr(distill_mod.Experiment, "test", original)
    events = []
    result = distill_mod.run_experiment(cfg, out=str(tmp_path), resume=True,
                                        progress=lambda e, i: events.append(e))
    assert "epoch" not in events and [e for e in events if e != "progress"][0] == "resumed"
    ref = tiny_refs("ld-rr")
    assert torch.equal(result["labels"], ref["labels"])
    assert result["test_accuracy"] == ref["test_accuracy"]
    log = [json.loads(line) for line in (tmp_path / "t" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log if r["event"] == "epoch"] == list(range(1, cfg.distill.epochs + 1))
    # --resume on a finished run returns it without recomputing
    again = distill_mod.run_experiment(cfg, out=str(tmp_path), resume=True,
                                       progress=lambda e, i: pytest.fail("recomputed"))
    assert again["test_accuracy"] == ref["test_accuracy"]


def test_checkpoint_round_trip_restores_every_state(tmp_path):
    """state_dict -> load_state_dict into a fresh experiment -> the same state, tensor for tensor."""
    from labeldistill.data import prepare

    # 20 full minibatches of 4 in one epoch, and a model lives at most max_life(2, 4) = 20 steps:
    # the first epoch resets on every machine.
    cfg = tiny(method="ld-rr", **{"distill.stats_gap": 2, "distill.batch_size": 4, "data.target_set_size": 80})
    assert 80 // 4 >= max_life(2, 4)
    from labeldistill.meta.loop import MetaLoop

    data = prepare(cfg, "cpu")
    ctx = distill_mod.Experiment(cfg, data, torch.device("cpu")).context()
    a = MetaLoop(ctx, kind="labels", variant="rr")
    a.setup()
    a.run_epoch()
    a.epoch = 1
    state = a.state_dict()
    assert state["tracker"]["recorded"], "the state must include a model reset"
    assert state["num_resets"] >= 1
    b = MetaLoop(ctx, kind="labels", variant="rr")
    b.setup()
    b.load_state_dict(state)
    _assert_nested_equal(b.state_dict(), state)
    # and the next epochs agree
    assert a.run_epoch() == b.run_epoch()
    assert torch.equal(a.distilled.param, b.distilled.param)


def _assert_nested_equal(x, y, path="state"):
    if isinstance(x, torch.Tensor):
        assert isinstance(y, torch.Tensor) and torch.equal(x.cpu(), y.cpu()), path
    elif isinstance(x, dict):
        assert set(x) == set(y), path
        for k in x:
            _assert_nested_equal(x[k], y[k], f"{path}.{k}")
    elif isinstance(x, (list, tuple)):
        assert len(x) == len(y), path
        for i, (u, v) in enumerate(zip(x, y)):
            _assert_nested_equal(u, v, f"{path}[{i}]")
    else:
        assert x == y or (x != x and y != y), path


@pytest.mark.parametrize("what", ["labels", "weights"])
def test_non_finite_stops_and_keeps_the_last_good_checkpoint(what, tmp_path, monkeypatch):
    cfg = tiny()
    steps_per_epoch = -(-3333 // 512)
    # labels: poisoned mid-epoch 3; weights: poisoned at the very last step of epoch 3, so that
    # the losses of that epoch are still finite and only the weight check can see it.
    at = 2 * steps_per_epoch + (2 if what == "labels" else steps_per_epoch)

    def hook(learner, distilled, n):
        if n == at:
            with torch.no_grad():
                if what == "labels":
                    distilled.param[0, 0] = float("nan")
                else:
                    next(learner.model.parameters()).view(-1)[0] = float("inf")

    cfg = apply(cfg, {"distill.stats_gap": 1000})  # no reset may wash the poisoned model away
    _with_hook(monkeypatch, hook)
    with pytest.raises(RunError) as info:
        distill_mod.run_experiment(cfg, out=str(tmp_path), handle_signals=False)
    message = str(info.value)
    assert "\n" not in message
    assert ("non-finite labels" if what == "labels" else "non-finite online model weights") in message
    assert "epoch 3" in message and "checkpoint of epoch 2" in message
    run = RunDir(tmp_path / "t")
    state = run.load_checkpoint()
    assert state["epoch"] == 2
    assert torch.isfinite(state["param"]).all()
    assert loop_mod._all_finite(state["learner"])
    assert not run.is_finished()


def test_stop_guard_defers_once_then_raises(monkeypatch):
    before = signal.getsignal(signal.SIGTERM)
    with stop_guard() as guard:
        assert signal.getsignal(signal.SIGTERM) == guard._handle
        with guard.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            assert guard.requested and guard.signum == signal.SIGTERM
            with pytest.raises(Interrupted) as info:
                os.kill(os.getpid(), signal.SIGINT)  # a second signal does not wait
            assert info.value.exit_code == 130
        guard.signum = None
        guard.phase = "while training the test models"
        with pytest.raises(Interrupted, match="SIGTERM while training the test models"):
            os.kill(os.getpid(), signal.SIGTERM)  # outside the loop: at once
    assert signal.getsignal(signal.SIGTERM) == before
    assert not StopGuard().requested


def test_resume_from_the_run_directory_alone(tmp_path, tiny_refs, capsys, monkeypatch):
    """`labeldistill run RUN_DIR --resume` needs neither the config file nor --out."""
    from labeldistill import cli

    steps_per_epoch = -(-3333 // 512)
    _with_hook(monkeypatch, lambda learner, distilled, n: n == steps_per_epoch * 2 + 1 and os.kill(os.getpid(), signal.SIGTERM))
    cfg_file = tmp_path / "t.yaml"
    cfg_file.write_text(json.dumps({"name": "t", "method": "ld-rr", "seed": 2, "device": "cpu",
                                    "data": {"source": "mnist5k", "target": "mnist5k", "num_base_examples": 20},
                                    "distill": {"epochs": 4, "batch_size": 512, "validate_every": 2, "stats_gap": 5},
                                    "evaluate": {"num_test_models": 1}}))
    code = cli.main(["run", str(cfg_file), "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 143
    assert err.count("\n") == 1 and "interrupted by SIGTERM at epoch 3 step 1" in err
    monkeypatch.undo()
    code = cli.main(["run", str(tmp_path / "out" / "t"), "--resume", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0, out
    result = json.loads((tmp_path / "out" / "t" / "result.json").read_text())
    assert result["labels"] == tiny_refs("ld-rr")["labels"].tolist()
    assert result["test_accuracy"] == tiny_refs("ld-rr")["test_accuracy"]


def test_trim_log_drops_a_cut_line_and_epochs_after_the_checkpoint(tmp_path):
    run = RunDir(tmp_path)
    for e in range(1, 5):
        run.log({"event": "epoch", "epoch": e})
    run.log({"event": "interrupted", "epoch": 4})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"event": "epoch", "epo')  # a SIGKILL in the middle of a write
    run.trim_log(2)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines == [{"event": "epoch", "epoch": 1}, {"event": "epoch", "epoch": 2},
                     {"event": "interrupted", "epoch": 4}]


def test_interrupted_messages_say_what_is_on_disk():
    assert str(Interrupted(signal.SIGINT, "at epoch 2 step 3", "runs/x/checkpoint.pt")) == (
        "interrupted by SIGINT at epoch 2 step 3; checkpoint saved to runs/x/checkpoint.pt")
    assert "no checkpoint yet" in str(Interrupted(signal.SIGTERM, "while loading data"))
    kept = Interrupted(signal.SIGTERM, "while training the test models", kept="the checkpoint of epoch 4 in d is kept")
    assert str(kept).endswith("; the checkpoint of epoch 4 in d is kept") and kept.exit_code == 143


def test_baseline_interrupted_says_there_is_no_checkpoint(tmp_path, monkeypatch):
    from labeldistill.methods import choose

    original = choose.train_and_evaluate  # the step search's validation models

    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return original(*args, **kwargs)

    monkeypatch.setattr(choose, "train_and_evaluate", interrupted)
    with pytest.raises(Interrupted, match="SIGINT while searching the number of steps; no checkpoint yet"):
        distill_mod.run_experiment(tiny(method="baseline"), out=str(tmp_path))
    assert not RunDir(tmp_path / "t").is_finished()


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.05, 0.3, 0.7, 1.5])
def test_sigkill_at_various_moments(reference, tmp_path, delay):
    """Kills after epoch 1 plus `delay` seconds: during steps, validation or a checkpoint write.
    A second kill lands on the resumed run too."""
    (tmp_path / "tiny.yaml").write_text(CONFIG)
    run = tmp_path / "out" / "tiny"
    args = ["run", "tiny.yaml", "--out", "out", "--quiet"]
    proc = _start(args, tmp_path)
    _wait_for_epochs(proc, run, 1)
    time.sleep(delay)
    proc.kill()
    proc.communicate()
    again = _start(args + ["--resume"], tmp_path)
    _wait_for_epochs(again, run, 4)
    time.sleep(delay)
    again.kill()
    again.communicate()
    last = _start(args + ["--resume"], tmp_path)
    out, err = last.communicate(timeout=600)
    assert last.returncode == 0, err
    _assert_same_result(_result(run), reference())


def test_resume_accepts_a_config_that_leaves_a_written_out_default_unset(tmp_path):
    """A run saved with `epochs: 400` (an older version wrote the default out) continues under a config
    that leaves the reference's 400 to the default, and the other way round; another value still differs."""
    implicit = apply(Config(), {"name": "t", "data.source": "mnist5k", "data.target": "mnist5k"})
    explicit = apply(implicit, {"distill.epochs": 400, "distill.inner_batch_size": 50})
    for saved, now in ((explicit, implicit), (implicit, explicit)):
        run = RunDir(tmp_path / "t")
        run.write_config(to_dict(saved))
        run.save_checkpoint({"config": to_dict(saved), "epoch": 1})
        assert distill_mod._prepare_run_dir(run, now, resume=True, overwrite=False)["epoch"] == 1
    with pytest.raises(RunError, match=r"differs in: distill\.epochs"):
        distill_mod._prepare_run_dir(run, apply(implicit, {"distill.epochs": 800}), resume=True, overwrite=False)
