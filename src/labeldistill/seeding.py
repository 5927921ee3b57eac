"""Derived seeds: one seed in the config, independent named sub-seeds for everything else."""
from __future__ import annotations

import contextlib
import hashlib

import torch


def derive_seed(seed: int, *names: object) -> int:
    """A 63-bit seed derived from `seed` and a path of names, stable across runs and machines."""
    text = "/".join([str(seed), *map(str, names)]).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


def derive_seeds(seed: int, *names: object, count: int) -> list[int]:
    """`count` seeds derived from `seed` and `names` (validation, test and analysis models)."""
    return [derive_seed(seed, *names, i) for i in range(count)]


def generator(seed: int, *names: object) -> torch.Generator:
    """A CPU generator seeded with `derive_seed(seed, *names)`."""
    return torch.Generator().manual_seed(derive_seed(seed, *names))


@contextlib.contextmanager
def seeded_global_rng(seed: int, device: torch.device | str | None = None):
    """Within the block, torch's global generators (which weight initialisation and random
    layers such as dropout draw from) start from `seed`; afterwards the caller's CPU state
    (and that of `device`, if it is a CUDA device) is back as it was."""
    devices = [device] if device is not None and torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
