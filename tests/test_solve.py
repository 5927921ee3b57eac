"""Kernel label solving (label-solve), the learners it needs (mse loss, translations) and
the rule that direct methods choose on the validation split only."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from labeldistill import config as config_mod
from labeldistill.meta.loop import MetaLoop
from labeldistill.methods import check_config, choose, get_method
from labeldistill.methods import label_solve as label_solve_method
from labeldistill.methods.direct import start_from
from labeldistill.errors import ConfigError
from labeldistill.evaluate import (Recipe, training_loss, train_and_evaluate, train_and_evaluate_sequential,
                                   translate)
from labeldistill.solve import RandomFeatures, krr_predict, normal_equations, solve_labels


class LinearFeatures:
    """phi(x) = flatten(x) @ P: a plain feature map for checking the algebra."""

    def __init__(self, dim_in: int, dim: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.p = torch.randn(dim_in, dim, generator=g, dtype=torch.float64)

    def __call__(self, x, chunk=None):
        return x.reshape(x.shape[0], -1).double() @ self.p


def _problem(n=6, t=40, c=3, d=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 1, 3, 3, generator=g, dtype=torch.float64)
    target = torch.randn(t, 1, 3, 3, generator=g, dtype=torch.float64)
    ty = torch.randint(0, c, (t,), generator=g)
    return base, target, ty, LinearFeatures(9, d, seed)


def _reference_labels(features, base, target, ty, c, lam):
    """Explicit matrices: A = K_TS (K_SS + lam s I)^-1, Y_S = pinv(A) Y_T."""
    ps, pt = features(base), features(target)
    kss, kts = ps @ ps.T, pt @ ps.T
    r = kss + lam * kss.diagonal().mean() * torch.eye(len(base), dtype=torch.float64)
    a = kts @ torch.linalg.inv(r)
    return torch.linalg.pinv(a) @ torch.nn.functional.one_hot(ty, c).double(), a


@pytest.mark.parametrize("lam", [1e-3, 0.1, 2.0])
@pytest.mark.parametrize("chunk", [7, 1000])
def test_closed_form_equals_explicit_least_squares(lam, chunk):
    base, target, ty, feats = _problem()
    kss, gram, rhs = normal_equations(feats, base, target, ty, 3, chunk=chunk)
    got = solve_labels(kss, gram, rhs, lam)
    want, _ = _reference_labels(feats, base, target, ty, 3, lam)
    torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-8)


def test_objective_is_lowest_at_the_solution():
    base, target, ty, feats = _problem(seed=3)
    lam = 0.05
    kss, gram, rhs = normal_equations(feats, base, target, ty, 3)
    y = solve_labels(kss, gram, rhs, lam)
    _, a = _reference_labels(feats, base, target, ty, 3, lam)
    yt = torch.nn.functional.one_hot(ty, 3).double()

    def objective(labels):
        return float(((yt - a @ labels) ** 2).sum())

    best = objective(y)
    g = torch.Generator().manual_seed(1)
    for scale in (1e-4, 1e-2, 1.0):
        for _ in range(20):
            assert objective(y + scale * torch.randn(y.shape, generator=g, dtype=torch.float64)) > best
    # KRR from the solved labels predicts exactly what the least-squares fit predicts.
    torch.testing.assert_close(krr_predict(feats(target) @ feats(base).T, kss, y, lam), a @ y)


def test_krr_prediction_does_not_depend_on_lambda():
    base, target, ty, feats = _problem(seed=5)
    kss, gram, rhs = normal_equations(feats, base, target, ty, 3)
    kxs = feats(target) @ feats(base).T
    p1 = krr_predict(kxs, kss, solve_labels(kss, gram, rhs, 1e-3), 1e-3)
    p2 = krr_predict(kxs, kss, solve_labels(kss, gram, rhs, 3.0), 3.0)
    torch.testing.assert_close(p1, p2)
    assert not torch.allclose(solve_labels(kss, gram, rhs, 1e-3), solve_labels(kss, gram, rhs, 3.0))


def test_random_features_are_deterministic_for_a_seed():
    x = torch.randn(5, 1, 28, 28)
    a = RandomFeatures("lenet", 3, 11, 1, 10, 28)(x)
    b = RandomFeatures("lenet", 3, 11, 1, 10, 28)(x)
    c = RandomFeatures("lenet", 3, 12, 1, 10, 28)(x)
    assert a.shape == (5, 3 * 84) and a.dtype == torch.float64
    assert torch.equal(a, b) and not torch.equal(a, c)
    # chunking does not change the features
    torch.testing.assert_close(RandomFeatures("lenet", 3, 11, 1, 10, 28)(x, chunk=2), a)


def test_bad_lambda_and_rank_deficient_kernel_are_errors():
    base, target, ty, feats = _problem()
    kss, gram, rhs = normal_equations(feats, base, target, ty, 3)
    with pytest.raises(ConfigError, match="ridge_lambda must be positive"):
        solve_labels(kss, gram, rhs, 0.0)
    narrow = LinearFeatures(9, 4)  # 4 features for 6 base examples: labels not determined
    kss, gram, rhs = normal_equations(narrow, base, target, ty, 3)
    with pytest.raises(ConfigError, match="rank 4 on the 6 base examples"):
        solve_labels(kss, gram, rhs, 0.1)


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "labeldistill.cli", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize("override, message", [
    ("solve.ridge_lambdas=0", "solve.ridge_lambdas must be one or more positive numbers"),
    ("solve.ridge_lambdas=-1,0.1", "solve.ridge_lambdas must be one or more positive numbers"),
    ("solve.num_networks=0", "solve.num_networks must be at least 1"),
    ("evaluate.loss=l2", "unknown evaluate.loss 'l2'"),
    ("evaluate.augment=-1", "evaluate.augment must be 0"),
    ("evaluate.label_temperatures=0", "evaluate.label_temperatures must be positive"),
])
def test_bad_solver_settings_are_one_line_errors(tmp_path, override, message):
    p = _cli("run", "--set", "method=label-solve", "--set", override, "--out", str(tmp_path), cwd=tmp_path)
    assert p.returncode == 2 and message in p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_more_base_examples_than_features_is_a_one_line_error(tmp_path):
    # One LeNet gives 84 features: 100 base examples cannot all get determined labels.
    p = _cli("run", "--set", "method=label-solve", "--set", "solve.num_networks=1", "--set", "num_base_examples=100",
             "--set", "distill.inner_batch_size=10", "--out", str(tmp_path), cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    assert "84 features, fewer than the 100 base examples" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "label-solve_mnist5k_to_mnist5k_100be_0s" / "result.json").exists()


def test_label_solve_run_chooses_on_validation_only(tmp_path, monkeypatch):
    """The selection code (label making, candidate and step choice) never receives the test split."""
    import labeldistill as ld
    from labeldistill import experiment as distill

    cfg = config_mod.from_dict({"method": "label-solve", "data": {"source": "mnist5k", "target": "mnist5k",
                               "num_base_examples": 20},
                               "evaluate": {"num_test_models": 2, "step_grid": [20, 40],
                                            "label_temperatures": [0.3, 1.0]},
                               "solve": {"num_networks": 2, "target_size": 500}})
    seen = {"makers": [], "select": []}
    real_solve = label_solve_method.label_solve

    def solver(cfg, data, arch, progress=None, cache=None):
        seen["makers"].append(data.test_x)
        return real_solve(cfg, data, arch, progress, cache)

    real_train = choose.train_and_evaluate

    def spy(recipe, base_x, labels, seeds, num_steps, eval_x, eval_y, **kw):
        seen["select"].append(eval_x)
        return real_train(recipe, base_x, labels, seeds, num_steps, eval_x, eval_y, **kw)

    monkeypatch.setattr(label_solve_method, "label_solve", solver)
    monkeypatch.setattr(choose, "train_and_evaluate", spy)
    data = ld.prepare(cfg)
    exp = distill.Experiment(cfg, data, torch.device("cpu"))
    out = get_method("label-solve").run(exp.context())
    assert seen["makers"] == [None]
    assert len(seen["select"]) == 2 and all(x is data.val_x for x in seen["select"])
    assert out.info["label_choice"]["temperature"] in (0.3, 1.0) and out.num_steps in (20, 40)
    found = {"labels": out.labels}
    assert found["labels"].shape == (20, 10)
    torch.testing.assert_close(found["labels"].sum(1), torch.ones(20))


def test_mse_loss_and_translations_equal_the_sequential_loop():
    torch.manual_seed(0)
    bx = torch.randn(12, 1, 28, 28, dtype=torch.float64)
    lab = torch.randn(12, 10, dtype=torch.float64)
    ex, ey = torch.randn(30, 1, 28, 28, dtype=torch.float64), torch.randint(0, 10, (30,))
    for head in ("linear", "rr"):
        r = Recipe(arch="lenet", head=head, loss="mse", augment=2, batch_size=5)
        a = train_and_evaluate(r, bx, lab, [1, 2, 3], 6, ex, ey, eval_steps=[3, 6])
        b = train_and_evaluate_sequential(r, bx, lab, [1, 2, 3], 6, ex, ey, eval_steps=[3, 6])
        torch.testing.assert_close(a.losses, b.losses, rtol=1e-10, atol=1e-12)
    # translations change training: not the same models as without them
    plain = train_and_evaluate(Recipe(arch="lenet", head="rr", loss="mse", batch_size=5), bx, lab, [1, 2, 3], 6,
                               ex, ey)
    assert not torch.allclose(plain.losses, a.losses[-1:])


def test_translate_matches_a_plain_loop():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 2, 5, 6, generator=g)
    off = torch.randint(0, 5, (2, 3, 2), generator=g)
    got = translate(x, off, 2)
    for i in range(2):
        for j in range(3):
            img = x[i, j]
            p = torch.nn.functional.pad(img[None], (2, 2, 2, 2), mode="replicate")[0]
            r, c = off[i, j].tolist()
            torch.testing.assert_close(got[i, j], p[:, r:r + 5, c:c + 6])
    centre = torch.full((2, 3, 2), 2)
    assert torch.equal(translate(x, centre, 2), x)


def test_training_losses_against_plain_formulas():
    z, y = torch.randn(4, 3, dtype=torch.float64), torch.rand(4, 3, dtype=torch.float64)
    ce = sum(-(y[i] * torch.log_softmax(z[i], 0)).sum() for i in range(4)) / 4
    torch.testing.assert_close(training_loss(z, y, "ce"), ce)
    torch.testing.assert_close(training_loss(z, y, "mse"), torch.nn.functional.mse_loss(z, y))
    with pytest.raises(ValueError):
        training_loss(z, y, "hinge")


def test_card_records_the_learner_and_old_cards_still_load(tmp_path):
    from labeldistill.artifact import CARD_FILE, load_distilled

    cfg = config_mod.from_dict({"name": "ls", "method": "label-solve",
                                "data": {"source": "mnist5k", "target": "mnist5k", "num_base_examples": 20},
                                "evaluate": {"num_test_models": 2, "step_grid": [20], "loss": "mse", "augment": 1},
                                "solve": {"num_networks": 2, "target_size": 300}})
    import labeldistill as ld

    result = ld.run_experiment(cfg, out=str(tmp_path), handle_signals=False)
    assert result["learner"]["loss"] == "mse" and result["learner"]["augment"] == 1
    assert result["label_choice"]["loss"] == "mse" and result["solve"]["features"] == 168
    card_path = tmp_path / "ls" / CARD_FILE
    card = json.loads(card_path.read_text())
    assert card["recipe"]["loss"] == "mse" and card["recipe"]["augment"] == 1
    ds = load_distilled(tmp_path / "ls")
    assert ds.recipe.loss == "mse" and ds.recipe.augment == 1
    # a card written before the loss and augment fields means the paper's learner
    cfg = config_mod.with_overrides(cfg, ["name=ls_ce", "evaluate.loss=ce", "evaluate.augment=0"])
    ld.run_experiment(cfg, out=str(tmp_path), handle_signals=False)
    card_path = tmp_path / "ls_ce" / CARD_FILE
    card = json.loads(card_path.read_text())
    del card["recipe"]["augment"]
    card["recipe"]["loss"] = "soft cross-entropy, mean over the minibatch of sum_c -y_c log softmax(logits)_c"
    card_path.write_text(json.dumps(card))
    old = load_distilled(tmp_path / "ls_ce")
    assert old.recipe.loss == "ce" and old.recipe.augment == 0


def test_ld_can_start_from_a_direct_methods_labels():
    """distill.init_labels: the labels start as the direct method's choice, which also
    competes as the best labels of epoch 0 with its validation error and steps."""
    import labeldistill as ld
    from labeldistill import experiment as distill

    cfg = config_mod.from_dict({"method": "ld-rr", "data": {"source": "mnist5k", "target": "mnist5k",
                                                            "num_base_examples": 20},
                                "distill": {"epochs": 1, "init_labels": "baseline-ls", "batch_size": 256},
                                "evaluate": {"num_test_models": 2, "step_grid": [30, 60]}})
    data = ld.prepare(cfg)
    ctx = distill.Experiment(cfg, data, torch.device("cpu")).context()
    start = start_from(ctx, get_method("baseline-ls"))
    loop = MetaLoop(ctx, kind="labels", variant="rr")
    loop.setup(start)
    smoothed = torch.nn.functional.one_hot(data.base_original_labels, 10).float() * 0.9 + 0.01
    torch.testing.assert_close(loop.distilled.labels.detach(), smoothed)
    assert loop.best["num_steps"] in (30, 60) and loop.best["val_error"] == start.val_error < 100
    with pytest.raises(ConfigError, match="needs a method that meta-learns labels"):
        check_config(config_mod.with_overrides(cfg, ["method=dd-rr"]))
    with pytest.raises(ConfigError, match="unknown distill.init_labels 'teacher'"):
        check_config(config_mod.with_overrides(cfg, ["distill.init_labels=teacher"]))


@pytest.mark.parametrize("chunk", [7, 1000])
def test_normal_equations_from_precomputed_target_moments_are_the_explicit_kernel_products(chunk):
    from labeldistill.solve import target_moments

    base, target, ty, feats = _problem(seed=7)
    ps, pt = feats(base), feats(target)
    k_st = ps @ pt.T
    want = (ps @ ps.T, k_st @ k_st.T, k_st @ torch.nn.functional.one_hot(ty, 3).double())
    moments = target_moments(feats, target, ty, 3, chunk=chunk)
    other_base = base.flip(0)[:4]  # moments are of the target set alone: any base examples use them
    for got, base_x, expected in (
            (normal_equations(feats, base, target, ty, 3, chunk=chunk), base, want),
            (normal_equations(feats, base, None, None, 3, moments=moments), base, want),
            (normal_equations(feats, other_base, None, None, 3, moments=moments), other_base, None)):
        if expected is None:
            po = feats(base_x)
            k_ot = po @ pt.T
            expected = (po @ po.T, k_ot @ k_ot.T, k_ot @ torch.nn.functional.one_hot(ty, 3).double())
        for g, w in zip(got, expected):
            assert g.dtype == torch.float64
            torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)


def test_label_solve_with_a_cache_reads_the_target_set_once(monkeypatch):
    from dataclasses import replace

    import labeldistill as ld
    from labeldistill import solve

    cfg = config_mod.from_dict({"method": "label-solve", "data": {"source": "mnist5k", "target": "mnist5k",
                               "num_base_examples": 20}, "solve": {"num_networks": 2, "target_size": 500}})
    data = ld.prepare(cfg)
    other = replace(data, base_x=data.val_x[:30])
    sizes = []
    real_call = solve.RandomFeatures.__call__

    def call(self, x, chunk=2048):
        sizes.append(x.shape[0])
        return real_call(self, x, chunk)

    monkeypatch.setattr(solve.RandomFeatures, "__call__", call)
    plain = [solve.label_solve(cfg, d, "lenet")[0] for d in (data, other)]
    assert sizes == [500, 20, 500, 30]  # the target set, then the base examples, each time
    sizes.clear()
    cache: dict = {}
    cached = [solve.label_solve(cfg, d, "lenet", cache=cache)[0] for d in (data, other)]
    assert sizes == [500, 20, 30] and len(cache) == 1
    for a, b in zip(plain, cached):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert plain[0][0.001].shape == (20, 10) and plain[1][0.001].shape == (30, 10)
    # another seed or number of networks is another kernel: its moments are its own
    sizes.clear()
    solve.label_solve(config_mod.with_overrides(cfg, ["solve.num_networks=3"]), data, "lenet", cache=cache)
    assert sizes == [500, 20] and len(cache) == 2
