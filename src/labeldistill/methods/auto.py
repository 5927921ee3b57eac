"""`method: auto`: the recipe chosen on the validation split, within a time budget (issue 19).

A recipe is a label maker (true labels, label solving, teacher labels, ...)
with its settings: views per image (none, or as many as the storage budget
allows), how views are mixed and how strongly they are transformed, the number
of teachers, and the learner's translations. Trying every combination costs
too much, so the settings are tried one at a time (coordinate descent):

1. every label maker of `auto.methods` with every `auto.views_per_image` (the other
   settings at the first value of their lists);
2. for the best so far: every `auto.mixes`, then every `auto.view_strengths`
   (when it has views), every `auto.teacher_schedules` and `auto.num_teachers`
   (teacher labels), every `auto.augment`.

Label solving gets as many random networks as its kernel needs for the
examples it labels (a quarter more features than examples).

Each recipe runs as its method would run alone: its own candidates
(temperatures, ridge lambdas) and the number of steps are chosen on the
validation split, and the recipe's validation error is that of its choice.
The recipe with the lowest validation error wins (the first on ties); only it
is tested. A recipe whose estimated time exceeds what is left of
`auto.time_budget` is skipped and listed as such; the estimate is the time the
most similar recipe already took (same method, with or without views) without
training teachers, plus the teachers it still needs at the last teacher's
time. Trained teachers (one by one) and label solving's pass over the target
set are shared between recipes.

The result lists every recipe with its settings, validation error and time, and
which chosen settings lie at the edge of what was tried.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field, replace

from ..budget import max_labels_per_image
from ..config import apply as apply_overrides
from ..data import with_config_views
from ..errors import ConfigError, RunError, did_you_mean
from ..evaluate import Recipe, init_model
from ..kd import SCHEDULES, TEACHER_SECONDS, TEACHERS_TOTAL, untrained_teachers
from ..views import MIXES
from .label_solve import SOLVE_TEMPERATURES
from .lookup import get_method
from .protocol import MethodContext, MethodOutput
from .registry import Method, list_methods, register_method


@dataclass
class Trial:
    name: str
    settings: dict  # what this recipe sets: method, views per image, mix, strength, teachers, augment
    val_error: float | None = None
    seconds: float | None = None
    skipped: str | None = None  # why it did not run
    label_seconds: float = 0.0  # seconds without training teachers (shared by later recipes)
    output: MethodOutput | None = field(default=None, repr=False)

    def as_dict(self) -> dict:
        out = {"name": self.name, **self.settings, "val_error": self.val_error, "seconds": self.seconds}
        if self.output is not None:
            out["num_steps"] = self.output.num_steps
            choice = self.output.info.get("label_choice") or {}
            for k in ("temperature", "ridge_lambda", "smoothing"):
                if k in choice:
                    out[k] = choice[k]
        if self.skipped:
            out["skipped"] = self.skipped
        return out


def validate(cfg) -> None:
    a = cfg.auto
    if not a.time_budget > 0:
        raise ConfigError(f"auto.time_budget must be a positive number of seconds, got {a.time_budget}")
    if cfg.views.per_image:
        raise ConfigError("method auto chooses the views itself (auto.views_per_image); set views.per_image=0 "
                          "and list the counts to try in auto.views_per_image")
    direct = [m.name for m in list_methods() if m.kind == "direct"]
    if not a.methods:
        raise ConfigError(f"auto.methods must name at least one label maker; known: {', '.join(direct)}")
    for name in a.methods:
        if name not in direct:
            raise ConfigError(f"auto.methods: '{name}' is not a label maker auto can try"
                              f"{did_you_mean(name, direct)}; known: {', '.join(direct)}")
        method = get_method(name)
        if method.validate is not None:
            method.validate(cfg)
    for key, values in (("views_per_image", a.views_per_image), ("mixes", a.mixes),
                        ("view_strengths", a.view_strengths), ("num_teachers", a.num_teachers),
                        ("augment", a.augment)):
        if not values:
            raise ConfigError(f"auto.{key} must list at least one value")
    if any(k < -1 for k in a.views_per_image):
        raise ConfigError(f"auto.views_per_image holds counts >= 0, or -1 for the budget's most, got "
                          f"{list(a.views_per_image)}")
    bad = [m for m in a.mixes if m not in MIXES]
    if bad:
        raise ConfigError(f"auto.mixes: unknown {', '.join(bad)}; known: {', '.join(MIXES)}")
    if any(not 0 < s for s in a.view_strengths) or any(s * cfg.views.scale >= 1 for s in a.view_strengths):
        raise ConfigError(f"auto.view_strengths must be positive and keep views.scale times them below 1, got "
                          f"{list(a.view_strengths)}")
    bad = [x for x in a.teacher_schedules if x not in SCHEDULES]
    if bad or not a.teacher_schedules:
        raise ConfigError(f"auto.teacher_schedules must list some of {', '.join(SCHEDULES)}, got "
                          f"{list(a.teacher_schedules)}")
    if not all(t > 0 for t in a.teacher_temperatures):
        raise ConfigError(f"auto.teacher_temperatures must be positive (or empty: evaluate.label_temperatures), got "
                          f"{list(a.teacher_temperatures)}")
    if any(t < 1 for t in a.num_teachers) or any(x < 0 for x in a.augment):
        raise ConfigError("auto.num_teachers must be at least 1 and auto.augment 0 or more pixels")


class Search:
    def __init__(self, ctx: MethodContext):
        self.ctx = ctx
        self.cfg = ctx.cfg
        self.a = ctx.cfg.auto
        self.deadline = time.perf_counter() + self.a.time_budget
        self.trials: list[Trial] = []
        self.feature_dim = init_model(ctx.recipe, 0, ctx.data.channels, ctx.num_classes, ctx.data.image_size).feature_dim
        self.budget_views = max_labels_per_image(ctx.data.base_pixels, ctx.num_classes, ctx.cfg.storage.label_dtype,
                                                 ctx.cfg.storage.top_k)

    # -- one recipe ------------------------------------------------------------
    def views_count(self, k: int) -> int:
        return self.budget_views if k == -1 else k

    def overrides(self, s: dict) -> dict:
        v = self.cfg.views
        strength = s.get("view_strength", 1.0)
        out = {"method": s["method"], "views.per_image": s["views_per_image"], "views.mix": s.get("mix", v.mix),
               # the run's own views settings where a recipe has no views
               "views.rotate": min(v.rotate * strength, 180.0), "views.scale": v.scale * strength,
               "views.translate": min(v.translate * strength, 1.0),
               "evaluate.augment": s.get("augment", self.cfg.evaluate.augment)}
        if "num_teachers" in s:
            out["teacher.num_teachers"] = s["num_teachers"]
        if "teacher_schedule" in s:
            out["teacher.schedule"] = s["teacher_schedule"]
        if s["method"] == "baseline-kd" and self.a.teacher_temperatures:
            out["evaluate.label_temperatures"] = self.a.teacher_temperatures
        if s["method"] == "label-solve":
            # The kernel needs at least as many random features as examples to label; a quarter more
            # keeps it well conditioned.
            examples = self.ctx.data.base_x.shape[0] * max(s["views_per_image"], 1)
            need = math.ceil(1.25 * examples / self.feature_dim)
            if need > self.cfg.solve.num_networks:
                out["solve.num_networks"] = need
        return out

    def estimate(self, s: dict) -> float:
        """Seconds the recipe `s` will take: that of the most similar recipe already run (same
        method, with or without views), without the teachers it trained, plus the teachers `s`
        still needs at the last teacher's time; 0 for a method not run yet."""
        same = [t for t in self.trials if t.seconds is not None and t.settings["method"] == s["method"]
                and bool(t.settings["views_per_image"]) == bool(s["views_per_image"])]
        if not same:
            return 0.0
        need = 0.0
        if s["method"] == "baseline-kd":
            cfg = apply_overrides(self.cfg, self.overrides(s))
            need = untrained_teachers(cfg, self.ctx.arch, self.ctx.cache) * self.ctx.cache.get(TEACHER_SECONDS, 0.0)
        return same[-1].label_seconds + need

    def normal(self, s: dict) -> dict:
        """Every setting of recipe `s` spelled out (the run's own where auto leaves it), so that one
        recipe reached twice is run once; settings of views are left out without views."""
        k = self.views_count(s["views_per_image"])
        out = {"method": s["method"], "views_per_image": k}
        if k:
            out.update(mix=s.get("mix", self.cfg.views.mix), view_strength=s.get("view_strength", 1.0))
        if s["method"] == "baseline-kd":
            out.update(num_teachers=s.get("num_teachers", self.cfg.teacher.num_teachers),
                       teacher_schedule=s.get("teacher_schedule", self.cfg.teacher.schedule))
        out["augment"] = s.get("augment", self.cfg.evaluate.augment)
        return out

    def run(self, s: dict) -> Trial:
        s = self.normal(s)
        for t in self.trials:  # a recipe already tried (a setting's value equal to the current one)
            if t.settings == s:
                return t
        name = describe_settings(s)
        trial = Trial(name, s)
        self.trials.append(trial)
        left = self.deadline - time.perf_counter()
        need = self.estimate(s)
        if left <= 0 or need > left:
            trial.skipped = f"about {need:.0f} s needed, {max(left, 0):.0f} s of auto.time_budget left"
            self.ctx.emit("auto_skipped", recipe=name, reason=trial.skipped)
            return trial
        t0 = time.perf_counter()
        teachers_before = self.teacher_time()
        try:
            cfg = apply_overrides(self.cfg, self.overrides(s))
            method = get_method(s["method"])
            data = with_config_views(cfg, self.ctx.data)
            recipe = Recipe.from_config(cfg, self.ctx.arch, self.ctx.recipe.head)
            out = method.run(replace(self.ctx, cfg=cfg, data=data, recipe=recipe))
        # A recipe this data cannot run (label solving's rank, a teacher that did not learn, validation
        # models that all diverged): said, not fatal, so the recipes that ran are not lost
        except (ConfigError, RunError) as exc:
            trial.skipped = str(exc)
            self.ctx.emit("auto_skipped", recipe=name, reason=trial.skipped)
            return trial
        trial.seconds = time.perf_counter() - t0
        trial.label_seconds = trial.seconds - (self.teacher_time() - teachers_before)
        trial.val_error = out.val_error
        trial.output = out
        self.ctx.emit("auto_recipe", recipe=name, val_error=out.val_error, seconds=round(trial.seconds, 1))
        return trial

    def teacher_time(self) -> float:
        """Seconds spent training teachers so far (a recipe's own time is its time without them)."""
        return self.ctx.cache.get(TEACHERS_TOTAL, 0.0)

    def best(self) -> Trial | None:
        ran = [t for t in self.trials if t.val_error is not None]
        return min(ran, key=lambda t: t.val_error, default=None)  # min keeps the first on ties

    # -- the search --------------------------------------------------------------
    def search(self) -> Trial:
        a = self.a
        for m in a.methods:
            for k in a.views_per_image:
                # every other setting at the first value of its grid, so that no recipe tried (or
                # chosen) lies outside the grids
                s = {"method": m, "views_per_image": k, "mix": a.mixes[0], "view_strength": a.view_strengths[0],
                     "augment": a.augment[0]}
                if m == "baseline-kd":
                    s.update(num_teachers=a.num_teachers[0], teacher_schedule=a.teacher_schedules[0])
                self.run(s)
        best = self.best()
        if best is None:
            raise ConfigError("method auto could run none of its recipes (see the skipped reasons in the log); "
                              "raise auto.time_budget or change auto.methods")
        dims = []
        if best.settings["views_per_image"]:
            dims += [("mix", list(a.mixes)), ("view_strength", list(a.view_strengths))]
        if best.settings["method"] == "baseline-kd":
            dims += [("teacher_schedule", list(a.teacher_schedules)), ("num_teachers", list(a.num_teachers))]
        dims.append(("augment", list(a.augment)))
        for key, values in dims:
            current = self.best().settings
            for v in values:
                self.run({**current, key: v})
        return self.best()

    def edges(self, best: Trial) -> list[str]:
        """Chosen settings at the edge of what was tried (a wider grid might do better)."""
        out = []
        a = self.a
        grids = {"view_strength": a.view_strengths, "num_teachers": a.num_teachers, "augment": a.augment,
                 "views_per_image": [self.views_count(k) for k in a.views_per_image]}
        for key, grid in grids.items():
            if key in best.settings and len(set(grid)) > 1:
                value = best.settings[key]
                if value == max(grid) and not (key == "views_per_image" and value == self.budget_views):
                    out.append(f"{key}={value} is the largest tried")
                elif value == min(grid) and key != "augment" and value != LEAST.get(key, 0):
                    out.append(f"{key}={value} is the smallest tried")
        out_ = best.output
        grid = self.ctx.cfg.evaluate.step_grid
        steps = sorted(grid) if grid else [h["num_steps"] for h in out_.history]
        if steps and out_.num_steps == max(steps):
            out.append(f"num_steps={out_.num_steps} is the largest step count searched (evaluate.step_grid)")
        choice = out_.info.get("label_choice") or {}
        # The grids the recipe's own config offered (teacher labels try auto.teacher_temperatures,
        # label solving its own temperatures when evaluate.label_temperatures is empty)
        cfg = apply_overrides(self.cfg, self.overrides(best.settings))
        temps = cfg.evaluate.label_temperatures or (SOLVE_TEMPERATURES if best.settings["method"] == "label-solve"
                                                    else ())
        for key, grid, where in (("temperature", temps, "the temperatures tried"),
                                 ("ridge_lambda", cfg.solve.ridge_lambdas, "solve.ridge_lambdas")):
            if key in choice and len(set(grid)) > 1 and choice[key] in (min(grid), max(grid)):
                out.append(f"{key}={choice[key]:g} is at the edge of {where}")
        return out


