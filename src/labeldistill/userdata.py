"""Datasets of the user's own (paths and in-memory data) under their first name: see
:mod:`labeldistill.sources` (:mod:`~labeldistill.sources.paths`, :mod:`~labeldistill.sources.memory`)."""
from .sources import (DEFAULT_TEST_FRACTION, MEMORY_PREFIX, as_dataset_name, from_arrays, from_torch, is_hf_folder,
                      is_memory_name, is_path_name, short_name, stratified_split)
from .sources.arrays import IMAGE_SUFFIXES, check_labels

__all__ = ["DEFAULT_TEST_FRACTION", "IMAGE_SUFFIXES", "MEMORY_PREFIX", "is_path_name", "is_memory_name", "short_name",
           "from_arrays", "from_torch", "as_dataset_name", "is_hf_folder", "check_labels", "stratified_split"]
