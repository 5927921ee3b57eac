"""Run files are checked when read: a file that parses but has the wrong shape is one line
naming it (report, plot, export, evaluate, resume); report and plot over a folder skip it with
a warning and list unfinished runs; report's CSV files hold numbers."""
from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest
import yaml

from labeldistill.artifact import load_distilled
from labeldistill.cli import main
from labeldistill.errors import DataError, RunError, RunFileError
from labeldistill.report import build_report, scan_runs, write_report
from labeldistill.results import RunDir


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A real tiny finished run (baseline on the embedded MNIST sample, a few seconds) and its config file."""
    folder = tmp_path_factory.mktemp("finished")
    cfg = {"name": "tiny", "method": "baseline", "data": {"source": "mnist5k", "target": "mnist5k",
                                                          "num_base_examples": 10, "target_set_size": 512},
           "evaluate": {"num_test_models": 2, "step_grid": [5]}}
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path), "--out", str(folder / "runs"), "--quiet"]) == 0
    return folder / "runs" / "tiny", path


@pytest.fixture
def run(finished, tmp_path):
    """A copy of the finished run to damage: (run directory, config file)."""
    shutil.copytree(finished[0], tmp_path / "runs" / "tiny")
    return tmp_path / "runs" / "tiny", finished[1]


def edit(path: Path, change) -> None:
    """`change` edits the parsed file in place (returning None) or returns what replaces it."""
    obj = json.loads(path.read_text())
    new = change(obj)
    path.write_text(json.dumps(obj if new is None else new))


RESULT_DAMAGE = {
    "a list": (lambda r: [], "must be a mapping, not list"),
    "empty": (lambda r: {}, "'name' is missing"),
    "missing mean": (lambda r: r.__delitem__("test_accuracy_mean"), "'test_accuracy_mean' is missing"),
    "mean as text": (lambda r: r.update(test_accuracy_mean="95.1"), "'test_accuracy_mean' must be a number"),
    "seed as bool": (lambda r: r.update(seed=True), "'seed' must be a whole number"),
    "ragged labels": (lambda r: r["labels"][0].append(0.5), "'labels' must be a non-empty list of equally long"),
    "fewer indices": (lambda r: r["base_indices"].__delitem__(0), "labels but 9 base_indices"),
    "history of numbers": (lambda r: r.update(history=[1, 2]), "'history' must be a list of mappings"),
    "config a list": (lambda r: r.update(config=[]), "'config' must be a mapping"),
    "config value as text": (lambda r: r["config"]["data"].update(num_base_examples="10"),
                             "'config.data.num_base_examples' must be stored as int"),
    "analysis offset": (lambda r: r.update(num_steps_analysis={"best": {"test_accuracy_mean": 1.0}}),
                        "'num_steps_analysis.best.test_accuracy_std' is missing"),
}


@pytest.mark.parametrize("damage", list(RESULT_DAMAGE))
def test_a_malformed_result_is_one_line_naming_the_file(run, damage, capsys):
    run_dir, _ = run
    change, message = RESULT_DAMAGE[damage]
    edit(run_dir / "result.json", change)
    with pytest.raises(RunFileError, match=message) as info:
        RunDir(run_dir).read_result()
    assert "\n" not in str(info.value) and str(run_dir / "result.json") in str(info.value)
    for argv in (["report", str(run_dir)], ["plot", str(run_dir), "--out", str(run_dir.parent / "fig")],
                 ["export", str(run_dir)], ["run", str(run_dir), "--resume", "--quiet"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("labeldistill: error: malformed ") and "result.json" in err[0]


def test_report_and_plot_over_a_folder_skip_a_malformed_run_and_list_unfinished_ones(run, capsys):
    run_dir, _ = run
    runs = run_dir.parent
    shutil.copytree(run_dir, runs / "broken")
    edit(runs / "broken" / "result.json", lambda r: r.update(test_accuracy=[]))
    shutil.copytree(run_dir, runs / "running")
    (runs / "running" / "result.json").unlink()
    assert main(["report", str(runs), "--out", str(runs.parent / "rep")]) == 0
    err = capsys.readouterr().err
    assert f"labeldistill: warning: skipped malformed {runs / 'broken' / 'result.json'}" in err
    assert "1 unfinished run(s)" in err
    md = (runs.parent / "rep" / "report.md").read_text()
    assert "(1 runs, 1 unfinished)" in md and f"| running | {runs / 'running'} |" in md
    assert main(["plot", str(runs), "--out", str(runs.parent / "fig")]) == 0
    err = capsys.readouterr().err
    assert "skipped malformed" in err and f"unfinished run, not drawn (no result.json yet): {runs / 'running'}" in err
    scan = scan_runs([runs])
    assert [r.path.name for r in scan.runs] == ["tiny"] and len(scan.skipped) == 1
    assert scan.unfinished == [runs / "running"]


def test_only_unfinished_runs_is_one_line_that_counts_them(run, capsys):
    run_dir, _ = run
    (run_dir / "result.json").unlink()
    assert main(["report", str(run_dir.parent)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no finished runs (result.json)" in err[0] and "(1 unfinished)" in err[0]


@pytest.mark.parametrize("content, message", [
    ("[]", "must be a mapping, not list"),
    ('{"data": []}', "'data' must be a mapping"),
    ('{"seed": "1"}', "'seed' must be stored as int"),
])
def test_a_malformed_config_json_is_one_line_on_resume(run, content, message, capsys):
    run_dir, config_file = run
    (run_dir / "result.json").unlink()  # an unfinished run, to be resumed
    (run_dir / "config.json").write_text(content)
    for argv in (["run", str(config_file), "--out", str(run_dir.parent), "--resume", "--quiet"],
                 ["run", str(run_dir), "--resume", "--quiet"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0] and str(run_dir / "config.json") in err[0], err


def test_a_malformed_metrics_line_is_one_line_when_a_resume_trims_the_log(run):
    """A resume keeps the log up to its checkpoint (`RunDir.trim_log`): a line cut short by a
    kill is dropped, a line that parses with the wrong shape is an error naming it."""
    run_dir, _ = run
    log = run_dir / "metrics.jsonl"
    log.write_text('{"event": "epoch", "epoch": 1}\n{"event": "epoch", "epoch": 2}\n{"event": "ep')
    RunDir(run_dir).trim_log(1)
    assert log.read_text() == '{"event": "epoch", "epoch": 1}\n'
    for bad in ('{"event": "epoch", "epoch": "3"}', "[1, 2]", '{"event": 5}'):
        log.write_text('{"event": "epoch", "epoch": 1}\n' + bad + "\n")
        with pytest.raises(RunFileError, match=f"malformed {log}, line 2: ") as info:
            RunDir(run_dir).trim_log(1)
        assert "\n" not in str(info.value)


CARD_DAMAGE = {
    "image a list": (lambda c: c.update(image=[]), "'image' must be a mapping"),
    "recipe arch a number": (lambda c: c["recipe"].update(arch=5), "'recipe.arch' must be a string"),
    "channels as text": (lambda c: c["image"].update(channels="1"), "'image.channels' must be a whole number"),
    "tensor file outside": (lambda c: c.update(tensor_file="../distilled.safetensors"), "a file name beside the card"),
    "tensor spec a list": (lambda c: c["tensors"].update(labels=[]), "'tensors.labels' must be a mapping"),
    "class names numbers": (lambda c: c.update(class_names=list(range(10))), "'class_names' must be a list of"),
}


@pytest.mark.parametrize("damage", list(CARD_DAMAGE))
def test_a_malformed_card_is_one_line_for_evaluate(run, damage, capsys):
    run_dir, _ = run
    change, message = CARD_DAMAGE[damage]
    edit(run_dir / "distilled.json", change)
    with pytest.raises(DataError, match=message) as info:  # a DataError as before, and a RunError
        load_distilled(run_dir)
    assert isinstance(info.value, RunError) and str(run_dir / "distilled.json") in str(info.value)
    assert main(["evaluate", str(run_dir), "--models", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message.split("'")[1 if "'" in message else 0] in err[0]


# ---------------------------------------------------------------------------
# seeds and numeric CSV files


def fake(name, seed, accs, lr=0.001, method="ld-rr"):
    mean = sum(accs) / len(accs)
    return {"name": name, "method": method, "source": "mnist", "target": "mnist", "arch": "lenet",
            "num_base_examples": 10, "seed": seed, "test_accuracy": accs, "test_accuracy_mean": mean,
            "test_accuracy_std": math.sqrt(sum((a - mean) ** 2 for a in accs) / len(accs)), "num_steps": 50,
            "labels": [[0.5, 0.5]], "base_indices": [0], "history": [],
            "config": {"name": name, "seed": seed, "device": "cpu" if seed else "auto",
                       "distill": {"label_lr": lr}}}


def test_seeds_of_one_setting_make_one_row_checked_by_hand_and_the_csv_holds_numbers(tmp_path):
    runs = [fake("a", 0, [60.0, 62.0]), fake("a_seed=1", 1, [70.0, 70.0]), fake("a_seed=2", 2, [64.0, 68.0]),
            fake("b_seed=1", 1, [10.0, 10.0], lr=0.5), fake("b_seed=2", 2, [20.0, 20.0], lr=0.5)]
    for r in runs:
        (tmp_path / "runs" / r["name"]).mkdir(parents=True)
        (tmp_path / "runs" / r["name"] / "result.json").write_text(json.dumps(r))
    rep = build_report(scan_runs([tmp_path / "runs"]).runs)
    seeds = next(t for t in rep.tables if t.title == "Seeds")
    assert seeds.header == ["pair", "base examples", "method", "seed 0", "seed 1", "seed 2",
                            "accuracy over seeds", "mean per-model std", "seeds"]
    # By hand: seed means 61, 70, 66 -> mean 65.667, std sqrt(((4.667)^2 + (4.333)^2 + (0.333)^2) / 3) = 3.682;
    # per-model stds 1, 0, 2 -> mean 1. The label_lr=0.5 runs are another setting: their own row.
    a, b = sorted(seeds.rows, key=lambda row: -row[6].mean)
    assert a[3:6] == [61.0, 70.0, 66.0] and a[6].mean == pytest.approx(197 / 3)
    assert a[6].std == pytest.approx(math.sqrt(((61 - 197 / 3) ** 2 + (70 - 197 / 3) ** 2 + (66 - 197 / 3) ** 2) / 3))
    assert a[6].std == pytest.approx(3.6818, abs=1e-4) and a[7] == pytest.approx(1.0) and a[8] == 3
    assert b[3] is None and b[4:6] == [10.0, 20.0] and (b[6].mean, b[6].std, b[7], b[8]) == (15.0, 5.0, 0.0, 2)
    write_report(rep, tmp_path / "rep")
    for f in (tmp_path / "rep").glob("*.csv"):
        assert "±" not in f.read_text(), f.name
    rows = list(csv.DictReader(open(tmp_path / "rep" / "seeds.csv")))
    row = next(r for r in rows if r["seed 0"])
    assert float(row["accuracy over seeds mean"]) == pytest.approx(65.666667)
    assert float(row["accuracy over seeds std"]) == pytest.approx(3.681787)
    assert float(row["mean per-model std"]) == 1.0 and int(row["seeds"]) == 3
    main_rows = list(csv.DictReader(open(tmp_path / "rep" / "mnist_mnist_lenet.csv")))
    assert set(main_rows[0]) == {"method", "labels per image", "labels stored as", "budget", "10 base images mean",
                                 "10 base images std", "10 base images seeds"}
    assert main_rows[0]["method"] == "LD RR" and main_rows[0]["labels per image"] == "1"
    assert int(main_rows[0]["10 base images seeds"]) == 3  # the main table's cell: seeds 0, 1, 2 (newest of each)
