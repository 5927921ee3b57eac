"""Datasets outside the registry (data.source / data.target): paths and in-memory data.

Read from a path:

* a ``.npz`` file (any name) with ``x_train``, ``y_train``, ``x_test``, ``y_test``
  -- uint8 images (N,H,W), (N,H,W,1) or (N,H,W,3), integer labels 0..K-1 -- and
  optionally ``class_names`` (K strings);
* a folder of class folders, either ``DIR/train/CLASS/*.png`` with
  ``DIR/test/CLASS/...``, or just ``DIR/CLASS/*.png``, which is split into train
  and test by a stratified ``test_fraction`` with a fixed seed (the split never
  depends on the run's seed, so every run of the folder sees the same test set);
* a Hugging Face dataset folder written by ``save_to_disk`` (read with the
  ``datasets`` library, an optional extra): its ``train`` (and ``test``) split,
  the image and label columns found by feature type or name, or named.

Held in memory (the Python API): :func:`from_arrays` (arrays or tensors) and
:func:`from_torch` (a map-style ``torch.utils.data.Dataset``) register a dataset
under the name ``memory:NAME`` for this process.

All produce the :class:`~labeldistill.datasets.RawData` the registry's loaders
produce, plus a :class:`~labeldistill.datasets.DatasetInfo` read from the data:
image size, channels, classes, and the per-channel mean and std of the
training split.  Splits, preprocessing and base selection then happen exactly
as for registered datasets.
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .datasets import DATASETS, DatasetInfo, RawData
from .errors import DataError
from .seeding import derive_seed

__all__ = ["DEFAULT_TEST_FRACTION", "IMAGE_SUFFIXES", "MEMORY_PREFIX", "is_path_name", "is_memory_name", "short_name",
           "load_path", "from_arrays", "from_torch", "as_dataset_name", "is_hf_folder", "check_labels"]

DEFAULT_TEST_FRACTION = 0.2
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
# Like the MNIST-family targets: one sixth of the training split is validation.
VAL_FRACTION = 1 / 6
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "F")
MEMORY_PREFIX = "memory:"
SUPPORTED_FORMATS = ("give a registered dataset name (labeldistill datasets), a .npz file with x_train, y_train, "
                     "x_test, y_test, a folder of class folders of images, a Hugging Face dataset folder "
                     "(save_to_disk), or memory:NAME from labeldistill.from_arrays")
# Column names tried, in order, when a Hugging Face dataset's columns are not named in the config
# and no column has the `Image` / `ClassLabel` feature type.
HF_IMAGE_COLUMNS = ("image", "img", "pixel_values", "pixels", "x")
HF_LABEL_COLUMNS = ("label", "labels", "class", "target", "y", "fine_label")


def is_path_name(name: object) -> bool:
    """Whether a dataset name means data of the user's own: an in-memory dataset
    (``memory:NAME``, see :func:`from_arrays`), or a path: not registered, and a .npz
    name, a name with a path separator, or an existing folder."""
    if not isinstance(name, str) or not name or name in DATASETS:
        return False
    if is_memory_name(name):
        return True
    return (name.lower().endswith(".npz") or "/" in name or os.sep in name or name.startswith("~")
            or Path(name).is_dir())


def short_name(name: str) -> str:
    """A file-name-safe label of a dataset name (run folders): the stem of a path."""
    if not is_path_name(name):
        return name
    stem = name[len(MEMORY_PREFIX):] if is_memory_name(name) else Path(name.rstrip("/" + os.sep)).name
    if stem.lower().endswith(".npz"):
        stem = stem[:-4]
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in stem).strip("._")
    return safe or "data"


def _one_line(text: str, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _error(text: str, limit: int = 400) -> DataError:
    return DataError(_one_line(text, limit))


# --------------------------------------------------------------------------- loading

_CACHE: dict[tuple, tuple[DatasetInfo, RawData]] = {}


def clear_cache() -> None:
    """Forget the datasets read from paths (in-memory datasets stay: they exist nowhere else)."""
    _CACHE.clear()


def load_path(name: str, image_size: int | None = None, test_fraction: float = DEFAULT_TEST_FRACTION,
              image_column: str | None = None, label_column: str | None = None) -> tuple[DatasetInfo, RawData]:
    """The info and raw data of the dataset at path `name`, cached per resolved path and options."""
    if is_memory_name(name):
        info, raw = memory_dataset(name)
        if image_size is not None and image_size != info.image_size:
            raise _error(f"in-memory dataset '{name}' holds {info.image_size}x{info.image_size} images, not "
                         f"{image_size}x{image_size}; pass image_size={image_size} to from_arrays / from_torch instead")
        return info, raw
    path = Path(name).expanduser()
    if not path.exists():
        raise _error(f"no such file or folder: {name}")
    path = path.resolve()
    if path.is_file() and path.suffix.lower() != ".npz":
        what = f"a {path.suffix} file" if path.suffix else "a file without an extension"
        raise _error(f"{name} is {what}, not a dataset format labeldistill reads; {SUPPORTED_FORMATS}", limit=1000)
    hf = path.is_dir() and is_hf_folder(path)
    key = (str(path), image_size, float(test_fraction) if not path.is_file() else None,
           (image_column, label_column) if hf else None)
    cached = _CACHE.get(key)
    if cached is not None:  # the same data under another spelling of its path keeps that spelling as its name
        info, raw = cached
        return (info, raw) if info.name == name else (replace(info, name=name), replace(raw, name=name))
    if path.is_file():
        x_tr, y_tr, x_te, y_te, names = _read_npz(path, image_size)
        kind = "NumPy archive"
    elif hf:
        x_tr, y_tr, x_te, y_te, names = _read_hf(path, image_size, test_fraction, image_column, label_column)
        kind = "Hugging Face dataset"
    else:
        x_tr, y_tr, x_te, y_te, names = _read_folder(path, image_size, test_fraction)
        kind = "image folder"
    info = _info(name, kind, path, x_tr, y_tr, x_te, names)
    raw = RawData(name=name, x_train=torch.from_numpy(np.ascontiguousarray(x_tr)),
                  y_train=torch.from_numpy(y_tr), x_test=torch.from_numpy(np.ascontiguousarray(x_te)),
                  y_test=torch.from_numpy(y_te), origin=str(path))
    _CACHE[key] = (info, raw)
    return info, raw


def _info(name: str, kind: str, path: Path, x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray,
          names: tuple[str, ...]) -> DatasetInfo:
    channels = 1 if x_tr.ndim == 3 else 3
    size = x_tr.shape[1]
    mean, std = _mean_std(x_tr)
    if min(std) == 0:
        raise _error(f"the training images of {path} are all one constant colour (std 0); they cannot be normalised")
    return DatasetInfo(
        name=name, num_classes=len(names), channels=channels, image_size=size, mean=mean, std=std,
        val_fraction=VAL_FRACTION, stats_gap=None, source_only=False, class_names=names,
        description=f"{kind} {path}: {len(x_tr)} train / {len(x_te)} test, {size}x{size}, "
                    f"{'grayscale' if channels == 1 else 'colour'}, {len(names)} classes")


def _mean_std(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 images, in [0, 1] units, in chunks."""
    flat = x.reshape(len(x), -1) if x.ndim == 3 else x.reshape(len(x), -1, 3)
    channels = 1 if x.ndim == 3 else 3
    total = np.zeros(channels)
    squares = np.zeros(channels)
    count = 0
    for start in range(0, len(flat), 4096):
        chunk = flat[start:start + 4096].astype(np.float64) / 255.0
        chunk = chunk.reshape(-1, channels)
        total += chunk.sum(0)
        squares += (chunk * chunk).sum(0)
        count += chunk.shape[0]
    mean = total / count
    var = np.maximum(squares / count - mean * mean, 0.0)
    return tuple(float(m) for m in mean), tuple(float(s) for s in np.sqrt(var))


