"""Scoring in chunks whose memory stays under a budget (numpy only: the torch-free runtime uses it too).

A scoring graph's memory grows with the batch: a kNN graph holds a (rows x reference rows) distance matrix.
The exporter records an upper bound of the bytes one row needs (``graph.bytes_per_row`` in the manifest, see
:func:`aeguard.core.export.bytes_per_row`); :func:`chunk_rows` turns it into the largest chunk that fits the
budget, and :func:`run_chunked` is the one loop that scores a matrix chunk by chunk.

The budget is ``AEGUARD_SCORE_MEMORY_MB`` (default 256 MiB) unless a caller passes one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

ENV_BUDGET = "AEGUARD_SCORE_MEMORY_MB"
DEFAULT_BUDGET_MB = 256
#: the largest chunk even when rows are tiny (onnxruntime and torch gain nothing beyond this)
MAX_CHUNK_ROWS = 65536


def budget_bytes(budget_mb: float | None = None) -> int:
    """The scoring memory budget in bytes: ``budget_mb``, else ``$AEGUARD_SCORE_MEMORY_MB``, else 256 MiB."""
    if budget_mb is None:
        raw = os.environ.get(ENV_BUDGET, "").strip()
        try:
            budget_mb = float(raw) if raw else DEFAULT_BUDGET_MB
        except ValueError:
            raise ValueError(f"{ENV_BUDGET} must be a number of MiB, got {raw!r}") from None
    if not budget_mb > 0:
        raise ValueError(f"the scoring memory budget must be > 0 MiB, got {budget_mb}")
    return int(budget_mb * 2**20)


def chunk_rows(bytes_per_row: int | None, budget_mb: float | None = None) -> int:
    """Rows per chunk so that ``rows * bytes_per_row`` stays within the budget (at least 1 row)."""
    if not bytes_per_row:
        return MAX_CHUNK_ROWS
    return int(max(1, min(MAX_CHUNK_ROWS, budget_bytes(budget_mb) // int(bytes_per_row))))


def run_chunked(fn: Callable[[np.ndarray], Mapping[str, np.ndarray]], X: np.ndarray, rows: int,
                names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """``fn`` applied to consecutive ``rows``-row slices of ``X``; the named outputs concatenated in order."""
    if rows < 1:
        raise ValueError(f"chunk rows must be >= 1, got {rows}")
    parts: list[Mapping[str, Any]] = [fn(X[start:start + rows]) for start in range(0, len(X), rows)]
    keys = list(names) if names is not None else list(parts[0])
    return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in keys}
