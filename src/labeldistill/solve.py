"""Kernel label solving (method `label-solve`, SPEC 10).

Labels of the fixed base images S are chosen so that kernel ridge regression
from (S, Y_S) predicts the target set's one-hot labels Y_T best:

    minimise_Y_S  || Y_T - K_TS (K_SS + lam I)^-1 Y_S ||^2        (1)

a linear least-squares problem (Nguyen et al., "Dataset Distillation with
Infinitely Wide Convolutional Networks", 2021: "Label Solve"). The kernel
comes from the evaluation architecture: k(x, x') = phi(x) . phi(x') with
phi the concatenated penultimate features of `num_networks` randomly
initialised networks, scaled by 1/sqrt(total features), a Monte-Carlo
estimate of the network's infinite-width (NNGP) kernel of its last layer.
(The normal equations below are formed from the features' moments over the
target set, so the target set is read once whatever the base examples.)

With A = K_TS (K_SS + lam I)^-1 the normal equations of (1) are
A^T A Y_S = A^T Y_T. Writing G = K_ST K_TS and B = K_ST Y_T, and
R = K_SS + lam I (symmetric, invertible), they read R^-1 G R^-1 Y_S = R^-1 B,
so Y_S = R G^-1 B. G (n x n) and B (n x C) are sums over the target set and
are accumulated chunk by chunk: memory stays O(n^2 + chunk * features),
never a target-by-target or target-by-base matrix of the whole set.

KRR's own prediction K_xS R^-1 Y_S = K_xS G^-1 B does not depend on lam; lam
only shapes the labels, and so what a finite network trained on them learns.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .errors import ConfigError
from .evaluate import Recipe, init_model
from .progress import SOLVING, Meter, Progress, meter_callback
from .seeding import derive_seed


@dataclass
class RandomFeatures:
    """phi(x): penultimate features of `num_networks` random networks, concatenated and scaled."""

    arch: str
    num_networks: int
    seed: int
    in_channels: int
    num_classes: int
    image_size: int

    def __post_init__(self):
        if self.num_networks < 1:
            raise ConfigError(f"solve.num_networks must be at least 1, got {self.num_networks}")
        self.models = [init_model(Recipe(arch=self.arch), derive_seed(self.seed, "solve_net", i),
                                  self.in_channels, self.num_classes, self.image_size).eval()
                       for i in range(self.num_networks)]
        self.dim = sum(m.feature_dim for m in self.models)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
        """(N, dim) float64 features of x, computed `chunk` images at a time."""
        models = [m.to(x.device) for m in self.models]  # once, not per chunk
        out = []
        for i in range(0, x.shape[0], chunk):
            xc = x[i:i + chunk]
            out.append(torch.cat([m(xc, head=False) for m in models], dim=1).double())
        return torch.cat(out) / math.sqrt(self.dim)


def target_moments(features, target_x: torch.Tensor, target_y: torch.Tensor, num_classes: int, chunk: int = 2048,
                   progress: Callable[[int], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Phi_T^T Phi_T (dim x dim) and Phi_T^T Y_T (dim x C), float64, the target set taken `chunk`
    at a time: all the normal equations need of the target set, whatever the base examples
    (`progress(n)` is told the number of target images done since its last call)."""
    report = progress or (lambda n: None)
    second = cross = 0.0
    for i in range(0, target_x.shape[0], chunk):
        phi = features(target_x[i:i + chunk], chunk)
        second = second + phi.T @ phi
        cross = cross + phi.T @ torch.nn.functional.one_hot(target_y[i:i + chunk], num_classes).to(phi.dtype)
        report(phi.shape[0])
    return second, cross