def _scale_uint16(a: np.ndarray) -> np.ndarray:
    """16-bit grey levels to 8 bits by the bit depth (65535 -> 255), not clipped."""
    return np.rint(a.astype(np.float64) / 257.0).astype(np.uint8)


def _to_8bit(img, where: str):
    """A PIL image as 8-bit 'L' or 'RGB', keeping what it shows.

    PIL's own `convert` clips 16-bit and 32-bit grey levels to {0, 255} and
    drops the alpha channel: 16-bit modes (I;16*, and I, which 16-bit PGMs and
    older Pillows' 16-bit PNGs open as) are scaled by the bit depth instead,
    floats (F) must be in [0, 1], and an image whose content lies only in its
    alpha channel (constant colour, varying transparency) is refused: no
    background to flatten it onto is right for every dataset, so the user picks one.
    """
    from PIL import Image

    mode = img.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        a = np.asarray(img)
        if mode == "F":
            if a.size and not (np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1):
                raise _error(f"{where}: a 32-bit float image with values {np.nanmin(a):.3g}..{np.nanmax(a):.3g}; "
                             "save it with values in [0, 1], or as an 8- or 16-bit image")
            return Image.fromarray(np.rint(a * 255.0).astype(np.uint8))
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise _error(f"{where}: a 32-bit integer image with values {a.min()}..{a.max()}; "
                         "save it as an 8- or 16-bit image")
        return Image.fromarray(_scale_uint16(a))
    if mode == "PA" or (mode == "P" and "transparency" in img.info):
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in ("LA", "La", "RGBA", "RGBa"):
        a = np.asarray(img)
        alpha, colour = a[..., -1], a[..., :-1]
        if alpha.min() != alpha.max() and colour.min() == colour.max():
            raise _error(f"{where}: the image shows its content only through transparency (one colour, "
                         "varying alpha), which is lost without the alpha channel; flatten it onto a background "
                         "first (e.g. ImageMagick: mogrify -background white -flatten FILE)", limit=1000)
    return img.convert("L") if mode in _GRAY_MODES else img.convert("RGB")


