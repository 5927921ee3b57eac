"""distill.rr_gradients: the gradient paths of the RR head's model update.

'reference' must be label_distillation_rr.py of the reference, transcribed below
line by line (its `train` body and its `test` loop); 'detached' must keep W out
of the model's gradient and use the labels of before the label update. The two
must really differ, and a 'reference' run must resume exactly.
"""
from __future__ import annotations

import copy
import os
import signal

import pytest
import torch
import torch.nn.functional as F

from labeldistill import experiment as distill_mod
from labeldistill.artifact import evaluate_artifact, load_distilled, save_artifact
from labeldistill.config import Config, apply
from labeldistill.errors import DataError, Interrupted
from labeldistill.evaluate import (Recipe, _data_seeds, init_model, minibatch_indices, train_and_evaluate,
                                   train_and_evaluate_sequential)
from labeldistill.labels import soft_cross_entropy
from labeldistill.meta.common import Distilled
from labeldistill.meta.rr import RidgeRegression
from labeldistill.results import RunDir

N_BASE, N_TARGET, C, LABEL_LR = 6, 12, 3, 0.05


def _setup(mode: str):
    torch.set_default_dtype(torch.float64)
    try:
        g = torch.Generator().manual_seed(0)
        base_x = torch.randn(N_BASE, 1, 28, 28, generator=g)
        x_t = torch.randn(N_TARGET, 1, 28, 28, generator=g)
        y_t = torch.randint(0, C, (N_TARGET,), generator=g)
        labels = torch.softmax(torch.randn(N_BASE, C, generator=g), 1)
        learner = RidgeRegression(Recipe("lenet", head="rr", batch_size=4, rr_gradients=mode),
                                  1, C, 28, torch.device("cpu"), model_lr=1e-3, inner_lr=0.01)
        learner.reset(seed=3)
        learner.model.double()
        # a non-zero global head and scale, as in the middle of a run
        learner.weights = torch.randn(learner.model.feature_dim + 1, C, generator=g) * 0.1
        learner.scale = torch.tensor(1.3, requires_grad=True)
        learner.scale_opt = torch.optim.Adam([learner.scale], lr=0.01)
        return base_x, x_t, y_t, Distilled("labels", base_x, labels), learner
    finally:
        torch.set_default_dtype(torch.float32)


def _transcribed_train_step(model, w, scale, labels, labels_opt, base_x, idx, x_t, y_t,
                            w_path=True, new_labels=True):
    """label_distillation_rr.py `train`, one iteration (its lines 580-618), with our LeNet's
    features as `model(x)` and `model(x, w)` = features @ w[:-1] + w[-1]. `w_path=False` /
    `new_labels=False` switch off one of the two reference paths; both False is 'detached'.
    Returns the gradients of the feature extractor and the scale, and the new w."""
    def fw(x, w=None):
        x = model(x, head=False)
        return x if w is None else x.matmul(w[:-1, :]) + w[-1, :]

    n = len(idx)
    fi_i = base_x[idx]
    lb_i = labels[idx]
    feature = fw(fi_i)
    feature_add_bias = torch.cat((feature, torch.ones((n, 1))), 1)
    kernel_matrix = feature_add_bias.matmul(feature_add_bias.transpose(0, 1))
    ridge_sol = torch.inverse(kernel_matrix + 1.0 * torch.eye(n))
    w_local = feature_add_bias.transpose(0, 1).matmul(ridge_sol).matmul(lb_i)
    w = (1 - 0.01) * w.detach() + 0.01 * w_local
    logit = fw(x_t, scale * w)
    label_loss = F.cross_entropy(logit, y_t)
    labels_opt.zero_grad()
    label_loss.backward(retain_graph=True)
    labels_opt.step()
    labels.data = torch.clamp(labels.data, 0, 1)
    labels.data = labels.data / labels.data.sum(dim=1).unsqueeze(1)
    feat_output = fw(fi_i, scale * (w if w_path else w.detach()))
    feat_loss = soft_cross_entropy(feat_output, (labels[idx] if new_labels else lb_i).detach())
    params = [p for k, p in model.named_parameters() if not k.startswith("classifier.")] + [scale]
    for p in params:
        p.grad = None
    feat_loss.backward()
    return [p.grad for p in params], w.detach()


def _transcription(learner, distilled, base_x, idx, x_t, y_t, **paths):
    model = copy.deepcopy(learner.model)
    scale = learner.scale.detach().clone().requires_grad_(True)
    labels = distilled.labels.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([labels], lr=LABEL_LR)
    grads, w = _transcribed_train_step(model, learner.weights, scale, labels, opt, base_x, idx, x_t, y_t, **paths)
    return grads, w, labels.detach()


