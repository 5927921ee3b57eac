"""Progress wherever a user waits: the event vocabulary, the estimate after a resume, the plain
log lines of `run` and `sweep` when stderr is a file, `distill(progress=...)` and `--version`."""
from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pytest
import yaml

import labeldistill as ld
from labeldistill import progress as progress_mod
from labeldistill.cli import main
from labeldistill.config import Config, apply
from labeldistill.errors import ConfigError
from labeldistill.progress import Estimator, Meter, ProgressPrinter

ROOT = Path(__file__).resolve().parents[1]
SRC = str(ROOT / "src")
LINE = re.compile(r"^\[\d\d:\d\d:\d\d\] (?P<phase>[a-z ]+): (?P<done>[\d.]+)/(?P<total>[\d.]+) ")
# Short versions of the tiny configs: few steps, two test models, no analyses.
SHORT = ["distill.epochs=2", "evaluate.num_test_models=2", "evaluate.test_optimizers=[]",
         "evaluate.num_steps_analysis=false", "evaluate.step_grid=[20,40]", "evaluate.kd_num_teachers=2",
         "evaluate.kd_teacher_epochs=1", "solve.num_networks=2", "solve.target_size=3000"]


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the estimator and the meter ----------------------------------------------------------


def test_estimate_after_a_resume_uses_only_the_rate_measured_since():
    clock = FakeClock()
    est = Estimator(300, clock)  # resumed at epoch 300 of 400: those 300 took hours before
    assert est.left(400) is None  # nothing measured yet
    clock.now += 10
    est.update(310)  # 10 epochs in 10 s in this process
    assert est.left(400) == pytest.approx(90.0)  # not 300/310 of the naive "310 epochs in 10 s"
    assert est.elapsed() == pytest.approx(10.0)
    clock.now += 90
    est.update(400)
    assert est.left(400) == 0.0


def test_meter_sends_start_throttled_updates_and_end_in_units():
    clock, events = FakeClock(), []
    meter = Meter(lambda e, i: events.append((e, dict(i))), "test models", total=20 * 100, unit="step", per=20,
                  detail="20 models", clock=clock, min_interval=1.0)
    meter.advance(20 * 25)  # same instant as the start: throttled
    clock.now += 1.5
    meter.advance(20 * 25)
    meter.update(done=10)  # never backwards
    clock.now += 0.2
    meter.advance(20 * 25)  # throttled again
    meter.close()
    meter.close()  # once
    assert all(e == "progress" for e, _ in events)
    assert [(i["done"], i["total"]) for _, i in events] == [(0, 100), (50, 100), (100, 100)]
    assert events[0][1] == {"phase": "test models", "done": 0, "total": 100, "unit": "step", "detail": "20 models"}


def test_meter_without_a_callback_and_its_counter():
    Meter(None, "x", 10, "step").advance(3)  # no callback: nothing to call, no error
    events = []
    meter = Meter(lambda e, i: events.append(dict(i)), "distilling", 4, "epoch", done=1.5, min_interval=0)
    report = meter.counter("validation after epoch 2: step", 50)
    report(25)
    assert events[-1]["done"] == 1.5 and events[-1]["detail"] == "validation after epoch 2: step 25/50"


def test_printer_plain_lines_phase_changes_interval_and_estimate():
    clock, out = FakeClock(), io.StringIO()
    printer = ProgressPrinter(out, every=30, clock=clock, terminal=False)

    def tick(phase, done, total, unit="step", **extra):
        printer("progress", {"phase": phase, "done": done, "total": total, "unit": unit, **extra})

    tick("loading data", 0, 1, "dataset")  # the first 30 s print nothing: a bad input leaves one line
    tick("loading data", 1, 1, "dataset")
    tick("distilling", 300, 400, "epoch")  # a resumed phase starts at 300
    for k in range(1, 7):  # an event every 10 s: a line every 30 s
        clock.now += 10
        tick("distilling", 300 + k, 400, "epoch")
    printer("epoch", {"epoch": 306, "train_error": 12.25, "val_error": 14.0})
    tick("distilling", 400, 400, "epoch")
    tick("test models", 0, 1000, detail="20 models")
    printer("notice", {"message": "target_set_size was lowered"})
    printer.close()
    lines = out.getvalue().splitlines()
    body = [line.split("] ", 1)[-1] for line in lines]
    assert body[0] == "distilling: 303/400 epochs (76%); 30s elapsed, about 16m10s left"  # 97 epochs at 10 s each
    assert body[1] == "distilling: 306/400 epochs (76%); 1m00s elapsed, about 15m40s left"
    assert body[2].startswith("distilling: 400/400 epochs (100%), train error 12.2%, val error 14.0%; finished in")
    assert body[3] == "test models: 0/1000 steps (0%), 20 models"  # a phase change, at once
    assert lines[4] == "labeldistill: note: target_set_size was lowered"
    assert len(lines) == 5


