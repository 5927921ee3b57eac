"""What a distilled dataset costs to store, and the budget its labels must fit (SPEC 12).

A distilled dataset is its base images as stored (uint8 for real images, float32
for resized or synthetic ones) plus one label per labelled example (a base
image, or a view of one) in the stored precision: float32 or float16, dense or
top-k (each label's k largest entries as values, plus their class indices as
uint8 up to 256 classes). The views themselves cost nothing more: they are made
again from the base images and the run's seed (their parameters are stored
beside them for convenience, and are not counted).

Budgets: the paper's is one label per base image. With views the default is
'images': the labels take no more bytes than the base images they label
(28x28 grayscale images, 10 classes in float16: 39 labels per image).

`compress(labels, ...)` gives the labels exactly as they are stored: validation,
test models and the artifact all see these values.
"""
from __future__ import annotations

import torch

from .errors import ConfigError

LABEL_DTYPES = {"float32": torch.float32, "float16": torch.float16}
BUDGETS = ("images", "none")


def check_storage(s) -> None:
    """One-line ConfigErrors for a storage section that cannot be honoured."""
    if s.label_dtype not in LABEL_DTYPES:
        raise ConfigError(f"storage.label_dtype must be one of {', '.join(LABEL_DTYPES)}, got {s.label_dtype!r}")
    if not (isinstance(s.top_k, int) and s.top_k >= 0):
        raise ConfigError(f"storage.top_k must be 0 (every entry) or a number of classes, got {s.top_k!r}")
    if s.budget not in BUDGETS:
        raise ConfigError(f"storage.budget must be one of {', '.join(BUDGETS)}, got {s.budget!r}")


def _index_dtype(num_classes: int) -> torch.dtype:
    return torch.uint8 if num_classes <= 256 else torch.int16 if num_classes <= 32767 else torch.int32


def sparse(num_classes: int, top_k: int) -> bool:
    """Whether labels are stored as their top-k entries (a k below the number of classes)."""
    return 0 < top_k < num_classes


def bytes_per_label(num_classes: int, label_dtype: str = "float32", top_k: int = 0) -> int:
    value = torch.tensor([], dtype=LABEL_DTYPES[label_dtype]).element_size()
    if sparse(num_classes, top_k):
        return top_k * (value + torch.tensor([], dtype=_index_dtype(num_classes)).element_size())
    return num_classes * value


def stored_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """Images as a distilled dataset stores them: uint8 when the pixels are exactly k/255
    (unresized real images), else float32."""
    pixels = pixels.detach().float().cpu().contiguous()
    as_u8 = (pixels * 255.0).round().clamp(0, 255).to(torch.uint8)
    if torch.equal(as_u8.float().div_(255.0), pixels):
        return as_u8
    return pixels


def bytes_per_image(pixels: torch.Tensor) -> int:
    """The bytes of one base image as stored."""
    stored = stored_pixels(pixels[:1])
    return stored[0].numel() * stored.element_size()


def max_labels_per_image(pixels: torch.Tensor, num_classes: int, label_dtype: str, top_k: int) -> int:
    """How many labels per base image the 'images' budget allows: the bytes of one stored image
    over the bytes of one label."""
    return bytes_per_image(pixels) // bytes_per_label(num_classes, label_dtype, top_k)


def budget_name(storage_cfg, views) -> str:
    """The budget labels were made under: the paper's without views, else storage.budget."""
    return "one label per image" if views is None else storage_cfg.budget


def check_budget(cfg, pixels: torch.Tensor, num_classes: int) -> None:
    """With views under the 'images' budget, refuse more views per image than the budget allows."""
    s, k = cfg.storage, cfg.views.per_image
    if k == 0 or s.budget == "none":
        return
    most = max_labels_per_image(pixels, num_classes, s.label_dtype, s.top_k)
    if k > most:
        each = bytes_per_label(num_classes, s.label_dtype, s.top_k)
        raise ConfigError(f"views.per_image={k} labels per image take {k * each} bytes, more than the "
                          f"{bytes_per_image(pixels)} bytes of one stored base image (at most {most} labels of "
                          f"{each} bytes); use fewer views, storage.label_dtype=float16 or storage.top_k, or "
                          "storage.budget=none")


def compress(labels: torch.Tensor, label_dtype: str = "float32", top_k: int = 0, loss: str = "ce") -> torch.Tensor:
    """The labels as stored, back in float32: each row's top_k largest entries kept (distributions
    renormalised to sum 1; real-valued labels of the 'mse' learner as they are), then rounded
    to `label_dtype`. float32 and every entry: the labels themselves."""
    out = labels.detach().float()
    c = out.shape[-1]
    if sparse(c, top_k):
        # Rows with at most top_k non-zero entries are kept as they are, so compressing stored
        # labels again changes nothing.
        wide = (out != 0).sum(-1) > top_k
        if bool(wide.any()):
            values, idx = out[wide].topk(top_k, dim=-1)
            cut = torch.zeros_like(out[wide]).scatter_(-1, idx, values)
            if loss == "ce":
                cut = cut / cut.sum(-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
            out = out.clone()
            out[wide] = cut
    return out.to(LABEL_DTYPES[label_dtype]).float()


def pack(labels: torch.Tensor, label_dtype: str = "float32", top_k: int = 0) -> dict[str, torch.Tensor]:
    """Compressed labels (`compress`'s output) as the artifact's tensors: dense `labels` in the
    label dtype, or `label_values` and `label_indices` (each row's top_k entries)."""
    labels = labels.detach().float().cpu()
    dtype = LABEL_DTYPES[label_dtype]
    c = labels.shape[-1]
    if not sparse(c, top_k):
        return {"labels": labels.to(dtype).contiguous()}
    # The entries compress kept are a row's non-zero ones: chosen by magnitude, so that a kept
    # negative value of an 'mse' label is stored rather than a zero that outranks it.
    idx = labels.abs().topk(top_k, dim=-1).indices
    values = labels.gather(-1, idx)
    return {"label_values": values.to(dtype).contiguous(), "label_indices": idx.to(_index_dtype(c)).contiguous()}


def unpack(tensors: dict[str, torch.Tensor], num_classes: int) -> torch.Tensor:
    """`pack`'s tensors -> (N, num_classes) float32 labels."""
    if "labels" in tensors:
        return tensors["labels"].float()
    values, idx = tensors["label_values"].float(), tensors["label_indices"].long()
    return torch.zeros(values.shape[0], num_classes).scatter_(-1, idx, values)


def storage(pixels: torch.Tensor, labels: torch.Tensor, label_dtype: str = "float32", top_k: int = 0,
            budget: str | None = None) -> dict:
    """What a distilled dataset costs: its base images as stored and its labels in their stored
    precision (`budget`: the one it was made under, said beside the counts)."""
    stored = stored_pixels(pixels)
    n, c = int(labels.shape[0]), int(labels.shape[-1])
    out = {"num_images": int(stored.shape[0]), "image_dtype": str(stored.dtype).replace("torch.", ""),
           "image_bytes": stored.numel() * stored.element_size(),
           "num_labels": n, "label_dtype": label_dtype,
           **({"label_top_k": top_k} if sparse(c, top_k) else {}),
           "label_bytes": n * bytes_per_label(c, label_dtype, top_k)}
    out["labels_per_image"] = n / max(out["num_images"], 1)
    out["total_bytes"] = out["image_bytes"] + out["label_bytes"]
    if budget is not None:
        out["budget"] = budget
    return out
