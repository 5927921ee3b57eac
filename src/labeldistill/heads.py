"""The ridge-regression (RR) head of SPEC 4.2, shared by meta-learning and evaluation."""
from __future__ import annotations

import torch

# How the model's loss sees the global head W (Recipe.rr_gradients, distill.rr_gradients):
# 'detached' as a constant; 'reference' differentiates its 0.01 * W_local part through the
# features, as label_distillation_rr.py of the reference does.
RR_GRADIENTS = ("detached", "reference")


def append_ones(features: torch.Tensor) -> torch.Tensor:
    """Phi = [features, 1]: a constant feature so the head has a bias."""
    ones = torch.ones(*features.shape[:-1], 1, dtype=features.dtype, device=features.device)
    return torch.cat([features, ones], dim=-1)


def ridge_weights(phi: torch.Tensor, targets: torch.Tensor, lam: float) -> torch.Tensor:
    """Ridge regression in dual form, W = Phi^T (Phi Phi^T + lam I)^-1 Y.

    With fewer examples than features the n x n system is the small one. A
    linear solve, never an explicit inverse; batched over leading dimensions
    and differentiable with respect to `targets` (and `phi`).
    """
    n = phi.shape[-2]
    gram = phi @ phi.transpose(-1, -2)
    eye = torch.eye(n, dtype=phi.dtype, device=phi.device)
    alpha = torch.linalg.solve(gram + lam * eye, targets)
    return phi.transpose(-1, -2) @ alpha


def update_head(weights: torch.Tensor, phi: torch.Tensor, targets: torch.Tensor, lam: float,
                momentum: float) -> torch.Tensor:
    """The global head's pseudo-gradient step, W = m * W.detach() + (1 - m) * W_local.

    The result is differentiable wherever W_local is: pass `phi.detach()` to keep
    the model's gradient out of W_local (rr_gradients 'detached').
    """
    return momentum * weights.detach() + (1 - momentum) * ridge_weights(phi, targets, lam)


def rr_logits(phi: torch.Tensor, weights: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Logits [f(x), 1] (s W); `scale` broadcasts over the trailing two dims."""
    return phi @ (scale[..., None, None] * weights)
