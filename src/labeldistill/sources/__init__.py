"""Data sources: every dataset labeldistill reads answers one small interface,
:class:`DataSource` (``info()``, ``load()``), and :func:`resolve` turns a name into one.

Layers, each importing only those below it:

- :mod:`.base` -- :class:`DatasetInfo`, :class:`RawData`, the :class:`DataSource` protocol;
- :mod:`.registry` -- the registered datasets (:data:`DATASETS`), never edited while loading;
- :mod:`.downloads`, :mod:`.official`, :mod:`.embedded` -- fetching and parsing the registered
  datasets' files; :mod:`.registered` -- their sources and cache;
- :mod:`.arrays` -- checks shared by the user's data; :mod:`.npzfile`, :mod:`.folders`,
  :mod:`.huggingface` -- its file formats; :mod:`.paths` -- the format registry
  (:data:`PATH_FORMATS`) and path sources; :mod:`.memory` -- ``from_arrays`` / ``from_torch``;
- :mod:`.resolver` -- names to sources; :func:`get_info`, :func:`load_raw`, :func:`check_dataset_name`.
"""
from .arrays import DEFAULT_TEST_FRACTION, stratified_split
from .base import DatasetInfo, DataSource, RawData
from .huggingface import is_hf_folder
from .memory import MEMORY_PREFIX, MemorySource, as_dataset_name, from_arrays, from_torch, is_memory_name
from .paths import PATH_FORMATS, PathFormat, PathSource, ReadOptions, is_path_name, short_name
from .registered import EmbeddedSource, GeneratedSource, RegisteredSource
from .registry import DATASETS, dataset_names, default_data_root
from .resolver import check_dataset_name, clear_cache, get_info, load_raw, resolve

__all__ = [
    "DatasetInfo", "RawData", "DataSource", "resolve", "get_info", "load_raw", "clear_cache",
    "check_dataset_name", "DATASETS", "dataset_names", "default_data_root", "DEFAULT_TEST_FRACTION",
    "stratified_split", "is_hf_folder", "MEMORY_PREFIX", "is_memory_name", "from_arrays", "from_torch",
    "as_dataset_name", "PATH_FORMATS", "PathFormat", "PathSource", "ReadOptions", "is_path_name", "short_name",
    "RegisteredSource", "EmbeddedSource", "GeneratedSource", "MemorySource",
]
