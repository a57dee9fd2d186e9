"""The example plugin's detector, imported only when someone creates it (listing plugins stays light)."""

from __future__ import annotations

from typing import Any

import numpy as np

from aeguard.core.base import BaseDetector, ScoreOutput


class RobustZScore(BaseDetector):
    """Score = sum of squared robust z-scores (median / 1.4826 MAD per feature)."""

    def __init__(self, contamination: Any = 0.1, random_state: int | None = None) -> None:
        self.contamination = contamination
        self.random_state = random_state

    def _fit(self, X: np.ndarray, y: np.ndarray | None) -> None:
        self.median_ = np.median(X, axis=0)
        mad = 1.4826 * np.median(np.abs(X - self.median_), axis=0)
        self.scale_ = np.where(mad > 0, mad, 1.0)

    def _score(self, X: np.ndarray) -> ScoreOutput:
        contrib = ((X - self.median_) / self.scale_) ** 2
        return ScoreOutput(contrib.sum(axis=1), contrib)
