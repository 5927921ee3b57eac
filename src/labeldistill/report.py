"""Tables from run directories: test accuracy mean +- std, grouped like the paper.

- Main tables, one per dataset pair (and architecture): a row per method and
  storage (labels per base image, their precision, the budget they were made
  under: `Storage`), a column per number of base images. Runs that stored
  their labels differently are never one row, and every row says what it
  stored. A cell is the mean +- std of the 20 test models of one run; when the
  same setting was run with several seeds, it is the mean +- std over the
  seeds' mean accuracies (marked with the number of seeds).
- Seeds: runs that differ only in their seed, one row each: every seed's mean,
  the mean +- std over the seeds' means, the mean per-model std, the number of seeds.
- Analyses get their own tables: target-set size, number of steps,
  architecture transfer, optimiser flexibility (optimiser x step count, with
  the true-label baseline under the same learners).

`scan_runs(paths)` finds finished runs, the malformed ones it left out and the
unfinished ones; `build_report(runs)` returns a `Report` (tables whose cells are
numbers and `Stat`s); `write_report` writes report.md, one CSV per table (a
mean and a std column for each accuracy column) and runs.csv (one
machine-readable row per run and measured setting).
"""
from __future__ import annotations

import csv
import io
import math
import re
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from .config import NEUTRAL_KEYS, ViewsConfig, flat_keys
from .errors import RunError
from .methods import METHODS
from .results import CONFIG_FILE, RESULT_FILE, RunDir

OPTIMIZER_TITLES = {"sgd": "SGD", "momentum": "SGD+momentum", "adam": "Adam"}


def _spec(name: str):
    """The registered method `name`, or None (a user's method, or one of another version)."""
    return METHODS.get(name)


def method_variant(result: dict, storage: bool = True) -> str:
    """The method and what sets its learner apart from the method's own default: a start
    from another method's labels, another head, the mse loss, translations, what the
    method itself says of its options (`Method.describe`), and (`storage`) its labels'
    storage when it is not the paper's one float32 label per image (`Storage.parts`).
    Runs that differ in these are different rows and columns, never repeats of one another."""
    m = result["method"]
    cfg = result.get("config") or {}
    ev, di = cfg.get("evaluate") or {}, cfg.get("distill") or {}
    learner = result.get("learner") or {}
    spec = _spec(m)
    parts = []
    init = di.get("init_labels", "uniform")
    if init != "uniform":
        parts.append(f"from {method_title(init)}")
        if _spec(init) is not None and _spec(init).describe is not None:
            parts += _spec(init).describe(result)
    if spec is not None and spec.describe is not None:
        parts += spec.describe(result)
    head = learner.get("head") or ev.get("head")
    if head and head != (spec.head if spec is not None else "linear"):
        parts.append(f"{head} head")
    if learner.get("loss", ev.get("loss", "ce")) == "mse":
        parts.append("mse")
    shift = learner.get("augment", ev.get("augment", 0))
    if shift:
        parts.append(f"shifts {shift}px")
    if storage:
        parts += Storage.of(result).parts()
    return m if not parts else f"{m} [{', '.join(parts)}]"


# The budget names of `budget.storage` as a table shows them
BUDGET_TITLES = {"one label per image": "one label per image", "images": "labels <= images (bytes)",
                 "none": "none"}
_VIEW_DEFAULTS = ViewsConfig()


