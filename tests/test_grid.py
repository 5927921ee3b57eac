"""The paper's grid: the checked-in configs equal the generator's output, and every shipped config validates."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from labeldistill import config as config_mod
from labeldistill import grid
from labeldistill.cli import main

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "configs" / "paper"
# configs/ (the paper's grid, the comparisons) and the named configs inside the package
# (configs/examples and configs/tiny are links to those)
SHIPPED = sorted((REPO / "configs").rglob("*.yaml")) + sorted((REPO / "src" / "labeldistill" / "configs").glob("*/*.yaml"))


def test_checked_in_grid_equals_generator(tmp_path):
    # `labeldistill configs paper` writes exactly the checked-in set: nothing missing, stale or edited.
    assert main(["configs", "paper", "--out", str(tmp_path)]) == 0
    fresh = {p.relative_to(tmp_path).as_posix(): p.read_text() for p in tmp_path.rglob("*.yaml")}
    shipped = {p.relative_to(PAPER).as_posix(): p.read_text() for p in PAPER.rglob("*.yaml")}
    assert sorted(fresh) == sorted(shipped), "run `labeldistill configs paper` and commit configs/paper"
    changed = [k for k in fresh if fresh[k] != shipped[k]]
    assert not changed, f"edited by hand or stale: {changed[:5]}"


@pytest.mark.parametrize("path", SHIPPED, ids=[p.relative_to(REPO).as_posix() for p in SHIPPED])
def test_every_shipped_config_validates(path):
    cfg = config_mod.load(path)
    if "paper" in path.parts:
        assert cfg.run_name == path.stem  # run directories of a sweep are named after the files


def _grid():
    return [config_mod.from_dict(d) for d in grid.paper_grid().values()]


def test_grid_covers_spec_section_8():
    cfgs = _grid()
    names = [c.run_name for c in cfgs]
    assert len(names) == len(set(names))

    def have(**want):
        return [c for c in cfgs if all(_get(c, k) == v for k, v in want.items())]

    for ds in ("mnist", "cifar10"):
        for n in (10, 20, 50, 100, 200, 500):
            for m in ("ld-rr", "ld-or2", "baseline", "baseline-ls"):
                found = have(method=m, source=ds, target=ds, n=n, seed=0)
                assert found, (ds, n, m)
                if m.startswith("ld"):
                    assert {c.distill.epochs for c in found} == {800 if n > 100 else 400}
    assert {c.arch or "default" for c in have(source="cifar10")} == {"default"}  # AlexCifarNet by default
    for src, tgt in (("emnist", "mnist"), ("emnist", "kmnist"), ("emnist", "k49"), ("cub", "cifar10")):
        for n in (10, 100, 500):
            found = have(source=src, target=tgt, n=n, method="ld-rr")
            assert found and all(not c.balanced for c in found), (src, tgt)
    # SPEC 4.4: Kuzushiji-49 100 epochs up to 100 base examples, 200 above; other pairs 400 / 800.
    for c in cfgs:
        if c.method.startswith("ld") and c.data.target == "k49":
            assert c.distill.epochs == (200 if c.data.num_base_examples > 100 else 100), c.run_name
        elif c.method.startswith("ld") and c.data.source != c.data.target:
            assert c.distill.epochs == (800 if c.data.num_base_examples > 100 else 400), c.run_name
    # CIFAR-100 (the reference's ..._100be_100ib_c100_..._800e_... files): inner batch 100, 800 epochs.
    c100 = have(source="cifar100", n=100)
    assert {c.method for c in c100} == {"ld-rr", "ld-or2", "baseline", "baseline-ls"}
    assert all(c.distill.inner_batch_size == 100 for c in c100)
    assert {c.distill.epochs for c in c100 if c.method.startswith("ld")} == {800}
    for src in ("mnist", "emnist"):
        assert {c.seed for c in have(source=src, target="mnist", n=100, method="ld-rr")} >= set(grid.SEEDS)
    sizes = {c.data.target_set_size for c in have(source="emnist", target="mnist")} - {None}
    assert sizes == set(grid.TARGET_SET_SIZES)
    assert all(c.distill.batch_size <= c.data.target_set_size
               for c in cfgs if c.data.target_set_size is not None)
    assert have(source="mnist", target="mnist", steps=True) and have(source="cifar10", steps=True)
    assert {a for c in have(source="cifar10") for a in c.evaluate.test_architectures} == {"lenet", "alexcifarnet", "resnet"}
    assert {o for c in cfgs for o in c.evaluate.test_optimizers} == {"sgd", "momentum", "adam"}
    for ds in ("mnist", "cifar10"):
        assert {c.data.num_base_examples for c in have(source=ds, method="dd-rr")} == {10, 20, 50, 100}
        assert {c.data.num_base_examples for c in have(source=ds, method="dd-or2")} == {10, 20, 50, 100}


def _get(c, key):
    return {"method": c.method, "source": c.data.source, "target": c.data.target, "n": c.data.num_base_examples,
            "seed": c.seed, "steps": c.evaluate.num_steps_analysis}[key]


def test_cross_dataset_baselines_only_where_classes_fit():
    # A true-label baseline remaps source classes to target classes; 26 letters do not fit 10 digits.
    for path, d in grid.paper_grid().items():
        if d["method"].startswith("baseline") and d["data"]["source"] != d["data"]["target"]:
            assert d["data"]["target"] == "k49", path


def test_generator_never_writes_invalid_configs(tmp_path, monkeypatch):
    bad = dict(grid.paper_grid())
    monkeypatch.setattr(grid, "rendered_grid", lambda: {"x/bad.yaml": yaml.safe_dump({"method": "ld-rx"})})
    with pytest.raises(config_mod.ConfigError, match="did you mean 'ld-rr'"):
        grid.write_grid(tmp_path)
    assert not (tmp_path / "x").exists() and bad


def test_regenerating_removes_stale_generated_files_only(tmp_path):
    grid.write_grid(tmp_path)
    stale = tmp_path / "within_mnist" / "old.yaml"
    stale.write_text(grid.HEADER + "name: old\n")
    mine = tmp_path / "within_mnist" / "mine.yaml"
    mine.write_text("name: mine\n")
    grid.write_grid(tmp_path)
    assert not stale.exists() and mine.exists()
