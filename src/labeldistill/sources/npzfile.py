"""A ``.npz`` file of the user's own (any name): ``x_train``, ``y_train``, ``x_test``,
``y_test`` -- uint8 images (N,H,W), (N,H,W,1) or (N,H,W,3) (uint16 is scaled to 8 bits),
integer labels 0..K-1 -- and optionally ``class_names`` (K strings)."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DataError
from .arrays import SUPPORTED_FORMATS, check_labels, data_error, resize, scale_uint16

__all__ = ["NPZ_KEYS", "is_npz_file", "read_npz"]

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def is_npz_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".npz"


def read_npz(path: Path, image_size: int | None):
    if not zipfile.is_zipfile(path):  # else numpy tries it as a pickle and talks about allow_pickle
        raise data_error(f"{path} is not a .npz archive (not a zip file); {SUPPORTED_FORMATS}", limit=1000)
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as exc:  # BadZipFile, ValueError, OSError, ...
        raise data_error(f"cannot read {path} as a .npz archive ({type(exc).__name__}: {exc})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise data_error(f"{path} is not a .npz archive (a single array?); expected keys {', '.join(NPZ_KEYS)}")
    try:
        with archive:
            missing = [k for k in NPZ_KEYS if k not in archive.files]
            if missing:
                have = ", ".join(sorted(archive.files)) or "nothing"
                raise data_error(f"{path} has no {', '.join(missing)} (has {have}); "
                                 f"a dataset archive needs {', '.join(NPZ_KEYS)}")
            arrays = {k: archive[k] for k in NPZ_KEYS}
            names = archive["class_names"] if "class_names" in archive.files else None
    except DataError:
        raise
    except Exception as exc:
        raise data_error(f"cannot read {path} ({type(exc).__name__}: {exc})") from None
    x_tr, y_tr = _npz_split(path, arrays["x_train"], arrays["y_train"], "train", image_size)
    x_te, y_te = _npz_split(path, arrays["x_test"], arrays["y_test"], "test", image_size)
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise data_error(f"{path}: x_train images are {x_tr.shape[1:]} but x_test images are {x_te.shape[1:]}")
    if names is not None:
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise data_error(f"{path}: class_names must be a 1-D array of strings, got {names.dtype} {names.shape}")
        names = tuple(str(n) for n in names)
    names = check_labels(str(path), y_tr, y_te, names)
    return x_tr, y_tr, x_te, y_te, names


def _npz_split(path: Path, x: np.ndarray, y: np.ndarray, split: str, image_size: int | None):
    if x.dtype == np.uint16:
        x = scale_uint16(x)
    if x.dtype != np.uint8:
        raise data_error(f"{path}: x_{split} has dtype {x.dtype}, expected uint8 images (or uint16, scaled to 8 bits)")
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if not (x.ndim == 3 or (x.ndim == 4 and x.shape[-1] == 3)):
        raise data_error(f"{path}: x_{split} has shape {tuple(x.shape)}, expected (N,H,W) or (N,H,W,3)")
    if y.dtype.kind not in "iu":
        raise data_error(f"{path}: y_{split} has dtype {y.dtype}, expected integer labels (int64)")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != len(x):
        raise data_error(f"{path}: y_{split} has shape {tuple(y.shape)}, expected ({len(x)},), one label per image")
    if len(x) == 0:
        raise data_error(f"{path}: x_{split} is empty")
    h, w = x.shape[1:3]
    if image_size is not None and (h, w) != (image_size, image_size):
        x = np.stack([np.asarray(resize(Image.fromarray(im), image_size), dtype=np.uint8) for im in x])
    elif image_size is None and h != w:
        raise data_error(f"{path}: x_{split} images are {w}x{h} (width x height), not square; "
                         "set data.image_size to resize them to a square size")
    return x, y.astype(np.int64)

