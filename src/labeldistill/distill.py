"""The outer loop of an experiment (SPEC 4 and 5): distil, validate, test.

`run_experiment(cfg)` runs label distillation (ld-rr, ld-or2), image
distillation (dd-rr, dd-or2) or a baseline (true labels, label smoothing) and
returns the result dictionary that is also written to the run directory.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import replace
from typing import Callable

import torch

from . import config as config_mod
from .config import Config
from .data import TaskData, prepare, remap_classes
from .errors import RunError
from .evaluate import Recipe, step_grid, summarize, train_and_evaluate
from .labels import one_hot, uniform_labels
from .meta.common import Distilled
from .meta.or2 import SecondOrder
from .meta.reset import ResetTracker
from .meta.rr import RidgeRegression
from .models import default_arch
from .results import RunDir
from .seeding import derive_seed, generator

Progress = Callable[[str, dict], None]


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RunError("device 'cuda' was requested but CUDA is not available; use --device cpu")
    return torch.device(name)


def stats_gap(cfg: Config, data: TaskData) -> int:
    if cfg.distill.stats_gap is not None:
        return cfg.distill.stats_gap
    if data.target.stats_gap is not None:
        return data.target.stats_gap
    return 200 if cfg.data.num_base_examples > 100 else 50


def eval_recipe(cfg: Config, arch: str, optimizer: str | None = None) -> Recipe:
    d = cfg.distill
    head = "rr" if cfg.method.endswith("-rr") else "linear"
    return Recipe(arch=arch, head=head, optimizer=optimizer or cfg.evaluate.optimizer,
                  lr=cfg.evaluate.lr if optimizer in (None, cfg.evaluate.optimizer) else None,
                  batch_size=cfg.inner_batch_size, ridge_lambda=d.ridge_lambda,
                  head_momentum=d.head_momentum, calibration_lr=d.calibration_lr)


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
        out: dict = {}
        eval_steps = [num_steps]
        if cfg.evaluate.num_steps_analysis:
            eval_steps += [num_steps + o for o in cfg.evaluate.step_offsets if num_steps + o > 0]
        res = train_and_evaluate(self.recipe, images, labels, seeds, num_steps, data.test_x, data.test_y,
                                 eval_steps=eval_steps)
        errors, losses = res.at(num_steps)
        out.update(_accuracy_summary(errors))
        out["test_loss"] = losses
        if cfg.evaluate.num_steps_analysis:
            out["num_steps_analysis"] = {
                str(s - num_steps): {"num_steps": s, **_accuracy_summary(res.at(s)[0])}
                for s in res.steps}
        analyses = {}
        for arch in cfg.evaluate.test_architectures:
            r = train_and_evaluate(replace(self.recipe, arch=arch), images, labels, seeds, num_steps,
                                   data.test_x, data.test_y)
            analyses[arch] = _accuracy_summary(r.at(num_steps)[0])
        if analyses:
            out["architecture_transfer"] = analyses
        opts = {}
        for opt in cfg.evaluate.test_optimizers:
            recipe = eval_recipe(cfg, self.arch, opt)
            r = train_and_evaluate(recipe, images, labels, seeds, num_steps, data.test_x, data.test_y)
            opts[opt] = {"lr": recipe.learning_rate, **_accuracy_summary(r.at(num_steps)[0])}
        if opts:
            out["optimizer_transfer"] = opts
        return out

    # -- baselines (SPEC 5) ---------------------------------------------------
    def run_baseline(self) -> dict:
        cfg, data = self.cfg, self.data
        t0 = time.perf_counter()
        extra = {}
        if cfg.method == "baseline-kd":
            # Knowledge distillation: a teacher trained on the target set labels the base
            # examples in the target's classes, so cross-dataset needs no class remapping.
            from .kd import kd_labels

            labels, extra["teacher"] = kd_labels(cfg, data, self.arch)
            self._emit("teacher", **extra["teacher"])
        else:
            if cfg.data.source == cfg.data.target or cfg.data.source == "fake":
                classes = data.base_original_labels
            else:
                classes = remap_classes(data.base_original_labels, data.num_classes)
            extra["remapped_labels"] = classes
            smoothing = cfg.evaluate.label_smoothing if cfg.method == "baseline-ls" else 0.0
            labels = one_hot(classes, data.num_classes, smoothing).to(self.device)
        grid = step_grid(cfg.data.num_base_examples)
        val = train_and_evaluate(self.recipe, data.base_x, labels, self._seeds("val", count=1), grid[-1],
                                 data.val_x, data.val_y, eval_steps=grid)
        val_errors = val.errors[:, 0].tolist()
        best = min(range(len(grid)), key=lambda i: (val_errors[i], -i))
        num_steps = grid[best]
        self.history = [{"num_steps": s, "val_error": e, "val_loss": l}
                        for s, e, l in zip(grid, val_errors, val.losses[:, 0].tolist())]
        self._emit("step_search", num_steps=num_steps, val_error=val_errors[best])
        self.train_seconds = time.perf_counter() - t0
        return {"labels": labels, "num_steps": num_steps, "val_error": val_errors[best],
                "images": data.base_x, **extra}

    # -- meta-learning (SPEC 4) -----------------------------------------------
    def setup_distillation(self) -> None:
        cfg, data = self.cfg, self.data
        t = cfg.distill
        if cfg.method.startswith("ld-"):
            labels = uniform_labels(data.base_x.shape[0], data.num_classes, self.device)
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
        self.tracker = ResetTracker(stats_gap(cfg, data))
        self.order_gen = generator(cfg.seed, "target_order")
        self.inner_gen = generator(cfg.seed, "inner")
        self.epoch = 0
        self.best = {"val_error": math.inf, "epoch": 0, "num_steps": self.tracker.num_steps,
                     "param": self.distilled.param.detach().clone()}

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
        }

    def load_state_dict(self, state: dict) -> None:
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

    def validate(self) -> tuple[float, float]:
        images, labels = self.distilled.current()
        res = train_and_evaluate(self.recipe, images, labels, self._seeds("val", self.epoch, count=1),
                                 self.tracker.num_steps, self.data.val_x, self.data.val_y)
        return float(res.errors[0, 0]), float(res.losses[0, 0])

    def run_epoch(self) -> dict:
        cfg, data = self.cfg, self.data
        n_target = data.target_x.shape[0]
        bs, ib = cfg.distill.batch_size, cfg.inner_batch_size
        n_base = data.base_x.shape[0]
        order = torch.randperm(n_target, generator=self.order_gen).to(self.device)
        sums = torch.zeros(3, device=self.device)
        batches = 0
        for start in range(0, n_target, bs):
            sel = order[start:start + bs]
            x_t, y_t = data.target_x[sel], data.target_y[sel]  # target minibatch x_t, y_t
            idx = torch.randperm(n_base, generator=self.inner_gen)[:ib].to(self.device)  # inner minibatch
            outer, error, inner = self.learner.step(self.distilled, self.meta_opt, x_t, y_t, idx)
            sums += torch.stack([outer, error, inner])
            batches += 1
            if self.tracker.update(float(error)):
                self.num_resets += 1
                self.learner.reset(derive_seed(cfg.seed, "online", self.num_resets))
        outer, error, inner = (sums / batches).tolist()
        if not all(math.isfinite(v) for v in (outer, inner)) or not bool(torch.isfinite(self.distilled.param).all()):
            raise RunError(f"non-finite values at epoch {self.epoch + 1} (meta loss {outer}, model loss {inner}); "
                           "the last checkpoint is intact: lower distill.label_lr or distill.model_lr and resume "
                           "with --set, or start again")
        return {"train_error": error, "train_loss": outer, "meta_loss": outer, "model_loss": inner,
                "num_steps": self.tracker.num_steps, "num_resets": self.num_resets}

    def distill(self, checkpoint: dict | None = None) -> dict:
        cfg = self.cfg
        self.setup_distillation()
        if checkpoint is not None:
            self.load_state_dict(checkpoint)
            self._emit("resumed", epoch=self.epoch)
        epochs = cfg.distill.epochs
        while self.epoch < epochs:
            t0 = time.perf_counter()
            record = self.run_epoch()
            self.epoch += 1
            if self.epoch % cfg.distill.validate_every == 0 or self.epoch == epochs:
                val_error, val_loss = self.validate()
                record.update(val_error=val_error, val_loss=val_loss)
                if val_error <= self.best["val_error"]:  # ties go to the later labels
                    self.best = {"val_error": val_error, "epoch": self.epoch,
                                 "num_steps": self.tracker.num_steps,
                                 "param": self.distilled.param.detach().clone()}
            self.train_seconds += time.perf_counter() - t0
            record = {"epoch": self.epoch, **record, "seconds": self.train_seconds}
            self.history.append(record)
            self._emit("epoch", **record)
            every = cfg.distill.checkpoint_every
            if self.run_dir is not None and every and (self.epoch % every == 0 or self.epoch == epochs):
                self.run_dir.save_checkpoint(self.state_dict())
        best = self.best
        if self.distilled.kind == "labels":
            images, labels = self.data.base_x, best["param"]
        else:
            images, labels = self.data.normalize(best["param"]), self.distilled.labels.detach()
        return {"images": images, "labels": labels, "num_steps": best["num_steps"],
                "val_error": best["val_error"], "best_epoch": best["epoch"],
                "pixels": best["param"] if self.distilled.kind == "images" else None}


def _accuracy_summary(errors: list[float]) -> dict:
    acc = [100.0 - e for e in errors]
    mean, std = summarize(acc)
    return {"test_accuracy": acc, "test_accuracy_mean": mean, "test_accuracy_std": std,
            "test_error": list(errors), "test_error_mean": 100.0 - mean}


def run_experiment(cfg: Config, out: str | None = None, device: str | None = None, root: str | None = None,
                   progress: Progress | None = None, resume: bool = False, overwrite: bool = False) -> dict:
    """Run one experiment; with `out`, write it to the directory `out/<run name>`."""
    dev = resolve_device(device or cfg.device)
    run_dir = RunDir(f"{out}/{cfg.run_name}") if out else None
    checkpoint = None
    if run_dir is not None:
        checkpoint = _prepare_run_dir(run_dir, cfg, resume, overwrite)
    data = prepare(cfg, dev, root=root)
    exp = Experiment(cfg, data, dev, run_dir, progress)
    if cfg.is_baseline:
        found = exp.run_baseline()
    else:
        found = exp.distill(checkpoint)
    t0 = time.perf_counter()
    tested = exp.test(found["images"], found["labels"], found["num_steps"])
    test_seconds = time.perf_counter() - t0
    result = {
        "name": cfg.run_name, "method": cfg.method, "source": cfg.data.source, "target": cfg.data.target,
        "arch": exp.arch, "num_base_examples": cfg.data.num_base_examples, "seed": cfg.seed,
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
    }
    if "remapped_labels" in found:
        result["base_remapped_labels"] = found["remapped_labels"]
    if "teacher" in found:
        result["teacher"] = found["teacher"]
    if found.get("pixels") is not None:
        result["synthetic_pixels_shape"] = list(found["pixels"].shape)
    if run_dir is not None:
        if found.get("pixels") is not None:
            torch.save(found["pixels"].cpu(), run_dir.path / "synthetic_images.pt")
        from .artifact import CARD_FILE, save_run_artifact

        # The portable distilled dataset, written before the result marks the run finished.
        save_run_artifact(run_dir.path, cfg, data, exp.recipe, found, result)
        result["artifact"] = CARD_FILE
        run_dir.write_result(result)
        run_dir.checkpoint_path.unlink(missing_ok=True)
        exp._emit("finished", test_accuracy_mean=result["test_accuracy_mean"],
                  test_accuracy_std=result["test_accuracy_std"])
    return result


def _class_name(data: TaskData, c: int) -> str:
    names = data.source.class_names
    return names[c] if 0 <= c < len(names) and data.origin != "fake" else "noise"


def _prepare_run_dir(run_dir: RunDir, cfg: Config, resume: bool, overwrite: bool) -> dict | None:
    """Refuse to clobber a finished run; load a checkpoint of the same config when resuming."""
    resolved = config_mod.to_dict(cfg)
    if run_dir.is_finished() and not overwrite:
        raise RunError(f"{run_dir.path} holds a finished run; choose another --out or name, or pass --overwrite")
    checkpoint = None
    if overwrite:
        for f in run_dir.path.glob("*"):
            if f.is_file():
                f.unlink()
    elif run_dir.path.exists() and (run_dir.path / "config.json").exists():
        if not resume:
            raise RunError(f"{run_dir.path} holds an unfinished run; pass --resume to continue it or --overwrite "
                           "to start again")
        saved = run_dir.read_config()
        if saved != resolved:
            changed = sorted(k for k in _flat(saved).keys() | _flat(resolved).keys()
                             if _flat(saved).get(k) != _flat(resolved).get(k))
            raise RunError(f"the checkpoint in {run_dir.path} is from a different config (differs in: "
                           f"{', '.join(changed)}); resume with the same config or use another --out")
        checkpoint = run_dir.load_checkpoint()
    run_dir.write_config(resolved)
    return checkpoint


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
