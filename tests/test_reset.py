import copy
import functools

import pytest

from labeldistill.meta.reset import ResetTracker


def max_life(stats_gap: int, batch: int) -> int:
    """Steps within which the online model must reset, whatever the float trajectory.

    With a power-of-two target minibatch the error is exactly 100 k / batch, so a
    window mean takes at most stats_gap * batch + 1 values; a new lowest mean must
    come within stats_gap steps of the last one, and the first needs stats_gap
    steps: a model lives at most stats_gap * (stats_gap * batch + 2) steps. Tests
    that need resets (tests/test_resume.py) choose configs by this bound, not by
    how many resets one machine's trajectory happened to make.
    """
    assert batch & (batch - 1) == 0, "a power of two keeps every error and window sum exact"
    return stats_gap * (stats_gap * batch + 2)


def _run(tracker, errors):
    return [i + 1 for i, e in enumerate(errors) if tracker.update(e)]


def test_reset_after_gap_without_new_minimum():
    t = ResetTracker(stats_gap=3)
    # windowed means from step 3: 9, 8, 7 (best at step 5), then 7.33, 8, 9 -> no new low for 3 steps
    errors = [10, 9, 8, 7, 6, 9, 9, 9]
    assert _run(t, errors) == [8]
    assert t.recorded == [5]
    assert t.num_steps == 5


def test_no_reset_while_improving_and_num_steps_before_any_reset():
    t = ResetTracker(stats_gap=4)
    assert _run(t, [10 - 0.1 * i for i in range(30)]) == []
    assert t.num_steps == 30


def test_num_steps_is_mean_of_last_three_recorded():
    t = ResetTracker(stats_gap=2)
    # each cycle: improve for k steps, then plateau high until the reset
    for k in (3, 5, 7, 9):
        errs = [10 - i for i in range(k)] + [100] * 10
        for e in errs:
            if t.update(e):
                break
    assert t.recorded == [3, 5, 7, 9]
    assert t.num_steps == 7  # mean of 5, 7, 9


def test_window_restarts_after_reset_and_state_round_trip():
    t = ResetTracker(stats_gap=3)
    _run(t, [10, 9, 8, 7, 6, 9, 9, 9, 5])
    assert t.steps == 1 and list(t.window) == [5]
    clone = ResetTracker(1)
    clone.load_state_dict(t.state_dict())
    more = [4, 3, 2, 8, 8, 8]
    assert _run(t, more) == _run(clone, more)
    assert t.state_dict() == clone.state_dict()


@pytest.mark.parametrize("stats_gap,batch", [(1, 4), (1, 8), (2, 4), (2, 8), (3, 4)])
def test_reset_comes_within_max_life_for_any_error_sequence(stats_gap, batch):
    """The longest life over every sequence of minibatch errors 100 k / batch (exhaustive search)."""
    values = [100.0 * k / batch for k in range(batch + 1)]

    @functools.lru_cache(maxsize=None)
    def longest(window: tuple, steps: int, best: float, since_best: int) -> int:
        out = 0
        for e in values:
            t = ResetTracker(stats_gap)
            t.window.extend(window)
            t.steps, t.best, t.best_step = steps, best, steps - since_best
            if t.update(e):
                out = max(out, steps + 1)
            else:
                state = (tuple(t.window), min(t.steps, stats_gap), t.best, t.steps - t.best_step)
                # steps beyond stats_gap only shift the count: add them back
                out = max(out, t.steps - state[1] + longest(*state))
        return out

    worst = longest((), 0, float("inf"), 0)
    assert worst <= max_life(stats_gap, batch)
    assert worst >= max_life(stats_gap, batch) - stats_gap  # and the bound is nearly tight
