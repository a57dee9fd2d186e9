"""Input validation shared by the estimators and the torch-free artifact runtime.

Everything that enters a detector passes through :func:`check_features`, so a bad batch fails with one
``ValueError`` that names the problem (which column, which row) instead of a shape error deep inside torch
or onnxruntime. Where scikit-learn has a wording for a problem (1-D input, too few samples, no features,
sparse, complex or object input, a feature-count mismatch) the message contains it, so
``sklearn.utils.estimator_checks`` recognises it (tests/test_sklearn_conformance.py); this module still
imports only numpy and pandas, because the torch-free scoring path uses it too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

try:  # pandas is a base dependency, but keep the array path usable without it.
    import pandas as pd
except ImportError:  # pragma: no cover - pandas is in the base install
    pd = None


class InputTypeError(TypeError, ValueError):
    """Input of a kind that cannot be a feature matrix (sparse matrices, cells such as dicts).

    A ``TypeError`` as scikit-learn raises for these, and a ``ValueError`` so that one ``except ValueError``
    (serving, the CLI) still catches every bad input.
    """


#: scikit-learn's wording (``check_array(accept_sparse=False)``): the graphs compute on dense rows
SPARSE_MESSAGE = ("Sparse data was passed for X, but dense data is required. Use '.toarray()' to convert to a "
                  "dense numpy array.")


def _is_sparse(X: Any) -> bool:
    """A scipy.sparse matrix or array (or pydata sparse), detected without importing scipy."""
    return type(X).__module__.split(".")[:2] == ["scipy", "sparse"] or type(X).__module__.startswith("sparse")


def _is_frame(X: Any) -> bool:
    return pd is not None and isinstance(X, pd.DataFrame)


def feature_names_of(X: Any) -> list[str] | None:
    """Column names of a DataFrame (as strings), ``None`` for arrays."""
    if _is_frame(X):
        return [str(c) for c in X.columns]
    return None


def default_feature_names(n_features: int) -> list[str]:
    return [f"x{i}" for i in range(n_features)]


def _first_bad_position(mask: np.ndarray) -> tuple[int, int]:
    rows, cols = np.nonzero(mask)
    return int(rows[0]), int(cols[0])


def _as_float_matrix(X: Any) -> np.ndarray:
    if _is_sparse(X):
        raise InputTypeError(SPARSE_MESSAGE)
    if _is_frame(X):
        non_numeric = [str(c) for c, dt in X.dtypes.items() if not pd.api.types.is_numeric_dtype(dt)]
        if non_numeric:
            raise ValueError(f"non-numeric column(s) {non_numeric[:5]}: every feature must be a number")
        if any(pd.api.types.is_complex_dtype(dt) for dt in X.dtypes):
            raise ValueError("Complex data not supported: every feature must be a real number")
        arr = X.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        arr = np.asarray(X)
        if arr.dtype == object or arr.dtype.kind in "USaV":
            try:
                arr = arr.astype(np.float64)
            except TypeError as exc:  # a cell that is no number at all (dict, list, complex): numpy's TypeError
                raise InputTypeError(f"non-numeric values in input: {exc}") from None
            except ValueError as exc:  # a string that does not parse as a number
                raise ValueError(f"non-numeric values in input: {exc}") from None
        elif arr.dtype.kind == "c":
            raise ValueError("Complex data not supported: every feature must be a real number")
        elif arr.dtype.kind not in "biuf":
            raise ValueError(f"unsupported input dtype {arr.dtype}: every feature must be a number")
        arr = arr.astype(np.float64, copy=False)
    if arr.ndim == 1:
        raise ValueError(
            f"expected a 2-D table (rows x features), got a 1-D array of length {arr.shape[0]}. Reshape your "
            "data either using X.reshape(-1, 1) if it has a single feature or X.reshape(1, -1) if it is a "
            "single row"
        )
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D table (rows x features), got shape {arr.shape}")
    return arr


def check_features(
    X: Any,
    *,
    feature_names: Sequence[str] | None = None,
    n_features: int | None = None,
    names_required: bool = False,
    min_samples: int = 1,
    owner: str = "the detector",
) -> np.ndarray:
    """Return ``X`` as a finite float64 matrix, checked against the fitted feature layout.

    - DataFrames are matched to ``feature_names`` by column name: missing or unknown columns raise, and
      columns are reordered to the fitted order (so a caller's column order does not matter).
    - Arrays are checked by width only; ``names_required`` turns that into an error (artifacts fitted on
      named columns accept arrays, but callers who want safety pass frames).
    - NaN, inf, strings and empty batches raise ``ValueError`` naming the first offending cell; fewer than
      ``min_samples`` rows raise (fitting needs 2).
    - Sparse input and cells that are no number (dicts) raise :class:`InputTypeError`.
    - ``owner`` names the fitted model in the feature-count message (scikit-learn passes the class name).
    """
    if X is None:
        raise ValueError("no input data (got None)")
    if _is_frame(X) and feature_names is not None:
        cols = [str(c) for c in X.columns]
        missing = [n for n in feature_names if n not in cols]
        unknown = [c for c in cols if c not in set(feature_names)]
        if missing or unknown:
            parts = []
            if missing:
                parts.append(f"missing feature column(s) {missing[:10]}")
            if unknown:
                parts.append(f"unknown column(s) {unknown[:10]}")
            raise ValueError("; ".join(parts) + f" (expected {len(feature_names)} features)")
        if len(set(cols)) != len(cols):
            raise ValueError("duplicate column names in input")
        X = X.set_axis(cols, axis=1)[list(feature_names)]
    elif names_required and not _is_frame(X):
        raise ValueError("this detector was fitted on named columns; pass a DataFrame")
    arr = _as_float_matrix(X)
    if arr.shape[0] < min_samples:
        what = "empty input" if arr.shape[0] == 0 else f"need at least {min_samples} rows"
        raise ValueError(f"{what}: found array with {arr.shape[0]} sample(s) (shape={arr.shape}) while a minimum "
                         f"of {min_samples} is required.")
    if arr.shape[1] == 0:
        raise ValueError(f"input has no feature columns: found array with 0 feature(s) (shape={arr.shape}) while a "
                         "minimum of 1 is required.")
    expected = n_features if n_features is not None else (len(feature_names) if feature_names else None)
    if expected is not None and arr.shape[1] != expected:
        raise ValueError(f"wrong number of features: X has {arr.shape[1]} features, but {owner} is expecting "
                         f"{expected} features as input")
    finite = np.isfinite(arr)
    if not finite.all():
        r, c = _first_bad_position(~finite)
        name = feature_names[c] if feature_names else f"column {c}"
        kind = "NaN" if np.isnan(arr[r, c]) else "infinite value"
        n_bad = int((~finite).any(axis=1).sum())
        raise ValueError(f"{kind} in row {r}, feature {name!r} ({n_bad} row(s) with NaN/inf); "
                         "impute or drop them before scoring")
    return np.ascontiguousarray(arr)


def check_labels(y: Any, n_rows: int) -> np.ndarray | None:
    """Optional labels: ``None`` stays ``None``; otherwise a 1-D integer array of the right length."""
    if y is None:
        return None
    arr = np.asarray(y)
    if arr.ndim != 1 or arr.shape[0] != n_rows:
        raise ValueError(f"y must be 1-D with {n_rows} entries, got shape {arr.shape}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError("y contains NaN or inf")
    return arr


def check_classes(classes: Any, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Class labels of the fit rows: (sorted distinct labels, int64 codes 0..K-1), refusing missing values."""
    arr = np.asarray(classes.to_numpy() if hasattr(classes, "to_numpy") else classes)
    if arr.ndim != 1 or arr.shape[0] != n_rows:
        raise ValueError(f"classes must be 1-D with {n_rows} entries (one per row), got shape {arr.shape}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError("classes contain NaN or inf; every fit row needs a class")
    if arr.dtype.kind == "O" and any(v is None or (isinstance(v, float) and v != v) for v in arr):
        raise ValueError("classes contain missing values; every fit row needs a class")
    labels, codes = np.unique(arr.astype(str) if arr.dtype.kind == "O" else arr, return_inverse=True)
    return labels, codes.astype(np.int64).reshape(-1)


def check_scores(scores: np.ndarray, what: str = "fit-set scores") -> np.ndarray:
    """Fail loudly on scores that cannot rank anything (non-finite or constant)."""
    scores = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(scores).all():
        n_bad = int((~np.isfinite(scores)).sum())
        raise RuntimeError(f"{what}: {n_bad} non-finite score(s); training diverged or the input is degenerate")
    if scores.size > 1 and np.ptp(scores) == 0.0:
        raise RuntimeError(f"{what} are constant ({scores[0]!r}); the detector cannot rank anything")
    return scores
