"""Progress of long phases: one small event vocabulary, a throttled meter, and a printer.

A run reports to one callback, ``progress(event, info)``. Besides the facts of
a run (events such as 'epoch', 'resumed', 'step_search', 'notice', also
written to metrics.jsonl), every phase a user waits for reports how far it is::

    progress("progress", {"phase": "test models", "done": 1200, "total": 3000,
                          "unit": "step", "detail": "20 models"})

- ``phase``: what the run is doing, one of `PHASES` (a sweep: `SWEEP`);
- ``done`` and ``total``: how far, in ``unit`` ('step', 'epoch', 'image',
  'run', ...); ``done`` starts where the phase starts in this process (0, or
  where a resumed phase continues), never decreases, and the last event of a
  finished phase has ``done == total``. 'distilling' counts fractional epochs
  while an epoch is in progress;
- ``detail`` (optional): where inside the phase ("teacher 2/5, epoch 1/2").

A phase's events come when it starts, when it ends and in between at most
every `MIN_INTERVAL` seconds (`Meter`), so a callback may do real work for
each. Progress events are not logged to the run directory. The library never
prints; `ProgressPrinter` renders the events for the command line (and for
``labeldistill.distill(..., progress=True)``): a tqdm bar per phase in a
terminal, otherwise plain lines every `every` seconds with an estimate of the
time left measured in this process (`Estimator`), correct after a resume.
"""
from __future__ import annotations

import math
import os
import sys
import threading
import time
from typing import Callable, TextIO

from .errors import ConfigError

Progress = Callable[[str, dict], None]
EVENT = "progress"

LOADING = "loading data"
TEACHERS = "training teachers"
SOLVING = "solving labels"
STEP_SEARCH = "step search"
INITIAL_LABELS = "initial labels"  # the step search of a direct method that starts label distillation
DISTILLING = "distilling"
TESTING = "test models"
ANALYSES = "analyses"
PHASES = (LOADING, TEACHERS, SOLVING, INITIAL_LABELS, STEP_SEARCH, DISTILLING, TESTING, ANALYSES)
SWEEP = "sweep"

# Library side: at most one event per phase in this many seconds (besides its first and last).
MIN_INTERVAL = 0.5
# Evaluation models report after this many steps: one integer test per step in the hot loop.
REPORT_EVERY_STEPS = 25
# Command line: a plain line at most this often when stderr is not a terminal.
DEFAULT_EVERY = 30.0
ENV_EVERY = "LABELDISTILL_PROGRESS_EVERY"


