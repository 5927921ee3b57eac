"""Figures from run directories (matplotlib, Agg backend: no display needed).

Per run: training/validation curves, and the base images with bar charts of
their learned soft labels (letters labelled as digits, for example). Across
runs: accuracy against base examples per dataset pair, the number-of-steps
curve, architecture-transfer and optimiser-flexibility bars, and optimiser x
step-count curves.
"""
from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .errors import LabelDistillError  # noqa: E402
from .report import (OPTIMIZER_TITLES, Run, _methods, cell_summary, method_title,  # noqa: E402
                     main_groups, newest_first, optimizer_columns, runs_with)

DPI = 110


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def _label(r: Run, with_pair: bool = True) -> str:
    s = f"{method_title(r.method)}, {r['num_base_examples']} base"
    if with_pair:
        s = f"{r.pair}: " + s
    return s + (f", seed {r['seed']}" if r["seed"] else "")


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------
# per run


def plot_curves(r: Run, path: Path) -> Path | None:
    """Distillation: train and validation error and the losses per epoch; baselines: the step search."""
    hist = r.result.get("history") or []
    if not hist:
        return None
    if "epoch" not in hist[0]:  # baseline: validation error of one model against training steps
        fig, ax = plt.subplots(figsize=(6, 3.6))
        ax.plot([h["num_steps"] for h in hist], [h["val_error"] for h in hist], "o-", ms=3)
        ax.axvline(r["num_steps"], color="k", ls="--", lw=1, label=f"chosen: {r['num_steps']} steps")
        ax.set_xlabel("training steps")
        ax.set_ylabel("validation error %")
        ax.legend()
        ax.set_title(f"{r['name']}\nstep search of the {method_title(r.method)} baseline",
                     fontsize=10)
        ax.grid(alpha=0.3)
        return _save(fig, path)
    ep = [h["epoch"] for h in hist]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    ax = axes[0]
    ax.plot(ep, [h["train_error"] for h in hist], label="target minibatches (online model)")
    val = [(h["epoch"], h["val_error"]) for h in hist if h.get("val_error") is not None]
    if val:
        ax.plot(*zip(*val), "o-", ms=3, label="validation (fresh model)")
    if r.result.get("best_epoch"):
        ax.axvline(r["best_epoch"], color="k", ls="--", lw=1, label=f"best labels (epoch {r['best_epoch']})")
    ax.set(xlabel="epoch", ylabel="error %", title="error")
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.plot(ep, [h["meta_loss"] for h in hist], label="meta (outer) loss")
    ax.plot(ep, [h["model_loss"] for h in hist], label="model (inner) loss")
    if val:
        ax.plot([h["epoch"] for h in hist if h.get("val_loss") is not None],
                [h["val_loss"] for h in hist if h.get("val_loss") is not None], "o-", ms=3, label="validation loss")
    ax.set(xlabel="epoch", ylabel="cross-entropy", title="losses")
    ax.legend(fontsize=8)
    ax = axes[2]
    ax.plot(ep, [h["num_steps"] for h in hist], label="steps for validation models")
    ax.set(xlabel="epoch", ylabel="training steps", title="number of steps (from resets)")
    for a in axes:
        a.grid(alpha=0.3)
    fig.suptitle(f"{r['name']}: test accuracy {r['test_accuracy_mean']:.2f} ± {r['test_accuracy_std']:.2f} %",
                 fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def _data_options(r: Run) -> dict:
    """How the run read a dataset named by a path (image_size, test_fraction)."""
    from .data import dataset_options

    return dataset_options((r.result.get("config") or {}).get("data") or {})


def _target_class_names(r: Run) -> list[str]:
    from .sources import get_info

    try:
        names = list(get_info(r["target"], **_data_options(r)).class_names)
    except LabelDistillError:
        names = []
    num_classes = len(r["labels"][0])
    return names if len(names) == num_classes else [str(i) for i in range(num_classes)]


def base_images(r: Run, data_root: str | None = None) -> np.ndarray:
    """The run's base images as (n, H, W) or (n, H, W, 3) floats in [0, 1], upright for display:
    the copy the run stored (its artifact); runs from before artifacts re-read them from the source."""
    from .artifact import run_pixels

    px = run_pixels(r.path, r.result)
    if px is None:
        px = _reread_base_images(r, data_root)
    px = px.float().clamp(0, 1)
    if r["source"] == "emnist" and "synthetic_pixels_shape" not in r.result:  # real letters, not learned pixels
        px = px.transpose(2, 3)  # stored in the raw (transposed) orientation: show letters upright
    px = px[:, 0] if px.shape[1] == 1 else px.permute(0, 2, 3, 1)
    return px.numpy()


def _reread_base_images(r: Run, data_root: str | None):
    """(n, 1, H, W) in [0, 1]: the source's images at the run's base indices (noise for fake data)."""
    import torch

    from .sources import load_raw

    indices = list(r["base_indices"])
    source = r["source"]
    if source == "fake" or min(indices) < 0:
        g = torch.Generator().manual_seed(0)
        return torch.rand((len(indices), 1, 28, 28), generator=g)
    root = data_root or (r.result.get("config") or {}).get("data", {}).get("root")
    raw = load_raw(source, root, download=False, **_data_options(r))
    x = raw.x_train[torch.as_tensor(indices)].float() / 255.0
    return x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)


