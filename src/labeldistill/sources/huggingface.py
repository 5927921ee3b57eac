"""A Hugging Face dataset folder written by ``save_to_disk`` (read with the ``datasets``
library, an optional extra, imported only to read one): its ``train`` (and ``test``)
split, the image and label columns found by feature type or name, or named."""
from __future__ import annotations

from pathlib import Path

from .arrays import finish_splits, data_error, image_array, label_array, same_channels, stack_images

__all__ = ["HF_IMAGE_COLUMNS", "HF_LABEL_COLUMNS", "is_hf_folder", "read_hf"]

# Column names tried, in order, when a Hugging Face dataset's columns are not named in the config
# and no column has the `Image` / `ClassLabel` feature type.
HF_IMAGE_COLUMNS = ("image", "img", "pixel_values", "pixels", "x")
HF_LABEL_COLUMNS = ("label", "labels", "class", "target", "y", "fine_label")


def is_hf_folder(path: Path) -> bool:
    """A folder written by `datasets`' `save_to_disk` (a Dataset or a DatasetDict)."""
    return (path / "dataset_dict.json").is_file() or (
        (path / "state.json").is_file() and (path / "dataset_info.json").is_file())


def _hf_column(ds, given: str | None, kind: str, feature_type, candidates: tuple[str, ...], where: str,
               key: str) -> str:
    columns = list(ds.column_names)
    if given is not None:
        if given not in columns:
            raise data_error(f"{where} has no column '{given}' (data.{key}); its columns: {', '.join(columns)}")
        return given
    typed = [c for c, f in ds.features.items() if isinstance(f, feature_type)]
    if typed:
        return typed[0]
    for c in candidates:
        if c in columns:
            return c
    raise data_error(f"cannot tell which column of {where} holds the {kind} (columns: {', '.join(columns)}); "
                     f"set data.{key}")


def read_hf(path: Path, image_size: int | None, test_fraction: float, image_column: str | None,
             label_column: str | None):
    try:
        import datasets
    except ImportError:
        raise data_error(f"{path} is a Hugging Face dataset (saved with save_to_disk); reading it needs the "
                         "`datasets` library: pip install 'labeldistill[hf]'") from None
    try:
        obj = datasets.load_from_disk(str(path))
    except Exception as exc:
        raise data_error(f"cannot read the Hugging Face dataset {path} ({type(exc).__name__}: {exc})") from None
    if isinstance(obj, datasets.DatasetDict):
        if "train" not in obj:
            raise data_error(f"{path} has the splits {', '.join(obj)} but no 'train'; name the training split 'train' "
                             "(and the test split 'test', else a test_fraction of train is held out)")
        train, test = obj["train"], obj.get("test")
    else:
        train, test = obj, None
    where = str(path)
    img = _hf_column(train, image_column, "images", datasets.Image, HF_IMAGE_COLUMNS, where, "image_column")
    lab = _hf_column(train, label_column, "labels", datasets.ClassLabel, HF_LABEL_COLUMNS, where, "label_column")
    feature = train.features[lab]
    names = tuple(str(n) for n in feature.names) if isinstance(feature, datasets.ClassLabel) else None

    def read(split, name):
        if split is None:
            return None, None
        for col in (img, lab):
            if col not in split.column_names:
                raise data_error(f"{where}: the {name} split has no column '{col}'")
        images = []
        for batch in split.select_columns([img]).iter(batch_size=1024):
            images.extend(image_array(im, where, image_size) for im in batch[img])
        return stack_images(images, f"{where} ({name})"), label_array(split[lab], where, name)

    x_tr, y_tr = read(train, "train")
    x_te, y_te = read(test, "test")
    x_tr, x_te = same_channels(x_tr, x_te)
    return finish_splits(where, x_tr, y_tr, x_te, y_te, names, test_fraction)

