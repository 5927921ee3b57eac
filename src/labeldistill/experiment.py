"""The outer loop of an experiment (SPEC 4 and 5): distil, validate, test.

`run_experiment(cfg)` runs label distillation (ld-rr, ld-or2), image
distillation (dd-rr, dd-or2) or a baseline (true labels, label smoothing) and
returns the result dictionary that is also written to the run directory.
"""
from __future__ import annotations

import copy
import hashlib
import math
import time
from dataclasses import replace

import torch

from . import config as config_mod
from .config import Config
from .data import TaskData, prepare
from .errors import Interrupted, LabelDistillError, RunError
from .evaluate import (CHANCE_MARGIN, Recipe, accuracy_summary, check_not_diverged, lr_advice, step_grid,
                       train_and_evaluate)
from .labels import one_hot, uniform_labels
from .meta.common import Distilled
from .methods import choose_on_validation, earliest_lowest, label_candidates  # noqa: F401 (earliest_lowest: API)
from .meta.or2 import SecondOrder
from .meta.reset import ResetTracker
from .meta.rr import RidgeRegression
from .models import default_arch
from .progress import (ANALYSES, DISTILLING, INITIAL_LABELS, LOADING, TESTING, Meter, Progress, as_callback,
                       meter_callback)
from .results import RunDir
from .seeding import derive_seed, generator
from .signals import StopGuard, stop_guard


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RunError("device 'cuda' was requested but CUDA is not available; use --device cpu")
    return torch.device(name)


def search_grid(cfg: Config) -> list[int]:
    """Step counts at which direct methods' validation models are measured: evaluate.step_grid,
    or the reference's grid for the number of base examples (SPEC 5)."""
    return sorted(set(cfg.evaluate.step_grid)) or step_grid(cfg.data.num_base_examples)


def eval_recipe(cfg: Config, arch: str, optimizer: str | None = None) -> Recipe:
    """How the evaluation models (step search, validation, test) of `cfg` learn; the head is
    evaluate.head or the method's own (`Config.head`)."""
    d = cfg.distill
    return Recipe(arch=arch, head=cfg.head, optimizer=optimizer or cfg.evaluate.optimizer,
                  lr=cfg.evaluate.lr if optimizer in (None, cfg.evaluate.optimizer) else None,
                  batch_size=cfg.inner_batch_size, ridge_lambda=d.ridge_lambda,
                  head_momentum=d.head_momentum, calibration_lr=d.calibration_lr,
                  loss=cfg.evaluate.loss, augment=cfg.evaluate.augment, rr_gradients=d.rr_gradients)


