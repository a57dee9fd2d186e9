"""Read user data files: ``.npz``, MATLAB ``.mat`` (v5 and v7.3/HDF5), CSV and Parquet, with the table checks.

Part of the core because ``aeguard fit`` / ``score`` and the torch-free edge runtime read user files; the
``datasets`` package (registered ODDS sets, fetching) builds on it. Only numpy and pandas are imported at
module level: scipy, h5py and pyarrow are imported inside the functions that need them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

ARRAY_SUFFIXES = (".npz", ".mat")


TABLE_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")


# HDF5 files start with this signature at offset 0 or at a power-of-two user-block offset (MATLAB uses 512).
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


_HDF5_OFFSETS = (0, 512, 1024, 2048)


def load_xy(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Load ``X`` (float64, 2-D) and optional ``y`` (1-D) from an ``.npz`` or MATLAB ``.mat`` file."""
    path = _existing_file(path)
    kind = _kind(path)
    if kind == "npz":
        X, y = _read_npz(path)
    elif kind == "mat":
        X, y = _read_mat_hdf5(path) if _is_hdf5(path) else _read_mat_v5(path)
    else:
        raise ValueError(f"{path}: load_xy reads .npz and .mat files; use load_table for CSV/Parquet")
    return _check_xy(X, y, path)


def load_table(path: str | Path, label_column: str | None = None) -> tuple[pd.DataFrame, np.ndarray | None]:
    """Load a CSV (with header), Parquet, ``.npz`` or ``.mat`` file as a feature frame plus optional labels.

    A named ``label_column`` is split off the features. Array files keep labels in their ``y`` array and get
    feature names ``x0..x{d-1}``, so ``label_column`` may only be None or ``"y"`` for them.
    """
    path = _existing_file(path)
    kind = _kind(path)
    if kind in ("npz", "mat"):
        if label_column not in (None, "y"):
            raise ValueError(
                f"{path}: label_column={label_column!r} does not apply to .{kind} files, whose labels are "
                "the 'y' array"
            )
        X, y = load_xy(path)
        if X.shape[0] == 0:
            raise ValueError(f"{path}: no rows (X has shape {X.shape})")
        return pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])]), y
    frame = _read_csv(path) if kind == "csv" else _read_parquet(path)
    if len(frame) == 0:
        raise ValueError(f"{path}: no rows (a header with {frame.shape[1]} column(s) and no data)")
    return _split_label(frame, label_column, path)


def _existing_file(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no such data file: {path}")
    return path


def _kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz")):
        return "csv"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".npz", ".mat")):
        return name.rsplit(".", 1)[1]
    supported = ", ".join(ARRAY_SUFFIXES + TABLE_SUFFIXES)
    raise ValueError(f"{path}: unsupported data file type (supported: {supported})")


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as data:
            if not hasattr(data, "files"):
                raise ValueError(f"{path}: not an .npz archive (a single .npy array); save X (and y) with np.savez")
            if "X" not in data.files:
                raise ValueError(f"{path}: no array 'X' in .npz (arrays: {', '.join(data.files) or 'none'})")
            return data["X"], (data["y"] if "y" in data.files else None)
    except (zipfile.BadZipFile, EOFError, OSError, MemoryError) as exc:  # a corrupt or truncated archive
        raise ValueError(f"{path}: not a readable .npz archive ({type(exc).__name__}: {exc})") from None


