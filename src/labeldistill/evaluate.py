"""The single train-from-scratch routine (SPEC 4.4, 5 and 6).

Validation, test, the baselines' step search and every analysis train fresh
models only on the base examples x~ with labels y~ and measure them on held-out
data. `train_and_evaluate` trains many such models together: their parameters
are stacked (`torch.func.stack_module_state`), the forward runs under `vmap`,
one elementwise optimiser updates the stacked tensors and the losses are summed
over models. Minibatch indices are drawn outside `vmap` from one explicit
generator per model, so the result equals `train_and_evaluate_sequential`, an
ordinary loop over ordinary modules with the same seeds (tested).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from .errors import RunError
from .heads import append_ones, rr_logits, update_head
from .models import create_model, normalises_with_batch_statistics
from .progress import REPORT_EVERY_STEPS
from .seeding import seeded_global_rng
from .stacked import stacked_forward

# Checked on real MNIST (100 base examples, true labels, LeNet, both heads; 100-1000 steps):
# sgd 0.1 is the largest stable rate (0.3 diverges early with a linear head); momentum 0.03
# beats 0.01 at every step count by 1-5 points; adam 1e-3 is the paper's default.
DEFAULT_LR = {"adam": 1e-3, "sgd": 0.1, "momentum": 0.03}
# The parallel evaluation forwards at most this many model-images at once (20 LeNets: 51 test images).
EVAL_MAX_IMAGES = 1024
# BatchNorm of a tested ResNet (SPEC 3), as in the reference per variant. Its or2 script (linear
# head) normalises test images with the statistics of their test batch of 1,024 images (its test
# loader's batch): the sets are forwarded in exactly these batches, whatever `max_images`.
TEST_BN_BATCH = 1024
# Its rr script tests in eval mode, with running estimates. It forwards each training minibatch
# twice in training mode (features for W_local, then logits), so the estimates move twice with the
# same batch statistics at torch's momentum 0.1: 1 - 0.9**2 = 0.19 for our single forward.
RR_BN_MOMENTUM = 1.0 - (1.0 - 0.1) ** 2


@dataclass(frozen=True)
class Recipe:
    """How an evaluation model is trained: architecture, head, optimiser, minibatch."""

    arch: str
    head: str = "linear"  # 'linear' (or2, baselines) or 'rr' (ridge-regression head)
    optimizer: str = "adam"
    lr: float | None = None
    batch_size: int = 50
    ridge_lambda: float = 1.0
    head_momentum: float = 0.99
    calibration_lr: float = 0.01
    # 'ce': soft cross-entropy on label distributions (the paper's learner); 'mse': squared
    # error between the logits and real-valued label vectors (kernel label solving's learner).
    loss: str = "ce"
    # Random translations of the base images by up to this many pixels in each direction,
    # drawn anew at every step (0: none, the paper's learner). The labels stay those of the
    # untranslated image; most image-distillation evaluations train with such augmentation.
    augment: int = 0
    # 'detached' or 'reference': whether the model's loss differentiates the global RR
    # head's W_local part through the features (heads.RR_GRADIENTS).
    rr_gradients: str = "detached"

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]

    @classmethod
    def from_config(cls, cfg, arch: str, head: str, optimizer: str | None = None) -> "Recipe":
        """How the evaluation models of config `cfg` learn: its evaluate section (optimizer, lr, loss,
        translations), the inner batch size and the RR head's options of its distill section, with
        `head` (evaluate.head or the method's own). Another `optimizer` (a transfer analysis)
        trains with that optimizer's default learning rate."""
        d, e = cfg.distill, cfg.evaluate
        return cls(arch=arch, head=head, optimizer=optimizer or e.optimizer,
                   lr=e.lr if optimizer in (None, e.optimizer) else None, batch_size=cfg.inner_batch_size,
                   ridge_lambda=d.ridge_lambda, head_momentum=d.head_momentum, calibration_lr=d.calibration_lr,
                   loss=e.loss, augment=e.augment, rr_gradients=d.rr_gradients)


@dataclass
class EvalResult:
    """Errors and losses (%, mean CE) of every model at every evaluated step."""

    steps: list[int]
    errors: torch.Tensor  # (len(steps), num_models), percent
    losses: torch.Tensor  # (len(steps), num_models)

    def at(self, step: int) -> tuple[list[float], list[float]]:
        i = self.steps.index(step)
        return self.errors[i].tolist(), self.losses[i].tolist()


def make_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    """The evaluation models' optimiser, as one fused kernel where torch has it for these tensors.

    On the CPU torch's default is a Python loop over the parameters; the fused
    update of 20 stacked LeNets takes 0.4 ms instead of 4.1 ms here, and equals
    the loop up to rounding (tested).
    """
    if name == "adam":
        cls, kw = torch.optim.Adam, {}
    elif name in ("sgd", "momentum"):
        cls, kw = torch.optim.SGD, {"momentum": 0.9} if name == "momentum" else {}
    else:
        raise ValueError(f"unknown optimizer {name!r}")
    params = list(params)
    try:
        return cls(params, lr=lr, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):  # a device or dtype without a fused kernel
        return cls(params, lr=lr, **kw)


LOSSES = ("ce", "mse")


def training_loss(logits: torch.Tensor, targets: torch.Tensor, kind: str = "ce") -> torch.Tensor:
    """Per-model training loss on a minibatch: mean over examples (and, for 'mse', classes).

    Leading dimensions are models; (..., batch, C) -> (...). 'ce' is the soft
    cross-entropy sum_c -y_c log softmax(z)_c; 'mse' is mean_c (z_c - y_c)^2.
    """
    if kind == "ce":
        return -(targets * torch.log_softmax(logits, -1)).sum(-1).mean(-1)
    if kind == "mse":
        return (logits - targets).pow(2).mean(-1).mean(-1)
    raise ValueError(f"unknown loss {kind!r}; known: {', '.join(LOSSES)}")


def init_model(recipe: Recipe, seed: int, in_channels: int, num_classes: int, image_size: int,
               bn_momentum: float | None = None):
    """A fresh model whose initialisation depends only on `seed` (on the CPU, then moved).

    The default BatchNorm uses batch statistics (meta-learning); evaluation
    models pass `eval_bn_momentum(recipe)`."""
    with seeded_global_rng(seed):
        return create_model(recipe.arch, in_channels, num_classes, image_size, bn_momentum=bn_momentum)


def eval_bn_momentum(recipe: Recipe) -> float | None:
    """BatchNorm of an evaluation model: running estimates with the RR head, batch statistics otherwise."""
    return RR_BN_MOMENTUM if recipe.head == "rr" else None


def minibatch_indices(num_examples: int, batch_size: int, num_steps: int, seed: int) -> torch.Tensor:
    """(num_steps, batch_size) indices, each row drawn without replacement."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(num_examples, generator=g)[:batch_size] for _ in range(num_steps)])


def augment_offsets(num_steps: int, batch_size: int, shift: int, seed: int) -> torch.Tensor:
    """(num_steps, batch_size, 2) crop offsets in [0, 2 * shift] (0 = shifted up/left by `shift`)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2 * shift + 1, (num_steps, batch_size, 2), generator=g)