@dataclass(frozen=True)
class Storage:
    """What a run stored per base image: `views` labelled views (0: the image itself, one label),
    the labels' precision and top-k, and the budget they were made under (`budget.storage`);
    `view_options` names the view options other than the defaults (e.g. "mixup", "rotate 30").
    Runs from before views and storage stored one float32 label per image."""

    views: int = 0
    label_dtype: str = "float32"
    top_k: int = 0
    budget: str = "one label per image"
    view_options: tuple[str, ...] = ()

    @classmethod
    def of(cls, result: dict) -> "Storage":
        stored, views = result.get("storage") or {}, result.get("views") or {}
        per_image = int(views.get("per_image") or 0)
        return cls(per_image, stored.get("label_dtype", "float32"), int(stored.get("label_top_k") or 0),
                   stored.get("budget", "one label per image" if per_image == 0 else "images"),
                   _view_options(views) if per_image else ())

    @property
    def labels_per_image(self) -> int:
        return max(self.views, 1)

    @property
    def precision(self) -> str:
        """How each label is stored: "float16", "float16 top-3"."""
        return self.label_dtype + (f" top-{self.top_k}" if self.top_k else "")

    @property
    def paper(self) -> bool:
        """The paper's storage: one dense float32 label per base image."""
        return self.views == 0 and self.label_dtype == "float32" and not self.top_k

    def views_text(self) -> str:
        if not self.views:
            return "1 label/image"
        options = f" ({', '.join(self.view_options)})" if self.view_options else ""
        return f"{self.views} views/image{options}"

    def words(self) -> list[str]:
        return [self.views_text(), self.precision] + ["no budget"] * (self.budget == "none")

    def parts(self) -> list[str]:
        """What sets the storage apart from the paper's, for a method variant ([] for the paper's)."""
        return [] if self.paper else self.words()

    def __str__(self) -> str:
        """For legends: "1 label/image, float32", "39 views/image, float16", "8 views/image, float16 top-3"."""
        return ", ".join(self.words())


def _view_options(views: dict) -> tuple[str, ...]:
    """A run's view options that differ from today's defaults (the seed aside: seeds are grouped)."""
    d = _VIEW_DEFAULTS
    parts = []
    if views.get("mix", d.mix) != d.mix:
        parts.append(f"{views['mix']}" if views["mix"] != "none" else "no mix")
    if views.get("mix", d.mix) != "none" and views.get("mix_alpha", d.mix_alpha) != d.mix_alpha:
        parts.append(f"alpha {views['mix_alpha']:g}")
    for key, unit in (("rotate", " deg"), ("scale", ""), ("translate", "")):
        if views.get(key, getattr(d, key)) != getattr(d, key):
            parts.append(f"{key} {views[key]:g}{unit}")
    if views.get("include_original", d.include_original) != d.include_original:
        parts.append("no original" if not views["include_original"] else "with original")
    return tuple(parts)


def method_title(variant: str) -> str:
    base, _, rest = variant.partition(" [")
    spec = _spec(base)
    return (spec.title if spec is not None else base) + (f" [{rest}" if rest else "")


def _method_rank(variant: str) -> tuple:
    base = variant.partition(" [")[0]
    spec = _spec(base)
    return (spec.order if spec is not None else 1000, variant)


@dataclass
class Run:
    path: Path
    result: dict
    finished: float = 0.0  # mtime of result.json: among repeats of one setting and seed, the newest is shown

    def __getitem__(self, key):
        return self.result[key]

    @property
    def pair(self) -> str:
        return f"{self.result['source']} -> {self.result['target']}"

    @property
    def target_set_size(self):
        """The target examples the run used, or None for the whole target set (the main tables).
        Runs record the effective size: the reference's files say 50000 also where the target
        set is smaller (CIFAR: 45,000), and those runs used the whole set."""
        eff = self.result.get("effective") or {}
        if "target_set_size" in eff and "available_target_set_size" in eff:
            return None if eff["target_set_size"] >= eff["available_target_set_size"] else eff["target_set_size"]
        return (self.result.get("config") or {}).get("data", {}).get("target_set_size")

    @property
    def method(self) -> str:
        """The method with its learner variant (`method_variant`)."""
        return method_variant(self.result)

    @property
    def storage(self) -> Storage:
        return Storage.of(self.result)

    @property
    def kind(self) -> str:
        """direct, meta or images (`methods.KINDS`): written by the run, else the registry's."""
        if self.result.get("kind"):
            return self.result["kind"]
        spec = _spec(self.result["method"])
        return spec.kind if spec is not None else "direct"