def test_printer_quiet_shows_only_notices():
    out = io.StringIO()
    printer = ProgressPrinter(out, every=0, quiet=True, terminal=False)
    Meter(printer, "test models", 10, "step", min_interval=0).close()
    printer("notice", {"message": "m"})
    printer.close()
    assert out.getvalue() == "labeldistill: note: m\n"


def test_printer_in_a_terminal_draws_a_bar_per_phase():
    out = io.StringIO()
    printer = ProgressPrinter(out, terminal=True)
    meter = Meter(printer, "step search", 40, "step", done=10, min_interval=0)
    meter.advance(10, detail="candidate 1/2")
    Meter(printer, "test models", 5, "step", min_interval=0)
    printer.close()
    text = out.getvalue()
    assert "step search:  50%" in text and "20/40" in text and "candidate 1/2" in text
    assert "test models:   0%" in text


def test_interval_from_flag_environment_and_default(monkeypatch):
    monkeypatch.delenv(progress_mod.ENV_EVERY, raising=False)
    assert progress_mod.interval(None) == progress_mod.DEFAULT_EVERY
    monkeypatch.setenv(progress_mod.ENV_EVERY, "5")
    assert progress_mod.interval(None) == 5.0 and progress_mod.interval("0") == 0.0
    with pytest.raises(ConfigError, match="--progress-every must be a number of seconds"):
        progress_mod.interval("soon")
    monkeypatch.setenv(progress_mod.ENV_EVERY, "-1")
    with pytest.raises(ConfigError, match="LABELDISTILL_PROGRESS_EVERY must be"):
        progress_mod.interval(None)


# -- whole runs through the command line, stderr a file ----------------------------------------


def _phases(stderr: str) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list[tuple[float, float]]] = {}
    for line in stderr.splitlines():
        m = LINE.match(line)
        if m:
            out.setdefault(m["phase"], []).append((float(m["done"]), float(m["total"])))
    return out


def _check_phase(stderr: str, phase: str, runs: dict, estimate: bool = True) -> None:
    """Lines of `phase` whose numbers increase to its total, an estimate on the way, a last line."""
    ticks = runs[phase]
    done = [d for d, _ in ticks]
    assert done == sorted(done) and done[0] < done[-1] == ticks[-1][1], (phase, ticks)
    if estimate:
        assert len(set(done)) >= 3, (phase, ticks)
        assert re.search(rf"{phase}: [\d.]+/[\d.]+ .*elapsed, about \d+[hms]\S* left", stderr), phase
    assert re.search(rf"{phase}: .*finished in", stderr), phase


@pytest.fixture
def every_event(monkeypatch):
    """Every progress event becomes a line (the library's 0.5 s throttle off, --progress-every 0)."""
    monkeypatch.setattr(progress_mod, "MIN_INTERVAL", 0.0)
    monkeypatch.setattr(progress_mod, "REPORT_EVERY_STEPS", 5)
    import labeldistill.evaluate as evaluate_mod

    monkeypatch.setattr(evaluate_mod, "REPORT_EVERY_STEPS", 5)


@pytest.mark.parametrize("method, phases", [
    ("baseline-kd", ["training teachers", "step search", "test models"]),
    ("label-solve", ["solving labels", "step search", "test models"]),
])
def test_direct_method_run_logs_progress_of_every_phase(method, phases, tmp_path, capsys, every_event):
    argv = ["run", str(ROOT / "configs/tiny/mnist5k_baseline.yaml"), "--out", str(tmp_path), "--progress-every", "0",
            "--set", f"method={method}"]
    for item in SHORT:
        argv += ["--set", item]
    assert main(argv) == 0
    captured = capsys.readouterr()
    runs = _phases(captured.err)
    _check_phase(captured.err, "loading data", runs, estimate=False)  # one step: its start and its end
    for phase in phases:
        _check_phase(captured.err, phase, runs)
    assert "test accuracy" in captured.out and "test accuracy" not in captured.err


