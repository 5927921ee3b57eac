"""Named configs shipped inside the package: listed, copied, run by name, and present in a built wheel."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from labeldistill import builtin_configs
from labeldistill import config as config_mod
from labeldistill.cli import main

REPO = Path(__file__).resolve().parents[1]
PACKAGED = sorted((REPO / "src" / "labeldistill" / "configs").glob("*/*.yaml"))


def test_every_packaged_file_is_listed_by_name(capsys):
    assert PACKAGED, "no configs inside the package"
    assert main(["configs"]) == 0
    out = capsys.readouterr().out
    listed = {line.split()[0] for line in out.splitlines() if line.startswith("  ")}
    assert listed == {p.stem for p in PACKAGED}
    assert "mnist_best_100" in listed and "mnist5k_ld-rr" in listed
    # each line carries the file's own description, not the same text for every file
    descriptions = [line.split(None, 1)[1] for line in out.splitlines() if line.startswith("  ")]
    assert len(set(descriptions)) == len(descriptions)


def test_the_clone_paths_lead_to_the_packaged_files():
    # configs/examples and configs/tiny in a clone are the same files as the package's
    for p in PACKAGED:
        assert (REPO / "configs" / p.parent.name / p.name).resolve() == p.resolve()


@pytest.mark.parametrize("name", [p.stem for p in PACKAGED])
def test_a_name_loads_the_same_config_as_its_file(name):
    path = builtin_configs.find(name)
    assert path is not None
    assert config_mod.to_dict(config_mod.load(name)) == config_mod.to_dict(config_mod.load(path))
    assert config_mod.to_dict(config_mod.load(name + ".yaml")) == config_mod.to_dict(config_mod.load(path))


def test_a_file_of_that_name_in_the_working_folder_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("mnist_best_100.yaml").write_text("name: mine\nmethod: baseline\ndata: {source: mnist5k, target: mnist5k}\n")
    assert config_mod.load("mnist_best_100.yaml").name == "mine"
    assert config_mod.load("mnist_best_100").name == "mnist_best_100"  # the bare name is the shipped one


def test_cp_writes_an_editable_copy_and_never_clobbers(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["configs", "cp", "mnist_best_100"]) == 0
    copy = tmp_path / "mnist_best_100.yaml"
    assert copy.read_bytes() == builtin_configs.find("mnist_best_100").read_bytes()
    copy.write_text("# edited\n" + copy.read_text())
    capsys.readouterr()
    assert main(["configs", "cp", "mnist_best_100"]) == 2  # exists: refused, the edit survives
    err = capsys.readouterr().err
    assert "--force" in err and len(err.strip().splitlines()) == 1
    assert copy.read_text().startswith("# edited")
    assert main(["configs", "cp", "mnist_best_100", "--force"]) == 0
    assert copy.read_bytes() == builtin_configs.find("mnist_best_100").read_bytes()
    (tmp_path / "sub").mkdir()
    assert main(["configs", "cp", "mnist5k_ld-rr", "sub"]) == 0  # into a folder
    assert (tmp_path / "sub" / "mnist5k_ld-rr.yaml").is_file()


@pytest.mark.parametrize("argv, expect", [
    (["configs", "cp", "mnist_bset_100"], "did you mean 'mnist_best_100'"),
    (["configs", "cp"], "usage: labeldistill configs cp NAME"),
    (["configs", "cp", "mnist_best_100", "nowhere/at/all.yaml"], "does not exist"),
    (["run", "mnist_bset_100"], "did you mean 'mnist_best_100'"),
    (["show-config", "no_such_config"], "labeldistill configs` lists"),
])
def test_bad_names_are_one_line(argv, expect, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert expect in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_a_built_wheel_runs_a_named_config_outside_a_clone(tmp_path):
    """The wheel carries the configs: `run NAME` works with only the installed package."""
    src = tmp_path / "src"
    shutil.copytree(REPO / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "wheel"), str(src)], capture_output=True, text=True)
    if built.returncode != 0 and "No module named" in built.stderr:
        pytest.skip(f"cannot build a wheel here: {built.stderr.strip().splitlines()[-1]}")
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "wheel").glob("labeldistill-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert {f"labeldistill/configs/{p.parent.name}/{p.name}" for p in PACKAGED} <= set(names)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    away = tmp_path / "elsewhere"  # no configs/ folder here
    away.mkdir()
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from labeldistill.cli import main; "
            "sys.exit(main(sys.argv[2:]))")
    run = subprocess.run([sys.executable, "-c", code, str(site), "run", "mnist5k_baseline", "--out", "runs",
                          "--quiet", "--set", "evaluate.num_test_models=2", "--set", "evaluate.step_grid=[50]"],
                         cwd=away, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    results = list((away / "runs").glob("*/result.json"))
    assert len(results) == 1
    saved = json.loads(results[0].read_text())
    assert saved["method"] == "baseline" and len(saved["test_accuracy"]) == 2
    # and it ran the package it was given, not this clone's
    probe = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import labeldistill; "
                            "print(labeldistill.__file__)", str(site)], cwd=away, capture_output=True, text=True)
    assert probe.stdout.strip().startswith(str(site))


def test_a_listing_cut_short_by_its_reader_says_nothing(tmp_path):
    """`labeldistill configs | head -1`: the reader leaves early; no error line, exit 0."""
    p = subprocess.run(["bash", "-c", f"set -o pipefail; {sys.executable} -m labeldistill.cli configs | head -1"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 0 and p.stdout.startswith("examples:") and p.stderr == ""
