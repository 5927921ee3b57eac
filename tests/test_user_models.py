"""Models of the user's own: `arch: "package.module:factory"`, `register_model`, any
`nn.Module` ending in an `nn.Linear` wrapped as features + classifier (models.py)."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import labeldistill as ld
from labeldistill import config as config_mod
from labeldistill.errors import ConfigError
from labeldistill.evaluate import Recipe, train_and_evaluate, train_and_evaluate_sequential
from labeldistill.models import (MODELS, WrappedModel, create_model, register_model, resolve_factory,
                                 unregister_model, wrap_model)

MODULE = textwrap.dedent('''
    import torch
    from torch import nn

    def make_net(in_channels, num_classes, image_size):
        return nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(8 * (image_size // 2) ** 2, 64), nn.ReLU(),
            nn.Linear(64, num_classes))

    def positional(c, k, s):
        return nn.Sequential(nn.Flatten(), nn.Linear(c * s * s, 16), nn.ReLU(), nn.Linear(16, k))

    def no_linear(in_channels, num_classes, image_size):
        return nn.Sequential(nn.Conv2d(in_channels, num_classes, image_size), nn.Flatten())

    def wrong_outputs(in_channels, num_classes, image_size):
        return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size ** 2, 16), nn.ReLU(), nn.Linear(16, 3))

    def only_linear(in_channels, num_classes, image_size):
        return nn.Linear(in_channels * image_size ** 2, num_classes)

    class Scaled(nn.Module):  # the logits are not the output of the last Linear
        def __init__(self, c, k, s):
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(c * s * s, 16), nn.ReLU())
            self.fc = nn.Linear(16, k)
        def forward(self, x):
            return 2.0 * self.fc(self.body(x)) + 1.0

    def scaled(in_channels, num_classes, image_size):
        return Scaled(in_channels, num_classes, image_size)

    def not_a_module(in_channels, num_classes, image_size):
        return "a string"

    def bad_signature(width):
        return None

    def raises(in_channels, num_classes, image_size):
        raise RuntimeError("out of ideas")

    NOT_CALLABLE = 3
''')


@pytest.fixture()
def user_module(tmp_path, monkeypatch):
    """`usermodels.py` on sys.path (as PYTHONPATH would put it), forgotten afterwards."""
    (tmp_path / "usermodels.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("usermodels", None)


class ConvBN(nn.Module):
    """A model with BatchNorm (running statistics: buffers) and its classifier as attribute `head`."""

    def __init__(self, in_channels=1, num_classes=10, image_size=8):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(16, 12)
        self.head = nn.Linear(12, num_classes)

    def forward(self, x):
        h = self.pool(torch.relu(self.bn(self.conv(x)))).flatten(1)
        return self.head(torch.relu(self.fc(h)))


def test_wrapped_model_gives_the_original_logits_and_its_features():
    torch.manual_seed(0)
    module = nn.Sequential(nn.Flatten(), nn.Linear(64, 20), nn.ReLU(), nn.Linear(20, 5))
    original = copy.deepcopy(module)
    model = wrap_model("seq", module, 1, 5, 8)
    assert isinstance(model, WrappedModel) and model.feature_dim == 20
    assert [k for k, _ in model.named_parameters()] == ["body.1.weight", "body.1.bias", "classifier.weight",
                                                       "classifier.bias"]
    x = torch.randn(7, 1, 8, 8)
    torch.testing.assert_close(model(x), original(x), rtol=0, atol=0)
    torch.testing.assert_close(model(x, head=False), torch.relu(original[1](x.flatten(1))), rtol=0, atol=0)
    assert torch.equal(model.classifier.weight, original[3].weight)
    assert isinstance(module[3], nn.Linear)  # the factory's own module is left as it was (the split is a copy's)
    again = wrap_model("seq", module, 1, 5, 8)  # so a factory that returns one instance twice works twice
    torch.testing.assert_close(again(x), original(x), rtol=0, atol=0)


def test_factory_path_resolves_and_initialises_by_seed(user_module):
    from labeldistill.evaluate import init_model

    for arch in ("usermodels:make_net", "usermodels:positional"):
        a = init_model(Recipe(arch=arch), 7, 1, 10, 12)
        b = init_model(Recipe(arch=arch), 7, 1, 10, 12)
        c = init_model(Recipe(arch=arch), 8, 1, 10, 12)
        assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
        assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))
        assert a(torch.zeros(3, 1, 12, 12)).shape == (3, 10)


@pytest.mark.parametrize("arch,message", [
    ("nosuchmodule_xyz:make", "cannot import module 'nosuchmodule_xyz' (ModuleNotFoundError: No module named "
                              "'nosuchmodule_xyz'); put the folder that holds it on PYTHONPATH"),
    ("usermodels:absent", "module 'usermodels' has no 'absent'"),
    ("usermodels:NOT_CALLABLE", "'NOT_CALLABLE' is a int, not a callable that builds a model"),
    ("usermodels:", "write it as 'package.module:factory'"),
    ("lenett", "unknown architecture 'lenett' (did you mean 'lenet'?)"),
])
def test_unusable_factory_names_are_config_errors(user_module, arch, message):
    with pytest.raises(ConfigError) as info:
        config_mod.with_overrides(config_mod.Config(), [f"arch={arch}"])
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("factory,message", [
    ("no_linear", "has no nn.Linear layer to use as its classifier; end it with nn.Linear(features, 10)"),
    ("wrong_outputs", "its last nn.Linear ('3') has 3 outputs, but the task has 10 classes"),
    ("only_linear", "the model is a single nn.Linear; give it a feature extractor"),
    ("scaled", "its last nn.Linear ('fc') is not applied last to give the logits"),
    ("not_a_module", "its factory returned a str, not a torch.nn.Module"),
    ("bad_signature", "its factory must take in_channels, num_classes and image_size"),
    ("raises", "its factory failed for in_channels=1, num_classes=10, image_size=8 (RuntimeError: out of ideas)"),
])
def test_models_without_a_usable_classifier_are_config_errors(user_module, factory, message):
    with pytest.raises(ConfigError) as info:
        create_model(f"usermodels:{factory}", 1, 10, 8)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_register_model(monkeypatch):
    assert register_model("convbn", ConvBN) == "convbn"
    try:
        assert resolve_factory("convbn") is ConvBN
        cfg = config_mod.with_overrides(config_mod.Config(), ["arch=convbn"])
        assert cfg.arch == "convbn"
        model = create_model("convbn", 1, 10, 8)
        assert isinstance(model, WrappedModel) and model.feature_dim == 12
        with pytest.raises(ConfigError, match="already registered; choose another name or pass overwrite=True"):
            register_model("convbn", ConvBN)
        register_model("convbn", ConvBN, overwrite=True)
        with pytest.raises(ConfigError, match="architecture 'lenet' is already registered; choose another name$"):
            register_model("lenet", ConvBN, overwrite=True)
        with pytest.raises(ConfigError, match="without ':'"):
            register_model("a:b", ConvBN)
    finally:
        unregister_model("convbn")
    assert "convbn" not in MODELS


def _task(n=12, n_eval=40, c=1, s=8, seed=0, classes=10):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, c, s, s, generator=g, dtype=torch.float64)
    labels = torch.softmax(3 * torch.randn(n, classes, generator=g, dtype=torch.float64), -1)
    ex = torch.randn(n_eval, c, s, s, generator=g, dtype=torch.float64)
    ey = torch.randint(0, classes, (n_eval,), generator=g)
    return base, labels, ex, ey


@pytest.mark.parametrize("arch,head,augment", [
    ("usermodels:make_net", "linear", 0), ("usermodels:make_net", "rr", 1), ("usermodels:positional", "linear", 0),
    ("convbn", "linear", 0), ("convbn", "rr", 0)])
def test_user_models_train_in_parallel_as_in_the_sequential_loop(user_module, arch, head, augment):
    """No stacked forward for a model of one's own: the vmap path (with BatchNorm buffers for
    `convbn`) equals the plain loop over the ordinary modules, in chunks too."""
    register_model("convbn", ConvBN, overwrite=True)
    try:
        seeds = [3, 1, 4]
        base, labels, ex, ey = _task()
        recipe = Recipe(arch=arch, head=head, batch_size=5, augment=augment)
        ref = train_and_evaluate_sequential(recipe, base, labels, seeds, 5, ex, ey, eval_steps=[2, 5])
        got = train_and_evaluate(recipe, base, labels, seeds, 5, ex, ey, eval_steps=[2, 5], max_models=2,
                                 max_images=30)
        torch.testing.assert_close(got.losses, ref.losses, rtol=0, atol=1e-10)
        torch.testing.assert_close(got.errors, ref.errors, rtol=0, atol=1e-9)
        assert not torch.allclose(ref.losses[0], ref.losses[-1])  # they trained
        assert len(set(ref.losses[-1].tolist())) == 3  # and differ by seed
    finally:
        unregister_model("convbn")


def _run_cli(args, cwd, pythonpath):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(pythonpath), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "labeldistill.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=env)


def test_cli_trains_a_model_from_pythonpath_in_ld_rr_and_the_baseline(tmp_path):
    """The acceptance check: `arch: "mymodule:make_net"` from a file on PYTHONPATH, in the quickstart
    (LD-rr and the true-label baseline on the same base images), with the artifact's card naming it."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "mymodule.py").write_text(MODULE)
    out = tmp_path / "runs"
    done = _run_cli(["run", "--set", "arch=mymodule:make_net", "--set", "distill.epochs=2",
                     "--set", "evaluate.num_test_models=2", "--out", str(out), "--quiet"], tmp_path, code)
    assert done.returncode == 0, done.stderr
    for method in ("ld-rr", "baseline"):
        run = out / f"quickstart_arch=mymodule_make_net_epochs=2_num_test_models=2_{method}"
        result = json.loads((run / "result.json").read_text())
        assert result["arch"] == "mymodule:make_net"
        assert result["test_accuracy_mean"] > 30  # 10 classes: it learned
        card = json.loads((run / "distilled.json").read_text())
        assert card["recipe"]["arch"] == "mymodule:make_net"
    # without the file on PYTHONPATH: one line that says what to do, exit code 2, no traceback
    bad = _run_cli(["run", "--set", "arch=mymodule:make_net", "--out", str(out)], tmp_path, tmp_path / "elsewhere")
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "Traceback" not in bad.stderr
    assert "cannot import module 'mymodule'" in bad.stderr and "PYTHONPATH" in bad.stderr