@dataclass
class RunScan:
    """What `scan_runs` found: finished runs, malformed ones left out (one line each, naming
    the file) and unfinished ones (config.json, no result.json yet)."""

    paths: list[Path]
    runs: list[Run] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    unfinished: list[Path] = field(default_factory=list)

    def require(self) -> list[Run]:
        """The finished runs, or one error line when there is none to report."""
        if self.runs:
            return self.runs
        if self.skipped:
            more = f" (and {len(self.skipped) - 1} more malformed runs)" if len(self.skipped) > 1 else ""
            raise RunError(self.skipped[0] + more)
        unfinished = f" ({len(self.unfinished)} unfinished)" if self.unfinished else ""
        raise RunError(f"no finished runs (result.json) under {', '.join(map(str, self.paths))}{unfinished}; "
                       "run `labeldistill run` or `labeldistill sweep` first")


def _at_or_below(p: Path, name: str) -> list[Path]:
    return [p / name] if (p / name).is_file() else sorted(p.rglob(name))


def scan_runs(paths: Iterable[str | Path]) -> RunScan:
    """Run directories at or below each path; each result.json is checked on read
    (`runfiles.check_result`), and a malformed one is left out with the reason."""
    scan = RunScan([Path(p) for p in paths])
    seen = set()
    for p in scan.paths:
        if not p.exists():
            raise RunError(f"no such run directory: {p}")
        for f in _at_or_below(p, RESULT_FILE):
            key = f.resolve()
            if key in seen:
                continue
            seen.add(key)
            try:
                scan.runs.append(Run(f.parent, RunDir(f.parent).read_result(), f.stat().st_mtime))
            except (RunError, OSError) as exc:
                scan.skipped.append(str(exc))
        for f in _at_or_below(p, CONFIG_FILE):
            if not (f.parent / RESULT_FILE).exists() and f.parent.resolve() not in seen:
                seen.add(f.parent.resolve())
                scan.unfinished.append(f.parent)
    return scan


def find_runs(paths: Iterable[str | Path]) -> list[Run]:
    """Finished runs (directories with result.json) at or below each path; a malformed
    run is left out with a warning (`scan_runs` says which and why)."""
    scan = scan_runs(paths)
    for why in scan.skipped:
        warnings.warn(f"skipped a malformed run: {why}", stacklevel=2)
    return scan.require()


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None]
    if not values:
        return math.nan, math.nan
    m = sum(values) / len(values)
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / len(values))


def fmt(mean: float, std: float, note: str = "") -> str:
    if mean is None or math.isnan(mean):
        return ""
    return f"{mean:.2f} ± {std:.2f}{note}"


@dataclass(frozen=True)
class Stat:
    """A test accuracy cell: mean +- std over a run's models, or over `seeds` seeds' means.
    Markdown shows "95.48 ± 0.31 (3 seeds)"; a CSV gives mean, std (and seeds) columns."""

    mean: float
    std: float
    seeds: int = 1
    note: str = ""  # shown after the value in markdown, its own column in a CSV (e.g. "lr 0.01")

    def __str__(self) -> str:
        notes = [f"{self.seeds} seeds"] * (self.seeds > 1) + [self.note] * bool(self.note)
        return fmt(self.mean, self.std, "".join(f" ({n})" for n in notes))


Cell = Any  # str, int, float, Stat, or None (empty)


def fmt_summary(summary: dict | None) -> Stat | str:
    if not summary:
        return ""
    return Stat(summary["test_accuracy_mean"], summary["test_accuracy_std"])


def _text(cell: Cell) -> str:
    if cell is None:
        return ""
    if isinstance(cell, float):
        return f"{cell:.2f}"
    return str(cell)


