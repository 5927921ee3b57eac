"""`method: auto` (methods/auto.py): recipes tried one setting at a time and chosen on the validation
split within a time budget; only the chosen recipe is tested, and it gives what it gives alone."""
from __future__ import annotations

import pytest
import torch

from labeldistill import config as C
from labeldistill import experiment, kd
from labeldistill.errors import ConfigError
from labeldistill.experiment import run_experiment
from labeldistill.methods import auto, choose, direct

TINY = {"data.source": "mnist5k", "data.target": "mnist5k", "data.num_base_examples": 20,
        "data.target_set_size": 600, "evaluate.num_test_models": 2, "evaluate.num_val_models": 1,
        "evaluate.step_grid": [50, 100], "evaluate.test_optimizers": [], "evaluate.label_temperatures": [1.0],
        "teacher.train_epochs": 1, "solve.num_networks": 2, "solve.target_size": 500}
# Every label maker with and without views, then two mixes and two learner augments for the best
AUTO = {"method": "auto", "auto.methods": ["baseline-ls", "label-solve", "baseline-kd"],
        "auto.views_per_image": [0, 2], "auto.mixes": ["cutmix", "mixup"], "auto.view_strengths": [1.0],
        "auto.num_teachers": [1], "auto.augment": [0, 1], "auto.teacher_schedules": ["constant"],
        "auto.teacher_temperatures": [1.0, 4.0]}


def tiny(**overrides) -> C.Config:
    return C.apply(C.Config(), {**TINY, **AUTO, **overrides})


def run(cfg: C.Config) -> dict:
    return run_experiment(cfg, device="cpu", handle_signals=False)


@pytest.fixture(scope="module")
def watched():
    """One auto run with spies on what the test models and the validation models are trained on."""
    seen = {"test": [], "val_eval_x": [], "data": None, "search_runs": 0, "direct_runs": 0}
    real_prepare, real_test_train = experiment.prepare, experiment.train_and_evaluate
    real_val_train, real_search_run, real_direct = choose.train_and_evaluate, auto.Search.run, direct.run_direct

    def prepare(*args, **kw):
        seen["data"] = real_prepare(*args, **kw)
        return seen["data"]

    def test_train(recipe, base_x, labels, seeds, num_steps, eval_x, eval_y, **kw):
        if eval_x is seen["data"].test_x:
            seen["test"].append(labels.clone())
        return real_test_train(recipe, base_x, labels, seeds, num_steps, eval_x, eval_y, **kw)

    def val_train(recipe, base_x, labels, seeds, num_steps, eval_x, eval_y, **kw):
        seen["val_eval_x"].append(eval_x)
        return real_val_train(recipe, base_x, labels, seeds, num_steps, eval_x, eval_y, **kw)

    def search_run(self, s):
        seen["search_runs"] += 1
        return real_search_run(self, s)

    def run_direct(ctx, candidates):
        seen["direct_runs"] += 1
        return real_direct(ctx, candidates)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(experiment, "prepare", prepare)
        mp.setattr(experiment, "train_and_evaluate", test_train)
        mp.setattr(choose, "train_and_evaluate", val_train)
        mp.setattr(auto.Search, "run", search_run)
        mp.setattr(direct, "run_direct", run_direct)
        cfg = tiny()
        result = run(cfg)
    return cfg, result, seen


def test_the_chosen_recipe_alone_gives_the_auto_runs_labels_steps_and_accuracies(watched):
    cfg, result, _ = watched
    a = result["auto"]
    alone_cfg = C.apply(cfg, a["chosen_overrides"])
    assert alone_cfg.method == a["chosen_settings"]["method"] != "auto"
    alone = run(alone_cfg)
    assert torch.equal(alone["labels"], result["labels"])
    assert alone["num_steps"] == result["num_steps"]
    assert alone["val_error"] == result["val_error"]
    assert alone["test_accuracy"] == result["test_accuracy"]
    assert alone.get("views") == result.get("views") and alone["storage"] == result["storage"]


