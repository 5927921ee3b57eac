"""Downloads into a data root: torchvision's fetchers (imported lazily: only a download needs
them), staged so that a failed or interrupted download leaves the root as it was.

The fetchers are module attributes that callers look up at call time, so that tests can
replace them with local stand-ins.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from .base import one_line

__all__ = ["download_url", "download_and_extract_archive", "download_into", "short_reason"]


def download_url(url: str, root: str, filename: str | None = None, md5: str | None = None) -> None:
    from torchvision.datasets.utils import download_url as fetch

    fetch(url, root, filename=filename, md5=md5)


def download_and_extract_archive(url: str, root: str, filename: str | None = None, md5: str | None = None) -> None:
    from torchvision.datasets.utils import download_and_extract_archive as fetch

    fetch(url, root, filename=filename, md5=md5)


def download_into(root: Path, download: Callable[[Path], None]) -> None:
    """Run `download` into a hidden staging folder inside `root`, then move what it fetched
    into place. A download that fails (or is interrupted) half-way would otherwise leave
    empty folders and partial files in the user's data root: the staging folder is removed,
    and so is every folder that this call created, so `root` stays as it was."""
    created = [p for p in (root, *root.parents) if not p.exists()]  # deepest first
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".labeldistill-download-", dir=root))
    done = False
    try:
        download(staging)
        for src in sorted(staging.rglob("*")):  # parents before their contents
            dst = root / src.relative_to(staging)
            if src.is_dir():
                dst.mkdir(exist_ok=True)
            else:
                os.replace(src, dst)  # same file system: a rename, never a partial file
        done = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not done:
            for folder in created:
                try:
                    folder.rmdir()  # only while empty: never what someone else wrote meanwhile
                except OSError:
                    break


def short_reason(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    reason = lines[-1] if lines else ""
    name = type(exc).__name__
    reason = f"{name}: {reason}" if reason else name
    return one_line(reason, limit=200)

