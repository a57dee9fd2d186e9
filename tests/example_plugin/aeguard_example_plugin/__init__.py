"""A third-party aeguard plugin: a robust z-score detector.

It shows everything a plugin needs: a ``@hookimpl`` returning a ``DetectorRecord`` (the class is named by import
path, so listing detectors imports nothing heavy) and an estimator with ``_fit`` and ``_score`` in
``detector.py``; ``staged.py`` is a deep detector using every hook of ``aeguard.core.deep``. The entry
point in pyproject.toml (group ``aeguard.plugins``) makes aeguard find it.
"""

from __future__ import annotations

from aeguard.core.hookspecs import hookimpl
from aeguard.core.registry import DetectorRecord


@hookimpl
def aeguard_detectors() -> list[DetectorRecord]:
    return [DetectorRecord(name="example-zscore", target="aeguard_example_plugin.detector:RobustZScore",
                           description="Robust z-score (third-party example plugin)", exports_onnx=False),
            DetectorRecord(name="example-staged", target="aeguard_example_plugin.staged:StagedDetector",
                           description="Two-stage AE with a class head and a reference set (core-v2 example)",
                           accepts_classes=True)]
