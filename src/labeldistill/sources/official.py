"""Parsers of the registered datasets' files: the shared ``NAME.npz`` archives and each
official release's own layout (MNIST-family idx, CIFAR pickles, SVHN .mat, Kuzushiji-49
.npz, the CUB-200-2011 image folder), checked against the registry entry.

Each official layout is a :class:`Layout`: how to describe, find, load and download it,
and which class names its files carry.  Parsers return data; they never edit the registry.
"""
from __future__ import annotations

import gzip
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import DataError
from . import downloads
from .base import DatasetInfo, RawData, one_line

__all__ = ["Layout", "LAYOUTS", "Corrupt", "corrupt_error", "to_raw", "npz_candidates", "load_npz",
           "SOURCE_FROM_ALL_IMAGES", "NPZ_FORMAT", "K49_FILES", "K49_URL", "CUB_URLS", "CUB_MD5"]

NPZ_FORMAT = (
    "a compressed NumPy archive with x_train, y_train, x_test, y_test; "
    "images uint8 (N,H,W) or (N,H,W,3); labels int64"
)


class Corrupt(Exception):
    """Internal: a data file is unreadable or inconsistent (message = reason)."""

    def __init__(self, reason: str, path: Path | str | None = None):
        super().__init__(reason)
        self.path = path


def corrupt_error(path: Path | str, reason: str, fmt: str) -> DataError:
    return DataError(one_line(
        f"corrupt data file {path}: {reason}; delete it or re-create it (format: {fmt})", limit=2000))