def normal_equations(features, base_x: torch.Tensor, target_x: torch.Tensor, target_y: torch.Tensor,
                     num_classes: int, chunk: int = 2048, progress: Callable[[int], None] | None = None,
                     moments: tuple[torch.Tensor, torch.Tensor] | None = None,
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """K_SS, G = K_ST K_TS and B = K_ST Y_T (float64); `progress(n)` is told the number of images
    whose features were computed since its last call.

    With features phi, G = Phi_S (Phi_T^T Phi_T) Phi_S^T and B = Phi_S (Phi_T^T Y_T): the target
    set enters only through its `target_moments` (computed here, or passed as `moments`, so that
    several sets of base examples share one pass over the target set), and memory stays
    O(dim^2 + chunk * dim), never a target-by-base matrix."""
    report = progress or (lambda n: None)
    phi_s = features(base_x)
    report(base_x.shape[0])
    if moments is None:
        moments = target_moments(features, target_x, target_y, num_classes, chunk, report)
    second, cross = moments
    return phi_s @ phi_s.T, phi_s @ second @ phi_s.T, phi_s @ cross


def _ridge_matrix(k_ss: torch.Tensor, ridge_lambda: float) -> torch.Tensor:
    """R = K_SS + lam * mean(diag K_SS) * I: lam relative to the kernel's scale."""
    scale = float(k_ss.diagonal().mean())
    return k_ss + ridge_lambda * scale * torch.eye(k_ss.shape[0], dtype=k_ss.dtype, device=k_ss.device)


def solve_labels(k_ss: torch.Tensor, gram: torch.Tensor, rhs: torch.Tensor, ridge_lambda: float) -> torch.Tensor:
    """Y_S = R G^-1 B with R = K_SS + lam * mean(diag K_SS) * I: the minimiser of (1).

    `ridge_lambda` is relative to the kernel's scale (the mean of its diagonal),
    so one value suits any number of features.
    """
    if not ridge_lambda > 0:
        raise ConfigError(f"solve.ridge_lambda must be positive, got {ridge_lambda}")
    n = k_ss.shape[0]
    rank = int(torch.linalg.matrix_rank(gram))
    if rank < n:
        raise ConfigError(f"the kernel has rank {rank} on the {n} base examples, so their labels are not determined; "
                          "use more random networks (solve.num_networks), a larger solve.target_size or fewer "
                          "base examples")
    alpha = torch.linalg.solve(gram, rhs)  # the KRR dual coefficients, independent of lam
    return _ridge_matrix(k_ss, ridge_lambda) @ alpha


def krr_predict(k_xs: torch.Tensor, k_ss: torch.Tensor, labels: torch.Tensor, ridge_lambda: float) -> torch.Tensor:
    """Kernel ridge regression from (S, labels): K_xS (K_SS + lam * mean(diag) I)^-1 Y_S."""
    return k_xs @ torch.linalg.solve(_ridge_matrix(k_ss, ridge_lambda), labels.to(k_ss.dtype))


def label_solve(cfg, data, arch: str, progress: Progress | None = None,
                cache: dict | None = None) -> tuple[dict[float, torch.Tensor], dict]:
    """Solved labels of the base examples for every configured lambda, and what made them.

    The kernel sees only the target set (a seeded subset of `solve.target_size`
    examples); lambdas, temperatures and steps are chosen later on validation.
    Reports to `progress` as the phase 'solving labels', in images (base and target). With
    `cache` (a dict kept for the run), the target set's moments are computed once.
    """
    s = cfg.solve
    n_target = data.target_x.shape[0]
    size = n_target if s.target_size is None else min(s.target_size, n_target)
    g = torch.Generator().manual_seed(derive_seed(cfg.seed, "solve_target"))
    sel = torch.randperm(n_target, generator=g)[:size].to(data.target_x.device)
    features = RandomFeatures(arch, s.num_networks, derive_seed(cfg.seed, "solve"), data.channels,
                              data.num_classes, data.image_size)
    n = data.base_x.shape[0]
    if features.dim < n:
        raise ConfigError(f"{s.num_networks} random networks give {features.dim} features, fewer than the {n} base "
                          f"examples, so their labels are not determined; set solve.num_networks to at least "
                          f"{math.ceil(n / (features.dim / s.num_networks))}")
    if size < n:
        raise ConfigError(f"solve.target_size={size} is smaller than the {n} base examples; use at least {n}")
    key = ("solve_moments", arch, cfg.seed, s.num_networks, size)
    moments = None if cache is None else cache.get(key)
    with Meter(progress, SOLVING, n + (size if moments is None else 0), "image",
               detail=f"features of {s.num_networks} random networks") as meter:
        if moments is None:
            moments = target_moments(features, data.target_x[sel], data.target_y[sel], data.num_classes,
                                     progress=meter_callback(meter))
            if cache is not None:  # the target set's part, shared by later solves of this run
                cache[key] = moments
        k_ss, gram, rhs = normal_equations(features, data.base_x, None, None, data.num_classes,
                                           progress=meter_callback(meter), moments=moments)
        labels = {lam: solve_labels(k_ss, gram, rhs, lam).float() for lam in s.ridge_lambdas}
    info = {"kernel": "random-features", "num_networks": s.num_networks, "features": features.dim,
            "target_size": size, "ridge_lambdas": list(s.ridge_lambdas)}
    return labels, info
