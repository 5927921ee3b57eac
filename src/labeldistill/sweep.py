"""Many runs at once: local processes, or Ray tasks on a cluster.

A sweep is a list of config files. Every run is the ordinary command
`python -m labeldistill.cli run CONFIG --out OUT --resume ...` in its own
process, so a sweep behaves exactly like the runs it starts, a crash stays
inside one run, and the printed re-run command is the real one. Its output
goes to OUT/_sweep_logs/NAME.log, progress lines included (a log file is not
a terminal: see `labeldistill.progress`).

- Completed runs (their run directory holds result.json) are skipped, so a
  sweep that was stopped is continued by starting it again; unfinished runs
  (config.json and a checkpoint, no result.json) continue from their checkpoint
  because every run gets `--resume` (harmless for a fresh run). A run folder
  that another process holds (its lock, see `RunDir.locked`) is reported as
  failed with the holder's PID, never run beside it.
- Local backend: `workers` processes at a time, each with cores // workers
  threads (OMP_NUM_THREADS and friends), so the machine is busy but not
  oversubscribed.
- Ray backend: each run is a Ray task with a resource request (CPUs, and a
  GPU when the cluster has one), submitted to an existing cluster
  (`ray.init(address=...)`) or to a local Ray instance. The output folder
  must be on storage that every node sees.
"""
from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from . import config as config_mod
from .errors import ConfigError, LabelDistillError, RunError
from .progress import SWEEP, Meter, Progress
from .methods import check_config
from .results import RunDir

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
LOG_DIR = "_sweep_logs"


@dataclass
class Job:
    """One run of a sweep."""

    config_path: Path
    name: str
    command: list[str]
    run_dir: RunDir
    log_path: Path
    config: config_mod.Config | None = None  # the resolved config the run is asked for

    @property
    def command_line(self) -> str:
        return " ".join(shlex.quote(a) for a in self.command)

    def status(self) -> str:
        """'done' (result.json of this config), 'partial' (started, not finished), 'new', or
        'conflict' (the run folder holds another config's run: `conflict()` says how)."""
        if not (self.run_dir.path / "config.json").is_file():
            return "done" if self.run_dir.is_finished() else "new"
        if self.conflict():
            return "conflict"
        return "done" if self.run_dir.is_finished() else "partial"

    def conflict(self) -> str:
        """Why the run folder cannot hold this job's run (another config, an unreadable
        config.json), or '' when it can."""
        from .experiment import _same_config

        if self.config is None:
            return ""
        try:
            _same_config(self.run_dir.read_config(), self.config, self.run_dir, "run")
        except LabelDistillError as exc:
            return str(exc)
        return ""


@dataclass
class Outcome:
    job: Job
    status: str  # 'done', 'skipped', 'failed' or 'conflict' (not started: its folder holds another run)
    seconds: float = 0.0
    returncode: int = 0
    message: str = ""


@dataclass
class SweepReport:
    outcomes: list[Outcome] = field(default_factory=list)

    def by(self, status: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == status]

    @property
    def failed(self) -> list[Outcome]:
        """Runs that did not finish: those that failed and those not started for a conflict."""
        return self.by("failed") + self.by("conflict")


def parse_seeds(text: str) -> list[int]:
    """`--seeds 0,1,2` (or a range `0-4`, or both: `0-2,7`): distinct seeds in the given order."""
    seeds: list[int] = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m or (m[2] is not None and int(m[2]) < int(m[1])):
            raise ConfigError(f"--seeds takes whole numbers or ranges separated by commas, e.g. --seeds 0,1,2 "
                              f"or 0-4; got '{text}'")
        last = int(m[2]) if m[2] is not None else int(m[1])
        seeds += [v for v in range(int(m[1]), last + 1) if v not in seeds]
    return seeds


