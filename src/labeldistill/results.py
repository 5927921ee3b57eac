"""The run directory: resolved config, append-only metrics log, result, checkpoint.

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
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from .naming import MAX_NAME_BYTES, run_name_problem, safe_run_name  # noqa: F401 (re-exported)
from .errors import RunError

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

    def write_result(self, result: dict) -> None:
        atomic_write_json(self.result_path, result)

    def read_result(self) -> dict:
        from .runfiles import check_result

        return check_result(read_json(self.result_path), self.result_path)

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
