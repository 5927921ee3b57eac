"""What is meta-learned (labels or images) and the online model shared by both variants."""
from __future__ import annotations

import torch

from ..evaluate import Recipe, init_model, make_optimizer
from ..labels import project_


class Distilled:
    """The meta-parameters: soft labels of fixed real images (label distillation),
    or pixels of synthetic images with fixed labels (image distillation, SPEC 7).

    `inputs(idx)` gives the normalised images x~' of an inner minibatch and
    `targets(idx)` their labels y~'; `param` is what the outer step updates.
    """

    def __init__(self, kind: str, images: torch.Tensor, labels: torch.Tensor,
                 mean: torch.Tensor | None = None, std: torch.Tensor | None = None):
        self.kind = kind
        if kind == "labels":
            self.images = images
            self.labels = labels.clone().requires_grad_(True)
            self.param = self.labels
        elif kind == "images":
            # Pixels live in [0, 1]; the model sees them normalised like real data.
            self.pixels = images.clone().requires_grad_(True)
            self.labels = labels
            self.param = self.pixels
            self.mean, self.std = mean, std
        else:  # pragma: no cover - guarded by the config
            raise ValueError(kind)

    def all_inputs(self) -> torch.Tensor:
        if self.kind == "labels":
            return self.images
        return (self.pixels - self.mean) / self.std

    def inputs(self, idx: torch.Tensor) -> torch.Tensor:
        if self.kind == "labels":
            return self.images[idx]
        return (self.pixels[idx] - self.mean) / self.std

    def targets(self, idx: torch.Tensor) -> torch.Tensor:
        return self.labels[idx]

    @torch.no_grad()
    def project_(self) -> None:
        if self.kind == "labels":
            project_(self.labels)
        else:
            self.pixels.clamp_(0.0, 1.0)

    def current(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Detached (normalised images, labels) for training evaluation models."""
        return self.all_inputs().detach(), self.labels.detach()


class OnlineLearner:
    """One model that keeps learning from the base examples while they are distilled.

    `reset(seed)` gives it a fresh initialisation and fresh optimisers (SPEC 4.3).
    Subclasses implement `step(distilled, meta_opt, x_t, y_t, idx)`.
    """

    def __init__(self, recipe: Recipe, in_channels: int, num_classes: int, image_size: int,
                 device: torch.device, model_lr: float, inner_lr: float):
        self.recipe = recipe
        self.shape = (in_channels, num_classes, image_size)
        self.device = device
        self.model_lr = model_lr
        self.inner_lr = inner_lr

    def reset(self, seed: int) -> None:
        self.model = init_model(self.recipe, seed, *self.shape).to(self.device)
        self.model_opt = make_optimizer("adam", self.model.parameters(), self.model_lr)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "model_opt": self.model_opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.model_opt.load_state_dict(state["model_opt"])

    @staticmethod
    def _apply_meta_grad(distilled: Distilled, meta_opt: torch.optim.Optimizer, grad: torch.Tensor) -> None:
        meta_opt.zero_grad(set_to_none=True)
        distilled.param.grad = grad
        meta_opt.step()
        distilled.project_()