class Experiment:
    """One run: the data, the meta-parameters, the online learner and their bookkeeping."""

    def __init__(self, cfg: Config, data: TaskData, device: torch.device,
                 run_dir: RunDir | None = None, progress: Progress | None = None):
        self.cfg, self.data, self.device = cfg, data, device
        self.run_dir = run_dir
        self.progress = progress or (lambda event, info: None)
        self.arch = cfg.arch or default_arch(data.channels)
        self.recipe = eval_recipe(cfg, self.arch)
        self.history: list[dict] = []
        self.train_seconds = 0.0
        # The epoch in progress: its target order, the outer steps done and the
        # running loss sums, so that a checkpoint can be taken between any two steps.
        self.partial: dict | None = None
        self.stop: StopGuard = StopGuard()  # not installed: never requested
        self._init_choice = None  # the direct method's choice when labels do not start uniform
        self._fingerprint: dict | None = None

    # -- helpers ------------------------------------------------------------
    def _emit(self, event: str, **info) -> None:
        if self.run_dir is not None:
            self.run_dir.log({"event": event, **info})
        self.progress(event, info)

    def _seeds(self, *names, count: int) -> list[int]:
        return [derive_seed(self.cfg.seed, *names, i) for i in range(count)]

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

    def _note_diverged(self, choice) -> None:
        """Say when the step search left out step counts whose validation models diverged:
        the choice is sound, but a lower learning rate may search them all."""
        skipped = sum(1 for h in choice.history if h.get("diverged"))
        if skipped:
            self._emit("notice", message=f"the step search left out {skipped} of {len(choice.history)} step counts "
                                         f"at which validation models diverged; {lr_advice(choice.recipe)} to "
                                         "search them all")

    # -- methods without meta-learning (SPEC 5 and 10) ---------------------------
    def run_baseline(self) -> dict:
        """Labels made directly (true, smoothed, teacher, solved); learner and steps chosen on validation."""
        cfg, data = self.cfg, self.data
        t0 = time.perf_counter()
        candidates, extra = label_candidates(cfg, data, self.arch, self.progress)
        if "teacher_model" in extra:
            # Reported for context (how good the labeller is); nothing is chosen with it.
            from .kd import accuracy

            extra["teacher"]["test_accuracy"] = accuracy(extra.pop("teacher_model"), data.test_x, data.test_y)
            self._emit("teacher", **extra["teacher"])
        grid = search_grid(cfg)
        choice = choose_on_validation(self.recipe, data.base_x, candidates,
                                      self._seeds("val", count=cfg.evaluate.num_val_models), grid,
                                      data.val_x, data.val_y, progress=self.progress)
        self._note_diverged(choice)
        # The test models are trained the way the winning candidate was validated.
        self.recipe = choice.recipe
        self.history = choice.history
        self._emit("step_search", num_steps=choice.num_steps, val_error=choice.val_error,
                   labels=choice.candidate.name)
        self.train_seconds = time.perf_counter() - t0
        if "teacher" in extra and "temperature" in choice.candidate.info:
            extra["teacher"]["temperature"] = choice.candidate.info["temperature"]
        if len(candidates) > 1 or choice.candidate.info:
            extra["label_choice"] = {"name": choice.candidate.name, "loss": choice.candidate.loss,
                                     **choice.candidate.info, "candidates": [c.name for c in candidates]}
        return {"labels": choice.candidate.labels, "num_steps": choice.num_steps, "val_error": choice.val_error,
                "images": data.base_x, **extra}

    # -- meta-learning (SPEC 4) -----------------------------------------------
    def _initial_labels(self) -> torch.Tensor:
        """Uniform (SPEC 4), or the distribution-valued labels a direct method chooses on validation."""
        cfg, data = self.cfg, self.data
        self._init_choice = None
        if cfg.distill.init_labels == "uniform":
            return uniform_labels(data.base_x.shape[0], data.num_classes, self.device)

        direct = replace(cfg, method=cfg.distill.init_labels, evaluate=replace(cfg.evaluate, loss="ce"))
        candidates, extra = label_candidates(direct, data, self.arch, self.progress)
        extra.pop("teacher_model", None)
        grid = search_grid(cfg)
        recipe = replace(eval_recipe(direct, self.arch), head=self.recipe.head)
        choice = choose_on_validation(recipe, data.base_x, candidates, self._seeds("init", count=1), grid,
                                      data.val_x, data.val_y, progress=self.progress, phase=INITIAL_LABELS)
        self._note_diverged(choice)
        self._emit("initial_labels", method=cfg.distill.init_labels, labels=choice.candidate.name,
                   num_steps=choice.num_steps, val_error=choice.val_error)
        self._init_choice = choice
        return choice.candidate.labels.to(self.device).clone()

    def setup_distillation(self) -> None:
        cfg, data = self.cfg, self.data
        t = cfg.distill
        if cfg.method.startswith("ld-"):
            labels = self._initial_labels()
            self.distilled = Distilled("labels", data.base_x, labels)
        else:
            # Image distillation: synthetic pixels uniform in [0, 1], fixed balanced one-hot labels.
            n = cfg.data.num_base_examples
            g = generator(cfg.seed, "synthetic_images")
            pixels = torch.rand(n, data.channels, data.image_size, data.image_size, generator=g).to(self.device)
            classes = torch.arange(n) % data.num_classes
            self.distilled = Distilled("images", pixels, one_hot(classes, data.num_classes).to(self.device),
                                       data.mean, data.std)
        self.meta_opt = torch.optim.Adam([self.distilled.param], lr=t.label_lr)
        learner_cls = RidgeRegression if cfg.variant == "rr" else SecondOrder
        self.learner = learner_cls(self.recipe, data.channels, data.num_classes, data.image_size,
                                   self.device, t.model_lr, t.inner_lr)
        self.num_resets = 0
        self.learner.reset(derive_seed(cfg.seed, "online", 0))
        self.tracker = ResetTracker(cfg.stats_gap)
        self.order_gen = generator(cfg.seed, "target_order")
        self.inner_gen = generator(cfg.seed, "inner")
        self.epoch = 0
        self.best = {"val_error": math.inf, "epoch": 0, "num_steps": self.tracker.num_steps,
                     "param": self.distilled.param.detach().clone()}
        if self._init_choice is not None:
            # Labels that start from a direct method compete as they are (epoch 0), with the
            # validation error and steps they were chosen with: meta-learning must beat them.
            self.best.update(val_error=self._init_choice.val_error, num_steps=self._init_choice.num_steps)

    def state_dict(self) -> dict:
        return {
            "config": config_mod.to_dict(self.cfg), "epoch": self.epoch,
            "param": self.distilled.param.detach().cpu(), "meta_opt": self.meta_opt.state_dict(),
            "learner": self.learner.state_dict(), "num_resets": self.num_resets,
            "tracker": self.tracker.state_dict(), "order_gen": self.order_gen.get_state(),
            "inner_gen": self.inner_gen.get_state(), "history": self.history,
            "best": {**self.best, "param": self.best["param"].cpu()},
            "train_seconds": self.train_seconds,
            "torch_rng": torch.get_rng_state(),
            "data_fingerprint": self._data_fingerprint(),
            "partial": None if self.partial is None else {
                "order": self.partial["order"].cpu(), "step": self.partial["step"],
                "sums": self.partial["sums"].detach().cpu()},
        }

    def _data_fingerprint(self) -> dict:
        if self._fingerprint is None:  # computed once: every checkpoint stores it
            self._fingerprint = data_fingerprint(self.data)
        return self._fingerprint

    def load_state_dict(self, state: dict) -> None:
        try:
            self._load_state_dict(state)
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
            raise RunError(f"the checkpoint does not fit this version of labeldistill or this config "
                           f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                           "start again with --overwrite") from None

    def _load_state_dict(self, state: dict) -> None:
        # Optimisers adopt the tensors they are given: copy, so that a state taken
        # from a live experiment (not from disk) is never shared with it.
        state = copy.deepcopy(state)
        with torch.no_grad():
            self.distilled.param.copy_(state["param"].to(self.device))
        self.meta_opt.load_state_dict(state["meta_opt"])
        self.num_resets = state["num_resets"]
        self.learner.reset(derive_seed(self.cfg.seed, "online", self.num_resets))
        self.learner.load_state_dict(state["learner"])
        self.tracker.load_state_dict(state["tracker"])
        self.order_gen.set_state(state["order_gen"])
        self.inner_gen.set_state(state["inner_gen"])
        self.history = state["history"]
        self.best = {**state["best"], "param": state["best"]["param"].to(self.device)}
        self.epoch = state["epoch"]
        self.train_seconds = state["train_seconds"]
        torch.set_rng_state(state["torch_rng"])
        partial = state.get("partial")
        self.partial = None if partial is None else {
            "order": partial["order"], "step": partial["step"], "sums": partial["sums"].to(self.device)}

    def _check_finite(self) -> None:
        """Stop on NaN/inf in the meta-parameters, the epoch's losses or the online learner's
        weights and optimiser state, before any of it reaches a checkpoint."""
        bad = []
        if not bool(torch.isfinite(self.distilled.param).all()):
            bad.append("labels" if self.distilled.kind == "labels" else "synthetic images")
        if self.partial is not None and not bool(torch.isfinite(self.partial["sums"]).all()):
            bad.append("losses")
        if not _all_finite(self.learner.state_dict()):
            bad.append("online model weights")
        if bad:
            where = f"epoch {self.epoch + 1}" + (f" step {self.partial['step']}" if self.partial else "")
            losses = ""
            if self.partial is not None and self.partial["step"]:
                outer, _, inner = (self.partial["sums"] / self.partial["step"]).tolist()
                losses = f" (mean meta loss {outer:.4g}, model loss {inner:.4g})"
            kept = (f"the checkpoint of epoch {self._saved_epoch} in {self.run_dir.path} is kept"
                    if self.run_dir is not None and self._saved_epoch is not None else "no checkpoint was written")
            what = bad[0] if len(bad) == 1 else ", ".join(bad[:-1]) + " and " + bad[-1]
            raise RunError(f"non-finite {what} at {where}{losses}; {kept}; the run is deterministic, "
                           "so start again with a lower distill.label_lr or distill.model_lr (--overwrite)")

    def _save_checkpoint(self) -> None:
        self._check_finite()
        self.run_dir.save_checkpoint(self.state_dict())
        self._saved(self.epoch)

    def _saved(self, epoch: int | None) -> None:
        self._saved_epoch = epoch
        if epoch is not None and self.run_dir is not None:
            self.stop.kept = f"the checkpoint of epoch {epoch} in {self.run_dir.path} is kept"

    def _stop(self, t0: float | None = None) -> None:
        """A stop was requested: save the current (step-boundary) state and raise `Interrupted`."""
        if t0 is not None:
            self.train_seconds += time.perf_counter() - t0
        if self.partial is not None:
            where = f"at epoch {self.epoch + 1} step {self.partial['step']}"
        else:
            where = f"after epoch {self.epoch}"
        path = None
        if self.run_dir is not None:
            self._save_checkpoint()
            path = str(self.run_dir.checkpoint_path)
            self._emit("interrupted", epoch=self.epoch, step=self.partial["step"] if self.partial else 0,
                       signal=self.stop.signum)
        raise Interrupted(self.stop.signum, where, path)

    def validate(self, meter: Meter | None = None) -> tuple[float, float]:
        images, labels = self.distilled.current()
        steps = self.tracker.num_steps
        report = meter.counter(f"validation after epoch {self.epoch}: step", steps) if meter is not None else None
        res = train_and_evaluate(self.recipe, images, labels, self._seeds("val", self.epoch, count=1),
                                 steps, self.data.val_x, self.data.val_y, progress=report)
        # The labels are finite (`_check_finite`), so a diverging model is the learner's doing.
        check_not_diverged(res, self.data.num_classes, f"validation models of epoch {self.epoch}",
                           lr_advice(self.recipe))
        return float(res.errors[0, 0]), float(res.losses[0, 0])

    def steps_per_epoch(self) -> int:
        return math.ceil(self.data.target_x.shape[0] / self._target_batch())

    def _target_batch(self) -> int:
        return self.data.sizes.batch_size if self.data.sizes is not None else self.cfg.distill.batch_size

    def run_epoch(self, t0: float | None = None, meter: Meter | None = None) -> dict:
        cfg, data = self.cfg, self.data
        n_target = data.target_x.shape[0]
        bs = self._target_batch()
        per_epoch = self.steps_per_epoch()
        ib = cfg.inner_batch_size
        n_base = data.base_x.shape[0]
        if self.partial is None:
            self.partial = {"order": torch.randperm(n_target, generator=self.order_gen), "step": 0,
                            "sums": torch.zeros(3, device=self.device)}
        p = self.partial
        order = p["order"].to(self.device)
        for start in range(p["step"] * bs, n_target, bs):
            if self.stop.requested:  # between two outer steps the state is consistent
                self._stop(t0)
            sel = order[start:start + bs]
            x_t, y_t = data.target_x[sel], data.target_y[sel]  # target minibatch x_t, y_t
            idx = torch.randperm(n_base, generator=self.inner_gen)[:ib].to(self.device)  # inner minibatch
            outer, error, inner = self.learner.step(self.distilled, self.meta_opt, x_t, y_t, idx)
            p["sums"] += torch.stack([outer, error, inner])
            p["step"] += 1
            if meter is not None and p["step"] < per_epoch:  # an epoch counts once validated (_distill_loop)
                meter.update(self.epoch + p["step"] / per_epoch)
            if self.tracker.update(float(error)):
                self.num_resets += 1
                self.learner.reset(derive_seed(cfg.seed, "online", self.num_resets))
        self._check_finite()
        outer, error, inner = (p["sums"] / p["step"]).tolist()
        self.partial = None
        return {"train_error": error, "train_loss": outer, "meta_loss": outer, "model_loss": inner,
                "num_steps": self.tracker.num_steps, "num_resets": self.num_resets}

    def distill(self, checkpoint: dict | None = None) -> dict:
        self.setup_distillation()
        self._saved_epoch = None
        if checkpoint is not None:
            self.load_state_dict(checkpoint)
            self._saved(self.epoch)
            self._emit("resumed", epoch=self.epoch,
                       step=self.partial["step"] if self.partial is not None else 0)
        with self.stop.deferred():
            self._distill_loop()
        best = self.best
        if self.distilled.kind == "labels":
            images, labels = self.data.base_x, best["param"]
        else:
            images, labels = self.data.normalize(best["param"]), self.distilled.labels.detach()
        return {"images": images, "labels": labels, "num_steps": best["num_steps"],
                "val_error": best["val_error"], "best_epoch": best["epoch"],
                "pixels": best["param"] if self.distilled.kind == "images" else None}

    def _distill_loop(self) -> None:
        cfg = self.cfg
        epochs = cfg.epochs
        within = self.partial["step"] / self.steps_per_epoch() if self.partial is not None else 0.0
        meter = Meter(self.progress, DISTILLING, epochs, "epoch", done=self.epoch + within)
        while self.epoch < epochs:
            if self.stop.requested:
                self._stop()
            t0 = time.perf_counter()
            record = self.run_epoch(t0, meter)
            self.epoch += 1
            if self.epoch % cfg.distill.validate_every == 0 or self.epoch == epochs:
                val_error, val_loss = self.validate(meter)
                record.update(val_error=val_error, val_loss=val_loss)
                if val_error <= self.best["val_error"]:  # ties go to the later labels
                    self.best = {"val_error": val_error, "epoch": self.epoch,
                                 "num_steps": self.tracker.num_steps,
                                 "param": self.distilled.param.detach().clone()}
            self.train_seconds += time.perf_counter() - t0
            record = {"epoch": self.epoch, **record, "seconds": self.train_seconds}
            self.history.append(record)
            self._emit("epoch", **record)
            meter.update(self.epoch, detail="")  # the last validation's detail is done
            every = cfg.distill.checkpoint_every
            if self.run_dir is not None and every and (self.epoch % every == 0 or self.epoch == epochs):
                self._save_checkpoint()
        if self.stop.requested:
            self._stop()
        meter.close()


