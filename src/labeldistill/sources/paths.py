"""Datasets of the user's own read from a path, one :class:`PathFormat` per kind of file or
folder (:data:`PATH_FORMATS`: a ``.npz`` file, a Hugging Face ``save_to_disk`` folder, a
folder of class folders), each producing the same :class:`RawData` as the registry's
loaders plus a :class:`DatasetInfo` read from the data: image size, channels, classes,
and the per-channel mean and std of the training split.  Splits, preprocessing and base
selection then happen exactly as for registered datasets.

A new format is one entry of :data:`PATH_FORMATS` (the tests cover every entry).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .arrays import DEFAULT_TEST_FRACTION, SUPPORTED_FORMATS, data_error, info_from_arrays
from .base import LOCK, DatasetInfo, RawData
from .folders import is_image_folder, read_folder
from .huggingface import is_hf_folder, read_hf
from .memory import MEMORY_PREFIX, is_memory_name
from .npzfile import is_npz_file, read_npz
from .registry import DATASETS

__all__ = ["ReadOptions", "PathFormat", "PATH_FORMATS", "PathSource", "path_source", "is_path_name", "short_name",
           "clear_cache"]


@dataclass(frozen=True)
class ReadOptions:
    """How to read a user's dataset (data.image_size, data.test_fraction, data.image_column / label_column)."""

    image_size: int | None = None
    test_fraction: float = DEFAULT_TEST_FRACTION
    image_column: str | None = None
    label_column: str | None = None


Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]


@dataclass(frozen=True)
class PathFormat:
    """One kind of dataset path: which paths it claims, how to read one, which options matter."""

    kind: str                                   # in the dataset's description, e.g. "image folder"
    claims: Callable[[Path], bool]              # tried in PATH_FORMATS order on the resolved path
    read: Callable[[Path, ReadOptions], Arrays]
    # options that change what is read (the rest would only split the cache)
    splits: bool = False                        # test_fraction: the format may lack a test split
    columns: bool = False                       # image_column / label_column

    def cache_key(self, path: Path, options: ReadOptions) -> tuple:
        return (self.kind, str(path), options.image_size,
                float(options.test_fraction) if self.splits else None,
                (options.image_column, options.label_column) if self.columns else None)


PATH_FORMATS: tuple[PathFormat, ...] = (
    PathFormat("NumPy archive", is_npz_file, lambda p, o: read_npz(p, o.image_size)),
    PathFormat("Hugging Face dataset", lambda p: p.is_dir() and is_hf_folder(p),
               lambda p, o: read_hf(p, o.image_size, o.test_fraction, o.image_column, o.label_column),
               splits=True, columns=True),
    PathFormat("image folder", is_image_folder, lambda p, o: read_folder(p, o.image_size, o.test_fraction),
               splits=True),
)


def is_path_name(name: object) -> bool:
    """Whether a dataset name means data of the user's own: an in-memory dataset
    (``memory:NAME``, see :func:`~labeldistill.sources.memory.from_arrays`), or a path: not
    registered, and a .npz name, a name with a path separator, or an existing folder."""
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


_CACHE: dict[tuple, tuple[DatasetInfo, RawData]] = {}


def clear_cache() -> None:
    """Forget the datasets read from paths (in-memory datasets stay: they exist nowhere else)."""
    with LOCK:
        _CACHE.clear()


@dataclass(frozen=True)
class PathSource:
    """The dataset at a path, read once per resolved path and options (:func:`path_source`)."""

    name: str           # as the user spelled it: the dataset's name in infos and results
    path: Path          # resolved
    format: PathFormat
    options: ReadOptions

    def _read(self) -> tuple[DatasetInfo, RawData]:
        key = self.format.cache_key(self.path, self.options)
        with LOCK:
            cached = _CACHE.get(key)
            if cached is None:
                x_tr, y_tr, x_te, y_te, names = self.format.read(self.path, self.options)
                info = info_from_arrays(self.name, self.format.kind, self.path, x_tr, y_tr, x_te, names)
                raw = RawData(name=self.name, x_train=torch.from_numpy(np.ascontiguousarray(x_tr)),
                              y_train=torch.from_numpy(y_tr), x_test=torch.from_numpy(np.ascontiguousarray(x_te)),
                              y_test=torch.from_numpy(y_te), origin=str(self.path))
                cached = _CACHE[key] = (info, raw)
        info, raw = cached
        if info.name == self.name:
            return info, raw
        # the same data under another spelling of its path keeps that spelling as its name
        return replace(info, name=self.name), replace(raw, name=self.name)

    def info(self) -> DatasetInfo:
        return self._read()[0]

    def load(self) -> RawData:
        return self._read()[1]


def path_source(name: str, options: ReadOptions) -> PathSource:
    """The source of the dataset at path `name`, in the first format that claims it."""
    path = Path(name).expanduser()
    if not path.exists():
        raise data_error(f"no such file or folder: {name}")
    path = path.resolve()
    for fmt in PATH_FORMATS:
        if fmt.claims(path):
            return PathSource(name, path, fmt, options)
    what = f"a {path.suffix} file" if path.suffix else "a file without an extension"
    raise data_error(f"{name} is {what}, not a dataset format labeldistill reads; {SUPPORTED_FORMATS}", limit=1000)
