"""A battery of bad inputs: each gives one `labeldistill: error:` line, a non-zero
exit code, no traceback, and leaves existing run directories as they were.

Most cases go through `cli.main` in-process (fast: no interpreter start-up);
`test_subprocess_*` run the real console entry point to prove that nothing
escapes as a traceback.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from labeldistill import cli
from labeldistill.config import Config, apply, to_dict
from labeldistill.results import RunDir

SRC = Path(__file__).resolve().parents[1] / "src"
TINY = {
    "name": "tiny", "method": "ld-rr", "seed": 1, "device": "cpu",
    "data": {"source": "mnist5k", "target": "mnist5k", "num_base_examples": 20},
    "distill": {"epochs": 2, "batch_size": 256, "validate_every": 1},
    "evaluate": {"num_test_models": 1},
}


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def tiny_config(tmp: Path, **changes) -> str:
    cfg = json.loads(json.dumps(TINY))
    for key, value in changes.items():
        sec, _, leaf = key.partition("__")
        if leaf:
            cfg[sec][leaf] = value
        else:
            cfg[sec] = value
    return write(tmp / "tiny.json", json.dumps(cfg))


def fake_run_dir(tmp: Path, *, finished: bool, checkpoint: bytes | dict | None = None, cfg=None) -> Path:
    """A run directory of TINY under tmp/out/tiny without running anything."""
    cfg = cfg or apply(Config(), {"name": "tiny", "method": "ld-rr", "seed": 1, "device": "cpu",
                                  "data.source": "mnist5k", "data.target": "mnist5k",
                                  "data.num_base_examples": 20, "distill.epochs": 2,
                                  "distill.batch_size": 256, "distill.validate_every": 1,
                                  "evaluate.num_test_models": 1})
    run = RunDir(tmp / "out" / "tiny")
    run.write_config(to_dict(cfg))
    run.log({"event": "epoch", "epoch": 1})
    if finished:  # what marks a folder finished (the run's own writer would refuse this stub)
        (run.path / "result.json").write_text(json.dumps({"name": "tiny"}))
    if isinstance(checkpoint, bytes):
        run.checkpoint_path.write_bytes(checkpoint)
    elif checkpoint is not None:
        run.save_checkpoint(checkpoint)
    return run.path


def snapshot(folder: Path) -> dict:
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _legacy(tmp, **extra):
    d = {"balanced_source": True, "baseline": False, "batch_size": 256, "epochs": 2,
         "expname": "ld_20be_10ib_mn_to_mn_bl_cnn_2e_rr_1s_v0", "inner_batch_size": 10, "inner_lr": 0.01,
         "label_smoothing": 0, "num_base_examples": 20, "num_inner_steps": 10, "num_steps_analysis": False,
         "random_seed": 1, "resnet": False, "source": "mnist", "target": "mnist", "target_set_size": 50000,
         "test_various_models": False, **extra}
    return write(tmp / "legacy.json", json.dumps(d))


def _mnist_config(tmp):
    return tiny_config(tmp, data={"source": "mnist", "target": "mnist", "num_base_examples": 20, "download": False})


def _truncated_npz(tmp) -> str:
    """A real archive of the right layout, cut in half (an interrupted copy)."""
    import io

    import numpy as np

    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    np.savez_compressed(buf, x_train=rng.integers(0, 255, (200, 28, 28), dtype=np.uint8),
                        y_train=np.arange(200) % 10, x_test=rng.integers(0, 255, (50, 28, 28), dtype=np.uint8),
                        y_test=np.arange(50) % 10)
    path = tmp / "half" / "mnist.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return str(path.parent)


def _tiny_dict() -> dict:
    from labeldistill.config import from_dict

    return to_dict(from_dict(TINY))


def _other_config_checkpoint(tmp):
    cfg = apply(Config(), {"name": "tiny", "data.source": "mnist5k", "data.target": "mnist5k",
                           "data.num_base_examples": 20, "distill.epochs": 2})
    return fake_run_dir(tmp, finished=False, checkpoint={"config": to_dict(cfg), "epoch": 1})


# (id, setup(tmp) -> argv, words the message must contain)
CASES = [
    ("unknown-key-set", lambda t: ["run", tiny_config(t), "--set", "distill.epoch=3"], ["distill.epochs", "did you mean"]),
    ("unknown-key-file", lambda t: ["run", tiny_config(t, distill__lable_lr=0.1)], ["lable_lr", "label_lr"]),
    ("unknown-section", lambda t: ["run", tiny_config(t, distil={"epochs": 1})], ["distil", "distill"]),
    ("wrong-type-int", lambda t: ["run", tiny_config(t), "--set", "distill.epochs=many"], ["distill.epochs", "integer"]),
    ("wrong-type-float", lambda t: ["run", tiny_config(t, distill__label_lr="fast")], ["label_lr", "number"]),
    ("wrong-type-bool", lambda t: ["run", tiny_config(t), "--set", "data.balanced=maybe"], ["data.balanced", "true or false"]),
    ("unknown-dataset", lambda t: ["run", tiny_config(t), "--set", "data.source=mnsit"], ["mnsit", "did you mean"]),
    ("unknown-arch", lambda t: ["run", tiny_config(t), "--set", "arch=lenett"], ["lenett", "lenet"]),
    ("unknown-method", lambda t: ["run", tiny_config(t, method="ld-r2")], ["ld-r2", "known"]),
    ("unknown-optimizer", lambda t: ["run", tiny_config(t), "--set", "evaluate.optimizer=adamw"], ["adamw", "adam"]),
    ("inner-batch-too-big", lambda t: ["run", tiny_config(t), "--set", "distill.inner_batch_size=50"], ["inner batch", "20"]),
    ("fewer-base-than-classes", lambda t: ["run", tiny_config(t), "--set", "data.num_base_examples=5"], ["fewer than the 10 classes", "data.balanced=false"]),
    ("target-set-size-zero", lambda t: ["run", tiny_config(t), "--set", "data.target_set_size=0"], ["target_set_size"]),
    ("epochs-zero", lambda t: ["run", tiny_config(t), "--set", "distill.epochs=0"], ["distill.epochs", "at least 1"]),
    ("negative-lr", lambda t: ["run", tiny_config(t), "--set", "distill.label_lr=-0.1"], ["label_lr", "positive"]),
    ("nan-lr", lambda t: ["run", tiny_config(t), "--set", "distill.model_lr=nan"], ["model_lr", "finite"]),
    ("unknown-head", lambda t: ["run", tiny_config(t), "--set", "evaluate.head=ridge"], ["evaluate.head", "rr or linear"]),
    ("missing-config-file", lambda t: ["run", str(t / "nope.yaml")], ["not found", "nope.yaml"]),
    ("unparsable-yaml", lambda t: ["run", write(t / "bad.yaml", "data: [unclosed\n  x: 1")], ["bad.yaml"]),
    ("unparsable-json", lambda t: ["run", write(t / "bad.json", '{"method": "ld-rr",')], ["bad.json"]),
    ("config-not-a-mapping", lambda t: ["run", write(t / "list.yaml", "- 1\n- 2\n")], ["mapping"]),
    ("bad-set-syntax", lambda t: ["run", tiny_config(t), "--set", "distill.epochs"], ["key=value"]),
    ("section-as-key", lambda t: ["run", tiny_config(t), "--set", "distill=3"], ["section"]),
    ("legacy-unknown-key", lambda t: ["run", _legacy(t, num_epochs=3)], ["num_epochs"]),
    ("legacy-wrong-type", lambda t: ["run", _legacy(t, resnet="perhaps")], ["resnet", "true or false"]),
    ("missing-data-file", lambda t: ["run", tiny_config(t, data={"source": "mnist", "target": "mnist",
                                                                  "num_base_examples": 20, "download": False}),
                                     "--data-root", str(t / "empty"), "--out", str(t / "out")],
     ["mnist", "not found", "empty"]),
    ("corrupt-npz", lambda t: ["run", tiny_config(t, data={"source": "mnist", "target": "mnist",
                                                            "num_base_examples": 20, "download": False}),
                               "--data-root", str(Path(write(t / "root" / "mnist.npz", "not a zip")).parent),
                               "--out", str(t / "out")], ["mnist.npz"]),
    ("truncated-npz", lambda t: ["run", _mnist_config(t), "--data-root", _truncated_npz(t), "--out", str(t / "out")],
     ["mnist.npz"]),
    ("overwrite-with-missing-data", lambda t: (fake_run_dir(t, finished=True),
                                               ["run", _mnist_config(t), "--data-root", str(t / "empty"),
                                                "--out", str(t / "out"), "--overwrite"])[1],
     ["not found"]),
    ("finished-run-no-overwrite", lambda t: (fake_run_dir(t, finished=True),
                                             ["run", tiny_config(t), "--out", str(t / "out")])[1],
     ["finished run", "--overwrite"]),
    ("unfinished-run-no-resume", lambda t: (fake_run_dir(t, finished=False),
                                            ["run", tiny_config(t), "--out", str(t / "out")])[1],
     ["unfinished run", "--resume"]),
    ("resume-different-config", lambda t: (fake_run_dir(t, finished=False),
                                           ["run", tiny_config(t), "--out", str(t / "out"), "--resume",
                                            "--set", "distill.label_lr=0.01", "--set", "name=tiny"])[1],
     ["different config", "distill.label_lr"]),
    ("checkpoint-of-different-config", lambda t: (_other_config_checkpoint(t),
                                                  ["run", tiny_config(t), "--out", str(t / "out"), "--resume"])[1],
     ["checkpoint", "different config"]),
    ("corrupt-checkpoint", lambda t: (fake_run_dir(t, finished=False, checkpoint=b"\x00garbage"),
                                      ["run", tiny_config(t), "--out", str(t / "out"), "--resume"])[1],
     ["cannot read checkpoint", "checkpoint.pt"]),
    ("incompatible-checkpoint", lambda t: (fake_run_dir(t, finished=False, checkpoint={"config": _tiny_dict(), "epoch": 1}),
                                           ["run", tiny_config(t), "--out", str(t / "out"), "--resume"])[1],
     ["checkpoint does not fit", "--overwrite"]),
    ("folder-without-config", lambda t: ["run", str((t / "empty_dir").mkdir() or t / "empty_dir"), "--resume"],
     ["without config.json"]),
    ("renamed-run-dir", lambda t: (fake_run_dir(t, finished=False).rename(t / "out" / "renamed"),
                                   ["run", str(t / "out" / "renamed"), "--resume"])[1],
     ["holds the run 'tiny'"]),
    ("resume-and-overwrite", lambda t: (fake_run_dir(t, finished=False),
                                        ["run", tiny_config(t), "--out", str(t / "out"), "--resume", "--overwrite"])[1],
     ["contradict"]),
    ("out-is-a-file", lambda t: ["run", tiny_config(t), "--out", write(t / "afile", "x")], ["afile", "is a file"]),
    ("unknown-device-in-config", lambda t: ["run", tiny_config(t, device="tpu")], ["device", "tpu"]),
    ("bad-cuda-index", lambda t: ["run", tiny_config(t, device="cuda:x")], ["device", "cuda:x"]),
    ("show-config-unknown-key", lambda t: ["show-config", "--set", "seeed=3"], ["seeed", "seed"]),
    ("quickstart-bad-set", lambda t: ["run", "--out", str(t / "out"), "--set", "distill.epochs=-1"], ["distill.epochs"]),
]
if not torch.cuda.is_available():
    CASES.append(("cuda-without-cuda", lambda t: ["run", tiny_config(t), "--device", "cuda", "--out", str(t / "out")],
                  ["CUDA is not available", "--device cpu"]))
    CASES.append(("cuda-without-cuda-config", lambda t: ["run", tiny_config(t, device="cuda:1")], ["CUDA"]))


@pytest.mark.parametrize("name,setup,words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line(name, setup, words, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default --out (runs/) must stay empty too
    argv = setup(tmp_path)
    before = snapshot(tmp_path / "out")
    code = cli.main(argv)
    out, err = capsys.readouterr()
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("labeldistill: error: ")
    assert "Traceback" not in err
    for word in words:
        assert word.lower() in lines[0].lower(), (word, lines[0])
    assert snapshot(tmp_path / "out") == before, "a bad input changed the run directory"
    assert not (tmp_path / "runs").exists()


def _subprocess(argv, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "labeldistill.cli", *argv], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300)


SUBPROCESS_CASES = ["unknown-key-set", "corrupt-npz", "corrupt-checkpoint", "finished-run-no-overwrite",
                    "unparsable-yaml", "missing-data-file"]


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_subprocess_bad_input(name, tmp_path):
    _, setup, words = next(c for c in CASES if c[0] == name)
    argv = setup(tmp_path)
    before = snapshot(tmp_path / "out")
    proc = _subprocess(argv, tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("labeldistill: error: "), proc.stderr
    assert snapshot(tmp_path / "out") == before


def test_argparse_errors_are_usage_lines(tmp_path):
    proc = _subprocess(["run", "--device", "tpu"], tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "invalid choice" in proc.stderr
