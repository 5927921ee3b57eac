"""Sweeps: local processes and a real local Ray instance; skip finished runs, resume after a kill, list failures."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from labeldistill import sweep
from labeldistill.cli import main
from labeldistill.errors import ConfigError

SRC = str(Path(__file__).resolve().parents[1] / "src")


def tiny_configs(folder: Path, count: int = 4) -> list[str]:
    """`count` very small runs on the embedded MNIST sample (no data root needed)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        cfg = {"name": f"tiny{i}", "method": "ld-rr" if i % 2 == 0 else "ld-or2", "seed": i,
               "data": {"source": "mnist5k", "target": "mnist5k", "num_base_examples": 10,
                        "target_set_size": 1024},
               "distill": {"epochs": 2, "batch_size": 512, "validate_every": 1},
               "evaluate": {"num_test_models": 1}}
        p = folder / f"tiny{i}.yaml"
        p.write_text(yaml.safe_dump(cfg))
        paths.append(str(p))
    return paths


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_plan_builds_the_run_command_and_refuses_duplicate_names(tmp_path):
    paths = tiny_configs(tmp_path / "cfg", 2)
    jobs = sweep.plan(paths, tmp_path / "out", ["distill.epochs=1"], data_root="/data", device="cpu")
    assert [j.name for j in jobs] == ["tiny0_epochs=1", "tiny1_epochs=1"]  # named after the override
    cmd = jobs[0].command
    assert cmd[1:5] == ["-m", "labeldistill.cli", "run", paths[0]]
    assert "--resume" in cmd and cmd[cmd.index("--set") + 1] == "distill.epochs=1"
    assert cmd[cmd.index("--data-root") + 1] == "/data" and cmd[cmd.index("--device") + 1] == "cpu"
    assert [j.status() for j in jobs] == ["new", "new"]
    with pytest.raises(ConfigError, match="both give the run name 'tiny0'"):
        sweep.plan([paths[0], paths[0]], tmp_path / "out")
    with pytest.raises(ConfigError, match="unknown config key"):
        sweep.plan(paths, tmp_path / "out", ["distill.epoch=1"])


def test_threads_are_divided_among_workers():
    assert sweep.threads_per_run(2, cores=8) == 4
    assert sweep.threads_per_run(3, cores=8) == 2
    assert sweep.threads_per_run(16, cores=8) == 1
    assert sweep._env(3)["OMP_NUM_THREADS"] == "3"


