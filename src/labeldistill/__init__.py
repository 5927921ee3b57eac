"""labeldistill: distill a dataset into soft labels for a few real base images."""

__all__ = ["load_distilled", "evaluate_artifact"]


def __getattr__(name: str):
    # Lazy: `import labeldistill` stays cheap; the artifact module pulls in torch and safetensors.
    if name in __all__:
        from . import artifact

        return getattr(artifact, name)
    raise AttributeError(f"module 'labeldistill' has no attribute {name!r}")