def test_label_distillation_run_logs_epochs_validation_and_test_models(tmp_path, capsys, every_event):
    argv = ["run", str(ROOT / "configs/tiny/mnist5k_ld-rr.yaml"), "--out", str(tmp_path), "--progress-every", "0",
            "--set", "evaluate.num_test_models=2", "--set", "evaluate.test_optimizers=[sgd]",
            "--set", "evaluate.num_steps_analysis=false", "--set", "distill.epochs=3"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    runs = _phases(err)
    for phase in ("distilling", "test models", "analyses"):
        _check_phase(err, phase, runs)
    assert any(0 < d < 1 for d, _ in runs["distilling"])  # within the first epoch, not only at its end
    assert "validation after epoch" in err and "val error" in err


def test_quiet_run_prints_no_progress(tmp_path, capsys):
    argv = ["run", str(ROOT / "configs/tiny/mnist5k_baseline.yaml"), "--out", str(tmp_path), "--quiet",
            "--progress-every", "0"]
    for item in SHORT:
        argv += ["--set", item]
    assert main(argv) == 0
    assert capsys.readouterr().err == ""


def test_bad_progress_interval_is_one_line(tmp_path, capsys):
    assert main(["run", str(ROOT / "configs/tiny/mnist5k_baseline.yaml"), "--out", str(tmp_path),
                 "--progress-every", "often"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("labeldistill: error: --progress-every must be") and err.count("\n") == 1
    assert not any(tmp_path.iterdir())


def test_resumed_distillation_reports_from_the_checkpoint(tmp_path, monkeypatch):
    """The 'distilling' phase of a resumed run starts at the checkpoint's epoch, so the rate (and
    the estimate) counts only the epochs of this process."""
    from labeldistill import experiment
    from labeldistill.meta.loop import MetaLoop

    cfg = apply(Config(), {"name": "t", "method": "ld-rr", "data.source": "mnist5k", "data.target": "mnist5k",
                           "data.num_base_examples": 10, "data.target_set_size": 1024, "distill.epochs": 3,
                           "distill.batch_size": 512, "evaluate.num_test_models": 1})
    original = MetaLoop.run_epoch

    def stop_in_epoch_3(self, *args, **kwargs):
        if self.epoch == 2:
            raise KeyboardInterrupt  # a kill after the checkpoint of epoch 2
        return original(self, *args, **kwargs)

    monkeypatch.setattr(MetaLoop, "run_epoch", stop_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        experiment.run_experiment(cfg, out=str(tmp_path), handle_signals=False)
    monkeypatch.setattr(MetaLoop, "run_epoch", original)
    events = []
    experiment.run_experiment(cfg, out=str(tmp_path), resume=True, handle_signals=False,
                              progress=lambda e, i: events.append((e, dict(i))))
    distilling = [i for e, i in events if e == "progress" and i["phase"] == "distilling"]
    assert distilling[0]["done"] == 2 and distilling[-1]["done"] == 3 == distilling[-1]["total"]
    order = [(e, i.get("phase")) for e, i in events]
    assert order.index(("resumed", None)) < order.index(("progress", "distilling"))


# -- the Python API and --version ---------------------------------------------------------------


def test_distill_with_progress_true_and_with_a_callable(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(progress_mod.ENV_EVERY, "0")
    kw = dict(method="ld-rr", num_base_examples=10, epochs=2, out=None,
              overrides={"evaluate.num_test_models": 2, "data.target_set_size": 1024, "distill.batch_size": 512})
    r = ld.distill("mnist5k", progress=True, **kw)
    assert r.labels.shape == (10, 10)
    err = capsys.readouterr().err
    assert "distilling: 0/2 epochs" in err
    assert re.search(r"test models: \d+/\d+ steps \(100%\)", err)
    events = []
    again = ld.distill("mnist5k", progress=lambda e, i: events.append((e, i)), **kw)
    assert again.accuracy == r.accuracy  # progress changes nothing in the run
    phases = [i["phase"] for e, i in events if e == "progress"]
    assert phases[0] == "loading data" and "distilling" in phases and phases[-1] == "test models"
    assert "epoch" in [e for e, _ in events]
    assert capsys.readouterr().err == ""  # a callable is called, nothing printed
    with pytest.raises(ConfigError, match="progress must be True, False, None or a callable"):
        ld.distill("mnist5k", progress="yes", **kw)


def test_version_prints_the_installed_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"labeldistill {ld.__version__}"


# -- a sweep: the parent's lines and the runs' log files ------------------------------------------


def test_sweep_logs_progress_in_the_parent_and_in_each_run_log(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv(progress_mod.ENV_EVERY, "30")  # the sweep sets it from --progress-every for its runs
    cfg = {"name": "tiny0", "method": "ld-rr", "data": {"source": "mnist5k", "target": "mnist5k",
                                                       "num_base_examples": 10, "target_set_size": 1024},
           "distill": {"epochs": 1, "batch_size": 512}, "evaluate": {"num_test_models": 1}}
    path = tmp_path / "tiny0.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--workers", "1", "--threads", "1",
                 "--progress-every", "0"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"\] sweep: 0/1 run \(0%\)", err)
    assert re.search(r"\] sweep: 1/1 run \(100%\), 0 failed, last tiny0; finished in", err)
    log = (out / "_sweep_logs" / "tiny0.log").read_text()
    assert "] distilling: 0/1 epoch (0%)" in log and re.search(r"\] test models: \d+/\d+ steps \(100%\)", log)
