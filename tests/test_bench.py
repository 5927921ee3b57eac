"""`labeldistill bench --quick`: a smoke run of the benchmark suite (timings are not asserted)."""
import json

import torch

from torch.utils.flop_counter import FlopCounterMode

from labeldistill.bench import Suite, eval_flops
from labeldistill.cli import main
from labeldistill.evaluate import Recipe

KEYS = ["outer_step_ms_rr", "outer_step_ms_or2", "outer_step_ms_rr_alexcifarnet", "outer_step_ms_or2_alexcifarnet",
        "eval20_sequential_s", "eval20_parallel_s", "eval20_speedup", "peak_memory_mb",
        "eval20_gflop", "eval20_sequential_gflops", "eval20_parallel_gflops", "matmul_peak_gflops",
        "eval20_speedup_ceiling", "eval20_conv_s", "eval20_conv_bound_speedup"]


def test_bench_quick_writes_json(tmp_path, capsys):
    """A smoke run: every figure is written and positive, and the measured parallel and sequential
    evaluations agree (their test errors, not timings, are compared)."""
    out = tmp_path / "sub" / "bench.json"
    assert main(["bench", "--quick", "--repeats", "1", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    for k in KEYS:
        assert res[k] > 0, k
    assert res["suite"] == "quick" and res["data"] == "synthetic"
    assert res["eval20_max_error_difference_pct"] <= 50.0 / res["eval_images"] * 2
    table = capsys.readouterr().out
    assert "| parallel speedup |" in table and "LD-rr outer step" in table


def test_eval20_times_each_path_and_reports_medians(monkeypatch):
    """With a fake clock, each path's calls take known times: the bench must report the median of
    each path's repeats, their ratio as the speedup, and the largest error difference it saw."""
    from labeldistill import bench
    from labeldistill.evaluate import EvalResult

    clock = [0.0]
    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock[0])
    par_times, seq_times = iter([2.0, 1.0, 3.0]), iter([9.0, 5.0, 6.0])  # medians 2 and 6

    def fake(durations, offset):
        def run(recipe, base_x, labels, seeds, steps, test_x, test_y, **kw):
            clock[0] += next(durations)
            errors = torch.full((1, len(seeds)), 10.0 + offset)
            return EvalResult(steps=[steps], errors=errors, losses=torch.ones(1, len(seeds)))
        return run

    monkeypatch.setattr(bench, "train_and_evaluate", fake(par_times, 0.0))
    monkeypatch.setattr(bench, "train_and_evaluate_sequential", fake(seq_times, 0.25))
    monkeypatch.setattr(bench, "matmul_peak_gflops", lambda repeats: 100.0)
    monkeypatch.setattr(bench, "conv_bound", lambda *a, **k: {"eval20_conv_s": 1.5})
    suite = Suite(inner_batch=10, eval_models=3, eval_steps=5, eval_images=20, num_base=20)
    x, y = torch.randn(60, 1, 28, 28), torch.randint(0, 10, (60,))
    res = bench.eval20(x, y, suite, repeats=3, progress=lambda msg: None)
    assert res["eval20_parallel_runs_s"] == [2.0, 1.0, 3.0] and res["eval20_sequential_runs_s"] == [9.0, 5.0, 6.0]
    assert res["eval20_parallel_s"] == 2.0 and res["eval20_sequential_s"] == 6.0
    assert res["eval20_speedup"] == 3.0
    assert res["eval20_max_error_difference_pct"] == 0.25
    assert res["eval20_conv_bound_speedup"] == 6.0 / 1.5


# LeNet on 28x28 (padding 2) by hand, multiply-accumulates per image:
# conv1 28*28*6*25, conv2 10*10*16*150, fc1 400*120, fc2 120*84, classifier 84*10.
CONV1, CONV2, FC = 28 * 28 * 6 * 25, 10 * 10 * 16 * 150, 400 * 120 + 120 * 84 + 84 * 10
FORWARD_MACS = CONV1 + CONV2 + FC
# backward: weight gradients of every layer, input gradients of all but conv1 (the images need none)
TRAIN_MACS = FORWARD_MACS + CONV1 + 2 * CONV2 + 2 * FC


def test_eval_flops_matches_a_hand_count_of_lenet():
    x = torch.randn(100, 1, 28, 28)
    labels = torch.softmax(torch.randn(100, 10), -1)
    recipe = Recipe(arch="lenet", head="linear", batch_size=50)
    suite = Suite(inner_batch=50, eval_models=20, eval_steps=300, eval_images=10_000)
    expected = 20 * (300 * 50 * 2 * TRAIN_MACS + 10_000 * 2 * FORWARD_MACS)
    assert eval_flops(recipe, x, labels, suite) == expected


def test_bench_bad_repeats(capsys):
    assert main(["bench", "--quick", "--repeats", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("labeldistill: error:") and "--repeats" in err and "Traceback" not in err


def test_eval_flops_refuses_the_rr_head_it_does_not_count():
    import pytest
    with pytest.raises(ValueError, match="linear head"):
        eval_flops(Recipe(arch="lenet", head="rr", batch_size=50), torch.randn(4, 1, 28, 28),
                   torch.full((4, 10), 0.1), Suite())


def test_matmul_peak_is_two_n_cubed_over_the_time_of_one_product(monkeypatch):
    from labeldistill import bench
    clock = iter(range(1000))
    monkeypatch.setattr(bench.time, "perf_counter", lambda: float(next(clock)))
    # each timed repeat spans 1 fake second for 4 products: 0.25 s per 64x64 product
    assert bench.matmul_peak_gflops(repeats=3, n=64) == 2 * 64**3 / 0.25 / 1e9


def test_convolution_bound_replays_exactly_the_parallel_paths_convolutions(monkeypatch):
    """The recorded calls are one stacked training step and one test chunk of the real parallel
    path: their arithmetic is the hand count's convolution part for all models, nothing more."""
    from labeldistill import bench

    m, batch = 3, 50
    x = torch.randn(500, 1, 28, 28)
    labels = torch.softmax(torch.randn(100, 10), -1)
    recipe = Recipe(arch="lenet", head="linear", batch_size=batch)
    calls, chunk = bench.parallel_convolutions(recipe, x[:100], labels, x[100:], torch.zeros(400).long(), m)
    assert chunk == 1024 // m
    assert [f.__name__ for f, _, _ in calls["train"]] == ["convolution.default"] * 2 + ["convolution_backward.default"] * 2
    assert [f.__name__ for f, _, _ in calls["test"]] == ["convolution.default"] * 2
    # Forward arithmetic by torch's counter (it over-counts grouped backward calls, so those are
    # checked by their arguments): conv1 and conv2 of all m models on the batch and on the chunk.
    for phase, images in (("train", batch), ("test", chunk)):
        with FlopCounterMode(display=False) as count:
            bench._replay([c for c in calls[phase] if c[0] is torch.ops.aten.convolution.default])
        assert count.get_total_flops() == m * images * 2 * (CONV1 + CONV2)
    (_, c1, _), (_, c2, _), (_, b2, _), (_, b1, _) = calls["train"]
    assert c1[0].shape == (batch, m, 28, 28) and c1[1].shape == (6 * m, 1, 5, 5) and c1[-1] == m
    assert c2[0].shape == (batch, 6 * m, 14, 14) and c2[1].shape == (16 * m, 6, 5, 5) and c2[-1] == m
    # backward: conv2's weight and input gradients, conv1's weight gradient only (images need none)
    assert b2[0].shape == (batch, 16 * m, 10, 10) and b2[2].shape == c2[1].shape and b2[-1] == [True, True, True]
    assert b1[0].shape == (batch, 6 * m, 28, 28) and b1[2].shape == c1[1].shape and b1[-1] == [False, True, True]
    # the test chunk's one-channel input is replayed with the strides the real path gives it
    assert calls["test"][0][1][0].stride()[1] == 1

    times = iter([0.02, 0.005])
    monkeypatch.setattr(bench, "replay_seconds", lambda cs, repeats: next(times))
    suite = Suite(inner_batch=batch, eval_models=m, eval_steps=300, eval_images=400)
    got = bench.conv_bound(recipe, x[:100], labels, x[100:], torch.zeros(400).long(), suite, repeats=1)
    assert got["eval20_conv_s"] == 300 * 0.02 + 400 / chunk * 0.005
