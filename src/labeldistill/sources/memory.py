"""Datasets held in memory (the Python API): :func:`from_arrays` (arrays or tensors) and
:func:`from_torch` (a map-style ``torch.utils.data.Dataset``) register a dataset under the
name ``memory:NAME`` for this process; :class:`MemorySource` reads it back."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .arrays import (DEFAULT_TEST_FRACTION, data_error, finish_splits, image_array, info_from_arrays, label_array,
                     same_channels, stack_images)
from .base import DatasetInfo, RawData

__all__ = ["MEMORY_PREFIX", "MemorySource", "is_memory_name", "memory_names", "from_arrays", "from_torch",
           "as_dataset_name"]

MEMORY_PREFIX = "memory:"

_MEMORY: dict[str, tuple[DatasetInfo, RawData]] = {}


def is_memory_name(name: object) -> bool:
    return isinstance(name, str) and name.startswith(MEMORY_PREFIX)


def memory_names() -> frozenset[str]:
    """The ``memory:NAME`` datasets registered in this process."""
    return frozenset(_MEMORY)


@dataclass(frozen=True)
class MemorySource:
    """A dataset registered by :func:`from_arrays` / :func:`from_torch` in this process."""

    name: str
    image_size: int | None = None

    def _entry(self) -> tuple[DatasetInfo, RawData]:
        try:
            info, raw = _MEMORY[self.name]
        except KeyError:
            raise data_error(f"no in-memory dataset '{self.name}' in this process; create it with "
                             "labeldistill.from_arrays(...) or labeldistill.from_torch(...) first (they live in one "
                             "Python process: sweeps with worker processes need a .npz file or an image folder)"
                             ) from None
        if self.image_size is not None and self.image_size != info.image_size:
            raise data_error(f"in-memory dataset '{self.name}' holds {info.image_size}x{info.image_size} images, "
                             f"not {self.image_size}x{self.image_size}; pass image_size={self.image_size} to "
                             "from_arrays / from_torch instead")
        return info, raw

    def info(self) -> DatasetInfo:
        return self._entry()[0]

    def load(self) -> RawData:
        return self._entry()[1]


def _register(name: str | None, x_tr, y_tr, x_te, y_te, names, test_fraction: float, role: str = "data") -> str:
    """Check, split and store arrays as ``memory:NAME``; without a name, ``memory:ROLE-HASH``
    after their content (images, labels and class names of both splits)."""
    if name is not None and (not isinstance(name, str) or not name or any(ch in name for ch in "/\\:")):
        raise data_error(f"a dataset name must be a non-empty string without '/', '\\\\' or ':', got {name!r}")
    x_tr, y_tr, x_te, y_te, names = finish_splits(MEMORY_PREFIX + (name or role), x_tr, y_tr, x_te, y_te, names,
                                            test_fraction)
    if name is None:  # named after its content: other data never shares a run folder with it
        name = f"{role}-{_fingerprint(x_tr, y_tr, x_te, y_te, names)}"
    key = MEMORY_PREFIX + name
    info = info_from_arrays(key, "in-memory dataset", Path(name), x_tr, y_tr, x_te, names)
    raw = RawData(name=key, x_train=torch.from_numpy(np.ascontiguousarray(x_tr)), y_train=torch.from_numpy(y_tr),
                  x_test=torch.from_numpy(np.ascontiguousarray(x_te)), y_test=torch.from_numpy(y_te), origin=key)
    _MEMORY[key] = (info, raw)
    return key


def _fingerprint(x_tr, y_tr, x_te, y_te, names: tuple[str, ...]) -> str:
    """Eight hex digits of a SHA-1 over a dataset's images, labels and class names."""
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
        raise data_error(f"{where}: images have shape {tuple(x.shape)}; "
                         "expected (N, H, W), (N, H, W, C) or (N, C, H, W)")
    if x.ndim == 4 and x.shape[1] in (1, 3) and x.shape[-1] not in (1, 3):
        x = np.moveaxis(x, 1, -1)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.dtype == np.uint8 and image_size is None and (x.ndim == 3 or x.shape[-1] == 3):
        if x.shape[1] != x.shape[2]:
            raise data_error(f"{where}: images are {x.shape[2]}x{x.shape[1]} (width x height), not square; "
                             "pass image_size to resize them")
        return np.array(x, copy=True)  # the dataset must not change when the caller's array does
    return stack_images([image_array(im, where, image_size) for im in x], where)


def _arrays(x_train, y_train, x_test, y_test, where: str, image_size: int | None):
    """(x_train, y_train, x_test, y_test) as checked NumPy arrays of one channel count."""
    if (x_test is None) != (y_test is None):
        raise data_error(f"{where}: give both x_test and y_test, or neither")
    x_tr = _images_of(x_train, where, image_size)
    y_tr = label_array(y_train, where, "train")
    x_te = None if x_test is None else _images_of(x_test, where, image_size)
    y_te = None if y_test is None else label_array(y_test, where, "test")
    x_tr, x_te = same_channels(x_tr, x_te)
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
        raise data_error(f"{where}: a torch Dataset with a length is needed (map-style, not iterable)") from None
    images, labels = [], []
    for i in range(n):
        item = ds[i]
        if not (isinstance(item, (tuple, list)) and len(item) >= 2):
            raise data_error(f"{where}: item {i} is a {type(item).__name__}; expected (image, label) pairs")
        images.append(image_array(item[0], where, image_size))
        label = item[1]
        if isinstance(label, torch.Tensor):
            label = label.detach().cpu().numpy()
        label = np.asarray(label)
        if label.size != 1:
            raise data_error(f"{where}: item {i} has a label of shape {tuple(label.shape)}; expected one integer class "
                             "index (0..K-1), not a one-hot or soft label")
        labels.append(label.reshape(()))
    return stack_images(images, where), label_array(np.stack(labels), where, "train")


def _torch_arrays(train, test, where: str, image_size: int | None):
    """A (train, test) pair of map-style Datasets as checked arrays of one channel count."""
    x_tr, y_tr = _dataset_items(train, where, image_size)
    x_te, y_te = (None, None) if test is None else _dataset_items(test, where, image_size)
    x_tr, x_te = same_channels(x_tr, x_te)
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
    where = MEMORY_PREFIX + (name or role)
    if isinstance(data, Dataset):
        arrays, names = _torch_arrays(data, None, where, image_size), getattr(data, "classes", None)
    elif isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(d, Dataset) for d in data):
        arrays, names = _torch_arrays(data[0], data[1], where, image_size), getattr(data[0], "classes", None)
    elif isinstance(data, (tuple, list)) and len(data) in (2, 4):
        arrays, names = _arrays(*data, *(None,) * (4 - len(data)), where, image_size), None
    else:
        raise data_error(f"cannot use a {type(data).__name__} as a dataset; give a dataset name, a path (.npz, image "
                         "folder or a Hugging Face save_to_disk folder), a torch Dataset, a (train, test) pair of "
                         "Datasets, or arrays (x, y) or (x_train, y_train, x_test, y_test)")
    return _register(name, *arrays, _names(names), test_fraction, role=role)