def plan(configs: Sequence[str | Path], out: str | Path, overrides: Sequence[str] = (),
         data_root: str | None = None, device: str | None = None, python: str | None = None,
         seeds: Sequence[int] | None = None) -> list[Job]:
    """Load and validate every config first (a typo fails the sweep before any run starts).

    With `seeds`, every config runs once per seed (`--set seed=S` after the other
    overrides); the run names follow the seed like any other override's.
    """
    if not configs:
        raise ConfigError("no config files given; e.g. labeldistill sweep configs/paper/within_mnist/*.yaml")
    if seeds is not None and any(config_mod.resolve_key(k) == "seed"
                                 for k in config_mod.parse_overrides(overrides)):
        raise ConfigError("--seeds and --set seed=... contradict each other; give the seeds with --seeds only")
    per_seed = [[f"seed={s}"] for s in seeds] if seeds is not None else [[]]
    out = Path(out)
    jobs: list[Job] = []
    seen: dict[str, Path] = {}
    for path in configs:
        path = Path(path)
        for seed_override in per_seed:
            items = [*overrides, *seed_override]
            jobs.append(_job(path, items, out, seen, data_root, device, python))
    return jobs


def _job(path: Path, overrides: Sequence[str], out: Path, seen: dict[str, Path], data_root: str | None,
         device: str | None, python: str | None) -> Job:
    cfg = config_mod.load(path, overrides)
    check_config(cfg)  # the method and its options, before any run starts
    name = cfg.run_name
    if name in seen:
        raise ConfigError(f"{path} and {seen[name]} both give the run name '{name}'; give one of them "
                          "another `name` so that their run directories differ")
    seen[name] = path
    cmd = [python or sys.executable, "-m", "labeldistill.cli", "run", str(path), "--out", str(out),
           "--resume"]
    for item in overrides:
        cmd += ["--set", item]
    if data_root:
        cmd += ["--data-root", str(data_root)]
    if device:
        cmd += ["--device", device]
    return Job(path, name, cmd, RunDir.under(out, name), out / LOG_DIR / f"{name}.log", cfg)


def threads_per_run(workers: int, cores: int | None = None) -> int:
    cores = cores or os.cpu_count() or 1
    return max(1, cores // max(1, workers))


def _env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for var in THREAD_VARS:
        env[var] = str(threads)
    return env


def _tail(path: Path, lines: int = 1) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


Callback = Callable[[Outcome], None]


class LocalBackend:
    """Runs jobs as child processes, `workers` at a time."""

    def __init__(self, workers: int = 1, threads: int | None = None):
        if workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {workers}")
        self.workers = workers
        self.threads = threads or threads_per_run(workers)
        self._procs: set[subprocess.Popen] = set()
        self._lock = threading.Lock()
        self._stopping = False

    def _run(self, job: Job) -> Outcome:
        job.log_path.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        with open(job.log_path, "w") as log:
            log.write(f"$ {job.command_line}\n")
            log.flush()
            with self._lock:
                if self._stopping:
                    return Outcome(job, "failed", 0.0, -1, "not started: the sweep was interrupted")
                proc = subprocess.Popen(job.command, stdout=log, stderr=subprocess.STDOUT, env=_env(self.threads))
                self._procs.add(proc)
            try:
                rc = proc.wait()
            finally:
                with self._lock:
                    self._procs.discard(proc)
        seconds = time.perf_counter() - t0
        if rc == 0 and job.run_dir.is_finished():
            return Outcome(job, "done", seconds)
        return Outcome(job, "failed", seconds, rc, _tail(job.log_path))

    def run(self, jobs: Sequence[Job], callback: Callback) -> None:
        with ThreadPoolExecutor(self.workers) as pool:
            futures = [pool.submit(self._run, job) for job in jobs]
            try:
                for fut in as_completed(futures):
                    callback(fut.result())
            except BaseException:
                self.stop()
                for fut in futures:
                    fut.cancel()
                raise

    def stop(self) -> None:
        """Stop the running children (each keeps its last per-epoch checkpoint)."""
        with self._lock:
            self._stopping = True
            procs = list(self._procs)
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def _ray_task(command: list[str], log_path: str, threads: int) -> tuple[int, float]:
    """Body of a Ray task: run one job as a child process on whichever node Ray chose."""
    t0 = time.perf_counter()
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, *command[1:]]  # the node's own Python
    with open(log_path, "w") as log:
        log.write(f"$ {' '.join(shlex.quote(a) for a in cmd)}\n")
        log.flush()
        rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env(threads))
    return rc, time.perf_counter() - t0


