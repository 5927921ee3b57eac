"""The CUDA path: the same numbers as on the CPU, where a GPU is present.

Skipped (with the reason) on machines without CUDA, CI's included; run them on a GPU
machine with `pytest -m cuda tests/test_cuda.py`.
"""
from __future__ import annotations

import json

import pytest
import torch

from labeldistill import config as C
from labeldistill.evaluate import Recipe, train_and_evaluate, train_and_evaluate_sequential
from labeldistill.experiment import run_experiment
from labeldistill.meta.common import Distilled
from labeldistill.meta.or2 import SecondOrder
from labeldistill.meta.rr import RidgeRegression

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")]
GPU = torch.device("cuda")


def _task(n=20, n_eval=60, seed=0, device="cpu", dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 1, 28, 28, generator=g, dtype=dtype)
    labels = torch.softmax(3 * torch.randn(n, 10, generator=g, dtype=dtype), -1)
    ex = torch.randn(n_eval, 1, 28, 28, generator=g, dtype=dtype)
    ey = torch.randint(0, 10, (n_eval,), generator=g)
    return base.to(device), labels.to(device), ex.to(device), ey.to(device)


@pytest.mark.parametrize("head", ["linear", "rr"])
def test_parallel_evaluation_equals_the_sequential_loop_on_the_gpu(head):
    seeds = [3, 1, 4]
    base, labels, ex, ey = _task(device=GPU)
    recipe = Recipe(arch="lenet", head=head, batch_size=8)
    ref = train_and_evaluate_sequential(recipe, base, labels, seeds, 6, ex, ey, eval_steps=[2, 6])
    got = train_and_evaluate(recipe, base, labels, seeds, 6, ex, ey, eval_steps=[2, 6], max_models=2)
    # float64 on the GPU: only reduction order differs between the two paths
    torch.testing.assert_close(got.losses.cpu(), ref.losses.cpu(), rtol=0, atol=1e-8)
    torch.testing.assert_close(got.errors.cpu(), ref.errors.cpu(), rtol=0, atol=1e-9)
    assert len(set(ref.losses[-1].tolist())) == 3  # three different models really trained


@pytest.mark.parametrize("cls", [RidgeRegression, SecondOrder], ids=["ld-rr", "ld-or2"])
def test_an_outer_step_on_the_gpu_matches_the_cpu(cls):
    """The same learner, labels and batches: loss and updated labels agree within float32 tolerance."""
    out = {}
    for name, device in (("cpu", torch.device("cpu")), ("gpu", GPU)):
        base, labels, x_t, _ = _task(n=12, n_eval=32, dtype=torch.float32, device=device)
        y_t = torch.arange(32, device=device) % 10
        head = "rr" if cls is RidgeRegression else "linear"
        learner = cls(Recipe("lenet", head=head, batch_size=8), 1, 10, 28, device, model_lr=1e-3, inner_lr=0.1)
        learner.reset(seed=3)
        distilled = Distilled("labels", base, labels)
        meta_opt = torch.optim.Adam([distilled.param], lr=0.01)
        idx = torch.arange(8, device=device)
        losses = []
        for _ in range(2):  # the second step also sees the first one's model update
            outer, error, inner = learner.step(distilled, meta_opt, x_t, y_t, idx)
            losses.append([float(outer), float(inner)])
        out[name] = (torch.tensor(losses), distilled.param.detach().cpu())
    torch.testing.assert_close(out["gpu"][0], out["cpu"][0], rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(out["gpu"][1], out["cpu"][1], rtol=1e-3, atol=1e-5)
    assert not torch.allclose(out["cpu"][1], _task(n=12, dtype=torch.float32)[1])  # the labels moved


@pytest.mark.parametrize("method", ["ld-rr", "baseline"])
def test_a_whole_tiny_run_completes_on_the_gpu(method, tmp_path):
    cfg = C.apply(C.Config(), {"method": method, "data.source": "mnist5k", "data.target": "mnist5k",
                               "data.num_base_examples": 10, "data.target_set_size": 600, "distill.epochs": 2,
                               "distill.batch_size": 200, "evaluate.num_test_models": 3})
    result = run_experiment(cfg, out=str(tmp_path), device="cuda")
    saved = json.loads((tmp_path / cfg.run_name / "result.json").read_text())
    assert saved["device"].startswith("cuda")
    assert len(saved["test_accuracy"]) == 3 and all(v is not None for v in saved["test_loss"])  # finite
    if method == "baseline":
        assert saved["test_accuracy_mean"] > 20  # chance is 10; two LD epochs may not get there
    assert saved["test_accuracy_mean"] == pytest.approx(result["test_accuracy_mean"])
