"""The outer run of an experiment: prepare the data, run the method, test what it made, write the result.

Every method (`labeldistill.methods`: true labels, teacher labels, label
solving, the paper's label distillation, image distillation, a user's own) is
run the same way: `method.run(ctx)` gets the task data without the test split
and returns a `MethodOutput` (images, labels, the learner and number of steps
chosen on validation); `run_experiment(cfg)` then trains the test models on
it, runs the configured analyses, and writes the result and the distilled
dataset to the run directory. Nothing here knows one method from another.
"""
from __future__ import annotations

import functools
import time
from dataclasses import replace

import torch

from . import config as config_mod
from .artifact import CARD_FILE, save_run_artifact
from .budget import budget_name, compress, storage
from .config import Config
from .data import TaskData, data_fingerprint, prepare, with_config_views
from .errors import LabelDistillError, RunError
from .evaluate import CHANCE_MARGIN, Recipe, accuracy_summary, check_not_diverged, lr_advice, train_and_evaluate
from .kd import accuracy
from .methods import Method, MethodContext, MethodOutput, check_config, evaluation_head
from .models import default_arch
from .progress import ANALYSES, LOADING, TESTING, Meter, Progress, as_callback, meter_callback
from .results import RunDir
from .seeding import derive_seeds
from .signals import stop_guard


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RunError("device 'cuda' was requested but CUDA is not available; use --device cpu")
    return torch.device(name)


def eval_recipe(cfg: Config, arch: str, optimizer: str | None = None) -> Recipe:
    """How the evaluation models (step search, validation, test) of `cfg` learn; the head is
    evaluate.head or the method's own."""
    return Recipe.from_config(cfg, arch, evaluation_head(cfg), optimizer)


