"""Command line: one subcommand per verb; the library itself never prints."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from . import config as config_mod
from . import progress as progress_mod
from .errors import Interrupted, LabelDistillError

QUICKSTART = {
    "data.source": "mnist5k", "data.target": "mnist5k", "data.num_base_examples": 20,
    "distill.epochs": 30, "distill.batch_size": 256, "distill.validate_every": 5,
    "evaluate.num_test_models": 20,
}


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set distill.epochs=10 (repeatable)")
    p.add_argument("--data-root", help="folder with NAME.npz files or torchvision's files "
                   "(default: $LABELDISTILL_DATA_ROOT or ~/.cache/labeldistill/data)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default: the config's (auto: CUDA if available)")


def version() -> str:
    """The installed distribution's version; the package's own when it runs from a source tree."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("labeldistill")
    except PackageNotFoundError:
        from . import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labeldistill", description=__doc__.split(";")[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"labeldistill {version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run an experiment (no CONFIG: the offline quickstart)")
    p.add_argument("config", nargs="?", help="YAML or JSON config (the reference's flat JSON works too), or a run "
                   "directory to continue with --resume")
    _add_run_options(p)
    p.add_argument("--out", default=None, help="parent folder of run directories (default: runs, or the parent "
                   "of CONFIG when CONFIG is a run directory)")
    p.add_argument("--resume", action="store_true", help="continue an unfinished run from its checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run of the same name")
    progress_mod.add_arguments(p)

    p = sub.add_parser("validate", help="check config files without running them")
    p.add_argument("configs", nargs="+")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    p = sub.add_parser("show-config", help="print the resolved config (defaults filled in) as YAML")
    p.add_argument("config", nargs="?")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    p = sub.add_parser("export", help="(re)write the distilled-dataset artifact of a finished run")
    p.add_argument("run_dir")
    p.add_argument("--data-root", help="the data the run used, read only when its artifact is missing or damaged "
                   "(default: $LABELDISTILL_DATA_ROOT or the cache)")

    p = sub.add_parser("evaluate", help="train fresh models on a distilled dataset and test them on the target")
    p.add_argument("artifact", help="a run directory, its distilled.json or its distilled.safetensors")
    p.add_argument("--arch", help="architecture (default: the card's recipe)")
    p.add_argument("--head", choices=["linear", "rr"], help="classifier head (default: the card's recipe)")
    p.add_argument("--optimizer", choices=["sgd", "momentum", "adam"], help="default: the card's recipe")
    p.add_argument("--lr", type=float, help="learning rate (default: the card's, or the optimiser's default)")
    p.add_argument("--batch-size", type=int, help="minibatch of base examples per step (default: the card's)")
    p.add_argument("--rr-gradients", choices=["detached", "reference"],
                   help="gradient paths of the RR head's model update (default: the card's)")
    p.add_argument("--steps", default="auto", help="training steps, or 'auto' for the card's (default: auto)")
    p.add_argument("--models", type=int, help="number of models (default: as many as the run tested)")
    p.add_argument("--seed", type=int, help="fresh model seeds derived from this (default: the run's own seeds)")
    p.add_argument("--data-root", help="folder with the target dataset (as for run)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--json", help="also write the result to this JSON file")
    progress_mod.add_arguments(p)

    sub.add_parser("datasets", help="list the dataset registry")
    sub.add_parser("models", help="list the model registry")
    sub.add_parser("methods", help="list the label methods (the method registry)")
    p = sub.add_parser("bench", help="time the outer step and parallel evaluation; print a table, write JSON")
    p.add_argument("--out", metavar="FILE", help="write the figures as JSON to FILE")
    p.add_argument("--data-root", help="folder with mnist.npz (default: synthetic MNIST-shaped data)")
    p.add_argument("--repeats", type=int, default=3, help="repeats per figure; medians are reported (default: 3)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--quick", action="store_true", help="a tiny smoke version of the suite (seconds)")

    from .cli_scale import register

    COMMANDS.update(register(sub))  # configs, sweep, report, plot
    return parser


def quickstart_config(overrides=()) -> config_mod.Config:
    """The quickstart's settings with `overrides`, named 'quickstart' (plus the overrides that
    change it, or the name given). A method override is applied before the others: each
    run's name ends in its method (`quickstart_configs`), so the method is no override token."""
    values = config_mod.parse_overrides(overrides)
    method = {k: v for k, v in values.items() if config_mod.resolve_key(k) == "method"}
    cfg = config_mod.apply(config_mod.Config(), {**QUICKSTART, "name": "quickstart", **method})
    return config_mod.with_overrides(config_mod.validate(cfg), overrides)


def quickstart_configs(overrides=()) -> list[config_mod.Config]:
    """One distillation method (ld-rr unless --set method=...) and the true-label baseline on the
    same base examples, named NAME_METHOD (NAME: `quickstart_config`'s)."""
    base = quickstart_config(overrides)
    from .methods import get_method

    methods = [base.method] if get_method(base.method).kind == "direct" else [base.method, "baseline"]
    return [config_mod.apply(base, {"method": m, "name": f"{base.name}_{m}"}) for m in methods]


def _load(path: str | None, overrides) -> config_mod.Config:
    if path is None:
        return config_mod.with_overrides(config_mod.Config(), overrides)
    if Path(path).is_dir():
        saved = Path(path) / "config.json"
        if not saved.is_file():
            raise config_mod.ConfigError(f"{path} is a folder without config.json; give a config file or a run "
                                         "directory")
        from .results import RunDir

        RunDir(path).read_config()  # a config.json of the wrong shape is one line naming it
        return config_mod.load(saved, overrides)
    return config_mod.load(path, overrides)


def _run_dir_config(args) -> config_mod.Config:
    """CONFIG is a run directory: its resolved config, and --out defaults to its parent."""
    from .errors import RunError

    folder = Path(args.config)
    cfg = _load(args.config, args.overrides)
    if cfg.run_name != folder.resolve().name:
        raise RunError(f"{folder} holds the run '{cfg.run_name}', not '{folder.resolve().name}'; rename the folder "
                       f"back or run its config.json with --out")
    if args.out is None:
        args.out = str(folder.resolve().parent)
    return cfg


def _run_one(cfg, args, progress) -> dict:
    from .experiment import run_experiment

    return run_experiment(cfg, out=args.out, device=args.device, root=args.data_root,
                          progress=progress, resume=args.resume, overwrite=args.overwrite)


def _summary_line(r: dict, out: str | None) -> str:
    where = f" -> {Path(out) / r['name']}" if out else ""
    return (f"{r['method']:<12} {r['source']}->{r['target']} {r['num_base_examples']} base examples: "
            f"test accuracy {r['test_accuracy_mean']:.2f} +- {r['test_accuracy_std']:.2f} % "
            f"({len(r['test_accuracy'])} models, {r['num_steps']} steps){where}")


def cmd_run(args) -> int:
    progress = progress_mod.printer(args.progress_every, args.quiet)  # a bad --progress-every fails before anything runs
    try:
        return _run_all(args, progress)
    finally:
        progress.close()


def _run_all(args, progress) -> int:
    if args.config is None:
        cfgs = quickstart_configs(args.overrides)
        base = cfgs[0]
        print(f"labeldistill quickstart: {base.data.num_base_examples} base examples from {base.data.source} "
              f"(real MNIST digits embedded for offline use unless overridden), "
              f"{' vs '.join(c.method for c in cfgs)}", flush=True)
    elif Path(args.config).is_dir():
        cfgs = [_run_dir_config(args)]
    else:
        cfgs = [_load(args.config, args.overrides)]
    if args.out is None:
        args.out = "runs"
    results = []
    for cfg in cfgs:
        r = _run_one(cfg, args, progress)
        results.append(r)
        print(_summary_line(r, args.out), flush=True)
    if len(results) > 1:
        print()
        print("| method | test accuracy % (mean +- std) | models | steps |")
        print("|---|---|---|---|")
        for r in results:
            print(f"| {r['method']} | {r['test_accuracy_mean']:.2f} +- {r['test_accuracy_std']:.2f} | "
                  f"{len(r['test_accuracy'])} | {r['num_steps']} |")
    return 0


def cmd_validate(args) -> int:
    from .methods import check_config

    failed = 0
    for path in args.configs:
        try:
            cfg = config_mod.load(path, args.overrides)
            check_config(cfg)
            print(f"ok    {path} ({cfg.method}, {cfg.data.source}->{cfg.data.target}, "
                  f"{cfg.data.num_base_examples} base examples)")
        except LabelDistillError as exc:
            failed += 1
            print(f"error {path}: {exc}")
    return 1 if failed else 0


def cmd_show_config(args) -> int:
    import yaml

    cfg = _load(args.config, args.overrides)
    print(yaml.safe_dump(config_mod.to_dict(cfg), sort_keys=False), end="")
    return 0


def cmd_evaluate(args) -> int:
    from .artifact import evaluate_artifact, load_distilled
    from .experiment import resolve_device
    from .errors import ConfigError
    from .results import atomic_write_json

    if args.steps == "auto":
        steps = None
    else:
        try:
            steps = int(args.steps)
        except ValueError:
            raise ConfigError(f"--steps must be a whole number or 'auto', got '{args.steps}'") from None
    device = resolve_device(args.device)
    ds = load_distilled(args.artifact)
    progress = progress_mod.printer(args.progress_every, args.quiet)
    try:
        r = evaluate_artifact(ds, arch=args.arch, optimizer=args.optimizer, lr=args.lr, head=args.head,
                              batch_size=args.batch_size, num_steps=steps, num_models=args.models, seed=args.seed,
                              rr_gradients=args.rr_gradients, root=args.data_root, device=device, progress=progress)
    finally:
        progress.close()
    rc = r["recipe"]
    card = f" (card: {r['card_accuracy']:.2f})" if r.get("card_accuracy") is not None else ""
    print(f"{r['method']} {r['source']}->{r['target']} {r['num_examples']} examples | {rc['arch']}/{rc['head']} "
          f"{rc['optimizer']} lr {rc['learning_rate']:g} batch {rc['batch_size']} {rc['num_steps']} steps: "
          f"test accuracy {r['test_accuracy_mean']:.2f} +- {r['test_accuracy_std']:.2f} % "
          f"({r['num_models']} models){card}")
    if args.json:
        atomic_write_json(Path(args.json), r)
    return 0


def cmd_export(args) -> int:
    from .artifact import export_run

    print(f"wrote {export_run(args.run_dir, root=args.data_root)}")
    return 0


def cmd_datasets(args) -> int:
    from .sources import DATASETS

    for name, info in sorted(DATASETS.items()):
        print(f"{name:<14} {info.num_classes:>3} classes  {info.channels}x{info.image_size}x{info.image_size}  "
              f"{info.description}")
    print("or a path: a .npz file (x_train, y_train, x_test, y_test) or a folder DIR/CLASS/*.png "
          "(or DIR/train/CLASS/..., DIR/test/CLASS/...); see docs/usage.md, section Data")
    return 0


def cmd_models(args) -> int:
    from .models import MODELS

    for name, cls in sorted(MODELS.items()):
        dim = getattr(cls, "feature_dim", None)
        doc = ((cls.__doc__ or "").strip().splitlines() or ["(registered in this process)"])[0]
        print(f"{name:<14} features {dim if isinstance(dim, int) else '?':>4}  {doc}")
    print('or "package.module:factory": a model of your own (docs/usage.md, section Models)')
    return 0


def cmd_methods(args) -> int:
    from .methods import list_methods

    for m in list_methods():
        print(f"{m.name:<12} {m.kind:<7} {m.head + ' head':<12} {m.summary}")
    print('or "package.module:make_labels": a method of your own (docs/usage.md, section Methods of your own)')
    return 0


def cmd_bench(args) -> int:
    import json

    from .bench import format_table, run_bench
    from .errors import ConfigError

    if args.repeats < 1 or (args.threads is not None and args.threads < 1):
        raise ConfigError("--repeats and --threads must be at least 1")
    res = run_bench(args.data_root, repeats=args.repeats, quick=args.quick, threads=args.threads,
                    progress=lambda msg: print(f"  {msg} ...", file=sys.stderr, flush=True))
    print(format_table(res))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


COMMANDS = {"run": cmd_run, "bench": cmd_bench, "evaluate": cmd_evaluate, "export": cmd_export, "validate": cmd_validate,
            "show-config": cmd_show_config, "datasets": cmd_datasets, "models": cmd_models,
            "methods": cmd_methods}


def resume_command(argv: list[str] | None = None) -> str:
    """The command line that continues an interrupted `run` (never with --overwrite)."""
    args = list(sys.argv[1:] if argv is None else argv)
    args = [a for a in args if a != "--overwrite"]
    if "--resume" not in args:
        args.append("--resume")
    return " ".join(shlex.quote(a) for a in ["labeldistill", *args])


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except Interrupted as exc:
        resume = f"; resume with: {resume_command(argv)}" if args.command == "run" else ""
        print(f"labeldistill: {exc}{resume}", file=sys.stderr)
        return exc.exit_code
    except LabelDistillError as exc:
        print(f"labeldistill: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `labeldistill configs | head`: the reader has gone, nothing to say
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except OSError as exc:  # a full disk or a vanished folder is one line too
        print(f"labeldistill: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        resume = f"; resume with: {resume_command(argv)}" if args.command == "run" else ""
        print(f"labeldistill: interrupted{resume}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
