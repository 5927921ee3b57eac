"""Many models of one architecture as one network: models stacked along channels.

`train_and_evaluate` trains M evaluation models together. `torch.vmap` over
`functional_call` already turns each convolution into a grouped convolution,
but on the CPU it runs in NCHW layout, where every small per-channel op
(max-pool, ReLU, bias) of a LeNet is slow. Written directly, the M models are
one network whose channels are the M models' channels side by side:

- a convolution is one grouped convolution (groups=M) over an input whose
  channels are the M models' inputs; with an input shared by all models (the
  test set) the first convolution is an ordinary one with M*out channels;
- everything runs in `channels_last`, where per-channel ops vectorise over
  the M*channels vector of every pixel (here about 2x faster than NCHW for
  the training step and the convolutions of the evaluation forward);
- fully connected layers are batched matrix products over the model axis;
- without a graph (evaluation) a 2x2 max-pool is the maximum of four strided
  views, exactly equal to `max_pool2d` and several times faster here.

The result equals a loop over the ordinary modules up to floating-point
reassociation inside the convolutions (exactly, in float64, to ~1e-12; see
tests/test_evaluate_parallel.py). Architectures without a stacked forward
(ResNet, with its BatchNorm) use `vmap` instead.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .models import channels_last, max_pool2

Params = dict[str, torch.Tensor]
# forward(params, x, shared, head) -> (M, N, classes) logits or (M, N, features)
StackedForward = Callable[[Params, torch.Tensor, bool, bool], torch.Tensor]


def _stack_input(x: torch.Tensor, shared: bool) -> tuple[torch.Tensor, bool]:
    """(M, N, C, H, W) per-model inputs -> (N, M*C, H, W); a shared (N, C, H, W) stays.
    Either way with channels_last strides (for a one-channel shared batch too)."""
    if not shared:
        x = x.transpose(0, 1).flatten(1, 2)
    return channels_last(x), shared


def _conv(h: torch.Tensor, p: Params, name: str, first_shared: bool, m: int, **kw) -> torch.Tensor:
    w, b = p[f"{name}.weight"], p[f"{name}.bias"]
    groups = 1 if first_shared else m
    return F.conv2d(h, w.flatten(0, 1), b.flatten(), groups=groups, **kw)


_pool2 = max_pool2  # graph-free: max of four strided views


def _linear(h: torch.Tensor, p: Params, name: str) -> torch.Tensor:
    """h (M, N, in) -> (M, N, out) with each model's own weights."""
    return torch.baddbmm(p[f"{name}.bias"].unsqueeze(1), h, p[f"{name}.weight"].transpose(1, 2))


def _unstack(h: torch.Tensor, m: int) -> torch.Tensor:
    """(N, M*C, H, W) -> (M, N, C*H*W), each model's features in `flatten(1)` order."""
    n, mc, hh, ww = h.shape
    return h.reshape(n, m, mc // m, hh, ww).flatten(2).transpose(0, 1)


def _mlp_head(h: torch.Tensor, p: Params, head: bool) -> torch.Tensor:
    h = F.relu(_linear(h, p, "fc1"))
    h = F.relu(_linear(h, p, "fc2"))
    return _linear(h, p, "classifier") if head else h


def lenet_forward(p: Params, x: torch.Tensor, shared: bool, head: bool = True) -> torch.Tensor:
    m = p["conv1.weight"].shape[0]
    h, shared = _stack_input(x, shared)
    pad = 2 if h.shape[-1] <= 28 else 0  # as models.LeNet
    h = _conv(h, p, "conv1", shared, m, padding=pad)
    # ReLU and max-pool commute (ReLU is monotone): pooling first touches 4x fewer values.
    h = F.relu(_pool2(h))
    h = F.relu(_pool2(_conv(h, p, "conv2", False, m)))
    return _mlp_head(_unstack(h, m), p, head)


def _lrn(h: torch.Tensor, m: int, size: int = 4, alpha: float = 0.001 / 9.0, beta: float = 0.75,
         k: float = 1.0) -> torch.Tensor:
    """LocalResponseNorm across each model's own channels (not across models)."""
    n, mc, hh, ww = h.shape
    c = mc // m
    v = h.permute(0, 2, 3, 1).reshape(n, hh, ww, m, c)  # channels_last: a view
    sq = F.pad(v * v, (size // 2, (size - 1) // 2))
    s = sq[..., 0:c]
    for i in range(1, size):
        s = s + sq[..., i:i + c]
    div = (s / size).mul(alpha).add(k).pow(beta)
    return (v / div).reshape(n, hh, ww, mc).permute(0, 3, 1, 2)


def alexcifarnet_forward(p: Params, x: torch.Tensor, shared: bool, head: bool = True) -> torch.Tensor:
    m = p["conv1.weight"].shape[0]
    h, shared = _stack_input(x, shared)
    h = F.max_pool2d(F.relu(_conv(h, p, "conv1", shared, m, padding=2)), 3, 2, padding=1)
    h = _lrn(h, m)
    h = _lrn(F.relu(_conv(h, p, "conv2", False, m, padding=2)), m)
    h = F.max_pool2d(h, 3, 2, padding=1)
    return _mlp_head(_unstack(h, m), p, head)


STACKED: dict[str, StackedForward] = {"lenet": lenet_forward, "alexcifarnet": alexcifarnet_forward}


def stacked_forward(arch: str) -> StackedForward | None:
    """The stacked forward of an architecture, or None (use vmap)."""
    return STACKED.get(arch)
