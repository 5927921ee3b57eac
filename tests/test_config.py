import json

import pytest

from labeldistill import config as C
from labeldistill.errors import ConfigError

LEGACY = {"balanced_source": True, "baseline": False, "batch_size": 1024, "epochs": 400,
          "expname": "ld_100be_50ib_mn_to_mn_bl_cnn_400e_rr_1234s_v0", "inner_batch_size": 50,
          "inner_lr": 0.01, "label_smoothing": 0, "num_base_examples": 100, "num_inner_steps": 10,
          "num_steps_analysis": False, "random_seed": 1234, "resnet": False, "source": "mnist",
          "target": "mnist", "target_set_size": 50000, "test_various_models": False}


def test_defaults_follow_the_reference():
    cfg = C.Config()
    assert cfg.distill.batch_size == 1024 and cfg.distill.inner_lr == 0.01
    assert cfg.evaluate.num_test_models == 20
    for n, ib in [(10, 10), (20, 10), (50, 25), (100, 50), (200, 50), (500, 50)]:
        assert C.apply(cfg, {"data.num_base_examples": n}).inner_batch_size == ib
    assert cfg.balanced and not C.apply(cfg, {"source": "emnist"}).balanced


def test_legacy_flat_json_translates(tmp_path):
    path = tmp_path / "exp.json"
    path.write_text(json.dumps(LEGACY))
    cfg = C.load(path)
    assert cfg.method == "ld-rr" and cfg.seed == 1234 and cfg.name == LEGACY["expname"]
    assert cfg.data.num_base_examples == 100 and cfg.data.target_set_size == 50000
    assert cfg.data.balanced is True and cfg.distill.inner_batch_size == 50 and cfg.distill.epochs == 400
    or2 = C.from_dict({**LEGACY, "expname": "ld_10be_emn_to_mn_or2_0s_v0", "source": "emnist"})
    assert or2.method == "ld-or2" and or2.data.source == "emnist"
    base = C.from_dict({**LEGACY, "baseline": True, "label_smoothing": 0.1})
    assert base.method == "baseline-ls" and base.evaluate.label_smoothing == 0.1
    assert C.from_dict({**LEGACY, "baseline": True}).method == "baseline"
    assert C.from_dict({**LEGACY, "resnet": True, "source": "cifar10", "target": "cifar10"}).arch == "resnet"
    dd = C.from_dict({**LEGACY, "expname": "dd_10be_mn_to_mn_or2_0s"})
    assert dd.method == "dd-or2"
    tv = C.from_dict({**LEGACY, "test_various_models": True})
    assert set(tv.evaluate.test_architectures) == {"lenet", "alexcifarnet", "resnet"}


def test_nested_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("method: ld-or2\ndata:\n  num_base_examples: 20\ndistill:\n  epochs: 3\n")
    cfg = C.load(path, ["distill.batch_size=256", "seed=7", "test_optimizers=sgd,adam", "balanced=false"])
    assert (cfg.method, cfg.data.num_base_examples, cfg.distill.epochs) == ("ld-or2", 20, 3)
    assert cfg.distill.batch_size == 256 and cfg.seed == 7 and cfg.data.balanced is False
    assert cfg.evaluate.test_optimizers == ("sgd", "adam")
    assert C.from_dict(C.to_dict(cfg)) == cfg  # the resolved config round-trips


@pytest.mark.parametrize("overrides,message", [
    (["distill.epoch=3"], "did you mean 'distill.epochs'"),
    (["epoch=3"], "did you mean 'epochs'"),
    (["distill.epochs=three"], "must be an integer"),
    (["distill.epochs=0"], "distill.epochs must be at least 1"),
    (["distill.label_lr=-1"], "label_lr must be positive"),
    (["data.balanced=maybe"], "true or false"),
    (["data.num_base_examples=5"], "fewer than the 10 classes"),
    (["distill.inner_batch_size=200"], "inner batch size"),
    (["method=ld-rrr"], "did you mean 'ld-rr'"),
    (["data.source=mnsit"], "did you mean 'mnist'"),
    (["arch=lenet5"], "did you mean 'lenet'"),
    (["evaluate.optimizer=adamw"], "did you mean 'adam'"),
    (["distill.rr_gradients=referance"], "did you mean 'reference'"),
    (["epochs"], "key=value"),
    (["data=3"], "is a section"),
])
def test_bad_values_are_one_line_config_errors(overrides, message):
    from labeldistill.methods import check_config  # the method registry checks the method's name

    with pytest.raises(ConfigError, match=message) as info:
        check_config(C.with_overrides(C.Config(), overrides))
    assert "\n" not in str(info.value)