def _number(value: float) -> float:
    return round(value, 6)  # CSV: numbers, without float noise in the last digits


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[Cell]]
    note: str = ""

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "_", self.title.lower()).strip("_")

    def text_rows(self) -> list[list[str]]:
        """The rows as markdown shows them."""
        return [[_text(c) for c in row] for row in self.rows]

    def markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        if self.note:
            lines += [self.note, ""]
        lines.append("| " + " | ".join(self.header) + " |")
        lines.append("|" + "---|" * len(self.header))
        lines += ["| " + " | ".join(r) + " |" for r in self.text_rows()]
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        """Numbers only: an accuracy column becomes `<column> mean` and `<column> std` (and
        `<column> seeds` where a cell aggregates seeds, `<column> note` where one has a note)."""
        parts = []  # per column: (header, cell -> value) pairs
        for j, h in enumerate(self.header):
            stats = [row[j] for row in self.rows if isinstance(row[j], Stat)]
            if not stats:
                parts.append([(h, lambda c: "" if c is None else (_number(c) if isinstance(c, float) else c))])
                continue
            cols = [(f"{h} mean", lambda c: _number(c.mean)), (f"{h} std", lambda c: _number(c.std))]
            if any(s.seeds > 1 for s in stats):
                cols.append((f"{h} seeds", lambda c: c.seeds))
            if any(s.note for s in stats):
                cols.append((f"{h} note", lambda c: c.note))
            parts.append(cols)
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow([name for cols in parts for name, _ in cols])
        for row in self.rows:
            w.writerow([get(c) if isinstance(c, Stat) or len(cols) == 1 else ""
                        for c, cols in zip(row, parts) for _, get in cols])
        return buf.getvalue()


@dataclass
class Report:
    sections: list[tuple[str, list[Table]]] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)
    num_runs: int = 0
    num_unfinished: int = 0

    @property
    def tables(self) -> list[Table]:
        return [t for _, ts in self.sections for t in ts]

    def markdown(self) -> str:
        unfinished = f", {self.num_unfinished} unfinished" if self.num_unfinished else ""
        out = [f"# labeldistill report ({self.num_runs} runs{unfinished})", "",
               "Test accuracy % (mean ± std over the test models of a run; over seeds where marked).", ""]
        for heading, tables in self.sections:
            if tables:
                out += [f"## {heading}", ""] + [t.markdown() for t in tables]
        return "\n".join(out)

    def csv_records(self) -> str:
        cols = ["run", "table", "source", "target", "arch", "method", "num_base_examples", "seed",
                "target_set_size", "setting", "test_accuracy_mean", "test_accuracy_std", "num_models",
                "num_steps", "labels_per_image", "label_dtype", "label_top_k", "budget", "num_labels",
                "image_bytes", "label_bytes", "total_bytes", "path"]
        buf = io.StringIO()
        w = csv.DictWriter(buf, cols)
        w.writeheader()
        w.writerows(self.records)
        return buf.getvalue()


def _methods(runs: Iterable[Run]) -> list[str]:
    return sorted({r.method for r in runs}, key=_method_rank)


def newest_first(runs: Iterable[Run]) -> list[Run]:
    """Runs ordered newest first (result.json mtime; ties by path), so that
    wherever a repeated setting and seed is shown once, it is its newest run."""
    return sorted(runs, key=lambda r: (-r.finished, str(r.path)))


def newest_per_setting(runs: list[Run]) -> list[Run]:
    """The first (newest) run of each setting and seed of newest-first `runs`."""
    seen, out = set(), []
    for r in runs:
        k = (*_cell_key(r), r["seed"])
        if k not in seen:
            seen.add(k)
            out.append(r)
    return out


def runs_with(runs: list[Run], analysis: str) -> list[Run]:
    """The newest run of each setting and seed among newest-first `runs` whose result holds `analysis`."""
    return newest_per_setting([r for r in runs if r.result.get(analysis)])


def _same_config(a: Run, b: Run, ignore: Iterable[str] = ()) -> bool:
    """Equal configs apart from the name, the keys that change no result and `ignore`; a key
    only one of them has (an option added in a later version, so the older run used its
    default) is not compared."""
    fa, fb = (flat_keys(r.result.get("config") or {}) for r in (a, b))
    skip = {"name", *NEUTRAL_KEYS, *ignore}
    return all(fa[k] == fb[k] for k in fa.keys() & fb.keys() if k not in skip)


def _cell_key(r: Run) -> tuple:
    """What one cell of the main tables shows (with the seed: one run, or its repeats)."""
    return (r.pair, r["arch"], r["num_base_examples"], r.method, r.target_set_size)


