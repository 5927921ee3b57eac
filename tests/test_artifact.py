"""Distilled-dataset artifacts: round trip through a real run, checks, CLI errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from labeldistill import config as config_mod
from labeldistill.artifact import (CARD_FILE, TENSOR_FILE, DistilledDataset, evaluate_artifact, load_distilled,
                                   save_artifact, tensor_sha256)
from labeldistill.cli import main
from labeldistill.experiment import run_experiment
from labeldistill.errors import DataError

SRC = Path(__file__).resolve().parents[1] / "src"

TINY = {"data.source": "mnist5k", "data.target": "mnist5k", "data.num_base_examples": 20,
        "distill.epochs": 2, "distill.batch_size": 256, "distill.validate_every": 1,
        "evaluate.num_test_models": 2, "evaluate.kd_teacher_epochs": 1}


def tiny_config(method: str, **extra) -> config_mod.Config:
    return config_mod.validate(config_mod.apply(config_mod.Config(), {**TINY, "method": method, **extra}))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One tiny real run (embedded MNIST digits) per kind of artifact."""
    out = tmp_path_factory.mktemp("runs")
    done = {}
    for method in ("ld-rr", "ld-or2", "dd-rr", "baseline-kd"):
        cfg = tiny_config(method)
        done[method] = (run_experiment(cfg, out=str(out), device="cpu"), out / cfg.run_name)
    return done


# ---------------------------------------------------------------------------
# round trip


@pytest.mark.parametrize("method", ["ld-rr", "ld-or2", "dd-rr", "baseline-kd"])
def test_round_trip_reproduces_run_accuracy_exactly(runs, method):
    result, run_dir = runs[method]
    assert result["artifact"] == CARD_FILE
    ds = load_distilled(run_dir)
    r = evaluate_artifact(ds)  # the card's recipe and the run's own model seeds
    assert r["seeds"] == result["seeds"]["test_models"]
    assert r["test_accuracy"] == result["test_accuracy"]
    assert r["recipe"]["num_steps"] == result["num_steps"]
    assert r["recipe"]["head"] == ("rr" if method.endswith("-rr") else "linear")


def test_artifact_holds_what_the_run_used(runs):
    result, run_dir = runs["ld-rr"]
    ds = load_distilled(run_dir / TENSOR_FILE)
    assert len(ds) == 20 and ds.num_classes == 10
    assert ds.tensors["pixels"].dtype == torch.uint8  # unresized real digits are stored losslessly
    assert torch.equal(ds.labels, result["labels"])
    assert torch.equal(ds.tensors["base_indices"], result["base_indices"])
    assert torch.equal(ds.tensors["base_original_labels"], result["base_original_labels"])
    # The images are exactly the run's normalised base examples.
    from labeldistill.data import prepare

    data = prepare(tiny_config("ld-rr"), "cpu")
    assert torch.equal(ds.images, data.base_x)
    assert ds.class_names == [str(i) for i in range(10)]
    assert ds.card["accuracy"]["values"] == result["test_accuracy"]
    torch.testing.assert_close(ds.labels.sum(1), torch.ones(20))


def test_image_distillation_artifact_is_synthetic_with_one_hot_labels(runs):
    result, run_dir = runs["dd-rr"]
    ds = load_distilled(run_dir / CARD_FILE)
    assert ds.card["kind"] == "images"
    assert ds.tensors["pixels"].dtype == torch.float32
    assert 0 <= float(ds.pixels.min()) and float(ds.pixels.max()) <= 1
    assert torch.equal(ds.labels, torch.nn.functional.one_hot(torch.arange(20) % 10, 10).float())
    assert (ds.tensors["base_indices"] == -1).all()
    assert torch.equal(ds.pixels, result["pixels"])  # the artifact is the one stored copy of the images
    assert not (run_dir / "synthetic_images.pt").exists()


def test_kd_run_records_teacher_and_valid_soft_labels(runs):
    result, run_dir = runs["baseline-kd"]
    assert result["teacher"]["temperature"] == 4.0 and result["teacher"]["test_accuracy"] > 50
    ds = load_distilled(run_dir)
    torch.testing.assert_close(ds.labels.sum(1), torch.ones(20))
    assert (ds.labels > 0).all() and (ds.labels.max(1).values < 1).all()  # soft, not one-hot


def test_dataset_trains_an_ordinary_module(runs):
    import labeldistill

    ds = labeldistill.load_distilled(runs["ld-or2"][1])  # the package-level (lazy) export
    loader = torch.utils.data.DataLoader(ds, batch_size=10, shuffle=True)
    x, y = next(iter(loader))
    assert x.shape == (10, 1, 28, 28) and y.shape == (10, 10)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    opt = torch.optim.SGD(net.parameters(), lr=0.01)

    def full_loss():
        with torch.no_grad():
            return float(torch.nn.functional.cross_entropy(net(ds.images), ds.labels))

    before = full_loss()
    for _ in range(10):
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(net(x), y)  # soft targets
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert full_loss() < before


