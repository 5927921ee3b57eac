"""Checks and conversions shared by every source of the user's own data (files, folders,
Hugging Face folders, memory): images of any form to uint8 arrays, labels and class
names, the fixed stratified test split, and the :class:`DatasetInfo` read from the data.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import DataError
from ..seeding import derive_seed
from .base import DatasetInfo, one_line

__all__ = ["DEFAULT_TEST_FRACTION", "IMAGE_SUFFIXES", "VAL_FRACTION", "SUPPORTED_FORMATS", "data_error",
           "info_from_arrays", "mean_std", "scale_uint16", "to_8bit", "resize", "check_uniform", "check_labels",
           "stratified_split", "image_array", "stack_images", "label_array", "same_channels", "finish_splits"]

DEFAULT_TEST_FRACTION = 0.2
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
# Like the MNIST-family targets: one sixth of the training split is validation.
VAL_FRACTION = 1 / 6
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "F")
SUPPORTED_FORMATS = ("give a registered dataset name (labeldistill datasets), a .npz file with x_train, y_train, "
                     "x_test, y_test, a folder of class folders of images, a Hugging Face dataset folder "
                     "(save_to_disk), or memory:NAME from labeldistill.from_arrays")


def data_error(text: str, limit: int = 400) -> DataError:
    return DataError(one_line(text, limit))


def info_from_arrays(name: str, kind: str, path: Path, x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray,
          names: tuple[str, ...]) -> DatasetInfo:
    channels = 1 if x_tr.ndim == 3 else 3
    size = x_tr.shape[1]
    mean, std = mean_std(x_tr)
    if min(std) == 0:
        raise data_error(f"the training images of {path} are all one constant colour (std 0); "
                         "they cannot be normalised")
    return DatasetInfo(
        name=name, num_classes=len(names), channels=channels, image_size=size, mean=mean, std=std,
        val_fraction=VAL_FRACTION, stats_gap=None, source_only=False, class_names=names,
        description=f"{kind} {path}: {len(x_tr)} train / {len(x_te)} test, {size}x{size}, "
                    f"{'grayscale' if channels == 1 else 'colour'}, {len(names)} classes")


def mean_std(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
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


def scale_uint16(a: np.ndarray) -> np.ndarray:
    """16-bit grey levels to 8 bits by the bit depth (65535 -> 255), not clipped."""
    return np.rint(a.astype(np.float64) / 257.0).astype(np.uint8)


def to_8bit(img, where: str):
    """A PIL image as 8-bit 'L' or 'RGB', keeping what it shows.

    PIL's own `convert` clips 16-bit and 32-bit grey levels to {0, 255} and
    drops the alpha channel: 16-bit modes (I;16*, and I, which 16-bit PGMs and
    older Pillows' 16-bit PNGs open as) are scaled by the bit depth instead,
    floats (F) must be in [0, 1], and an image whose content lies only in its
    alpha channel (constant colour, varying transparency) is refused: no
    background to flatten it onto is right for every dataset, so the user picks one.
    """
    mode = img.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        a = np.asarray(img)
        if mode == "F":
            if a.size and not (np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1):
                raise data_error(f"{where}: a 32-bit float image with values {np.nanmin(a):.3g}..{np.nanmax(a):.3g}; "
                                 "save it with values in [0, 1], or as an 8- or 16-bit image")
            return Image.fromarray(np.rint(a * 255.0).astype(np.uint8))
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise data_error(f"{where}: a 32-bit integer image with values {a.min()}..{a.max()}; "
                             "save it as an 8- or 16-bit image")
        return Image.fromarray(scale_uint16(a))
    if mode == "PA" or (mode == "P" and "transparency" in img.info):
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in ("LA", "La", "RGBA", "RGBa"):
        a = np.asarray(img)
        alpha, colour = a[..., -1], a[..., :-1]
        if alpha.min() != alpha.max() and colour.min() == colour.max():
            raise data_error(f"{where}: the image shows its content only through transparency (one colour, "
                             "varying alpha), which is lost without the alpha channel; flatten it onto a background "
                             "first (e.g. ImageMagick: mogrify -background white -flatten FILE)", limit=1000)
    return img.convert("L") if mode in _GRAY_MODES else img.convert("RGB")


def resize(img, size: int):
    return img.resize((size, size), Image.BILINEAR)


def check_uniform(shapes: list[tuple[tuple[int, int], str]], where: Path) -> None:
    """All (height, width) equal and square, else an error that says to set data.image_size."""
    first, first_file = shapes[0]
    for shape, file in shapes:
        if shape != first:
            raise data_error(f"images in {where} have different sizes ({first[1]}x{first[0]} in {first_file}, "
                             f"{shape[1]}x{shape[0]} in {file}); set data.image_size to resize them all to one size")
    if first[0] != first[1]:
        raise data_error(f"images in {where} are {first[1]}x{first[0]} (width x height), not square; "
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
            raise data_error(f"{where}: y_{split} has labels {lo}..{hi}, expected 0..{k - 1}"
                         + (" (one per class name)" if names is not None else " (the classes of y_train)"))
    if names is None:
        absent = sorted(set(range(k)) - set(np.unique(y_tr).tolist()))
        if absent:
            raise data_error(f"{where}: y_train has labels 0..{k - 1} but no example of class(es) "
                             f"{', '.join(map(str, absent[:10]))}; labels must be 0..K-1 with every class present")
        names = tuple(str(i) for i in range(k))
    if len(np.unique(y_tr)) < 2:
        raise data_error(f"{where}: y_train holds only one class; at least two classes are needed")
    return names



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


def image_array(obj, where: str, image_size: int | None) -> np.ndarray:
    """One image as uint8 (H, W) or (H, W, 3): a PIL image, or an array/tensor of shape (H, W),
    (H, W, 1|3) or (1|3, H, W), uint8 or floats in [0, 1]; resized to image_size if given."""
    if isinstance(obj, Image.Image):
        img = to_8bit(obj, where)
    else:
        if isinstance(obj, torch.Tensor):
            obj = obj.detach().cpu().numpy()
        a = np.asarray(obj)
        if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
            a = np.moveaxis(a, 0, -1)  # channels first (torch's ToTensor) -> last
        if a.ndim == 3 and a.shape[-1] == 1:
            a = a[..., 0]
        if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] == 3)):
            raise data_error(f"{where}: an image has shape {tuple(a.shape)}; expected (H, W), (H, W, 3) or (3, H, W)")
        if a.dtype.kind == "f":
            if a.size and (np.nanmin(a) < 0 or np.nanmax(a) > 1 or np.isnan(a).any()):
                raise data_error(f"{where}: float images must hold values in [0, 1] (found {np.nanmin(a):.3g}.."
                                 f"{np.nanmax(a):.3g}); give uint8 images or undo the normalisation: labeldistill "
                                 "normalises with the training split's mean and std itself")
            a = np.rint(a * 255.0).astype(np.uint8)
        elif a.dtype == np.bool_:
            a = a.astype(np.uint8) * 255
        elif a.dtype == np.uint16:
            a = scale_uint16(a)
        elif a.dtype != np.uint8:
            if a.dtype.kind not in "iu" or a.min() < 0 or a.max() > 255:
                raise data_error(f"{where}: images have dtype {a.dtype}; give uint8 (0..255) or floats in [0, 1]")
            a = a.astype(np.uint8)
        if image_size is None:
            return a
        img = Image.fromarray(a)
    if image_size is not None and img.size != (image_size, image_size):
        img = resize(img, image_size)
    return np.asarray(img, dtype=np.uint8)


def stack_images(images: list[np.ndarray], where: str) -> np.ndarray:
    """Equal square images as one uint8 array; grayscale ones become colour if any is colour."""
    if not images:
        raise data_error(f"{where} holds no images")
    check_uniform([(im.shape[:2], f"image {i}") for i, im in enumerate(images)], Path(where))
    if any(im.ndim == 3 for im in images):
        images = [np.repeat(im[..., None], 3, axis=2) if im.ndim == 2 else im for im in images]
    return np.stack(images)


def label_array(y, where: str, split: str) -> np.ndarray:
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    y = np.array(y, copy=True)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise data_error(f"{where}: {split} labels have dtype {y.dtype} and shape {tuple(y.shape)}; expected one "
                         "integer class index (0..K-1) per image")
    return y.astype(np.int64)


def finish_splits(where: str, x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray | None, y_te: np.ndarray | None,
            names: tuple[str, ...] | None, test_fraction: float):
    """Checked labels and class names; without a test split, the stratified test_fraction split."""
    if len(x_tr) != len(y_tr):
        raise data_error(f"{where}: {len(x_tr)} training images but {len(y_tr)} labels")
    if x_te is not None and len(x_te) != len(y_te):
        raise data_error(f"{where}: {len(x_te)} test images but {len(y_te)} labels")
    names = check_labels(where, y_tr, y_te, names)
    if x_te is not None:
        if x_tr.shape[1:] != x_te.shape[1:]:
            raise data_error(f"{where}: training images are {x_tr.shape[1:]} but test images are {x_te.shape[1:]}; "
                             "set image_size to bring both to one size")
        return x_tr, y_tr, x_te, y_te, names
    train_idx, test_idx = stratified_split(y_tr, test_fraction)
    if len(test_idx) == 0:
        raise data_error(f"{where} has too few images for a test split with test_fraction={test_fraction}; "
                         "add images, raise the fraction, or give a test split")
    return x_tr[train_idx], y_tr[train_idx], x_tr[test_idx], y_tr[test_idx], names



def same_channels(x_tr: np.ndarray, x_te: np.ndarray | None):
    """Grayscale and colour splits: both colour (grayscale becomes three equal channels)."""
    if x_te is not None and x_te.ndim != x_tr.ndim:
        x_tr, x_te = (np.repeat(a[..., None], 3, axis=3) if a.ndim == 3 else a for a in (x_tr, x_te))
    return x_tr, x_te


