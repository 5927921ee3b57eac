"""Errors that the command line reports as one line, without a traceback."""


class LabelDistillError(Exception):
    """Base class: the message says what went wrong and what to do."""


class ConfigError(LabelDistillError):
    """A configuration key, type or value is wrong."""


class DataError(LabelDistillError):
    """A dataset is unknown, missing or corrupt."""


class RunError(LabelDistillError):
    """A run cannot start or continue (existing output, checkpoint mismatch, numerical failure)."""
