"""Capped reference sets: the one place that decides which fit rows become graph constants.

Detectors that score new points against stored fit rows (mean-shift targets, kNN/LOF distances, sparse codes,
prototypes) keep a seeded, uniformly drawn subset of at most ``cap_rows`` rows and ``cap_bytes`` bytes per
float32 constant, so no artifact grows with the training set. :class:`ReferenceDraw` says which rows were
kept (``rows``), maps fit rows to their reference position (``own_rows``, -1 when not kept: the leave-self-out
rule for fit-set scores) and writes the manifest block that documents the cap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: cap on one float32 graph constant (README: artifacts stay small enough for an ARM board)
MAX_CONSTANT_BYTES = 32 << 20


def max_reference_rows(n_features: int, cap_rows: int | None, cap_bytes: int = MAX_CONSTANT_BYTES) -> int:
    """Rows kept under both caps for a float32 constant of ``n_features`` columns (at least 2)."""
    by_bytes = max(2, int(cap_bytes) // (4 * max(1, int(n_features))))
    return int(by_bytes if cap_rows is None else min(int(cap_rows), by_bytes))


@dataclass(frozen=True)
class ReferenceDraw:
    """Which of ``n_fit`` rows a reference set keeps; ``rows`` is None when every row is kept."""

    n_fit: int
    n_features: int
    cap_rows: int | None
    cap_bytes: int
    seed: int
    rows: np.ndarray | None

    @property
    def n_ref(self) -> int:
        return self.n_fit if self.rows is None else int(len(self.rows))

    @property
    def capped(self) -> bool:
        return self.rows is not None

    def take(self, values: np.ndarray) -> np.ndarray:
        """The kept rows of ``values`` (any array with ``n_fit`` rows), in fit order."""
        values = np.asarray(values)
        if len(values) != self.n_fit:
            raise ValueError(f"reference draw is over {self.n_fit} rows, got an array of {len(values)}")
        return values if self.rows is None else values[self.rows]

    def own_rows(self) -> np.ndarray:
        """For each fit row its position in the reference set, or -1: fit rows leave themselves out."""
        if self.rows is None:
            return np.arange(self.n_fit, dtype=np.int64)
        own = np.full(self.n_fit, -1, dtype=np.int64)
        own[self.rows] = np.arange(len(self.rows))
        return own

    def manifest(self) -> dict[str, Any]:
        """The manifest block: sizes, caps and seed, so a reader knows what the constants hold."""
        return {"n_fit": int(self.n_fit), "n_ref": self.n_ref, "capped": self.capped,
                "cap_rows": None if self.cap_rows is None else int(self.cap_rows),
                "cap_bytes": int(self.cap_bytes), "bytes": int(self.n_ref * self.n_features * 4),
                "seed": int(self.seed)}


def draw_reference(n_fit: int, n_features: int, cap_rows: int | None = 10000, cap_bytes: int = MAX_CONSTANT_BYTES,
                   seed: int = 0) -> ReferenceDraw:
    """Draw the reference rows: all of them under the caps, else a seeded uniform subset without replacement."""
    if cap_rows is not None and (isinstance(cap_rows, bool) or int(cap_rows) < 2):
        raise ValueError(f"reference cap must be None or an int >= 2 rows, got {cap_rows!r}")
    if int(cap_bytes) < 8:
        raise ValueError(f"reference byte cap must be >= 8, got {cap_bytes!r}")
    cap = max_reference_rows(n_features, cap_rows, cap_bytes)
    rows = None
    if n_fit > cap:
        rows = np.sort(np.random.default_rng(seed).choice(n_fit, cap, replace=False))
    return ReferenceDraw(n_fit=int(n_fit), n_features=int(n_features), cap_rows=cap_rows,
                         cap_bytes=int(cap_bytes), seed=int(seed), rows=rows)
