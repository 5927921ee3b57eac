"""Reference experiment files run unchanged through the command line, one per dataset family and method.

Each file is run as it is (`labeldistill run FILE --set epochs=1 --set
evaluate.num_test_models=2`) on small stand-in archives of the right shapes in
--data-root (NAME.npz is found first), so that the clamped target set, the
reference's heads, the CIFAR-100 and Kuzushiji-49 settings and the cross-dataset
sources are exercised end to end in seconds.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from labeldistill import cli
from labeldistill import datasets as ds

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference_configs"

# name -> (train images, test images, classes, colour); the training splits are far below
# the files' target_set_size of 50000, so every run clamps it.
STAND_INS = {"mnist": (600, 100, 10, False), "emnist": (260, 52, 26, False), "k49": (490, 98, 49, False),
             "cifar10": (400, 100, 10, True), "cifar100": (600, 100, 100, True), "cub": (200, 200, 200, True)}


def _images(rng, n: int, colour: bool) -> np.ndarray:
    shape = (n, 32, 32, 3) if colour else (n, 28, 28)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


@pytest.fixture(scope="module")
def stand_in_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stand_in_data")
    rng = np.random.default_rng(0)
    for name, (n_train, n_test, classes, colour) in STAND_INS.items():
        np.savez_compressed(root / f"{name}.npz", x_train=_images(rng, n_train, colour),
                            y_train=np.arange(n_train) % classes, x_test=_images(rng, n_test, colour),
                            y_test=np.arange(n_test) % classes)
    return root


@pytest.fixture(autouse=True)
def _fresh_cache():
    ds.clear_cache()
    yield
    ds.clear_cache()


def _target_set(name: str) -> int:
    """The stand-in target set: the training split minus its validation share."""
    n, info = STAND_INS[name][0], ds.get_info(name)
    return n - int(n * info.val_fraction + 0.5)


def _run(file: str, root: Path, out: Path, capsys, *extra: str) -> tuple[dict, list[dict], str]:
    path = REFERENCE / f"{file}.json"
    if not path.is_file():
        pytest.skip(f"the reference's experiment files are not at {REFERENCE} (clone the repository beside shared/)")
    before = path.read_bytes()
    code = cli.main(["run", str(path), "--set", "epochs=1", "--set", "evaluate.num_test_models=2",
                     "--data-root", str(root), "--out", str(out), "--device", "cpu", "--quiet", *extra])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert path.read_bytes() == before  # the file itself is never changed
    run = out / f"{file}_epochs=1_num_test_models=2"  # the file's name and the overrides that change it
    result = json.loads((run / "result.json").read_text())
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert result["name"] == run.name and len(result["test_accuracy"]) == 2
    assert json.loads((run / "config.json").read_text())["data"]["target_set_size"] == 50000  # as written
    card = json.loads((run / "distilled.json").read_text())
    assert card["recipe"]["head"] == result["head"]
    return result, events, captured.err


def _notices(events: list[dict]) -> list[str]:
    """The notices about sizes the run adjusted. These one-epoch runs on 1,000 stand-in images end
    near chance, which a run also says (a notice of its own, left out here)."""
    return [e["message"] for e in events if e.get("event") == "notice" and "at chance" not in e["message"]]


# file, method, head, target, inner batch, stats gap (None: baseline)
CASES = [
    ("ld_100be_50ib_mn_to_mn_bl_cnn_400e_rr_1234s_v0", "ld-rr", "rr", "mnist", 50, 50),
    ("ld_10be_10ib_c10_to_c10_bl_cnn_400e_or2_1234s_v0", "ld-or2", "linear", "cifar10", 10, 50),
    ("ld_100be_100ib_c100_to_c100_bl_cnn_800e_rr_1234s_v0", "ld-rr", "rr", "cifar100", 100, 100),
    ("ld_10be_10ib_emn_to_k49_ubl_cnn_100e_rr_1234s_v0", "ld-rr", "rr", "k49", 10, 100),
    ("ld_10be_10ib_cub_to_c10_ubl_cnn_400e_or2_1234s_v0", "ld-or2", "linear", "cifar10", 10, 50),
    ("dd_10be_10ib_mn_to_mn_bl_cnn_400e_rr_1234s_v0", "dd-rr", "rr", "mnist", 10, 50),
]


@pytest.mark.parametrize("file,method,head,target,inner,gap", CASES, ids=[c[0] for c in CASES])
def test_reference_file_runs(file, method, head, target, inner, gap, stand_in_root, tmp_path, capsys):
    result, events, err = _run(file, stand_in_root, tmp_path, capsys)
    available = _target_set(target)
    assert (result["method"], result["head"], result["target"]) == (method, head, target)
    eff = result["effective"]
    assert eff["target_set_size"] == eff["available_target_set_size"] == available  # 50000 clamped / ignored
    assert eff["batch_size"] == available  # 1024 clamped to the target set
    assert (eff["inner_batch_size"], eff["stats_gap"], eff["epochs"]) == (inner, gap, 1)
    assert [h["epoch"] for h in result["history"]] == [1]
    # Said once each, in the log and on stderr: the target set (clamped, or ignored for K49) and the batch.
    notes = _notices(events)
    assert len(notes) == 2
    assert ("ignored" if target == "k49" else "target_set_size=50000") in notes[0]
    assert "batch_size=1024" in notes[1]
    assert [line for line in err.splitlines() if "note:" in line and "at chance" not in line] == [
        f"labeldistill: note: {n}" for n in notes]


@pytest.mark.parametrize("file,head", [("ld_10be_10ib_baseline_mn_to_mn_bl_cnn_rr_1234s_v0", "rr"),
                                       ("ld_10be_10ib_baseline_mn_to_mn_bl_cnn_or2_1234s_v0", "linear")])
def test_reference_baselines_learn_with_their_scripts_head(file, head, stand_in_root, tmp_path, capsys):
    """`..._baseline_..._rr_...`: step search and test models with the RR head; the `_or2_` twin linear."""
    result, events, _ = _run(file, stand_in_root, tmp_path, capsys)
    card = json.loads((tmp_path / result["name"] / "distilled.json").read_text())
    assert result["method"] == "baseline" and result["head"] == head and card["recipe"]["head"] == head
    grid = [10, 25, 50, 75] + list(range(100, 1001, 50))
    assert result["effective"]["step_grid"] == grid == [h["num_steps"] for h in result["history"]]
    errors = [h["val_error"] for h in result["history"]]
    assert result["num_steps"] == grid[errors.index(min(errors))]  # the earliest lowest
    # A baseline never draws target minibatches: only the clamped target set is said.
    assert len(_notices(events)) == 1 and "target_set_size=50000" in _notices(events)[0]


def test_a_resumed_reference_run_logs_its_notices_once(stand_in_root, tmp_path, monkeypatch):
    """Interrupted after distilling (the final checkpoint is on disk), then resumed: the log says
    each adjustment once; the resumed run shows them again to the user but does not log them again."""
    from labeldistill import config as C
    from labeldistill import experiment as distill

    path = REFERENCE / "ld_10be_10ib_emn_to_k49_ubl_cnn_100e_rr_1234s_v0.json"
    if not path.is_file():
        pytest.skip(f"the reference's experiment files are not at {REFERENCE}")
    cfg = C.load(path, ["epochs=1", "evaluate.num_test_models=2"])

    def killed(self, *args, **kwargs):
        raise KeyboardInterrupt
    with monkeypatch.context() as m:
        m.setattr(distill.Experiment, "test", killed)
        with pytest.raises(KeyboardInterrupt):
            distill.run_experiment(cfg, out=str(tmp_path), root=str(stand_in_root), handle_signals=False)
    shown = []
    distill.run_experiment(cfg, out=str(tmp_path), root=str(stand_in_root), resume=True, handle_signals=False,
                           progress=lambda event, info: shown.append((event, info)))
    events = [json.loads(line) for line in (tmp_path / cfg.run_name / "metrics.jsonl").read_text().splitlines()]
    notes = _notices(events)
    assert len(notes) == 2 and "ignored" in notes[0] and "batch_size=1024" in notes[1]
    assert [info["message"] for event, info in shown if event == "notice" and "at chance" not in info["message"]] == notes