def test_unknown_keys_in_files(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"dstill": {"epochs": 2}}))
    with pytest.raises(ConfigError, match="did you mean 'distill'"):
        C.load(p)
    p.write_text(json.dumps({**LEGACY, "epochz": 3}))
    with pytest.raises(ConfigError, match="unknown key 'epochz'.*did you mean 'epochs'"):
        C.load(p)
    p.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot parse"):
        C.load(p)
    with pytest.raises(ConfigError, match="not found"):
        C.load(tmp_path / "missing.yaml")


def test_epochs_inner_batch_and_stats_gap_defaults_follow_the_reference():
    # SPEC 4.3 and 4.4: (target, base examples) -> (epochs, inner minibatch, stats gap)
    table = {("mnist", 10): (400, 10, 50), ("mnist", 100): (400, 50, 50), ("mnist", 200): (800, 50, 200),
             ("cifar10", 500): (800, 50, 200), ("kmnist", 50): (400, 25, 50),
             ("cifar100", 100): (800, 100, 100), ("cifar100", 200): (800, 100, 100),
             ("k49", 10): (100, 10, 100), ("k49", 100): (100, 50, 100), ("k49", 200): (200, 50, 100),
             ("k49", 500): (200, 50, 100)}
    for (target, n), want in table.items():
        cfg = C.apply(C.Config(), {"data.source": target, "data.target": target, "data.num_base_examples": n,
                                   "data.balanced": False})
        assert cfg.distill.epochs is None
        assert (cfg.epochs, cfg.inner_batch_size, cfg.stats_gap) == want, (target, n)
    set_ = C.apply(C.Config(), {"data.target": "cifar100", "data.source": "cifar100", "distill.epochs": 3,
                                "distill.inner_batch_size": 20, "distill.stats_gap": 7})
    assert (set_.epochs, set_.inner_batch_size, set_.stats_gap) == (3, 20, 7)  # what the user set wins


def test_evaluate_head_defaults_to_the_methods_own_and_is_validated():
    from labeldistill.methods import evaluation_head, list_methods

    heads = {m.name: evaluation_head(C.apply(C.Config(), {"method": m.name})) for m in list_methods()}
    assert heads == {m.name: m.head for m in list_methods()}  # every method's own, as it declares it
    # the paper's: the RR meta-gradient's methods test with the RR head, the others with a linear one
    assert {m: heads[m] for m in ("ld-rr", "ld-or2", "dd-rr", "dd-or2", "baseline")} == {
        "ld-rr": "rr", "ld-or2": "linear", "dd-rr": "rr", "dd-or2": "linear", "baseline": "linear"}
    assert evaluation_head(C.with_overrides(C.Config(method="baseline"), ["evaluate.head=rr"])) == "rr"
    assert evaluation_head(C.with_overrides(C.Config(method="ld-rr"), ["head=linear"])) == "linear"
    with pytest.raises(ConfigError, match="evaluate.head must be rr or linear.*did you mean 'rr'") as info:
        C.with_overrides(C.Config(), ["evaluate.head=rrr"])
    assert "\n" not in str(info.value)


def test_legacy_baselines_take_the_head_of_their_script():
    from labeldistill.methods import evaluation_head

    for token, head in (("rr", "rr"), ("or2", "linear")):
        for smoothing, method in ((0, "baseline"), (0.1, "baseline-ls")):
            cfg = C.from_dict({**LEGACY, "baseline": True, "label_smoothing": smoothing,
                               "expname": f"ld_100be_50ib_baseline_mn_to_mn_bl_cnn_{token}_1234s_v0"})
            assert (cfg.method, cfg.evaluate.head, evaluation_head(cfg)) == (method, head, head)
    # Not a baseline: the method carries the head, evaluate.head stays unset.
    assert C.from_dict({**LEGACY, "expname": "ld_100be_50ib_mn_to_mn_bl_cnn_400e_or2_1234s_v0"}).evaluate.head is None
    # A name without the script's token (e.g. the reference's short_experiment): the method's own head.
    assert evaluation_head(C.from_dict({**LEGACY, "baseline": True, "expname": "short_experiment"})) == "linear"


def test_effective_dict_equates_a_default_with_its_value():
    implicit = C.Config()
    explicit = C.apply(implicit, {"distill.epochs": 400, "distill.inner_batch_size": 50, "evaluate.head": "rr"})
    assert C.to_dict(implicit) != C.to_dict(explicit)
    # the method's own head comes from the method registry (ld-rr's is rr)
    assert C.effective_dict(implicit, head="rr") == C.effective_dict(explicit, head="rr")
    assert C.effective_dict(implicit, head="linear") != C.effective_dict(explicit, head="linear")
    assert C.effective_dict(implicit) != C.effective_dict(C.apply(implicit, {"distill.epochs": 800}))