@pytest.mark.parametrize("maker", ["baseline-kd", "label-solve"])
def test_a_recipe_that_reuses_the_runs_teachers_or_moments_gives_what_it_gives_first(maker):
    """The recipe with views takes the teachers (label solving's target moments) from the run's cache,
    put there by the recipe without views: it must choose what it chooses when it runs first."""
    pair = run(tiny(**{"auto.methods": [maker], "auto.views_per_image": [0, 2], "auto.augment": [0],
                        "auto.mixes": ["cutmix"]}))
    first = run(tiny(**{"auto.methods": [maker], "auto.views_per_image": [2], "auto.augment": [0],
                         "auto.mixes": ["cutmix"]}))
    reused = next(r for r in pair["auto"]["recipes"] if r["name"] == first["auto"]["chosen"])
    alone = first["auto"]["recipes"][0]
    for key in ("val_error", "num_steps", "temperature"):
        assert reused.get(key) == alone.get(key), key
    if pair["auto"]["chosen"] == reused["name"]:
        assert torch.equal(pair["labels"], first["labels"])


def test_only_the_chosen_recipe_is_tested(watched):
    cfg, result, seen = watched
    # The test models trained on the chosen labels alone (as stored), once
    assert len(seen["test"]) == 1 and torch.equal(seen["test"][0], result["labels"])
    assert len(result["test_accuracy"]) == cfg.evaluate.num_test_models
    # Recipes were chosen among on the validation split, never the test split
    assert seen["val_eval_x"] and all(x is seen["data"].val_x for x in seen["val_eval_x"])
    for recipe in result["auto"]["recipes"]:
        assert not [k for k in recipe if k.startswith("test")], recipe["name"]


def test_the_lowest_validation_error_wins_and_every_recipe_is_listed_once(watched):
    _, result, seen = watched
    a = result["auto"]
    recipes = a["recipes"]
    ran = [r for r in recipes if r["val_error"] is not None]
    for r in recipes:
        assert (r["val_error"] is not None and r["seconds"] > 0 and "skipped" not in r) or r["skipped"], r
    lowest = min(r["val_error"] for r in ran)
    assert a["chosen"] == next(r["name"] for r in ran if r["val_error"] == lowest)
    assert result["val_error"] == lowest
    names = [r["name"] for r in recipes]
    assert len(set(names)) == len(names)
    assert len({tuple(sorted((k, str(v)) for k, v in r.items() if k in a["chosen_settings"] or k in
                             ("mix", "view_strength", "num_teachers", "teacher_schedule"))) for r in recipes}) \
        == len(recipes)
    # Some recipes were reached twice (a setting's value equal to the best's), each ran once
    assert seen["search_runs"] > len(recipes)
    assert seen["direct_runs"] == len(ran)
    # 3 makers x (no views, 2 views), then mixup and 1 px translations for the best
    assert len(recipes) == 8


def test_ties_go_to_the_first_recipe():
    search = auto.Search.__new__(auto.Search)
    search.trials = [auto.Trial("a", {}, val_error=20.0, seconds=1.0), auto.Trial("b", {}, skipped="time"),
                     auto.Trial("c", {}, val_error=10.0, seconds=1.0), auto.Trial("d", {}, val_error=10.0, seconds=1.0)]
    assert search.best().name == "c"


class Clock:
    """perf_counter for methods/auto.py: time passes only when a recipe runs (`seconds_per_recipe`)."""

    def __init__(self, seconds_per_recipe: float):
        self.now, self.step = 1000.0, seconds_per_recipe

    def perf_counter(self) -> float:
        return self.now


def clocked(monkeypatch, seconds_per_recipe: float) -> Clock:
    clock = Clock(seconds_per_recipe)
    real_direct = direct.run_direct

    def run_direct(ctx, candidates):
        out = real_direct(ctx, candidates)
        clock.now += clock.step
        return out

    monkeypatch.setattr(auto, "time", clock)
    monkeypatch.setattr(direct, "run_direct", run_direct)
    return clock


