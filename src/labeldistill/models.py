"""Model registry: every model is a feature extractor plus a linear classifier head.

`model.features(x)` gives the penultimate features used by the ridge-regression
(RR) variant; `model(x)` gives logits through `model.classifier`.
"""
from __future__ import annotations

import copy
import inspect
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError, did_you_mean
from .plugins import import_object, is_object_path


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


ModelFactory = Callable[..., nn.Module]

MODELS: dict[str, ModelFactory] = {
    "lenet": LeNet,
    "alexcifarnet": AlexCifarNet,
    "resnet": CifarResNet,
}
BUILTIN_MODELS = tuple(MODELS)


def list_models() -> list[str]:
    return sorted(MODELS)


# --------------------------------------------------------------------------- models of the user's own


class WrappedModel(FeatureClassifier):
    """Any `nn.Module` whose last layer is an `nn.Linear`, seen as features plus classifier.

    The last `nn.Linear` (in registration order) becomes `classifier` and is replaced
    by `nn.Identity` inside `body`, so that `body(x)` gives the penultimate features
    (the RR head's input) and `classifier(body(x))` the original logits.
    `wrap_model` checks that equality on a probe batch before the model is used.
    """

    def __init__(self, body: nn.Module, classifier: nn.Linear):
        super().__init__()
        self.body = body
        self.classifier = classifier
        self.feature_dim = classifier.in_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def register_model(name: str, factory: ModelFactory, *, overwrite: bool = False) -> str:
    """Make `factory(in_channels, num_classes, image_size)` available as `arch: NAME` in this process.

    The factory returns a `FeatureClassifier`, or any `nn.Module` whose last layer is
    an `nn.Linear` (see `WrappedModel`). Sweeps that start worker processes do not see
    names registered here; name the factory as `arch: "package.module:factory"` there.
    """
    if not isinstance(name, str) or not name or ":" in name:
        raise ConfigError(f"a model name must be a non-empty string without ':', got {name!r}")
    if not callable(factory):
        raise ConfigError(f"register_model('{name}', ...) needs a callable factory, got {type(factory).__name__}")
    if name in BUILTIN_MODELS or (name in MODELS and not overwrite):
        raise ConfigError(f"architecture '{name}' is already registered; choose another name"
                          + ("" if name in BUILTIN_MODELS else " or pass overwrite=True"))
    MODELS[name] = factory
    return name


def unregister_model(name: str) -> None:
    """Forget a model registered with `register_model` (built-in ones stay)."""
    if name not in BUILTIN_MODELS:
        MODELS.pop(name, None)


def _import_factory(name: str) -> ModelFactory:
    obj = import_object(name, f"architecture '{name}'", "package.module:factory")
    if not callable(obj):
        raise ConfigError(f"architecture '{name}': '{name.partition(':')[2]}' is a {type(obj).__name__}, not a "
                          "callable that builds a model")
    return obj


def resolve_factory(name: str) -> ModelFactory:
    """The factory of a registered name or of a `package.module:factory` path."""
    if name in MODELS:
        return MODELS[name]
    if is_object_path(name):
        return _import_factory(name)
    raise ConfigError(f"unknown architecture '{name}'{did_you_mean(name, MODELS)}; known: {', '.join(list_models())}, "
                      "or 'package.module:factory' for a model of your own")


def check_arch(name: str) -> str:
    resolve_factory(name)
    return name


def default_arch(channels: int) -> str:
    """The paper's choice: LeNet for grayscale targets, AlexCifarNet for colour ones."""
    return "lenet" if channels == 1 else "alexcifarnet"


def _call_factory(name: str, factory: ModelFactory, in_channels: int, num_classes: int, image_size: int,
                  extra: dict) -> nn.Module:

    kwargs = dict(in_channels=in_channels, num_classes=num_classes, image_size=image_size, **extra)
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin without a signature: try keywords
        sig = None
    if sig is not None:
        try:
            sig.bind(**kwargs)
            call = (lambda: factory(**kwargs))
        except TypeError:
            try:
                sig.bind(in_channels, num_classes, image_size)
                call = (lambda: factory(in_channels, num_classes, image_size))
            except TypeError:
                raise ConfigError(f"architecture '{name}': its factory must take in_channels, num_classes and "
                                  f"image_size (by those names or in that order); its signature is {sig}") from None
    else:
        call = (lambda: factory(**kwargs))
    try:
        return call()
    except ConfigError:
        raise
    except Exception as exc:
        first = " ".join(str(exc).split())[:200]
        raise ConfigError(f"architecture '{name}': its factory failed for in_channels={in_channels}, "
                          f"num_classes={num_classes}, image_size={image_size} ({type(exc).__name__}: {first})") from None


