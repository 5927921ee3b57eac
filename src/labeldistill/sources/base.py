"""What every data source yields, and the small interface each one answers.

A data source is one dataset as labeldistill reads it: a registered dataset under a
data root, a file or folder of the user's own, or arrays held in memory.  Each
answers :class:`DataSource`: ``info()`` (static facts: classes, shape,
normalisation) and ``load()`` (the pixels and labels as tensors).  Splits,
preprocessing and base selection happen in :mod:`labeldistill.data`, the same for
every source.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

__all__ = ["DatasetInfo", "RawData", "DataSource", "LOCK", "one_line"]


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


@runtime_checkable
class DataSource(Protocol):
    """One dataset, resolved from its name (see :func:`labeldistill.sources.resolve`)."""

    name: str

    def info(self) -> DatasetInfo:
        """The dataset's facts; a user's dataset is read (and cached) to know them."""
        ...

    def load(self) -> RawData:
        """The training (and test) split as tensors, cached per process where reading is costly."""
        ...


# One lock for every source's cache: threads of one process (the API, sweeps run in threads)
# must not read the same files twice or see a half-filled cache.
LOCK = threading.RLock()


def one_line(text: str, limit: int) -> str:
    """An error text on one line, at most `limit` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
