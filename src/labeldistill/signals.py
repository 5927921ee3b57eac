"""Clean stops on Ctrl-C (SIGINT) and SIGTERM during a run.

A run must never lose finished work to a signal. While meta-learning, the
first signal only sets a flag; the outer loop checks it between outer steps,
writes a checkpoint of that consistent state and raises `Interrupted`. A second
signal (an impatient user) or a signal outside the meta-learning loop (data
loading, the test models) raises `Interrupted` at once: the last checkpoint on
disk is then the state to resume from, and it is always complete because
checkpoints are written atomically.

Handlers are installed only in the main thread (Python allows no other) and
the previous handlers are restored when the guard exits.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

from .errors import Interrupted

SIGNALS = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None)) if s is not None)


class StopGuard:
    """Turns SIGINT/SIGTERM into a stop request (deferred) or an immediate `Interrupted`."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.deferring = False
        self.phase = ""  # e.g. "while training the test models", for the message
        self.kept: str | None = None  # e.g. "the checkpoint of epoch 3 in runs/x is kept"
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame) -> None:  # noqa: ARG002 - signal handler signature
        first = self.signum is None
        self.signum = signum
        if self.deferring and first:
            return
        raise Interrupted(signum, detail=self.phase, kept=self.kept)

    def install(self) -> "StopGuard":
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Within this block a first signal only sets the flag; the loop polls `requested`."""
        before = self.deferring
        self.deferring = True
        try:
            yield
        finally:
            self.deferring = before


class _NoGuard(StopGuard):
    """The guard used without signal handling (library calls that pass none)."""

    def install(self) -> "StopGuard":
        return self


@contextmanager
def stop_guard(install: bool = True) -> Iterator[StopGuard]:
    guard = (StopGuard() if install else _NoGuard()).install()
    try:
        yield guard
    finally:
        guard.restore()
