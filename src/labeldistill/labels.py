"""Soft labels y~ of the base examples: initialisation and projection."""
from __future__ import annotations

import torch


def uniform_labels(num_examples: int, num_classes: int, device=None) -> torch.Tensor:
    """Labels start uniform: 1/C for every class (SPEC 4)."""
    return torch.full((num_examples, num_classes), 1.0 / num_classes, device=device)


@torch.no_grad()
def project_(labels: torch.Tensor) -> torch.Tensor:
    """Project rows back to distributions in place: clamp to [0, 1], divide by the row sum.

    A row that the clamp leaves all zero becomes uniform rather than NaN.
    """
    labels.clamp_(0.0, 1.0)
    sums = labels.sum(dim=1, keepdim=True)
    dead = sums <= 0
    if bool(dead.any()):
        labels[dead.squeeze(1)] = 1.0 / labels.shape[1]
        sums = labels.sum(dim=1, keepdim=True)
    labels.div_(sums)
    return labels


def one_hot(classes: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """One-hot labels, optionally smoothed: (1 - eps) * onehot + eps / C."""
    y = torch.nn.functional.one_hot(classes, num_classes).float()
    if smoothing:
        y = y * (1.0 - smoothing) + smoothing / num_classes
    return y


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over examples of sum_c -y_c log softmax(logits)_c."""
    return -(targets * torch.log_softmax(logits, dim=-1)).sum(dim=-1).mean()
