"""Data of the user's own beyond files: Hugging Face `save_to_disk` folders, arrays and
torch Datasets through the Python API, and the one-call `labeldistill.distill`."""
from __future__ import annotations

import builtins
from pathlib import Path

import numpy as np
import pytest
import torch

import labeldistill as ld
from labeldistill import config as config_mod
from labeldistill import datasets as ds
from labeldistill.errors import ConfigError, DataError
from labeldistill.errors import LabelDistillError as LabelDistillErrors
from labeldistill.userdata import stratified_split

MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist.npz"


@pytest.fixture(autouse=True)
def _fresh_cache():
    ds.clear_cache()
    yield
    ds.clear_cache()


def small_digits(n_train=300, n_test=100):
    """Real digits: the embedded mnist5k (always present), as uint8 arrays."""
    raw = ds.load_raw("mnist5k")
    g = np.random.default_rng(0)  # the embedded arrays are sorted by class
    tr = g.permutation(len(raw.y_train))[:n_train]
    te = g.permutation(len(raw.y_test))[:n_test]
    return raw.x_train.numpy()[tr], raw.y_train.numpy()[tr], raw.x_test.numpy()[te], raw.y_test.numpy()[te]


# --------------------------------------------------------------------------- Hugging Face datasets

@pytest.fixture()
def hf():
    return pytest.importorskip("datasets", reason="the `datasets` library (labeldistill[hf]) is not installed")


def save_hf(path: Path, x_tr, y_tr, x_te=None, y_te=None, image="image", label="label", class_label=True,
            pil=True):
    import datasets
    from PIL import Image

    feats = {image: datasets.Image() if pil else datasets.Array2D(shape=x_tr.shape[1:], dtype="uint8"),
             label: datasets.ClassLabel(names=[f"digit{i}" for i in range(10)]) if class_label
             else datasets.Value("int64")}
    features = datasets.Features(feats)

    def one(x, y):
        images = [Image.fromarray(a) for a in x] if pil else list(x)
        return datasets.Dataset.from_dict({image: images, label: y.tolist()}, features=features)

    obj = one(x_tr, y_tr) if x_te is None else datasets.DatasetDict({"train": one(x_tr, y_tr), "test": one(x_te, y_te)})
    obj.save_to_disk(str(path))
    return str(path)


def test_hf_dataset_dict_reads_like_the_arrays(tmp_path, hf):
    x_tr, y_tr, x_te, y_te = small_digits()
    name = save_hf(tmp_path / "hf", x_tr, y_tr, x_te, y_te)
    info = ds.get_info(name)
    raw = ds.load_raw(name)
    assert info.class_names == tuple(f"digit{i}" for i in range(10))
    assert (info.channels, info.image_size, info.num_classes) == (1, 28, 10)
    assert info.description.startswith("Hugging Face dataset")
    assert np.array_equal(raw.x_train.numpy(), x_tr) and np.array_equal(raw.y_train.numpy(), y_tr)
    assert np.array_equal(raw.x_test.numpy(), x_te) and np.array_equal(raw.y_test.numpy(), y_te)
    mean = x_tr.astype(np.float64).mean() / 255
    assert info.mean[0] == pytest.approx(mean, abs=1e-9)


def test_hf_dataset_without_test_split_and_named_columns(tmp_path, hf):
    x_tr, y_tr, _, _ = small_digits()
    name = save_hf(tmp_path / "hf1", x_tr, y_tr, image="pixels_of_digit", label="which", class_label=False, pil=False)
    with pytest.raises(DataError, match=r"cannot tell which column of .* holds the images \(columns: "
                                        r"pixels_of_digit, which\); set data.image_column$"):
        ds.load_raw(name)
    raw = ds.load_raw(name, image_column="pixels_of_digit", label_column="which", test_fraction=0.25)
    train_idx, test_idx = stratified_split(y_tr, 0.25)
    assert np.array_equal(raw.x_train.numpy(), x_tr[train_idx]) and np.array_equal(raw.x_test.numpy(), x_tr[test_idx])
    assert ds.get_info(name, image_column="pixels_of_digit", label_column="which").class_names == tuple(
        str(i) for i in range(10))
    with pytest.raises(DataError, match="has no column 'img' \\(data.image_column\\); its columns: pixels_of_digit, which"):
        ds.load_raw(name, image_column="img", label_column="which")