def _read_mat_v5(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    io = _require("scipy.io", "MATLAB .mat files", "scipy")
    contents = io.loadmat(path)
    if "X" not in contents:
        variables = ", ".join(k for k in contents if not k.startswith("__")) or "none"
        raise ValueError(f"{path}: no variable 'X' in .mat file (variables: {variables})")
    X = contents["X"]
    X = X.toarray() if hasattr(X, "toarray") else X  # MATLAB sparse matrices load as scipy.sparse
    return X, contents.get("y")


def _read_mat_hdf5(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    h5py = _require("h5py", "MATLAB v7.3 (HDF5) .mat files", "h5py")
    with h5py.File(path, "r") as f:
        if "X" not in f:
            names = ", ".join(f) or "none"
            raise ValueError(f"{path}: no dataset 'X' in MATLAB v7.3 file (datasets: {names})")
        # MATLAB writes column-major data, so HDF5 sees every matrix transposed.
        X = np.asarray(f["X"][()]).T
        y = np.asarray(f["y"][()]).T if "y" in f else None
    return X, y


def _is_hdf5(path: Path) -> bool:
    with path.open("rb") as fh:
        head = fh.read(_HDF5_OFFSETS[-1] + len(_HDF5_SIGNATURE))
    return any(head[o : o + len(_HDF5_SIGNATURE)] == _HDF5_SIGNATURE for o in _HDF5_OFFSETS)


def _check_xy(X: np.ndarray, y: np.ndarray | None, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    if np.asarray(X).dtype.kind not in "biuf":  # complex would lose its imaginary part silently
        raise ValueError(f"{path}: X is not numeric (dtype {np.asarray(X).dtype}); save real numbers")
    try:
        X = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: X is not numeric ({exc})") from exc
    if X.ndim != 2:
        raise ValueError(f"{path}: X must be 2-D (samples x features), got shape {X.shape}")
    if y is None:
        return X, None
    y = _as_labels(np.asarray(y).ravel())
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"{path}: y has {y.shape[0]} labels but X has {X.shape[0]} rows")
    return X, y


def _as_labels(y: np.ndarray) -> np.ndarray:
    """MATLAB stores 0/1 labels as doubles; make whole-number labels integers."""
    if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        return y.astype(np.int64)
    return y


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, **csv_float_kwargs())
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: no rows (the file is empty)") from None


#: column names that usually hold labels, not features (compared case-insensitively)
LABEL_LIKE = ("label", "labels", "y", "class", "target", "outlier", "outliers", "is_outlier", "anomaly")


def table_warnings(frame: pd.DataFrame, label_column: str | None = None) -> list[str]:
    """One line per sign that a user table was read differently from what its author meant (not errors):
    a header that looks like data, a saved pandas index, label-like columns among the features."""
    names = [str(c) for c in frame.columns]
    out = []
    numeric = [n for n in names if _is_number(n)]
    if names and len(numeric) >= max(1, len(names) // 2):
        out.append(f"the header looks like data ({numeric[:4]}): if the file has no header row, its first data "
                   "row was taken as column names and is not used; add a header row")
    index_like = [n for n in names if n.startswith("Unnamed: ") or n in ("index", "level_0")]
    if index_like:
        out.append(f"column(s) {index_like} look like a saved pandas index (write with index=False, or drop "
                   "them); they are used as features")
    labels = [n for n in names if n.lower() in LABEL_LIKE and n != label_column]
    if labels:
        out.append(f"column(s) {labels} are named like labels and are used as features; pass --label-column "
                   f"{labels[0]} to keep it out of the features")
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def csv_float_kwargs() -> dict:
    """Exact float parsing: pandas < 3 needs ``float_precision='round_trip'``; pandas 3 deprecates it."""
    major = int(pd.__version__.split(".", 1)[0])
    return {"float_precision": "round_trip"} if major < 3 else {}


def _read_parquet(path: Path) -> pd.DataFrame:
    _require("pyarrow", "Parquet files", "pyarrow")
    return pd.read_parquet(path)


def _split_label(
    frame: pd.DataFrame, label_column: str | None, path: Path
) -> tuple[pd.DataFrame, np.ndarray | None]:
    if label_column is None:
        return frame, None
    if label_column not in frame.columns:
        columns = ", ".join(map(str, frame.columns))
        raise ValueError(f"{path}: label column {label_column!r} not found (columns: {columns})")
    return frame.drop(columns=[label_column]), frame[label_column].to_numpy()


def _frame_to_float(frame: pd.DataFrame, path: Path) -> np.ndarray:
    non_numeric = [str(c) for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if non_numeric:
        raise ValueError(f"{path}: non-numeric feature columns {', '.join(non_numeric)}; drop or encode them")
    return frame.to_numpy(dtype=np.float64)


def _require(module: str, purpose: str, package: str):
    """Import an optional dependency, or fail with the package to install instead of a bare ImportError."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"reading {purpose} needs {package}: pip install {package}") from exc
