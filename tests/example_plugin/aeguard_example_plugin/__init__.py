"""A third-party aeguard plugin in one file: a robust z-score detector.

It shows everything a plugin needs: a ``@hookimpl`` returning a ``DetectorRecord`` and an estimator with
``_fit`` and ``_score``. The entry point in pyproject.toml (group ``aeguard.plugins``) makes aeguard find it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from aeguard.core.base import BaseDetector, ScoreOutput
from aeguard.core.hookspecs import hookimpl
from aeguard.core.registry import DetectorRecord


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


@hookimpl
def aeguard_detectors() -> list[DetectorRecord]:
    return [DetectorRecord(name="example-zscore", target="aeguard_example_plugin:RobustZScore",
                           description="Robust z-score (third-party example plugin)", exports_onnx=False)]
