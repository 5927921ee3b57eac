"""What a distilled dataset costs: the images as stored and one float32 label per image, in the
result and on the artifact's card."""
from __future__ import annotations

import json

import torch

from labeldistill import config as C
from labeldistill.budget import storage
from labeldistill.experiment import run_experiment

TINY = {"data.source": "mnist5k", "data.target": "mnist5k", "data.num_base_examples": 20,
        "data.target_set_size": 600, "distill.epochs": 1, "distill.batch_size": 300,
        "evaluate.num_test_models": 2, "evaluate.step_grid": [20]}


def test_real_images_count_as_bytes_and_labels_as_float32(tmp_path):
    result = run_experiment(C.apply(C.Config(), {**TINY, "method": "baseline", "name": "b"}), out=str(tmp_path),
                            device="cpu", handle_signals=False)
    want = {"num_images": 20, "image_dtype": "uint8", "image_bytes": 20 * 28 * 28,
            "num_labels": 20, "label_dtype": "float32", "label_bytes": 20 * 10 * 4, "labels_per_image": 1.0,
            "total_bytes": 20 * 28 * 28 + 20 * 10 * 4, "budget": "one label per image"}
    assert result["storage"] == want
    card = json.loads((tmp_path / "b" / "distilled.json").read_text())
    assert card["storage"] == want
    saved = json.loads((tmp_path / "b" / "result.json").read_text())
    assert saved["storage"] == want
    # the card's numbers are the stored tensors' own
    t = card["tensors"]
    assert t["pixels"]["dtype"] == "uint8" and t["labels"]["dtype"] == "float32"


def test_synthetic_images_are_stored_as_float32():
    pixels = torch.rand(10, 1, 28, 28)
    got = storage(pixels, torch.full((10, 10), 0.1))
    assert got["image_dtype"] == "float32" and got["image_bytes"] == 10 * 784 * 4
    assert storage((pixels * 255).round() / 255, torch.zeros(10, 10))["image_bytes"] == 10 * 784


def test_report_lists_each_runs_storage(tmp_path):
    from labeldistill.cli import main

    run_experiment(C.apply(C.Config(), {**TINY, "method": "baseline", "name": "b"}), out=str(tmp_path / "runs"),
                   device="cpu", handle_signals=False)
    assert main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "rep")]) == 0
    import csv

    rows = list(csv.DictReader((tmp_path / "rep" / "runs.csv").open()))
    main_row = next(r for r in rows if r["table"] == "main")
    assert (main_row["num_labels"], main_row["image_bytes"], main_row["label_bytes"]) == ("20", "15680", "800")


def test_views_count_one_label_each_in_their_stored_precision(tmp_path):
    from labeldistill.cli import main

    views = {"views.per_image": 5, "storage.label_dtype": "float16"}
    result = run_experiment(C.apply(C.Config(), {**TINY, **views, "method": "baseline", "name": "v"}),
                            out=str(tmp_path / "runs"), device="cpu", handle_signals=False)
    want = {"num_images": 20, "image_dtype": "uint8", "image_bytes": 20 * 28 * 28,
            "num_labels": 100, "label_dtype": "float16", "label_bytes": 100 * 10 * 2, "labels_per_image": 5.0,
            "total_bytes": 20 * 28 * 28 + 100 * 10 * 2, "budget": "images"}
    assert result["storage"] == want
    card = json.loads((tmp_path / "runs" / "v" / "distilled.json").read_text())
    assert card["storage"] == want and card["tensors"]["labels"] == {**card["tensors"]["labels"],
                                                                     "dtype": "float16", "shape": [100, 10]}
    assert main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "rep")]) == 0
    import csv

    row = next(r for r in csv.DictReader((tmp_path / "rep" / "runs.csv").open()) if r["table"] == "main")
    assert (row["num_labels"], row["image_bytes"], row["label_bytes"]) == ("100", "15680", "2000")
