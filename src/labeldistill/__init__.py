"""labeldistill: distill a dataset into soft labels for a few real base images.

The public API in a few names::

    import labeldistill as ld
    r = ld.distill("mnist5k", method="ld-rr", num_base_examples=20, epochs=5)   # one call
    print(r.accuracy, r.labels.shape, r.artifact)

    cfg = ld.load_config("configs/examples/mnist_ld-rr_100.yaml", ["distill.epochs=10"])
    result = ld.run_experiment(cfg, out="runs", root="../shared/data")      # or a config
    print(result["test_accuracy_mean"], result["labels"].shape)

Data of your own: a path (.npz, image folder, Hugging Face dataset folder), or
`ld.from_arrays(x, y, ...)` / `ld.from_torch(dataset)`; models of your own:
`arch="package.module:factory"` or `ld.register_model(name, factory)`.
"""
from .api import DistillResult, distill
from .config import Config, DataConfig, DistillConfig, EvalConfig
from .config import load as load_config
from .config import with_overrides
from .data import TaskData, prepare
from .experiment import Experiment, run_experiment
from .errors import ConfigError, DataError, LabelDistillError, RunError
from .evaluate import Recipe, train_and_evaluate
from .models import create_model, list_models, register_model, unregister_model
from .sources import dataset_names, from_arrays, from_torch, get_info, load_raw

__version__ = "0.1.0"

__all__ = [
    "Config", "DataConfig", "DistillConfig", "EvalConfig", "load_config", "with_overrides",
    "TaskData", "prepare", "dataset_names", "get_info", "load_raw", "Experiment", "run_experiment",
    "ConfigError", "DataError", "LabelDistillError", "RunError", "Recipe", "train_and_evaluate",
    "create_model", "list_models", "register_model", "unregister_model", "from_arrays", "from_torch",
    "distill", "DistillResult", "load_distilled", "evaluate_artifact", "__version__",
]


def __getattr__(name: str):
    # Lazy: the artifact module (safetensors) loads only when used.
    if name in ("load_distilled", "evaluate_artifact"):
        from . import artifact

        return getattr(artifact, name)
    raise AttributeError(f"module 'labeldistill' has no attribute {name!r}")
