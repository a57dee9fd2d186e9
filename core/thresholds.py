"""Thresholds and probability calibration from fit-set scores (numpy only).

Shared by the in-process estimators and the torch-free artifact runtime so both label and calibrate
identically. The meaning of ``contamination``:

- a float in (0, 0.5]: the expected share of outliers in the fit set; ``threshold_`` is the
  (1 - contamination) quantile of the fit-set scores (PyOD convention).
- ``0``: novelty mode on clean data; every fit point is an inlier, ``threshold_`` is the largest fit-set
  score, and only points scoring beyond anything seen in training are flagged.
- ``"auto"``: the share is unknown; ``threshold_`` = median + 3 * 1.4826 * MAD of the fit-set scores, a
  robust z-score of 3 that does not assume a fraction.

``set_threshold(fpr=...)`` treats the fit set as clean and puts the threshold at the (1 - fpr) quantile, so
about ``fpr`` of normal points are flagged.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Contamination = float | str


def check_contamination(contamination: Any) -> Contamination:
    if isinstance(contamination, str):
        if contamination != "auto":
            raise ValueError(f"contamination must be a float in [0, 0.5] or 'auto', got {contamination!r}")
        return contamination
    try:
        value = float(contamination)
    except (TypeError, ValueError):
        raise ValueError(f"contamination must be a float in [0, 0.5] or 'auto', got {contamination!r}") from None
    if not 0.0 <= value <= 0.5:
        raise ValueError(f"contamination must be in [0, 0.5], got {value}")
    return value


def threshold_from_scores(
    scores: np.ndarray, contamination: Contamination | None = None, fpr: float | None = None
) -> float:
    """Threshold on fit-set ``scores`` for a contamination level or a target false-positive rate."""
    scores = np.asarray(scores, dtype=np.float64)
    if fpr is not None:
        if contamination is not None:
            raise ValueError("give either contamination or fpr, not both")
        if not 0.0 < float(fpr) < 1.0:
            raise ValueError(f"fpr must be in (0, 1), got {fpr}")
        return float(np.quantile(scores, 1.0 - float(fpr)))
    contamination = check_contamination(0.1 if contamination is None else contamination)
    if contamination == "auto":
        med = float(np.median(scores))
        mad = 1.4826 * float(np.median(np.abs(scores - med)))
        return med + 3.0 * (mad if mad > 0 else float(np.std(scores)) or 1.0)
    if contamination == 0.0:
        return float(np.max(scores))
    return float(np.quantile(scores, 1.0 - contamination))


def calibration_from_scores(scores: np.ndarray) -> dict[str, float]:
    """What ``predict_proba`` needs: the fit-set score range (PyOD "linear" scaling)."""
    scores = np.asarray(scores, dtype=np.float64)
    return {"method": "linear", "min": float(scores.min()), "max": float(scores.max())}


def probability(scores: np.ndarray, calibration: dict[str, float]) -> np.ndarray:
    """Outlier probability: scores min-max scaled by the fit-set range, clipped to [0, 1]."""
    lo, hi = calibration["min"], calibration["max"]
    span = hi - lo if hi > lo else 1.0
    return np.clip((np.asarray(scores, dtype=np.float64) - lo) / span, 0.0, 1.0)


def labels(scores: np.ndarray, threshold: float) -> np.ndarray:
    """1 above the threshold, else 0; a non-finite score raises (it would otherwise become an inlier)."""
    from aeguard.core.validation import check_finite_scores

    return (check_finite_scores(scores) > threshold).astype(np.int64)