# The least a setting can be: a choice there is at no edge a wider grid could move
LEAST = {"num_teachers": 1}


def describe_settings(s: dict) -> str:
    parts = [s["method"]]
    k = s["views_per_image"]
    parts.append(f"{k} views/image" if k else "no views")
    if k:
        parts.append(s["mix"])
        if s["view_strength"] != 1.0:
            parts.append(f"strength x{s['view_strength']:g}")
    if "num_teachers" in s:
        parts.append(f"{s['num_teachers']} teacher{'s' if s['num_teachers'] > 1 else ''}"
                     + (f" ({s['teacher_schedule']} lr)" if s.get("teacher_schedule", "constant") != "constant" else ""))
    if s.get("augment"):
        parts.append(f"translate {s['augment']} px")
    return ", ".join(p for p in parts if p)


def run(ctx: MethodContext) -> MethodOutput:
    search = Search(ctx)
    t0 = time.perf_counter()
    best = search.search()
    out = best.output
    info = dict(out.info)
    info["auto"] = {"chosen": best.name, "chosen_settings": best.settings,
                    "chosen_overrides": {k: v for k, v in search.overrides(best.settings).items()},
                    "time_budget": ctx.cfg.auto.time_budget, "seconds": round(time.perf_counter() - t0, 1),
                    "at_edge": search.edges(best),
                    "recipes": [t.as_dict() for t in search.trials],
                    "selection": "lowest validation error (the first on ties); only the chosen recipe is tested"}
    return dataclasses.replace(out, info=info, train_seconds=time.perf_counter() - t0,
                               history=[{**h, "recipe": best.name} for h in out.history])


def describe(result: dict) -> list[str]:
    chosen = (result.get("auto") or {}).get("chosen")
    return [f"chose {chosen}"] if chosen else []


# Reports list it after the built-in label makers it chooses among; the paper's methods lead.
register_method(Method("auto", "auto (chosen on validation)", "search", run, order=80, options="auto",
                       validate=validate, describe=describe,
                       summary="tries label makers, views and their settings; keeps the lowest validation error"))
