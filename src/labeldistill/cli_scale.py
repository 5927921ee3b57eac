"""Subcommands for experiments at scale: `configs`, `sweep`, `report`, `plot`.

Kept apart from cli.py so that the core command line stays small; cli.py
calls `register(sub)` and merges the returned commands.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from .errors import ConfigError
from . import progress as progress_mod
from .progress import ENV_EVERY


def register(sub) -> dict:
    p = sub.add_parser("configs", help="list the configs shipped with labeldistill (run them by name), copy one "
                       "to edit it, or generate the paper's grid",
                       description="labeldistill configs: list the shipped configs | labeldistill configs cp NAME "
                       "[DEST]: copy one to an editable file | labeldistill configs paper --out DIR: write every "
                       "experiment of the paper (SPEC 8)")
    p.add_argument("action", nargs="?", choices=["list", "cp", "paper"], default="list",
                   help="list (default), cp NAME [DEST], or paper")
    p.add_argument("names", nargs="*", metavar="NAME [DEST]", help="for cp: the config's name and where to copy it "
                   "(a file or a folder; default ./NAME.yaml)")
    p.add_argument("--out", default="configs/paper", help="paper: folder to write (default: configs/paper)")
    p.add_argument("--force", action="store_true", help="cp: replace an existing file")

    p = sub.add_parser("sweep", help="run many configs in parallel processes or on a Ray cluster; "
                       "completed runs are skipped, unfinished ones resumed")
    p.add_argument("configs", nargs="+", help="config files (e.g. configs/paper/within_mnist/*.yaml)")
    p.add_argument("--out", default="runs", help="parent folder of run directories (default: runs)")
    p.add_argument("--backend", choices=["local", "ray"], default="local")
    p.add_argument("--workers", type=int, default=None,
                   help="local: runs at a time (default: one per 2 cores); ray: CPUs of a local Ray instance")
    p.add_argument("--threads", type=int, default=None,
                   help="threads (CPUs) per run (default: cores // workers locally, 1 on Ray)")
    p.add_argument("--address", default=None,
                   help="ray: address of an existing cluster (e.g. ray://HEAD:10001 or auto); default: a local instance")
    p.add_argument("--gpus", type=float, default=None, help="ray: GPUs per run (default: 1 when the cluster has GPUs)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value in every config (repeatable)")
    p.add_argument("--seeds", help="run every config once per seed, e.g. 0,1,2 or 0-4 (run names follow the "
                   "seed; `report` aggregates the seeds)")
    p.add_argument("--data-root", help="folder with the datasets, passed to every run")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--dry-run", action="store_true", help="list what would run, run nothing")

    progress_mod.add_arguments(p)  # the sweep's own; each run's progress goes to its log

    p = sub.add_parser("report", help="markdown and CSV tables (mean +- std) from run directories")
    p.add_argument("runs", nargs="+", help="run directories or folders containing them")
    p.add_argument("--out", default=None, help="folder for report.md and *.csv (default: print markdown only)")

    p = sub.add_parser("plot", help="PNG figures from run directories (curves, labels, analyses)")
    p.add_argument("runs", nargs="+", help="run directories or folders containing them")
    p.add_argument("--out", default="figures", help="folder for the PNGs (default: figures)")
    p.add_argument("--data-root", help="where the datasets are, to draw the base images of runs without an "
                   "artifact (older runs; others draw the images they stored)")
    p.add_argument("--max-images", type=int, default=20, help="base images drawn per run (default: 20)")
    return {"configs": cmd_configs, "sweep": cmd_sweep, "report": cmd_report, "plot": cmd_plot}


def cmd_configs(args) -> int:
    from .builtin_configs import copy_config, named_configs
    from .grid import write_grid

    if args.action == "list":
        if args.names:
            raise ConfigError("`labeldistill configs` takes no names; `labeldistill configs cp NAME` copies one")
        configs = named_configs()
        width = max(len(n) for n in configs)
        for group in dict.fromkeys(c.group for c in configs.values()):
            print(f"{group}:")
            for c in configs.values():
                if c.group == group:
                    print(f"  {c.name:<{width}}  {c.description}")
        print("run one with `labeldistill run NAME`; `labeldistill configs cp NAME` copies it to edit; "
              "`labeldistill show-config NAME` prints it resolved")
        return 0
    if args.action == "cp":
        if not 1 <= len(args.names) <= 2:
            raise ConfigError("usage: labeldistill configs cp NAME [DEST]; `labeldistill configs` lists the names")
        target = copy_config(args.names[0], args.names[1] if len(args.names) == 2 else None, force=args.force)
        print(f"wrote {target}; run it with `labeldistill run {target}`")
        return 0
    if args.names:
        raise ConfigError("`labeldistill configs paper` takes no names; use --out DIR")
    files = write_grid(args.out)
    tables = sorted({f.parent.relative_to(Path(args.out)).as_posix() for f in files})
    print(f"wrote {len(files)} configs to {args.out} ({len(tables)} folders: {', '.join(tables)})")
    return 0


def cmd_sweep(args) -> int:

    from .sweep import LocalBackend, RayBackend, parse_seeds, plan, run_sweep, threads_per_run

    for opt in ("workers", "threads"):
        if getattr(args, opt) is not None and getattr(args, opt) < 1:
            raise ConfigError(f"--{opt} must be at least 1, got {getattr(args, opt)}")
    seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    jobs = plan(args.configs, args.out, args.overrides, data_root=args.data_root, device=args.device, seeds=seeds)
    cores = os.cpu_count() or 1
    if args.backend == "local":
        workers = args.workers or max(1, cores // 2)
        threads = args.threads or threads_per_run(workers, cores)
        backend = LocalBackend(workers, threads)
        how = f"local, {workers} at a time, {threads} thread(s) each"
    else:
        threads = args.threads or 1
        backend = RayBackend(args.address, cpus=threads, gpus=args.gpus, num_cpus=args.workers)
        how = f"ray ({args.address or 'local instance'}), {threads} CPU(s) per run"
    states = [j.status() for j in jobs]
    conflicts = f", {states.count('conflict')} in conflict" if "conflict" in states else ""
    print(f"sweep: {len(jobs)} runs ({states.count('done')} completed and skipped, "
          f"{states.count('partial')} to resume, {states.count('new')} new{conflicts}) -> {args.out} [{how}]",
          flush=True)
    if args.dry_run:
        for job, state in zip(jobs, states):
            print(f"{state:<8} {job.name}: {job.conflict() if state == 'conflict' else job.command_line}")
        return 1 if "conflict" in states else 0
    import signal

    def _terminate(signum, frame):  # `kill SWEEP_PID`: stop the children too, like Ctrl-C
        raise KeyboardInterrupt

    if threading_main():
        signal.signal(signal.SIGTERM, _terminate)
    progress = progress_mod.printer(args.progress_every, args.quiet)
    if args.progress_every is not None:  # the runs' log files get lines as often as the sweep's
        os.environ[ENV_EVERY] = args.progress_every
    try:
        report = run_sweep(jobs, backend, progress=progress)
    except KeyboardInterrupt:
        print("sweep: interrupted; finished runs are kept, unfinished ones keep their checkpoint. "
              "Start the same command again to continue.", file=sys.stderr)
        return 130
    finally:
        progress.close()
    done, skipped, failed = report.by("done"), report.by("skipped"), report.failed
    print(f"sweep: {len(done)} finished, {len(skipped)} skipped (already complete), {len(failed)} failed")
    for o in failed:
        if o.status == "conflict":
            print(f"CONFLICT {o.job.name}: {o.message}")
            continue
        print(f"FAILED {o.job.name} (exit {o.returncode}): {o.message}\n  log: {o.job.log_path}\n"
              f"  re-run: {o.job.command_line}")
    return 1 if failed else 0


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _scan(paths):
    """Finished runs under `paths`; malformed ones are skipped with a warning and unfinished ones
    counted, on stderr, once there is something to report (else one error line)."""
    from .report import scan_runs

    scan = scan_runs(paths)
    runs = scan.require()
    for why in scan.skipped:
        print(f"labeldistill: warning: skipped {why}", file=sys.stderr)
    return runs, scan.unfinished


def cmd_report(args) -> int:
    from .report import build_report, write_report

    runs, unfinished = _scan(args.runs)
    report = build_report(runs, unfinished)
    if unfinished:
        print(f"labeldistill: note: {len(unfinished)} unfinished run(s) (no result.json yet) are listed under "
              "'Unfinished runs'", file=sys.stderr)
    if args.out:
        paths = write_report(report, args.out)
        print(f"report of {len(runs)} runs: " + ", ".join(str(p) for p in paths))
    else:
        print(report.markdown(), end="")
    return 0


def cmd_plot(args) -> int:
    from .plots import plot_runs

    if args.max_images < 1:
        raise ConfigError(f"--max-images must be at least 1, got {args.max_images}")
    runs, unfinished = _scan(args.runs)
    paths, notes = plot_runs(runs, args.out, data_root=args.data_root, max_images=args.max_images)
    print(f"wrote {len(paths)} figures to {args.out}")
    for p in paths:
        print(f"  {p}")
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    for path in unfinished:
        print(f"note: unfinished run, not drawn (no result.json yet): {path}", file=sys.stderr)
    return 0