@pytest.mark.parametrize("method", ["ld-or2", "label-solve", "baseline-kd"])
def test_other_methods_accept_a_model_of_ones_own(user_module, method):
    cfg = config_mod.with_overrides(config_mod.Config(), [
        f"method={method}", "arch=usermodels:positional", "data.source=mnist5k", "data.target=mnist5k",
        "data.num_base_examples=20", "distill.epochs=1", "distill.batch_size=512", "evaluate.num_test_models=2",
        "evaluate.step_grid=[50,100]", "solve.num_networks=2", "solve.target_size=300",
        "evaluate.kd_teacher_epochs=1"])
    result = ld.run_experiment(cfg, handle_signals=False)
    assert result["arch"] == "usermodels:positional" and len(result["test_accuracy"]) == 2
    labels = torch.as_tensor(result["labels"])
    if method == "ld-or2":  # one epoch of meta-learning: the labels moved away from where they started
        assert (labels - 0.1).abs().max() > 1e-3
    else:  # labels made directly, a hundred steps of training: well above chance
        assert result["test_accuracy_mean"] > 15


class Dropout(nn.Module):
    def __init__(self, in_channels=1, num_classes=10, image_size=8):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size ** 2, 32), nn.ReLU(),
                                  nn.Dropout(0.5))
        self.out = nn.Linear(32, num_classes)

    def forward(self, x):
        return self.out(self.body(x))


