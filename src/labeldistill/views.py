"""Views: labelled augmented copies of the base images (SPEC 12).

A distilled dataset may hold K *views* per base image instead of the image
itself: view k of base image i is a mix of image i with another base image
(mixup: a weighted sum; cutmix: a box of the other image pasted in), then a
random affine transform (rotation, scale, translation; edges replicated). Every
label maker labels the views as it would label base images, and the learner
trains on the fixed pool of views with their stored labels (any translation
of `evaluate.augment` is drawn on top of a view at every step, as it is on a
base image).

A view is a deterministic function of the base images and its parameters
(`ViewParams`: the two source images, the mixing weight or box, the affine
matrix). The parameters are drawn from the run's seed with numpy's PCG64
generator, so `draw_params(spec, n, h, w, seed)` gives the same numbers on every
machine; the artifact stores both the specification with its seed and the
parameters themselves, and `apply` makes the views again from the stored base
images.

The first view of every image is the image itself when `include_original`
(the paper's one label per image is then a subset of the pool).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ConfigError
from .seeding import derive_seed

MIXES = ("none", "mixup", "cutmix")
# What a view's `mix` code means in ViewParams.mix
MIX_CODES = {"none": 0, "mixup": 1, "cutmix": 2}


@dataclass(frozen=True)
class ViewSpec:
    """How the views of a run are drawn (the config's `views` section, resolved)."""

    per_image: int = 0  # K views per base image; 0: the base images themselves (the paper)
    include_original: bool = True  # view 0 of every image is the image itself
    rotate: float = 15.0  # degrees, uniform in [-rotate, rotate]
    scale: float = 0.1  # uniform in [1 - scale, 1 + scale]
    translate: float = 0.1  # a fraction of the image side, uniform in [-translate, translate] per axis
    mix: str = "cutmix"  # none | mixup | cutmix (the config's default, ViewsConfig)
    mix_alpha: float = 1.0  # the mixing weight ~ Beta(alpha, alpha)

    def __post_init__(self):
        check_spec(self)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "ViewSpec":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def check_spec(spec) -> None:
    """A one-line ConfigError for a views section that cannot be drawn."""
    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    need(isinstance(spec.per_image, int) and spec.per_image >= 0,
         f"views.per_image must be a whole number >= 0, got {spec.per_image!r}")
    need(spec.mix in MIXES, f"views.mix must be one of {', '.join(MIXES)}, got {spec.mix!r}")
    need(0 <= spec.rotate <= 180, f"views.rotate must be between 0 and 180 degrees, got {spec.rotate}")
    need(0 <= spec.scale < 1, f"views.scale must be in [0, 1), got {spec.scale}")
    need(0 <= spec.translate <= 1, f"views.translate must be in [0, 1], got {spec.translate}")
    need(spec.mix_alpha > 0, f"views.mix_alpha must be positive, got {spec.mix_alpha}")


@dataclass
class ViewParams:
    """The parameters of N views of n base images."""

    sources: torch.Tensor  # (N, 2) long: the base image mixed into, and the one mixed in
    weight: torch.Tensor  # (N,) float32: the share of sources[:, 0] (mixup weight, or the area cutmix kept)
    mix: torch.Tensor  # (N,) uint8: MIX_CODES
    box: torch.Tensor  # (N, 4) long: cutmix's box (top, bottom, left, right), all 0 otherwise
    theta: torch.Tensor  # (N, 2, 3) float32: the affine matrix of F.affine_grid (align_corners=False)

    def __len__(self) -> int:
        return self.sources.shape[0]

    def tensors(self) -> dict[str, torch.Tensor]:
        """As the artifact stores them."""
        return {"view_sources": self.sources, "view_weight": self.weight, "view_mix": self.mix,
                "view_box": self.box, "view_theta": self.theta}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> "ViewParams":
        return cls(tensors["view_sources"].long(), tensors["view_weight"].float(), tensors["view_mix"],
                   tensors["view_box"].long(), tensors["view_theta"].float())

    def equals(self, other: "ViewParams") -> bool:
        return all(torch.equal(a.cpu(), b.cpu()) for a, b in zip(self.tensors().values(), other.tensors().values()))


def draw_params(spec: ViewSpec, n: int, height: int, width: int, seed: int) -> ViewParams:
    """`spec.per_image` views of each of `n` base images, drawn from `seed`: view k of image i is row
    i * K + k."""
    k = spec.per_image
    if k < 1:
        raise ValueError("draw_params needs views.per_image >= 1")
    rng = np.random.Generator(np.random.PCG64(derive_seed(seed, "views")))
    total = n * k
    first = np.repeat(np.arange(n), k)
    other = rng.integers(0, n, size=total)
    lam = rng.beta(spec.mix_alpha, spec.mix_alpha, size=total)
    angle = rng.uniform(-spec.rotate, spec.rotate, size=total) * math.pi / 180.0
    scale = rng.uniform(1.0 - spec.scale, 1.0 + spec.scale, size=total)
    shift = rng.uniform(-spec.translate, spec.translate, size=(total, 2)) * 2.0  # affine_grid's [-1, 1] coordinates
    centre = rng.uniform(0.0, 1.0, size=(total, 2))
    box = np.zeros((total, 4), dtype=np.int64)
    weight = np.ones(total)
    mix = np.full(total, MIX_CODES[spec.mix], dtype=np.uint8)
    if spec.mix == "mixup":
        weight = lam
    elif spec.mix == "cutmix":
        # A box of about (1 - lam) of the area, centred at a random point, clipped to the image.
        cut = np.sqrt(1.0 - lam)
        bh, bw = np.round(cut * height).astype(np.int64), np.round(cut * width).astype(np.int64)
        cy, cx = (centre[:, 0] * height).astype(np.int64), (centre[:, 1] * width).astype(np.int64)
        top, bottom = np.clip(cy - bh // 2, 0, height), np.clip(cy - bh // 2 + bh, 0, height)
        left, right = np.clip(cx - bw // 2, 0, width), np.clip(cx - bw // 2 + bw, 0, width)
        box = np.stack([top, bottom, left, right], 1)
        weight = 1.0 - (bottom - top) * (right - left) / float(height * width)
    else:
        other = first.copy()
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    theta = np.stack([np.stack([cos, -sin, shift[:, 0]], 1), np.stack([sin, cos, shift[:, 1]], 1)], 1)
    if spec.include_original:
        orig = np.arange(n) * k
        other[orig] = first[orig]
        weight[orig] = 1.0
        mix[orig] = MIX_CODES["none"]
        box[orig] = 0
        theta[orig] = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    return ViewParams(torch.from_numpy(np.stack([first, other], 1)).long(),
                      torch.from_numpy(weight).float(), torch.from_numpy(mix),
                      torch.from_numpy(box).long(), torch.from_numpy(theta).float())


def is_identity(params: ViewParams) -> torch.Tensor:
    """(N,) booleans: views that are a base image itself."""
    eye = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    return (params.mix == 0) & (params.theta.cpu() == eye).flatten(1).all(1)


@torch.no_grad()
def apply(images: torch.Tensor, params: ViewParams, chunk: int = 4096) -> torch.Tensor:
    """The views (N, C, H, W) of `images` (n, C, H, W): mixed, then transformed.

    Normalised or raw pixels alike: mixing and bilinear sampling with replicated
    edges commute with a per-channel affine normalisation. A view that is its
    base image itself is an exact copy.
    """
    out = []
    identity = is_identity(params)
    for start in range(0, len(params), chunk):
        sl = slice(start, start + chunk)
        src = params.sources[sl].to(images.device)
        a, b = images[src[:, 0]], images[src[:, 1]]
        mask = params.weight[sl].to(images.device, images.dtype).view(-1, 1, 1, 1).repeat(1, 1, *images.shape[-2:])
        cut = (params.mix[sl] == MIX_CODES["cutmix"]).nonzero().flatten().tolist()
        for j in cut:
            t, bo, l, r = params.box[start + j].tolist()
            mask[j].fill_(1.0)
            mask[j, :, t:bo, l:r] = 0.0
        mixed = mask * a + (1.0 - mask) * b
        theta = params.theta[sl].to(images.device, images.dtype)
        grid = F.affine_grid(theta, list(mixed.shape), align_corners=False)
        warped = F.grid_sample(mixed, grid, mode="bilinear", padding_mode="border", align_corners=False)
        keep = identity[sl].to(images.device).view(-1, 1, 1, 1)
        out.append(torch.where(keep, a, warped))
    return torch.cat(out) if out else images[:0]


def true_labels(params: ViewParams, classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N, num_classes): each view's two base classes in proportion to their share of the view."""
    onehot = F.one_hot(classes.cpu().long(), num_classes).float()
    w = params.weight.view(-1, 1)
    return w * onehot[params.sources[:, 0]] + (1.0 - w) * onehot[params.sources[:, 1]]


@dataclass
class Views:
    """A run's views: how they were drawn, their parameters, and the views themselves."""

    spec: ViewSpec
    seed: int
    params: ViewParams
    images: torch.Tensor  # (N, C, H, W) normalised, as the learner sees them

    @classmethod
    def make(cls, spec: ViewSpec, base_x: torch.Tensor, seed: int) -> "Views":
        params = draw_params(spec, base_x.shape[0], base_x.shape[-2], base_x.shape[-1], seed)
        return cls(spec, seed, params, apply(base_x, params))

    def card(self) -> dict:
        """What a result or an artifact card says of the views."""
        return {**self.spec.as_dict(), "seed": self.seed, "num_views": len(self.params),
                "order": "view k of base image i is row i * per_image + k",
                "definition": "mix sources[:, 0] and sources[:, 1] (mixup: weight * a + (1 - weight) * b; cutmix: "
                              "b's pixels inside box), then F.grid_sample(bilinear, padding 'border', "
                              "align_corners=False) on F.affine_grid(theta); the same on normalised images"}


def view_spec(cfg) -> ViewSpec | None:
    """The views a config asks for, or None (views.per_image 0: the base images themselves)."""
    v = cfg.views
    if v.per_image == 0:
        return None
    return ViewSpec(per_image=v.per_image, include_original=v.include_original, rotate=v.rotate, scale=v.scale,
                    translate=v.translate, mix=v.mix, mix_alpha=v.mix_alpha)


def make_views(cfg, base_x: torch.Tensor) -> Views | None:
    """The run's views of its (normalised) base images, drawn from its seed; None without views."""
    spec = view_spec(cfg)
    return None if spec is None else Views.make(spec, base_x, cfg.seed)
