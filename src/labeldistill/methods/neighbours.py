"""Nearest-neighbour labels (`knn`): each base image is labelled with the class distribution
of its k nearest target-set images (Euclidean distance between the normalised images), with
k chosen on the validation split.

No model is trained, so the labels take seconds: a data-dependent reference point between
true labels and the label makers that learn. Across datasets (letters labelled as digits) the
neighbours are target images, so no class remapping is needed.
"""
from __future__ import annotations

import torch

from .choose import Candidate
from .direct import direct_method
from .protocol import MethodContext

NEIGHBOURS = (5, 20, 50)  # the values of k offered to the step search
CHUNK = 256  # base images whose distances to the target set are held at once


@direct_method("knn", title="nearest-neighbour labels", order=55,
               summary="class distribution of each base image's k nearest target images (k on validation)")
def neighbour_labels(ctx: MethodContext):
    target = ctx.target_x.flatten(1)
    ks = sorted({min(k, target.shape[0]) for k in NEIGHBOURS})
    nearest = torch.cat([torch.cdist(b.flatten(1), target).topk(ks[-1], largest=False).indices
                         for b in ctx.base_x.split(CHUNK)])
    votes = torch.nn.functional.one_hot(ctx.target_y[nearest], ctx.num_classes).float()  # (n, k_max, C)
    return [Candidate(f"{k} nearest neighbours", votes[:, :k].mean(1), ctx.cfg.evaluate.loss, {"k": k})
            for k in ks], {}
