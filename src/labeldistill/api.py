"""One call for the common case: `labeldistill.distill(base, target, method=..., arch=...)`.

It builds a `Config` from its arguments (a config file or `Config` may be the
starting point), runs it exactly as `labeldistill run` would (same protocol,
results, run directory and artifact) and returns a `DistillResult`::

    import labeldistill as ld
    r = ld.distill("mnist5k", method="ld-rr", num_base_examples=20, epochs=5)
    print(r.accuracy, r.labels.shape, r.artifact)

Datasets may be registered names, paths (.npz, image folders, Hugging Face
`save_to_disk` folders), torch `Dataset`s or arrays (see
:func:`labeldistill.sources.as_dataset_name`); architectures registered
names or "package.module:factory" paths, or a factory callable.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from . import config as config_mod
from .errors import ConfigError
from .results import RunResult

__all__ = ["DistillResult", "distill"]


@dataclass
class DistillResult:
    """What `distill` made: the labels of the base images and how well they teach.

    `images` are the base images (the synthetic ones for image distillation) in
    [0, 1] as the models saw them before normalisation (n, C, H, W), never read
    from the dataset again for a run that has its artifact; `labels` their soft labels (n, classes);
    `accuracy` and `accuracy_std` the mean and std of the test accuracy (%) of
    the `result.test_accuracy` test models (`result`: the run's `results.RunResult`);
    `run_dir` and `artifact` where the run and its portable distilled dataset were
    written (None without `out`).
    """

    labels: torch.Tensor
    images: torch.Tensor
    class_names: list[str]
    accuracy: float
    accuracy_std: float
    num_steps: int
    run_dir: Path | None
    artifact: Path | None
    result: RunResult = field(repr=False)

    def __repr__(self) -> str:
        return (f"DistillResult({self.result.method}: {len(self.labels)} base examples, test accuracy "
                f"{self.accuracy:.2f} +- {self.accuracy_std:.2f} % over {len(self.result.test_accuracy)} models, "
                f"{self.num_steps} steps, run_dir={str(self.run_dir) if self.run_dir else None!r})")


def _arch_name(arch: Any) -> str | None:
    if arch is None or isinstance(arch, str):
        return arch
    if callable(arch):  # a factory: registered under its own name for this process
        from .models import MODELS, register_model

        name = f"{getattr(arch, '__module__', 'user')}.{getattr(arch, '__qualname__', 'model')}".replace(":", "_")
        if MODELS.get(name) is not arch:
            register_model(name, arch, overwrite=True)
        return name
    raise ConfigError(f"arch must be a name, 'package.module:factory' or a factory callable, got {type(arch).__name__}")


def distill(base: Any, target: Any = None, *, method: str = "ld-rr", arch: str | Callable | None = None,
            num_base_examples: int | None = None, epochs: int | None = None, seed: int | None = None,
            out: str | Path | None = "runs", name: str | None = None,
            config: str | Path | config_mod.Config | None = None,
            overrides: Mapping[str, Any] | None = None, data_root: str | Path | None = None,
            device: str | None = None, image_size: int | None = None, resume: bool = False,
            overwrite: bool = False, progress: bool | Callable[[str, dict], None] | None = None) -> DistillResult:
    """Learn labels for `num_base_examples` images of `base` that teach `target`, and test them.

    `target` defaults to `base` (within-dataset). `method` is any of
    `labeldistill methods` (or 'package.module:make_labels', a method of your own); `epochs` (label and image distillation) None
    means the reference's count. `config` (a file) is the starting point if given,
    else the defaults; `overrides` sets any other key (``{"evaluate.num_test_models": 5}``).
    `image_size` resizes the images of datasets of your own (paths, arrays, Datasets).
    The run is written to `out/<name>` (None: nothing is written); `resume` continues an
    interrupted run there, `overwrite` replaces a finished one. `progress=True` shows
    the progress of every phase on stderr (bars in a terminal, plain lines every
    $LABELDISTILL_PROGRESS_EVERY seconds otherwise); a callable `progress(event, info)`
    receives the run's events instead (epochs, notices, and 'progress' events: see
    `labeldistill.progress`).
    """
    if isinstance(config, config_mod.Config):
        cfg = config
    else:
        cfg = config_mod.load(config) if config is not None else config_mod.Config()
    base_name = _dataset(base, "base", image_size)
    target_name = base_name if target is None else _dataset(target, "target", image_size)
    values: dict[str, Any] = {"method": method, "data.source": base_name, "data.target": target_name}
    for key, value in (("data.num_base_examples", num_base_examples), ("distill.epochs", epochs), ("seed", seed),
                       ("name", name), ("arch", _arch_name(arch)), ("device", device),
                       ("data.image_size", image_size)):
        if value is not None:
            values[key] = value
    values.update(dict(overrides or {}))
    start, cfg = cfg, config_mod.validate(config_mod.apply(cfg, values))
    # The name follows what these arguments changed, as --set does (without a config: the
    # automatic name, which spells the method, data, base examples and seed, and the rest).
    keys = {config_mod.resolve_key(k) for k in values}
    cfg = replace(cfg, name=config_mod.override_name(start, cfg, keys))
    from .experiment import run_experiment

    result = run_experiment(cfg, out=str(out) if out is not None else None, device=device,
                            root=str(data_root) if data_root is not None else None, progress=progress,
                            resume=resume, overwrite=overwrite, handle_signals=False)
    run_dir = Path(out) / cfg.run_name if out is not None else None
    if not isinstance(result, RunResult):  # a run that just finished (a resumed finished one is read back)
        result = RunResult.from_run(result)
    artifact = run_dir / result.artifact if run_dir is not None and result.artifact else None
    from .data import dataset_options
    from .sources import get_info

    info = get_info(cfg.data.target, **dataset_options(cfg.data))
    return DistillResult(
        labels=result.labels, images=_images(result, run_dir, cfg, info, data_root),
        class_names=list(info.class_names), accuracy=float(result.test_accuracy_mean),
        accuracy_std=float(result.test_accuracy_std), num_steps=result.num_steps,
        run_dir=run_dir, artifact=artifact, result=result)


def _dataset(data: Any, role: str, image_size: int | None) -> str:
    from .sources import as_dataset_name

    return as_dataset_name(data, role=role, image_size=image_size)


def _images(result: RunResult, run_dir: Path | None, cfg, info, data_root) -> torch.Tensor:
    """The images the labels belong to: those the run just used, else the run's stored copy
    (its artifact); only runs from before artifacts re-read real base images from the source."""
    if result.pixels is not None:
        return result.pixels
    from .artifact import run_pixels

    stored = run_pixels(run_dir, result) if run_dir is not None else None
    return stored if stored is not None else _reread_base_images(cfg, info, data_root, result)


def _reread_base_images(cfg, info, data_root, result: RunResult) -> torch.Tensor:
    """Base images of a run without an artifact, in [0, 1] in the shape of the target `info`:
    re-read from the source by their indices."""
    from .data import dataset_options, to_pixels
    from .sources import load_raw

    indices = result.base_indices
    if cfg.data.source == "fake" or (indices < 0).any():
        return torch.empty(0)
    raw = load_raw(cfg.data.source, root=data_root if data_root is not None else cfg.data.root,
                   download=cfg.data.download, **dataset_options(cfg.data))
    return to_pixels(raw.x_train[indices], info.channels, info.image_size)