def test_hf_dataset_through_a_config_and_errors(tmp_path, monkeypatch, hf):
    x_tr, y_tr, x_te, y_te = small_digits()
    name = save_hf(tmp_path / "hf", x_tr, y_tr, x_te, y_te)
    cfg = config_mod.with_overrides(config_mod.Config(), [f"data.source={name}", f"data.target={name}",
                                                          "data.num_base_examples=20"])
    data = ld.prepare(cfg)
    assert data.base_x.shape == (20, 1, 28, 28) and data.test_x.shape[0] == 100
    dd = hf.DatasetDict({"training": hf.load_from_disk(name)["train"]})
    dd.save_to_disk(str(tmp_path / "nosplit"))
    with pytest.raises(DataError, match="has the splits training but no 'train'"):
        ds.load_raw(str(tmp_path / "nosplit"))
    real_import = builtins.__import__

    def no_datasets(mod, *args, **kwargs):
        if mod == "datasets":
            raise ImportError("No module named 'datasets'")
        return real_import(mod, *args, **kwargs)

    ds.clear_cache()
    monkeypatch.setattr(builtins, "__import__", no_datasets)
    with pytest.raises(DataError, match=r"needs the `datasets` library: pip install 'labeldistill\[hf\]'$"):
        ds.load_raw(name)


# --------------------------------------------------------------------------- arrays and torch Datasets


def test_from_arrays_accepts_the_usual_layouts():
    x_tr, y_tr, x_te, y_te = small_digits()
    a = ld.from_arrays(x_tr, y_tr, x_te, y_te, name="u8")
    b = ld.from_arrays(torch.from_numpy(x_tr).float()[:, None] / 255, torch.from_numpy(y_tr),  # (N,1,H,W) floats
                       torch.from_numpy(x_te).float()[:, None] / 255, torch.from_numpy(y_te), name="chw")
    c = ld.from_arrays(x_tr[..., None], y_tr[:, None], x_te[..., None], y_te[:, None], name="hw1",
                       class_names=list("abcdefghij"))
    assert a == "memory:u8" and b == "memory:chw"
    ra, rb, rc = ds.load_raw(a), ds.load_raw(b), ds.load_raw(c)
    for r in (rb, rc):
        assert torch.equal(r.x_train, ra.x_train) and torch.equal(r.y_test, ra.y_test)
    assert ds.get_info(c).class_names == tuple("abcdefghij")
    # the config accepts the name in this process; the run's folder gets a plain name
    cfg = config_mod.with_overrides(config_mod.Config(), [f"data.source={a}", f"data.target={a}"])
    assert cfg.run_name == "ld-rr_u8_to_u8_100be_0s"
    colour = ld.from_arrays(np.repeat(x_tr[:, None], 3, 1), y_tr, name="colour")  # (N,3,H,W) uint8, split by fraction
    info = ds.get_info(colour)
    n_train = len(stratified_split(y_tr, 0.2)[0])
    assert info.channels == 3 and ds.load_raw(colour).x_train.shape == (n_train, 28, 28, 3)


@pytest.mark.parametrize("args,message", [
    (lambda x, y: (x.astype(np.float32), y), "float images must hold values in [0, 1] (found 0..255)"),
    (lambda x, y: (x, y + 1), "y_train has labels 0..10 but no example of class(es) 0"),
    (lambda x, y: (x, y, x[:5], np.array([0, 1, 2, 3, 10])), "y_test has labels 0..10, expected 0..9"),
    (lambda x, y: (x, np.zeros_like(y)), "y_train holds only one class"),
    (lambda x, y: (x, y[:-1]), "300 training images but 299 labels"),
    (lambda x, y: (x[:, :, :20], y), "images are 20x28 (width x height), not square; pass image_size"),
    (lambda x, y: (x, y.astype(np.float32)), "train labels have dtype float32"),
    (lambda x, y: (x[0], y), "images have shape (28, 28); expected (N, H, W)"),
])
def test_from_arrays_bad_input(args, message):
    x, y, _, _ = small_digits()
    with pytest.raises(DataError) as info:
        ld.from_arrays(*args(x, y), name="bad")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_unknown_in_memory_name_is_a_config_error():
    with pytest.raises(ConfigError, match="no in-memory dataset 'memory:never' in this process; create it with "
                                          r"labeldistill.from_arrays\(...\)"):
        config_mod.with_overrides(config_mod.Config(), ["data.target=memory:never"])


