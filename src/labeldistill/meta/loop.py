"""The meta-learning loop (SPEC 4 and 7): epochs of outer steps, resets, validation, checkpoints.

`MetaLoop` meta-learns the labels of real base images (kind "labels": ld-rr,
ld-or2) or the pixels of synthetic images (kind "images": dd-rr, dd-or2) with
the ridge-regression (`rr`) or second-order (`or2`) learner. It is handed a
`methods.MethodContext`: the data without the test split, the learner of the
validation models, an event sink (`emit`), progress, and for checkpoints the
run folder and stop guard. It keeps the labels with the lowest validation
error and returns them as a `MethodOutput`; the outer run tests them.
"""
from __future__ import annotations

import copy
import math
import time

import torch

from .. import config as config_mod
from ..errors import Interrupted, RunError
from ..evaluate import check_not_diverged, lr_advice, train_and_evaluate
from ..labels import one_hot, uniform_labels
from ..methods.protocol import MethodContext, MethodOutput
from ..progress import DISTILLING, Meter
from ..seeding import derive_seed, generator
from ..signals import StopGuard
from .common import Distilled
from .or2 import SecondOrder
from .reset import ResetTracker
from .rr import RidgeRegression

LEARNERS = {"rr": RidgeRegression, "or2": SecondOrder}


class MetaLoop:
    """One meta-learning run: the meta-parameters, the online learner and their bookkeeping."""

    def __init__(self, ctx: MethodContext, kind: str, variant: str):
        self.ctx = ctx
        self.cfg, self.data, self.device = ctx.cfg, ctx.data, ctx.device
        self.kind, self.variant = kind, variant
        self.run_dir = ctx.run_dir
        self.progress = ctx.progress or (lambda event, info: None)
        self.recipe = ctx.recipe
        self.history: list[dict] = []
        self.train_seconds = 0.0
        # The epoch in progress: its target order, the outer steps done and the
        # running loss sums, so that a checkpoint can be taken between any two steps.
        self.partial: dict | None = None
        self.stop: StopGuard = ctx.stop if ctx.stop is not None else StopGuard()  # not installed: never requested
        self._extra: dict | None = None
        self._saved_epoch: int | None = None

    def setup(self, start=None) -> None:
        """Fresh meta-parameters: uniform labels (SPEC 4) or those a direct method chose on validation
        (`start`, a methods.Choice), or synthetic pixels uniform in [0, 1] with fixed balanced labels."""
        cfg, data = self.cfg, self.data
        t = cfg.distill
        if self.kind == "labels":
            labels = (start.candidate.labels.to(self.device).clone() if start is not None
                      else uniform_labels(data.base_x.shape[0], data.num_classes, self.device))
            self.distilled = Distilled("labels", data.base_x, labels)
        else:
            n = cfg.data.num_base_examples
            g = generator(cfg.seed, "synthetic_images")
            pixels = torch.rand(n, data.channels, data.image_size, data.image_size, generator=g).to(self.device)
            classes = torch.arange(n) % data.num_classes
            self.distilled = Distilled("images", pixels, one_hot(classes, data.num_classes).to(self.device),
                                       data.mean, data.std)
        self.meta_opt = torch.optim.Adam([self.distilled.param], lr=t.label_lr)
        self.learner = LEARNERS[self.variant](self.recipe, data.channels, data.num_classes, data.image_size,
                                              self.device, t.model_lr, t.inner_lr)
        self.num_resets = 0
        self.learner.reset(derive_seed(cfg.seed, "online", 0))
        self.tracker = ResetTracker(cfg.stats_gap)
        self.order_gen = generator(cfg.seed, "target_order")
        self.inner_gen = generator(cfg.seed, "inner")
        self.epoch = 0
        self.best = {"val_error": math.inf, "epoch": 0, "num_steps": self.tracker.num_steps,
                     "param": self.distilled.param.detach().clone()}
        if start is not None:
            # Labels that start from a direct method compete as they are (epoch 0), with the
            # validation error and steps they were chosen with: meta-learning must beat them.
            self.best.update(val_error=start.val_error, num_steps=start.num_steps)

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
            **self._checkpoint_extra(),
            "partial": None if self.partial is None else {
                "order": self.partial["order"].cpu(), "step": self.partial["step"],
                "sums": self.partial["sums"].detach().cpu()},
        }

    def _checkpoint_extra(self) -> dict:
        """What the outer run adds to every checkpoint (the data's fingerprint), computed once."""
        if self._extra is None:
            self._extra = self.ctx.checkpoint_extra()
        return self._extra

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
            self.ctx.emit("interrupted", epoch=self.epoch, step=self.partial["step"] if self.partial else 0,
                       signal=self.stop.signum)
        raise Interrupted(self.stop.signum, where, path)

    def validate(self, meter: Meter | None = None) -> tuple[float, float]:
        images, labels = self.distilled.current()
        # Validated as they will be stored (storage.label_dtype, storage.top_k), as direct
        # methods' candidates are: the epoch chosen is the best of the labels tested.
        labels = self.ctx.stored(labels, self.recipe.loss)
        steps = self.tracker.num_steps
        report = meter.counter(f"validation after epoch {self.epoch}: step", steps) if meter is not None else None
        res = train_and_evaluate(self.recipe, images, labels, self.ctx.seeds("val", self.epoch, count=1),
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

    def run(self, checkpoint: dict | None = None, start=None) -> MethodOutput:
        """Meta-learn from scratch (or from `checkpoint`) for the config's epochs; the best labels."""
        self.setup(start)
        if checkpoint is not None:
            self.load_state_dict(checkpoint)
            self._saved(self.epoch)
            self.ctx.emit("resumed", epoch=self.epoch,
                       step=self.partial["step"] if self.partial is not None else 0)
        with self.stop.deferred():
            self._distill_loop()
        best = self.best
        if self.distilled.kind == "labels":
            images, labels = self.data.base_x, best["param"]
        else:
            images, labels = self.data.normalize(best["param"]), self.distilled.labels.detach()
        return MethodOutput(labels=labels, images=images, num_steps=best["num_steps"], val_error=best["val_error"],
                            recipe=self.recipe, history=self.history, best_epoch=best["epoch"],
                            pixels=best["param"] if self.distilled.kind == "images" else None,
                            train_seconds=self.train_seconds)

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
            self.ctx.emit("epoch", **record)
            meter.update(self.epoch, detail="")  # the last validation's detail is done
            every = cfg.distill.checkpoint_every
            if self.run_dir is not None and every and (self.epoch % every == 0 or self.epoch == epochs):
                self._save_checkpoint()
        if self.stop.requested:
            self._stop()
        meter.close()



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