def test_evaluate_with_other_learners(runs):
    ds = load_distilled(runs["ld-or2"][1])
    r = evaluate_artifact(ds, optimizer="sgd", num_models=2, num_steps=5)
    assert r["recipe"]["learning_rate"] == 0.1 and r["num_models"] == 2
    r = evaluate_artifact(ds, arch="resnet", optimizer="momentum", lr=0.05, num_models=2, num_steps=3, seed=1)
    assert r["recipe"]["arch"] == "resnet" and r["recipe"]["learning_rate"] == 0.05
    assert r["seeds"] != ds.card["accuracy"]["seeds"][:2]
    assert all(0 <= a <= 100 for a in r["test_accuracy"])


# ---------------------------------------------------------------------------
# damaged artifacts


def _write(tmp_path: Path, n: int = 6, pixels: torch.Tensor | None = None) -> Path:
    g = torch.Generator().manual_seed(0)
    n = n if pixels is None else pixels.shape[0]
    if pixels is None:
        pixels = torch.randint(0, 256, (n, 1, 28, 28), generator=g).float() / 255
    labels = torch.softmax(torch.randn(n, 10, generator=g), 1)
    card = {"kind": "labels", "name": "t", "method": "ld-rr", "seed": 0, "source": "mnist5k", "target": "mnist5k",
            "class_names": [str(i) for i in range(10)],
            "image": {"channels": 1, "size": 28, "mean": [0.1307], "std": [0.3081]},
            "recipe": {"arch": "lenet", "head": "linear", "optimizer": "adam", "lr": None, "batch_size": 3,
                       "ridge_lambda": 1.0, "head_momentum": 0.99, "calibration_lr": 0.01, "num_steps": 4}}
    save_artifact(tmp_path, pixels, labels, card, {"base_indices": torch.arange(n)})
    return tmp_path


def test_pixels_stored_losslessly(tmp_path):
    exact = torch.randint(0, 256, (4, 1, 28, 28)).float() / 255
    ds = load_distilled(_write(tmp_path / "a", pixels=exact))
    assert ds.tensors["pixels"].dtype == torch.uint8 and torch.equal(ds.pixels, exact)
    resized = torch.rand(4, 1, 28, 28)
    ds = load_distilled(_write(tmp_path / "b", pixels=resized))
    assert ds.tensors["pixels"].dtype == torch.float32 and torch.equal(ds.pixels, resized)
    assert isinstance(ds, DistilledDataset) and isinstance(ds, torch.utils.data.Dataset)
    torch.testing.assert_close(ds[1][0], (resized[1] - 0.1307) / 0.3081)


def test_checksum_covers_dtype_and_shape():
    t = torch.zeros(2, 3)
    assert tensor_sha256(t) != tensor_sha256(t.reshape(3, 2))
    assert tensor_sha256(t) != tensor_sha256(t.double())


def _edit_card(path: Path, fn) -> None:
    card = json.loads((path / CARD_FILE).read_text())
    fn(card)
    (path / CARD_FILE).write_text(json.dumps(card))


def _flip_byte(path: Path) -> None:
    blob = bytearray((path / TENSOR_FILE).read_bytes())
    blob[-5] ^= 0xFF
    (path / TENSOR_FILE).write_bytes(bytes(blob))


def _resave_without_checks(path: Path, mutate) -> None:
    """Rewrite the tensor file and fix the file checksum, as a careless tool would."""
    import hashlib

    from safetensors.torch import load, save

    tensors = load((path / TENSOR_FILE).read_bytes())
    mutate(tensors)
    blob = save(tensors)
    (path / TENSOR_FILE).write_bytes(blob)
    _edit_card(path, lambda c: c.update(tensor_file_sha256=hashlib.sha256(blob).hexdigest()))