class Experiment:
    """One run's test side: the data, the evaluation learner, the run's events."""

    def __init__(self, cfg: Config, data: TaskData, device: torch.device,
                 run_dir: RunDir | None = None, progress: Progress | None = None):
        self.cfg, self.data, self.device = cfg, data, device
        self.run_dir = run_dir
        self.progress = progress or (lambda event, info: None)
        self.arch = cfg.arch or default_arch(data.channels)
        self.recipe = eval_recipe(cfg, self.arch)

    def _emit(self, event: str, **info) -> None:
        if self.run_dir is not None:
            self.run_dir.log({"event": event, **info})
        self.progress(event, info)

    def _seeds(self, *names, count: int) -> list[int]:
        return derive_seeds(self.cfg.seed, *names, count=count)

    def context(self, checkpoint: dict | None = None, stop=None) -> MethodContext:
        """What the method gets: everything but the test split."""
        return MethodContext(cfg=self.cfg, data=self.data, arch=self.arch, recipe=self.recipe, device=self.device,
                             emit=self._emit, progress=self.progress, run_dir=self.run_dir, stop=stop,
                             checkpoint=checkpoint,
                             checkpoint_extra=lambda: {"data_fingerprint": self.fingerprint})

    @functools.cached_property
    def fingerprint(self) -> dict:
        """The data's fingerprint (`data.data_fingerprint`): checked on resume, stored in every
        checkpoint; computed once per run."""
        return data_fingerprint(self.data)

    def test(self, images: torch.Tensor, labels: torch.Tensor, num_steps: int) -> dict:
        """20 fresh models (and the configured analyses) on the test set."""
        cfg, data = self.cfg, self.data
        seeds = self._seeds("test", count=cfg.evaluate.num_test_models)
        m = len(seeds)
        out: dict = {}
        eval_steps = [num_steps]
        if cfg.evaluate.num_steps_analysis:
            eval_steps += [num_steps + o for o in cfg.evaluate.step_offsets if num_steps + o > 0]
        longest = max(eval_steps)  # the models train this long; the shorter counts are measured on the way
        with Meter(self.progress, TESTING, m * longest, "step", per=m,
                   detail=f"{m} model{'s' if m != 1 else ''}") as meter:
            res = train_and_evaluate(self.recipe, images, labels, seeds, num_steps, data.test_x, data.test_y,
                                     eval_steps=eval_steps, progress=meter_callback(meter))
        check_not_diverged(res, data.num_classes, "test models", lr_advice(self.recipe))
        errors, losses = res.at(num_steps)
        out.update(accuracy_summary(errors))
        if out["test_accuracy_mean"] <= 100.0 * CHANCE_MARGIN / data.num_classes:
            # Not divergence (the loss stayed near log C): a learner whose units died at a high
            # lr predicts one class, as do labels that carry no information. Kept, but said.
            self._emit("notice", message=f"the test models are at chance ({out['test_accuracy_mean']:.2f} %): the "
                                         "labels carry no information or the learner collapsed; for the latter, "
                                         f"{lr_advice(self.recipe)}")
        out["test_loss"] = losses
        if cfg.evaluate.num_steps_analysis:
            out["num_steps_analysis"] = {
                str(s - num_steps): {"num_steps": s, **accuracy_summary(res.at(s)[0])}
                for s in res.steps}
        archs, optimizers = cfg.evaluate.test_architectures, cfg.evaluate.test_optimizers
        what = [f"architecture {a}" for a in archs] + [f"optimizer {o}" for o in optimizers]
        what = [f"{w} ({k}/{len(what)})" for k, w in enumerate(what, 1)]
        meter = Meter(self.progress, ANALYSES, m * (len(archs) * num_steps + len(optimizers) * longest), "step",
                      per=m, detail=what[0]) if what else None
        analyses = {}
        for arch, detail in zip(archs, what):
            meter.update(detail=detail)
            r = train_and_evaluate(replace(self.recipe, arch=arch), images, labels, seeds, num_steps,
                                   data.test_x, data.test_y, progress=meter_callback(meter))
            check_not_diverged(r, data.num_classes, f"{arch} test models (evaluate.test_architectures)",
                               f"{lr_advice(self.recipe)}, or remove {arch} from evaluate.test_architectures")
            analyses[arch] = accuracy_summary(r.at(num_steps)[0])
        if analyses:
            out["architecture_transfer"] = analyses
        opts = {}
        for opt, detail in zip(optimizers, what[len(archs):]):
            meter.update(detail=detail)
            recipe = eval_recipe(cfg, self.arch, opt)
            # Flexibility: the same models also measured at the other step counts when the
            # number-of-steps analysis is on (off-the-shelf optimiser *and* step count).
            r = train_and_evaluate(recipe, images, labels, seeds, num_steps, data.test_x, data.test_y,
                                   eval_steps=eval_steps, progress=meter_callback(meter))
            check_not_diverged(r, data.num_classes, f"{opt} test models (evaluate.test_optimizers)",
                               lr_advice(recipe) if recipe.lr is not None else
                               f"remove {opt} from evaluate.test_optimizers (it trains with its default lr "
                               f"{recipe.learning_rate:g})")
            opts[opt] = {"lr": recipe.learning_rate, **accuracy_summary(r.at(num_steps)[0])}
            if cfg.evaluate.num_steps_analysis:
                opts[opt]["num_steps_analysis"] = {
                    str(s - num_steps): {"num_steps": s, **accuracy_summary(r.at(s)[0])} for s in r.steps}
        if opts:
            out["optimizer_transfer"] = opts
        if meter is not None:
            meter.close()
        return out


def _effective(cfg: Config, data: TaskData, method: Method, ctx: MethodContext) -> dict:
    """What the run used where the config left a default or asked for more than there was."""
    out = {**data.sizes.as_dict(), "inner_batch_size": cfg.inner_batch_size}
    if method.learns_over_epochs:
        out.update(epochs=cfg.epochs, stats_gap=cfg.stats_gap)
    else:
        out["step_grid"] = ctx.step_grid()
    return out