def check_split(info: DatasetInfo, x: np.ndarray, y: np.ndarray, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate one split's arrays against the registry entry; return (images, int64 labels)."""
    if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
        raise Corrupt(f"x_{split}/y_{split} are not arrays")
    if x.dtype != np.uint8:
        raise Corrupt(f"x_{split} has dtype {x.dtype}, expected uint8")
    if y.dtype.kind not in "iu":
        raise Corrupt(f"y_{split} has dtype {y.dtype}, expected an integer type (int64)")
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
        raise Corrupt(f"x_{split} has shape {tuple(x.shape)}, expected {expected}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise Corrupt(f"y_{split} has shape {tuple(y.shape)}, expected (N,)")
    if len(x) != len(y):
        raise Corrupt(f"x_{split} has {len(x)} images but y_{split} has {len(y)} labels")
    if len(x) == 0:
        raise Corrupt(f"x_{split} is empty")
    y = y.astype(np.int64, copy=False)
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= info.num_classes:
        raise Corrupt(f"y_{split} has labels {lo}..{hi}, expected 0..{info.num_classes - 1}")
    return x, y


def to_raw(info: DatasetInfo, x_tr, y_tr, x_te, y_te, origin: str) -> RawData:
    x_tr, y_tr = check_split(info, x_tr, y_tr, "train")
    if x_te is not None:
        x_te, y_te = check_split(info, x_te, y_te, "test")

    def tensor(a: np.ndarray | None) -> torch.Tensor | None:
        if a is None:
            return None
        return torch.from_numpy(np.ascontiguousarray(a))

    return RawData(name=info.name, x_train=tensor(x_tr), y_train=tensor(y_tr),
                   x_test=tensor(x_te), y_test=tensor(y_te), origin=origin)


# --------------------------------------------------------------------------- step 1: .npz


def npz_candidates(name: str, root: Path) -> list[Path]:
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


def load_npz(info: DatasetInfo, path: Path) -> RawData:
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise Corrupt("not a .npz archive (a single array?)")
        with archive:
            keys = set(archive.files)
            missing = [k for k in ("x_train", "y_train") if k not in keys]
            has_test = "x_test" in keys or "y_test" in keys
            if has_test or not info.source_only:
                missing += [k for k in ("x_test", "y_test") if k not in keys]
            if missing:
                raise Corrupt(f"missing key(s) {', '.join(missing)} (has {', '.join(sorted(keys)) or 'none'})")
            arrays = {k: archive[k] for k in ("x_train", "y_train", "x_test", "y_test") if k in keys}
    except Corrupt as exc:
        raise corrupt_error(path, str(exc), NPZ_FORMAT) from None
    except Exception as exc:  # BadZipFile, zlib.error, EOFError, ValueError (pickled objects), OSError, ...
        raise corrupt_error(path, f"cannot read it ({type(exc).__name__}: {exc})", NPZ_FORMAT) from None
    y_tr, y_te = arrays["y_train"], arrays.get("y_test")
    if info.name == "emnist" and y_tr.dtype.kind in "iu":
        y_tr = _shift_one_based(y_tr)
        if y_te is not None and y_te.dtype.kind in "iu":
            y_te = _shift_one_based(y_te)
    try:
        return to_raw(info, arrays["x_train"], y_tr, arrays.get("x_test"), y_te, str(path))
    except Corrupt as exc:
        raise corrupt_error(path, str(exc), NPZ_FORMAT) from None


# --------------------------------------------------------------------------- step 2: official layouts


def _no_class_names(handle: object) -> None:
    return None


@dataclass(frozen=True)
class Layout:
    """How to find, load and download one dataset's official files."""

    looked_for: Callable[[Path], str]          # human description of the files (for "not found")
    find: Callable[[Path], object | None]      # -> a handle for load, or None if absent
    load: Callable[[DatasetInfo, object], RawData]
    download: Callable[[Path], None]
    # class names the files carry (CIFAR meta, CUB classes.txt), or None: the registry's names stand
    class_names: Callable[[object], list[str] | None] = _no_class_names


IDX_FORMAT = "MNIST idx format (magic 0x00000803 images / 0x00000801 labels, big-endian sizes, uint8 data)"


def _read_idx(path: Path) -> np.ndarray:
    """Read an uncompressed or gzipped idx file (the MNIST-family raw format)."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise Corrupt(f"cannot read it ({type(exc).__name__}: {exc})", path) from None
    if len(data) < 8 or data[0] != 0 or data[1] != 0:
        raise Corrupt("bad idx header", path)
    if data[2] != 0x08:
        raise Corrupt(f"idx data type 0x{data[2]:02x}, expected 0x08 (uint8)", path)
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim not in (1, 3) or len(data) < header:
        raise Corrupt(f"idx file has {ndim} dimensions, expected 1 (labels) or 3 (images)", path)
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims))
    if len(data) - header != expected:
        raise Corrupt(f"idx file holds {len(data) - header} bytes of data, header says {dims} = {expected}", path)
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def _find_file(folder: Path, filename: str) -> Path | None:
    for p in (folder / filename, folder / (filename + ".gz")):
        if p.is_file():
            return p
    return None


def _mnist_family(cls_name: str, prefix_train: str, prefix_test: str, *, one_based: bool = False,
                  split_kw: dict | None = None) -> Layout:
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
            except Corrupt as exc:
                raise corrupt_error(p, str(exc), IDX_FORMAT) from None
        x_tr, y_tr, x_te, y_te = arrays
        if one_based:
            y_tr, y_te = _shift_one_based(y_tr), _shift_one_based(y_te)
        try:
            return to_raw(info, x_tr, y_tr, x_te, y_te, str(_folder_of(paths)))
        except Corrupt as exc:
            raise corrupt_error(_folder_of(paths), str(exc), IDX_FORMAT) from None

    def download(root: Path) -> None:
        import torchvision.datasets as tvd

        cls = getattr(tvd, cls_name)
        # Constructing with download=True fetches (and checks the MD5 of) all four files.
        cls(str(root), train=True, download=True, **(split_kw or {}))

    return Layout(looked_for, find, load, download)


def _folder_of(paths) -> Path:
    return Path(paths[0]).parent


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
    except Exception as exc:  # any unpickling failure means a damaged file
        raise Corrupt(f"cannot unpickle it ({type(exc).__name__}: {exc})", path) from None
    if not isinstance(entry, dict):
        raise Corrupt("not a pickled dict", path)
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in entry.items()}


CIFAR_FORMAT = "CIFAR python pickle batches: dicts with 'data' uint8 (N,3072) and 'labels'/'fine_labels'"


def _cifar(ten: bool) -> Layout:
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
                raise Corrupt(f"missing 'data' or '{label_key}'", folder / n)
            data = np.asarray(data)
            if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
                raise Corrupt(f"'data' is {data.dtype} {tuple(data.shape)}, expected uint8 (N,3072)", folder / n)
            xs.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            ys.append(np.asarray(labels, dtype=np.int64).reshape(-1))
        return np.concatenate(xs), np.concatenate(ys)

    def load(info: DatasetInfo, folder: Path) -> RawData:
        try:
            x_tr, y_tr = read(folder, train_files)
            x_te, y_te = read(folder, test_files)
            return to_raw(info, x_tr, y_tr, x_te, y_te, str(folder))
        except Corrupt as exc:
            raise corrupt_error(exc.path or folder, str(exc), CIFAR_FORMAT) from None

    def class_names(folder: Path) -> list[str] | None:
        if not (folder / meta_file).is_file():
            return None
        try:
            names = _unpickle(folder / meta_file).get(meta_key)
        except Corrupt:  # an unreadable meta file only costs the names
            return None
        return list(names) if isinstance(names, (list, tuple)) else None

    def download(root: Path) -> None:
        import torchvision.datasets as tvd

        cls = tvd.CIFAR10 if ten else tvd.CIFAR100
        downloads.download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)

    return Layout(looked_for, find, load, download, class_names)


SVHN_FORMAT = "MATLAB .mat with X uint8 (32,32,3,N) and y (N,1), labels 1..10 where 10 means digit 0"


def _svhn() -> Layout:
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
            raise Corrupt(f"cannot read it ({type(exc).__name__}: {exc})", path) from None
        if "X" not in mat or "y" not in mat:
            raise Corrupt("missing X or y", path)
        x, y = np.asarray(mat["X"]), np.asarray(mat["y"])
        if x.ndim != 4 or x.shape[:3] != (32, 32, 3):
            raise Corrupt(f"X has shape {tuple(x.shape)}, expected (32,32,3,N)", path)
        if y.dtype.kind not in "iuf":
            raise Corrupt(f"y has dtype {y.dtype}", path)
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
            return to_raw(info, x_tr, y_tr, x_te, y_te, str(train_path.parent))
        except Corrupt as exc:
            raise corrupt_error(exc.path or train_path, str(exc), SVHN_FORMAT) from None

    def download(root: Path) -> None:
        import torchvision.datasets as tvd

        for split in ("train", "test"):
            url, filename, md5 = tvd.SVHN.split_list[split]
            downloads.download_url(url, str(root), filename=filename, md5=md5)

    return Layout(looked_for, find, load, download)


K49_URL = "http://codh.rois.ac.jp/kmnist/dataset/k49/"
K49_FILES = ("k49-train-imgs.npz", "k49-train-labels.npz", "k49-test-imgs.npz", "k49-test-labels.npz")
K49_FORMAT = "official Kuzushiji-49 .npz files, each holding one array 'arr_0'"


def _k49() -> Layout:
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
                    raise Corrupt(f"missing key arr_0 (has {', '.join(archive.files) or 'none'})", path)
                return archive["arr_0"]
        except Corrupt:
            raise
        except Exception as exc:
            raise Corrupt(f"cannot read it ({type(exc).__name__}: {exc})", path) from None

    def load(info: DatasetInfo, folder: Path) -> RawData:
        try:
            arrays = [read(folder / f) for f in K49_FILES]
            return to_raw(info, *arrays, str(folder))
        except Corrupt as exc:
            raise corrupt_error(exc.path or folder, str(exc), K49_FORMAT) from None

    def download(root: Path) -> None:
        folder = root / "k49"
        for f in K49_FILES:
            downloads.download_url(K49_URL + f, str(folder), filename=f, md5=None)

    return Layout(looked_for, find, load, download)


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


def _cub() -> Layout:
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
            raise Corrupt(f"cannot read it ({type(exc).__name__})", path) from None
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            parts = line.split(maxsplit=1)
            if len(parts) != 2 or not parts[0].isdigit():
                raise Corrupt(f"line {n} is not '<id> <value>'", path)
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
            raise Corrupt(f"cannot decode image ({type(exc).__name__}: {exc})", path) from None

    def load(info: DatasetInfo, folder: Path) -> RawData:
        try:
            images = table(folder / "images.txt")
            labels = table(folder / "image_class_labels.txt")
            if not images:
                raise Corrupt("no images listed", folder / "images.txt")
            # Every image, in image-id order (the release's order: class folder, then file),
            # as one "training split": base images are drawn from all of them.
            xs, ys = [], []
            for image_id in sorted(images):
                if image_id not in labels:
                    raise Corrupt(f"image id {image_id} has no class entry", folder)
                label = labels[image_id]
                if not label.isdigit():
                    raise Corrupt(f"bad class '{label}' for image id {image_id}", folder)
                xs.append(load_image(folder / "images" / images[image_id]))
                ys.append(int(label) - 1)  # classes are 1-based in the release
            return to_raw(info, np.stack(xs), np.asarray(ys, dtype=np.int64), None, None, str(folder))
        except Corrupt as exc:
            raise corrupt_error(exc.path or folder, str(exc), CUB_FORMAT) from None

    def class_names(folder: Path) -> list[str] | None:
        classes_path = folder / "classes.txt"
        if not classes_path.is_file():
            return None
        try:
            classes = table(classes_path)
        except Corrupt as exc:
            raise corrupt_error(exc.path or folder, str(exc), CUB_FORMAT) from None
        return [classes[i].split(".", 1)[-1] for i in sorted(classes)]

    def download(root: Path) -> None:
        errors = []
        for url in CUB_URLS:
            try:
                downloads.download_and_extract_archive(url, str(root), filename="CUB_200_2011.tgz", md5=CUB_MD5)
                return
            except Exception as exc:  # try the next mirror
                errors.append(exc)
        raise errors[-1]

    return Layout(looked_for, find, load, download, class_names)


LAYOUTS: dict[str, Layout] = {
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

