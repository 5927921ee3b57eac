"""A folder of class folders: ``DIR/train/CLASS/*.png`` with ``DIR/test/CLASS/...``, or just
``DIR/CLASS/*.png``, which is split into train and test by a stratified ``test_fraction``
with a fixed seed (the split never depends on the run's seed, so every run of the folder
sees the same test set).  Class names are the folder names."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DataError
from .arrays import IMAGE_SUFFIXES, check_uniform, data_error, resize, stratified_split, to_8bit

__all__ = ["is_image_folder", "read_folder"]


def is_image_folder(path: Path) -> bool:
    return path.is_dir()


def _subfolders(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def _image_files(folder: Path) -> list[Path]:
    files = [p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
             and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def _read_image(path: Path, image_size: int | None) -> np.ndarray:
    try:
        with Image.open(path) as img:
            mode = img.mode
            img = to_8bit(img, str(path))
            if image_size is not None and img.size != (image_size, image_size):
                img = resize(img, image_size)
            array = np.asarray(img, dtype=np.uint8)
    except DataError:
        raise
    except Exception as exc:  # UnidentifiedImageError, OSError (truncated), ...
        raise data_error(f"cannot read image {path} ({type(exc).__name__}: {exc})") from None
    # A palette image with only gray entries (common for GIFs of grayscale scans) stays
    # grayscale, so that it does not make a grayscale dataset colour.
    if mode == "P" and np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(array[..., 0], array[..., 2]):
        return array[..., 0].copy()
    return array


def _classes(folder: Path, where: str) -> list[Path]:
    classes = _subfolders(folder)
    if not classes:
        if _image_files(folder):
            raise data_error(f"{folder} holds images but no class folders; put each class's images in "
                             f"{where}/CLASS/ (class names are the folder names)")
        raise data_error(f"no class folders in {folder}; expected {where}/CLASS/*.png (or DIR/train/CLASS/... "
                         "and DIR/test/CLASS/...)")
    return classes


def _read_classes(folders: list[Path], index: dict[str, int], image_size: int | None):
    images, labels, shapes = [], [], []
    for folder in folders:
        files = _image_files(folder)
        if not files:
            raise data_error(f"class folder {folder} has no images ({', '.join(IMAGE_SUFFIXES)})")
        for file in files:
            im = _read_image(file, image_size)
            images.append(im)
            labels.append(index[folder.name])
            shapes.append((im.shape[:2], str(file)))
    return images, labels, shapes


def read_folder(path: Path, image_size: int | None, test_fraction: float):
    top = {p.name for p in _subfolders(path)}
    if "train" in top or "test" in top:
        if not {"train", "test"} <= top:
            have, lack = ("train", "test") if "train" in top else ("test", "train")
            raise data_error(f"{path} has {have}/ but no {lack}/; give both {path}/train/CLASS/... and "
                             f"{path}/test/CLASS/..., or put the class folders directly in {path} to split them "
                             "by data.test_fraction")
        train_classes = _classes(path / "train", f"{path}/train")
        test_classes = _classes(path / "test", f"{path}/test")
        names = [p.name for p in train_classes]
        unknown = [p.name for p in test_classes if p.name not in names]
        if unknown:
            raise data_error(f"{path}/test has class folder(s) {', '.join(unknown[:5])} that {path}/train lacks")
    else:
        train_classes = _classes(path, str(path))
        test_classes = []
        names = [p.name for p in train_classes]
    if len(names) < 2:
        raise data_error(f"{path} has only one class folder ({names[0]}); at least two classes are needed")
    index = {n: i for i, n in enumerate(names)}
    images, labels, shapes = _read_classes(train_classes, index, image_size)
    test_images, test_labels, test_shapes = _read_classes(test_classes, index, image_size)
    all_images = images + test_images
    check_uniform(shapes + test_shapes, path)
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
        raise data_error(f"{path} has too few images for a test split with data.test_fraction={test_fraction}; "
                         "add images, raise the fraction, or give train/ and test/ folders")
    return x[train_idx], y[train_idx], x[test_idx], y[test_idx], tuple(names)