def _by_seed(runs: list[Run]) -> dict[int, Run]:
    """One run per seed: `runs` come newest first, so a repeated run counts once, as its newest."""
    by_seed: dict[int, Run] = {}
    for r in runs:
        by_seed.setdefault(r["seed"], r)
    return by_seed


def cell_summary(runs: list[Run]) -> tuple[float, float, int]:
    """(mean, std, number of seeds) of one cell: one run, its models' mean +- std;
    several seeds, mean +- std of the seeds' means."""
    by_seed = _by_seed(runs)
    if len(by_seed) == 1:
        r = next(iter(by_seed.values()))
        return r["test_accuracy_mean"], r["test_accuracy_std"], 1
    m, s = mean_std([r["test_accuracy_mean"] for r in by_seed.values()])
    return m, s, len(by_seed)


def _cell(runs: list[Run]) -> Stat | str:
    if not runs:
        return ""
    return Stat(*cell_summary(runs))


def main_groups(runs: list[Run]) -> list[tuple[tuple[str, str], list[Run]]]:
    """Runs of the main tables (no target-set-size analysis) by (dataset pair, architecture), sorted."""
    groups = defaultdict(list)
    for r in runs:
        if r.target_set_size is None:
            groups[(r.pair, r["arch"])].append(r)
    return sorted(groups.items())


def optimizer_columns(rs: list[Run]) -> tuple[list[str], dict[str, set]]:
    """The optimisers tested in `rs` (SGD, momentum, Adam first) and the learning rates each was used with."""
    opts = [o for o in OPTIMIZER_TITLES if any(o in r["optimizer_transfer"] for r in rs)]
    opts += sorted({o for r in rs for o in r["optimizer_transfer"]} - set(opts))
    return opts, {o: {r["optimizer_transfer"][o]["lr"] for r in rs if o in r["optimizer_transfer"]} for o in opts}


STORAGE_HEADER = ["labels per image", "labels stored as", "budget"]
STORAGE_NOTE = ("One row per method and storage: rows that store more labels per image, or store them in another "
                "precision, spend another budget (one float32 label per image is the paper's).")


def storage_cells(r: Run) -> list[Cell]:
    """A row's storage, said in the row: labels per image, their precision, the budget."""
    st = r.storage
    return [st.labels_per_image, st.precision, BUDGET_TITLES.get(st.budget, st.budget)]


def _main_tables(runs: list[Run]) -> list[Table]:
    tables = []
    for (pair, arch), rs in main_groups(runs):
        counts = sorted({r["num_base_examples"] for r in rs})
        rows = []
        for m in _methods(rs):
            of_m = [r for r in rs if r.method == m]
            rows.append([method_title(method_variant(of_m[0].result, storage=False))] + storage_cells(of_m[0])
                        + [_cell([r for r in of_m if r["num_base_examples"] == n]) for n in counts])
        tables.append(Table(f"{pair} ({arch})", ["method"] + STORAGE_HEADER + [f"{n} base images" for n in counts],
                            rows, note=STORAGE_NOTE))
    return tables


def seed_groups(runs: list[Run]) -> list[list[Run]]:
    """Runs that differ only in their seed (and name, and settings that change no result),
    grouped; newest-first `runs` keep that order within each group."""
    groups: list[list[Run]] = []
    for r in runs:
        for g in groups:
            if _cell_key(g[0]) == _cell_key(r) and _same_config(g[0], r, ignore=("seed",)):
                g.append(r)
                break
        else:
            groups.append([r])
    return groups


