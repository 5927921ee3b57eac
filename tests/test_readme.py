"""The README's "Distill your own dataset" example runs as written: its Python block as a
script, its `mymodule.py` as that file, its command line in a shell, in a fresh folder."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else len(text)]


def blocks(text: str) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in re.finditer(r"```(\w+)\n(.*?)```", text, re.S)]


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    found = blocks(section("Distill your own dataset"))
    kinds = [k for k, _ in found]
    assert kinds == ["python", "python", "bash"], kinds
    folder = tmp_path_factory.mktemp("newcomer")
    script, module, shell = (code for _, code in found)
    assert module.startswith("# mymodule.py\n")
    (folder / "mymodule.py").write_text(module)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", script], cwd=folder, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return folder, done.stdout, shell, env


def test_readme_python_example_distills_a_folder(example):
    folder, stdout, _, _ = example
    assert len(list((folder / "my_images").iterdir())) == 10
    run = folder / "runs" / "ld-rr_my_images_to_my_images_20be_0s_epochs=100"  # epochs=100 names the run too
    result = json.loads((run / "result.json").read_text())
    assert f"test accuracy {result['test_accuracy_mean']:.2f}" in stdout
    assert len(result["test_accuracy"]) == 20 and result["test_accuracy_mean"] > 50  # 10 classes, 20 images
    assert (run / "distilled.json").is_file() and "distilled.json" in stdout


def test_readme_command_line_example_with_a_model_of_ones_own(example):
    """Run after the quickstart, as the README orders them: the quickstart's finished runs are
    there (planted here: the real quickstart runs in test_end_to_end) and stay untouched."""
    from labeldistill import config as config_mod
    from labeldistill.cli import quickstart_configs

    folder, _, shell, env = example
    fixture = Path(__file__).resolve().parent / "fixtures" / "result_v1" / "result.json"
    planted = {}
    for cfg in quickstart_configs():
        run = folder / "runs" / cfg.run_name
        run.mkdir(parents=True)
        (run / "config.json").write_text(json.dumps(config_mod.to_dict(cfg)))
        (run / "result.json").write_bytes(fixture.read_bytes())
        planted[run] = {p.name: p.read_bytes() for p in run.iterdir()}
    done = subprocess.run(["bash", "-c", f"export PATH={Path(sys.executable).parent}:$PATH\n{shell}"], cwd=folder,
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    accuracies = {}
    for method in ("ld-rr", "baseline"):
        # named after the quickstart and the overrides, so it does not collide with the quickstart's own run
        run = folder / "runs" / f"quickstart_arch=mymodule_make_net_source=my_images_target=my_images_{method}"
        result = json.loads((run / "result.json").read_text())
        assert result["arch"] == "mymodule:make_net" and result["source"] == "my_images"
        accuracies[method] = result["test_accuracy_mean"]
    assert accuracies["baseline"] > 30 and accuracies["ld-rr"] > accuracies["baseline"]
    for run, files in planted.items():
        assert {p.name: p.read_bytes() for p in run.iterdir()} == files
