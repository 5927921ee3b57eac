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


@pytest.mark.parametrize("name,channels,size", [("lenet", 1, 28), ("lenet", 3, 32), ("alexcifarnet", 3, 32)])
@pytest.mark.parametrize("grad", [False, True])
def test_models_run_channels_last_and_equal_the_nchw_layers(name, channels, size, grad):
    """The forward runs its convolutions in channels_last (a one-channel batch included, which
    is otherwise ambiguous) and computes what the same layers give on NCHW tensors."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    model = create_model(name, channels, 10, size).double()
    x = torch.randn(4, channels, size, size, dtype=torch.float64, requires_grad=grad)
    formats = []
    model.conv1.register_forward_hook(
        lambda mod, inp, out: formats.append(out.is_contiguous(memory_format=torch.channels_last)))
    got = model(x)
    assert formats == [True]
    if name == "lenet":
        h = F.max_pool2d(F.relu(F.conv2d(x, model.conv1.weight, model.conv1.bias, padding=model.conv1.padding)), 2)
        h = F.max_pool2d(F.relu(F.conv2d(h, model.conv2.weight, model.conv2.bias)), 2)
    else:
        h = model.norm(model.pool(F.relu(F.conv2d(x, model.conv1.weight, model.conv1.bias, padding=2))))
        h = model.pool(model.norm(F.relu(F.conv2d(h, model.conv2.weight, model.conv2.bias, padding=2))))
    h = F.relu(model.fc2(F.relu(model.fc1(h.contiguous().flatten(1)))))
    torch.testing.assert_close(got, model.classifier(h), rtol=0, atol=1e-12)
    if grad:
        (gx,) = torch.autograd.grad(got.sum(), x)
        (ref,) = torch.autograd.grad(model.classifier(h).sum(), x)
        torch.testing.assert_close(gx, ref, rtol=0, atol=1e-12)
