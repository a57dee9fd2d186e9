"""PyOD baselines behind the aeguard contract, so the benchmark and the CLI treat them like any detector.

They run with PyOD's defaults (as in PyOD's published ODDS benchmark) and do not export to ONNX.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import numpy as np

from aeguard.core.base import BaseDetector, ScoreOutput
from aeguard.plugins import PYOD_BASELINES as BASELINES


class PyODDetector(BaseDetector):
    """Adapter around one PyOD model; ``params`` are passed to its constructor unchanged."""

    def __init__(self, algorithm: str = "iforest", params: dict[str, Any] | None = None,
                 contamination: Any = 0.1, random_state: int | None = None) -> None:
        self.algorithm = algorithm
        self.params = params
        self.contamination = contamination
        self.random_state = random_state

    def _pyod_class(self) -> type:
        if self.algorithm not in BASELINES:
            raise ValueError(f"unknown PyOD baseline {self.algorithm!r}; choose from {sorted(BASELINES)}")
        module_name, _, attr = BASELINES[self.algorithm][0].partition(":")
        return getattr(importlib.import_module(module_name), attr)

    def _fit(self, X: np.ndarray, y: np.ndarray | None) -> None:
        cls = self._pyod_class()
        params = dict(self.params or {})
        accepted = inspect.signature(cls.__init__).parameters
        if "random_state" in accepted:
            params.setdefault("random_state", self.seed_)
        # PyOD's own threshold is unused: aeguard thresholds on the fit-set scores itself.
        if "contamination" in accepted:
            params.setdefault("contamination", 0.1)
        self.estimator_ = cls(**params).fit(X)

    def _score(self, X: np.ndarray) -> ScoreOutput:
        return ScoreOutput(np.asarray(self.estimator_.decision_function(X), dtype=np.float64))

    def _fit_scores(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.estimator_.decision_scores_, dtype=np.float64)
