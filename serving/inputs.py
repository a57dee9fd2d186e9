"""Request payloads -> validated float matrices in the artifact's feature order (numpy and pandas only).

Every problem raises :class:`RequestError` with an HTTP status and one sentence that names it (which row,
which feature), so the service can answer 4xx before anything reaches the batcher: a bad request never
shares an onnxruntime batch with good ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np

from aeguard.core.validation import check_features


class RequestError(ValueError):
    """A client error: ``status`` is the HTTP status to answer with (400, 404, 413, 415)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _preview(names: Sequence[str], limit: int = 10) -> str:
    names = list(names)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"{names[:limit]}{more}"


def _check_rows_limit(n_rows: int, max_rows: int) -> None:
    if n_rows == 0:
        raise RequestError("empty batch: no rows to score")
    if n_rows > max_rows:
        raise RequestError(f"batch of {n_rows} rows exceeds the limit of {max_rows} rows per request "
                           "(AEGUARD_MAX_ROWS); split it into smaller requests", status=413)


def _record_problem(row: Mapping[str, Any], names: Sequence[str], index: Mapping[str, int]) -> str:
    unknown = [k for k in row if k not in index]
    missing = [n for n in names if n not in row]
    parts = []
    if missing:
        parts.append(f"missing feature(s) {_preview(missing)}")
    if unknown:
        parts.append(f"unknown feature(s) {_preview(unknown)}")
    return "; ".join(parts)


def matrix_from_rows(rows: Sequence[Any], names: Sequence[str], max_rows: int) -> np.ndarray:
    """``rows``: records ``{feature: value}`` (any key order) or lists of values in feature order."""
    _check_rows_limit(len(rows), max_rows)
    d = len(names)
    if isinstance(rows[0], Mapping):
        expected = set(names)
        pick = itemgetter(*names)
        values = []
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise RequestError(f"row {i}: mixes records and value lists; use one form for the whole batch")
            if row.keys() != expected:
                index = {n: j for j, n in enumerate(names)}
                raise RequestError(f"row {i}: {_record_problem(row, names, index)} "
                                   f"(expected the {d} features {_preview(names)})")
            values.append(pick(row))
    else:
        values = rows
        for i, row in enumerate(rows):
            if isinstance(row, Mapping):
                raise RequestError(f"row {i}: mixes records and value lists; use one form for the whole batch")
            if len(row) != d:
                raise RequestError(f"row {i} has {len(row)} values, expected {d} (one per feature, in the order "
                                   f"{_preview(names)})")
    X = np.array(values, dtype=np.float64).reshape(len(rows), d)
    return _finite(X, names)


def matrix_from_columns(columns: Mapping[str, Sequence[Any]], names: Sequence[str], max_rows: int) -> np.ndarray:
    """``columns``: ``{feature: [values]}`` with every feature present and all columns equally long."""
    index = {n: j for j, n in enumerate(names)}
    problem = _record_problem(columns, names, index)
    if problem:
        raise RequestError(f"columns: {problem} (expected the {len(names)} features {_preview(names)})")
    lengths = {n: len(columns[n]) for n in names}
    if len(set(lengths.values())) > 1:
        short = min(lengths, key=lengths.get)
        long = max(lengths, key=lengths.get)
        raise RequestError(f"columns have different lengths: {short!r} has {lengths[short]} values, {long!r} has "
                           f"{lengths[long]}")
    _check_rows_limit(lengths[names[0]], max_rows)
    X = np.empty((lengths[names[0]], len(names)), dtype=np.float64)
    for j, n in enumerate(names):
        X[:, j] = columns[n]
    return _finite(X, names)


def matrix_from_csv(path: str | Path, names: Sequence[str], max_rows: int) -> np.ndarray:
    """A CSV upload with a header row; columns are matched by name, as ``aeguard score`` does."""
    import pandas as pd

    try:
        frame = pd.read_csv(path, nrows=max_rows + 1)
    except pd.errors.EmptyDataError:
        raise RequestError("empty CSV: no header and no rows") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise RequestError(f"cannot parse the CSV upload: {str(exc).strip().splitlines()[0]}") from None
    _check_rows_limit(len(frame), max_rows)
    try:
        return check_features(frame, feature_names=list(names), n_features=len(names))
    except ValueError as exc:
        raise RequestError(str(exc)) from None


def _finite(X: np.ndarray, names: Sequence[str]) -> np.ndarray:
    try:
        return check_features(X, feature_names=list(names), n_features=len(names))
    except ValueError as exc:
        raise RequestError(str(exc)) from None


def check_threshold_args(threshold: float | None, contamination: Any) -> None:
    """Per-request threshold overrides: one of the two, and finite."""
    if threshold is not None and contamination is not None:
        raise RequestError("give either 'threshold' or 'contamination', not both")
    if threshold is not None and not math.isfinite(threshold):
        raise RequestError("'threshold' must be a finite number")
