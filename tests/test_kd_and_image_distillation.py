"""Knowledge-distillation labels and image distillation's meta-gradient (SPEC 7)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from labeldistill import config as config_mod
from labeldistill.errors import ConfigError
from labeldistill.evaluate import Recipe
from labeldistill.heads import append_ones, ridge_weights, rr_logits
from labeldistill.kd import accuracy, soft_labels, train_teacher
from labeldistill.labels import soft_cross_entropy
from labeldistill.meta.common import Distilled
from labeldistill.meta.or2 import SecondOrder
from labeldistill.meta.rr import RidgeRegression


# ---------------------------------------------------------------------------
# knowledge distillation


def entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * p.clamp_min(1e-30).log()).sum(-1)


def test_kd_labels_are_distributions_and_temperature_flattens():
    logits = torch.randn(50, 10, generator=torch.Generator().manual_seed(0)) * 5
    previous = None
    for t in (0.5, 1.0, 2.0, 4.0, 20.0):
        p = soft_labels(logits, t)
        assert (p >= 0).all() and torch.allclose(p.sum(-1), torch.ones(50))
        assert torch.equal(p.argmax(-1), logits.argmax(-1))  # temperature keeps the ranking
        if previous is not None:
            assert (entropy(p) > entropy(previous)).all()
        previous = p
    torch.testing.assert_close(soft_labels(logits, 1.0), torch.softmax(logits, -1))
    assert (entropy(soft_labels(logits, 1e4)) > torch.log(torch.tensor(10.0)) - 1e-3).all()  # ~uniform
    with pytest.raises(ValueError):
        soft_labels(logits, 0.0)


def test_teacher_learns_a_separable_task():
    g = torch.Generator().manual_seed(1)
    y = torch.arange(400) % 4
    x = torch.randn(400, 1, 28, 28, generator=g) * 0.3
    x[torch.arange(400), 0, y * 7, y * 7] += 3.0  # class = position of a bright pixel
    teacher = train_teacher("lenet", x, y, 4, epochs=3, batch_size=32, lr=3e-3, seed=0)
    assert accuracy(teacher, x, y) > 90


def test_teacher_ensemble_averages_the_logits_of_separately_trained_teachers():
    from types import SimpleNamespace

    from labeldistill.kd import logits_of, teacher_logits, teacher_seed

    g = torch.Generator().manual_seed(2)
    y = torch.arange(240) % 4
    x = torch.randn(240, 1, 12, 12, generator=g)
    x[torch.arange(240), 0, y * 3, y * 3] += 3.0
    base = torch.randn(6, 1, 12, 12, generator=g)
    data = SimpleNamespace(target_x=x, target_y=y, val_x=x[:40], val_y=y[:40], base_x=base, num_classes=4)
    cfg = config_mod.with_overrides(config_mod.Config(), ["evaluate.kd_teacher_epochs=1", "seed=5"])
    one, info_one, _ = teacher_logits(cfg, data, "lenet")
    three, info, model = teacher_logits(config_mod.with_overrides(cfg, ["evaluate.kd_num_teachers=3"]), data, "lenet")
    members = [train_teacher("lenet", x, y, 4, epochs=1, batch_size=128, lr=1e-3, seed=teacher_seed(5, i))
               for i in range(3)]
    torch.testing.assert_close(one, logits_of(members[0], base), rtol=0, atol=0)  # one teacher: as before
    torch.testing.assert_close(three, torch.stack([logits_of(m, base) for m in members]).mean(0), rtol=1e-6,
                               atol=1e-6)
    assert info["num_teachers"] == 3 and len(info["member_val_accuracy"]) == 3 and "num_teachers" not in info_one
    assert not torch.allclose(logits_of(members[1], base), logits_of(members[2], base))  # they differ
    assert info["member_val_accuracy"][0] == info_one["val_accuracy"]


@pytest.mark.parametrize("key,value,message", [
    ("teacher.num_teachers", "0", "teacher.num_teachers must be at least 1"),
    ("teacher.temperature", "0", "teacher.temperature must be positive"),
    ("evaluate.kd_teacher_epochs", "0", "teacher.train_epochs must be at least 1"),  # the earlier spelling
    ("method", "baseline-kdd", "did you mean 'baseline-kd'"),
    ("teacher.schedule", "bad", "teacher.schedule must be one of constant, cosine, got 'bad'"),
])
def test_kd_config_errors(key, value, message):
    from labeldistill.methods import check_config

    with pytest.raises(ConfigError, match=message):
        check_config(config_mod.with_overrides(config_mod.Config(method="baseline-kd"), [f"{key}={value}"]))


def adam_loop(x, y, *, epochs, batch_size, lr, seed, lr_at=None) -> torch.nn.Module:
    """A teacher trained by a plain Adam loop in train_teacher's seeded order; `lr_at(t)`: the
    learning rate of step t (None: constant)."""
    from labeldistill.evaluate import init_model
    from labeldistill.seeding import derive_seed, generator

    model = init_model(Recipe(arch="lenet"), derive_seed(seed, "teacher_init"), x.shape[1], 10, x.shape[-1])
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = generator(seed, "teacher_order")
    t = 0
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=g)
        for start in range(0, x.shape[0], batch_size):
            if lr_at is not None:
                opt.param_groups[0]["lr"] = lr_at(t)
            sel = order[start:start + batch_size]
            opt.zero_grad()
            F.cross_entropy(model(x[sel]), y[sel]).backward()
            opt.step()
            t += 1
    return model


def teacher_task():
    g = torch.Generator().manual_seed(3)
    y = torch.arange(60) % 10
    x = torch.randn(60, 1, 28, 28, generator=g)
    return x, y


def test_a_constant_teacher_schedule_is_a_plain_adam_loop():
    x, y = teacher_task()
    kw = dict(epochs=2, batch_size=16, lr=1e-3, seed=4)
    plain = adam_loop(x, y, **kw)
    for teacher in (train_teacher("lenet", x, y, 10, **kw),
                    train_teacher("lenet", x, y, 10, schedule="constant", **kw)):
        for a, b in zip(teacher.state_dict().values(), plain.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_cosine_teacher_schedule_anneals_the_learning_rate_to_zero(monkeypatch):
    import math

    x, y = teacher_task()
    kw = dict(epochs=2, batch_size=16, lr=1e-3, seed=4)
    steps = 2 * math.ceil(60 / 16)
    schedulers = []

    class Recorded(torch.optim.lr_scheduler.CosineAnnealingLR):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            schedulers.append(self)

    monkeypatch.setattr(torch.optim.lr_scheduler, "CosineAnnealingLR", Recorded)
    teacher = train_teacher("lenet", x, y, 10, schedule="cosine", **kw)
    (sched,) = schedulers
    assert sched.last_epoch == steps and sched.get_last_lr()[0] < 1e-12
    plain = adam_loop(x, y, **kw, lr_at=lambda t: 1e-3 * (1 + math.cos(math.pi * t / steps)) / 2)
    for a, b in zip(teacher.state_dict().values(), plain.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    constant = train_teacher("lenet", x, y, 10, **kw)
    assert not torch.allclose(teacher.classifier.weight, constant.classifier.weight)  # the schedule matters


def test_an_unknown_teacher_schedule_is_refused():
    x, y = teacher_task()
    with pytest.raises(ValueError, match="unknown teacher schedule 'linear'; known: constant, cosine"):
        train_teacher("lenet", x, y, 10, epochs=1, batch_size=16, lr=1e-3, seed=0, schedule="linear")


# ---------------------------------------------------------------------------
# image distillation: the meta-gradient reaches the pixels


class Recorder:
    """A stand-in meta-optimiser that records the meta-gradient and takes a plain step."""

    def __init__(self, param: torch.Tensor, lr: float = 0.5):
        self.param, self.lr, self.grad = param, lr, None

    def zero_grad(self, set_to_none=True):
        self.param.grad = None

    @torch.no_grad()
    def step(self):
        self.grad = self.param.grad.clone()
        self.param -= self.lr * self.param.grad


def _setup(variant: str):
    torch.manual_seed(0)
    n, c = 10, 10
    g = torch.Generator().manual_seed(3)
    pixels = torch.rand(n, 1, 28, 28, generator=g, dtype=torch.float64)
    labels = F.one_hot(torch.arange(n) % c, c).double()
    mean, std = torch.tensor(0.1307).double().view(1, 1, 1), torch.tensor(0.3081).double().view(1, 1, 1)
    distilled = Distilled("images", pixels, labels, mean, std)
    recipe = Recipe(arch="lenet", head="rr" if variant == "rr" else "linear", batch_size=5)
    cls = RidgeRegression if variant == "rr" else SecondOrder
    learner = cls(recipe, 1, c, 28, torch.device("cpu"), 1e-3, 0.01)
    learner.reset(0)
    learner.model.double()
    learner.model_opt = torch.optim.Adam(learner.model.parameters(), lr=1e-3)
    if variant == "rr":
        learner.weights = torch.randn(85, c, generator=g, dtype=torch.float64) * 0.1  # a non-trivial global head
        learner.scale = torch.ones((), dtype=torch.float64, requires_grad=True)
        learner.scale_opt = torch.optim.Adam([learner.scale], lr=0.01)
    x_t = torch.randn(32, 1, 28, 28, generator=g, dtype=torch.float64)
    y_t = torch.randint(0, c, (32,), generator=g)
    idx = torch.tensor([0, 3, 4, 7, 9])
    return distilled, learner, x_t, y_t, idx


def _outer_loss_reference(variant, learner, pixels, x_t, y_t, idx, mean, std):
    """The outer loss as a plain function of the pixels, written independently of meta/."""
    model = learner.model
    x_in = (pixels[idx] - mean) / std
    y_in = F.one_hot(idx % 10, 10).double()
    if variant == "rr":
        phi = append_ones(model(x_in, head=False))
        w = 0.99 * learner.weights + 0.01 * ridge_weights(phi, y_in, 1.0)
        return F.cross_entropy(rr_logits(append_ones(model(x_t, head=False)), w, learner.scale.detach()), y_t)
    params = dict(model.named_parameters())
    inner = soft_cross_entropy(functional_call(model, params, (x_in,)), y_in)
    grads = torch.autograd.grad(inner, list(params.values()), create_graph=True)
    fast = {k: p - 0.01 * gr for (k, p), gr in zip(params.items(), grads)}
    return F.cross_entropy(functional_call(model, fast, (x_t,)), y_t)


@pytest.mark.parametrize("variant", ["rr", "or2"])
def test_pixel_meta_gradient_matches_finite_differences(variant):
    distilled, learner, x_t, y_t, idx = _setup(variant)
    start = distilled.pixels.detach().clone()
    model_before = copy.deepcopy(learner)
    opt = Recorder(distilled.param)
    learner.step(distilled, opt, x_t, y_t, idx)
    grad = opt.grad
    # The gradient reaches exactly the pixels of the inner minibatch, all of them.
    others = torch.ones(10, dtype=torch.bool)
    others[idx] = False
    assert (grad[others] == 0).all()
    assert all(bool((grad[i] != 0).any()) for i in idx.tolist())
    # It equals a central finite difference of the reference outer loss.
    d = torch.randn(start.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    eps = 1e-5

    def f(p):
        loss = _outer_loss_reference(variant, model_before, p, x_t, y_t, idx, distilled.mean, distilled.std)
        return float(loss.detach())

    numeric = (f(start + eps * d) - f(start - eps * d)) / (2 * eps)
    analytic = float((grad * d).sum())
    assert analytic == pytest.approx(numeric, rel=1e-4, abs=1e-9)


@pytest.mark.parametrize("variant", ["rr", "or2"])
def test_pixels_stay_in_unit_interval(variant):
    distilled, learner, x_t, y_t, idx = _setup(variant)
    opt = Recorder(distilled.param, lr=1e4)  # a huge step that would leave [0, 1] without the clamp
    learner.step(distilled, opt, x_t, y_t, idx)
    p = distilled.pixels.detach()
    assert float(p.min()) >= 0.0 and float(p.max()) <= 1.0
    assert bool(((p == 0) | (p == 1)).any())  # the clamp was active


def test_the_earlier_spellings_of_the_teacher_options_still_load():
    """Configs and run folders written before the `teacher` section (evaluate.kd_*) load into it,
    and compare equal to the new spelling (a resume, a sweep's "done")."""
    old = config_mod.from_dict({"method": "baseline-kd", "evaluate": {
        "kd_num_teachers": 3, "kd_teacher_epochs": 4, "kd_temperature": 2.0, "kd_teacher_lr": 0.01,
        "kd_teacher_batch_size": 64}})
    new = config_mod.from_dict({"method": "baseline-kd", "teacher": {
        "num_teachers": 3, "train_epochs": 4, "temperature": 2.0, "train_lr": 0.01, "train_batch_size": 64}})
    assert old == new
    assert config_mod.experiment_dict(old) == config_mod.experiment_dict(new)
    assert config_mod.with_overrides(config_mod.Config(), ["kd_num_teachers=2"]).teacher.num_teachers == 2
    assert "kd_num_teachers" not in config_mod.to_dict(new)["evaluate"]  # written in the new spelling only


def test_run_names_keep_the_earlier_name_of_a_renamed_key():
    """A run folder named with `evaluate.kd_teacher_epochs=1` before the teacher section existed is
    found again, whichever spelling the override uses now."""
    base = config_mod.Config(name="t")
    old = config_mod.with_overrides(base, ["evaluate.kd_teacher_epochs=1"]).run_name
    new = config_mod.with_overrides(base, ["teacher.train_epochs=1"]).run_name
    assert old == new == "t_kd_teacher_epochs=1"
