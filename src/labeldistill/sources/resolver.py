"""One resolver from a dataset name to its :class:`DataSource`, and the functions the rest
of the package uses: :func:`get_info`, :func:`load_raw`, :func:`clear_cache`,
:func:`check_dataset_name`.

A name is a registered dataset (:data:`DATASETS`), ``memory:NAME`` (made by
``from_arrays`` / ``from_torch``), or a path (a .npz file, a folder of class folders or
a Hugging Face ``save_to_disk`` folder).
"""
from __future__ import annotations

import difflib
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from ..errors import ConfigError, DataError, did_you_mean
from . import paths, registered
from .arrays import DEFAULT_TEST_FRACTION
from .base import LOCK, DatasetInfo, DataSource, RawData
from .memory import MemorySource, is_memory_name, memory_names
from .paths import ReadOptions, is_path_name, path_source
from .registered import registered_source
from .registry import DATASETS

__all__ = ["resolve", "get_info", "load_raw", "clear_cache", "check_dataset_name"]


def resolve(name: str, root: str | Path | None = None, download: bool = True, *,
            image_size: int | None = None, test_fraction: float = DEFAULT_TEST_FRACTION,
            image_column: str | None = None, label_column: str | None = None) -> DataSource:
    """The source of dataset `name`.  A registered dataset is read under `root` (default
    ``$LABELDISTILL_DATA_ROOT`` or ``~/.cache/labeldistill/data``), downloaded if `download`;
    a path or ``memory:NAME`` ignores both and uses `image_size`, `test_fraction` and the
    Hugging Face column names instead.  Unknown names raise :class:`DataError` with a suggestion."""
    if isinstance(name, str) and name in DATASETS:
        return registered_source(name, root, download)
    if is_memory_name(name):
        return MemorySource(name, image_size)
    if is_path_name(name):
        return path_source(name, ReadOptions(image_size, test_fraction, image_column, label_column))
    known = ", ".join(DATASETS)
    close = difflib.get_close_matches(str(name).lower().replace("-", "_"), list(DATASETS), n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise DataError(f"unknown dataset '{name}'{hint}; known: {known}, or a path to a .npz file, an image folder "
                    "or a Hugging Face dataset folder")


def get_info(name: str, *, image_size: int | None = None, test_fraction: float = DEFAULT_TEST_FRACTION,
             image_column: str | None = None, label_column: str | None = None,
             mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> DatasetInfo:
    """The facts of dataset `name` (see :func:`resolve`; a user's dataset is read to know them);
    `mean` and `std` (per channel, in [0, 1] units) replace the normalisation statistics of the
    dataset when given (data.mean / data.std)."""
    with LOCK:
        info = resolve(name, image_size=image_size, test_fraction=test_fraction, image_column=image_column,
                       label_column=label_column).info()
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


def load_raw(name: str, root: str | Path | None = None, download: bool = True, *,
             image_size: int | None = None, test_fraction: float = DEFAULT_TEST_FRACTION,
             image_column: str | None = None, label_column: str | None = None) -> RawData:
    """Load a dataset's train (and test) split as tensors, cached per process (a registered
    dataset per (name, resolved root)); see :func:`resolve`.  Every failure is a one-line
    :class:`DataError` saying what was looked for and what to do."""
    with LOCK:
        return resolve(name, root, download, image_size=image_size, test_fraction=test_fraction,
                       image_column=image_column, label_column=label_column).load()


def clear_cache() -> None:
    """Forget every dataset loaded from disk in this process (in-memory datasets made by
    from_arrays / from_torch stay: they exist nowhere else)."""
    with LOCK:
        registered.clear_cache()
        paths.clear_cache()


def check_dataset_name(name: str, key: str) -> None:
    """Check a configured dataset name (config key ``data.KEY``) without reading any data:
    registered, an in-memory dataset of this process, or an existing path (read, and
    checked, when a run loads it).  Raises :class:`ConfigError`."""
    if is_memory_name(name):  # from_arrays / from_torch, in this process
        if name not in memory_names():
            raise ConfigError(f"data.{key}: no in-memory dataset '{name}' in this process; create it with "
                              "labeldistill.from_arrays(...) or labeldistill.from_torch(...)")
        return
    if is_path_name(name):
        if not Path(name).expanduser().exists():
            raise ConfigError(f"data.{key}: no such file or folder: {name}")
        return
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset '{name}' for data.{key}{did_you_mean(name, DATASETS)}; known: "
                          f"{', '.join(sorted(DATASETS))}, or a path to a .npz file, an image folder or a Hugging "
                          "Face dataset folder")
