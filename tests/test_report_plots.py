"""Reports and figures: numbers in the tables, CSV, and PNGs from a real (tiny) run."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from labeldistill import config as config_mod
from labeldistill.cli import main
from labeldistill.experiment import run_experiment
from labeldistill.errors import RunError
from labeldistill.report import Run, build_report, find_runs, write_report

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PAPER = ["1", "float32", "one label per image"]  # a main-table row's storage: the paper's one label per image


def fake_result(method, n, seed, accs, source="mnist", target="mnist", **extra):
    mean = float(np.mean(accs))
    return {"name": f"{method}_{n}_{seed}", "method": method, "source": source, "target": target, "arch": "lenet",
            "num_base_examples": n, "seed": seed, "test_accuracy": accs, "test_accuracy_mean": mean,
            "test_accuracy_std": float(np.std(accs)), "num_steps": 100, "labels": [[0.5, 0.5]], "base_indices": [0],
            "history": [], "config": {"data": {"target_set_size": extra.pop("tss", None)}}, **extra}


def write_runs(root: Path, results):
    for r in results:
        d = root / r["name"]
        d.mkdir(parents=True)
        (d / "result.json").write_text(json.dumps(r))


def test_tables_mean_std_over_models_and_over_seeds(tmp_path):
    write_runs(tmp_path, [
        fake_result("ld-rr", 10, 0, [60.0, 62.0]),
        fake_result("ld-rr", 10, 465, [70.0, 70.0]),
        fake_result("baseline", 10, 0, [50.0, 54.0]),
        fake_result("ld-or2", 100, 0, [80.0, 90.0]),
        fake_result("ld-rr", 100, 0, [40.0, 40.0], source="emnist", tss=500),
    ])
    rep = build_report(find_runs([tmp_path]))
    main_table = next(t for t in rep.tables if t.title == "mnist -> mnist (lenet)")
    assert main_table.header == ["method", "labels per image", "labels stored as", "budget", "10 base images",
                                 "100 base images"]
    # Several seeds: mean +- std of the seeds' means (61 and 70).
    assert main_table.text_rows() == [["LD RR", *PAPER, "65.50 ± 4.50 (2 seeds)", ""],
                                      ["LD or2", *PAPER, "", "85.00 ± 5.00"],
                                      ["true labels", *PAPER, "52.00 ± 2.00", ""]]
    seeds = next(t for t in rep.tables if t.title == "Seeds")
    # mean +- std over the seeds' means (61, 70), the mean per-model std ((1 + 0) / 2), 2 seeds
    assert seeds.text_rows() == [["mnist -> mnist", "10", "LD RR", "61.00", "70.00", "65.50 ± 4.50", "0.50", "2"]]
    tss = next(t for t in rep.tables if t.title.startswith("Target-set size"))
    assert tss.text_rows() == [["500", "40.00 ± 0.00"]]
    paths = write_report(rep, tmp_path / "rep")
    assert (tmp_path / "rep" / "report.md").read_text().count("65.50 ± 4.50 (2 seeds)") == 1
    rows = list(csv.DictReader(open(tmp_path / "rep" / "runs.csv")))
    assert len(rows) == 5 and {float(r["test_accuracy_mean"]) for r in rows} == {61.0, 70.0, 52.0, 85.0, 40.0}
    assert all(p.is_file() for p in paths)


def test_a_repeated_run_shows_its_newest_and_lists_the_others(tmp_path):
    import os
    write_runs(tmp_path / "old", [fake_result("ld-rr", 100, 0, [80.0, 82.0])])
    write_runs(tmp_path / "new", [fake_result("ld-rr", 100, 0, [90.0, 90.0])])
    os.utime(tmp_path / "old" / "ld-rr_100_0" / "result.json", (1_000_000, 1_000_000))
    for order in ([tmp_path / "new", tmp_path / "old"], [tmp_path / "old", tmp_path / "new"]):
        rep = build_report(find_runs(order))
        main_table = next(t for t in rep.tables if t.title == "mnist -> mnist (lenet)")
        assert main_table.text_rows() == [["LD RR", *PAPER, "90.00 ± 0.00"]]  # the newest, not the first found
        assert not any(t.title == "Seeds" for t in rep.tables)  # a repeat is not a second seed
        rep_table = next(t for t in rep.tables if t.title == "Repeated runs")
        setting = ["mnist -> mnist", "lenet", "100", "", "LD RR", "0"]
        assert rep_table.text_rows() == [
            [*setting, "shown (newest)", "90.00 ± 0.00", "", str(tmp_path / "new" / "ld-rr_100_0")],
            [*setting, "also found", "81.00 ± 1.00", "", str(tmp_path / "old" / "ld-rr_100_0")]]
        assert len(rep.records) == 2  # runs.csv keeps both


def test_a_repeat_next_to_a_second_seed_counts_once_and_a_changed_config_is_flagged(tmp_path):
    import os
    old = fake_result("ld-rr", 10, 0, [10.0])
    old["config"]["distill"] = {"epochs": 2}  # e.g. a smoke run of the same setting
    write_runs(tmp_path / "old", [old])
    new0 = fake_result("ld-rr", 10, 0, [60.0])
    new0["config"]["distill"] = {"epochs": 400, "option_added_later": 1}
    write_runs(tmp_path / "new", [new0, fake_result("ld-rr", 10, 1, [70.0])])
    os.utime(tmp_path / "old" / "ld-rr_10_0" / "result.json", (1_000_000, 1_000_000))
    rep = build_report(find_runs([tmp_path]))
    main_table = next(t for t in rep.tables if t.title == "mnist -> mnist (lenet)")
    # seeds 0 (newest: 60) and 1, not 10
    assert main_table.text_rows() == [["LD RR", *PAPER, "65.00 ± 5.00 (2 seeds)"]]
    assert next(t for t in rep.tables if t.title == "Seeds").text_rows() == [
        ["mnist -> mnist", "10", "LD RR", "60.00", "70.00", "65.00 ± 5.00", "0.00", "2"]]
    also = next(t for t in rep.tables if t.title == "Repeated runs").text_rows()[1]
    assert also[-4:-1] == ["also found", "10.00 ± 0.00", "different"]
    # the same config, except an option the older version did not have yet: not flagged
    old["config"]["distill"] = {"epochs": 400}
    (tmp_path / "old" / "ld-rr_10_0" / "result.json").write_text(json.dumps(old))
    os.utime(tmp_path / "old" / "ld-rr_10_0" / "result.json", (1_000_000, 1_000_000))
    also = next(t for t in build_report(find_runs([tmp_path])).tables if t.title == "Repeated runs").rows[1]
    assert also[-2] == ""


def test_optimiser_rates_that_differ_between_runs_are_shown_per_cell(tmp_path):
    def transfer(lr):
        return {"optimizer_transfer": {"sgd": {"lr": 0.1, "test_accuracy_mean": 50.0, "test_accuracy_std": 1.0},
                                       "momentum": {"lr": lr, "test_accuracy_mean": 60.0, "test_accuracy_std": 2.0}}}
    write_runs(tmp_path, [fake_result("ld-rr", 10, 0, [70.0], **transfer(0.01)),
                          fake_result("baseline", 10, 0, [40.0], **transfer(0.03))])
    table = next(t for t in build_report(find_runs([tmp_path])).tables if t.title == "Optimiser flexibility")
    assert table.header[-2:] == ["SGD (lr 0.1)", "SGD+momentum"]
    assert [r[-2:] for r in table.text_rows()] == [["50.00 ± 1.00", "60.00 ± 2.00 (lr 0.01)"],
                                                   ["50.00 ± 1.00", "60.00 ± 2.00 (lr 0.03)"]]


def test_report_without_runs_is_a_one_line_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no finished runs (result.json)" in capsys.readouterr().err
    with pytest.raises(RunError, match="no such run directory"):
        find_runs([tmp_path / "nope"])


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory):
    """A tiny real ld-rr run on the embedded MNIST sample with every analysis switched on."""
    out = tmp_path_factory.mktemp("runs")
    cfg = config_mod.apply(config_mod.Config(), {
        "name": "tiny_flex", "method": "ld-rr", "data.source": "mnist5k", "data.target": "mnist5k",
        "data.num_base_examples": 10, "distill.epochs": 2,
        "distill.batch_size": 512, "distill.validate_every": 1, "evaluate.num_test_models": 2,
        "evaluate.num_steps_analysis": True, "evaluate.step_offsets": [-5, 0, 5],
        "evaluate.test_optimizers": ["sgd", "adam"], "evaluate.test_architectures": ["lenet"]})
    result = run_experiment(config_mod.validate(cfg), out=str(out), device="cpu")
    return out, result


def test_a_run_repeated_in_another_folder_is_drawn_to_its_own_files(real_runs, tmp_path):
    import shutil

    from labeldistill.plots import plot_runs
    out, _ = real_runs
    shutil.copytree(out / "tiny_flex", tmp_path / "copy" / "tiny_flex")
    paths, _ = plot_runs(find_runs([out, tmp_path / "copy"]), tmp_path / "fig")
    curves = sorted(p.name for p in paths if p.name.endswith("_curves.png"))
    assert curves == ["tiny_flex_2_curves.png", "tiny_flex_curves.png"]


def test_flexibility_analyses_land_in_the_result(real_runs):
    _, r = real_runs
    steps = r["num_steps"]
    assert set(r["num_steps_analysis"]) == {str(o) for o in (-5, 0, 5) if steps + o > 0}
    assert set(r["optimizer_transfer"]) == {"sgd", "adam"}
    # Adam is the default learner: same seeds and steps, so the same models as the main test.
    assert r["optimizer_transfer"]["adam"]["test_accuracy"] == r["test_accuracy"]
    assert r["optimizer_transfer"]["adam"]["num_steps_analysis"]["5"] == r["num_steps_analysis"]["5"]
    assert r["optimizer_transfer"]["sgd"]["lr"] == 0.1
    assert r["architecture_transfer"]["lenet"]["test_accuracy"] == r["test_accuracy"]


def test_report_and_plot_commands_on_a_real_run(real_runs, tmp_path, capsys):
    out, r = real_runs
    assert main(["report", str(out), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    for title in ("mnist5k -> mnist5k (lenet)", "Number of steps", "Architecture transfer",
                  "Optimiser flexibility", "Optimiser x number of steps"):
        assert f"### {title}" in md
    assert f"{r['test_accuracy_mean']:.2f} ± {r['test_accuracy_std']:.2f}" in md
    assert main(["plot", str(out), "--out", str(tmp_path / "fig")]) == 0
    import matplotlib.image as mpimg

    names = {p.name for p in (tmp_path / "fig").rglob("*.png")}
    assert names == {"tiny_flex_curves.png", "tiny_flex_labels.png", "num_steps.png", "architectures.png",
                     "optimizers.png", "optimizer_steps.png"}
    img = mpimg.imread(tmp_path / "fig" / "runs" / "tiny_flex_labels.png")
    assert img.shape[0] > 300 and img.shape[1] > 500 and img.std() > 0.05  # a real picture, not blank


def test_emnist_base_images_are_shown_upright():
    if not (DATA / "emnist_letters.npz").is_file():
        pytest.skip(f"real EMNIST not found at {DATA}")
    from labeldistill.datasets import load_raw
    from labeldistill.plots import base_images

    run = Run(Path("/nonexistent"), fake_result("ld-rr", 2, 0, [1.0], source="emnist", base_indices=[3, 7]))
    shown = base_images(run, str(DATA))
    raw = load_raw("emnist", str(DATA), download=False).x_train[[3, 7]].float().numpy() / 255
    np.testing.assert_allclose(shown, raw.transpose(0, 2, 1))


def test_runs_whose_base_images_are_missing_share_one_note(tmp_path):
    from labeldistill.plots import plot_runs
    write_runs(tmp_path / "runs", [fake_result("ld-rr", 10, 0, [60.0], base_indices=[1]),
                                   fake_result("ld-or2", 10, 0, [50.0], base_indices=[2])])
    (tmp_path / "empty").mkdir()
    _, notes = plot_runs(find_runs([tmp_path / "runs"]), tmp_path / "fig", data_root=str(tmp_path / "empty"))
    assert len(notes) == 1
    assert notes[0].startswith("no label figure for ") and "ld-rr_10_0" in notes[0] and "ld-or2_10_0" in notes[0]
    assert "dataset 'mnist' not found" in notes[0]


def test_optimiser_figure_draws_a_repeat_once_and_names_every_rate(tmp_path, monkeypatch):
    import os

    from labeldistill import plots

    def transfer(lr):
        return {"optimizer_transfer": {"momentum": {"lr": lr, "test_accuracy_mean": 60.0, "test_accuracy_std": 2.0}}}
    write_runs(tmp_path / "old", [fake_result("ld-rr", 10, 0, [70.0], **transfer(0.01))])
    write_runs(tmp_path / "new", [fake_result("ld-rr", 10, 0, [71.0], **transfer(0.03)),
                                  fake_result("baseline", 10, 0, [40.0], **transfer(0.01))])
    os.utime(tmp_path / "old" / "ld-rr_10_0" / "result.json", (1_000_000, 1_000_000))
    drawn = {}
    monkeypatch.setattr(plots, "_grouped_bars", lambda ax, groups, keys, values, legend: drawn.update(
        groups=groups, legend=legend))
    runs = plots.newest_first(find_runs([tmp_path]))
    assert plots.plot_optimizers(runs, tmp_path / "opt.png").is_file()
    assert len(drawn["groups"]) == 2  # the LD-rr run and the baseline; the older LD-rr repeat is not drawn
    assert drawn["legend"] == {"momentum": "SGD+momentum (lr 0.01, 0.03)"}


def test_methods_compared_table_separates_learners_and_times_mnist_100(tmp_path):
    def with_learner(r, **learner):
        r["name"] += "_" + "_".join(f"{k}{v}" for k, v in learner.items())
        r["learner"] = {"head": "linear", "loss": "ce", "augment": 0, **learner}
        r["train_seconds"], r["test_seconds"] = 30.0, 10.0
        return r

    write_runs(tmp_path, [
        with_learner(fake_result("label-solve", 100, 0, [90.0, 92.0])),
        with_learner(fake_result("label-solve", 100, 1, [94.0, 94.0])),
        with_learner(fake_result("label-solve", 100, 0, [93.0, 95.0]), augment=2),
        with_learner(fake_result("baseline", 100, 0, [80.0, 80.0]), head="rr"),
        with_learner(fake_result("baseline", 100, 0, [81.0, 81.0])),
        with_learner(fake_result("baseline-kd", 100, 0, [70.0, 72.0], source="emnist")),
    ])
    rep = build_report(find_runs([tmp_path]))
    table = next(t for t in rep.tables if t.title == "Methods compared")
    assert table.header == ["method", "labels per image", "labels stored as", "budget", "mnist -> mnist 100 (lenet)",
                            "emnist -> mnist 100 (lenet)", "seconds (labels + test) for mnist -> mnist 100 (lenet)"]
    assert table.text_rows() == [
        ["label solve", *PAPER, "92.50 ± 1.50 (2 seeds)", "", "40"],
        ["label solve [shifts 2px]", *PAPER, "94.00 ± 1.00", "", "40"],
        ["teacher labels", *PAPER, "", "71.00 ± 1.00", ""],
        ["true labels", *PAPER, "81.00 ± 0.00", "", "40"],
        ["true labels [rr head]", *PAPER, "80.00 ± 0.00", "", "40"],
    ]
    assert not any(t.title == "Repeated runs" and t.rows for t in rep.tables)


def test_reference_runs_that_used_the_whole_target_set_are_in_the_main_tables(tmp_path):
    """Reference files say target_set_size 50000 everywhere; what a run used decides the table."""
    whole = {"target_set_size": 45000, "available_target_set_size": 45000}
    write_runs(tmp_path, [
        fake_result("ld-rr", 10, 0, [30.0], source="cifar10", target="cifar10", tss=50000, effective=whole),
        fake_result("ld-rr", 100, 0, [60.0], source="emnist", tss=500,
                    effective={"target_set_size": 500, "available_target_set_size": 50000}),
    ])
    rep = build_report(find_runs([tmp_path]))
    assert next(t for t in rep.tables if t.title == "cifar10 -> cifar10 (lenet)").text_rows() == [
        ["LD RR", *PAPER, "30.00 ± 0.00"]]
    sizes = next(t for t in rep.tables if t.title.startswith("Target-set size"))
    assert [r[0] for r in sizes.rows] == ["500"]


def test_method_variant_names_what_sets_a_run_apart():
    from labeldistill.report import method_title, method_variant

    def ld(epochs=None, **distill):
        r = fake_result("ld-rr", 100, 0, [1.0])
        r["config"] = {"data": {"target": "mnist"}, "distill": {"epochs": epochs, **distill}}
        r["effective"] = {"epochs": epochs or 400}
        return r

    assert method_variant(ld()) == "ld-rr"  # the reference's 400 epochs
    assert method_variant(ld(400)) == "ld-rr"
    assert method_variant(ld(50, init_labels="baseline-kd")) == "ld-rr [from teacher labels, 50 epochs]"
    assert method_variant(ld(100, ridge_lambda=0.1)) == "ld-rr [100 epochs, lambda 0.1]"
    kd = fake_result("baseline-kd", 100, 0, [1.0])
    kd["config"] = {"evaluate": {"kd_num_teachers": 5}}
    kd["learner"] = {"head": "linear", "loss": "ce", "augment": 2}
    assert method_title(method_variant(kd)) == "teacher labels [5 teachers, shifts 2px]"


# ---------------------------------------------------------------------------
# views and storage budgets: separate rows and lines, and the figures that show them


def with_views(r, per_image=8, label_dtype="float16", **view_options):
    """A fake result of a run that stored `per_image` labelled views per base image."""
    r["name"] += f"_views{per_image}"
    n = r["num_base_examples"]
    r["views"] = {"per_image": per_image, "include_original": True, "rotate": 15.0, "scale": 0.1, "translate": 0.1,
                  "mix": "cutmix", "mix_alpha": 1.0, "seed": r["seed"], "num_views": per_image * n,
                  **view_options}
    r["config"]["views"] = {"per_image": per_image, **view_options}
    r["base_indices"], r["labels"] = list(range(n)), [[0.5, 0.5]] * (per_image * n)
    r["storage"] = {"num_images": n, "image_dtype": "uint8", "image_bytes": 784 * n, "num_labels": per_image * n,
                    "label_dtype": label_dtype, "label_bytes": 20 * per_image * n, "labels_per_image": per_image,
                    "total_bytes": 784 * n + 20 * per_image * n, "budget": "images"}
    return r


def test_report_keeps_runs_of_other_storage_in_their_own_rows_and_says_their_budget(tmp_path):
    write_runs(tmp_path, [
        fake_result("baseline", 10, 0, [50.0, 54.0]),
        with_views(fake_result("baseline", 10, 0, [80.0, 82.0])),
        with_views(fake_result("baseline", 10, 1, [84.0, 84.0])),
        with_views(fake_result("baseline", 10, 0, [70.0, 70.0]), per_image=4, mix="mixup"),
    ])
    rep = build_report(find_runs([tmp_path]))
    main_table = next(t for t in rep.tables if t.title == "mnist -> mnist (lenet)")
    assert main_table.text_rows() == [
        ["true labels", *PAPER, "52.00 ± 2.00"],
        ["true labels", "4", "float16", "labels <= images (bytes)", "70.00 ± 0.00"],
        ["true labels", "8", "float16", "labels <= images (bytes)", "82.50 ± 1.50 (2 seeds)"]]
    seeds = next(t for t in rep.tables if t.title == "Seeds")  # only the views run has two seeds
    assert [row[2] for row in seeds.text_rows()] == ["true labels [8 views/image, float16]"]
    assert not any(t.title == "Repeated runs" for t in rep.tables)  # other storage is no repeat
    write_report(rep, tmp_path / "rep")
    rows = {(r["run"]): r for r in csv.DictReader(open(tmp_path / "rep" / "runs.csv"))}
    assert rows["baseline_10_0"]["labels_per_image"] == "1" and rows["baseline_10_0"]["budget"] == "one label per image"
    assert rows["baseline_10_0"]["label_dtype"] == "float32" and rows["baseline_10_0"]["label_bytes"] == ""
    views = rows["baseline_10_0_views8"]
    assert (views["labels_per_image"], views["label_dtype"], views["budget"], views["label_bytes"],
            views["total_bytes"]) == ("8", "float16", "images", "1600", "9440")
    assert rows["baseline_10_0_views4"]["method"] == "baseline [4 views/image (mixup), float16]"


def capture_figures(monkeypatch):
    """Keep each figure `plots` saves (by file name), open, for its artists to be checked."""
    from labeldistill import plots

    figures = {}

    def save(fig, path):
        figures[Path(path).name] = fig
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)  # written, but left open
        return Path(path)

    monkeypatch.setattr(plots, "_save", save)
    return figures


def test_accuracy_figure_draws_a_line_per_method_and_storage_with_the_seeds_spread(tmp_path, monkeypatch):
    from labeldistill import plots

    write_runs(tmp_path, [
        fake_result("baseline", 10, 0, [50.0, 54.0]), fake_result("baseline", 100, 0, [80.0, 80.0]),
        with_views(fake_result("baseline", 10, 0, [60.0, 62.0])), with_views(fake_result("baseline", 10, 1, [70.0])),
        with_views(fake_result("baseline", 100, 0, [90.0])), with_views(fake_result("baseline", 100, 1, [92.0])),
        with_views(fake_result("baseline-kd", 100, 0, [93.0, 95.0])),
        fake_result("ld-rr", 10, 0, [66.0]),
    ])
    runs = find_runs([tmp_path])
    [(key, lines)] = plots.accuracy_lines(runs)
    assert key == ("mnist -> mnist", "lenet")
    by_label = {line.label: line for line in lines}
    assert set(by_label) == {"LD RR, 1 label/image, float32", "true labels, 1 label/image, float32",
                             "true labels, 8 views/image, float16 (2 seeds)", "teacher labels, 8 views/image, float16"}
    views = by_label["true labels, 8 views/image, float16 (2 seeds)"]
    # each point: the mean and std over the seeds' means (61 and 70; 90 and 92)
    assert (views.ns, views.means, views.errors, views.seeds) == ([10, 100], [65.5, 91.0], [4.5, 1.0], [2, 2])
    paper = by_label["true labels, 1 label/image, float32"]
    assert (paper.means, paper.errors, paper.seeds) == ([52.0, 80.0], [2.0, 0.0], [1, 1])  # one seed: its models

    figures = capture_figures(monkeypatch)
    paths = plots.plot_accuracy_vs_examples(plots.newest_first(runs), tmp_path / "fig")
    assert [p.name for p in paths] == ["accuracy_mnist_to_mnist_lenet.png"]
    ax = figures["accuracy_mnist_to_mnist_lenet.png"].axes[0]
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == sorted(by_label)
    # the seeds' error bars: 61..70 at 10 base images, 90..92 at 100
    spans = {tuple(np.round(seg[:, 1], 6)) for c in ax.containers for seg in c.lines[2][0].get_segments()}
    assert {(61.0, 70.0), (90.0, 92.0), (50.0, 54.0)} <= spans


def test_step_search_figure_draws_one_sorted_line_per_candidate(tmp_path, monkeypatch):
    from labeldistill import plots

    t4, t8 = "teacher logits, softmax(y / 4)", "teacher logits, softmax(y / 8)"
    r = fake_result("baseline-kd", 100, 0, [90.0], num_steps=1000, label_choice={"name": t4})
    # as the search visits them: a coarse grid, then refined around the best of each candidate
    r["history"] = [{"num_steps": s, "val_error": e, "val_loss": 1.0, "candidate": c} for s, e, c in (
        (1000, 10.0, t4), (2000, 12.0, t4), (1000, 11.0, t8), (2000, 9.0, t8), (500, 14.0, t4), (4000, 15.0, t8))]
    r["history"][-1]["diverged"] = True
    figures = capture_figures(monkeypatch)
    plots.plot_curves(Run(tmp_path, r), tmp_path / "steps.png")
    ax = figures["steps.png"].axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines() if not ln.get_label().startswith("_")}
    assert set(lines) == {f"{t4} (chosen)", t8, "diverged (not chosen)", "chosen: 1000 steps"}
    assert list(lines[f"{t4} (chosen)"].get_xdata()) == [500, 1000, 2000]
    assert list(lines[f"{t4} (chosen)"].get_ydata()) == [14.0, 10.0, 12.0]
    assert list(lines[t8].get_xdata()) == [1000, 2000, 4000]
    assert {t.get_text() for t in ax.get_legend().get_texts()} == set(lines)


@pytest.fixture(scope="module")
def views_run(tmp_path_factory):
    """A tiny real true-labels run with 4 stored views per base image (float16 labels)."""
    out = tmp_path_factory.mktemp("views")
    cfg = config_mod.apply(config_mod.Config(), {
        "name": "tiny_views", "method": "baseline", "data.source": "mnist5k", "data.target": "mnist5k",
        "data.num_base_examples": 10, "views.per_image": 4, "storage.label_dtype": "float16",
        "evaluate.num_test_models": 2, "evaluate.step_grid": [50, 100], "evaluate.test_optimizers": []})
    result = run_experiment(config_mod.validate(cfg), out=str(out), device="cpu")
    return out, result


def _bar_axes(fig):
    return [ax for ax in fig.axes if ax.patches]


def test_labels_figures_share_one_scale_mark_the_true_class_and_name_the_method(real_runs, views_run, tmp_path,
                                                                                monkeypatch):
    from labeldistill import plots

    figures = capture_figures(monkeypatch)
    for out, name in ((real_runs[0], "tiny_flex"), (views_run[0], "tiny_views")):
        [run] = find_runs([out / name])
        plots.plot_labels(run, tmp_path / f"{name}.png")
        fig = figures[f"{name}.png"]
        bars = _bar_axes(fig)
        assert len(bars) == 10  # one per base image (the views run: its first view of each)
        assert {ax.get_ylim() for ax in bars} == {(0.0, 1.0)}
        names = run["base_class_names"]
        for ax, true in zip(bars, names):  # the true class's bar, and only it, is outlined
            outlined = [i for i, p in enumerate(ax.patches) if p.get_linewidth() > 0 and p.get_edgecolor()[3] > 0]
            assert outlined == [int(true)]
        titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
        assert [t.split(" → ")[0] for t in titles] == [f"true: {c}" for c in names]
        suptitle = fig._suptitle.get_text()
        assert "soft labels" not in suptitle
    flex_title = figures["tiny_flex.png"]._suptitle.get_text()
    assert "LD RR [2 epochs] (1 label/image, float32): base images and their learned labels" in flex_title
    views_title = figures["tiny_views.png"]._suptitle.get_text()
    assert "true labels (4 views/image, float16): base images and their labels (10 of 10 images, 40 labels in all)" in views_title
    # a views run's panels: the first view of each image with that view's label
    labels = np.asarray(views_run[1]["labels"])
    first = _bar_axes(figures["tiny_views.png"])[3]
    np.testing.assert_allclose([p.get_height() for p in first.patches], labels[3 * 4], rtol=1e-6)


def test_views_figure_for_a_views_run_only_and_plot_needs_no_data(real_runs, views_run, tmp_path, monkeypatch):
    from labeldistill import plots

    def no_data(*args, **kwargs):
        raise AssertionError("plot read the dataset although the runs stored their images")

    monkeypatch.setattr(plots, "_reread_base_images", no_data)
    assert main(["plot", str(views_run[0]), str(real_runs[0]), "--out", str(tmp_path / "fig")]) == 0
    names = {p.name for p in (tmp_path / "fig").rglob("*.png")}
    assert {"tiny_views_labels.png", "tiny_views_views.png", "tiny_flex_labels.png"} <= names
    assert "tiny_flex_views.png" not in names  # no views, no views figure

    figures = capture_figures(monkeypatch)
    [run] = find_runs([views_run[0]])
    plots.plot_views(run, tmp_path / "views.png", num_images=3, views_per_image=4)
    fig = figures["views.png"]
    bars = _bar_axes(fig)
    assert len(bars) == 3 * 4 and {ax.get_ylim() for ax in bars} == {(0.0, 1.0)}
    labels = np.asarray(views_run[1]["labels"])
    # row 2, view 1 is view 2 * per_image + 1 of the pool, with its stored label
    np.testing.assert_allclose([p.get_height() for p in bars[2 * 4 + 1].patches], labels[2 * 4 + 1], rtol=1e-6)
    images = [ax for ax in fig.axes if ax.images]
    assert len(images) == 3 * (1 + 4)  # each base image, then its views
    [real] = find_runs([real_runs[0]])
    assert plots.plot_views(real, tmp_path / "none.png") is None
