"""Whole runs on tiny configurations, through the library and through the command line."""
import json
import subprocess
import sys

import pytest
import torch

from labeldistill import config as C
from labeldistill.experiment import run_experiment

TINY = {"data.source": "mnist5k", "data.target": "mnist5k", "data.num_base_examples": 10,
        "data.target_set_size": 600, "distill.epochs": 2, "distill.batch_size": 200,
        "distill.validate_every": 1, "evaluate.num_test_models": 3}

RESULT_KEYS = {"method", "test_accuracy", "test_accuracy_mean", "test_accuracy_std", "test_error", "num_steps",
               "labels", "base_indices", "base_original_labels", "history", "train_seconds", "test_seconds",
               "config"}


@pytest.mark.parametrize("method", ["ld-rr", "ld-or2", "dd-rr", "dd-or2", "baseline", "baseline-ls"])
def test_every_method_runs_and_writes_a_result(method, tmp_path):
    cfg = C.apply(C.Config(), {**TINY, "method": method})
    result = run_experiment(cfg, out=str(tmp_path), device="cpu")
    run_dir = tmp_path / cfg.run_name
    saved = json.loads((run_dir / "result.json").read_text())
    assert RESULT_KEYS <= set(saved)
    assert len(saved["test_accuracy"]) == 3 and 0 <= saved["test_accuracy_mean"] <= 100
    assert saved["test_accuracy_mean"] == pytest.approx(result["test_accuracy_mean"])
    labels = torch.tensor(saved["labels"])
    assert labels.shape == (10, 10)
    torch.testing.assert_close(labels.sum(1), torch.ones(10))
    assert (run_dir / "config.json").is_file() and (run_dir / "metrics.jsonl").is_file()
    assert not (run_dir / "checkpoint.pt").exists()
    if method.startswith("ld"):
        assert [h["epoch"] for h in saved["history"]] == [1, 2]
        assert all("val_error" in h for h in saved["history"])
        assert not torch.allclose(labels, torch.full((10, 10), 0.1))  # labels were learned
    if method == "baseline":
        assert torch.equal(labels.argmax(1), torch.tensor(saved["base_original_labels"]))
        assert labels.max() == 1
    if method == "baseline-ls":
        assert labels.max() == pytest.approx(0.91)


def test_same_seed_same_labels_and_accuracies(tmp_path):
    cfg = C.apply(C.Config(), {**TINY, "method": "ld-rr"})
    a = run_experiment(cfg, device="cpu")
    b = run_experiment(cfg, device="cpu")
    assert torch.equal(a["labels"], b["labels"]) and a["test_accuracy"] == b["test_accuracy"]
    c = run_experiment(C.apply(cfg, {"seed": 1}), device="cpu")
    assert not torch.equal(a["base_indices"], c["base_indices"])


def test_reference_flat_json_runs_unchanged(tmp_path, data_root):
    legacy = {"balanced_source": True, "baseline": False, "batch_size": 256, "epochs": 2,
              "expname": "ld_20be_10ib_mn_to_mn_bl_cnn_2e_rr_1234s_v0", "inner_batch_size": 10,
              "inner_lr": 0.01, "label_smoothing": 0, "num_base_examples": 20, "num_inner_steps": 10,
              "num_steps_analysis": False, "random_seed": 1234, "resnet": False, "source": "mnist",
              "target": "mnist", "target_set_size": 2000, "test_various_models": False}
    path = tmp_path / "exp.json"
    path.write_text(json.dumps(legacy))
    out = tmp_path / "runs"
    proc = subprocess.run([sys.executable, "-m", "labeldistill.cli", "run", str(path), "--data-root", str(data_root),
                           "--out", str(out), "--quiet", "--set", "evaluate.num_test_models=2"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / f"{legacy['expname']}_num_test_models=2" / "result.json").read_text())
    assert result["method"] == "ld-rr" and result["seed"] == 1234 and len(result["labels"]) == 20
    assert "ld-rr" in proc.stdout and "test accuracy" in proc.stdout


def test_cli_reports_config_errors_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "labeldistill.cli", "run", "--set", "distill.epoch=2",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "labeldistill: error: unknown config key 'distill.epoch' (did you mean 'distill.epochs'?)"]
    assert not any(tmp_path.iterdir())


def test_quickstart_honours_a_method_override(tmp_path, capsys):
    from labeldistill.cli import main

    rc = main(["run", "--out", str(tmp_path), "--quiet", "--set", "method=ld-or2", "--set", "distill.epochs=1",
               "--set", "data.target_set_size=600", "--set", "evaluate.num_test_models=2"])
    assert rc == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "quickstart_epochs=1_num_test_models=2_target_set_size=600_baseline",
        "quickstart_epochs=1_num_test_models=2_target_set_size=600_ld-or2"]
    assert "ld-or2 vs baseline" in capsys.readouterr().out


def test_quickstart_label_distillation_beats_true_labels(tmp_path):
    """The README's main job: on the embedded offline digits, learned labels beat true labels."""
    from labeldistill.cli import main

    assert main(["run", "--out", str(tmp_path), "--quiet"]) == 0
    ld = json.loads((tmp_path / "quickstart_ld-rr" / "result.json").read_text())
    base = json.loads((tmp_path / "quickstart_baseline" / "result.json").read_text())
    assert len(ld["test_accuracy"]) == len(base["test_accuracy"]) == 20
    assert ld["base_indices"] == base["base_indices"]  # the same base examples
    assert ld["test_accuracy_mean"] > base["test_accuracy_mean"] + 2
    assert (tmp_path / "quickstart_ld-rr" / "distilled.json").is_file()