def _effective(cfg: Config, data: TaskData) -> dict:
    """What the run used where the config left a default or asked for more than there was."""
    out = {**data.sizes.as_dict(), "inner_batch_size": cfg.inner_batch_size}
    if cfg.is_baseline:
        out["step_grid"] = search_grid(cfg)
    else:
        out.update(epochs=cfg.epochs, stats_gap=cfg.stats_gap)
    return out


def _all_finite(obj) -> bool:
    """True when every floating tensor or float in a nested state dict is finite."""
    if isinstance(obj, torch.Tensor):
        return not obj.is_floating_point() or bool(torch.isfinite(obj).all())
    if isinstance(obj, dict):
        return all(_all_finite(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return all(_all_finite(v) for v in obj)
    if isinstance(obj, float):
        return math.isfinite(obj)
    return True


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
    with stop_guard(handle_signals) as guard:
        guard.phase = "while loading data"
        where = cfg.data.source if cfg.data.source == cfg.data.target else f"{cfg.data.source} -> {cfg.data.target}"
        with Meter(progress, LOADING, 1, "dataset", detail=where):
            data = prepare(cfg, dev, root=root)
        if checkpoint is not None:
            _check_same_data(checkpoint, data, run_dir)
        if run_dir is not None:
            _start_run_dir(run_dir, cfg, overwrite, fresh=checkpoint is None,
                           checkpoint_epoch=checkpoint["epoch"] if checkpoint is not None else 0)
        exp = Experiment(cfg, data, dev, run_dir, progress)
        exp.stop = guard
        for note in data.sizes.notes:
            # Said once: logged when the run starts, only shown again when it resumes.
            if checkpoint is None:
                exp._emit("notice", message=note)
            else:
                exp.progress("notice", {"message": note})
        guard.phase = "while searching the number of steps" if cfg.is_baseline else "while distilling"
        if cfg.is_baseline:
            found = exp.run_baseline()
        else:
            found = exp.distill(checkpoint)
        guard.phase = "while training the test models"
        t0 = time.perf_counter()
        tested = exp.test(found["images"], found["labels"], found["num_steps"])
        test_seconds = time.perf_counter() - t0
        result = {
            "name": cfg.run_name, "method": cfg.method, "source": cfg.data.source, "target": cfg.data.target,
            "arch": exp.arch, "head": exp.recipe.head, "num_base_examples": cfg.data.num_base_examples,
            "seed": cfg.seed,
            **tested,
            "num_steps": found["num_steps"], "val_error": found["val_error"],
            "best_epoch": found.get("best_epoch"),
            "labels": found["labels"].cpu(),
            "base_indices": data.base_indices, "base_original_labels": data.base_original_labels,
            "base_class_names": [_class_name(data, c) for c in data.base_original_labels.tolist()],
            "history": exp.history, "train_seconds": exp.train_seconds, "test_seconds": test_seconds,
            "device": str(dev), "data_origin": data.origin,
            "seeds": {"config": cfg.seed, "test_models": exp._seeds("test", count=cfg.evaluate.num_test_models)},
            "config": config_mod.to_dict(cfg),
            "effective": _effective(cfg, data),
        }
        if "remapped_labels" in found:
            result["base_remapped_labels"] = found["remapped_labels"]
        for key in ("teacher", "solve", "label_choice"):
            if key in found:
                result[key] = found[key]
        result["learner"] = {"head": exp.recipe.head, "loss": exp.recipe.loss, "augment": exp.recipe.augment,
                             "optimizer": exp.recipe.optimizer, "lr": exp.recipe.learning_rate,
                             "batch_size": exp.recipe.batch_size}
        if found.get("pixels") is not None:
            result["synthetic_pixels_shape"] = list(found["pixels"].shape)
        # The images the labels belong to, for callers without a run folder; never written to
        # result.json (the artifact is their stored copy).
        result["pixels"] = (found["pixels"] if found.get("pixels") is not None else data.base_pixels).cpu()
        if run_dir is not None:
            from .artifact import CARD_FILE, save_run_artifact

            # The portable distilled dataset, written before the result marks the run finished.
            save_run_artifact(run_dir.path, cfg, data, exp.recipe, found, result)
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


def data_fingerprint(data: TaskData) -> dict:
    """What a resume must find as the run started: the base examples and the splits' labels
    and shapes (exact, hashed), and sums of the images (compared within float tolerance,
    since a run may resume on another device). Cheap next to one epoch."""
    h = hashlib.sha256()
    for t in (data.base_indices, data.base_original_labels, data.target_y, data.val_y, data.test_y,
              data.target_x, data.val_x, data.test_x):
        h.update(repr(tuple(t.shape)).encode())
        if not t.is_floating_point():
            h.update(t.detach().cpu().long().numpy().tobytes())
    # Per base image: its sum and two fixed random projections (a flipped or shifted image differs too).
    pixels = data.base_pixels.detach().flatten(1).double().cpu()
    weights = torch.rand(pixels.shape[1], 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return {"sha256": h.hexdigest(),
            "base_pixel_sums": torch.cat([pixels.sum(1, keepdim=True), pixels @ weights], 1),
            "split_sums": torch.stack([x.detach().sum(dtype=torch.float64)
                                       for x in (data.target_x, data.val_x, data.test_x)]).cpu()}


def _check_same_data(checkpoint: dict, data: TaskData, run_dir: RunDir) -> None:
    """The checkpoint's data fingerprint must match the loaded data; checkpoints written
    before fingerprints existed have none and resume as before."""
    saved = checkpoint.get("data_fingerprint")
    if saved is None:
        return
    now = data_fingerprint(data)
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
        if config_mod.experiment_dict(config_mod.from_dict(saved)) == config_mod.experiment_dict(cfg):
            return
    except LabelDistillError:  # saved by a version with other keys: report the keys that differ
        pass
    fs, fr = _flat(saved), _flat(resolved)
    # An option added in a later version is absent from older runs' configs: while it
    # keeps its default it is no difference (the older run used that default too).
    defaults = _flat(config_mod.to_dict(Config()))
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


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
