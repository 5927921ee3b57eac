"""Figures from run directories (matplotlib, Agg backend: no display needed).

Per run: training/validation curves (or the step search, one line per label
candidate), the base images with bar charts of their soft labels (letters
labelled as digits, for example), and for runs with views a few base images
with some of their views and each view's label. Images come from the run's
stored artifact (older runs without one re-read them from the data). Across
runs: accuracy against base images per dataset pair (one line per method and
storage, seeds' spread as error bars), the number-of-steps curve,
architecture-transfer and optimiser-flexibility bars, and optimiser x
step-count curves.
"""
from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .errors import DataError, LabelDistillError  # noqa: E402
from .report import (OPTIMIZER_TITLES, Run, _methods, cell_summary, method_title,  # noqa: E402
                     main_groups, method_variant, newest_first, optimizer_columns, runs_with)

DPI = 110
TRUE_EDGE = "black"  # the outline of the true class's bar


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def _label(r: Run, with_pair: bool = True) -> str:
    s = f"{method_title(r.method)}, {r['num_base_examples']} base"
    if with_pair:
        s = f"{r.pair}: " + s
    return s + (f", seed {r['seed']}" if r["seed"] else "")


def _title(r: Run) -> str:
    """The method's title (from the method registry, with its learner variant) and its storage."""
    return f"{method_title(method_variant(r.result, storage=False))} ({r.storage})"


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------
# per run