def run_experiment(cfg: Config, out: str | None = None, device: str | None = None, root: str | None = None,
                   progress: Progress | bool | None = None, resume: bool = False, overwrite: bool = False,
                   handle_signals: bool = True) -> dict:
    """Run one experiment; with `out`, write it to the directory `out/<run name>`.

    With `resume`, an unfinished run continues from its checkpoint (a finished
    one is returned as it is). With `handle_signals` (main thread only),
    SIGINT/SIGTERM stop the run at the next outer step after a checkpoint and
    raise `Interrupted`. `progress(event, info)` receives the run's events and
    the progress of every long phase (`labeldistill.progress`); True shows them
    on stderr (bars in a terminal, plain lines otherwise).
    """
    progress, printer = as_callback(progress)
    try:
        return _run_experiment(cfg, out, device, root, progress, resume, overwrite, handle_signals)
    finally:
        if printer is not None:
            printer.close()


def _run_experiment(cfg: Config, out: str | None, device: str | None, root: str | None, progress: Progress | None,
                    resume: bool, overwrite: bool, handle_signals: bool) -> dict:
    dev = resolve_device(device or cfg.device)
    if not out:
        return _run(cfg, dev, None, None, root, progress, overwrite, handle_signals)
    run_dir = RunDir.under(out, cfg.run_name)
    _check_writable(run_dir.path)
    # One writer per folder, from the first look at its state to the end of the run.
    with run_dir.locked():
        # Every check that needs no data happens before loading it, and nothing
        # is written until the data loaded: a bad input never damages a run directory.
        checkpoint = _prepare_run_dir(run_dir, cfg, resume, overwrite)
        if checkpoint is _FINISHED:
            return run_dir.read_result()
        try:
            return _run(cfg, dev, run_dir, checkpoint, root, progress, overwrite, handle_signals)
        except LabelDistillError as exc:  # an interrupted or failed --overwrite: say where the old result is
            exc.args = (f"{exc}{run_dir.previous_note()}",) + exc.args[1:]
            raise