def plot_labels(r: Run, path: Path, data_root: str | None = None, max_images: int = 20, ncols: int = 5) -> Path:
    """A grid of base images, each above a bar chart of its soft label."""
    images = base_images(r, data_root)
    labels = np.asarray(r["labels"], dtype=float)
    names = r.result.get("base_class_names") or ["?"] * len(labels)
    classes = _target_class_names(r)
    n = min(max_images, len(labels))
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    many = len(classes) > 12
    fig = plt.figure(figsize=(2.3 * ncols, 3.3 * nrows))
    outer = fig.add_gridspec(nrows, ncols, hspace=0.4, wspace=0.35)
    for i in range(n):
        inner = outer[i // ncols, i % ncols].subgridspec(2, 1, height_ratios=[1.25, 1], hspace=0.08)
        ax = fig.add_subplot(inner[0])
        img = images[i]
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        top = int(labels[i].argmax())
        is_images = r.kind == "images"
        title = f"class {classes[top]}" if is_images else f"'{names[i]}' → {classes[top]} ({labels[i][top]:.2f})"
        ax.set_title(title, fontsize=9)
        bx = fig.add_subplot(inner[1])
        colors = ["#d62728" if c == top else "#4c72b0" for c in range(len(classes))]
        bx.bar(range(len(classes)), labels[i], color=colors, width=0.8)
        bx.set_ylim(0, max(0.5, float(labels[i].max()) * 1.05))
        bx.tick_params(axis="y", labelsize=6)
        if many:
            bx.set_xticks([])
        else:
            bx.set_xticks(range(len(classes)))
            bx.set_xticklabels([c[:4] for c in classes], fontsize=6 if len(classes) <= 10 else 5,
                               rotation=0 if max(len(c) for c in classes) <= 1 else 90)
    kind = "synthetic images with fixed labels" if r.kind == "images" else "base examples and learned soft labels"
    fig.suptitle(f"{r['name']}: {kind} ({n} of {len(labels)})\n{r.pair}, test accuracy "
                 f"{r['test_accuracy_mean']:.2f} ± {r['test_accuracy_std']:.2f} %", fontsize=11)
    return _save(fig, path)


# ---------------------------------------------------------------------------
# across runs


def plot_accuracy_vs_examples(runs: Sequence[Run], out: Path) -> list[Path]:
    """The main tables as curves: one per method, mean +- std as `report` computes each cell."""
    paths = []
    for (pair, arch), rs in main_groups(list(runs)):
        if len({r["num_base_examples"] for r in rs}) < 2:
            continue
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for m in _methods(rs):
            by_n = defaultdict(list)
            for r in rs:
                if r.method == m:
                    by_n[r["num_base_examples"]].append(r)
            ns = sorted(by_n)
            means, stds, _ = zip(*(cell_summary(by_n[n]) for n in ns))
            ax.errorbar(ns, means, yerr=stds, marker="o", capsize=3, label=method_title(m))
        ax.set_xscale("log")
        ax.set_xlabel("base examples")
        ax.set_ylabel("test accuracy %")
        ax.set_title(f"{pair} ({arch})")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        paths.append(_save(fig, out / f"accuracy_{_slug(pair.replace(' -> ', '_to_'))}_{arch}.png"))
    return paths


def plot_num_steps(runs: Sequence[Run], path: Path) -> Path | None:
    rs = runs_with(list(runs), "num_steps_analysis")
    if not rs:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for r in rs:
        a = r["num_steps_analysis"]
        offs = sorted(a, key=int)
        ax.errorbar([int(o) for o in offs], [a[o]["test_accuracy_mean"] for o in offs],
                    yerr=[a[o]["test_accuracy_std"] for o in offs], marker="o", ms=4, capsize=3, label=_label(r))
    ax.axvline(0, color="k", lw=1, ls="--")
    ax.set_xlabel("training steps relative to the best number (0 = best)")
    ax.set_ylabel("test accuracy %")
    ax.set_title("Number-of-steps analysis")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def _grouped_bars(ax, groups: list[str], series: list[str], values: dict, titles: dict) -> None:
    width = 0.8 / max(1, len(series))
    x = np.arange(len(groups))
    for j, s in enumerate(series):
        means = [values.get((g, s), (np.nan, 0))[0] for g in groups]
        stds = [values.get((g, s), (np.nan, 0))[1] for g in groups]
        bars = ax.bar(x + (j - (len(series) - 1) / 2) * width, means, width, yerr=stds, capsize=3,
                      label=titles.get(s, s))
        for b, m, sd in zip(bars, means, stds):
            if not np.isnan(m):  # the value above its error bar
                ax.annotate(f"{m:.1f}", (b.get_x() + b.get_width() / 2, m + sd), ha="center", va="bottom",
                            fontsize=7, xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(x)
    ax.set_xticklabels(groups, fontsize=8)
    ax.set_ylabel("test accuracy %")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)


def plot_architectures(runs: Sequence[Run], path: Path) -> Path | None:
    rs = runs_with(list(runs), "architecture_transfer")
    if not rs:
        return None
    archs = sorted({a for r in rs for a in r["architecture_transfer"]})
    groups = [f"{_label(r)}\n(learned with {r['arch']})" for r in rs]
    values = {(g, a): (r["architecture_transfer"][a]["test_accuracy_mean"],
                       r["architecture_transfer"][a]["test_accuracy_std"])
              for g, r in zip(groups, rs) for a in r["architecture_transfer"]}
    fig, ax = plt.subplots(figsize=(max(6, 2.6 * len(rs)), 4.2))
    _grouped_bars(ax, groups, archs, values, {a: f"test with {a}" for a in archs})
    ax.set_title("Architecture transfer: labels tested with other architectures")
    return _save(fig, path)


def plot_optimizers(runs: Sequence[Run], path: Path) -> Path | None:
    rs = runs_with(list(runs), "optimizer_transfer")
    if not rs:
        return None
    opts, lrs = optimizer_columns(rs)
    groups = [_label(r).replace(": ", ":\n") for r in rs]
    values = {(g, o): (r["optimizer_transfer"][o]["test_accuracy_mean"], r["optimizer_transfer"][o]["test_accuracy_std"])
              for g, r in zip(groups, rs) for o in r["optimizer_transfer"]}
    fig, ax = plt.subplots(figsize=(max(6, 2.6 * len(rs)), 4.2))
    legend = {o: f"{OPTIMIZER_TITLES.get(o, o)} (lr {', '.join(f'{lr:g}' for lr in sorted(lrs[o]))})" for o in opts}
    _grouped_bars(ax, groups, opts, values, legend)
    ax.set_title("Optimiser flexibility: distilled labels vs true labels under the same learners")
    return _save(fig, path)


def plot_optimizer_steps(runs: Sequence[Run], path: Path) -> Path | None:
    rs = [r for r in runs_with(list(runs), "optimizer_transfer")
          if any("num_steps_analysis" in v for v in r["optimizer_transfer"].values())]
    if not rs:
        return None
    ncols = min(3, len(rs))
    nrows = math.ceil(len(rs) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.8 * ncols, 3.6 * nrows), squeeze=False, sharey=True)
    for ax, r in zip(axes.flat, rs):
        for o, v in r["optimizer_transfer"].items():
            a = v.get("num_steps_analysis")
            if not a:
                continue
            offs = sorted(a, key=int)
            ax.errorbar([a[k]["num_steps"] for k in offs], [a[k]["test_accuracy_mean"] for k in offs],
                        yerr=[a[k]["test_accuracy_std"] for k in offs], marker="o", ms=3, capsize=2,
                        label=OPTIMIZER_TITLES.get(o, o))
        ax.axvline(r["num_steps"], color="k", lw=1, ls="--")
        ax.set_title(_label(r), fontsize=9)
        ax.set_xlabel("training steps")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[:, 0]:
        ax.set_ylabel("test accuracy %")
    for ax in list(axes.flat)[len(rs):]:
        ax.axis("off")
    fig.suptitle("Flexibility: other optimisers and step counts (dashed: chosen steps)", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def plot_runs(runs: Sequence[Run], out: str | Path, data_root: str | None = None,
              max_images: int = 20) -> tuple[list[Path], list[str]]:
    """Every figure for `runs`; returns the PNG paths and notes about figures that were skipped."""
    out = Path(out)
    runs = newest_first(runs)  # repeats of a setting: the newest is drawn, as in `report`
    paths: list[Path | None] = []
    notes: list[str] = []
    names = Counter()
    missing: dict[str, list[str]] = {}  # why base images could not be loaded -> runs
    for r in runs:
        name = _slug(r["name"])
        names[name] += 1
        if names[name] > 1:  # another run of the same name (older): its own files
            name = f"{name}_{names[name]}"
        paths.append(plot_curves(r, out / "runs" / f"{name}_curves.png"))
        try:
            paths.append(plot_labels(r, out / "runs" / f"{name}_labels.png", data_root, max_images))
        except LabelDistillError as exc:
            missing.setdefault(str(exc), []).append(r["name"])
    for why, names_ in missing.items():  # one note per cause, not one per run
        notes.append(f"no label figure for {', '.join(names_)}: their base images could not be loaded: {why}")
    paths += plot_accuracy_vs_examples(runs, out)
    paths.append(plot_num_steps(runs, out / "num_steps.png"))
    paths.append(plot_architectures(runs, out / "architectures.png"))
    paths.append(plot_optimizers(runs, out / "optimizers.png"))
    paths.append(plot_optimizer_steps(runs, out / "optimizer_steps.png"))
    return [p for p in paths if p is not None], notes