DAMAGE = {
    "flipped byte": (lambda p: _flip_byte(p), "checksum mismatch"),
    "truncated": (lambda p: (p / TENSOR_FILE).write_bytes((p / TENSOR_FILE).read_bytes()[:-100]), "checksum mismatch"),
    "missing tensor file": (lambda p: (p / TENSOR_FILE).unlink(), "missing tensor file"),
    "missing card": (lambda p: (p / CARD_FILE).unlink(), "holds no distilled.json"),
    "card not json": (lambda p: (p / CARD_FILE).write_text("{not json"), "corrupt card"),
    "wrong version": (lambda p: _edit_card(p, lambda c: c.update(format_version=99)), "format version 99"),
    "not a card": (lambda p: (p / CARD_FILE).write_text('{"a": 1}'), "not a labeldistill"),
    "card says more images": (lambda p: _edit_card(p, lambda c: c.update(num_examples=7, num_base_images=7)),
                              "describes 7 images"),
    "card says more labels": (lambda p: _edit_card(p, lambda c: c.update(num_examples=7)), "describes 7 examples"),
    "lacks recipe field": (lambda p: _edit_card(p, lambda c: c["recipe"].pop("arch")), "lacks recipe field"),
    "tensor changed": (lambda p: _resave_without_checks(p, lambda t: t["labels"].mul_(2)),
                       "checksum mismatch for tensor 'labels'"),
    "tensor dropped": (lambda p: _resave_without_checks(p, lambda t: t.pop("base_indices")),
                       "lacks the tensor 'base_indices'"),
    "tensor shortened": (lambda p: _resave_without_checks(p, lambda t: t.update(labels=t["labels"][:5])),
                         "but the card says"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_artifact_is_one_line_error(tmp_path, damage):
    path = _write(tmp_path)
    load_distilled(path)  # intact
    hurt, message = DAMAGE[damage]
    hurt(path)
    with pytest.raises(DataError, match=message) as info:
        load_distilled(path)
    assert "\n" not in str(info.value)


def test_missing_path_is_one_line_error(tmp_path):
    with pytest.raises(DataError, match="no such artifact"):
        load_distilled(tmp_path / "nope")


@pytest.mark.parametrize("argv,message", [
    (["--steps", "many"], "--steps must be a whole number"),
    (["--arch", "lenett"], "did you mean 'lenet'"),
    (["--models", "0"], "at least 1"),
    (["--lr", "-1"], "must be positive"),
])
def test_cli_evaluate_bad_input(tmp_path, capsys, argv, message):
    path = _write(tmp_path)
    assert main(["evaluate", str(path), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("labeldistill: error:") and message in err and "\n" not in err


def test_cli_evaluate_corrupt_file_in_subprocess(tmp_path):
    path = _write(tmp_path)
    _flip_byte(path)
    proc = subprocess.run([sys.executable, "-m", "labeldistill.cli", "evaluate", str(path / TENSOR_FILE)],
                          capture_output=True, text=True, env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "checksum mismatch" in proc.stderr


def test_cli_evaluate_prints_and_writes_json(tmp_path, capsys):
    path = _write(tmp_path)
    out = tmp_path / "eval.json"
    assert main(["evaluate", str(path), "--models", "2", "--optimizer", "adam", "--json", str(out)]) == 0
    line = capsys.readouterr().out
    assert "test accuracy" in line and "(2 models)" in line and "4 steps" in line
    r = json.loads(out.read_text())
    assert len(r["test_accuracy"]) == 2 and r["recipe"]["num_steps"] == 4


@pytest.mark.parametrize("method", ["ld-rr", "dd-rr"])
def test_export_rewrites_the_same_artifact_from_the_stored_copy(runs, tmp_path, method, monkeypatch):
    import shutil

    from labeldistill import datasets
    from labeldistill.artifact import export_run

    _, run_dir = runs[method]
    copy = tmp_path / run_dir.name
    shutil.copytree(run_dir, copy)
    original = load_distilled(run_dir)

    def refuse(*a, **k):
        raise AssertionError("the dataset was read again")

    with monkeypatch.context() as m:  # the artifact is the stored copy: no dataset is read
        m.setattr(datasets, "load_raw", refuse)
        export_run(copy)
    again = load_distilled(copy)
    assert torch.equal(again.pixels, original.pixels) and torch.equal(again.labels, original.labels)
    assert again.card == {**original.card, "tensor_file_sha256": again.card["tensor_file_sha256"]}
    assert torch.equal(again.tensors["base_indices"], original.tensors["base_indices"])
    (copy / TENSOR_FILE).unlink()
    (copy / CARD_FILE).unlink()
    if method == "dd-rr":  # synthetic images were stored only there
        with pytest.raises(DataError, match="synthetic images .* stored only in its artifact"):
            export_run(copy)
        return
    export_run(copy)  # real base images: selected again from the config's seed
    again = load_distilled(copy)
    assert torch.equal(again.pixels, original.pixels) and torch.equal(again.labels, original.labels)
    assert again.card["recipe"] == original.card["recipe"] and again.card["accuracy"] == original.card["accuracy"]


def test_export_refuses_unfinished_run(tmp_path):
    from labeldistill.artifact import export_run

    with pytest.raises(DataError, match="no finished run"):
        export_run(tmp_path)
