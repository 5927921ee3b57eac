"""The run directory: resolved config, append-only metrics log, result, checkpoint.

Every file is written atomically (temporary file, then rename), so an
interrupted run never leaves a half-written result or checkpoint.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .errors import RunError

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
RESULT_FILE = "result.json"
CHECKPOINT_FILE = "checkpoint.pt"


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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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
        if not self.checkpoint_path.is_file():
            return None
        try:
            return torch.load(self.checkpoint_path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 - a damaged checkpoint is one line
            raise RunError(f"cannot read checkpoint {self.checkpoint_path} ({type(exc).__name__}); "
                           "delete it to start the run again") from None
