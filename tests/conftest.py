"""Shared fixtures: the real data folder (../shared/data beside the repository)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_root() -> Path:
    if not (SHARED_DATA / "mnist.npz").is_file():
        pytest.skip(f"real data not found at {SHARED_DATA} (clone the repository beside shared/ to run this test)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