def _learner_step(learner, distilled, x_t, y_t, idx):
    opt = torch.optim.Adam([distilled.param], lr=LABEL_LR)
    learner.step(distilled, opt, x_t, y_t, idx)
    # step leaves the gradients it applied on the parameters
    return [p.grad for p in learner._trainable() + [learner.scale]]


def _close(a, b):
    return all(torch.allclose(x, y, rtol=1e-9, atol=1e-12) for x, y in zip(a, b))


@pytest.mark.parametrize("mode", ["reference", "detached"])
def test_online_step_equals_the_transcribed_reference(mode):
    base_x, x_t, y_t, distilled, learner = _setup(mode)
    idx = torch.tensor([4, 1, 0, 3])
    ref = mode == "reference"
    want, want_w, want_labels = _transcription(learner, distilled, base_x, idx, x_t, y_t, w_path=ref, new_labels=ref)
    got = _learner_step(learner, distilled, x_t, y_t, idx)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(learner.weights, want_w, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(distilled.labels.detach(), want_labels, rtol=1e-9, atol=1e-12)


def test_reference_paths_really_change_the_model_gradient():
    """Each of the two reference paths alone changes the gradient, and the full 'reference'
    gradient is neither 'detached' nor either path alone."""
    base_x, x_t, y_t, distilled, learner = _setup("reference")
    idx = torch.tensor([4, 1, 0, 3])
    full = _transcription(learner, distilled, base_x, idx, x_t, y_t)[0]
    only_w = _transcription(learner, distilled, base_x, idx, x_t, y_t, new_labels=False)[0]
    only_labels = _transcription(learner, distilled, base_x, idx, x_t, y_t, w_path=False)[0]
    detached = _transcription(learner, distilled, base_x, idx, x_t, y_t, w_path=False, new_labels=False)[0]
    for other in (only_w, only_labels, detached):
        assert not _close(full, other)
        # the feature extractor's first layer sees the difference, not only the scale
        assert not torch.allclose(full[0], other[0], rtol=1e-6, atol=0)
    _, _, _, distilled_d, learner_d = _setup("detached")
    got_default = _learner_step(learner_d, distilled_d, x_t, y_t, idx)
    assert _close(got_default, detached) and not _close(got_default, full)


def _transcribed_test_models(recipe, base, labels, seeds, num_steps, ex, ey):
    """The reference's `test` loop (its lines 831-853 and 859-868), one model after another, with
    the minibatches and initialisations of our evaluation; returns each model's test CE of s * W."""
    losses = []
    for seed, data_seed in zip(seeds, _data_seeds(seeds)):
        model = init_model(recipe, seed, base.shape[1], labels.shape[1], base.shape[-1]).double()
        params = [p for k, p in model.named_parameters() if not k.startswith("classifier.")]
        feat_opt = torch.optim.Adam(params)
        scale = torch.ones((), dtype=torch.float64, requires_grad=True)
        adj_opt = torch.optim.Adam([scale], 0.01)
        w_eval = torch.zeros(model.feature_dim + 1, labels.shape[1], dtype=torch.float64)
        for idx in minibatch_indices(base.shape[0], recipe.batch_size, num_steps, data_seed):
            fi_i = base[idx]
            feature = model(fi_i, head=False)
            fab = torch.cat((feature, torch.ones((len(idx), 1), dtype=torch.float64)), 1)
            eye = torch.eye(len(idx), dtype=torch.float64)
            w_local = fab.t().matmul(torch.inverse(fab.matmul(fab.t()) + eye)).matmul(labels[idx])
            w_eval = (1 - 0.01) * w_eval.detach() + 0.01 * w_local
            sw = scale * w_eval
            feat_loss = soft_cross_entropy(feature.matmul(sw[:-1]) + sw[-1], labels[idx].detach())
            feat_opt.zero_grad()
            adj_opt.zero_grad()
            feat_loss.backward()
            feat_opt.step()
            adj_opt.step()
        with torch.no_grad():
            sw = scale * w_eval
            losses.append(float(F.cross_entropy(model(ex, head=False).matmul(sw[:-1]) + sw[-1], ey)))
    return torch.tensor(losses, dtype=torch.float64)


def test_evaluation_models_follow_the_reference_and_both_paths_agree():
    g = torch.Generator().manual_seed(1)
    base = torch.randn(12, 1, 28, 28, generator=g, dtype=torch.float64)
    labels = torch.softmax(3 * torch.randn(12, 10, generator=g, dtype=torch.float64), -1)
    ex = torch.randn(40, 1, 28, 28, generator=g, dtype=torch.float64)
    ey = torch.randint(0, 10, (40,), generator=g)
    seeds, steps = [2, 7], 5
    results = {}
    for mode in ("reference", "detached"):
        recipe = Recipe("lenet", head="rr", batch_size=6, rr_gradients=mode)
        seq = train_and_evaluate_sequential(recipe, base, labels, seeds, steps, ex, ey)
        par = train_and_evaluate(recipe, base, labels, seeds, steps, ex, ey, max_models=1)
        torch.testing.assert_close(par.losses, seq.losses, rtol=0, atol=1e-10)
        results[mode] = seq.losses[-1]
    want = _transcribed_test_models(Recipe("lenet", head="rr", batch_size=6), base, labels, seeds, steps, ex, ey)
    torch.testing.assert_close(results["reference"], want, rtol=1e-9, atol=1e-12)
    assert not torch.allclose(results["reference"], results["detached"], rtol=1e-6, atol=0)


def test_bad_value_is_a_config_error_and_cards_record_the_mode(tmp_path):
    from labeldistill.config import with_overrides
    from labeldistill.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown distill.rr_gradients 'referance' .*did you mean 'reference'"):
        with_overrides(Config(), ["distill.rr_gradients=referance"])
    pixels = torch.randint(0, 256, (4, 1, 28, 28), generator=torch.Generator().manual_seed(0)).float() / 255
    card = {"kind": "labels", "name": "t", "method": "ld-rr", "seed": 0, "source": "mnist5k", "target": "mnist5k",
            "class_names": [str(i) for i in range(10)],
            "image": {"channels": 1, "size": 28, "mean": [0.1307], "std": [0.3081]},
            "recipe": {"arch": "lenet", "head": "rr", "optimizer": "adam", "lr": None, "batch_size": 3,
                       "ridge_lambda": 1.0, "head_momentum": 0.99, "calibration_lr": 0.01, "num_steps": 4}}
    labels = torch.full((4, 10), 0.1)
    # a card written before the field existed was trained 'detached'
    assert load_distilled(save_artifact(tmp_path / "old", pixels, labels, card)).recipe.rr_gradients == "detached"
    card["recipe"]["rr_gradients"] = "reference"
    assert load_distilled(save_artifact(tmp_path / "new", pixels, labels, card)).recipe.rr_gradients == "reference"
    card["recipe"]["rr_gradients"] = "both"
    with pytest.raises(DataError, match="unknown recipe rr_gradients 'both'"):
        load_distilled(save_artifact(tmp_path / "bad", pixels, labels, card))


TINY = {"name": "t", "method": "ld-rr", "seed": 2, "device": "cpu", "data.source": "mnist5k",
        "data.target": "mnist5k", "data.num_base_examples": 20, "distill.epochs": 4,
        "distill.batch_size": 512, "distill.validate_every": 2, "distill.stats_gap": 5,
        "evaluate.num_test_models": 1, "distill.rr_gradients": "reference"}


def test_reference_run_sigint_at_a_step_then_resume_is_exact(tmp_path, monkeypatch):
    """As tests/test_resume.py for the default: stop in the middle of epoch 2, resume, equal."""
    cfg = apply(Config(), TINY)
    ref = distill_mod.run_experiment(cfg, handle_signals=False)
    assert ref["config"]["distill"]["rr_gradients"] == "reference"
    at = -(-3333 // 512) + 3  # mnist5k target set / batch size, then 3 steps into epoch 2
    count = {"n": 0}
    original = RidgeRegression.step

    def step(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        count["n"] += 1
        if count["n"] == at:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(RidgeRegression, "step", step)
    with pytest.raises(Interrupted):
        distill_mod.run_experiment(cfg, out=str(tmp_path))
    assert RunDir(tmp_path / "t").load_checkpoint()["partial"]["step"] == 3
    monkeypatch.undo()
    result = distill_mod.run_experiment(cfg, out=str(tmp_path), resume=True)
    assert torch.equal(result["labels"], ref["labels"])
    assert result["test_accuracy"] == ref["test_accuracy"]
    assert [h["train_loss"] for h in result["history"]] == [h["train_loss"] for h in ref["history"]]
    # the artifact's card records the mode, and its recipe reproduces the run's test models
    ds = load_distilled(tmp_path / "t")
    assert ds.recipe.rr_gradients == "reference"
    assert evaluate_artifact(ds)["test_accuracy"] == result["test_accuracy"]
    assert evaluate_artifact(ds, rr_gradients="detached")["recipe"]["rr_gradients"] == "detached"
    with pytest.raises(DataError, match="unknown rr_gradients 'both'"):
        evaluate_artifact(ds, rr_gradients="both")
    # and the option changes the run: the default's labels differ
    default = distill_mod.run_experiment(apply(cfg, {"distill.rr_gradients": "detached"}), handle_signals=False)
    assert not torch.equal(default["labels"], ref["labels"])
