"""`labeldistill bench --quick`: a smoke run of the benchmark suite (timings are not asserted)."""
import json

import torch

from labeldistill.bench import Suite, eval_flops
from labeldistill.cli import main
from labeldistill.evaluate import Recipe

KEYS = ["outer_step_ms_rr", "outer_step_ms_or2", "outer_step_ms_rr_alexcifarnet", "outer_step_ms_or2_alexcifarnet",
        "eval20_sequential_s", "eval20_parallel_s", "eval20_speedup", "peak_memory_mb",
        "eval20_gflop", "eval20_sequential_gflops", "eval20_parallel_gflops", "matmul_peak_gflops",
        "eval20_speedup_ceiling"]


def test_bench_quick_writes_json(tmp_path, capsys):
    out = tmp_path / "sub" / "bench.json"
    assert main(["bench", "--quick", "--repeats", "1", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    for k in KEYS:
        assert res[k] > 0, k
    assert res["suite"] == "quick" and res["data"] == "synthetic"
    assert res["eval20_max_error_difference_pct"] <= 50.0 / res["eval_images"] * 2
    table = capsys.readouterr().out
    assert "| parallel speedup |" in table and "LD-rr outer step" in table
    assert "| speedup ceiling: peak rate / sequential rate |" in table
    rate = res["eval20_gflop"] / res["eval20_sequential_s"]
    assert abs(res["eval20_sequential_gflops"] - rate) < 1e-9 * rate
    assert abs(res["eval20_speedup_ceiling"] - res["matmul_peak_gflops"] / rate) < 1e-6 * res["eval20_speedup_ceiling"]


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
