"""A fixed benchmark suite (`labeldistill bench`): the outer step and parallel evaluation.

Figures are medians over `repeats`; the sequential and parallel evaluations are
measured in the same run, interleaved, so that their ratio means something on a
shared machine. The library never prints: `run_bench` returns a dict and the
CLI formats it.
"""
from __future__ import annotations

import platform
import resource
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from .errors import DataError
from .evaluate import EVAL_MAX_IMAGES, Recipe, init_model, train_and_evaluate, train_and_evaluate_sequential
from .labels import uniform_labels
from .meta.common import Distilled
from .meta.or2 import SecondOrder
from .meta.reset import ResetTracker
from .meta.rr import RidgeRegression


@dataclass(frozen=True)
class Suite:
    """Sizes of the suite; `QUICK` is a smoke version of `FULL`."""

    batch_size: int = 1024  # target minibatch x_t
    num_base: int = 100  # base examples x~
    inner_batch: int = 50  # inner minibatch x~'
    step_warmup: int = 3
    step_count: int = 10  # timed outer steps per repeat
    eval_models: int = 20
    eval_steps: int = 300
    eval_images: int = 10_000
    target_pool: int = 10_000  # target-set images to draw minibatches from


FULL = Suite()
QUICK = Suite(batch_size=32, num_base=20, inner_batch=10, step_warmup=1, step_count=1,
              eval_models=2, eval_steps=2, eval_images=64, target_pool=64)

Progress = Callable[[str], None]


