import pytest
import torch

from labeldistill import config as C
from labeldistill.data import prepare, remap_classes, select_balanced, select_unbalanced, split_train, to_pixels
from labeldistill.errors import ConfigError


def test_balanced_selection_counts_per_class():
    labels = torch.arange(1000) % 10
    idx = select_balanced(labels, 50, 10, seed=3)
    assert idx.numel() == 50 and idx.unique().numel() == 50
    assert torch.bincount(labels[idx], minlength=10).tolist() == [5] * 10
    assert torch.equal(idx, select_balanced(labels, 50, 10, seed=3))
    assert not torch.equal(idx, select_balanced(labels, 50, 10, seed=4))


def test_balanced_selection_with_more_source_classes_uses_first_met():
    labels = torch.arange(2600) % 26  # 26 letters for 10 digit classes
    idx = select_balanced(labels, 20, 10, seed=0)
    classes = labels[idx]
    assert classes.unique().numel() == 10
    assert torch.bincount(classes, minlength=26).max() == 2
    # the classes used are the first ten met in the seeded shuffled pass
    from labeldistill.seeding import generator
    perm = torch.randperm(2600, generator=generator(0, "base"))
    first = []
    for c in labels[perm].tolist():
        if c not in first:
            first.append(c)
    assert set(classes.tolist()) == set(first[:10])


def test_unbalanced_selection_is_seeded_and_uniform():
    a, b = select_unbalanced(1000, 100, 1), select_unbalanced(1000, 100, 1)
    assert torch.equal(a, b) and a.unique().numel() == 100
    assert not torch.equal(a, select_unbalanced(1000, 100, 2))
    with pytest.raises(ConfigError):
        select_unbalanced(10, 11, 0)


def test_remap_in_order_of_first_appearance_and_error():
    assert remap_classes(torch.tensor([7, 3, 7, 25, 3]), 10).tolist() == [0, 1, 0, 2, 1]
    with pytest.raises(ConfigError, match="cover 11 source classes"):
        remap_classes(torch.arange(11), 10)


def test_split_sizes():
    t, v = split_train(60000, 1 / 6, 0)
    assert (t.numel(), v.numel()) == (50000, 10000)
    t, v = split_train(50000, 0.1, 0)
    assert (t.numel(), v.numel()) == (45000, 5000)
    t, v = split_train(232365, 0.1, 0)
    assert (t.numel(), v.numel()) == (209128, 23237)
    assert torch.cat([t, v]).unique().numel() == 232365


def test_to_pixels_converts_channels_and_size():
    gray = torch.randint(0, 256, (2, 28, 28), dtype=torch.uint8)
    colour = torch.randint(0, 256, (2, 40, 50, 3), dtype=torch.uint8)
    assert to_pixels(gray, 1, 28).shape == (2, 1, 28, 28)
    torch.testing.assert_close(to_pixels(gray, 1, 28)[:, 0], gray.float() / 255)
    assert to_pixels(gray, 3, 32).shape == (2, 3, 32, 32)
    c = to_pixels(colour, 3, 32)
    assert c.shape == (2, 3, 32, 32) and 0 <= c.min() and c.max() <= 1
    assert to_pixels(colour, 1, 28).shape == (2, 1, 28, 28)


def test_prepare_real_mnist(data_root):
    cfg = C.apply(C.Config(), {"data.num_base_examples": 20, "seed": 5})
    d = prepare(cfg, root=data_root)
    assert d.target_x.shape == (50000, 1, 28, 28) and d.val_x.shape[0] == 10000 and d.test_x.shape[0] == 10000
    assert abs(float(d.target_x.mean())) < 0.02 and abs(float(d.target_x.std()) - 1) < 0.02
    assert torch.bincount(d.base_original_labels, minlength=10).tolist() == [2] * 10
    raw_x = torch.from_numpy(__import__("numpy").load(data_root / "mnist.npz")["x_train"])
    torch.testing.assert_close(d.base_pixels[:, 0], raw_x[d.base_indices].float() / 255)
    small = prepare(C.apply(cfg, {"data.target_set_size": 2000, "distill.batch_size": 500}), root=data_root)
    assert small.target_x.shape[0] == 2000 and small.sizes.notes == ()
    torch.testing.assert_close(small.target_x, d.target_x[:2000])  # a prefix of the same split
    # Above the 50,000 of the target set: clamped, as the reference's min(target_set_size, 50000), and said.
    big = prepare(C.apply(cfg, {"data.target_set_size": 50001}), root=data_root)
    torch.testing.assert_close(big.target_x, d.target_x)
    assert len(big.sizes.notes) == 1 and "50001" in big.sizes.notes[0] and "50000" in big.sizes.notes[0]


def test_prepare_cross_dataset_emnist_to_mnist(data_root):
    cfg = C.apply(C.Config(), {"data.source": "emnist", "data.num_base_examples": 30, "seed": 1})
    d = prepare(cfg, root=data_root)
    assert not cfg.balanced and d.base_x.shape == (30, 1, 28, 28)
    assert d.base_original_labels.max() < 26 and d.num_classes == 10
    # EMNIST letters get MNIST's normalisation
    raw = torch.from_numpy(__import__("numpy").load(data_root / "emnist_letters.npz")["x_train"])
    torch.testing.assert_close(d.base_x[:, 0], (raw[d.base_indices].float() / 255 - 0.1307) / 0.3081)


def test_fake_source_is_noise_in_target_shape():
    cfg = C.apply(C.Config(), {"data.source": "fake", "data.target": "mnist5k", "data.num_base_examples": 10})
    d = prepare(cfg)
    assert d.base_x.shape == (10, 1, 28, 28) and torch.all(d.base_indices == -1)
    assert 0 <= d.base_pixels.min() and d.base_pixels.max() <= 1


def _sizes(target_batches=True, **values):
    from labeldistill.data import split_sizes

    cfg = C.apply(C.Config(), values)
    return split_sizes(cfg, {"mnist": 60000, "cifar10": 50000, "cifar100": 50000, "k49": 232365}[cfg.data.target],
                       target_batches)


def test_split_sizes_clamp_like_the_reference_and_say_so():
    # (target, target_set_size) -> (effective target set, validation set): SPEC 2
    plain = _sizes()
    assert (plain.target_set, plain.available, plain.validation, plain.batch_size, plain.notes) == (
        50000, 50000, 10000, 1024, ())
    assert _sizes(**{"data.target_set_size": 50000}).notes == ()
    for target in ("cifar10", "cifar100"):
        s = _sizes(**{"data.source": target, "data.target": target, "data.target_set_size": 50000})
        assert (s.target_set, s.available, s.validation) == (45000, 45000, 5000)
        assert len(s.notes) == 1 and "target_set_size=50000" in s.notes[0] and "45000" in s.notes[0]
    for size in (None, 50000, 1000):
        s = _sizes(**{"data.source": "emnist", "data.target": "k49", "data.target_set_size": size})
        assert (s.target_set, s.validation) == (209128, 23237)  # K49 always uses its whole target set
        assert len(s.notes) == (size is not None) and all("ignored" in n for n in s.notes)
    small = _sizes(**{"data.target_set_size": 100})
    assert (small.target_set, small.batch_size) == (100, 100)
    assert len(small.notes) == 1 and "batch_size=1024" in small.notes[0]
    base = _sizes(target_batches=False, **{"method": "baseline", "data.target_set_size": 100})
    assert base.batch_size == 100 and base.notes == ()  # a direct method draws no target minibatches
