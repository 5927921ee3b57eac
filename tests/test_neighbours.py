"""`knn`: nearest-neighbour labels against a plain re-implementation, and k chosen on validation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from labeldistill import config as C
from labeldistill.data import prepare
from labeldistill.experiment import Experiment, run_experiment
from labeldistill.methods import get_method
from labeldistill.methods.neighbours import NEIGHBOURS, neighbour_labels

CFG = {"method": "knn", "data.source": "mnist5k", "data.target": "mnist5k", "data.num_base_examples": 20,
       "data.target_set_size": 700, "evaluate.num_test_models": 3, "evaluate.step_grid": [30, 60]}


def test_labels_are_the_class_shares_of_the_k_nearest_target_images():
    cfg = C.apply(C.Config(), CFG)
    data = prepare(cfg, "cpu", target_batches=False)
    candidates, info = neighbour_labels(Experiment(cfg, data, torch.device("cpu")).context())
    assert info == {} and [c.info["k"] for c in candidates] == list(NEIGHBOURS)
    base = data.base_x.flatten(1).double().numpy()
    target = data.target_x.flatten(1).double().numpy()
    ys = data.target_y.numpy()
    for cand in candidates:
        k = cand.info["k"]
        want = np.zeros((len(base), 10))
        for i, b in enumerate(base):  # a plain loop: distances, the k smallest, their class shares
            order = np.argsort(((target - b) ** 2).sum(1), kind="stable")[:k]
            want[i] = np.bincount(ys[order], minlength=10) / k
        np.testing.assert_allclose(cand.labels.numpy(), want, atol=1e-6)
        torch.testing.assert_close(cand.labels.sum(1), torch.ones(20))


def test_k_is_chosen_on_validation_and_the_run_beats_chance(tmp_path):
    result = run_experiment(C.apply(C.Config(), {**CFG, "name": "knn"}), out=str(tmp_path), device="cpu",
                            handle_signals=False)
    assert result["label_choice"]["k"] in NEIGHBOURS
    assert result["label_choice"]["candidates"] == [f"{k} nearest neighbours" for k in NEIGHBOURS]
    assert result["test_accuracy_mean"] > 30  # chance is 10
    assert get_method("knn").kind == "direct"


def test_a_target_set_smaller_than_k_offers_each_k_at_most_once():
    cfg = C.apply(C.Config(), {**CFG, "data.target_set_size": 30})
    data = prepare(cfg, "cpu", target_batches=False)
    candidates, _ = neighbour_labels(Experiment(cfg, data, torch.device("cpu")).context())
    assert [c.info["k"] for c in candidates] == [5, 20, 30]
    with pytest.raises(AssertionError):
        torch.testing.assert_close(candidates[0].labels, candidates[-1].labels)