class Pairs(torch.utils.data.Dataset):
    """A map-style dataset as torchvision gives them: ToTensor images (C, H, W) in [0, 1]."""

    classes = [f"c{i}" for i in range(10)]

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return torch.from_numpy(self.x[i]).float()[None] / 255, int(self.y[i])


def test_from_torch_equals_from_arrays():
    x_tr, y_tr, x_te, y_te = small_digits()
    t = ld.from_torch(Pairs(x_tr, y_tr), Pairs(x_te, y_te), name="pairs")
    a = ld.from_arrays(x_tr, y_tr, x_te, y_te, name="same")
    rt, ra = ds.load_raw(t), ds.load_raw(a)
    assert torch.equal(rt.x_train, ra.x_train) and torch.equal(rt.x_test, ra.x_test)
    assert torch.equal(rt.y_train, ra.y_train)
    assert ds.get_info(t).class_names == tuple(Pairs.classes)
    with pytest.raises(DataError, match="item 0 is a int; expected \\(image, label\\) pairs"):
        ld.from_torch([1, 2, 3], name="ints")


# --------------------------------------------------------------------------- the one call


def test_distill_one_call_equals_the_config_run_and_takes_arrays(tmp_path):
    """`ld.distill` on arrays gives what a config run on the same images as a .npz gives:
    the same base images, labels and test accuracies."""
    x_tr, y_tr, x_te, y_te = small_digits(1200, 300)
    npz = tmp_path / "digits.npz"
    np.savez(npz, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    common = {"evaluate.num_test_models": 2, "evaluate.step_grid": [40, 80], "distill.batch_size": 256}
    r = ld.distill((x_tr, y_tr, x_te, y_te), method="baseline-ls", num_base_examples=20, out=tmp_path / "runs",
                   overrides=common)
    cfg = config_mod.with_overrides(config_mod.Config(), [
        "method=baseline-ls", f"data.source={npz}", f"data.target={npz}", "data.num_base_examples=20",
        "evaluate.num_test_models=2", "evaluate.step_grid=[40,80]", "distill.batch_size=256"])
    ref = ld.run_experiment(cfg, handle_signals=False)
    assert r.result["base_indices"].tolist() == ref["base_indices"].tolist()
    assert torch.equal(r.labels, ref["labels"])
    assert r.result["test_accuracy"] == ref["test_accuracy"] and r.accuracy == ref["test_accuracy_mean"]
    assert r.images.shape == (20, 1, 28, 28)
    assert torch.equal((r.images * 255).round().to(torch.uint8)[:, 0], torch.from_numpy(x_tr)[r.result["base_indices"]])
    assert r.run_dir.parent == tmp_path / "runs" and r.run_dir.name.startswith("baseline-ls_base-")
    # the automatic name, then what the overrides change (as --set names a run)
    assert r.result["source"] == r.result["target"] and "_20be_0s_" in r.run_dir.name
    assert r.run_dir.name.endswith("_distill.batch_size=256_num_test_models=2_step_grid=40,80")
    assert r.artifact == r.run_dir / "distilled.json" and r.artifact.is_file()
    loaded = ld.load_distilled(r.run_dir)
    assert torch.allclose(loaded.labels, r.labels)
    assert "baseline-ls: 20 base examples, test accuracy" in repr(r)
    # other arrays are another dataset, with a run folder of its own; the same arrays are the same run
    other = ld.distill((x_tr[::-1], y_tr[::-1], x_te, y_te), method="baseline-ls", num_base_examples=20,
                       out=tmp_path / "runs", overrides=common)
    assert other.run_dir != r.run_dir
    again = ld.distill((x_tr, y_tr, x_te, y_te), method="baseline-ls", num_base_examples=20, out=tmp_path / "runs",
                       overrides=common, resume=True)
    assert again.run_dir == r.run_dir and again.result["test_accuracy"] == r.result["test_accuracy"]


def test_distill_one_call_with_a_factory_and_bad_arguments(tmp_path):
    from torch import nn

    def tiny(in_channels, num_classes, image_size):
        return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size ** 2, 32), nn.ReLU(),
                             nn.Linear(32, num_classes))

    try:
        r = ld.distill("mnist5k", method="label-solve", arch=tiny, num_base_examples=20, out=None,
                       overrides={"evaluate.num_test_models": 2, "solve.num_networks": 2, "solve.target_size": 300,
                                  "evaluate.step_grid": [50, 100]})
        assert r.run_dir is None and r.artifact is None
        assert r.result["arch"].endswith("tiny") and r.accuracy > 30
    finally:
        from labeldistill.models import MODELS

        for name in [n for n in MODELS if n.endswith("tiny")]:
            ld.unregister_model(name)
    with pytest.raises(ConfigError, match="unknown method 'ld-xx'"):
        ld.distill("mnist5k", method="ld-xx", out=None)
    with pytest.raises(DataError, match="cannot use a int as a dataset"):
        ld.distill(5, out=None)
    with pytest.raises(ConfigError, match="unknown config key 'evaluate.num_models'"):
        ld.distill("mnist5k", out=None, overrides={"evaluate.num_models": 2})