def _run(cfg: Config, dev: torch.device, run_dir: RunDir | None, checkpoint: dict | None, root: str | None,
         progress: Progress | None, overwrite: bool, handle_signals: bool) -> dict:
    """`run_experiment` once its run folder (if any) is locked and checked."""
    method = check_config(cfg)
    with stop_guard(handle_signals) as guard:
        guard.phase = "while loading data"
        where = cfg.data.source if cfg.data.source == cfg.data.target else f"{cfg.data.source} -> {cfg.data.target}"
        with Meter(progress, LOADING, 1, "dataset", detail=where):
            data = prepare(cfg, dev, root=root, target_batches=method.learns_over_epochs)
            data = with_config_views(cfg, data)
        exp = Experiment(cfg, data, dev, run_dir, progress)
        if checkpoint is not None:
            _check_same_data(checkpoint, exp.fingerprint, run_dir)
        if run_dir is not None:
            _start_run_dir(run_dir, cfg, overwrite, fresh=checkpoint is None,
                           checkpoint_epoch=checkpoint["epoch"] if checkpoint is not None else 0)
        for note in data.sizes.notes:
            # Said once: logged when the run starts, only shown again when it resumes.
            if checkpoint is None:
                exp._emit("notice", message=note)
            else:
                exp.progress("notice", {"message": note})
        guard.phase = "while distilling" if method.learns_over_epochs else "while searching the number of steps"
        ctx = exp.context(checkpoint, guard)
        found = method.run(ctx)
        if not isinstance(found, MethodOutput):
            raise RunError(f"method '{cfg.method}' returned a {type(found).__name__}, not a "
                           "labeldistill.methods.MethodOutput")
        for name, model in found.reference_models.items():
            # Reported for context (how good the labeller is); nothing is chosen with it.
            found.info[name] = {**found.info.get(name, {}), "test_accuracy": accuracy(model, data.test_x, data.test_y)}
            exp._emit(name, **found.info[name])
        guard.phase = "while training the test models"
        # The test models are trained the way the method's choice was validated, on the labels as stored.
        exp.recipe = found.recipe
        views = found.views if found.views is not None else data.views
        labels = compress(found.labels, cfg.storage.label_dtype, cfg.storage.top_k, found.recipe.loss)
        t0 = time.perf_counter()
        tested = exp.test(found.images, labels, found.num_steps)
        test_seconds = time.perf_counter() - t0
        result = {
            "name": cfg.run_name, "method": cfg.method, "kind": method.kind, "source": cfg.data.source,
            "target": cfg.data.target, "arch": exp.arch, "head": exp.recipe.head,
            "num_base_examples": cfg.data.num_base_examples, "seed": cfg.seed,
            **tested,
            "num_steps": found.num_steps, "val_error": found.val_error, "best_epoch": found.best_epoch,
            "labels": labels.cpu(),
            "base_indices": data.base_indices, "base_original_labels": data.base_original_labels,
            "base_class_names": [_class_name(data, c) for c in data.base_original_labels.tolist()],
            "history": found.history, "train_seconds": found.train_seconds, "test_seconds": test_seconds,
            "device": str(dev), "data_origin": data.origin,
            "seeds": {"config": cfg.seed, "test_models": exp._seeds("test", count=cfg.evaluate.num_test_models)},
            "config": config_mod.to_dict(cfg),
            "effective": _effective(cfg, data, method, ctx),
        }
        clash = sorted(set(found.info) & set(result))
        if clash:
            raise RunError(f"method '{cfg.method}' reports {', '.join(clash)}, which the result already holds; "
                           "give its facts other names")
        result.update(found.info)
        result["learner"] = {"head": exp.recipe.head, "loss": exp.recipe.loss, "augment": exp.recipe.augment,
                             "optimizer": exp.recipe.optimizer, "lr": exp.recipe.learning_rate,
                             "batch_size": exp.recipe.batch_size}
        if found.pixels is not None:
            result["synthetic_pixels_shape"] = list(found.pixels.shape)
        # The images the labels belong to, for callers without a run folder; never written to
        # result.json (the artifact is their stored copy).
        result["pixels"] = (found.pixels if found.pixels is not None else data.base_pixels).cpu()
        result["storage"] = storage(result["pixels"], labels, cfg.storage.label_dtype, cfg.storage.top_k,
                                    budget_name(cfg.storage, views))
        if views is not None:
            result["views"] = views.card()
        if run_dir is not None:
            # The portable distilled dataset, written before the result marks the run finished.
            stored = {"labels": labels, "num_steps": found.num_steps, "pixels": found.pixels, "views": views}
            save_run_artifact(run_dir.path, cfg, data, exp.recipe, stored, result)
            result["artifact"] = CARD_FILE
            run_dir.write_result(result)
            run_dir.checkpoint_path.unlink(missing_ok=True)
            run_dir.drop_previous()  # --overwrite: the new result replaces the one kept aside
            exp._emit("finished", test_accuracy_mean=result["test_accuracy_mean"],
                      test_accuracy_std=result["test_accuracy_std"])
    return result


def _class_name(data: TaskData, c: int) -> str:
    names = data.source.class_names
    return names[c] if 0 <= c < len(names) and data.origin != "fake" else "noise"


_FINISHED: dict = {"finished": True}  # sentinel: --resume on a finished run returns its result


def _prepare_run_dir(run_dir: RunDir, cfg: Config, resume: bool, overwrite: bool) -> dict | None:
    """Refuse to clobber a finished run; load a checkpoint of the same config when resuming.

    Reads only; `_start_run_dir` writes once the data are loaded.
    """
    if resume and overwrite:
        raise RunError("--resume and --overwrite contradict each other: pass --resume to continue the run in "
                       f"{run_dir.path}, or --overwrite to start it again")
    if overwrite:
        return None
    if run_dir.is_finished():
        _same_config(run_dir.read_config(), cfg, run_dir, "finished run")
        if not resume:
            raise RunError(f"{run_dir.path} holds a finished run of this config; pass --resume to report its result, "
                           "run it again beside it with another --out or --set name=..., or pass --overwrite")
        return _FINISHED
    if not (run_dir.path / "config.json").exists():
        return None
    if not resume:
        raise RunError(f"{run_dir.path} holds an unfinished run; pass --resume to continue it or --overwrite "
                       f"to start again{run_dir.previous_note()}")
    _same_config(run_dir.read_config(), cfg, run_dir, "run")
    checkpoint = run_dir.load_checkpoint()
    if checkpoint is not None:
        if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("config"), dict):
            raise RunError(f"{run_dir.checkpoint_path} is not a labeldistill checkpoint; delete it or start "
                           "again with --overwrite")
        _same_config(checkpoint["config"], cfg, run_dir, "checkpoint")
        epoch = checkpoint.get("epoch")
        if type(epoch) is not int or not 0 <= epoch <= cfg.epochs:
            raise RunError(f"{run_dir.checkpoint_path} is at epoch {epoch!r}, outside this run's 0..{cfg.epochs}; "
                           "delete it or start again with --overwrite")
    return checkpoint