def wrap_model(name: str, module: object, in_channels: int, num_classes: int, image_size: int) -> FeatureClassifier:
    """A factory's model as a `FeatureClassifier`: itself if it is one, else a `WrappedModel`
    around its last `nn.Linear`, checked on a probe batch. One-line errors say what is missing."""
    if isinstance(module, FeatureClassifier):
        classifier = getattr(module, "classifier", None)
        if not isinstance(classifier, nn.Linear) or classifier.out_features != num_classes:
            raise ConfigError(f"architecture '{name}': a FeatureClassifier needs `classifier`, an nn.Linear with "
                              f"{num_classes} outputs")
        return module
    if not isinstance(module, nn.Module):
        raise ConfigError(f"architecture '{name}': its factory returned a {type(module).__name__}, not a torch.nn.Module")
    module = copy.deepcopy(module)  # the split below edits the module: never the factory's own object
    linears = [(path, m) for path, m in module.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError(f"architecture '{name}': the model has no nn.Linear layer to use as its classifier; "
                          f"end it with nn.Linear(features, {num_classes})")
    path, last = linears[-1]
    if last.out_features != num_classes:
        raise ConfigError(f"architecture '{name}': its last nn.Linear ('{path}') has {last.out_features} outputs, "
                          f"but the task has {num_classes} classes; build it with num_classes outputs")
    if path == "":
        raise ConfigError(f"architecture '{name}': the model is a single nn.Linear; give it a feature extractor "
                          "(for example nn.Sequential(nn.Flatten(), nn.Linear(...), nn.ReLU(), nn.Linear(...)))")
    probe = torch.randn(2, in_channels, image_size, image_size, generator=torch.Generator().manual_seed(0))
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            expected = module(probe)
    except Exception as exc:
        first = " ".join(str(exc).split())[:200]
        raise ConfigError(f"architecture '{name}': the model fails on a batch of {in_channels}x{image_size}x"
                          f"{image_size} images ({type(exc).__name__}: {first})") from None
    parent_path, _, attr = path.rpartition(".")
    parent = module.get_submodule(parent_path) if parent_path else module
    setattr(parent, attr, nn.Identity())
    wrapped = WrappedModel(module, last)
    with torch.no_grad():
        try:
            got = wrapped(probe)
        except Exception:
            got = None
    module.train(was_training)
    wrapped.train(was_training)
    if not (isinstance(expected, torch.Tensor) and got is not None and got.shape == expected.shape
            and torch.allclose(got, expected, rtol=1e-4, atol=1e-5)):
        raise ConfigError(f"architecture '{name}': its last nn.Linear ('{path}') is not applied last to give the "
                          "logits, so the model cannot be split into features and a classifier; make the logits "
                          "the output of a final nn.Linear, or subclass labeldistill.models.FeatureClassifier "
                          "(features(x) and classifier)")
    return wrapped


def create_model(name: str, in_channels: int, num_classes: int, image_size: int,
                 bn_momentum: float | None = None) -> FeatureClassifier:
    """A fresh model. `bn_momentum` reaches only models with BatchNorm (see `batch_norm`)."""
    factory = resolve_factory(name)
    if factory in BUILTIN_FACTORIES:
        extra = {"bn_momentum": bn_momentum} if getattr(factory, "batchnorm", False) else {}
        return factory(in_channels=in_channels, num_classes=num_classes, image_size=image_size, **extra)
    model = _call_factory(name, factory, in_channels, num_classes, image_size, {})
    return wrap_model(name, model, in_channels, num_classes, image_size)


BUILTIN_FACTORIES = tuple(MODELS.values())


def normalises_with_batch_statistics(model: nn.Module) -> bool:
    """Whether an image's output in eval mode depends on the other images of its batch."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and not m.track_running_stats
               for m in model.modules())
