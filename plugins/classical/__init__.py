"""ONNX scoring graphs for the PyOD baselines (``iforest``, ``knn``, ``lof``, ``pca``, ``hbos``, ``ecod``,
``copod``, ``ocsvm``), so every registered detector deploys: ``aeguard score``, the HTTP service and
``aeguard-edge`` run them with onnxruntime alone, without scikit-learn or PyOD.

:func:`build_graph` reads the fitted quantities out of a fitted
:class:`~aeguard.plugins.pyod_baselines.PyODDetector` and hands them, as plain arrays, to the builders of
:mod:`.graphs`. Building needs ``onnx`` (and ``skl2onnx`` for ``iforest``): the ``train`` extra.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

import numpy as np

from .builder import bytes_per_row, save_model
from .graphs import (
    hbos_graph,
    iforest_graph,
    knn_graph,
    lof_graph,
    ocsvm_graph,
    pca_graph,
    tail_graph,
)

__all__ = ["build_graph", "bytes_per_row", "save_model"]


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def build_graph(detector: Any, opset: int) -> tuple[Any, str]:
    """The ONNX model of a fitted PyOD adapter and a one-line exporter description for the manifest."""
    est, algo = detector.estimator_, detector.algorithm
    frame = (opset, np.asarray(detector.center_, dtype=np.float64), np.asarray(detector.scale_, dtype=np.float64))
    helper = f"aeguard.plugins.classical (onnx {_version('onnx')})"
    if algo == "iforest":
        return iforest_graph(*frame, est.detector_), f"skl2onnx {_version('skl2onnx')} + {helper}"
    if algo == "knn":
        ref = np.asarray(est.neigh_._fit_X, dtype=np.float64)
        return knn_graph(*frame, ref, int(est.n_neighbors), est.method), helper
    if algo == "lof":
        lof = est.detector_
        k = int(lof.n_neighbors_)
        return lof_graph(*frame, np.asarray(lof._fit_X, dtype=np.float64), k,
                         np.asarray(lof._distances_fit_X_[:, k - 1], dtype=np.float64),
                         np.asarray(lof._lrd, dtype=np.float64)), helper
    if algo == "ocsvm":
        svm = est.detector_
        return ocsvm_graph(*frame, svm.support_vectors_, svm.dual_coef_, float(svm._gamma),
                           float(np.ravel(svm.intercept_)[0])), helper
    if algo == "pca":
        scaler = getattr(est, "scaler_", None) if est.standardization else None
        mu = None if scaler is None else scaler.mean_
        sigma = None if scaler is None else scaler.scale_
        return pca_graph(*frame, mu, sigma, np.asarray(est.selected_components_, dtype=np.float64),
                         np.asarray(est.selected_w_components_, dtype=np.float64)), helper
    if algo == "hbos":
        return hbos_graph(*frame, est.bin_edges_, est.hist_, float(est.alpha), float(est.tol)), helper
    if algo in ("ecod", "copod"):
        return tail_graph(*frame, detector.sorted_fit_, algo), helper
    raise ValueError(f"no ONNX graph for PyOD baseline {algo!r}")