class Branchy(nn.Module):
    """Data-dependent control flow: vmap cannot run it."""

    def __init__(self, in_channels=1, num_classes=10, image_size=8):
        super().__init__()
        self.fc = nn.Linear(in_channels * image_size ** 2, 16)
        self.out = nn.Linear(16, num_classes)

    def forward(self, x):
        h = torch.relu(self.fc(x.flatten(1)))
        if h.mean() > 0:
            h = h * 2
        return self.out(h)


def test_dropout_models_repeat_exactly_and_vmap_failures_fall_back_to_the_loop():
    from labeldistill.evaluate import vmap_supported

    register_model("dropout", Dropout, overwrite=True)
    register_model("branchy", Branchy, overwrite=True)
    try:
        base, labels, ex, ey = _task()
        recipe = Recipe(arch="dropout", batch_size=5)
        torch.manual_seed(123)
        first = train_and_evaluate(recipe, base, labels, [1, 2], 6, ex, ey)
        torch.manual_seed(456)  # the caller's generator state does not matter: the seeds decide
        second = train_and_evaluate(recipe, base, labels, [1, 2], 6, ex, ey)
        torch.testing.assert_close(first.losses, second.losses, rtol=0, atol=0)
        seq = [train_and_evaluate_sequential(recipe, base, labels, [1, 2], 6, ex, ey) for _ in range(2)]
        torch.testing.assert_close(seq[0].losses, seq[1].losses, rtol=0, atol=0)
        branchy = Recipe(arch="branchy", batch_size=5)
        assert vmap_supported(recipe, base) and not vmap_supported(branchy, base)
        got = train_and_evaluate(branchy, base, labels, [3, 4], 5, ex, ey, eval_steps=[2, 5])
        ref = train_and_evaluate_sequential(branchy, base, labels, [3, 4], 5, ex, ey, eval_steps=[2, 5])
        torch.testing.assert_close(got.losses, ref.losses, rtol=0, atol=0)
        assert not torch.allclose(ref.losses[0], ref.losses[-1])
    finally:
        unregister_model("dropout")
        unregister_model("branchy")
