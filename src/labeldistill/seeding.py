"""Derived seeds: one seed in the config, independent named sub-seeds for everything else."""
from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, *names: object) -> int:
    """A 63-bit seed derived from `seed` and a path of names, stable across runs and machines."""
    text = "/".join([str(seed), *map(str, names)]).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


def generator(seed: int, *names: object) -> torch.Generator:
    """A CPU generator seeded with `derive_seed(seed, *names)`."""
    return torch.Generator().manual_seed(derive_seed(seed, *names))
