"""High-bit-depth images are scaled to 8 bits, not clipped; content lost with the alpha
channel is refused (userdata.py). Before, a 16-bit PNG was read as {0, 255}."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from labeldistill import datasets as ds
from labeldistill.errors import DataError
from labeldistill.userdata import from_arrays


@pytest.fixture(autouse=True)
def _fresh_cache():
    ds.clear_cache()
    yield
    ds.clear_cache()


def grey16(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 65536, (8, 8), dtype=np.uint16)


def folder(root, images: dict[str, list[Image.Image]], suffix: str = ".png") -> str:
    """train/ and test/ folders of class folders, both holding `images`."""
    for split in ("train", "test"):
        for cls, ims in images.items():
            (root / split / cls).mkdir(parents=True)
            for i, im in enumerate(ims):
                im.save(root / split / cls / f"{i}{suffix}")
    return str(root)


def as_8bit(a: np.ndarray) -> np.ndarray:
    return np.rint(a / 257).astype(np.uint8)


@pytest.mark.parametrize("suffix", [".png", ".tif", ".pgm"])  # I;16 (png, tif) and I (16-bit pgm)
def test_16bit_folder_keeps_grey_levels(tmp_path, suffix):
    arrays = {"a": [grey16(i) for i in range(3)], "b": [grey16(10 + i) for i in range(3)]}
    name = folder(tmp_path / "d", {c: [Image.fromarray(a) for a in v] for c, v in arrays.items()}, suffix)
    raw = ds.load_raw(name)
    x = raw.x_train.numpy()
    expected = np.stack([as_8bit(a) for a in arrays["a"] + arrays["b"]])
    assert np.array_equal(x, expected)
    assert len(np.unique(x)) > 100  # not binarised


def test_float_image_in_unit_range_is_scaled_and_out_of_range_refused(tmp_path):
    f = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    name = folder(tmp_path / "ok", {"a": [Image.fromarray(f)] * 2, "b": [Image.fromarray(1 - f)] * 2}, ".tif")
    assert np.array_equal(ds.load_raw(name).x_train[0].numpy(), np.rint(f * 255).astype(np.uint8))
    name = folder(tmp_path / "bad", {"a": [Image.fromarray(f * 1000)] * 2, "b": [Image.fromarray(f)] * 2}, ".tif")
    with pytest.raises(DataError, match=r"0.tif: a 32-bit float image with values 0..1e\+03"):
        ds.load_raw(name)


def test_alpha_only_content_is_refused_naming_the_file(tmp_path):
    la = np.zeros((8, 8, 2), np.uint8)
    la[..., 1] = np.arange(64).reshape(8, 8) * 4  # a black image drawn only with transparency
    ok = Image.fromarray(np.full((8, 8), 7, np.uint8))
    name = folder(tmp_path / "d", {"a": [ok, Image.fromarray(la, "LA")], "b": [ok, ok]})
    with pytest.raises(DataError, match=r"train/a/1.png: the image shows its content only through transparency"
                                         r".*flatten"):
        ds.load_raw(name)


def test_palette_transparency_only_is_refused_and_ordinary_alpha_kept(tmp_path):
    p = Image.fromarray((np.arange(64).reshape(8, 8) % 2).astype(np.uint8), "P")
    p.putpalette([0, 0, 0] * 256)  # every entry black: only the transparency of entry 1 draws
    p.info["transparency"] = 1
    name = folder(tmp_path / "p", {"a": [p], "b": [p]})
    with pytest.raises(DataError, match="only through transparency"):
        ds.load_raw(name)
    # Colour that varies with a partly transparent alpha: the colour is the content, kept.
    rgba = np.random.default_rng(0).integers(0, 256, (8, 8, 4), dtype=np.uint8)
    name = folder(tmp_path / "rgba", {"a": [Image.fromarray(rgba, "RGBA")], "b": [Image.fromarray(rgba, "RGBA")]})
    assert np.array_equal(ds.load_raw(name).x_train[0].numpy(), rgba[..., :3])


def test_uint16_npz_and_arrays_are_scaled(tmp_path):
    x = np.stack([grey16(i) for i in range(6)])
    y = np.array([0, 1] * 3)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x[:2], y_test=y[:2])
    assert np.array_equal(ds.load_raw(str(tmp_path / "d.npz")).x_train.numpy(), as_8bit(x))
    name = from_arrays(x, y, x[:2], y[:2])
    assert np.array_equal(ds.load_raw(name).x_train.numpy(), as_8bit(x))


@pytest.mark.parametrize("mode,dtype", [("I;16", "<u2"), ("I;16L", "<u2"), ("I;16B", ">u2"), ("I", "<i4")])
def test_every_16bit_mode_is_scaled(mode, dtype):
    from labeldistill.sources.arrays import to_8bit

    a = grey16(3)
    img = Image.frombytes(mode, (8, 8), a.astype(dtype).tobytes())
    out = to_8bit(img, "x.png")
    assert out.mode == "L" and np.array_equal(np.asarray(out), as_8bit(a))


def test_32bit_integer_image_beyond_16_bits_is_refused():
    from labeldistill.sources.arrays import to_8bit

    img = Image.frombytes("I", (2, 1), np.array([0, 70000], "<i4").tobytes())
    with pytest.raises(DataError, match="x.png: a 32-bit integer image with values 0..70000; save it as an 8- or "
                                        "16-bit"):
        to_8bit(img, "x.png")
