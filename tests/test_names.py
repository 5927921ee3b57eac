"""Run names follow the experiment: overrides that change it rename the run, sweeps run what
they say (also per seed), and a run folder of another config is a conflict, never "done"."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from labeldistill import config as C
from labeldistill import sweep
from labeldistill.cli import main, quickstart_configs
from labeldistill.errors import ConfigError

SRC = str(Path(__file__).resolve().parents[1] / "src")
NAMED = C.apply(C.Config(), {"name": "mnist_best_100", "data.source": "mnist5k", "data.target": "mnist5k"})
PAPER = C.apply(C.Config(), {"name": "baseline-ls_mn_to_mn_100be_0s", "method": "baseline-ls"})


def named(cfg, *overrides):
    return C.with_overrides(cfg, overrides).run_name


@pytest.mark.parametrize("overrides, name", [
    (["seed=1"], "mnist_best_100_seed=1"),
    (["method=ld-or2"], "mnist_best_100_method=ld-or2"),
    (["data.num_base_examples=50"], "mnist_best_100_num_base_examples=50"),
    (["evaluate.lr=0.1"], "mnist_best_100_lr=0.1"),
    (["distill.batch_size=64"], "mnist_best_100_distill.batch_size=64"),  # batch_size alone is ambiguous
    (["data.source=mnist"], "mnist_best_100_source=mnist"),
    # no change of the experiment: no new name
    (["device=cpu"], "mnist_best_100"),
    (["distill.checkpoint_every=7", "data.download=false", "evaluate.batch_size=8"], "mnist_best_100"),
    (["seed=0"], "mnist_best_100"),  # the value it had
    (["distill.epochs=400"], "mnist_best_100"),  # the default it resolves to
    (["name=mine", "seed=3"], "mine"),  # an explicit name is taken exactly
])
def test_overrides_that_change_the_experiment_change_the_name(overrides, name):
    assert named(NAMED, *overrides) == name


def test_names_do_not_depend_on_the_order_or_spelling_of_overrides():
    a = named(NAMED, "seed=1", "evaluate.lr=0.1", "distill.epochs=3")
    b = named(NAMED, "epochs=3", "lr=1e-1", "seed=01")
    assert a == b == "mnist_best_100_epochs=3_lr=0.1_seed=1"


def test_the_papers_seed_part_is_replaced_and_automatic_names_keep_their_pattern():
    assert named(PAPER, "seed=2") == "baseline-ls_mn_to_mn_100be_2s"
    assert named(PAPER, "seed=2", "label_smoothing=0.2") == "baseline-ls_mn_to_mn_100be_2s_label_smoothing=0.2"
    auto = C.Config()
    assert named(auto, "seed=2", "num_base_examples=20") == "ld-rr_mnist_to_mnist_20be_2s"
    assert named(auto, "seed=2", "inner_lr=0.02") == "ld-rr_mnist_to_mnist_100be_2s_inner_lr=0.02"
    assert named(auto, "device=cpu") == auto.run_name


def test_names_are_one_safe_path_component_and_long_ones_end_in_a_hash(tmp_path):
    data = tmp_path / "my data.npz"
    data.write_bytes(b"")
    assert named(NAMED, f"data.source={data}") == "mnist_best_100_source=my_data"
    assert named(NAMED, "data.label_column=../x/la bel:1") == "mnist_best_100_label_column=x_la_bel_1"
    offsets = ",".join(str(i) for i in range(60))
    long_a, long_b = named(NAMED, f"step_offsets={offsets}"), named(NAMED, f"step_offsets={offsets},61")
    assert len(long_a) == C.MAX_NAME_LENGTH and long_a.startswith("mnist_best_100_step_offsets=0,1,2")
    assert long_a != long_b and "/" not in long_a


def test_show_config_and_the_sweep_plan_resolve_the_same_name(tmp_path, capsys):
    path = tmp_path / "best.yaml"
    path.write_text(yaml.safe_dump(C.to_dict(NAMED)))
    assert main(["show-config", str(path), "--set", "seed=1", "--set", "lr=0.1"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)["name"]
    job, = sweep.plan([path], tmp_path / "runs", ["lr=0.1", "seed=1"])
    assert shown == job.name == "mnist_best_100_lr=0.1_seed=1"


@pytest.mark.parametrize("overrides, names", [
    ([], ["quickstart_ld-rr", "quickstart_baseline"]),
    (["name=foo"], ["foo_ld-rr", "foo_baseline"]),
    (["method=ld-or2"], ["quickstart_ld-or2", "quickstart_baseline"]),
    (["seed=1"], ["quickstart_seed=1_ld-rr", "quickstart_seed=1_baseline"]),
    (["method=baseline-ls", "name=bar"], ["bar_baseline-ls"]),
])
def test_the_quickstart_names_its_runs_after_the_name_and_overrides(overrides, names):
    cfgs = quickstart_configs(overrides)
    assert [c.run_name for c in cfgs] == names
    assert cfgs[-1].method == names[-1].rsplit("_", 1)[1]


# ---------------------------------------------------------------------------
# sweeps and finished runs


def tiny_config(folder: Path, name: str = "tiny", seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"name": name, "method": "baseline", "seed": seed,
           "data": {"source": "mnist5k", "target": "mnist5k", "num_base_examples": 10, "target_set_size": 512},
           "evaluate": {"num_test_models": 1, "step_grid": [5]}}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def fake_finished(run_dir: Path, cfg: C.Config) -> None:
    """A finished run folder of `cfg` (the sweep's status reads config.json and result.json only)."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(C.to_dict(cfg)))
    (run_dir / "result.json").write_text("{}")


def test_seeds_expand_every_config_and_conflict_with_a_seed_override(tmp_path):
    a, b = tiny_config(tmp_path / "cfg", "a"), tiny_config(tmp_path / "cfg", "b_0s")
    jobs = sweep.plan([a, b], tmp_path / "runs", ["lr=0.1"], seeds=sweep.parse_seeds("0-1,3"))
    assert [j.name for j in jobs] == ["a_lr=0.1", "a_lr=0.1_seed=1", "a_lr=0.1_seed=3",
                                      "b_0s_lr=0.1", "b_1s_lr=0.1", "b_3s_lr=0.1"]
    assert [j.config.seed for j in jobs] == [0, 1, 3] * 2
    assert jobs[1].command[-2:] == ["--set", "seed=1"]
    with pytest.raises(ConfigError, match="--seeds and --set seed"):
        sweep.plan([a], tmp_path / "runs", ["seed=2"], seeds=[0, 1])
    for bad in ("x", "1,,2", "3-1", "-1"):
        with pytest.raises(ConfigError, match="--seeds takes whole numbers"):
            sweep.parse_seeds(bad)


def test_a_finished_run_of_another_config_is_a_conflict_not_done(tmp_path, capsys):
    path = tiny_config(tmp_path / "cfg")
    out = tmp_path / "runs"
    cfg = C.load(path)
    fake_finished(out / "tiny", C.apply(cfg, {"distill.label_lr": 0.5}))  # same name, other experiment
    job, = sweep.plan([path], out)
    assert job.status() == "conflict" and "differs in: distill.label_lr" in job.conflict()
    rc = main(["sweep", str(path), "--out", str(out), "--dry-run"])
    text = capsys.readouterr().out
    assert rc == 1 and "0 completed and skipped" in text and "1 in conflict" in text
    # The same folder with the requested config, up to keys that change nothing, is done.
    (out / "tiny" / "config.json").write_text(json.dumps(C.to_dict(C.apply(cfg, {"device": "cpu"}))))
    assert job.status() == "done"
    report = sweep.run_sweep([job], sweep.LocalBackend(1, 1), progress=False)
    assert [o.status for o in report.outcomes] == ["skipped"]


def test_run_refuses_a_finished_run_of_another_config_without_advising_only_overwrite(tmp_path, capsys):
    path = tiny_config(tmp_path / "cfg")
    out = tmp_path / "runs"
    fake_finished(out / "tiny", C.apply(C.load(path), {"distill.label_lr": 0.5}))
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "differs in: distill.label_lr" in err
    assert "--set name=" in err and "another" in err


def test_sweep_with_a_seed_override_runs_that_seed_and_leaves_seed_0_alone(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    path = tiny_config(tmp_path / "cfg")
    out = tmp_path / "runs"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    seed0 = (out / "tiny" / "result.json").read_bytes()
    capsys.readouterr()
    assert main(["sweep", str(path), "--out", str(out), "--set", "seed=1", "--workers", "1", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "1 runs (0 completed and skipped, 0 to resume, 1 new)" in text and "1 finished, 0 skipped" in text
    assert (out / "tiny" / "result.json").read_bytes() == seed0
    result = json.loads((out / "tiny_seed=1" / "result.json").read_text())
    assert result["seed"] == 1 and result["name"] == "tiny_seed=1"
    assert result["base_indices"] != json.loads(seed0)["base_indices"]
    # `run CONFIG --set seed=1` now finds its own finished run, and resumes it to its result.
    assert main(["run", str(path), "--out", str(out), "--set", "seed=1", "--resume", "--quiet"]) == 0
    assert "tiny_seed=1" in capsys.readouterr().out


def test_the_python_api_names_a_config_after_what_its_arguments_change(tmp_path):
    import labeldistill as ld

    path = tiny_config(tmp_path / "cfg")
    r = ld.distill("mnist5k", method="baseline", config=path, seed=1, out=tmp_path / "runs")
    assert r.run_dir.name == "tiny_seed=1" and r.result["seed"] == 1
