"""When to reset the online model, and how many steps evaluation models train (SPEC 4.3)."""
from __future__ import annotations

from collections import deque


class ResetTracker:
    """Moving average of the target-minibatch error over `stats_gap` steps.

    After the window first fills, the lowest windowed error is remembered; when
    `stats_gap` further steps pass without a new lowest value, the step count at
    the minimum is recorded and `update` returns True (the caller resets the
    model and this tracker's window). The number of steps for evaluation models
    is the mean of the last three recorded counts, or the current step count
    while nothing was recorded yet.
    """

    def __init__(self, stats_gap: int):
        self.stats_gap = stats_gap
        self.recorded: list[int] = []
        self._start()

    def _start(self) -> None:
        self.window: deque[float] = deque(maxlen=self.stats_gap)
        self.steps = 0
        self.best = float("inf")
        self.best_step = 0

    def update(self, error: float) -> bool:
        self.steps += 1
        self.window.append(error)
        if self.steps < self.stats_gap:
            return False
        avg = sum(self.window) / self.stats_gap
        if avg < self.best:
            self.best, self.best_step = avg, self.steps
        elif self.steps - self.best_step >= self.stats_gap:
            self.recorded.append(self.best_step)
            self._start()
            return True
        return False

    @property
    def num_steps(self) -> int:
        if not self.recorded:
            return max(self.steps, 1)
        last = self.recorded[-3:]
        return int(round(sum(last) / len(last)))

    def state_dict(self) -> dict:
        return {"stats_gap": self.stats_gap, "recorded": list(self.recorded), "window": list(self.window),
                "steps": self.steps, "best": self.best, "best_step": self.best_step}

    def load_state_dict(self, state: dict) -> None:
        self.stats_gap = state["stats_gap"]
        self.recorded = list(state["recorded"])
        self.window = deque(state["window"], maxlen=self.stats_gap)
        self.steps, self.best, self.best_step = state["steps"], state["best"], state["best_step"]