def test_bad_sweep_arguments_are_one_line_errors(tmp_path, capsys):
    paths = tiny_configs(tmp_path / "cfg", 1)
    assert main(["sweep", *paths, "--out", str(tmp_path / "o"), "--workers", "0"]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err
    assert main(["sweep", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_failed_run_is_listed_with_the_command_to_rerun_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])
    empty = tmp_path / "nodata"
    empty.mkdir()
    cfg = tmp_path / "needs_mnist.yaml"
    cfg.write_text(yaml.safe_dump({"name": "needs_mnist", "data": {"num_base_examples": 10, "download": False}}))
    out = tmp_path / "out"
    rc = main(["sweep", str(cfg), "--out", str(out), "--workers", "1", "--data-root", str(empty), "--quiet"])
    text = capsys.readouterr().out
    assert rc == 1
    assert "0 finished, 0 skipped (already complete), 1 failed" in text
    assert "FAILED needs_mnist (exit 2)" in text
    rerun = next(line for line in text.splitlines() if "re-run:" in line).split("re-run: ", 1)[1]
    assert f"run {cfg} --out {out} --resume --data-root {empty}" in rerun  # progress lines go to its log
    assert (out / "_sweep_logs" / "needs_mnist.log").read_text().count("labeldistill: error:") == 1


def _sweep_cmd(paths, out, *extra):
    return [sys.executable, "-m", "labeldistill.cli", "sweep", *paths, "--out", str(out), *extra]


@pytest.mark.slow
def test_local_sweep_completes_skips_finished_runs_and_resumes_after_a_kill(tmp_path):
    paths = tiny_configs(tmp_path / "cfg", 4)
    out = tmp_path / "runs"
    # Start the sweep in its own process group, kill everything once the first run has finished.
    proc = subprocess.Popen(_sweep_cmd(paths, out, "--workers", "2", "--quiet"), env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.time() + 300
    while not list(out.glob("*/result.json")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished_before = {p.parent.name for p in out.glob("*/result.json")}
    assert finished_before, proc.stdout.read()
    # Start it again: finished runs are skipped, unfinished ones resume, all four complete.
    res = subprocess.run(_sweep_cmd(paths, out, "--workers", "2", "--quiet"), env=_env(),
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"{len(finished_before)} skipped (already complete), 0 failed" in res.stdout
    assert {p.parent.name for p in out.glob("*/result.json")} == {"tiny0", "tiny1", "tiny2", "tiny3"}
    # A third time nothing runs.
    res = subprocess.run(_sweep_cmd(paths, out, "--quiet"), env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "0 finished, 4 skipped" in res.stdout


def test_local_backend_runs_every_job_in_parallel_processes(tmp_path):
    paths = tiny_configs(tmp_path / "cfg", 2)
    jobs = sweep.plan(paths, tmp_path / "runs")
    os.environ["PYTHONPATH"] = _env()["PYTHONPATH"]
    report = sweep.run_sweep(jobs, sweep.LocalBackend(workers=2, threads=1), progress=False)
    assert sorted(o.status for o in report.outcomes) == ["done", "done"]
    assert all(j.status() == "done" for j in jobs)


# A stand-in for `labeldistill run`: records the threads it was given and marks its run finished.
_THREAD_PROBE = """
import json, os, sys
import torch
seen = {"torch": torch.get_num_threads(), **{v: os.environ.get(v) for v in sys.argv[2:]}}
os.makedirs(sys.argv[1], exist_ok=True)
with open(os.path.join(sys.argv[1], "result.json"), "w") as f:
    json.dump(seen, f)
"""


def test_every_child_runs_with_the_thread_count_it_was_given(tmp_path):
    jobs = [sweep.Job(tmp_path / f"c{i}.yaml", f"probe{i}",
                      [sys.executable, "-c", _THREAD_PROBE, str(tmp_path / "runs" / f"probe{i}"), *sweep.THREAD_VARS],
                      sweep.RunDir(tmp_path / "runs" / f"probe{i}"), tmp_path / "logs" / f"probe{i}.log")
            for i in range(2)]
    # A count other than this process's (torch caps its pool at the cores it may use).
    threads = 2 if os.environ.get("OMP_NUM_THREADS") != "2" else 1
    if threads > len(os.sched_getaffinity(0)):
        pytest.skip("needs two cores to tell the given thread count from the inherited one")
    report = sweep.run_sweep(jobs, sweep.LocalBackend(workers=2, threads=threads), progress=False)
    assert [o.status for o in report.outcomes] == ["done", "done"], [o.message for o in report.outcomes]
    for job in jobs:
        seen = json.loads((job.run_dir.path / "result.json").read_text())
        assert seen == {"torch": threads, **{var: str(threads) for var in sweep.THREAD_VARS}}


def _ray_sweep(tmp_path, count):
    pytest.importorskip("ray", reason="the Ray backend needs `pip install labeldistill[ray]`")
    paths = tiny_configs(tmp_path / "cfg", count)
    out = tmp_path / "runs"
    res = subprocess.run(_sweep_cmd(paths, out, "--backend", "ray", "--workers", "2", "--quiet"), env=_env(),
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"{count} finished, 0 skipped (already complete), 0 failed" in res.stdout
    assert len(list(out.glob("*/result.json"))) == count
    assert "ray (local instance), 1 CPU(s) per run" in res.stdout
    return paths, out


# In the default suite (the test extra installs Ray): starting a local Ray instance and two tiny
# runs took 15-23 s on a 2-core machine at load 9. Four configs are in the slow set.
def test_ray_backend_on_a_real_local_instance(tmp_path):
    paths, out = _ray_sweep(tmp_path, 2)
    res = subprocess.run(_sweep_cmd(paths, out, "--backend", "ray", "--quiet"), env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "0 finished, 2 skipped" in res.stdout


@pytest.mark.slow
def test_ray_backend_four_configs(tmp_path):
    _ray_sweep(tmp_path, 4)


def test_ray_backend_is_importable_when_installed():
    ray = pytest.importorskip("ray", reason="the Ray backend needs `pip install labeldistill[ray]`")
    backend = sweep.RayBackend(cpus=2, gpus=0)
    assert backend.ray is ray and backend.cpus == 2 and not ray.is_initialized()


def test_ray_init_does_not_take_over_the_sweeps_sigterm_handler(monkeypatch):
    """ray.init installs a SIGTERM handler that dumps a stack; the sweep's own must survive it."""
    import signal

    class FakeRay:  # what ray.init does to signals, without starting Ray
        def is_initialized(self):
            return False

        def init(self, **kwargs):
            signal.signal(signal.SIGTERM, lambda *a: None)

    def ours(signum, frame):
        raise KeyboardInterrupt

    before = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, ours)
        backend = sweep.RayBackend.__new__(sweep.RayBackend)
        backend.ray, backend.address, backend.num_cpus, backend._started = FakeRay(), None, 1, False
        backend._init()
        assert signal.getsignal(signal.SIGTERM) is ours and backend._started
    finally:
        signal.signal(signal.SIGTERM, before)
