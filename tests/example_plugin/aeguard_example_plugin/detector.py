"""The example plugin's detector, imported only when someone creates it (listing plugins stays light)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from aeguard.core.base import BaseDetector, ScoreOutput
from aeguard.core.params import Float, Spec


class RobustZScore(BaseDetector):
    """Score = sum of squared robust z-scores (median / 1.4826 MAD per feature)."""

    #: types and ranges of the hyperparameters, declared once (aeguard.core.params checks them in --param,
    #: benchmark specs and at fit); contamination and random_state have their own checks
    param_spec: ClassVar[dict[str, Spec]] = {"min_scale": Float(low=0, low_open=True)}

    def __init__(self, min_scale: float = 1e-6, contamination: Any = 0.1, random_state: int | None = None) -> None:
        self.min_scale = min_scale
        self.contamination = contamination
        self.random_state = random_state

    def _fit(self, X: np.ndarray, y: np.ndarray | None) -> None:
        self.median_ = np.median(X, axis=0)
        mad = 1.4826 * np.median(np.abs(X - self.median_), axis=0)
        # a constant column (MAD 0) is measured in its own units, never divided by ~0
        self.scale_ = np.where(mad > self.min_scale, mad, 1.0)

    def _score(self, X: np.ndarray) -> ScoreOutput:
        contrib = ((X - self.median_) / self.scale_) ** 2
        return ScoreOutput(contrib.sum(axis=1), contrib)
