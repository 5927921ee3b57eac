"""Errors that the command line reports as one line, without a traceback."""
from __future__ import annotations

import difflib
from typing import Iterable


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' (did you mean 'X'?)' for the closest of `choices`, or '': the tail of an error message."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


class LabelDistillError(Exception):
    """Base class: the message says what went wrong and what to do."""


class ConfigError(LabelDistillError):
    """A configuration key, type or value is wrong."""


class DataError(LabelDistillError):
    """A dataset is unknown, missing or corrupt."""


class RunError(LabelDistillError):
    """A run cannot start or continue (existing output, checkpoint mismatch, numerical failure)."""


class Interrupted(LabelDistillError):
    """A run stopped on SIGINT or SIGTERM; `checkpoint` says whether its state was saved.

    The command line turns it into one line with the command that resumes the
    run and exits with 128 + the signal number (130 for Ctrl-C, 143 for SIGTERM).
    """

    def __init__(self, signum: int, detail: str = "", checkpoint: str | None = None, kept: str | None = None):
        import signal

        self.signum = signum
        self.detail = detail
        self.checkpoint = checkpoint
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        if checkpoint:
            saved = f"checkpoint saved to {checkpoint}"
        else:
            saved = kept or "no checkpoint yet, so resuming starts the run again"
        super().__init__(" ".join(f"interrupted by {name} {detail}".split()) + f"; {saved}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class RunFileError(RunError, DataError):
    """A run file (result, config, metrics log, artifact card) that parses but has the wrong shape.

    A RunError, since the run cannot be read or continued; also a DataError, since the artifact's
    card, read by `load_distilled`, has always raised DataError for a damaged file.
    """
