"""`labeldistill bench --quick`: a smoke run of the benchmark suite (timings are not asserted)."""
import json

from labeldistill.cli import main

KEYS = ["outer_step_ms_rr", "outer_step_ms_or2", "outer_step_ms_rr_alexcifarnet", "outer_step_ms_or2_alexcifarnet",
        "eval20_sequential_s", "eval20_parallel_s", "eval20_speedup", "peak_memory_mb"]


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


def test_bench_bad_repeats(capsys):
    assert main(["bench", "--quick", "--repeats", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("labeldistill: error:") and "--repeats" in err and "Traceback" not in err
