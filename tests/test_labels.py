import torch

from labeldistill.labels import one_hot, project_, soft_cross_entropy, uniform_labels


def test_uniform_start():
    y = uniform_labels(5, 4)
    assert torch.allclose(y, torch.full((5, 4), 0.25))


def test_projection_clamps_and_normalises():
    y = torch.tensor([[0.5, -0.2, 0.9], [2.0, 0.0, 0.0], [0.1, 0.1, 0.2]])
    project_(y)
    expected = torch.tensor([[0.5 / 1.4, 0.0, 0.9 / 1.4], [1.0, 0.0, 0.0], [0.25, 0.25, 0.5]])
    torch.testing.assert_close(y, expected)


def test_projection_of_dead_row_is_uniform_not_nan():
    y = torch.tensor([[-1.0, -2.0], [0.3, 0.7]])
    project_(y)
    torch.testing.assert_close(y, torch.tensor([[0.5, 0.5], [0.3, 0.7]]))


def test_one_hot_and_smoothing():
    y = one_hot(torch.tensor([2, 0]), 4, smoothing=0.1)
    torch.testing.assert_close(y[0], torch.tensor([0.025, 0.025, 0.925, 0.025]))
    torch.testing.assert_close(y.sum(1), torch.ones(2))


def test_soft_cross_entropy_equals_hard_for_one_hot():
    logits = torch.randn(6, 5)
    cls = torch.randint(0, 5, (6,))
    torch.testing.assert_close(soft_cross_entropy(logits, one_hot(cls, 5)),
                               torch.nn.functional.cross_entropy(logits, cls))