def test_recipes_past_the_time_budget_are_skipped_and_the_best_that_ran_is_chosen(monkeypatch):
    clocked(monkeypatch, 100.0)
    # No estimate for the first recipe without and with views: both run (200 s); the next one of
    # the same maker with views would need 100 s more than the 50 s left.
    result = run(tiny(**{"auto.methods": ["baseline-ls"], "auto.time_budget": 250}))
    recipes = result["auto"]["recipes"]
    assert [r["seconds"] for r in recipes[:2]] == [100.0, 100.0]
    assert len(recipes) > 2
    for r in recipes[2:]:
        assert r["val_error"] is None and r["seconds"] is None
        assert r["skipped"] == "about 100 s needed, 50 s of auto.time_budget left"
    best = min(recipes[:2], key=lambda r: r["val_error"])
    assert result["auto"]["chosen"] == best["name"] and result["val_error"] == best["val_error"]
    assert "test_accuracy_mean" in result


def test_a_budget_no_recipe_fits_is_a_one_line_error(monkeypatch, tmp_path):
    from labeldistill.cli import main

    clock = clocked(monkeypatch, 100.0)
    real_init = auto.Search.__init__

    def late_start(self, ctx):  # the budget is spent before the first recipe
        real_init(self, ctx)
        clock.now += 10.0

    monkeypatch.setattr(auto.Search, "__init__", late_start)
    with pytest.raises(ConfigError) as err:
        run(tiny(**{"auto.time_budget": 5}))
    assert "could run none of its recipes" in str(err.value) and "\n" not in str(err.value)


@pytest.fixture
def trained(monkeypatch):
    """The schedules of the teachers trained, in order."""
    seen = []
    real = kd.train_teacher

    def train_teacher(*args, **kw):
        seen.append(kw["schedule"])
        return real(*args, **kw)

    monkeypatch.setattr(kd, "train_teacher", train_teacher)
    return seen


def test_teachers_are_trained_once_for_recipes_that_differ_in_views(trained):
    result = run(tiny(**{"auto.methods": ["baseline-kd"], "auto.mixes": ["cutmix", "mixup"]}))
    recipes = result["auto"]["recipes"]
    assert len({r["views_per_image"] for r in recipes}) == 2 and len(recipes) >= 3
    assert trained == ["constant"]


def test_each_teacher_schedule_trains_its_own_teacher(trained):
    result = run(tiny(**{"auto.methods": ["baseline-kd"], "auto.views_per_image": [0],
                         "auto.teacher_schedules": ["constant", "cosine"], "auto.augment": [0, 1]}))
    schedules = [r["teacher_schedule"] for r in result["auto"]["recipes"]]
    assert sorted(set(schedules)) == ["constant", "cosine"] and len(schedules) >= 3
    assert sorted(trained) == ["constant", "cosine"]


TINY_YAML = """\
method: auto
data: {source: mnist5k, target: mnist5k, num_base_examples: 20}
"""