def test_given_mean_and_std_normalise_the_target_and_travel_with_the_artifact(tmp_path):
    x_tr, y_tr, x_te, y_te = small_digits(1200, 300)
    name = ld.from_arrays(x_tr, y_tr, x_te, y_te, name="norm")
    overrides = ["method=baseline", f"data.source={name}", f"data.target={name}", "data.num_base_examples=20",
                 "evaluate.num_test_models=2", "evaluate.step_grid=[40]"]
    own = ld.prepare(config_mod.with_overrides(config_mod.Config(), overrides))
    cfg = config_mod.with_overrides(config_mod.Config(), overrides + ["data.mean=[0.5]", "data.std=[0.25]"])
    given = ld.prepare(cfg)
    torch.testing.assert_close(given.base_x, (given.base_pixels - 0.5) / 0.25)
    torch.testing.assert_close(own.base_x * own.std + own.mean, given.base_x * 0.25 + 0.5, rtol=0, atol=1e-5)
    assert float(own.mean.flatten()[0]) == pytest.approx(x_tr.astype(np.float64).mean() / 255, abs=1e-6)
    result = ld.run_experiment(cfg, out=str(tmp_path), handle_signals=False)
    # the artifact re-reads the target with the same normalisation: the same accuracies
    again = ld.evaluate_artifact(ld.load_distilled(tmp_path / cfg.run_name))
    assert again["test_accuracy"] == result["test_accuracy"]
    for bad, message in ((["data.mean=[0.5,0.5]"], r"data.mean has 2 value\(s\) but 'memory:norm' has 1 channel"),
                         (["data.std=[0]"], "data.std must be positive for every channel")):
        with pytest.raises(LabelDistillErrors, match=message):
            ld.prepare(config_mod.with_overrides(config_mod.Config(), overrides + bad))


class BadLabels(Pairs):
    def __init__(self, x, y, kind):
        super().__init__(x, y)
        self.kind = kind

    def __getitem__(self, i):
        image, label = super().__getitem__(i)
        return image, (float(label) + 0.5 if self.kind == "float" else torch.nn.functional.one_hot(
            torch.tensor(label), 10))


@pytest.mark.parametrize("kind,message", [("float", "train labels have dtype float64"),
                                          ("onehot", "item 0 has a label of shape (10,); expected one integer")])
def test_from_torch_refuses_labels_that_are_not_class_indices(kind, message):
    x, y, _, _ = small_digits(60, 10)
    with pytest.raises(DataError) as info:
        ld.from_torch(BadLabels(x, y, kind), name="bad")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_in_memory_data_is_a_copy_and_keeps_its_size():
    x, y, xt, yt = small_digits()
    name = ld.from_arrays(x, y, xt, yt, name="copy")
    before = ds.load_raw(name).x_train.clone()
    x[:] = 0
    assert torch.equal(ds.load_raw(name).x_train, before)
    with pytest.raises(DataError, match="holds 28x28 images, not 16x16; pass image_size=16 to from_arrays"):
        ds.get_info(name, image_size=16)
    small = ld.from_arrays(xt, yt, name="small", image_size=16)
    assert ds.get_info(small, image_size=16).image_size == 16


def test_hf_grayscale_train_and_colour_test_become_colour(tmp_path, hf):
    x_tr, y_tr, x_te, y_te = small_digits()
    name = save_hf(tmp_path / "mixed", x_tr, y_tr, np.repeat(x_te[..., None], 3, axis=3), y_te)
    raw = ds.load_raw(name)
    assert raw.x_train.shape[1:] == (28, 28, 3) and raw.x_test.shape[1:] == (28, 28, 3)
    assert torch.equal(raw.x_train[..., 1], torch.from_numpy(x_tr))