def _resize(img, size: int):
    from PIL import Image

    return img.resize((size, size), Image.BILINEAR)


def _uniform(shapes: list[tuple[tuple[int, int], str]], where: Path) -> None:
    """All (height, width) equal and square, else an error that says to set data.image_size."""
    first, first_file = shapes[0]
    for shape, file in shapes:
        if shape != first:
            raise _error(f"images in {where} have different sizes ({first[1]}x{first[0]} in {first_file}, "
                         f"{shape[1]}x{shape[0]} in {file}); set data.image_size to resize them all to one size")
    if first[0] != first[1]:
        raise _error(f"images in {where} are {first[1]}x{first[0]} (width x height), not square; "
                     "set data.image_size to resize them to a square size")


def check_labels(where: str, y_tr: np.ndarray, y_te: np.ndarray | None,
                 names: tuple[str, ...] | None) -> tuple[str, ...]:
    """The class names of integer labels 0..K-1, checked: K from `names` or from y_train,
    every label in range, at least two classes, and (without names) every class present."""
    k = len(names) if names is not None else int(y_tr.max()) + 1
    for split, y in (("train", y_tr), ("test", y_te)):
        if y is None or len(y) == 0:
            continue
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= k:
            raise _error(f"{where}: y_{split} has labels {lo}..{hi}, expected 0..{k - 1}"
                         + (" (one per class name)" if names is not None else " (the classes of y_train)"))
    if names is None:
        absent = sorted(set(range(k)) - set(np.unique(y_tr).tolist()))
        if absent:
            raise _error(f"{where}: y_train has labels 0..{k - 1} but no example of class(es) "
                         f"{', '.join(map(str, absent[:10]))}; labels must be 0..K-1 with every class present")
        names = tuple(str(i) for i in range(k))
    if len(np.unique(y_tr)) < 2:
        raise _error(f"{where}: y_train holds only one class; at least two classes are needed")
    return names


# --------------------------------------------------------------------------- .npz


