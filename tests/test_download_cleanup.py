"""A failed download leaves the data root as it was: no empty folders, no partial files.

Before, a failed `labeldistill run` left e.g. data/KMNIST/raw/ (empty or half-filled) behind."""
from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest

from labeldistill import datasets as ds
from labeldistill.sources import downloads
from labeldistill.errors import DataError


@pytest.fixture(autouse=True)
def _fresh_cache():
    ds.clear_cache()
    yield
    ds.clear_cache()


def tree(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in root.rglob("*")}


def half_then_fail(written: list[str]):
    """A download that writes a partial file (and its folders), then loses the connection."""

    def fetch(url, root, filename=None, md5=None, **kwargs):
        folder = Path(kwargs.get("download_root", root))
        folder.mkdir(parents=True, exist_ok=True)
        name = filename or url.rsplit("/", 1)[-1]
        (folder / name).write_bytes(b"partial")
        written.append(str(folder / name))
        raise urllib.error.URLError("connection reset")

    return fetch


def patch_downloads(monkeypatch, fetch):
    import torchvision.datasets.mnist as tv_mnist

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive",
                        lambda url, download_root, **kw: fetch(url, download_root, **kw))
    monkeypatch.setattr(downloads, "download_url", fetch)
    monkeypatch.setattr(downloads, "download_and_extract_archive", fetch)


@pytest.mark.parametrize("name", ["kmnist", "k49", "svhn", "cifar10", "cub"])
def test_failed_download_leaves_an_existing_root_unchanged(tmp_path, monkeypatch, name):
    root = tmp_path / "data"
    (root / "mine").mkdir(parents=True)
    (root / "mine" / "notes.txt").write_text("the user's own file")
    before = tree(root)
    written = []
    patch_downloads(monkeypatch, half_then_fail(written))
    with pytest.raises(DataError, match="the download failed"):
        ds.load_raw(name, root)
    assert written  # the stand-in did write a partial file somewhere under root
    assert tree(root) == before


def test_failed_download_removes_the_folders_it_created(tmp_path, monkeypatch):
    patch_downloads(monkeypatch, half_then_fail([]))
    with pytest.raises(DataError, match="connection reset"):
        ds.load_raw("kmnist", tmp_path / "new" / "data")
    assert list(tmp_path.iterdir()) == []


def test_interrupted_download_leaves_nothing_either(tmp_path, monkeypatch):
    fail = half_then_fail([])

    def interrupted(*args, **kwargs):
        try:
            fail(*args, **kwargs)  # writes the partial file
        except urllib.error.URLError:
            raise KeyboardInterrupt from None

    patch_downloads(monkeypatch, interrupted)
    with pytest.raises(KeyboardInterrupt):
        ds.load_raw("svhn", tmp_path / "data")
    assert not (tmp_path / "data").exists()
