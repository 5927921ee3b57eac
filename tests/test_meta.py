"""Meta-gradients of both variants against finite differences and plain re-implementations."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from labeldistill.evaluate import Recipe
from labeldistill.heads import append_ones, ridge_weights, rr_logits
from labeldistill.labels import soft_cross_entropy
from labeldistill.meta.common import Distilled
from labeldistill.meta.or2 import SecondOrder
from labeldistill.meta.rr import RidgeRegression

N_BASE, N_TARGET, C = 6, 12, 3


def _setup(cls, arch="lenet", dtype=torch.float64):
    torch.set_default_dtype(dtype)
    try:
        g = torch.Generator().manual_seed(0)
        base_x = torch.randn(N_BASE, 1, 28, 28, generator=g)
        x_t = torch.randn(N_TARGET, 1, 28, 28, generator=g)
        y_t = torch.randint(0, C, (N_TARGET,), generator=g)
        labels = torch.softmax(torch.randn(N_BASE, C, generator=g), 1)
        learner = cls(Recipe(arch, head="rr" if cls is RidgeRegression else "linear", batch_size=4),
                      1, C, 28, torch.device("cpu"), model_lr=1e-3, inner_lr=0.5)
        learner.reset(seed=3)
        learner.model.double()
        if cls is RidgeRegression:
            # a non-zero global head so the pseudo-gradient path is exercised
            learner.weights = torch.randn(learner.model.feature_dim + 1, C, generator=g) * 0.1
            learner.scale = torch.tensor(1.3, requires_grad=True)
        return base_x, x_t, y_t, Distilled("labels", base_x, labels), learner
    finally:
        torch.set_default_dtype(torch.float32)


def _or2_outer(model, labels, base_x, idx, x_t, y_t, lr):
    """A plain re-statement of SPEC 4.1: one differentiable SGD step, then CE on the target batch."""
    params = dict(model.named_parameters())
    inner = soft_cross_entropy(functional_call(model, params, (base_x[idx],)), labels[idx])
    grads = torch.autograd.grad(inner, list(params.values()), create_graph=True)
    fast = {k: p - lr * gr for (k, p), gr in zip(params.items(), grads)}
    return F.cross_entropy(functional_call(model, fast, (x_t,)), y_t)


def _rr_outer(learner, labels, base_x, idx, x_t, y_t):
    """A plain re-statement of SPEC 4.2 steps 1-4."""
    m, r = learner.model, learner.recipe
    with torch.no_grad():
        phi = append_ones(m(base_x[idx], head=False))
        phi_t = append_ones(m(x_t, head=False))
    w = r.head_momentum * learner.weights + (1 - r.head_momentum) * ridge_weights(phi, labels[idx], r.ridge_lambda)
    return F.cross_entropy(rr_logits(phi_t, w, learner.scale.detach()), y_t)


def _central_differences(fn, labels, eps=1e-6):
    grad = torch.zeros_like(labels)
    for i in range(labels.shape[0]):
        for j in range(labels.shape[1]):
            plus, minus = labels.clone(), labels.clone()
            plus[i, j] += eps
            minus[i, j] -= eps
            grad[i, j] = (fn(plus) - fn(minus)) / (2 * eps)
    return grad


@pytest.mark.parametrize("cls", [SecondOrder, RidgeRegression])
def test_label_meta_gradient_matches_finite_differences(cls):
    base_x, x_t, y_t, distilled, learner = _setup(cls)
    idx = torch.tensor([4, 1, 0, 3])
    meta_grad = learner.meta_gradient(distilled, x_t, y_t, idx)[0]
    if cls is SecondOrder:
        fn = lambda lab: _or2_outer(learner.model, lab, base_x, idx, x_t, y_t, learner.inner_lr).detach()
    else:
        fn = lambda lab: _rr_outer(learner, lab, base_x, idx, x_t, y_t).detach()
    fd = _central_differences(fn, distilled.labels.detach())
    torch.testing.assert_close(meta_grad, fd, rtol=1e-5, atol=1e-8)
    # the gradient reaches exactly the labels of the inner minibatch
    used = torch.zeros(N_BASE, dtype=torch.bool)
    used[idx] = True
    assert torch.all(meta_grad[used].abs().sum(1) > 0)
    assert torch.all(meta_grad[~used] == 0)


@pytest.mark.parametrize("cls", [SecondOrder, RidgeRegression])
def test_step_updates_labels_model_and_keeps_distributions(cls):
    base_x, x_t, y_t, distilled, learner = _setup(cls)
    before_labels = distilled.labels.detach().clone()
    before_model = copy.deepcopy(learner.model.state_dict())
    opt = torch.optim.Adam([distilled.param], lr=0.01)
    idx = torch.tensor([0, 2, 5, 1])
    outer, error, inner = learner.step(distilled, opt, x_t, y_t, idx)
    assert torch.isfinite(outer) and torch.isfinite(inner) and 0 <= float(error) <= 100
    lab = distilled.labels.detach()
    assert not torch.equal(lab[idx], before_labels[idx])
    assert torch.equal(lab[[3, 4]], before_labels[[3, 4]])
    torch.testing.assert_close(lab.sum(1), torch.ones(N_BASE, dtype=lab.dtype))
    assert torch.all(lab >= 0)
    changed = [k for k, v in learner.model.state_dict().items() if not torch.equal(v, before_model[k])]
    assert "conv1.weight" in changed
    if cls is RidgeRegression:
        assert "classifier.weight" not in changed  # the RR head replaces the linear classifier
        assert learner.weights.abs().sum() > 0


def test_or2_inner_step_lowers_inner_loss():
    base_x, x_t, y_t, distilled, learner = _setup(SecondOrder)
    idx = torch.arange(N_BASE)
    params = dict(learner.model.named_parameters())
    lab = distilled.labels.detach()
    loss0 = soft_cross_entropy(functional_call(learner.model, params, (base_x,)), lab)
    grads = learner.meta_gradient(distilled, x_t, y_t, idx)[4]
    fast = {k: p - 0.01 * g for (k, p), g in zip(params.items(), grads)}
    loss1 = soft_cross_entropy(functional_call(learner.model, fast, (base_x,)), lab)
    assert loss1 < loss0


@pytest.mark.parametrize("cls", [SecondOrder, RidgeRegression])
def test_image_distillation_gradient_reaches_pixels(cls):
    base_x, x_t, y_t, _, learner = _setup(cls)
    torch.set_default_dtype(torch.float64)
    pixels = torch.rand(N_BASE, 1, 28, 28)
    labels = F.one_hot(torch.arange(N_BASE) % C, C).double()
    d = Distilled("images", pixels, labels, torch.tensor(0.1307).view(1, 1, 1), torch.tensor(0.3081).view(1, 1, 1))
    torch.set_default_dtype(torch.float32)
    idx = torch.tensor([0, 1, 2, 3])
    grad = learner.meta_gradient(d, x_t, y_t, idx)[0]
    assert grad.shape == pixels.shape
    assert torch.all(grad[idx].flatten(1).abs().sum(1) > 0) and torch.all(grad[4:] == 0)
    opt = torch.optim.Adam([d.param], lr=1.0)
    learner.step(d, opt, x_t, y_t, idx)
    assert d.pixels.min() >= 0 and d.pixels.max() <= 1