@pytest.mark.parametrize("override, words", [
    ("views.per_image=2", "views.per_image=0"),
    ("auto.methods=[baseline-kdd]", "'baseline-kdd' is not a label maker"),
    ("auto.methods=[ld-rr]", "'ld-rr' is not a label maker"),
    ("auto.methods=[auto]", "'auto' is not a label maker"),
    ("auto.methods=[]", "auto.methods must name at least one"),
    ("auto.views_per_image=[]", "auto.views_per_image must list"),
    ("auto.views_per_image=[-2]", "auto.views_per_image holds counts"),
    ("auto.mixes=[]", "auto.mixes must list"),
    ("auto.mixes=[blend]", "auto.mixes: unknown blend"),
    ("auto.view_strengths=[0]", "auto.view_strengths must be positive"),
    ("auto.num_teachers=[0]", "auto.num_teachers must be at least 1"),
    ("auto.augment=[]", "auto.augment must list"),
    ("auto.teacher_schedules=[]", "auto.teacher_schedules must list"),
    ("auto.teacher_schedules=[linear]", "auto.teacher_schedules must list some of constant, cosine"),
    ("auto.teacher_temperatures=[0,1]", "auto.teacher_temperatures must be positive"),
    ("auto.time_budget=0", "auto.time_budget must be a positive"),
    ("auto.time_budget=-5", "auto.time_budget must be a positive"),
])
def test_bad_auto_configs_are_one_line_errors(tmp_path, capsys, override, words):
    from labeldistill.cli import main

    path = tmp_path / "auto.yaml"
    path.write_text(TINY_YAML)
    code = main(["run", str(path), "--set", override, "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code != 0
    assert err.startswith("labeldistill: error:") and err.count("\n") == 1 and "Traceback" not in err
    assert words in err
    assert not list((tmp_path / "runs").glob("*/result.json"))


def test_the_runs_chosen_settings_at_the_edge_of_their_grids_are_reported(watched):
    cfg, result, _ = watched
    a = result["auto"]
    chosen = a["chosen_settings"]
    grids = {"views_per_image": cfg.auto.views_per_image, "augment": cfg.auto.augment}
    for key, grid in grids.items():
        said = f"{key}={chosen[key]} is the largest tried" in a["at_edge"]
        assert said == (chosen[key] == max(grid)), (key, a["at_edge"])
    said = any(e.startswith(f"num_steps={result['num_steps']} is the largest") for e in a["at_edge"])
    assert said == (result["num_steps"] == max(cfg.evaluate.step_grid))


def search_for(cfg: C.Config) -> auto.Search:
    import labeldistill as ld

    data = ld.prepare(cfg)
    return auto.Search(experiment.Experiment(cfg, data, torch.device("cpu")).context())


def chosen(search: auto.Search, settings: dict, num_steps: int, label_choice: dict) -> auto.Trial:
    from labeldistill.methods import MethodOutput

    base_x = search.ctx.data.base_x
    out = MethodOutput(labels=torch.zeros(len(base_x), 10), images=base_x, num_steps=num_steps, val_error=10.0,
                       recipe=search.ctx.recipe, info={"label_choice": label_choice})
    return auto.Trial("chosen", settings, val_error=10.0, seconds=1.0, output=out)


def test_settings_at_the_edge_of_their_grids_are_reported():
    cfg = tiny(**{"auto.views_per_image": [0, 2, 4], "auto.view_strengths": [0.5, 1.0, 2.0],
                  "auto.num_teachers": [1, 3], "auto.augment": [0, 2], "auto.teacher_temperatures": [1.0, 2.0, 4.0],
                  "evaluate.step_grid": [50, 100], "evaluate.label_temperatures": []})
    search = search_for(cfg)
    kd_settings = {"method": "baseline-kd", "views_per_image": 4, "mix": "cutmix", "view_strength": 2.0,
                   "num_teachers": 3, "teacher_schedule": "constant", "augment": 2}
    edges = search.edges(chosen(search, kd_settings, 100, {"temperature": 4.0}))
    assert edges == ["view_strength=2.0 is the largest tried", "num_teachers=3 is the largest tried",
                     "augment=2 is the largest tried", "views_per_image=4 is the largest tried",
                     "num_steps=100 is the largest step count searched (evaluate.step_grid)",
                     "temperature=4 is at the edge of the temperatures tried"]
    # one teacher and no translations are the least there is: at no edge
    inside = {**kd_settings, "view_strength": 1.0, "num_teachers": 1, "augment": 0, "views_per_image": 2}
    assert search.edges(chosen(search, inside, 50, {"temperature": 2.0})) == []
    assert search.edges(chosen(search, {**inside, "view_strength": 0.5}, 50, {"temperature": 1.0})) == [
        "view_strength=0.5 is the smallest tried", "temperature=1 is at the edge of the temperatures tried"]
    # the storage budget's most views (-1) is no edge a wider grid could move
    search = search_for(C.apply(cfg, {"auto.views_per_image": [0, -1]}))
    most = {**inside, "views_per_image": search.budget_views}
    assert search.budget_views == 19 and search.edges(chosen(search, most, 50, {"temperature": 2.0})) == []
    # label solving's temperatures (its own when evaluate.label_temperatures is empty) and lambdas
    solve = {"method": "label-solve", "views_per_image": 0, "augment": 0}
    search = search_for(C.apply(cfg, {"solve.ridge_lambdas": [0.001, 0.1]}))
    assert search.edges(chosen(search, solve, 50, {"temperature": 0.1, "ridge_lambda": 0.1})) == [
        "temperature=0.1 is at the edge of the temperatures tried",
        "ridge_lambda=0.1 is at the edge of solve.ridge_lambdas"]


def test_a_recipe_that_fails_is_skipped_and_the_others_are_kept():
    # A teacher at lr 50 does not learn: its recipes cannot run, the true-label ones still count
    result = run(tiny(**{"auto.methods": ["baseline-ls", "baseline-kd"], "teacher.train_lr": 50.0}))
    recipes = {r["name"]: r for r in result["auto"]["recipes"]}
    failed = [r for r in recipes.values() if r["method"] == "baseline-kd"]
    assert len(failed) == 2 and all("the teacher diverged or did not learn" in r["skipped"] for r in failed)
    assert all(r["val_error"] is None and r["seconds"] is None for r in failed)
    assert result["auto"]["chosen_settings"]["method"] == "baseline-ls" and "test_accuracy_mean" in result


def test_the_artifact_of_an_auto_run_retrains_on_the_chosen_views_to_its_accuracies(tmp_path):
    from labeldistill.artifact import evaluate_artifact, load_distilled

    cfg = tiny(**{"auto.methods": ["baseline-ls"], "auto.views_per_image": [2], "auto.mixes": ["mixup"],
                  "auto.augment": [1], "name": "a"})
    result = run_experiment(cfg, out=str(tmp_path), device="cpu", handle_signals=False)
    assert result["auto"]["chosen_settings"] == {"method": "baseline-ls", "views_per_image": 2, "mix": "mixup",
                                                 "view_strength": 1.0, "augment": 1}
    ds = load_distilled(tmp_path / "a")
    assert ds.views is not None and len(ds.views.params.sources) == 40 and ds.views.spec.mix == "mixup"
    assert torch.equal(ds.labels, result["labels"]) and ds.recipe.augment == 1
    again = evaluate_artifact(ds)
    assert again["test_accuracy"] == result["test_accuracy"] and again["recipe"]["num_steps"] == result["num_steps"]


def test_every_recipe_lies_within_the_auto_grids():
    """The run's own evaluate.augment and views.mix are not in the grids: no recipe uses them."""
    result = run(tiny(**{"auto.methods": ["baseline-ls"], "auto.mixes": ["mixup"], "auto.augment": [1],
                         "auto.view_strengths": [1.5], "evaluate.augment": 2, "views.mix": "cutmix"}))
    recipes = result["auto"]["recipes"]
    assert [r["views_per_image"] for r in recipes] == [0, 2]
    assert all(r["augment"] == 1 for r in recipes)
    assert recipes[1]["mix"] == "mixup" and recipes[1]["view_strength"] == 1.5
    assert result["learner"]["augment"] == 1


def test_label_solving_gets_the_random_networks_its_views_need_and_the_budget_caps_the_views():
    # 20 images x 5 views = 100 examples > 84 features of one LeNet: two networks (a quarter more features)
    result = run(tiny(**{"auto.methods": ["label-solve"], "auto.views_per_image": [5], "auto.mixes": ["cutmix"],
                         "auto.augment": [0], "solve.num_networks": 1}))
    (recipe,) = result["auto"]["recipes"]
    assert recipe["val_error"] is not None and result["auto"]["chosen_overrides"]["solve.num_networks"] == 2
    assert result["solve"]["num_networks"] == 2 and result["storage"]["num_labels"] == 100
    # -1: as many views as the storage budget allows (28x28 uint8 images, 10 float16 labels: 39); a
    # count over the budget is skipped with the budget's reason
    result = run(tiny(**{"auto.methods": ["baseline-ls"], "auto.views_per_image": [-1, 40], "auto.mixes": ["cutmix"],
                         "auto.augment": [0], "storage.label_dtype": "float16"}))
    first, over = result["auto"]["recipes"]
    assert first["views_per_image"] == 39 and first["val_error"] is not None
    assert over["views_per_image"] == 40 and over["val_error"] is None and "budget" in over["skipped"]


def test_an_ensemble_after_one_teacher_trains_only_the_teachers_it_lacks(trained):
    """Member 0 of an ensemble is the single teacher (kd.teacher_seed): three after one train two."""
    result = run(tiny(**{"auto.methods": ["baseline-kd"], "auto.views_per_image": [0],
                         "auto.teacher_schedules": ["constant"], "auto.num_teachers": [1, 3], "auto.augment": [0]}))
    assert [r.get("num_teachers") for r in result["auto"]["recipes"]] == [1, 3]
    assert trained == ["constant"] * 3
