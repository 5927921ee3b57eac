"""Datasets named by a path: a .npz file or a folder of class folders (userdata.py).

Small synthetic images written to tmp_path; the acceptance test runs the CLI on a
few hundred real MNIST digits written as PNG files and as a .npz of another name.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from labeldistill import cli
from labeldistill import datasets as ds
from labeldistill.config import Config, ConfigError, DataConfig, apply, validate
from labeldistill.data import dataset_options, prepare
from labeldistill.userdata import DEFAULT_TEST_FRACTION, is_path_name, short_name, stratified_split

MNIST = Path("/work/shared/data/mnist.npz")


@pytest.fixture(autouse=True)
def _fresh_cache():
    ds.clear_cache()
    yield
    ds.clear_cache()


def save_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def images(n: int, size: int = 8, colour: bool = False, seed: int = 0) -> np.ndarray:
    shape = (n, size, size, 3) if colour else (n, size, size)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def write_folder(root: Path, per_class: dict[str, np.ndarray]) -> None:
    for name, arr in per_class.items():
        for i, im in enumerate(arr):
            save_png(root / name / f"{i:03d}.png", im)


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    code = cli.main(argv)
    return code, capsys.readouterr().err


# --------------------------------------------------------------------------- reading


def test_folder_with_train_and_test(tmp_path):
    a, b = images(6, seed=1), images(5, seed=2)
    write_folder(tmp_path / "d" / "train", {"cat": a[:4], "bird": b[:3]})
    write_folder(tmp_path / "d" / "test", {"cat": a[4:], "bird": b[3:]})
    name = str(tmp_path / "d")
    info = ds.get_info(name)
    raw = ds.load_raw(name)
    # classes are the sorted folder names; images in class order, files sorted
    assert info.class_names == ("bird", "cat") and info.num_classes == 2
    assert info.channels == 1 and info.image_size == 8 and not info.source_only
    assert raw.y_train.tolist() == [0, 0, 0, 1, 1, 1, 1] and raw.y_test.tolist() == [0, 0, 1, 1]
    assert raw.x_train.dtype == torch.uint8 and raw.x_train.shape == (7, 8, 8)
    assert np.array_equal(raw.x_train[:3].numpy(), b[:3]) and np.array_equal(raw.x_test[2:].numpy(), a[4:])
    # mean and std of the training split only, per channel, in [0, 1] units
    train = np.concatenate([b[:3], a[:4]]).astype(np.float64) / 255
    assert info.mean == pytest.approx((train.mean(),), abs=1e-12)
    assert info.std == pytest.approx((train.std(),), abs=1e-12)
    assert ds.load_raw(name) is raw  # cached


def test_folder_split_is_stratified_and_stable(tmp_path):
    write_folder(tmp_path / "d", {"a": images(10, seed=1), "b": images(5, seed=2), "c": images(20, seed=3)})
    name = str(tmp_path / "d")
    raw = ds.load_raw(name, test_fraction=0.2)
    assert torch.bincount(raw.y_test).tolist() == [2, 1, 4]
    assert torch.bincount(raw.y_train).tolist() == [8, 4, 16]
    # every image lands in exactly one split
    both = torch.cat([raw.x_train, raw.x_test]).reshape(35, -1)
    assert len({tuple(r.tolist()) for r in both}) == 35
    first = raw.x_test.clone()
    ds.clear_cache()
    assert torch.equal(ds.load_raw(name, test_fraction=0.2).x_test, first)  # the same split every time
    assert torch.bincount(ds.load_raw(name, test_fraction=0.5).y_test).tolist() == [5, 3, 10]


def test_stratified_split_keeps_a_training_image():
    train, test = stratified_split(np.array([0, 1, 1, 1]), 0.9)
    assert sorted(train.tolist() + test.tolist()) == [0, 1, 2, 3]
    assert 0 in train and len(test) == 2


def test_colour_folder_resized(tmp_path):
    write_folder(tmp_path / "d", {"x": images(4, size=10, colour=True), "y": images(4, size=12, colour=True, seed=5)})
    save_png(tmp_path / "d" / "y" / "gray.png", images(1, size=12, seed=9)[0])  # a grayscale file in a colour set
    name = str(tmp_path / "d")
    info = ds.get_info(name, image_size=6)
    raw = ds.load_raw(name, image_size=6)
    assert info.channels == 3 and info.image_size == 6 and len(info.mean) == 3
    assert raw.x_train.shape[1:] == (6, 6, 3) and raw.x_test.shape[1:] == (6, 6, 3)
    assert raw.x_train.shape[0] + raw.x_test.shape[0] == 9


def test_gray_palette_images_stay_grayscale(tmp_path):
    from PIL import Image

    gray = images(4, size=6, seed=7)
    for i, im in enumerate(gray):
        for cls in ("a", "b"):
            (tmp_path / "d" / cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray(im).convert("P").save(tmp_path / "d" / cls / f"{i}.gif")
    raw = ds.load_raw(str(tmp_path / "d"), test_fraction=0.25)
    assert ds.get_info(str(tmp_path / "d"), test_fraction=0.25).channels == 1 and raw.x_train.shape[1:] == (6, 6)


def test_npz_any_name(tmp_path):
    x, y = images(12, size=6), np.arange(12) % 3
    path = tmp_path / "my data.npz"
    np.savez(path, x_train=x[:9], y_train=y[:9].astype(np.int64), x_test=x[9:], y_test=y[9:].astype(np.int64))
    info = ds.get_info(str(path))
    raw = ds.load_raw(str(path))
    assert info.num_classes == 3 and info.class_names == ("0", "1", "2") and info.image_size == 6
    assert np.array_equal(raw.x_train.numpy(), x[:9]) and raw.y_test.tolist() == [0, 1, 2]
    assert info.mean == pytest.approx((x[:9].mean() / 255,))
    resized = ds.load_raw(str(path), image_size=4)
    assert resized.x_train.shape == (9, 4, 4) and ds.get_info(str(path), image_size=4).image_size == 4


def test_names_and_paths():
    assert not is_path_name("mnist") and not is_path_name("mnsit")
    assert is_path_name("data/x.npz") and is_path_name("x.npz") and is_path_name("./digits")
    assert short_name("/a/b/digits/") == "digits" and short_name("x/my data.npz") == "my_data"
    assert short_name("mnist") == "mnist"
    assert DataConfig().test_fraction == DEFAULT_TEST_FRACTION
    assert dataset_options({"image_size": 16}) == {"image_size": 16, "test_fraction": DEFAULT_TEST_FRACTION,
                                                   "image_column": None, "label_column": None}
    assert is_path_name("memory:scans") and short_name("memory:scans") == "scans"


def test_config_accepts_paths_and_checks_them(tmp_path):
    write_folder(tmp_path / "d", {"a": images(3), "b": images(3)})
    cfg = validate(apply(Config(), {"data.source": str(tmp_path / "d"), "data.target": str(tmp_path / "d"),
                                    "data.image_size": "16"}))
    assert cfg.data.image_size == 16 and cfg.run_name.startswith("ld-rr_d_to_d_")
    missing = str(tmp_path / "nope")
    with pytest.raises(ConfigError, match=f"^data.target: no such file or folder: {missing}$"):
        validate(apply(Config(), {"data.target": missing}))
    with pytest.raises(ConfigError, match="data.image_size applies to datasets read from a path"):
        validate(apply(Config(), {"data.image_size": "16"}))
    with pytest.raises(ConfigError, match="data.test_fraction must be between 0 and 1"):
        validate(apply(Config(), {"data.test_fraction": "1"}))


def test_prepare_cross_dataset_from_colour_folder_to_npz(tmp_path):
    """A colour folder as the source of a grayscale .npz target: the source takes the target's preprocessing."""
    write_folder(tmp_path / "src", {"u": images(6, size=10, colour=True), "v": images(6, size=10, colour=True, seed=3)})
    x, y = images(36, size=8, seed=4), (np.arange(36) % 3).astype(np.int64)
    np.savez(tmp_path / "t.npz", x_train=x[:30], y_train=y[:30], x_test=x[30:], y_test=y[30:])
    cfg = validate(apply(Config(), {"data.source": str(tmp_path / "src"), "data.target": str(tmp_path / "t.npz"),
                                    "data.num_base_examples": "6", "distill.inner_batch_size": "6"}))
    data = prepare(cfg)
    assert data.base_x.shape == (6, 1, 8, 8) and data.target_x.shape == (25, 1, 8, 8)
    assert data.test_x.shape == (6, 1, 8, 8) and data.num_classes == 3 and data.val_x.shape[0] == 5
    assert data.origin == str((tmp_path / "src").resolve())


