"""Second-order label distillation ("or2", SPEC 4.1)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call

from ..labels import soft_cross_entropy
from .common import Distilled, OnlineLearner


class SecondOrder(OnlineLearner):
    """theta' = theta - inner_lr * grad L_inner(theta; x~', y~'); the outer loss
    CE(f_theta'(x_t), y_t) is differentiated through theta' to y~'."""

    def meta_gradient(self, distilled: Distilled, x_t, y_t, idx):
        """(meta-gradient, outer loss, outer logits, inner loss, model gradients); nothing is updated."""
        params = dict(self.model.named_parameters())
        x_in, y_in = distilled.inputs(idx), distilled.targets(idx)
        inner = soft_cross_entropy(functional_call(self.model, params, (x_in,)), y_in)
        grads = torch.autograd.grad(inner, list(params.values()), create_graph=True)
        fast = {k: p - self.inner_lr * g for (k, p), g in zip(params.items(), grads)}
        out = functional_call(self.model, fast, (x_t,))
        outer = F.cross_entropy(out, y_t)
        (meta_grad,) = torch.autograd.grad(outer, [distilled.param])
        # The online model learns from the same inner loss with the labels held
        # fixed: its gradient is the first-order part already computed above.
        return meta_grad, outer.detach(), out.detach(), inner.detach(), [g.detach() for g in grads]

    def step(self, distilled: Distilled, meta_opt, x_t, y_t, idx):
        meta_grad, outer, out, inner, grads = self.meta_gradient(distilled, x_t, y_t, idx)
        self._apply_meta_grad(distilled, meta_opt, meta_grad)
        self.model_opt.zero_grad(set_to_none=True)
        for p, g in zip(self.model.parameters(), grads):
            p.grad = g
        self.model_opt.step()
        with torch.no_grad():
            error = (out.argmax(1) != y_t).float().mean() * 100
        return outer, error, inner