def _seed_tables(runs: list[Run]) -> list[Table]:
    multi = [_by_seed(g) for g in seed_groups(runs)]
    multi = [g for g in multi if len(g) > 1]
    if not multi:
        return []
    seeds = sorted({s for g in multi for s in g})
    rows = []
    for by_seed in sorted(multi, key=lambda g: str(_cell_key(next(iter(g.values()))))):
        first = next(iter(by_seed.values()))
        means = [r["test_accuracy_mean"] for r in by_seed.values()]
        model_std, _ = mean_std([r["test_accuracy_std"] for r in by_seed.values()])
        rows.append([first.pair, first["num_base_examples"], method_title(first.method)]
                    + [by_seed[sd]["test_accuracy_mean"] if sd in by_seed else None for sd in seeds]
                    + [Stat(*mean_std(means)), model_std, len(by_seed)])
    return [Table("Seeds", ["pair", "base examples", "method"] + [f"seed {s}" for s in seeds]
                  + ["accuracy over seeds", "mean per-model std", "seeds"], rows,
                  note="Runs that differ only in their seed. Each seed's value is the mean over its test "
                       "models; accuracy over seeds is the mean ± std of these means, next to the mean of the "
                       "runs' own std over their test models.")]


def _repeat_tables(runs: list[Run]) -> list[Table]:
    """Runs of one setting and seed found more than once (e.g. a run repeated in another folder)."""
    groups = defaultdict(list)
    for r in runs:
        groups[(*_cell_key(r), r["seed"])].append(r)
    rows = []
    for (pair, arch, n, method, tss, seed), rs in sorted(groups.items(), key=lambda kv: str(kv[0])):
        if len(rs) > 1:
            shown = rs[0]
            for r in rs:
                rows.append([pair, arch, n, tss, method_title(method), seed,
                             "shown (newest)" if r is shown else "also found",
                             Stat(r["test_accuracy_mean"], r["test_accuracy_std"]),
                             "" if _same_config(r, shown) else "different", str(r.path)])
    if not rows:
        return []
    return [Table("Repeated runs", ["pair", "arch", "base examples", "target-set size", "method", "seed",
                                    "run", "test accuracy", "config", "path"], rows,
                  note="The same setting and seed finished more than once; the tables show the newest "
                       "(runs.csv lists all). different: that run's config differs from the one shown beyond "
                       "its name.")]


def _target_set_tables(runs: list[Run]) -> list[Table]:
    groups = defaultdict(list)
    for r in runs:
        if r.target_set_size is not None:
            groups[(r.pair, r["num_base_examples"])].append(r)
    tables = []
    for (pair, n), rs in sorted(groups.items()):
        methods = _methods(rs)
        sizes = sorted({r.target_set_size for r in rs})
        rows = [[f"{size:,}"] + [_cell([r for r in rs if r.target_set_size == size and r.method == m])
                                 for m in methods] for size in sizes]
        tables.append(Table(f"Target-set size: {pair}, {n} base examples", ["target examples"]
                            + [method_title(m) for m in methods], rows))
    return tables


def _offsets(analyses: Iterable[dict]) -> list[str]:
    return sorted({k for a in analyses for k in a}, key=int)


def _offset_title(o: str) -> str:
    return "best" if int(o) == 0 else f"{int(o):+d}"


def _steps_tables(runs: list[Run]) -> list[Table]:
    rs = runs_with(runs, "num_steps_analysis")
    if not rs:
        return []
    offsets = _offsets(r["num_steps_analysis"] for r in rs)
    rows = []
    for r in sorted(rs, key=lambda r: (r.pair, r["num_base_examples"], _method_rank(r.method), r["seed"])):
        a = r["num_steps_analysis"]
        rows.append([r.pair, str(r["num_base_examples"]), method_title(r.method), str(r["seed"]),
                     str(r["num_steps"])] + [fmt_summary(a.get(o)) for o in offsets])
    return [Table("Number of steps", ["pair", "base examples", "method", "seed", "best steps"]
                  + [_offset_title(o) for o in offsets], rows,
                  note="The same test models evaluated at the best number of steps plus each offset.")]


