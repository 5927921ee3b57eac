from labeldistill.meta.reset import ResetTracker


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
