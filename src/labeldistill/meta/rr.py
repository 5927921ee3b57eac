"""First-order ridge-regression label distillation ("rr", SPEC 4.2)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..heads import append_ones, rr_logits, update_head
from ..labels import soft_cross_entropy
from .common import Distilled, OnlineLearner


class RidgeRegression(OnlineLearner):
    """A local RR head solved on the inner minibatch (differentiable in y~'),
    folded into a global head W by a pseudo-gradient step, with a learned scale s.

    `recipe.rr_gradients` picks the gradient paths of the model's update:
    'detached' (W a constant, the labels of before the step's label update) or
    'reference' (label_distillation_rr.py's `train`: the model's loss also
    differentiates 0.01 * W_local through the features, and its soft targets are
    the labels after this step's update and projection).
    """

    def reset(self, seed: int) -> None:
        super().reset(seed)
        feat_dim = self.model.feature_dim + 1
        self.weights = torch.zeros(feat_dim, self.shape[1], device=self.device)
        self.scale = torch.ones((), device=self.device, requires_grad=True)
        self.scale_opt = torch.optim.Adam([self.scale], lr=self.recipe.calibration_lr)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "weights": self.weights, "scale": self.scale.detach(),
                "scale_opt": self.scale_opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.weights = state["weights"].to(self.device)
        with torch.no_grad():
            self.scale.copy_(state["scale"])
        self.scale_opt.load_state_dict(state["scale_opt"])

    @property
    def _reference(self) -> bool:
        return self.recipe.rr_gradients == "reference"

    def _outer(self, distilled: Distilled, x_t, y_t, idx):
        """(meta-gradient, outer loss, outer logits, Phi of x~', y~', updated global head W).

        W keeps its graph to Phi where the model's loss will differentiate it.
        """
        r = self.recipe
        x_in, y_in = distilled.inputs(idx), distilled.targets(idx)
        phi = append_ones(self.model(x_in, head=False))  # Phi of x~', with a graph to theta
        # Local head W_local = Phi^T (Phi Phi^T + lam I)^-1 Y~', differentiable in Y~'
        # (and in synthetic pixels through Phi), folded into W.
        through_phi = self._reference or distilled.kind == "images"
        weights = update_head(self.weights, phi if through_phi else phi.detach(), y_in,
                              r.ridge_lambda, r.head_momentum)
        # The outer loss trains only the meta-parameters, so the target features
        # need no graph: the label gradient flows through W alone.
        with torch.no_grad():
            phi_t = append_ones(self.model(x_t, head=False))
        out = rr_logits(phi_t, weights, self.scale.detach())
        outer = F.cross_entropy(out, y_t)
        (meta_grad,) = torch.autograd.grad(outer, [distilled.param], retain_graph=True)
        if not self._reference:
            weights = weights.detach()
        return meta_grad, outer.detach(), out.detach(), phi, y_in.detach(), weights

    def _model_gradients(self, phi, weights, targets):
        """(inner loss, gradients of the feature extractor and the scale): soft CE of the
        inner minibatch with the labels fixed, through the updated global head."""
        inner = soft_cross_entropy(rr_logits(phi, weights, self.scale), targets)
        return inner.detach(), torch.autograd.grad(inner, self._trainable() + [self.scale])

    def meta_gradient(self, distilled: Distilled, x_t, y_t, idx):
        """(meta-gradient, outer loss, outer logits, inner loss, gradients of the
        feature extractor and the scale, updated global head); nothing is updated.

        The model's gradients use the current labels: with rr_gradients 'reference'
        `step` differs by taking them after the label update.
        """
        meta_grad, outer, out, phi, y_in, weights = self._outer(distilled, x_t, y_t, idx)
        inner, grads = self._model_gradients(phi, weights, y_in)
        return meta_grad, outer, out, inner, grads, weights.detach()

    def _trainable(self) -> list[torch.Tensor]:
        # The linear classifier is unused: the RR head W replaces it.
        return [p for k, p in self.model.named_parameters() if not k.startswith("classifier.")]

    def step(self, distilled: Distilled, meta_opt, x_t, y_t, idx):
        meta_grad, outer, out, phi, y_in, weights = self._outer(distilled, x_t, y_t, idx)
        self._apply_meta_grad(distilled, meta_opt, meta_grad)
        if self._reference:
            # The reference builds the model's loss after `labels_opt.step()` and the
            # projection: `soft_cross_entropy(feat_output, labels[idx].detach())`.
            # (Synthetic images keep their pre-update pixels there: `fi_i.detach()`.)
            y_in = distilled.targets(idx).detach()
        inner, grads = self._model_gradients(phi, weights, y_in)
        self.weights = weights.detach()
        self.model_opt.zero_grad(set_to_none=True)
        self.scale_opt.zero_grad(set_to_none=True)
        for p, g in zip(self._trainable() + [self.scale], grads):
            p.grad = g
        self.model_opt.step()
        self.scale_opt.step()
        with torch.no_grad():
            error = (out.argmax(1) != y_t).float().mean() * 100
        return outer, error, inner