class Meter:
    """One phase's progress, sent to `progress` as 'progress' events (nothing when it is None).

    `done` and `total` are counted in `per`-ths of a `unit` and reported in
    units: the evaluation models of a phase advance by one model-step each, and
    a phase of 20 models reports training steps (`per=20`).
    """

    def __init__(self, progress: Progress | None, phase: str, total: float, unit: str, *, done: float = 0,
                 detail: str | None = None, per: int = 1, min_interval: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.progress, self.phase, self.unit = progress, phase, unit
        self.total, self.done, self.per = total, done, max(1, per)
        self.detail = detail
        self.min_interval = MIN_INTERVAL if min_interval is None else min_interval
        self.clock = clock
        self._last = -math.inf
        self._closed = False
        self._send()

    def advance(self, n: float = 1, detail: str | None = None) -> None:
        self.update(self.done + n, detail)

    def update(self, done: float | None = None, detail: str | None = None) -> None:
        """Set how far the phase is (and where inside it); sent if `min_interval` has passed."""
        if done is not None:
            self.done = min(max(done, self.done), self.total)
        if detail is not None:
            self.detail = detail
        if self.progress is not None and self.clock() - self._last >= self.min_interval:
            self._send()

    def counter(self, label: str, total: int, per: int = 1) -> Callable[[int], None]:
        """A callback for a part of the phase that reports its own count in `detail`
        (`label` k/total) without moving `done`: LD validation inside 'distilling'."""
        count = 0

        def advance(n: int) -> None:
            nonlocal count
            count += n
            self.update(detail=f"{label} {count // max(1, per)}/{total}")
        return advance

    def close(self) -> None:
        """The phase finished: its last event has done == total."""
        if not self._closed:
            self._closed = True
            self.done = self.total
            self._send()

    def __enter__(self) -> "Meter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:  # an interrupted phase did not finish
            self.close()

    def _send(self) -> None:
        if self.progress is None:
            return
        self._last = self.clock()
        info = {"phase": self.phase, "done": _units(self.done, self.per), "total": _units(self.total, self.per),
                "unit": self.unit}
        if self.detail:
            info["detail"] = self.detail
        self.progress(EVENT, info)


def _units(count: float, per: int) -> float:
    value = count / per
    return int(value) if float(value).is_integer() else round(value, 2)


def meter_callback(meter: Meter | None) -> Callable[[int], None] | None:
    """`meter.advance` for a routine that takes an optional step callback."""
    return meter.advance if meter is not None and meter.progress is not None else None


class Estimator:
    """Elapsed time and time left in one phase, from the rate measured since the phase
    started in this process: work done before a resume does not count as done now."""

    def __init__(self, done: float, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.start, self.start_done = clock(), done
        self.done = done

    def update(self, done: float) -> None:
        self.done = done

    def elapsed(self) -> float:
        return self.clock() - self.start

    def left(self, total: float) -> float | None:
        """Seconds left at the rate measured so far; None until some work was measured."""
        worked, seconds = self.done - self.start_done, self.elapsed()
        if worked <= 0 or seconds <= 0:
            return None
        return max(0.0, total - self.done) * seconds / worked


def duration(seconds: float) -> str:
    """'45s', '3m05s', '2h07m'."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def interval(value: str | float | None) -> float:
    """The seconds between plain progress lines: `value` (a flag), else $LABELDISTILL_PROGRESS_EVERY,
    else `DEFAULT_EVERY`."""
    source = "--progress-every"
    if value is None:
        value, source = os.environ.get(ENV_EVERY), ENV_EVERY
    if value is None or value == "":
        return DEFAULT_EVERY
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (seconds >= 0 and math.isfinite(seconds)):
        raise ConfigError(f"{source} must be a number of seconds (0 or more), got '{value}'")
    return seconds


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.1f}"


def _plural(unit: str, count: float) -> str:
    return unit if count == 1 or not unit else f"{unit}s"


def _epoch_summary(info: dict) -> str:
    parts = [f"train error {info['train_error']:.1f}%"] if "train_error" in info else []
    if "val_error" in info:
        parts.append(f"val error {info['val_error']:.1f}%")
    return ", ".join(parts)


class ProgressPrinter:
    """Renders a run's events on `stream`: in a terminal a tqdm bar per phase; otherwise a line
    when a phase starts and ends and at most every `every` seconds in between (also when no
    event came: a heartbeat), with the step, elapsed time and an estimate of the time left.

    Plain lines begin once the printer has run for `every` seconds: a run that stops at once
    (a bad input) leaves only its one-line error, and a log is not filled with phases of a
    second. `quiet` shows neither, only notices. Callable as a run's `progress`; `close()`
    when done.
    """

    def __init__(self, stream: TextIO | None = None, *, every: float = DEFAULT_EVERY, quiet: bool = False,
                 terminal: bool | None = None, clock: Callable[[], float] = time.monotonic, heartbeat: bool = True):
        self.stream = stream if stream is not None else sys.stderr
        self.every, self.quiet, self.clock = every, quiet, clock
        if terminal is None:
            isatty = getattr(self.stream, "isatty", None)
            terminal = bool(isatty and isatty())
        self.terminal = terminal
        self.phase: dict | None = None  # the latest progress event's info
        self.estimator: Estimator | None = None
        self.summary = ""  # the latest epoch's errors, shown with 'distilling'
        self.bar = None
        self._since = clock()
        self._printed = -math.inf
        self._finished = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._beat = None
        if heartbeat and not quiet and not terminal and every > 0:
            # Long silent stretches (a download, one slow chunk) still get a line every `every` s.
            self._beat = threading.Thread(target=self._heartbeat, name="labeldistill-progress", daemon=True)
            self._beat.start()

    # -- events -----------------------------------------------------------------
    def __call__(self, event: str, info: dict) -> None:
        with self._lock:
            if event == EVENT:
                self._progress(info)
            elif event == "epoch":
                self.summary = _epoch_summary(info)
                if self.bar is not None:
                    self.bar.set_postfix_str(self._detail(), refresh=False)
            elif event == "notice":
                # A value the run adjusted: shown even with --quiet, since it changes the experiment.
                self._write(f"labeldistill: note: {info['message']}")

    def _progress(self, info: dict) -> None:
        if self.quiet:
            return
        new = self.phase is None or info["phase"] != self.phase["phase"]
        if new:
            self._end_phase()
            self.estimator = Estimator(info["done"], self.clock)
            self.summary = ""
            self._finished = False
        self.phase = info
        self.estimator.update(info["done"])
        if self.terminal:
            self._bar(info, new)
        elif not self._begun():
            return
        elif new:
            self._line("started")
        elif info["done"] >= info["total"]:
            if not self._finished:
                self._finished = True
                self._line("finished")
        elif self.clock() - self._printed >= self.every:
            self._line()

    def _begun(self) -> bool:
        return self.clock() - self._since >= self.every

    def _end_phase(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    # -- terminal -----------------------------------------------------------------
    def _bar(self, info: dict, new: bool) -> None:
        from tqdm import tqdm

        if new:
            # initial: tqdm's rate and estimate count only what this process did (a resume).
            self.bar = tqdm(total=info["total"], initial=info["done"], desc=info["phase"], unit=info["unit"] or "it",
                            leave=False, file=self.stream, dynamic_ncols=True)
        elif info["done"] > self.bar.n:
            self.bar.update(info["done"] - self.bar.n)
        self.bar.set_postfix_str(self._detail(), refresh=True)

    # -- plain lines -------------------------------------------------------------
    def _line(self, state: str = "") -> None:
        info, est = self.phase, self.estimator
        done, total, unit = info["done"], info["total"], info["unit"]
        where = f"{_number(done)}/{_number(total)} {_plural(unit, total)}"
        if total:
            where += f" ({100.0 * done / total:.0f}%)"
        detail = self._detail()
        text = f"{info['phase']}: {where}" + (f", {detail}" if detail else "")
        if state == "finished":
            text += f"; finished in {duration(est.elapsed())}"
        elif state != "started":
            left = est.left(total)
            text += f"; {duration(est.elapsed())} elapsed, " + (
                f"about {duration(left)} left" if left is not None else "time left not known yet")
        self._write(f"{self._stamp()} {text}")

    def _heartbeat(self) -> None:
        while not self._stop.wait(min(self.every, 5.0)):
            with self._lock:
                if self.phase is not None and self.phase["done"] < self.phase["total"] and self._begun() \
                        and self.clock() - self._printed >= self.every:
                    self._line()

    # -- helpers -----------------------------------------------------------------
    def _detail(self) -> str:
        parts = [p for p in ((self.phase or {}).get("detail"), self.summary) if p]
        return "; ".join(parts)

    def _stamp(self) -> str:
        return time.strftime("[%H:%M:%S]")

    def _write(self, text: str) -> None:
        self._printed = self.clock()
        if self.bar is not None:
            self.bar.write(text, file=self.stream)  # keeps a live bar intact
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        with self._lock:
            self._end_phase()


def as_callback(progress) -> tuple[Progress | None, ProgressPrinter | None]:
    """`progress=` of the Python API: None/False (silent), True (a `ProgressPrinter` on stderr)
    or a callable ``progress(event, info)``. Returns the callback and the printer to close."""
    if progress is None or progress is False:
        return None, None
    if progress is True:
        printer = ProgressPrinter(every=interval(None))
        return printer, printer
    if callable(progress):
        return progress, None
    raise ConfigError(f"progress must be True, False, None or a callable progress(event, info), "
                      f"got {type(progress).__name__}")


def printer(every: float | str | None, quiet: bool) -> "ProgressPrinter":
    """Progress on stderr as the command-line options ask: bars in a terminal, plain lines
    every `every` seconds (`--progress-every`, else the environment's) in a log file."""
    return ProgressPrinter(sys.stderr, every=interval(every), quiet=quiet)


def add_arguments(parser) -> None:
    """The command line's progress options (`run`, `evaluate`, `sweep`)."""
    parser.add_argument("--quiet", action="store_true", help="no progress bars or progress lines")
    parser.add_argument("--progress-every", metavar="SECONDS",
                        help="when stderr is not a terminal (a log file), a progress line at most every SECONDS "
                             "(default: $LABELDISTILL_PROGRESS_EVERY or 30; 0: as often as the run reports)")