def _read_npz(path: Path, image_size: int | None):
    import zipfile

    if not zipfile.is_zipfile(path):  # else numpy tries it as a pickle and talks about allow_pickle
        raise _error(f"{path} is not a .npz archive (not a zip file); {SUPPORTED_FORMATS}", limit=1000)
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as exc:  # BadZipFile, ValueError, OSError, ...
        raise _error(f"cannot read {path} as a .npz archive ({type(exc).__name__}: {exc})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise _error(f"{path} is not a .npz archive (a single array?); expected keys {', '.join(NPZ_KEYS)}")
    try:
        with archive:
            missing = [k for k in NPZ_KEYS if k not in archive.files]
            if missing:
                raise _error(f"{path} has no {', '.join(missing)} (has {', '.join(sorted(archive.files)) or 'nothing'}); "
                             f"a dataset archive needs {', '.join(NPZ_KEYS)}")
            arrays = {k: archive[k] for k in NPZ_KEYS}
            names = archive["class_names"] if "class_names" in archive.files else None
    except DataError:
        raise
    except Exception as exc:
        raise _error(f"cannot read {path} ({type(exc).__name__}: {exc})") from None
    x_tr, y_tr = _npz_split(path, arrays["x_train"], arrays["y_train"], "train", image_size)
    x_te, y_te = _npz_split(path, arrays["x_test"], arrays["y_test"], "test", image_size)
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise _error(f"{path}: x_train images are {x_tr.shape[1:]} but x_test images are {x_te.shape[1:]}")
    if names is not None:
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise _error(f"{path}: class_names must be a 1-D array of strings, got {names.dtype} {names.shape}")
        names = tuple(str(n) for n in names)
    names = check_labels(str(path), y_tr, y_te, names)
    return x_tr, y_tr, x_te, y_te, names


def _npz_split(path: Path, x: np.ndarray, y: np.ndarray, split: str, image_size: int | None):
    if x.dtype == np.uint16:
        x = _scale_uint16(x)
    if x.dtype != np.uint8:
        raise _error(f"{path}: x_{split} has dtype {x.dtype}, expected uint8 images (or uint16, scaled to 8 bits)")
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if not (x.ndim == 3 or (x.ndim == 4 and x.shape[-1] == 3)):
        raise _error(f"{path}: x_{split} has shape {tuple(x.shape)}, expected (N,H,W) or (N,H,W,3)")
    if y.dtype.kind not in "iu":
        raise _error(f"{path}: y_{split} has dtype {y.dtype}, expected integer labels (int64)")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != len(x):
        raise _error(f"{path}: y_{split} has shape {tuple(y.shape)}, expected ({len(x)},), one label per image")
    if len(x) == 0:
        raise _error(f"{path}: x_{split} is empty")
    h, w = x.shape[1:3]
    if image_size is not None and (h, w) != (image_size, image_size):
        from PIL import Image

        x = np.stack([np.asarray(_resize(Image.fromarray(im), image_size), dtype=np.uint8) for im in x])
    elif image_size is None and h != w:
        raise _error(f"{path}: x_{split} images are {w}x{h} (width x height), not square; "
                     "set data.image_size to resize them to a square size")
    return x, y.astype(np.int64)


# --------------------------------------------------------------------------- image folders


def _subfolders(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def _image_files(folder: Path) -> list[Path]:
    files = [p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
             and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def _read_image(path: Path, image_size: int | None) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            mode = img.mode
            img = _to_8bit(img, str(path))
            if image_size is not None and img.size != (image_size, image_size):
                img = _resize(img, image_size)
            array = np.asarray(img, dtype=np.uint8)
    except DataError:
        raise
    except Exception as exc:  # UnidentifiedImageError, OSError (truncated), ...
        raise _error(f"cannot read image {path} ({type(exc).__name__}: {exc})") from None
    # A palette image with only gray entries (common for GIFs of grayscale scans) stays
    # grayscale, so that it does not make a grayscale dataset colour.
    if mode == "P" and np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(array[..., 0], array[..., 2]):
        return array[..., 0].copy()
    return array


def _classes(folder: Path, where: str) -> list[Path]:
    classes = _subfolders(folder)
    if not classes:
        if _image_files(folder):
            raise _error(f"{folder} holds images but no class folders; put each class's images in "
                         f"{where}/CLASS/ (class names are the folder names)")
        raise _error(f"no class folders in {folder}; expected {where}/CLASS/*.png (or DIR/train/CLASS/... "
                     "and DIR/test/CLASS/...)")
    return classes


def _read_classes(folders: list[Path], index: dict[str, int], image_size: int | None):
    images, labels, shapes = [], [], []
    for folder in folders:
        files = _image_files(folder)
        if not files:
            raise _error(f"class folder {folder} has no images ({', '.join(IMAGE_SUFFIXES)})")
        for file in files:
            im = _read_image(file, image_size)
            images.append(im)
            labels.append(index[folder.name])
            shapes.append((im.shape[:2], str(file)))
    return images, labels, shapes


def _read_folder(path: Path, image_size: int | None, test_fraction: float):
    top = {p.name for p in _subfolders(path)}
    if "train" in top or "test" in top:
        if not {"train", "test"} <= top:
            have, lack = ("train", "test") if "train" in top else ("test", "train")
            raise _error(f"{path} has {have}/ but no {lack}/; give both {path}/train/CLASS/... and "
                         f"{path}/test/CLASS/..., or put the class folders directly in {path} to split them "
                         "by data.test_fraction")
        train_classes = _classes(path / "train", f"{path}/train")
        test_classes = _classes(path / "test", f"{path}/test")
        names = [p.name for p in train_classes]
        unknown = [p.name for p in test_classes if p.name not in names]
        if unknown:
            raise _error(f"{path}/test has class folder(s) {', '.join(unknown[:5])} that {path}/train lacks")
    else:
        train_classes = _classes(path, str(path))
        test_classes = []
        names = [p.name for p in train_classes]
    if len(names) < 2:
        raise _error(f"{path} has only one class folder ({names[0]}); at least two classes are needed")
    index = {n: i for i, n in enumerate(names)}
    images, labels, shapes = _read_classes(train_classes, index, image_size)
    test_images, test_labels, test_shapes = _read_classes(test_classes, index, image_size)
    all_images = images + test_images
    _uniform(shapes + test_shapes, path)
    channels = 3 if any(im.ndim == 3 for im in all_images) else 1
    if channels == 3:  # a colour dataset: grayscale files become three equal channels
        all_images = [np.repeat(im[..., None], 3, axis=2) if im.ndim == 2 else im for im in all_images]
    x = np.stack(all_images)
    y = np.asarray(labels + test_labels, dtype=np.int64)
    n_train = len(images)
    if test_classes:
        return x[:n_train], y[:n_train], x[n_train:], y[n_train:], tuple(names)
    train_idx, test_idx = stratified_split(y, test_fraction)
    if len(test_idx) == 0:
        raise _error(f"{path} has too few images for a test split with data.test_fraction={test_fraction}; "
                     "add images, raise the fraction, or give train/ and test/ folders")
    return x[train_idx], y[train_idx], x[test_idx], y[test_idx], tuple(names)


def stratified_split(labels: np.ndarray, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices, each sorted: round(n_c * test_fraction) of each class's n_c
    images go to test (at most n_c - 1), chosen with a fixed seed so the split is stable."""
    rng = np.random.default_rng(derive_seed(0, "userdata", "test-split"))
    test: list[int] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = min(int(len(idx) * test_fraction + 0.5), len(idx) - 1)
        test.extend(rng.permutation(idx)[:k].tolist())
    test_idx = np.asarray(sorted(test), dtype=np.int64)
    train_idx = np.setdiff1d(np.arange(len(labels)), test_idx)
    return train_idx, test_idx


# --------------------------------------------------------------------------- images of any form


def _image_array(obj, where: str, image_size: int | None) -> np.ndarray:
    """One image as uint8 (H, W) or (H, W, 3): a PIL image, or an array/tensor of shape (H, W),
    (H, W, 1|3) or (1|3, H, W), uint8 or floats in [0, 1]; resized to image_size if given."""
    from PIL import Image

    if isinstance(obj, Image.Image):
        img = _to_8bit(obj, where)
    else:
        if isinstance(obj, torch.Tensor):
            obj = obj.detach().cpu().numpy()
        a = np.asarray(obj)
        if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
            a = np.moveaxis(a, 0, -1)  # channels first (torch's ToTensor) -> last
        if a.ndim == 3 and a.shape[-1] == 1:
            a = a[..., 0]
        if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] == 3)):
            raise _error(f"{where}: an image has shape {tuple(a.shape)}; expected (H, W), (H, W, 3) or (3, H, W)")
        if a.dtype.kind == "f":
            if a.size and (np.nanmin(a) < 0 or np.nanmax(a) > 1 or np.isnan(a).any()):
                raise _error(f"{where}: float images must hold values in [0, 1] (found {np.nanmin(a):.3g}.."
                             f"{np.nanmax(a):.3g}); give uint8 images or undo the normalisation: labeldistill "
                             "normalises with the training split's mean and std itself")
            a = np.rint(a * 255.0).astype(np.uint8)
        elif a.dtype == np.bool_:
            a = a.astype(np.uint8) * 255
        elif a.dtype == np.uint16:
            a = _scale_uint16(a)
        elif a.dtype != np.uint8:
            if a.dtype.kind not in "iu" or a.min() < 0 or a.max() > 255:
                raise _error(f"{where}: images have dtype {a.dtype}; give uint8 (0..255) or floats in [0, 1]")
            a = a.astype(np.uint8)
        if image_size is None:
            return a
        img = Image.fromarray(a)
    if image_size is not None and img.size != (image_size, image_size):
        img = _resize(img, image_size)
    return np.asarray(img, dtype=np.uint8)


def _stack_images(images: list[np.ndarray], where: str) -> np.ndarray:
    """Equal square images as one uint8 array; grayscale ones become colour if any is colour."""
    if not images:
        raise _error(f"{where} holds no images")
    _uniform([(im.shape[:2], f"image {i}") for i, im in enumerate(images)], Path(where))
    if any(im.ndim == 3 for im in images):
        images = [np.repeat(im[..., None], 3, axis=2) if im.ndim == 2 else im for im in images]
    return np.stack(images)


def _label_array(y, where: str, split: str) -> np.ndarray:
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    y = np.array(y, copy=True)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise _error(f"{where}: {split} labels have dtype {y.dtype} and shape {tuple(y.shape)}; expected one "
                     "integer class index (0..K-1) per image")
    return y.astype(np.int64)


def _finish(where: str, x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray | None, y_te: np.ndarray | None,
            names: tuple[str, ...] | None, test_fraction: float):
    """Checked labels and class names; without a test split, the stratified test_fraction split."""
    if len(x_tr) != len(y_tr):
        raise _error(f"{where}: {len(x_tr)} training images but {len(y_tr)} labels")
    if x_te is not None and len(x_te) != len(y_te):
        raise _error(f"{where}: {len(x_te)} test images but {len(y_te)} labels")
    names = check_labels(where, y_tr, y_te, names)
    if x_te is not None:
        if x_tr.shape[1:] != x_te.shape[1:]:
            raise _error(f"{where}: training images are {x_tr.shape[1:]} but test images are {x_te.shape[1:]}; "
                         "set image_size to bring both to one size")
        return x_tr, y_tr, x_te, y_te, names
    train_idx, test_idx = stratified_split(y_tr, test_fraction)
    if len(test_idx) == 0:
        raise _error(f"{where} has too few images for a test split with test_fraction={test_fraction}; "
                     "add images, raise the fraction, or give a test split")
    return x_tr[train_idx], y_tr[train_idx], x_tr[test_idx], y_tr[test_idx], names


# --------------------------------------------------------------------------- Hugging Face datasets


def is_hf_folder(path: Path) -> bool:
    """A folder written by `datasets`' `save_to_disk` (a Dataset or a DatasetDict)."""
    return (path / "dataset_dict.json").is_file() or (
        (path / "state.json").is_file() and (path / "dataset_info.json").is_file())


def _hf_column(ds, given: str | None, kind: str, feature_type, candidates: tuple[str, ...], where: str,
               key: str) -> str:
    columns = list(ds.column_names)
    if given is not None:
        if given not in columns:
            raise _error(f"{where} has no column '{given}' (data.{key}); its columns: {', '.join(columns)}")
        return given
    typed = [c for c, f in ds.features.items() if isinstance(f, feature_type)]
    if typed:
        return typed[0]
    for c in candidates:
        if c in columns:
            return c
    raise _error(f"cannot tell which column of {where} holds the {kind} (columns: {', '.join(columns)}); "
                 f"set data.{key}")


def _read_hf(path: Path, image_size: int | None, test_fraction: float, image_column: str | None,
             label_column: str | None):
    try:
        import datasets
    except ImportError:
        raise _error(f"{path} is a Hugging Face dataset (saved with save_to_disk); reading it needs the "
                     "`datasets` library: pip install 'labeldistill[hf]'") from None
    try:
        obj = datasets.load_from_disk(str(path))
    except Exception as exc:
        raise _error(f"cannot read the Hugging Face dataset {path} ({type(exc).__name__}: {exc})") from None
    if isinstance(obj, datasets.DatasetDict):
        if "train" not in obj:
            raise _error(f"{path} has the splits {', '.join(obj)} but no 'train'; name the training split 'train' "
                         "(and the test split 'test', else a test_fraction of train is held out)")
        train, test = obj["train"], obj.get("test")
    else:
        train, test = obj, None
    where = str(path)
    img = _hf_column(train, image_column, "images", datasets.Image, HF_IMAGE_COLUMNS, where, "image_column")
    lab = _hf_column(train, label_column, "labels", datasets.ClassLabel, HF_LABEL_COLUMNS, where, "label_column")
    feature = train.features[lab]
    names = tuple(str(n) for n in feature.names) if isinstance(feature, datasets.ClassLabel) else None

    def read(split, name):
        if split is None:
            return None, None
        for col in (img, lab):
            if col not in split.column_names:
                raise _error(f"{where}: the {name} split has no column '{col}'")
        images = []
        for batch in split.select_columns([img]).iter(batch_size=1024):
            images.extend(_image_array(im, where, image_size) for im in batch[img])
        return _stack_images(images, f"{where} ({name})"), _label_array(split[lab], where, name)

    x_tr, y_tr = read(train, "train")
    x_te, y_te = read(test, "test")
    x_tr, x_te = _same_channels(x_tr, x_te)
    return _finish(where, x_tr, y_tr, x_te, y_te, names, test_fraction)


def _same_channels(x_tr: np.ndarray, x_te: np.ndarray | None):
    """Grayscale and colour splits: both colour (grayscale becomes three equal channels)."""
    if x_te is not None and x_te.ndim != x_tr.ndim:
        x_tr, x_te = (np.repeat(a[..., None], 3, axis=3) if a.ndim == 3 else a for a in (x_tr, x_te))
    return x_tr, x_te


# --------------------------------------------------------------------------- in-memory datasets (Python API)

_MEMORY: dict[str, tuple[DatasetInfo, RawData]] = {}


def is_memory_name(name: object) -> bool:
    return isinstance(name, str) and name.startswith(MEMORY_PREFIX)


def memory_dataset(name: str) -> tuple[DatasetInfo, RawData]:
    try:
        return _MEMORY[name]
    except KeyError:
        raise _error(f"no in-memory dataset '{name}' in this process; create it with labeldistill.from_arrays(...) "
                     "or labeldistill.from_torch(...) first (they live in one Python process: sweeps with worker "
                     "processes need a .npz file or an image folder)") from None


def _register(name: str | None, x_tr, y_tr, x_te, y_te, names, test_fraction: float, role: str = "data") -> str:
    """Check, split and store arrays as ``memory:NAME``; without a name, ``memory:ROLE-HASH``
    after their content (images, labels and class names of both splits)."""
    if name is not None and (not isinstance(name, str) or not name or any(ch in name for ch in "/\\:")):
        raise _error(f"a dataset name must be a non-empty string without '/', '\\\\' or ':', got {name!r}")
    x_tr, y_tr, x_te, y_te, names = _finish(MEMORY_PREFIX + (name or role), x_tr, y_tr, x_te, y_te, names,
                                            test_fraction)
    if name is None:  # named after its content: other data never shares a run folder with it
        name = f"{role}-{_fingerprint(x_tr, y_tr, x_te, y_te, names)}"
    key = MEMORY_PREFIX + name
    info = _info(key, "in-memory dataset", Path(name), x_tr, y_tr, x_te, names)
    raw = RawData(name=key, x_train=torch.from_numpy(np.ascontiguousarray(x_tr)), y_train=torch.from_numpy(y_tr),
                  x_test=torch.from_numpy(np.ascontiguousarray(x_te)), y_test=torch.from_numpy(y_te), origin=key)
    _MEMORY[key] = (info, raw)
    return key


def _fingerprint(x_tr, y_tr, x_te, y_te, names: tuple[str, ...]) -> str:
    """Eight hex digits of a SHA-1 over a dataset's images, labels and class names."""
    import hashlib

    h = hashlib.sha1()
    for a in (x_tr, y_tr, x_te, y_te):
        h.update(np.ascontiguousarray(a).tobytes())
        h.update(str(tuple(a.shape)).encode())
    h.update("\0".join(names).encode())
    return h.hexdigest()[:8]


def _names(class_names) -> tuple[str, ...] | None:
    return None if class_names is None else tuple(str(n) for n in class_names)


def _images_of(x, where: str, image_size: int | None) -> np.ndarray:
    """A batch of images (N, H, W), (N, H, W, 1|3) or (N, 1|3, H, W), uint8 or floats in [0, 1]."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim not in (3, 4):
        raise _error(f"{where}: images have shape {tuple(x.shape)}; expected (N, H, W), (N, H, W, C) or (N, C, H, W)")
    if x.ndim == 4 and x.shape[1] in (1, 3) and x.shape[-1] not in (1, 3):
        x = np.moveaxis(x, 1, -1)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.dtype == np.uint8 and image_size is None and (x.ndim == 3 or x.shape[-1] == 3):
        if x.shape[1] != x.shape[2]:
            raise _error(f"{where}: images are {x.shape[2]}x{x.shape[1]} (width x height), not square; "
                         "pass image_size to resize them")
        return np.array(x, copy=True)  # the dataset must not change when the caller's array does
    return _stack_images([_image_array(im, where, image_size) for im in x], where)


def _arrays(x_train, y_train, x_test, y_test, where: str, image_size: int | None):
    """(x_train, y_train, x_test, y_test) as checked NumPy arrays of one channel count."""
    if (x_test is None) != (y_test is None):
        raise _error(f"{where}: give both x_test and y_test, or neither")
    x_tr = _images_of(x_train, where, image_size)
    y_tr = _label_array(y_train, where, "train")
    x_te = None if x_test is None else _images_of(x_test, where, image_size)
    y_te = None if y_test is None else _label_array(y_test, where, "test")
    x_tr, x_te = _same_channels(x_tr, x_te)
    return x_tr, y_tr, x_te, y_te


def from_arrays(x_train, y_train, x_test=None, y_test=None, *, name: str = "arrays", class_names=None,
                image_size: int | None = None, test_fraction: float = DEFAULT_TEST_FRACTION) -> str:
    """Register images and labels held in memory as a dataset; returns its name (``memory:NAME``),
    usable wherever a dataset name is (data.source, data.target, :func:`labeldistill.distill`).

    Images are NumPy arrays or tensors of shape (N, H, W), (N, H, W, C) or (N, C, H, W) with
    C = 1 or 3, uint8, uint16 (scaled to 8 bits) or floats in [0, 1]; labels integers 0..K-1. Without a test split,
    `test_fraction` of each class is held out (a fixed seed). `class_names` default to "0".."K-1".
    """
    arrays = _arrays(x_train, y_train, x_test, y_test, MEMORY_PREFIX + str(name), image_size)
    return _register(str(name), *arrays, _names(class_names), test_fraction)


def _dataset_items(ds, where: str, image_size: int | None) -> tuple[np.ndarray, np.ndarray]:
    try:
        n = len(ds)
    except TypeError:
        raise _error(f"{where}: a torch Dataset with a length is needed (map-style, not iterable)") from None
    images, labels = [], []
    for i in range(n):
        item = ds[i]
        if not (isinstance(item, (tuple, list)) and len(item) >= 2):
            raise _error(f"{where}: item {i} is a {type(item).__name__}; expected (image, label) pairs")
        images.append(_image_array(item[0], where, image_size))
        label = item[1]
        if isinstance(label, torch.Tensor):
            label = label.detach().cpu().numpy()
        label = np.asarray(label)
        if label.size != 1:
            raise _error(f"{where}: item {i} has a label of shape {tuple(label.shape)}; expected one integer class "
                         "index (0..K-1), not a one-hot or soft label")
        labels.append(label.reshape(()))
    return _stack_images(images, where), _label_array(np.stack(labels), where, "train")


def _torch_arrays(train, test, where: str, image_size: int | None):
    """A (train, test) pair of map-style Datasets as checked arrays of one channel count."""
    x_tr, y_tr = _dataset_items(train, where, image_size)
    x_te, y_te = (None, None) if test is None else _dataset_items(test, where, image_size)
    x_tr, x_te = _same_channels(x_tr, x_te)
    return x_tr, y_tr, x_te, y_te


def from_torch(train, test=None, *, name: str = "torch", class_names=None, image_size: int | None = None,
               test_fraction: float = DEFAULT_TEST_FRACTION) -> str:
    """Register a map-style `torch.utils.data.Dataset` of (image, label) pairs (and a test one)
    as a dataset; returns its name (``memory:NAME``). Images are PIL images, or arrays/tensors
    as in :func:`from_arrays` (``transforms.ToTensor()`` output included, without
    normalisation). Class names come from `class_names`, else the dataset's ``classes``."""
    arrays = _torch_arrays(train, test, MEMORY_PREFIX + str(name), image_size)
    if class_names is None:
        class_names = getattr(train, "classes", None)
    return _register(str(name), *arrays, _names(class_names), test_fraction)


def as_dataset_name(data, *, name: str | None = None, role: str = "data", image_size: int | None = None,
                    test_fraction: float = DEFAULT_TEST_FRACTION) -> str:
    """A dataset name for what :func:`labeldistill.distill` was given: a name or path (kept), a
    torch Dataset, a (train, test) pair of Datasets, or arrays (x, y) / (x_train, y_train, x_test, y_test).
    Data held in memory is registered as ``memory:NAME``, without `name` as ``memory:ROLE-HASH``."""
    if isinstance(data, (str, os.PathLike)):
        return os.fspath(data)
    from torch.utils.data import Dataset

    where = MEMORY_PREFIX + (name or role)
    if isinstance(data, Dataset):
        arrays, names = _torch_arrays(data, None, where, image_size), getattr(data, "classes", None)
    elif isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(d, Dataset) for d in data):
        arrays, names = _torch_arrays(data[0], data[1], where, image_size), getattr(data[0], "classes", None)
    elif isinstance(data, (tuple, list)) and len(data) in (2, 4):
        arrays, names = _arrays(*data, *(None,) * (4 - len(data)), where, image_size), None
    else:
        raise _error(f"cannot use a {type(data).__name__} as a dataset; give a dataset name, a path (.npz, image "
                     "folder or a Hugging Face save_to_disk folder), a torch Dataset, a (train, test) pair of "
                     "Datasets, or arrays (x, y) or (x_train, y_train, x_test, y_test)")
    return _register(name, *arrays, _names(names), test_fraction, role=role)
