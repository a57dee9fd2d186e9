"""Load registered ODDS datasets by name, or any supported data file by path (the readers are ``core.io``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aeguard.core.io import (  # noqa: F401 (re-exported: the readers moved to the core)
    ARRAY_SUFFIXES,
    LABEL_LIKE,
    TABLE_SUFFIXES,
    _frame_to_float,
    _kind,
    csv_float_kwargs,
    load_table,
    load_xy,
    table_warnings,
)

from .paths import resolve_data_dir
from .registry import LOCAL_SUFFIXES, ODDS, DatasetInfo, find_local_file


def load_dataset(
    name_or_path: str | Path, data_dir: str | Path | None = None, *, label_column: str | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Load a registered ODDS dataset by name (from the resolved data dir) or any supported file by path.

    A string that is a registered name always means the dataset, never a same-named file in the working dir.
    """
    if isinstance(name_or_path, str) and name_or_path.lower() in ODDS:
        return _load_registered(ODDS[name_or_path.lower()], data_dir)
    path = Path(name_or_path).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"{name_or_path!r} is neither a registered ODDS dataset nor an existing file "
            "(see `aeguard datasets list`)"
        )
    if _kind(path) in ("csv", "parquet"):
        frame, y = load_table(path, label_column)
        return _frame_to_float(frame, path), y
    return load_xy(path)


def _load_registered(info: DatasetInfo, data_dir: str | Path | None) -> tuple[np.ndarray, np.ndarray | None]:
    folder = resolve_data_dir(data_dir)
    path = find_local_file(info.name, folder)
    if path is None:
        raise FileNotFoundError(_missing_message(info, folder))
    X, y = load_xy(path)
    if X.shape[1] != info.d:
        # ADBench ships same-named variants with other columns (glass, ionosphere, wbc); never mix them up.
        raise ValueError(
            f"{path} has {X.shape[1]} features but ODDS {info.name} has {info.d}: not the ODDS version"
        )
    return X, y


def _missing_message(info: DatasetInfo, folder: Path) -> str:
    looked_for = ", ".join(f"{info.name}{suffix}" for suffix in LOCAL_SUFFIXES)
    message = f"dataset {info.name!r} not found in {folder} (looked for {looked_for}); "
    if info.url is None:
        return message + (
            "no public download is registered for it, so place the file there yourself or set "
            f"AEGUARD_ODDS_MIRROR and run `aeguard datasets fetch {info.name}`"
        )
    return message + (
        f"run `aeguard datasets fetch {info.name}` or point --data-dir / AEGUARD_DATA at a folder that has it"
    )
