"""ODDS benchmark datasets and the embedded default dataset: registry, paths, loaders and verified fetching.

Importing this package pulls in only numpy and pandas; scipy, h5py, pyarrow, rich and typer load on demand.
"""

from .default import load_default
from .fetch import ChecksumError, FetchResult, fetch_datasets
from .loaders import load_dataset, load_table, load_xy
from .paths import resolve_data_dir
from .registry import ODDS, DatasetInfo, list_datasets

__all__ = [
    "ODDS",
    "ChecksumError",
    "DatasetInfo",
    "FetchResult",
    "fetch_datasets",
    "list_datasets",
    "load_dataset",
    "load_default",
    "load_table",
    "load_xy",
    "resolve_data_dir",
]