def translate(x: torch.Tensor, offsets: torch.Tensor, shift: int) -> torch.Tensor:
    """Translate every image of x (..., C, H, W) by its own offset (..., 2), edges replicated.

    The image is padded by `shift` pixels on each side (repeating its border, the
    background on MNIST-like data) and an H x W window is cut at `offsets`.
    """
    lead, (c, h, w) = x.shape[:-3], x.shape[-3:]
    flat = x.reshape(-1, c, h, w)
    off = offsets.reshape(-1, 2).to(x.device)
    padded = F.pad(flat, (shift, shift, shift, shift), mode="replicate")
    rows = off[:, 0, None] + torch.arange(h, device=x.device)  # (N, H)
    cols = off[:, 1, None] + torch.arange(w, device=x.device)  # (N, W)
    n = torch.arange(flat.shape[0], device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[n, rows[:, :, None], cols[:, None, :]]  # (N, H, W, C)
    return out.permute(0, 3, 1, 2).reshape(*lead, c, h, w)


def _aug_seed(data_seed: int) -> int:
    return (data_seed * 6364136223846793005 + 1442695040888963407) % (2**63 - 1)


def _eval_steps(num_steps: int, eval_steps: Sequence[int] | None) -> list[int]:
    steps = sorted({int(s) for s in (eval_steps or [num_steps]) if s > 0})
    return steps


def _data_seeds(seeds: Sequence[int]) -> list[int]:
    return [(s * 2654435761 + 97) % (2**63 - 1) for s in seeds]


# ---------------------------------------------------------------------------
# parallel path


def train_and_evaluate(
    recipe: Recipe,
    base_x: torch.Tensor,
    labels: torch.Tensor,
    seeds: Sequence[int],
    num_steps: int,
    eval_x: torch.Tensor,
    eval_y: torch.Tensor,
    eval_steps: Sequence[int] | None = None,
    max_models: int = 32,
    max_images: int = EVAL_MAX_IMAGES,
    progress: Callable[[int], None] | None = None,
) -> EvalResult:
    """Train one model per seed for max(eval_steps) steps; evaluate at each of `eval_steps`.

    `labels` is (n, C) shared by all models, or (M, n, C) one set per model.
    Models are trained `max_models` at a time; evaluation forwards at most
    `max_images` model-images at once (at least one test batch of
    `TEST_BN_BATCH` images for models with batch-statistics BatchNorm). Neither
    changes a model's result. `progress(n)` is told every `REPORT_EVERY_STEPS`
    steps how many model-steps were trained since its last call (len(seeds) *
    max(eval_steps) in all).
    """
    steps = _eval_steps(num_steps, eval_steps)
    if not vmap_supported(recipe, base_x):  # a model of the user's own that vmap cannot run: one at a time
        return train_and_evaluate_sequential(recipe, base_x, labels, seeds, num_steps, eval_x, eval_y, eval_steps,
                                             progress=progress)
    errors, losses = [], []
    for start in range(0, len(seeds), max_models):
        chunk = list(seeds[start:start + max_models])
        lab = labels if labels.dim() == 2 else labels[start:start + len(chunk)]
        with _seeded_random_ops(chunk, base_x.device):  # dropout in a model of one's own: drawn from the seeds
            e, l = _train_chunk(recipe, base_x, lab, chunk, steps, eval_x, eval_y, max_images, progress)
        errors.append(e)
        losses.append(l)
    return EvalResult(steps, torch.cat(errors, dim=1), torch.cat(losses, dim=1))


def _seeded_random_ops(seeds: Sequence[int], device: torch.device):
    """The global generators (which random layers such as dropout draw from) set from the
    models' seeds, so that a training run repeats exactly; the caller's state is kept."""
    return seeded_global_rng((sum(int(s) * (i + 1) for i, s in enumerate(seeds)) * 1000003 + 7) % (2**63 - 1),
                             device)


_VMAP_OK: dict[tuple, bool] = {}


def vmap_supported(recipe: Recipe, base_x: torch.Tensor) -> bool:
    """Whether many models of `recipe.arch` can train as one under `torch.func.vmap`. Built-in
    architectures can; a model of the user's own is tried once (two copies, a forward and a
    backward on two base images) and, if vmap cannot run it (data-dependent control flow,
    in-place ops it does not support, ...), evaluation falls back to the sequential loop."""
    from .models import BUILTIN_MODELS

    if recipe.arch in BUILTIN_MODELS:
        return True
    key = (recipe.arch, tuple(base_x.shape[1:]), recipe.head)
    if key not in _VMAP_OK:
        try:
            models = [init_model(recipe, s, base_x.shape[1], 2, base_x.shape[-1]).to(base_x.device, base_x.dtype)
                      for s in (0, 1)]
            params, buffers = stack_module_state(models)
            base = copy.deepcopy(models[0]).to("meta").train()

            def fn(p, b, x):
                return functional_call(base, (p, b), (x,), {"head": recipe.head != "rr"})

            x = base_x[:2].unsqueeze(0).expand(2, *base_x[:2].shape)
            with seeded_global_rng(0, base_x.device):
                vmap(fn, in_dims=(0, 0, 0), randomness="different")(params, buffers, x).sum().backward()
            _VMAP_OK[key] = True
        except Exception:  # noqa: BLE001 - any failure means: train them one at a time
            _VMAP_OK[key] = False
    return _VMAP_OK[key]


def _train_chunk(recipe, base_x, labels, seeds, steps, eval_x, eval_y, max_images, progress=None):
    device, dtype = base_x.device, base_x.dtype
    n, num_classes = base_x.shape[0], labels.shape[-1]
    m = len(seeds)
    models = [init_model(recipe, s, base_x.shape[1], num_classes, base_x.shape[-1],
                         eval_bn_momentum(recipe)).to(device, dtype) for s in seeds]
    params, buffers = stack_module_state(models)  # buffers: BatchNorm running estimates, updated in place
    base = copy.deepcopy(models[0]).to("meta").train()
    del models
    bn_batch = TEST_BN_BATCH if normalises_with_batch_statistics(base) else None
    batch = min(recipe.batch_size, n)
    # All minibatch indices up front, one generator per model: no host work in the loop.
    idx = torch.stack([minibatch_indices(n, batch, steps[-1], s) for s in _data_seeds(seeds)], 1).to(device)
    if recipe.augment:
        offsets = torch.stack([augment_offsets(steps[-1], batch, recipe.augment, _aug_seed(s))
                               for s in _data_seeds(seeds)], 1).to(device)  # (steps, m, batch, 2)
    shared_labels = labels.dim() == 2
    stacked = stacked_forward(recipe.arch) if not buffers else None

    def _take(tensors, models):  # the stacked tensors of the models in slice `models`
        return {k: v[models] for k, v in tensors.items()}

    if stacked is not None:
        def train_forward(x, head):  # x (m, batch, C, H, W): every model its own minibatch
            return stacked(params, x, False, head)

        def eval_forward(x, head, models):  # x (N, C, H, W) shared by all models
            return stacked(_take(params, models), x, True, head)
    else:
        def _fn(p, b, x, head):
            return functional_call(base, (p, b), (x,), {"head": head})

        # randomness="different": a model of the user's own may hold dropout, each model its own draw.
        def train_forward(x, head):
            return vmap(_fn, in_dims=(0, 0, 0, None), randomness="different")(params, buffers, x, head)

        def eval_forward(x, head, models):
            fn = vmap(_fn, in_dims=(0, 0, None, None), randomness="different")
            return fn(_take(params, models), _take(buffers, models), x, head)

    rr = recipe.head == "rr"
    through_head = recipe.rr_gradients == "reference"
    trainable = [p for k, p in params.items() if not (rr and k.startswith("classifier."))]
    opt = make_optimizer(recipe.optimizer, trainable, recipe.learning_rate)
    if rr:
        feat_dim = base.feature_dim + 1
        weights = torch.zeros(m, feat_dim, num_classes, device=device, dtype=dtype)
        scale = torch.ones(m, device=device, dtype=dtype, requires_grad=True)
        scale_opt = torch.optim.Adam([scale], lr=recipe.calibration_lr)

    errors = torch.zeros(len(steps), m, dtype=torch.float64)
    losses = torch.zeros(len(steps), m, dtype=torch.float64)
    next_eval = reported = 0
    for step in range(1, steps[-1] + 1):
        bi = idx[step - 1]  # (m, batch): inner minibatch x~', y~' of every model
        xb = base_x[bi]
        if recipe.augment:
            xb = translate(xb, offsets[step - 1], recipe.augment)
        yb = labels[bi] if shared_labels else torch.gather(
            labels, 1, bi[..., None].expand(-1, -1, num_classes))
        if rr:
            phi = append_ones(train_forward(xb, False))
            weights = update_head(weights, phi if through_head else phi.detach(), yb,
                                  recipe.ridge_lambda, recipe.head_momentum)
            logits = rr_logits(phi, weights, scale)
        else:
            logits = train_forward(xb, True)
        # Each model's loss depends only on its own parameters, so the gradient
        # of the sum is every model's own gradient.
        loss = training_loss(logits, yb, recipe.loss).sum()
        opt.zero_grad(set_to_none=True)
        if rr:
            scale_opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if rr:
            scale_opt.step()
        if step == steps[next_eval]:
            with torch.no_grad():
                head = (weights, scale) if rr else None
                base.eval()  # BatchNorm with running estimates uses them from here
                e, l = _evaluate_stacked(eval_forward, m, head, eval_x, eval_y, max_images, bn_batch)
                base.train()
            errors[next_eval], losses[next_eval] = e, l
            next_eval += 1
        if progress is not None and (step % REPORT_EVERY_STEPS == 0 or step == steps[-1]):
            progress(m * (step - reported))
            reported = step
    return errors, losses


@torch.no_grad()
def _evaluate_stacked(forward, m, head, x, y, max_images, bn_batch=None):
    """Errors (%) and mean CE of all m models on (x, y), `max_images` model-images at a time.

    Models whose BatchNorm uses batch statistics (`bn_batch` set) see the set in
    consecutive batches of exactly `bn_batch` images, and the models are taken
    max_images // bn_batch at a time instead: a model's result depends neither
    on how many models are evaluated together nor on `max_images`.
    """
    if bn_batch is None:
        images, group = max(1, max_images // m), m
    else:
        images, group = bn_batch, max(1, max_images // bn_batch)
    wrong = torch.zeros(m, device=x.device, dtype=torch.long)
    loss_sum = torch.zeros(m, device=x.device, dtype=torch.float64)
    for j in range(0, m, group):
        models = slice(j, min(j + group, m))
        k = models.stop - models.start
        for i in range(0, x.shape[0], images):
            xc, yc = x[i:i + images], y[i:i + images]
            if head is not None:
                out = rr_logits(append_ones(forward(xc, False, models)), head[0][models], head[1][models])
            else:
                out = forward(xc, True, models)
            wrong[models] += (out.argmax(-1) != yc).sum(-1)
            loss_sum[models] += F.cross_entropy(out.transpose(1, 2), yc.expand(k, -1), reduction="none").sum(-1)
    return (100.0 * wrong.double() / x.shape[0]).cpu(), (loss_sum / x.shape[0]).cpu()


# ---------------------------------------------------------------------------
# sequential reference path: ordinary modules, one model at a time


def train_and_evaluate_sequential(
    recipe: Recipe,
    base_x: torch.Tensor,
    labels: torch.Tensor,
    seeds: Sequence[int],
    num_steps: int,
    eval_x: torch.Tensor,
    eval_y: torch.Tensor,
    eval_steps: Sequence[int] | None = None,
    eval_batch: int = TEST_BN_BATCH,
    progress: Callable[[int], None] | None = None,
) -> EvalResult:
    """The plain loop the parallel path must equal: one `nn.Module` and optimiser per model
    (`progress` as for `train_and_evaluate`)."""
    steps = _eval_steps(num_steps, eval_steps)
    device = base_x.device
    errors = torch.zeros(len(steps), len(seeds), dtype=torch.float64)
    losses = torch.zeros(len(steps), len(seeds), dtype=torch.float64)
    for j, (seed, data_seed) in enumerate(zip(seeds, _data_seeds(seeds))):
        with _seeded_random_ops([seed], device):
            _train_one(recipe, base_x, labels if labels.dim() == 2 else labels[j], seed, data_seed, steps, eval_x,
                       eval_y, eval_batch, errors[:, j], losses[:, j], progress)
    return EvalResult(steps, errors, losses)


def _train_one(recipe, base_x, lab, seed, data_seed, steps, eval_x, eval_y, eval_batch, errors, losses,
               progress=None) -> None:
    """One model of the sequential loop; its errors and losses at `steps` are written in place."""
    device = base_x.device
    n, num_classes = base_x.shape[0], lab.shape[-1]
    batch = min(recipe.batch_size, n)
    model = init_model(recipe, seed, base_x.shape[1], num_classes, base_x.shape[-1],
                       eval_bn_momentum(recipe)).to(device, base_x.dtype)
    rr = recipe.head == "rr"
    through_head = recipe.rr_gradients == "reference"
    trainable = [p for k, p in model.named_parameters() if not (rr and k.startswith("classifier."))]
    opt = make_optimizer(recipe.optimizer, trainable, recipe.learning_rate)
    if rr:
        weights = torch.zeros(model.feature_dim + 1, num_classes, device=device, dtype=base_x.dtype)
        scale = torch.ones((), device=device, dtype=base_x.dtype, requires_grad=True)
        scale_opt = torch.optim.Adam([scale], lr=recipe.calibration_lr)
    idx = minibatch_indices(n, batch, steps[-1], data_seed).to(device)
    if recipe.augment:
        offsets = augment_offsets(steps[-1], batch, recipe.augment, _aug_seed(data_seed)).to(device)
    k = reported = 0
    for step in range(1, steps[-1] + 1):
        xb, yb = base_x[idx[step - 1]], lab[idx[step - 1]]
        if recipe.augment:
            xb = translate(xb, offsets[step - 1], recipe.augment)
        if rr:
            phi = append_ones(model(xb, head=False))
            weights = update_head(weights, phi if through_head else phi.detach(), yb,
                                  recipe.ridge_lambda, recipe.head_momentum)
            logits = rr_logits(phi, weights, scale)
        else:
            logits = model(xb)
        loss = training_loss(logits, yb, recipe.loss)
        opt.zero_grad(set_to_none=True)
        if rr:
            scale_opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if rr:
            scale_opt.step()
        if step == steps[k]:
            wrong, total_loss = 0, 0.0
            model.eval()
            with torch.no_grad():
                for i in range(0, eval_x.shape[0], eval_batch):
                    xc, yc = eval_x[i:i + eval_batch], eval_y[i:i + eval_batch]
                    out = rr_logits(append_ones(model(xc, head=False)), weights, scale) if rr else model(xc)
                    wrong += int((out.argmax(-1) != yc).sum())
                    total_loss += float(F.cross_entropy(out, yc, reduction="sum"))
            model.train()
            errors[k] = 100.0 * wrong / eval_x.shape[0]
            losses[k] = total_loss / eval_x.shape[0]
            k += 1
        if progress is not None and (step % REPORT_EVERY_STEPS == 0 or step == steps[-1]):
            progress(step - reported)
            reported = step


# The reference evaluates after these steps with more than 100 base examples (its
# `ITER in {9, 24, 74, 100, 200, ...}` after step ITER + 1).
_LARGE_STEP_GRID = (10, 25, 75, 101, 201, 301, 501, 701, 1001, 1201, 1501, 1701)


def step_grid(num_base_examples: int) -> list[int]:
    """Steps at which the baselines' single validation model is evaluated (SPEC 5):
    10, 25, 75 and every 50 steps up to 1000 (50 and 100 included), or the twelve
    counts of `_LARGE_STEP_GRID` with more than 100 base examples."""
    if num_base_examples > 100:
        return list(_LARGE_STEP_GRID)
    return sorted({10, 25, 75, *range(50, 1001, 50)})


def summarize(values: Sequence[float]) -> tuple[float, float]:
    """Mean and (population) standard deviation."""
    if not values:
        return math.nan, math.nan
    t = torch.tensor(list(values), dtype=torch.float64)
    return float(t.mean()), float(t.std(unbiased=False)) if len(values) > 1 else 0.0


def accuracy_summary(errors: Sequence[float]) -> dict:
    """Test errors (%) of several models -> their accuracies, mean and std, as results report them."""
    acc = [100.0 - e for e in errors]
    mean, std = summarize(acc)
    return {"test_accuracy": acc, "test_accuracy_mean": mean, "test_accuracy_std": std,
            "test_error": list(errors), "test_error_mean": 100.0 - mean}


# A diverged evaluation model predicts one class (accuracy at chance) with a loss far above
# a uniform guess's log C, or its loss is no longer finite (NaN weights predict class 0,
# which reads as a plausible "9.80 %" on MNIST). Training losses are not checked apart:
# a non-finite training loss makes the weights, and so the measured loss, non-finite.
CHANCE_MARGIN = 1.5  # accuracy up to 1.5 / C counts as chance
EXPLODED_LOSS = 10.0  # times log C


def diverged(res: EvalResult, num_classes: int) -> torch.Tensor:
    """(len(steps), num_models) booleans: the models that had diverged at each evaluated step."""
    at_chance = res.errors >= 100.0 * (1.0 - CHANCE_MARGIN / num_classes)
    exploded = res.losses > EXPLODED_LOSS * math.log(max(num_classes, 2))
    return ~torch.isfinite(res.losses) | (at_chance & exploded)


def lr_advice(recipe: Recipe, setting: str = "evaluate.lr") -> str:
    """What to lower when `recipe`'s models diverge, with the values in use."""
    return (f"lower {setting} (now {recipe.learning_rate:g} with the {recipe.optimizer} optimizer and the "
            f"{recipe.head} head)")


def check_not_diverged(res: EvalResult, num_classes: int, what: str, advice: str) -> None:
    """Raise a one-line `RunError` naming `advice` when any of `res`'s models diverged."""
    bad = diverged(res, num_classes)
    if not bool(bad.any()):
        return
    i, j = (int(v) for v in bad.nonzero()[0])
    models = int(bad.any(0).sum())
    raise RunError(f"{models} of {bad.shape[1]} {what} diverged (loss {float(res.losses[i, j]):.3g}, accuracy "
                   f"{100.0 - float(res.errors[i, j]):.2f} % after {res.steps[i]} steps); {advice}")