class RayBackend:
    """Submits each job as a Ray task requesting `cpus` CPUs (and `gpus` GPUs)."""

    def __init__(self, address: str | None = None, cpus: int = 1, gpus: float | None = None,
                 num_cpus: int | None = None):
        try:
            import ray
        except ImportError:
            raise ConfigError("the Ray backend needs the ray package: pip install 'labeldistill[ray]' "
                              "(or use --backend local)") from None
        self.ray = ray
        self.address = address
        self.cpus = max(1, cpus)
        self.gpus = gpus
        self.num_cpus = num_cpus
        self._started = False

    def _init(self) -> None:
        ray = self.ray
        if ray.is_initialized():
            return
        kwargs = {"include_dashboard": False, "log_to_driver": False}
        # ray.init replaces the SIGTERM handler with one that dumps a stack and
        # exits; keep the sweep's own, so `kill SWEEP` stops cleanly in one line.
        main = threading.current_thread() is threading.main_thread()
        previous = signal.getsignal(signal.SIGTERM) if main else None
        try:
            if self.address:
                ray.init(address=self.address, **kwargs)
            else:
                ray.init(num_cpus=self.num_cpus or os.cpu_count(), **kwargs)
        except Exception as exc:  # noqa: BLE001 - connection problems become one line
            where = f"the Ray cluster at {self.address}" if self.address else "a local Ray instance"
            raise RunError(f"cannot start or reach {where}: {str(exc).splitlines()[0] if str(exc) else exc}; "
                           "check --address (e.g. ray://HEAD:10001 or HEAD:6379) or use --backend local") from None
        finally:
            if main and previous is not None:
                signal.signal(signal.SIGTERM, previous)
        self._started = True

    def run(self, jobs: Sequence[Job], callback: Callback) -> None:
        ray = self.ray
        self._init()
        gpus = self.gpus
        if gpus is None:
            gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
        task = ray.remote(_ray_task).options(num_cpus=self.cpus, num_gpus=gpus, max_retries=0)
        pending = {task.remote(job.command, str(job.log_path), self.cpus): job for job in jobs}
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    job = pending.pop(ref)
                    try:
                        rc, seconds = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 - a lost task is a failed run
                        callback(Outcome(job, "failed", 0.0, -1, f"Ray task failed: {type(exc).__name__}"))
                        continue
                    if rc == 0 and job.run_dir.is_finished():
                        callback(Outcome(job, "done", seconds))
                    else:
                        callback(Outcome(job, "failed", seconds, rc, _tail(job.log_path)))
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise

    def stop(self) -> None:
        if self._started and self.ray.is_initialized():
            self.ray.shutdown()


def run_sweep(jobs: Sequence[Job], backend, progress: Progress | None = None,
              callback: Callback | None = None) -> SweepReport:
    """Skip completed runs, run the rest on `backend`, return every outcome; `progress`
    receives the phase 'sweep' in runs (completed ones count as done from the start)."""
    report = SweepReport()
    todo = []
    for job in jobs:
        busy = job.run_dir.holder()
        state = None if busy else job.status()
        if busy:  # e.g. an orphaned run of a killed sweep: never run beside it (its own `run` would refuse too)
            job.log_path.parent.mkdir(parents=True, exist_ok=True)
            job.log_path.write_text(f"not started: {busy}\n")  # the log the summary points to
            report.outcomes.append(Outcome(job, "failed", 0.0, 2, busy))
        elif state == "done":
            report.outcomes.append(Outcome(job, "skipped"))
        elif state == "conflict":  # never run over, nor counted as done: the user decides
            report.outcomes.append(Outcome(job, "conflict", returncode=2, message=job.conflict()))
        else:
            todo.append(job)
    # Every finished run is reported (min_interval 0): runs end minutes apart.
    meter = Meter(progress or None, SWEEP, len(jobs), "run", done=len(jobs) - len(todo), min_interval=0)
    failed = 0

    def done(outcome: Outcome) -> None:
        nonlocal failed
        report.outcomes.append(outcome)
        failed += outcome.status == "failed"
        meter.advance(1, detail=f"{failed} failed, last {outcome.job.name}")
        if callback:
            callback(outcome)

    try:
        if todo:
            backend.run(todo, done)
    finally:
        backend.stop()
    return report
