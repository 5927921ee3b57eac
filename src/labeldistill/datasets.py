"""The dataset registry and loaders under their first name: see :mod:`labeldistill.sources`."""
from .sources import DATASETS, DatasetInfo, RawData, clear_cache, dataset_names, default_data_root, get_info, load_raw
from .sources.official import CUB_MD5, CUB_URLS, K49_FILES, K49_URL, SOURCE_FROM_ALL_IMAGES

__all__ = ["DatasetInfo", "RawData", "DATASETS", "dataset_names", "get_info", "default_data_root", "load_raw",
           "clear_cache", "CUB_MD5", "CUB_URLS", "K49_FILES", "K49_URL", "SOURCE_FROM_ALL_IMAGES"]