def _plot_step_search(r: Run, hist: list[dict], path: Path) -> Path:
    """A direct method's step search: validation error against training steps, one line per label
    candidate (e.g. each teacher temperature), each in order of steps; diverged points crossed."""
    by_candidate: dict[str | None, list[dict]] = defaultdict(list)
    for h in hist:
        by_candidate[h.get("candidate")].append(h)
    chosen = (r.result.get("label_choice") or {}).get("name")
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for cand, hs in by_candidate.items():
        hs = sorted(hs, key=lambda h: h["num_steps"])
        is_chosen = cand is not None and cand == chosen
        label = "validation error" if cand is None else cand + (" (chosen)" if is_chosen else "")
        (line,) = ax.plot([h["num_steps"] for h in hs], [h["val_error"] for h in hs], "o-", ms=3,
                          lw=2.2 if is_chosen else 1.2, label=label)
        bad = [h for h in hs if h.get("diverged")]
        if bad:
            ax.plot([h["num_steps"] for h in bad], [h["val_error"] for h in bad], "x", ms=7, color=line.get_color())
    if any(h.get("diverged") for h in hist):
        ax.plot([], [], "x", color="gray", label="diverged (not chosen)")
    ax.axvline(r["num_steps"], color="k", ls="--", lw=1, label=f"chosen: {r['num_steps']} steps")
    ax.set_xscale("log")
    _log_ticks(ax, sorted({h["num_steps"] for h in hist}))
    ax.set_xlabel("training steps (log scale)")
    ax.set_ylabel("validation error %")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)
    ax.set_title(f"{r['name']}\nstep search of {_title(r)} on the validation split", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    return _save(fig, path)


def _log_ticks(ax, values: list[int]) -> None:
    """Plain numbers at the values drawn on a log axis (not 2 x 10^2), where they are few."""
    if len(values) <= 10:
        ax.set_xticks(values)
        ax.set_xticklabels([str(v) for v in values], fontsize=8)
        ax.minorticks_off()


def plot_curves(r: Run, path: Path) -> Path | None:
    """Distillation: train and validation error and the losses per epoch; direct methods: the step search."""
    hist = r.result.get("history") or []
    if not hist:
        return None
    if "epoch" not in hist[0]:  # direct: validation error of fresh models against training steps
        return _plot_step_search(r, hist, path)
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


def _for_display(r: Run, px) -> np.ndarray:
    """(n, C, H, W) images in [0, 1] -> (n, H, W) or (n, H, W, 3) floats, upright."""
    px = px.float().clamp(0, 1)
    if r["source"] == "emnist" and "synthetic_pixels_shape" not in r.result:  # real letters, not learned pixels
        px = px.transpose(2, 3)  # stored in the raw (transposed) orientation: show letters upright
    px = px[:, 0] if px.shape[1] == 1 else px.permute(0, 2, 3, 1)
    return px.numpy()


def base_images(r: Run, data_root: str | None = None) -> np.ndarray:
    """The run's base images as (n, H, W) or (n, H, W, 3) floats in [0, 1], upright for display:
    the copy the run stored (its artifact); runs from before artifacts re-read them from the source."""
    from .artifact import run_pixels

    px = run_pixels(r.path, r.result)
    if px is None:
        px = _reread_base_images(r, data_root)
    return _for_display(r, px)


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


@dataclass
class ViewsShown:
    """A views run's stored views, ready to draw: `bases` (n, H, W[, 3]) and `images` (N, H, W[, 3])
    in [0, 1], `labels` (N, C), `per_image` views of each base image (view k of image i is row
    i * per_image + k), `sources` (N, 2) the base images each view mixes and `weight` (N,) the
    first one's share."""

    bases: np.ndarray
    images: np.ndarray
    labels: np.ndarray
    per_image: int
    sources: np.ndarray
    weight: np.ndarray
    mixed: np.ndarray  # (N,) bool: the view mixes two base images
    class_names: list[str]
    include_original: bool


def stored_views(r: Run) -> ViewsShown:
    """The views of a run with views, made again from its stored artifact (no data needed)."""
    from .artifact import CARD_FILE, load_distilled

    card = r.path / (r.result.get("artifact") or CARD_FILE)
    if not card.is_file():
        raise DataError(f"{r.path} has views but no artifact ({card.name}); its views cannot be drawn without it")
    ds = load_distilled(card)
    if ds.views is None:
        raise DataError(f"the artifact {card} holds no views, but {r.path}/result.json says the run had views")
    v, p = ds.views, ds.views.params
    pixels = v.images * ds.std + ds.mean  # back from the learner's normalisation to [0, 1]
    mixed = (p.mix.long() != 0) & (p.sources[:, 0] != p.sources[:, 1])
    return ViewsShown(_for_display(r, ds.pixels), _for_display(r, pixels), ds.labels.numpy(), v.spec.per_image,
                      p.sources.numpy(), p.weight.numpy(), mixed.numpy(), ds.class_names, v.spec.include_original)


def label_ylim(labels: np.ndarray) -> tuple[float, float]:
    """One scale for every bar chart of a figure: 0 to 1 for probabilities; real-valued labels
    (solved labels, logits of the mse learner) from their smallest to their largest value."""
    lo, hi = float(labels.min()), float(labels.max())
    if lo >= 0 and hi <= 1 + 1e-6:
        return 0.0, 1.0
    pad = 0.05 * (max(hi, 0) - min(lo, 0) or 1.0)
    return min(lo, 0.0) - pad * (lo < 0), max(hi, 0.0) + pad


def _image_and_label(fig, cell, img, label, classes: list[str], title: str, true_class: int | None,
                     ylim: tuple[float, float], title_size: float = 9):
    """One image above the bar chart of its label: the largest entry red, the true class's bar outlined."""
    inner = cell.subgridspec(2, 1, height_ratios=[1.25, 1], hspace=0.08)
    ax = fig.add_subplot(inner[0])
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=title_size)
    bx = fig.add_subplot(inner[1])
    top = int(np.argmax(label))
    n = len(classes)
    colors = ["#d62728" if c == top else "#4c72b0" for c in range(n)]
    edges = [TRUE_EDGE if c == true_class else "none" for c in range(n)]
    bx.bar(range(n), label, color=colors, width=0.8, edgecolor=edges, linewidth=1.6)
    bx.set_ylim(*ylim)
    bx.set_xlim(-0.6, n - 0.4)
    bx.tick_params(axis="y", labelsize=6)
    if n <= 12:  # more classes: no room for their names
        bx.set_xticks(range(n))
        bx.set_xticklabels([c[:4] for c in classes], fontsize=6 if n <= 10 else 5,
                           rotation=0 if max(len(c) for c in classes) <= 1 else 90)
    else:
        bx.set_xticks([])
    return ax, bx


def _grid_below_title(nrows: int, ncols: int, width: float, height: float, top: float = 1.0, **space):
    """A figure of nrows x ncols panels of width x height inches, with `top` inches above them
    for a three-line title (the panels' own titles never run into it)."""
    fig = plt.figure(figsize=(width * ncols, height * nrows + top))
    return fig, fig.add_gridspec(nrows, ncols, top=1 - top / (height * nrows + top), **space)