def _mnist_like(root: str | None, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Normalised MNIST training images when `root` has them, else N(0, 1) noise of that shape."""
    if root is not None:
        try:
            from .data import to_pixels
            from .sources import get_info, load_raw

            raw = load_raw("mnist", root=root, download=False)
            info = get_info("mnist")
            sel = torch.randperm(raw.x_train.shape[0], generator=gen)[:n]
            x = (to_pixels(raw.x_train[sel], 1, 28) - info.mean[0]) / info.std[0]
            return x, raw.y_train[sel].long(), f"mnist ({raw.origin})"
        except DataError:
            pass
    return torch.randn(n, 1, 28, 28, generator=gen), torch.randint(0, 10, (n,), generator=gen), "synthetic"


def _median_ms(times: list[float]) -> float:
    return 1000.0 * statistics.median(times)


def outer_step_ms(variant: str, arch: str, x: torch.Tensor, y: torch.Tensor, suite: Suite,
                  repeats: int, seed: int = 0) -> float:
    """Median time of one outer step as `Experiment.run_epoch` does it (incl. the reset tracker)."""
    gen = torch.Generator().manual_seed(seed)
    c, s = x.shape[1], x.shape[-1]
    base_x = x[: suite.num_base]
    target_x, target_y = x[suite.num_base:], y[suite.num_base:]
    recipe = Recipe(arch=arch, head="rr" if variant == "rr" else "linear", batch_size=suite.inner_batch)
    distilled = Distilled("labels", base_x, uniform_labels(suite.num_base, 10))
    meta_opt = torch.optim.Adam([distilled.param], lr=0.01)
    cls = RidgeRegression if variant == "rr" else SecondOrder
    learner = cls(recipe, c, 10, s, torch.device("cpu"), model_lr=1e-3, inner_lr=0.01)
    learner.reset(seed)
    tracker = ResetTracker(50)

    def step():
        sel = torch.randint(0, target_x.shape[0], (suite.batch_size,), generator=gen)
        idx = torch.randperm(suite.num_base, generator=gen)[: suite.inner_batch]
        _, error, _ = learner.step(distilled, meta_opt, target_x[sel], target_y[sel], idx)
        if tracker.update(float(error)):
            learner.reset(seed + tracker.steps)

    for _ in range(suite.step_warmup):
        step()
    per_step = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(suite.step_count):
            step()
        per_step.append((time.perf_counter() - t0) / suite.step_count)
    return _median_ms(per_step)


def eval_flops(recipe: Recipe, base_x: torch.Tensor, labels: torch.Tensor, suite: Suite) -> float:
    """Convolution and matmul FLOPs of the eval20 workload, counted by torch's FlopCounterMode.

    One model's training step (forward and backward on an inner batch) and its
    forward on one test image are counted, then scaled to `eval_models` models x
    `eval_steps` steps + `eval_images` test images. Element-wise work (ReLU,
    pooling, Adam) is not counted, so this is a lower bound on the arithmetic.
    """
    if recipe.head != "linear":
        raise ValueError(f"eval_flops counts a linear head, not {recipe.head!r} (the ridge solve is not counted)")
    model = init_model(recipe, 0, base_x.shape[1], labels.shape[-1], base_x.shape[-1])
    xb, yb = base_x[: suite.inner_batch], labels[: suite.inner_batch]
    with FlopCounterMode(display=False) as train_count:
        loss = -(yb * F.log_softmax(model(xb), -1)).sum(-1).mean()
        loss.backward()
    with FlopCounterMode(display=False) as test_count, torch.no_grad():
        model(base_x[:1])
    per_model = suite.eval_steps * train_count.get_total_flops() + suite.eval_images * test_count.get_total_flops()
    return float(suite.eval_models * per_model)


def matmul_peak_gflops(repeats: int, n: int = 1024) -> float:
    """Median rate of an n x n float32 matrix product: what this CPU's BLAS reaches on large matmuls."""
    gen = torch.Generator().manual_seed(2)
    a, b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)

    def four_products():
        for _ in range(4):
            a @ b
    return 2 * n**3 / (_median_seconds(four_products, repeats) / 4) / 1e9


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median time of one fn() call over max(3, repeats) calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(max(3, repeats)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


_CONVOLUTIONS = (torch.ops.aten.convolution.default, torch.ops.aten.convolution_backward.default)


class _ConvRecorder(TorchDispatchMode):
    """Records every convolution call (forward and backward) with copies of its arguments.

    A forward under autograd or a backward is training work; a forward without
    autograd is testing (the backward itself runs with autograd off, so the two
    are told apart by the op).
    """

    def __init__(self):
        super().__init__()
        self.calls: dict[str, list] = {"train": [], "test": []}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _CONVOLUTIONS:
            phase = "test" if func is _CONVOLUTIONS[0] and not torch.is_grad_enabled() else "train"
            copy = [a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args]
            self.calls[phase].append((func, copy, dict(kwargs)))
        return func(*args, **kwargs)


def parallel_convolutions(recipe: Recipe, base_x: torch.Tensor, labels: torch.Tensor, test_x: torch.Tensor,
                          test_y: torch.Tensor, num_models: int) -> tuple[dict[str, list], int]:
    """The convolution calls of one parallel training step and of one test chunk, as
    `train_and_evaluate` makes them for `num_models` models, and the chunk's image count."""
    chunk = max(1, EVAL_MAX_IMAGES // num_models)
    rec = _ConvRecorder()
    with rec:
        train_and_evaluate(recipe, base_x, labels, list(range(num_models)), 1, test_x[:chunk], test_y[:chunk])
    return rec.calls, min(chunk, test_x.shape[0])


def _replay(calls: list) -> None:
    with torch.no_grad():
        for func, args, kwargs in calls:
            func(*args, **kwargs)


def replay_seconds(calls: list, repeats: int) -> float:
    """Median time of running the recorded calls once, back to back, after one warm-up."""
    return _median_seconds(lambda: _replay(calls), repeats)


def conv_bound(recipe: Recipe, base_x, labels, test_x, test_y, suite: Suite, repeats: int) -> dict:
    """The time the parallel path's convolutions alone need for the eval20 workload.

    The calls are recorded from the real parallel path and timed in isolation,
    warm and back to back: no pooling, ReLU, matmul, optimiser or Python work.
    A parallel path making these calls cannot take less time, so sequential
    time / this time bounds its speedup here (other formulations of the same
    convolutions were measured within about a quarter of it; see the README).
    """
    calls, chunk = parallel_convolutions(recipe, base_x, labels, test_x, test_y, suite.eval_models)
    step_s, chunk_s = replay_seconds(calls["train"], repeats), replay_seconds(calls["test"], repeats)
    return {"eval20_conv_s": suite.eval_steps * step_s + suite.eval_images / chunk * chunk_s,
            "eval20_conv_train_step_ms": 1000 * step_s, "eval20_conv_test_chunk_ms": 1000 * chunk_s}


def eval20(x: torch.Tensor, y: torch.Tensor, suite: Suite, repeats: int,
           progress: Progress) -> dict:
    """Sequential vs parallel training + testing of `eval_models` LeNets, interleaved.

    Also reports the arithmetic rate of both paths and the matmul peak measured
    between them, whose ratio bounds what any parallel formulation can gain here:
    `eval20_speedup_ceiling` is the speedup a path running every convolution and
    matmul at the large-matmul peak would have over the sequential loop.
    """
    gen = torch.Generator().manual_seed(1)
    base_x = x[: suite.num_base]
    labels = torch.softmax(torch.randn(suite.num_base, 10, generator=gen), -1)
    test_x, test_y = x[-suite.eval_images:], y[-suite.eval_images:]
    recipe = Recipe(arch="lenet", head="linear", batch_size=suite.inner_batch)
    seeds = list(range(suite.eval_models))
    seq, par, peak, diff = [], [], [], 0.0
    for r in range(repeats):
        progress(f"eval{suite.eval_models} parallel, repeat {r + 1}/{repeats}")
        t0 = time.perf_counter()
        b = train_and_evaluate(recipe, base_x, labels, seeds, suite.eval_steps, test_x, test_y)
        par.append(time.perf_counter() - t0)
        progress(f"eval{suite.eval_models} sequential, repeat {r + 1}/{repeats}")
        t0 = time.perf_counter()
        a = train_and_evaluate_sequential(recipe, base_x, labels, seeds, suite.eval_steps, test_x, test_y)
        seq.append(time.perf_counter() - t0)
        diff = max(diff, float((a.errors - b.errors).abs().max()))
        peak.append(matmul_peak_gflops(repeats))
    s, p, pk = statistics.median(seq), statistics.median(par), statistics.median(peak)
    gflop = eval_flops(recipe, base_x, labels, suite) / 1e9
    progress(f"eval{suite.eval_models} convolutions alone")
    conv = conv_bound(recipe, base_x, labels, test_x, test_y, suite, repeats)
    return {"eval20_sequential_s": s, "eval20_parallel_s": p, "eval20_speedup": s / p,
            "eval20_max_error_difference_pct": diff,
            "eval20_gflop": gflop, "eval20_sequential_gflops": gflop / s, "eval20_parallel_gflops": gflop / p,
            "matmul_peak_gflops": pk, "eval20_speedup_ceiling": pk * s / gflop,
            **conv, "eval20_conv_bound_speedup": s / conv["eval20_conv_s"],
            "eval20_sequential_runs_s": seq, "eval20_parallel_runs_s": par}


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def run_bench(data_root: str | None = None, repeats: int = 3, quick: bool = False,
              threads: int | None = None, progress: Progress | None = None) -> dict:
    """Run the suite on the CPU and return its figures (ms per outer step, s per evaluation)."""
    progress = progress or (lambda msg: None)
    suite = QUICK if quick else FULL
    if threads is not None:
        torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    n = max(suite.target_pool, suite.eval_images) + suite.num_base
    mx, my, origin = _mnist_like(data_root, n, gen)
    cx = torch.randn(suite.target_pool + suite.num_base, 3, 32, 32, generator=gen)
    cy = torch.randint(0, 10, (cx.shape[0],), generator=gen)
    out: dict = {"suite": "quick" if quick else "full", "data": origin, "repeats": repeats,
                 "threads": torch.get_num_threads(), "torch": torch.__version__,
                 "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
                 **{k: getattr(suite, k) for k in ("batch_size", "num_base", "inner_batch", "step_count",
                                                   "eval_models", "eval_steps", "eval_images")}}
    t_start = time.perf_counter()
    for arch, (x, y), suffix in (("lenet", (mx, my), ""), ("alexcifarnet", (cx, cy), "_alexcifarnet")):
        for variant in ("rr", "or2"):
            progress(f"outer step {variant} {arch}")
            out[f"outer_step_ms_{variant}{suffix}"] = outer_step_ms(variant, arch, x, y, suite, repeats)
    out.update(eval20(mx, my, suite, repeats, progress))
    out["peak_memory_mb"] = peak_memory_mb()
    out["total_s"] = time.perf_counter() - t_start
    return out


ROWS = [
    ("outer_step_ms_rr", "LD-rr outer step, LeNet, MNIST shapes", "ms"),
    ("outer_step_ms_or2", "LD-or2 outer step, LeNet, MNIST shapes", "ms"),
    ("outer_step_ms_rr_alexcifarnet", "LD-rr outer step, AlexCifarNet, CIFAR shapes", "ms"),
    ("outer_step_ms_or2_alexcifarnet", "LD-or2 outer step, AlexCifarNet, CIFAR shapes", "ms"),
    ("eval20_sequential_s", "{m} LeNets x {s} steps + test, sequential loop", "s"),
    ("eval20_parallel_s", "{m} LeNets x {s} steps + test, parallel (stacked)", "s"),
    ("eval20_speedup", "parallel speedup", "x"),
    ("eval20_gflop", "eval arithmetic (convolutions and matmuls)", "GFLOP"),
    ("eval20_sequential_gflops", "eval arithmetic rate, sequential", "GFLOP/s"),
    ("eval20_parallel_gflops", "eval arithmetic rate, parallel", "GFLOP/s"),
    ("matmul_peak_gflops", "large-matmul peak (1024x1024 float32)", "GFLOP/s"),
    ("eval20_speedup_ceiling", "speedup ceiling: peak rate / sequential rate", "x"),
    ("eval20_conv_s", "parallel path's convolutions alone, timed in isolation", "s"),
    ("eval20_conv_bound_speedup", "speedup bound: sequential / convolutions alone", "x"),
    ("peak_memory_mb", "peak memory", "MiB"),
]


def format_table(res: dict) -> str:
    head = (f"labeldistill bench ({res['suite']}, data: {res['data']}, {res['threads']} threads, "
            f"median of {res['repeats']}; target batch {res['batch_size']}, {res['num_base']} base, "
            f"inner batch {res['inner_batch']}; eval: {res['eval_models']} models x {res['eval_steps']} steps "
            f"+ {res['eval_images']} test images)")
    lines = [head, "", "| measure | value |", "|---|---|"]
    for key, label, unit in ROWS:
        v = res[key]
        label = label.format(m=res["eval_models"], s=res["eval_steps"])
        lines.append(f"| {label} | {v:.1f} {unit} |" if unit != "x" else f"| {label} | {v:.2f}x |")
    return "\n".join(lines)
