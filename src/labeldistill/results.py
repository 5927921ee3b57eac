"""The run directory: resolved config, append-only metrics log, result, checkpoint.

A run's result is a `RunResult`, versioned, written and read here only
(`RunDir.write_result` / `RunDir.read_result`); every reader (report, plots,
api, export, evaluate, resume) gets it from there.

Every file is written atomically (temporary file, then rename), so an
interrupted run never leaves a half-written result or checkpoint. A run folder
is a direct child of the output folder, and one process at a time writes it:
it holds an OS lock (`RunDir.locked`) from the first look at the folder's state
to the end of the run.
"""
from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import socket
import time
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

import torch

from .errors import RunError, RunFileError
from .naming import run_name_problem, safe_run_name  # noqa: F401 (safe_run_name: re-exported)
from .runfiles import check_result

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
RESULT_FILE = "result.json"
CHECKPOINT_FILE = "checkpoint.pt"
LOCK_FILE = ".lock"
# --overwrite moves a finished result here and deletes it once the new run has finished.
PREVIOUS_DIR = "previous"
_ASIDE = ".previous.partial"  # files on their way into PREVIOUS_DIR (moved back if a kill interrupts that)
_OLD_PREVIOUS = ".previous.old"  # an older PREVIOUS_DIR being replaced
def _clean(obj: Any) -> Any:
    """JSON-safe copy: tensors to lists, NaN/inf to None."""
    if isinstance(obj, torch.Tensor):
        return _clean(obj.tolist())
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _temp_file(path: Path) -> tuple[int, Path]:
    """A new `.NAME.RANDOM.tmp` beside `path`, created with mode 0666 less the umask (mkstemp's
    0600 would hide results from colleagues and from workers under another user)."""
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temp_file(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(_clean(obj), indent=1) + "\n").encode())


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise RunError(f"no such file: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunError(f"corrupt file {path}: {exc}") from None


RESULT_VERSION = 2  # 1: files written before the version field (read as they are)


@dataclass(frozen=True, eq=False)
class RunResult(Mapping):
    """A finished run's result, as `result.json` holds it (`to_dict` / `from_dict`).

    The fields every reader relies on are typed attributes (labels and base
    indices as tensors); whatever else a run records (test errors and losses,
    analyses, teacher, device, ...) is kept in `extra` and written back
    unchanged. As a read-only mapping it gives every recorded field by its name
    (attributes as they are, tensors included), for readers that walk the config
    or the analyses generically (report, plots) and for code written against the
    plain dict that results were before.
    """

    name: str
    method: str
    source: str
    target: str
    arch: str
    num_base_examples: int
    seed: int
    test_accuracy: list
    test_accuracy_mean: float
    test_accuracy_std: float
    num_steps: int
    labels: torch.Tensor  # (n, num_classes) float32 soft labels of the base images
    base_indices: torch.Tensor  # (n,) into the source's training split; -1 for synthetic or noise images
    history: list
    config: dict
    head: str | None = None
    val_error: float | None = None
    best_epoch: int | None = None
    base_original_labels: torch.Tensor | None = None
    base_class_names: list | None = None
    seeds: dict = field(default_factory=dict)
    learner: dict = field(default_factory=dict)
    effective: dict = field(default_factory=dict)
    train_seconds: float | None = None
    test_seconds: float | None = None
    artifact: str | None = None  # the card's file name, once the run's artifact is written
    extra: dict = field(default_factory=dict)
    # In memory only, never in result.json: the images the labels belong to, (n, C, H, W) in
    # [0, 1] (the run's artifact is their stored copy); set by a run that just finished.
    pixels: torch.Tensor | None = None
    version: int = RESULT_VERSION  # the version it was read as; `to_dict` writes this version's

    _TENSORS = {"labels": torch.float32, "base_indices": torch.long, "base_original_labels": torch.long}
    _OUTSIDE = ("extra", "pixels", "version")  # fields that are not keys of the file

    @classmethod
    def _keys(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.name not in cls._OUTSIDE]

    @classmethod
    def from_dict(cls, obj: Any, path: Path | str = RESULT_FILE) -> "RunResult":
        """A result from `result.json`'s contents (any version up to RESULT_VERSION; none is
        version 1) or a dict of tensors and values (`pixels` kept in memory), checked as on read
        (`runfiles.check_result`): a malformed one is one `RunFileError` line naming `path`."""
        pixels, version = None, RESULT_VERSION
        if isinstance(obj, dict):
            obj = dict(obj)
            pixels = obj.pop("pixels", None)
            version = obj.pop("version", 1)
            if isinstance(version, bool) or not isinstance(version, int) or version < 1:
                raise RunFileError(f"malformed {path}: 'version' must be a whole number from 1, got {version!r}; "
                                   "restore the file or run the experiment again")
            if version > RESULT_VERSION:
                raise RunFileError(f"{path} has result version {version}, written by a newer labeldistill; this "
                                   f"version reads up to {RESULT_VERSION}: upgrade labeldistill")
        r = check_result(_clean(obj), path)
        keys = cls._keys()
        values = {k: r[k] for k in keys if k in r}
        for k, dtype in cls._TENSORS.items():
            if k in values:
                values[k] = torch.tensor(values[k], dtype=dtype)
        extra = {k: v for k, v in r.items() if k not in values}
        return cls(**values, extra=extra, pixels=pixels, version=version)

    @classmethod
    def from_run(cls, result: dict, path: Path | str = RESULT_FILE) -> "RunResult":
        """The result a run just built (a dict of tensors and values; no version: it is this one's)."""
        return cls.from_dict({**result, "version": RESULT_VERSION}, path)

    def to_dict(self) -> dict:
        """The JSON of `result.json` (this version's): lists for tensors, no in-memory pixels."""
        out: dict[str, Any] = {"version": RESULT_VERSION}
        for k in self._keys():
            v = getattr(self, k)
            if v is not None or k in ("val_error", "best_epoch"):  # written as null, as runs always did
                out[k] = _clean(v)
        return {**out, **self.extra}

    @cached_property
    def _names(self) -> list[str]:
        return [k for k in self.to_dict() if k != "version"]

    def __getitem__(self, key: str) -> Any:
        if key in self.extra:
            return self.extra[key]
        if key in self._names:
            return getattr(self, key)
        raise KeyError(key)

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __eq__(self, other: object) -> bool:  # by what the file holds (tensors have no plain ==)
        if not isinstance(other, RunResult):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (f"RunResult({self.name!r}, {self.method}, {self.source}->{self.target}, {len(self.labels)} base "
                f"examples, test accuracy {self.test_accuracy_mean:.2f} +- {self.test_accuracy_std:.2f})")


class RunDir:
    """One experiment's directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock_fd: int | None = None

    @classmethod
    def under(cls, out: str | Path, name: str) -> "RunDir":
        """The run folder `out/name`, refused unless it is a direct child of `out` (config
        validation already refuses such names; this holds for callers that skip it)."""
        problem = run_name_problem(name)
        path = Path(out) / name
        if problem is None and path.resolve().parent != Path(out).resolve():
            problem = "leads outside the output folder (a link?)"
        if problem:
            raise RunError(f"the run name {name!r} {problem}; a run folder must be a single folder inside --out")
        return cls(path)

    @property
    def previous_path(self) -> Path:
        return self.path / PREVIOUS_DIR

    @property
    def result_path(self) -> Path:
        return self.path / RESULT_FILE

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT_FILE

    def is_finished(self) -> bool:
        return self.result_path.is_file()

    def write_config(self, config: dict) -> None:
        atomic_write_json(self.path / CONFIG_FILE, config)

    def read_config(self) -> dict:
        from .runfiles import check_config

        return check_config(read_json(self.path / CONFIG_FILE), self.path / CONFIG_FILE)

    def log(self, record: dict) -> None:
        """Append one JSON line to the metrics log."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / METRICS_FILE, "a") as f:
            f.write(json.dumps(_clean(record)) + "\n")
            f.flush()

    def write_result(self, result: RunResult | dict) -> RunResult:
        """Write `result.json` (a run's result dict is checked as a reader would first); returns
        the result as written."""
        if not isinstance(result, RunResult):
            result = RunResult.from_run(result, self.result_path)
        atomic_write_json(self.result_path, result.to_dict())
        return result

    def read_result(self) -> RunResult:
        return RunResult.from_dict(read_json(self.result_path), self.result_path)

    def trim_log(self, epoch: int) -> None:
        """Keep the log lines of a resumed run up to its checkpoint's `epoch`.

        Drops a line cut short by a kill and the epoch records written after the
        checkpoint (they are run again), so that the log matches the history.
        """
        path = self.path / METRICS_FILE
        if not path.is_file():
            return
        from .runfiles import check_metrics_record

        keep = []
        for number, line in enumerate(path.read_text(errors="replace").splitlines(keepends=True), 1):
            try:
                record = check_metrics_record(json.loads(line), path, number)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and record.get("event") == "epoch" and (record.get("epoch") or 0) > epoch:
                continue
            keep.append(line if line.endswith("\n") else line + "\n")
        atomic_write_bytes(path, "".join(keep).encode())

    def save_tensor(self, name: str, obj: Any) -> None:
        import io

        buf = io.BytesIO()
        torch.save(obj, buf)
        atomic_write_bytes(self.path / name, buf.getvalue())

    def save_checkpoint(self, state: dict) -> None:
        import io

        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(self.checkpoint_path, buf.getvalue())

    def load_checkpoint(self) -> dict | None:
        """The checkpoint's tensors and plain values; anything else in it is refused unread,
        since unpickling arbitrary objects can run code planted in a shared folder."""
        import pickle

        if not self.checkpoint_path.is_file():
            return None
        try:
            return torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            if "global" not in str(exc).lower():  # not a class or function it was refused: damaged
                raise RunError(f"cannot read checkpoint {self.checkpoint_path} (not a readable checkpoint); "
                               "delete it to start the run again") from None
            raise RunError(f"refused to load {self.checkpoint_path}: it holds objects other than tensors and plain "
                           "values, which labeldistill never writes (loading them could run code); delete it "
                           "or start again with --overwrite") from None
        except Exception as exc:  # noqa: BLE001 - a damaged checkpoint is one line
            raise RunError(f"cannot read checkpoint {self.checkpoint_path} ({type(exc).__name__}); "
                           "delete it to start the run again") from None

    # -- one writer per folder ----------------------------------------------
    @contextmanager
    def locked(self) -> Iterator["RunDir"]:
        """Hold the folder's writer lock: an flock on LOCK_FILE, which the OS releases when the
        process ends however it ends (a kill -9 leaves no stale lock). A folder that is in use
        raises RunError naming the holder. Under the lock, what a killed writer left behind is
        cleaned up first (`_recover`); a folder this call created and left empty is removed."""
        created = [p for p in (self.path, *self.path.parents) if not p.exists()]
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock_fd = self._acquire()
        try:
            self._recover()
            yield self
        finally:
            fd, self._lock_fd = self._lock_fd, None
            # Unlinked while still held: a waiting process then finds its file gone and retries.
            (self.path / LOCK_FILE).unlink(missing_ok=True)
            os.close(fd)
            for folder in created:  # deepest first; stops at the first that holds something
                try:
                    folder.rmdir()
                except OSError:
                    break

    def _acquire(self) -> int:
        import fcntl

        lock = self.path / LOCK_FILE
        tries = 0
        while True:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                tries += 1
                if tries < 20:  # a moment's grace for a `holder()` probe, which holds the lock for microseconds
                    time.sleep(0.01)
                    continue
                raise RunError(self._busy_message(holder)) from None
            try:  # the holder before us may have removed the file we locked on its way out
                same = os.path.samestat(os.fstat(fd), os.stat(lock))
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
                return fd
            os.close(fd)

    def holder(self) -> str | None:
        """The busy message when another process holds this folder's lock, else None."""
        import fcntl

        try:
            fd = os.open(self.path / LOCK_FILE, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return self._busy_message(_read_holder(fd))
        finally:
            os.close(fd)
        return None

    def _busy_message(self, holder: tuple[str, str] | None) -> str:
        if holder is None:
            who = "another labeldistill process"
        else:
            pid, host = holder
            where = f" on {host}" if host and host != socket.gethostname() else ""
            who = f"another labeldistill process (PID {pid}{where})"
        return f"{self.path} is in use by {who}; wait for it to finish or stop it"

    def _recover(self) -> None:
        """Under the lock: remove what a killed writer left half-done."""
        for tmp in self.path.glob(".*.tmp"):  # atomic writes cut short
            tmp.unlink(missing_ok=True)
        aside = self.path / _ASIDE
        if aside.is_dir():  # a kill while an --overwrite moved the old result aside: undo the move
            for f in aside.iterdir():
                os.replace(f, self.path / f.name)
            aside.rmdir()
        if (self.path / _OLD_PREVIOUS).is_dir():
            shutil.rmtree(self.path / _OLD_PREVIOUS)
        if self.is_finished() and self.previous_path.is_dir():  # the new result was written: the old one goes
            shutil.rmtree(self.previous_path)

    def _run_files(self) -> list[Path]:
        return [f for f in self.path.iterdir() if f.name != LOCK_FILE and (f.is_file() or f.is_symlink())]

    def set_aside(self) -> None:
        """--overwrite: move a finished result into PREVIOUS_DIR (replacing an older one there);
        delete an unfinished run's files. `drop_previous` deletes it once the new run finished."""
        if not self.is_finished():
            for f in self._run_files():
                f.unlink()
            return
        # Moved through _ASIDE and renamed in one step, so a kill in between is undone by _recover.
        aside = self.path / _ASIDE
        aside.mkdir()
        for f in self._run_files():
            os.replace(f, aside / f.name)
        if self.previous_path.exists():
            os.replace(self.previous_path, self.path / _OLD_PREVIOUS)
        os.replace(aside, self.previous_path)
        if (self.path / _OLD_PREVIOUS).exists():
            shutil.rmtree(self.path / _OLD_PREVIOUS)

    def previous_note(self) -> str:
        """'; the previous result is kept in ...' while an --overwrite has not finished, else ''."""
        if (self.previous_path / RESULT_FILE).is_file():
            return f"; the previous result is kept in {self.previous_path}"
        return ""

    def drop_previous(self) -> None:
        if self.previous_path.is_dir():
            shutil.rmtree(self.previous_path)


def _read_holder(fd: int) -> tuple[str, str] | None:
    """(PID, host) written by the lock's holder, or None before it wrote them."""
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace").split()
    except OSError:
        return None
    return (text[0], text[1] if len(text) > 1 else "") if text else None