def _true_class(name: str, classes: list[str], same_classes: bool) -> int | None:
    """The target class an image truly belongs to: its own class when source and target share
    their classes; None across datasets (a letter is no digit)."""
    return classes.index(name) if same_classes and name in classes else None


def plot_labels(r: Run, path: Path, data_root: str | None = None, max_images: int = 20, ncols: int = 5) -> Path:
    """A grid of base images, each above a bar chart of its label (for runs with views: the first
    view of each base image and that view's label), on one probability scale, the true class's bar
    outlined and named in the title."""
    labels = np.asarray(r["labels"], dtype=float)
    names = r.result.get("base_class_names") or ["?"] * len(labels)
    views = r.result.get("views")
    if views:
        shown = stored_views(r)
        k = shown.per_image
        images, labels, classes = shown.images[::k], labels[::k], shown.class_names
        what = "base images" if shown.include_original else "the first view of each base image"
        what += " and their labels"
        count = f", {len(r['labels'])} labels in all"
    else:
        images, classes = base_images(r, data_root), _target_class_names(r)
        what, count = "base images and their labels", ""
    if r.kind == "images":
        what = "synthetic images and their fixed labels"
    elif r.kind == "meta":
        what = what.replace("their labels", "their learned labels")
    same_classes = r["source"] == r["target"]
    n = min(max_images, len(labels))
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    ylim = label_ylim(labels[:n])
    fig, outer = _grid_below_title(nrows, ncols, 2.3, 3.3, hspace=0.45, wspace=0.35)
    for i in range(n):
        top = int(labels[i].argmax())
        true = None if r.kind == "images" else _true_class(str(names[i]), classes, same_classes)
        if r.kind == "images":
            title = f"class {classes[top]}"
        else:
            title = f"true: {names[i]} → {classes[top]} ({labels[i][top]:.2f})"
        _image_and_label(fig, outer[i // ncols, i % ncols], images[i], labels[i], classes, title, true, ylim)
    outline = "; outlined bar: the true class" if same_classes and r.kind != "images" else ""
    fig.suptitle(f"{r['name']}\n{_title(r)}: {what} ({n} of {len(labels)} images{count})\n{r.pair}, test accuracy "
                 f"{r['test_accuracy_mean']:.2f} ± {r['test_accuracy_std']:.2f} %; red bar: the largest entry"
                 f"{outline}", fontsize=10)
    return _save(fig, path)


def plot_views(r: Run, path: Path, num_images: int = 4, views_per_image: int = 6) -> Path | None:
    """For a run with views: a few base images (rows), each beside some of its views with each
    view's stored label (bars on one scale, the top two entries in the title). None without views."""
    if not r.result.get("views"):
        return None
    shown = stored_views(r)
    k = shown.per_image
    names = [str(c) for c in (r.result.get("base_class_names") or ["?"] * (len(shown.labels) // k))]
    classes = shown.class_names
    same_classes = r["source"] == r["target"]
    rows = min(num_images, len(shown.labels) // k)
    cols = min(views_per_image, k)
    drawn = shown.labels[[i * k + j for i in range(rows) for j in range(cols)]]
    ylim = label_ylim(drawn)
    fig, outer = _grid_below_title(rows, cols + 1, 1.9, 2.9, top=1.4, hspace=0.6, wspace=0.3)  # two-line titles
    for i in range(rows):
        ax = fig.add_subplot(outer[i, 0])  # the base image itself, for reference
        ax.imshow(shown.bases[i], cmap="gray" if shown.bases.ndim == 3 else None, vmin=0, vmax=1,
                  interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"base image {i}\ntrue: {names[i]}", fontsize=9)
        for j in range(cols):
            v = i * k + j
            label = shown.labels[v]
            a, b = (int(s) for s in shown.sources[v])
            made = (f"{names[a]}:{shown.weight[v]:.2f} + {names[b]}:{1 - shown.weight[v]:.2f}" if shown.mixed[v]
                    else "not mixed")
            top2 = [c for c in np.argsort(-label)[:2] if label[c] > 0] or [int(np.argmax(label))]
            title = f"view {j}: {made}\nlabel " + ", ".join(f"{classes[c]} {label[c]:.2f}" for c in top2)
            true = _true_class(names[i], classes, same_classes)
            _image_and_label(fig, outer[i, j + 1], shown.images[v], label, classes, title, true, ylim,
                             title_size=7)
    fig.suptitle(f"{r['name']}\n{_title(r)}: {cols} of {k} views of {rows} base images, each above its stored "
                 "label\n(view title: the classes of the base images it mixes, with their shares, then its label's "
                 "top two classes; outlined bar: the base image's true class)", fontsize=10)
    return _save(fig, path)


# ---------------------------------------------------------------------------
# across runs


@dataclass
class Line:
    """One line of an accuracy figure: a method (with its learner variant) at one storage, a point
    per number of base images: the mean test accuracy and its error, over `seeds` seeds (several:
    mean and std of the seeds' means; one: that run's mean and std over its test models), as
    `report` computes each main-table cell."""

    method: str
    storage: str
    ns: list[int]
    means: list[float]
    errors: list[float]
    seeds: list[int]

    @property
    def label(self) -> str:
        counts = sorted(set(self.seeds))
        if counts == [1]:
            return f"{self.method}, {self.storage}"
        seeds = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
        return f"{self.method}, {self.storage} ({seeds} seeds)"


def accuracy_lines(runs: Sequence[Run]) -> list[tuple[tuple[str, str], list[Line]]]:
    """Per (dataset pair, architecture) of the main tables, one `Line` per method and storage."""
    out = []
    for key, rs in main_groups(list(runs)):
        lines = []
        for m in _methods(rs):
            of_m = [r for r in rs if r.method == m]
            by_n = defaultdict(list)
            for r in of_m:
                by_n[r["num_base_examples"]].append(r)
            ns = sorted(by_n)
            means, errors, seeds = (list(c) for c in zip(*(cell_summary(by_n[n]) for n in ns)))
            lines.append(Line(method_title(method_variant(of_m[0].result, storage=False)), str(of_m[0].storage),
                              ns, means, errors, seeds))
        out.append((key, lines))
    return out


LINE_STYLES = [("-", "o"), ("--", "s"), ("-.", "^"), (":", "D")]  # one per storage of a method


def plot_accuracy_vs_examples(runs: Sequence[Run], out: Path) -> list[Path]:
    """The main tables as curves: test accuracy against base images (log scale), one line per method
    (colour) and storage (line style); error bars: the std over seeds' means where a point has
    several seeds (solid, with caps), else the std over the run's test models (thin, dotted).
    A pair whose runs have one number of base images has no figure (its report table compares them)."""
    paths = []
    for (pair, arch), lines in accuracy_lines(runs):
        ns = sorted({n for line in lines for n in line.ns})
        if len(ns) < 2:
            continue
        fig, ax = plt.subplots(figsize=(7.5, 4.5))
        colors, styles = {}, defaultdict(int)
        for line in lines:
            color = colors.setdefault(line.method, f"C{len(colors) % 10}")
            ls, marker = LINE_STYLES[styles[line.method] % len(LINE_STYLES)]
            styles[line.method] += 1
            ax.plot(line.ns, line.means, ls=ls, marker=marker, ms=5, color=color, label=line.label)
            for several in (True, False):
                idx = [i for i, k in enumerate(line.seeds) if (k > 1) == several]
                if idx:
                    bars = ax.errorbar([line.ns[i] for i in idx], [line.means[i] for i in idx],
                                       yerr=[line.errors[i] for i in idx], fmt="none", ecolor=color,
                                       capsize=4 if several else 0, elinewidth=1.4 if several else 1.2)
                    if not several:
                        bars[2][0].set_linestyle(":")
        ax.set_xscale("log")
        _log_ticks(ax, ns)
        ax.set_xlabel("number of base images (log scale)")
        ax.set_ylabel("test accuracy %")
        ax.set_title(f"{pair} ({arch}): test accuracy against base images")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0,
                  title="method, labels stored per image", title_fontsize=8)
        fig.text(0.01, -0.01, "Points: mean test accuracy. Error bars: with several seeds (solid, capped), the std "
                 "over the seeds' means;\nwith one seed (dotted), the std over that run's test models. Line styles "
                 "tell storage budgets apart.", fontsize=8, va="top")
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
            paths.append(plot_views(r, out / "runs" / f"{name}_views.png"))
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