def _arch_tables(runs: list[Run]) -> list[Table]:
    rs = runs_with(runs, "architecture_transfer")
    if not rs:
        return []
    archs = sorted({a for r in rs for a in r["architecture_transfer"]})
    rows = []
    for r in sorted(rs, key=lambda r: (r.pair, r["num_base_examples"], r.method, r["seed"])):
        t = r["architecture_transfer"]
        rows.append([r.pair, str(r["num_base_examples"]), method_title(r.method), r["arch"],
                     str(r["seed"])] + [fmt_summary(t.get(a)) for a in archs])
    return [Table("Architecture transfer", ["pair", "base examples", "method", "learned with", "seed"]
                  + [f"test {a}" for a in archs], rows,
                  note="Labels learned with one architecture, test models of each listed architecture.")]


def _optimizer_tables(runs: list[Run]) -> list[Table]:
    rs = runs_with(runs, "optimizer_transfer")
    if not rs:
        return []
    opts, lrs = optimizer_columns(rs)
    key = lambda r: (r.pair, r["num_base_examples"], _method_rank(r.method),  # noqa: E731
                     r["seed"])
    rows = []
    for r in sorted(rs, key=key):
        t = r["optimizer_transfer"]
        rows.append([r.pair, str(r["num_base_examples"]), method_title(r.method), str(r["seed"]),
                     Stat(r["test_accuracy_mean"], r["test_accuracy_std"])]
                    + [fmt_summary(t.get(o)) for o in opts])
    for row, r in zip(rows, sorted(rs, key=key)):  # runs that disagree on a rate carry it in their cells
        for j, o in enumerate(opts):
            if len(lrs[o]) > 1 and row[5 + j]:
                row[5 + j] = Stat(row[5 + j].mean, row[5 + j].std, note=f"lr {r['optimizer_transfer'][o]['lr']:g}")
    header = ["pair", "base examples", "method", "seed", "as learned"] + [
        OPTIMIZER_TITLES.get(o, o) + (f" (lr {next(iter(lrs[o])):g})" if len(lrs[o]) == 1 else "")
        for o in opts]
    tables = [Table("Optimiser flexibility", header, rows,
                    note="Test models trained with off-the-shelf optimisers; true-label baseline rows use the "
                         "same learners.")]
    stepped = [r for r in rs if any("num_steps_analysis" in v for v in r["optimizer_transfer"].values())]
    if stepped:
        offsets = _offsets(v["num_steps_analysis"] for r in stepped for v in r["optimizer_transfer"].values()
                           if "num_steps_analysis" in v)
        rows = []
        for r in sorted(stepped, key=key):
            for o in opts:
                a = r["optimizer_transfer"].get(o, {}).get("num_steps_analysis")
                if a:
                    rows.append([r.pair, str(r["num_base_examples"]), method_title(r.method), str(r["seed"]),
                                 OPTIMIZER_TITLES.get(o, o), str(r["num_steps"])]
                                + [fmt_summary(a.get(off)) for off in offsets])
        tables.append(Table("Optimiser x number of steps", ["pair", "base examples", "method", "seed", "optimiser",
                                                            "best steps"] + [_offset_title(o) for o in offsets],
                            rows, note="Each optimiser's test models evaluated at the best number of steps "
                                       "(chosen with the default learner) plus each offset."))
    return tables


def _records(runs: list[Run]) -> list[dict]:
    out = []
    for r in runs:
        base = {"run": r["name"], "source": r["source"], "target": r["target"], "arch": r["arch"],
                "method": r.method, "num_base_examples": r["num_base_examples"], "seed": r["seed"],
                "target_set_size": r.target_set_size, "path": str(r.path)}
        st = r.storage
        base.update(labels_per_image=st.labels_per_image, label_dtype=st.label_dtype,
                    label_top_k=st.top_k or None, budget=st.budget)
        stored = r.result.get("storage") or {}  # what the distilled dataset costs (runs before it: blank)
        base.update({k: stored.get(k) for k in ("num_labels", "image_bytes", "label_bytes", "total_bytes")})

        def add(table, setting, summary, steps):
            out.append({**base, "table": table, "setting": setting,
                        "test_accuracy_mean": summary["test_accuracy_mean"],
                        "test_accuracy_std": summary["test_accuracy_std"],
                        "num_models": len(summary.get("test_accuracy", [])), "num_steps": steps})

        add("main", "", r.result, r["num_steps"])
        for off, a in (r.result.get("num_steps_analysis") or {}).items():
            add("num_steps", f"offset {off}", a, a["num_steps"])
        for arch, a in (r.result.get("architecture_transfer") or {}).items():
            add("architecture", arch, a, r["num_steps"])
        for opt, a in (r.result.get("optimizer_transfer") or {}).items():
            add("optimizer", opt, a, r["num_steps"])
            for off, b in (a.get("num_steps_analysis") or {}).items():
                add("optimizer_steps", f"{opt} offset {off}", b, b["num_steps"])
    return out