# --------------------------------------------------------------------------- bad input: one line, exit code 2


def _bad(tmp_path: Path, capsys, target: str, *sets: str) -> str:
    code, err = run_cli(["run", "--quiet", "--out", str(tmp_path / "runs"), "--set", f"data.target={target}",
                         "--set", f"data.source={target}", *[a for s in sets for a in ("--set", s)]], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("labeldistill: error: "), err
    return lines[0]


def test_bad_empty_folder(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    assert "no class folders in" in _bad(tmp_path, capsys, str(tmp_path / "d"))


def test_bad_one_class(tmp_path, capsys):
    write_folder(tmp_path / "d", {"only": images(5)})
    assert "only one class folder (only)" in _bad(tmp_path, capsys, str(tmp_path / "d"))


def test_bad_class_without_images(tmp_path, capsys):
    write_folder(tmp_path / "d", {"a": images(5)})
    (tmp_path / "d" / "b").mkdir()
    (tmp_path / "d" / "b" / "notes.txt").write_text("no images here")
    assert f"class folder {tmp_path / 'd' / 'b'} has no images" in _bad(tmp_path, capsys, str(tmp_path / "d"))


def test_bad_unreadable_image(tmp_path, capsys):
    write_folder(tmp_path / "d", {"a": images(5), "b": images(5)})
    broken = tmp_path / "d" / "b" / "broken.png"
    broken.write_bytes(b"not a png at all")
    assert f"cannot read image {broken}" in _bad(tmp_path, capsys, str(tmp_path / "d"))


def test_bad_mixed_sizes(tmp_path, capsys):
    write_folder(tmp_path / "d", {"a": images(5, size=8), "b": images(5, size=9)})
    line = _bad(tmp_path, capsys, str(tmp_path / "d"))
    assert "have different sizes" in line and "set data.image_size" in line


def test_mixed_sizes_with_image_size_run_far_enough(tmp_path):
    write_folder(tmp_path / "d", {"a": images(5, size=8), "b": images(5, size=9)})
    assert ds.load_raw(str(tmp_path / "d"), image_size=8).x_train.shape[1:] == (8, 8)


def test_bad_train_without_test(tmp_path, capsys):
    write_folder(tmp_path / "d" / "train", {"a": images(3), "b": images(3)})
    assert "has train/ but no test/" in _bad(tmp_path, capsys, str(tmp_path / "d"))


def _npz(path: Path, **changes) -> str:
    x, y = images(12, size=6), (np.arange(12) % 3).astype(np.int64)
    arrays = {"x_train": x[:9], "y_train": y[:9], "x_test": x[9:], "y_test": y[9:], **changes}
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return str(path)


@pytest.mark.parametrize("changes, message", [
    ({"y_test": np.array([0, 1, 3])}, "y_test has labels 0..3, expected 0..2"),
    ({"y_train": np.array([0, 1, 2, 0, -1, 2, 0, 1, 2])}, "y_train has labels -1..2, expected 0..2"),
    ({"y_train": np.array([0, 3, 0, 3, 0, 3, 0, 3, 0])}, "no example of class(es) 1, 2"),
    ({"y_train": np.zeros(9, dtype=np.int64), "y_test": np.zeros(3, dtype=np.int64)}, "only one class"),
    ({"x_test": None}, "has no x_test"),
    ({"x_train": images(9, size=6).astype(np.float32)}, "x_train has dtype float32, expected uint8"),
])
def test_bad_npz(tmp_path, capsys, changes, message):
    line = _bad(tmp_path, capsys, _npz(tmp_path / "bad.npz", **changes))
    assert message in line and str(tmp_path / "bad.npz") in line


def test_bad_missing_path(tmp_path, capsys):
    missing = tmp_path / "absent.npz"
    code, err = run_cli(["run", "--quiet", "--out", str(tmp_path / "runs"), "--set", f"data.target={missing}"], capsys)
    assert code == 2 and err == f"labeldistill: error: data.target: no such file or folder: {missing}\n"
    line = _bad(tmp_path, capsys, str(missing))
    assert line == f"labeldistill: error: data.source: no such file or folder: {missing}"


# --------------------------------------------------------------------------- acceptance


@pytest.fixture(scope="module")
def mnist_runs(tmp_path_factory):
    """Real digits as DIR/{train,test}/{0..9}/*.png and the same digits as an .npz of another
    name, each run by `labeldistill run` (ld-rr and the quickstart's baseline) to a result and
    an artifact; returns the folder that holds them (runs_digits/, runs_same_digits.npz/)."""
    if not MNIST.is_file():
        pytest.skip(f"needs real MNIST digits at {MNIST}")
    base = tmp_path_factory.mktemp("mnist_runs")
    with np.load(MNIST) as f:
        x_tr, y_tr, x_te, y_te = f["x_train"][:240], f["y_train"][:240], f["x_test"][:60], f["y_test"][:60]
    # files sorted by name within a class folder, classes in sorted order: the .npz holds the same order
    order_tr, order_te = np.argsort(y_tr, kind="stable"), np.argsort(y_te, kind="stable")
    for split, xs, ys in (("train", x_tr[order_tr], y_tr[order_tr]), ("test", x_te[order_te], y_te[order_te])):
        for i, (im, label) in enumerate(zip(xs, ys)):
            save_png(base / "digits" / split / str(int(label)) / f"{i:04d}.png", im)
    np.savez_compressed(base / "same_digits.npz", x_train=x_tr[order_tr], y_train=y_tr[order_tr].astype(np.int64),
                        x_test=x_te[order_te], y_test=y_te[order_te].astype(np.int64))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(base)
        for name in ("digits", "same_digits.npz"):
            code = cli.main(["run", "--quiet", "--out", "runs", "--set", f"data.source={name}",
                             "--set", f"data.target={name}", "--set", "method=ld-rr", "--set", "epochs=2",
                             "--set", "num_base_examples=20", "--set", "evaluate.num_test_models=2",
                             "--set", "distill.batch_size=64", "--set", "seed=3"])
            assert code == 0
            (base / "runs").rename(base / f"runs_{name}")
    return base


def test_run_on_a_folder_of_mnist_pngs_and_the_same_npz(mnist_runs, monkeypatch):
    """The acceptance test: a folder of PNG digits runs to a result and an artifact, and the
    same digits as an .npz pick the same base images for the same seed."""
    monkeypatch.chdir(mnist_runs)
    results = {}
    for name in ("digits", "same_digits.npz"):
        run, = (mnist_runs / f"runs_{name}").glob("quickstart_*_ld-rr")  # named after the overrides
        result = json.loads((run / "result.json").read_text())
        card = json.loads((run / "distilled.json").read_text())
        assert result["target"] == name and card["target"] == name
        assert card["class_names"] == [str(i) for i in range(10)]
        assert 0 <= result["test_accuracy_mean"] <= 100 and len(result["test_accuracy"]) == 2
        results[name] = result
    a, b = results["digits"], results["same_digits.npz"]
    assert a["base_indices"] == b["base_indices"]
    assert a["base_original_labels"] == b["base_original_labels"]
    assert sorted(a["base_original_labels"]) == sorted(list(range(10)) * 2)  # balanced within-dataset
    # same pixels, same training-split statistics: the whole run is the same
    assert np.allclose(a["labels"], b["labels"], atol=1e-6) and a["test_accuracy"] == b["test_accuracy"]
    # the artifact evaluates again on the folder's own test split
    from labeldistill.artifact import evaluate_artifact, load_distilled

    again = evaluate_artifact(load_distilled(next((mnist_runs / "runs_digits").glob("quickstart_*_ld-rr"))), num_models=1)
    assert again["target"] == "digits" and 0 <= again["test_accuracy_mean"] <= 100


@pytest.mark.slow
def test_report_and_figures_of_a_folder_run(mnist_runs, monkeypatch):
    monkeypatch.chdir(mnist_runs)
    assert cli.main(["report", "runs_digits", "--out", "report"]) == 0
    assert "digits" in (mnist_runs / "report" / "report.md").read_text()
    # the labels figure draws the base images, read again from the folder
    run, = Path("runs_digits").glob("quickstart_*_ld-rr")
    assert cli.main(["plot", str(run), "--out", "figures"]) == 0
    assert any("label" in p.name for p in (mnist_runs / "figures").rglob("*.png"))
