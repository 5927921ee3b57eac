"""Every data source answers one protocol; the tests follow the registries.

Each path format in `sources.PATH_FORMATS` and each registered dataset is covered by the
parametrized tests below: a new format fails `test_path_format_reads_what_was_written`
until it has an example writer here, as timm's tests cover every name in list_models().
"""
from __future__ import annotations

import ast
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from labeldistill import cli
from labeldistill import sources as S
from labeldistill.errors import ConfigError, DataError
from labeldistill.sources import downloads
from labeldistill.sources.official import LAYOUTS

PACKAGE = Path(S.__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _fresh_cache():
    S.clear_cache()
    yield
    S.clear_cache()


def digits(n_per_class: int = 4, classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Grayscale 8x8 images, classes in file order 0, 0, ..., 1, 1, ..."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n_per_class * classes, 8, 8), dtype=np.uint8)
    y = np.repeat(np.arange(classes), n_per_class).astype(np.int64)
    return x, y


def write_npz(path: Path, x_tr, y_tr, x_te, y_te) -> Path:
    path = path / "data.npz"
    np.savez_compressed(path, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    return path


def write_folder(path: Path, x_tr, y_tr, x_te, y_te) -> Path:
    # class folders named so that their sorted order is the label order
    for split, x, y in (("train", x_tr, y_tr), ("test", x_te, y_te)):
        for i, (im, label) in enumerate(zip(x, y)):
            file = path / "d" / split / f"c{label}" / f"{i:03d}.png"
            file.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(im).save(file)
    return path / "d"


def write_hf(path: Path, x_tr, y_tr, x_te, y_te) -> Path:
    datasets = pytest.importorskip("datasets", reason="the `datasets` library (labeldistill[hf]) is not installed")
    features = datasets.Features({"image": datasets.Image(),
                                  "label": datasets.ClassLabel(names=[f"c{i}" for i in range(3)])})

    def split(x, y):
        return datasets.Dataset.from_dict({"image": [Image.fromarray(a) for a in x], "label": y.tolist()},
                                          features=features)

    datasets.DatasetDict({"train": split(x_tr, y_tr), "test": split(x_te, y_te)}).save_to_disk(str(path / "hf"))
    return path / "hf"


# One example writer per path format (by its `kind`): each writes the same small dataset.
WRITERS = {"NumPy archive": write_npz, "image folder": write_folder, "Hugging Face dataset": write_hf}


@pytest.mark.parametrize("fmt", S.PATH_FORMATS, ids=lambda f: f.kind)
def test_path_format_reads_what_was_written(fmt, tmp_path):
    assert fmt.kind in WRITERS, f"path format '{fmt.kind}' has no example writer in tests/test_sources.py: add one"
    x_tr, y_tr = digits(4, seed=1)
    x_te, y_te = digits(2, seed=2)
    name = str(WRITERS[fmt.kind](tmp_path, x_tr, y_tr, x_te, y_te))
    source = S.resolve(name)
    assert isinstance(source, S.DataSource) and isinstance(source, S.PathSource)
    assert source.format is fmt  # the format that wrote it claims it, not an earlier one
    info, raw = source.info(), source.load()
    assert (info.name, info.num_classes, info.channels, info.image_size) == (name, 3, 1, 8)
    assert info.description.startswith(fmt.kind)
    assert torch.equal(raw.x_train, torch.from_numpy(x_tr)) and torch.equal(raw.y_train, torch.from_numpy(y_tr))
    assert torch.equal(raw.x_test, torch.from_numpy(x_te)) and torch.equal(raw.y_test, torch.from_numpy(y_te))
    # the public functions go through the same source and its cache
    assert S.get_info(name) == info and S.load_raw(name) is raw
    # what a path format reads is what the same arrays give in memory
    mem = S.resolve(S.from_arrays(x_tr, y_tr, x_te, y_te, name=f"same-as-{fmt.kind.replace(' ', '-')}"))
    assert isinstance(mem, S.MemorySource)
    assert mem.info().mean == info.mean and mem.info().std == info.std
    assert torch.equal(mem.load().x_train, raw.x_train)


@pytest.mark.parametrize("name", S.dataset_names())
def test_registered_dataset_resolves_to_its_entry(name):
    source = S.resolve(name, root="/nonexistent", download=False)
    assert isinstance(source, S.DataSource) and source.name == name
    assert source.info() is S.DATASETS[name]  # no data is read to know a registered dataset
    if isinstance(source, S.RegisteredSource):
        assert name in LAYOUTS, f"registered dataset '{name}' has no official file layout to read"


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_official_layout_missing_without_download_is_one_line(name, tmp_path, monkeypatch):
    def no_download(*args, **kwargs):
        pytest.fail("must not download")

    monkeypatch.setattr(downloads, "download_url", no_download)
    monkeypatch.setattr(downloads, "download_and_extract_archive", no_download)
    root = tmp_path.resolve()
    with pytest.raises(DataError) as err:
        S.load_raw(name, root, download=False)
    text = str(err.value)
    assert "\n" not in text and "downloading is off" in text and "--data-root" in text
    assert str(root / f"{name}.npz") in text and LAYOUTS[name].looked_for(root) in text
    assert list(root.iterdir()) == []  # nothing created


def test_registered_kinds():
    assert isinstance(S.resolve("mnist5k"), S.EmbeddedSource)
    assert isinstance(S.resolve("fake"), S.GeneratedSource)
    assert isinstance(S.resolve("mnist"), S.RegisteredSource)
    with pytest.raises(DataError, match="is not loaded from disk"):
        S.resolve("fake").load()
    assert S.resolve("mnist5k").load().x_train.shape == (4000, 28, 28)


def test_unknown_name_is_one_line_with_a_suggestion():
    with pytest.raises(DataError, match=r"unknown dataset 'mnits' \(did you mean 'mnist'\?\)"):
        S.resolve("mnits")


def test_loading_never_edits_the_registry(tmp_path):
    """CIFAR-100's own class names are used while its data is loaded, and the registry keeps its entry."""
    entry = S.DATASETS["cifar100"]
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    x = np.zeros((2, 3072), dtype=np.uint8)
    for split in ("train", "test"):
        (folder / split).write_bytes(pickle.dumps({"data": x, "fine_labels": [0, 99]}))
    names = [f"thing_{i}" for i in range(100)]
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": names}))
    before = dict(S.DATASETS)
    S.load_raw("cifar100", tmp_path, download=False)
    assert S.DATASETS == before and S.DATASETS["cifar100"] is entry
    assert S.get_info("cifar100").class_names[:2] == ("thing_0", "thing_1")
    S.clear_cache()  # forgetting the data forgets the names its files carried
    assert S.get_info("cifar100") is entry


def test_path_datasets_stay_out_of_the_registry_and_the_datasets_command(tmp_path, capsys):
    x, y = digits(4)
    path = write_npz(tmp_path, x, y, x, y)
    S.load_raw(str(path))
    S.get_info(S.from_arrays(x, y, name="listed-nowhere"))
    assert list(S.DATASETS) == S.dataset_names() and str(path) not in S.DATASETS
    assert cli.main(["datasets"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()[:-1]]
    assert listed == sorted(S.DATASETS)


def test_check_dataset_name(tmp_path):
    x, y = digits(4)
    S.check_dataset_name("mnist", "source")
    S.check_dataset_name(str(write_npz(tmp_path, x, y, x, y)), "target")
    S.check_dataset_name(S.from_arrays(x, y, name="checked"), "source")
    with pytest.raises(ConfigError, match=r"unknown dataset 'cifar' for data.target \(did you mean 'cifar10'\?\)"):
        S.check_dataset_name("cifar", "target")
    with pytest.raises(ConfigError, match="data.source: no such file or folder"):
        S.check_dataset_name(str(tmp_path / "missing.npz"), "source")
    with pytest.raises(ConfigError, match="data.source: no in-memory dataset 'memory:never-made'"):
        S.check_dataset_name("memory:never-made", "source")


def _imports(path: Path) -> set[str]:
    """Absolute names of the labeldistill modules a file imports, imports inside functions included."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            for a in node.names:  # `from PKG import NAME` imports module PKG.NAME if there is one, else PKG
                sub = PACKAGE.parent.joinpath(*f"{mod}.{a.name}".split("."))
                out.add(f"{mod}.{a.name}" if sub.with_suffix(".py").is_file() or sub.is_dir() else mod)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m.startswith("labeldistill")}


def test_sources_import_only_their_own_layer_and_below():
    """The data-source layer sits under everything else: it imports itself, errors and seeding only,
    and its modules never import the package's facade (sources/__init__), which imports them."""
    allowed = {"labeldistill.errors", "labeldistill.seeding"}
    for path in sorted((PACKAGE / "sources").glob("*.py")):
        for mod in _imports(path):
            assert mod in allowed or mod.startswith("labeldistill.sources."), (path.name, mod)
            if path.name != "__init__.py":
                assert mod != "labeldistill.sources", (path.name, mod)