def _comparison_tables(runs: list[Run]) -> list[Table]:
    """One table for every method: rows are methods (with their learner and storage), columns the
    (dataset pair, architecture, base examples) settings; and the wall time (labels and
    test together, mean over seeds) of each method at the first column with 100 base examples."""
    rs = [r for r in runs if r.target_set_size is None]
    columns = sorted({(r.pair, r["arch"], r["num_base_examples"]) for r in rs},
                     key=lambda c: (c[0] != "mnist -> mnist", c[0], c[1], c[2]))
    if len({(p, a) for p, a, _ in columns}) < 2:
        return []  # one dataset pair: its main table already says it all
    timed = next((c for c in columns if c[2] == 100), None)
    column = lambda c: f"{c[0]} {c[2]} ({c[1]})"  # noqa: E731 - a setting's column header
    rows = []
    for m in _methods(rs):
        of_m = [r for r in rs if r.method == m]
        row = [method_title(method_variant(of_m[0].result, storage=False))] + storage_cells(of_m[0])
        for pair, arch, n in columns:
            row.append(_cell([r for r in of_m if (r.pair, r["arch"], r["num_base_examples"]) == (pair, arch, n)]))
        if timed is not None:
            cell = newest_per_setting([r for r in of_m if (r.pair, r["arch"], r["num_base_examples"]) == timed])
            secs = [r["train_seconds"] + r["test_seconds"] for r in cell if "train_seconds" in r.result]
            row.append(round(sum(secs) / len(secs)) if secs else None)
        rows.append(row)
    header = ["method"] + STORAGE_HEADER + [column(c) for c in columns]
    if timed is not None:  # the column whose runs were timed, by its header
        header.append(f"seconds (labels + test) for {column(timed)}")
    return [Table("Methods compared", header, rows, note=STORAGE_NOTE)]


def _unfinished_tables(unfinished: Sequence[Path]) -> list[Table]:
    if not unfinished:
        return []
    rows = [[Path(p).name, str(p)] for p in unfinished]
    return [Table("Unfinished runs", ["run", "path"], rows,
                  note="Started (config.json) but without a result yet: running, stopped or failed; "
                       "`labeldistill run PATH --resume` continues one.")]


def build_report(runs: Sequence[Run], unfinished: Sequence[Path] = ()) -> Report:
    """The tables of finished `runs`, and a list of the `unfinished` run directories."""
    runs = newest_first(runs)  # repeats show their newest run
    rep = Report(num_runs=len(runs), num_unfinished=len(unfinished))
    rep.sections = [
        ("Methods compared", _comparison_tables(runs)),
        ("Test accuracy by dataset pair", _main_tables(runs)),
        ("Seeds", _seed_tables(runs)),
        ("Target-set size", _target_set_tables(runs)),
        ("Number-of-steps analysis", _steps_tables(runs)),
        ("Architecture transfer", _arch_tables(runs)),
        ("Optimiser flexibility", _optimizer_tables(runs)),
        ("Repeated runs", _repeat_tables(runs)),
        ("Unfinished runs", _unfinished_tables(unfinished)),
    ]
    rep.records = _records(runs)
    return rep


def write_report(report: Report, out: str | Path) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "report.md", out / "runs.csv"]
    paths[0].write_text(report.markdown())
    paths[1].write_text(report.csv_records())
    for t in report.tables:
        p = out / f"{t.slug}.csv"
        p.write_text(t.csv())
        paths.append(p)
    return paths