def _check_same_data(checkpoint: dict, now: dict, run_dir: RunDir) -> None:
    """The checkpoint's data fingerprint must match `now`, the loaded data's; checkpoints
    written before fingerprints existed have none and resume as before."""
    saved = checkpoint.get("data_fingerprint")
    if saved is None:
        return
    try:
        same = (saved["sha256"] == now["sha256"]
                and torch.allclose(saved["base_pixel_sums"], now["base_pixel_sums"], rtol=1e-5, atol=1e-3)
                and torch.allclose(saved["split_sums"], now["split_sums"], rtol=1e-5, atol=1e-3))
    except (KeyError, TypeError, RuntimeError):
        raise RunError(f"{run_dir.checkpoint_path} is not a labeldistill checkpoint; delete it or start "
                       "again with --overwrite") from None
    if not same:
        raise RunError(f"the data differ from those the run in {run_dir.path} started with (base examples, "
                       "splits or images); point --data-root at that run's data, or start again with --overwrite")


def _same_config(saved: dict, cfg: Config, run_dir: RunDir, what: str) -> None:
    """The saved config must run the same experiment as `cfg`: equal as written, or equal once
    defaults are resolved (a run saved with `epochs: 400` continues under a config that leaves
    the reference's 400 to the default, and the other way round) and the keys that do not
    change results (`config.NEUTRAL_KEYS`: device, checkpoint frequency...) are set aside."""
    resolved = config_mod.to_dict(cfg)
    if saved == resolved:
        return
    try:
        before = config_mod.from_dict(saved)
        if config_mod.experiment_dict(before, evaluation_head(before)) == config_mod.experiment_dict(
                cfg, evaluation_head(cfg)):
            return
    except LabelDistillError:  # saved by a version with other keys: report the keys that differ
        pass
    fs, fr = config_mod.flat_keys(saved), config_mod.flat_keys(resolved)
    # An option added in a later version is absent from older runs' configs: while it
    # keeps its default it is no difference (the older run used that default too).
    defaults = config_mod.flat_keys(config_mod.to_dict(Config()))
    changed = sorted(k for k in fs.keys() | fr.keys() if fs.get(k) != fr.get(k) and k not in config_mod.NEUTRAL_KEYS
                     and not (k not in fs and k in defaults and fr[k] == defaults[k]))
    if not changed:  # only keys that change no result differ
        return
    raise RunError(f"the {what} in {run_dir.path} is from a different config (differs in: {', '.join(changed)}); "
                   "run this config under another name (--set name=...) or --out, or resume with that run's config "
                   "(--overwrite would delete it)")


def _check_writable(path) -> None:
    """The run directory (or its nearest existing parent) must be a writable folder."""
    from pathlib import Path
    import os

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunError(f"{path} exists and is not a directory; choose another --out")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise RunError(f"cannot create {path}: {parent} is a file; choose another --out")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RunError(f"cannot write to {parent}; choose another --out")


def _start_run_dir(run_dir: RunDir, cfg: Config, overwrite: bool, fresh: bool,
                   checkpoint_epoch: int = 0) -> None:
    """Clear what a fresh start replaces, then record the resolved config."""
    if overwrite:
        run_dir.set_aside()
    elif fresh:  # no checkpoint to continue from: earlier log lines describe a run that restarts
        for name in ("metrics.jsonl", "checkpoint.pt", "synthetic_images.pt"):
            (run_dir.path / name).unlink(missing_ok=True)
    else:  # resuming: epochs logged after the checkpoint are run again, so drop their lines
        run_dir.trim_log(checkpoint_epoch)
    run_dir.write_config(config_mod.to_dict(cfg))
