import math

import pytest
import torch

from labeldistill.errors import ConfigError
from labeldistill.models import create_model, list_models, normalises_with_batch_statistics

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
    assert normalises_with_batch_statistics(m.eval())
    r = create_model("resnet", 3, 10, 32, bn_momentum=0.19)  # the RR head's test models
    assert not normalises_with_batch_statistics(r)
    assert {b.momentum for b in r.modules() if isinstance(b, torch.nn.BatchNorm2d)} == {0.19}
    # models without BatchNorm take no such option and are unaffected
    assert not normalises_with_batch_statistics(create_model("lenet", 1, 10, 28, bn_momentum=0.19))


def test_resnet_initialisation_follows_the_reference():
    """He-normal convolutions, std sqrt(2 / (k*k*out_channels)); BatchNorm weight 1, bias 0."""
    torch.manual_seed(0)
    m = create_model("resnet", 3, 10, 32)
    convs = [c for c in m.modules() if isinstance(c, torch.nn.Conv2d)]
    assert len(convs) == 1 + 6 * 2 + 2  # stem, two per block, two 1x1 shortcuts
    for c in convs:
        w = c.weight.detach().double()
        expected = math.sqrt(2.0 / (c.kernel_size[0] * c.kernel_size[1] * c.out_channels))
        # a sample std of n normal draws is within a few sqrt(1/(2n)) of the truth
        tol = 5 * expected / math.sqrt(2 * w.numel())
        assert abs(float(w.std()) - expected) < tol, (c, float(w.std()), expected)
        assert abs(float(w.mean())) < 5 * expected / math.sqrt(w.numel())
    # torch's default (kaiming-uniform, a=sqrt(5)) has std 1/sqrt(3*fan_in): 2.4x smaller for 64->64 3x3
    last = convs[-1].weight.detach()
    assert last.shape[:2] == (64, 64) and float(last.std()) > 2 / math.sqrt(3 * last[0].numel())
    bns = [b for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d)]
    assert bns and all(torch.equal(b.weight, torch.ones_like(b.weight)) for b in bns)
    assert all(torch.equal(b.bias, torch.zeros_like(b.bias)) for b in bns)


def test_rr_batchnorm_momentum_equals_two_forwards_of_the_reference():
    """The reference's rr training step forwards its minibatch twice in training mode (torch's
    momentum 0.1); one forward at 0.19 leaves the same running estimates."""
    from labeldistill.evaluate import RR_BN_MOMENTUM

    torch.manual_seed(1)
    ref, ours = torch.nn.BatchNorm2d(5).double(), torch.nn.BatchNorm2d(5, momentum=RR_BN_MOMENTUM).double()
    for _ in range(4):
        x = 3 * torch.randn(6, 5, 4, 4, dtype=torch.float64) + 1
        ref(x)
        ref(x)
        ours(x)
    torch.testing.assert_close(ours.running_mean, ref.running_mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(ours.running_var, ref.running_var, rtol=0, atol=1e-12)
    assert not torch.allclose(ours.running_mean, torch.zeros(5, dtype=torch.float64))


def test_unknown_model_is_a_config_error():
    with pytest.raises(ConfigError, match="did you mean 'lenet'"):
        create_model("lenett", 1, 10, 28)
    with pytest.raises(ConfigError):
        create_model("lenet", 1, 10, 8)
