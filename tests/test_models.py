import pytest
import torch

from labeldistill.errors import ConfigError
from labeldistill.models import create_model, list_models

SHAPES = [(1, 28, 10), (3, 32, 10), (3, 32, 100), (1, 28, 49), (1, 32, 26)]


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("channels,size,classes", SHAPES)
def test_every_model_shapes_and_finite(name, channels, size, classes):
    torch.manual_seed(0)
    model = create_model(name, channels, classes, size)
    x = torch.randn(4, channels, size, size)
    logits = model(x)
    feats = model(x, head=False)
    assert logits.shape == (4, classes)
    assert feats.shape == (4, model.feature_dim)
    assert torch.isfinite(logits).all() and torch.isfinite(feats).all()
    logits.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_feature_sizes_follow_the_paper():
    assert create_model("lenet", 1, 10, 28).feature_dim == 84
    assert create_model("alexcifarnet", 3, 10, 32).feature_dim == 192
    assert create_model("resnet", 3, 10, 32).feature_dim == 64


def test_lenet_padding_depends_on_input():
    assert create_model("lenet", 1, 10, 28).conv1.padding == (2, 2)
    assert create_model("lenet", 3, 10, 32).conv1.padding == (0, 0)
    assert create_model("alexcifarnet", 3, 10, 32).fc1.in_features == 4096


def test_resnet_has_two_blocks_per_stage_and_no_running_stats():
    m = create_model("resnet", 3, 10, 32)
    assert len(m.layers) == 6
    assert not list(m.buffers())  # batch statistics always


def test_unknown_model_is_a_config_error():
    with pytest.raises(ConfigError, match="did you mean 'lenet'"):
        create_model("lenett", 1, 10, 28)
    with pytest.raises(ConfigError):
        create_model("lenet", 1, 10, 8)
