"""Model registry: every model is a feature extractor plus a linear classifier head.

`model.features(x)` gives the penultimate features used by the ridge-regression
(RR) variant; `model(x)` gives logits through `model.classifier`.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError


class FeatureClassifier(nn.Module):
    """Shared shape of every model: `features` then `classifier`."""

    feature_dim: int

    def features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor, head: bool = True) -> torch.Tensor:
        """Logits, or the features alone with `head=False` (for `functional_call`)."""
        feats = self.features(x)
        return self.classifier(feats) if head else feats


def max_pool2(x: torch.Tensor) -> torch.Tensor:
    """2x2 max-pool. Without a graph (the RR target forward, evaluation) it is the
    maximum of four strided views: the same values, several times faster on the
    CPU than `max_pool2d` (which also computes argmax indices)."""
    if torch.is_grad_enabled() and x.requires_grad:
        return F.max_pool2d(x, 2)
    x = x[..., : x.shape[-2] // 2 * 2, : x.shape[-1] // 2 * 2]
    return torch.maximum(torch.maximum(x[..., 0::2, 0::2], x[..., 0::2, 1::2]),
                         torch.maximum(x[..., 1::2, 0::2], x[..., 1::2, 1::2]))


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """An image batch with channels_last strides, where this CPU's convolutions,
    pooling and ReLU are fastest (LeNet's 1-channel conv1 on 1,024 MNIST images:
    10.6 ms instead of 40.8). A one-channel image counts as NCHW- and
    NHWC-contiguous at once, and convolution then picks NCHW for its output, so
    its channels_last strides are set explicitly (a view: C=1 is never stepped).

    Used by the stacked evaluation models. The models below stay NCHW: with
    channels_last inside LeNet the MNIST LD-rr outer step was 1.7x faster, but
    three seeds of the full protocol ended 0.5-1.8 points lower than with NCHW
    (README, Performance), so it is not the default until that is understood."""
    x = x.contiguous(memory_format=torch.channels_last)
    if x.shape[1] == 1:
        n, _, h, w = x.shape
        x = x.reshape(n, h, w, 1).permute(0, 3, 1, 2)
    return x


class LeNet(FeatureClassifier):
    """LeNet-5: conv 6@5x5 - pool - conv 16@5x5 - pool - fc 120 - fc 84 - classifier.

    28x28 inputs use padding 2 in conv1 (the reference's MNIST net); larger
    inputs such as 32x32 colour images use no padding.
    """

    feature_dim = 84

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28):
        super().__init__()
        pad = 2 if image_size <= 28 else 0
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=pad)
        self.conv2 = nn.Conv2d(6, 16, 5)
        side = ((image_size + 2 * pad - 4) // 2 - 4) // 2
        if side < 1:
            raise ConfigError(f"LeNet needs images of at least 12x12 pixels, got {image_size}x{image_size}")
        self.fc1 = nn.Linear(16 * side * side, 120)
        self.fc2 = nn.Linear(120, 84)
        self.classifier = nn.Linear(84, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = max_pool2(F.relu(self.conv1(x)))
        x = max_pool2(F.relu(self.conv2(x)))
        x = x.flatten(1)
        return F.relu(self.fc2(F.relu(self.fc1(x))))


class AlexCifarNet(FeatureClassifier):
    """The AlexNet-style CIFAR network of the reference implementation."""

    feature_dim = 192

    def __init__(self, in_channels: int = 3, num_classes: int = 10, image_size: int = 32):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 5, padding=2)
        self.conv2 = nn.Conv2d(64, 64, 5, padding=2)
        self.pool = nn.MaxPool2d(3, 2, padding=1)
        self.norm = nn.LocalResponseNorm(4, alpha=0.001 / 9.0, beta=0.75, k=1)
        side = (image_size - 1) // 2 + 1
        side = (side - 1) // 2 + 1
        self.fc1 = nn.Linear(64 * side * side, 384)
        self.fc2 = nn.Linear(384, 192)
        self.classifier = nn.Linear(192, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.pool(F.relu(self.conv1(x))))
        x = self.pool(self.norm(F.relu(self.conv2(x))))
        x = x.flatten(1)
        return F.relu(self.fc2(F.relu(self.fc1(x))))


def batch_norm(planes: int, momentum: float | None) -> nn.BatchNorm2d:
    """BatchNorm with weight 1 and bias 0 (the reference's explicit initialisation).

    `momentum=None`: always the statistics of the batch at hand, in training and
    in eval mode alike, and no buffers (so that many copies train in parallel):
    as in meta-learning, and at test in the reference's or2 script. A float:
    running estimates updated with that momentum in training mode and used in
    eval mode, as at test in the reference's rr script (`model.eval()`).
    """
    if momentum is None:
        return nn.BatchNorm2d(planes, track_running_stats=False)
    return nn.BatchNorm2d(planes, momentum=momentum)


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, bn_momentum: float | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = batch_norm(planes, bn_momentum)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = batch_norm(planes, bn_momentum)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False),
                batch_norm(planes, bn_momentum),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(FeatureClassifier):
    """CIFAR ResNet (the reference's "ResNet-18"): depth 18 -> (18-2)//6 = 2 blocks per stage.

    `bn_momentum` chooses the BatchNorm at test (see `batch_norm`): None (the
    default, and always during meta-learning) normalises with batch statistics.
    """

    feature_dim = 64
    batchnorm = True  # create_model passes bn_momentum

    def __init__(self, in_channels: int = 3, num_classes: int = 10, image_size: int = 32, depth: int = 18,
                 bn_momentum: float | None = None):
        super().__init__()
        blocks = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = batch_norm(16, bn_momentum)
        layers, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(blocks):
                layers.append(BasicBlock(in_planes, planes, stride if i == 0 else 1, bn_momentum))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.classifier = nn.Linear(64, num_classes)
        # The reference's initialisation: He-normal convolutions with fan-out
        # n = k*k*out_channels, BatchNorm weight 1 and bias 0; the linear
        # classifier keeps torch's default, as there.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(F.relu(self.bn1(self.conv1(x))))
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


ModelFactory = Callable[..., FeatureClassifier]

MODELS: dict[str, ModelFactory] = {
    "lenet": LeNet,
    "alexcifarnet": AlexCifarNet,
    "resnet": CifarResNet,
}


def list_models() -> list[str]:
    return sorted(MODELS)


def check_arch(name: str) -> str:
    if name not in MODELS:
        from .config import did_you_mean

        raise ConfigError(f"unknown architecture '{name}'{did_you_mean(name, MODELS)}; known: {', '.join(list_models())}")
    return name


def default_arch(channels: int) -> str:
    """The paper's choice: LeNet for grayscale targets, AlexCifarNet for colour ones."""
    return "lenet" if channels == 1 else "alexcifarnet"


def create_model(name: str, in_channels: int, num_classes: int, image_size: int,
                 bn_momentum: float | None = None) -> FeatureClassifier:
    """A fresh model. `bn_momentum` reaches only models with BatchNorm (see `batch_norm`)."""
    check_arch(name)
    factory = MODELS[name]
    extra = {"bn_momentum": bn_momentum} if getattr(factory, "batchnorm", False) else {}
    return factory(in_channels=in_channels, num_classes=num_classes, image_size=image_size, **extra)


def normalises_with_batch_statistics(model: nn.Module) -> bool:
    """Whether an image's output in eval mode depends on the other images of its batch."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and not m.track_running_stats
               for m in model.modules())
