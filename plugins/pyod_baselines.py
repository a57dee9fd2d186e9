"""PyOD baselines behind the aeguard contract, so the benchmark and the CLI treat them like any detector.

They run with PyOD's default hyperparameters (as in PyOD's published ODDS benchmark) on features scaled with
fit-set statistics (``scaling``): by default the same z-score every aeguard detector applies inside its graph,
so a comparison on the same splits gives every detector the same input.

Every baseline exports an ONNX scoring graph (:mod:`aeguard.plugins.classical`): raw features in, the scaling,
then PyOD's ``decision_function`` as graph arithmetic (float64), so an artifact scores like the fitted model
without scikit-learn or PyOD. What the graphs hold, and where they deviate, per method:

- ``knn``, ``lof`` keep at most ``max_ref`` fit rows (``core.reference``, seeded uniform draw): the PyOD model
  is fitted on that reference set, fit rows that are in it leave themselves out (PyOD's own fit-set rule), the
  others are scored as new points. ``max_ref=None`` keeps every row (and only the 32 MiB constant cap applies).
- ``ecod``, ``copod`` score each row as PyOD scores a batch of one (PyOD joins a whole batch to the fit set,
  so its scores depend on the batch; a served score must not): see :mod:`aeguard.plugins.classical.graphs`.
- ``contrib`` is the per-feature term for ``hbos``, ``ecod``, ``copod`` (they sum to the score) and NaN for
  the others, whose scores have no per-feature split.
- Options a graph cannot express (``hbos`` ``n_bins='auto'``, a non-Euclidean ``knn``/``lof`` metric, a
  non-RBF ``ocsvm`` kernel) are refused by :meth:`PyODDetector.export_onnx` with a message naming the option.
"""

from __future__ import annotations

import importlib
import inspect
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np

from aeguard.core.artifact import ArtifactError
from aeguard.core.base import BaseDetector, ScoreOutput
from aeguard.core.params import Choice, Int, Spec
from aeguard.core.reference import ReferenceDraw, draw_reference
from aeguard.core.validation import standard_scale
from aeguard.plugins import PYOD_BASELINES as BASELINES


def _pca_rank_params(X: np.ndarray, params: dict[str, Any]) -> dict[str, Any]:
    """PyOD's PCA divides each component's distance by its explained variance ratio, so a fit split of lower rank
    than its width (a constant column: mnist, optdigits; a column that is a linear combination of others: cardio,
    seismic) gives a zero-variance component and infinite scores. Keeping only the components with variance
    (``n_components`` = the numerical rank of the standardized split) is the estimator PyOD intends and leaves
    full-rank splits exactly as PyOD's default."""
    if params.get("n_components") is not None or not params.get("standardization", True):
        return params
    std = X.std(axis=0)
    Z = (X - X.mean(axis=0)) / np.where(std > 0, std, 1.0)
    singular = np.linalg.svd(Z, compute_uv=False)
    # float32 tolerance: the rows are rounded to float32 (``_scaled``), so a dependent column is dependent only
    # to float32 precision
    rank = int((singular > singular.max() * max(Z.shape) * np.finfo(np.float32).eps).sum())
    return params if rank >= X.shape[1] else {**params, "n_components": max(rank, 1)}


#: ``scaling`` values: fit-set z-score (the spec's rule for every aeguard detector), fit-set min-max (ADBench), raw
SCALINGS = ("standard", "minmax", "none")


def scaling_stats(X: np.ndarray, scaling: str) -> tuple[np.ndarray, np.ndarray]:
    """``(center, scale)`` of the fit set, float64, so that the model sees ``(X - center) / scale``.

    - ``standard``: mean and unbiased std ``+ 1e-5``, a constant column scaled by its own magnitude (exactly
      ``aeguard.core.validation.standard_scale``, the rule of ``DeepDetector._standardize_stats`` and the specs'
      "Data and preprocessing", so baselines and aeguard detectors see the same input);
    - ``minmax``: min and ``max - min``, a constant column's range replaced by 1, as ADBench's
      ``MinMaxScaler().fit(X_train)`` (scikit-learn sets a range below ``10 * eps`` to 1); new rows may fall
      outside [0, 1];
    - ``none``: 0 and 1 (the raw features, bit for bit).
    """
    X = np.asarray(X, dtype=np.float64)
    if scaling == "standard":
        return standard_scale(X)
    if scaling == "minmax":
        low = X.min(axis=0)
        width = X.max(axis=0) - low
        return low, np.where(width < 10 * np.finfo(np.float64).eps, 1.0, width)
    return np.zeros(X.shape[1]), np.ones(X.shape[1])


class PyODDetector(BaseDetector):
    """Adapter around one PyOD model; ``params`` are passed to its constructor unchanged.

    ``scaling`` (``"standard"``, ``"minmax"`` or ``"none"``; ``None`` means ``"none"``, as a benchmark spec
    ``scaling=none`` parses) is fitted on the fit set and applied before the model in fit and scoring alike; the
    statistics are ``center_`` and ``scale_``. ``max_ref`` caps the reference rows of ``knn`` and ``lof``
    (graph constants; ignored by the other methods).
    """

    exportable: ClassVar[bool] = True
    #: types of the adapter's own hyperparameters (aeguard.core.params); ``params`` is free-form, checked by PyOD
    param_spec: ClassVar[dict[str, Spec]] = {
        "algorithm": Choice(choices=tuple(BASELINES)),
        "scaling": Choice(choices=SCALINGS, none=True, none_means="'none'"),
        "max_ref": Int(low=2, none=True, none_means="every fit row (32 MiB constant cap only)"),
    }

    @classmethod
    def free_param_names(cls, fixed: dict[str, Any]) -> list[str]:
        """Names the wrapped PyOD model accepts in ``params`` (so a misspelt one fails before any fit)."""
        module_name, _, attr = BASELINES[fixed.get("algorithm", "iforest")][0].partition(":")
        accepted = inspect.signature(getattr(importlib.import_module(module_name), attr).__init__).parameters
        return [n for n in accepted if n not in ("self", "contamination", "random_state")]

    def __init__(self, algorithm: str = "iforest", params: dict[str, Any] | None = None,
                 contamination: Any = 0.1, random_state: int | None = None, scaling: str | None = "standard",
                 max_ref: int | None = 10000) -> None:
        self.algorithm = algorithm
        self.params = params
        self.contamination = contamination
        self.random_state = random_state
        self.scaling = scaling
        self.max_ref = max_ref

    def _scaling(self) -> str:
        scaling = "none" if self.scaling is None else self.scaling
        if scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {', '.join(map(repr, SCALINGS))}, got {self.scaling!r}")
        return scaling

    def _scaled(self, X: np.ndarray) -> np.ndarray:
        """The model's input: rows rounded to float32 (what an artifact receives, so the fitted model and its
        graph see the same numbers; a rank or a bin would otherwise differ for values near a fit value), then
        scaled in float64."""
        return (_as_float32(X) - self.center_) / self.scale_

    def _pyod_class(self) -> type:
        if self.algorithm not in BASELINES:
            raise ValueError(f"unknown PyOD baseline {self.algorithm!r}; choose from {sorted(BASELINES)}")
        module_name, _, attr = BASELINES[self.algorithm][0].partition(":")
        return getattr(importlib.import_module(module_name), attr)

    def _fit(self, X: np.ndarray, y: np.ndarray | None) -> None:
        self.center_, self.scale_ = scaling_stats(_as_float32(X), self._scaling())
        X = self._scaled(X)
        cls = self._pyod_class()
        params = dict(self.params or {})
        accepted = inspect.signature(cls.__init__).parameters
        if "random_state" in accepted:
            params.setdefault("random_state", self.seed_)
        # PyOD's own threshold is unused: aeguard thresholds on the fit-set scores itself.
        if "contamination" in accepted:
            params.setdefault("contamination", 0.1)
        if self.algorithm == "pca":
            params = _pca_rank_params(X, params)
        estimator = cls(**params)
        self.reference_: ReferenceDraw | None = None
        if self.algorithm in REFERENCE_METHODS:
            self.reference_ = draw_reference(len(X), X.shape[1], cap_rows=self.max_ref, seed=self.seed_)
            X = self.reference_.take(X)
        if _is_rbf_ocsvm(estimator):
            _fit_rbf_ocsvm(estimator, X)
        else:
            estimator.fit(X)
        self.estimator_ = estimator
        if self.algorithm in TAIL_METHODS:
            self.sorted_fit_ = np.sort(X, axis=0)

    def _score(self, X: np.ndarray) -> ScoreOutput:
        X = self._scaled(X)
        nan = np.full(X.shape, np.nan)
        if _is_rbf_ocsvm(self.estimator_):
            return ScoreOutput(-rbf_svm_decision(self.estimator_.detector_, X), nan)
        if self.algorithm in TAIL_METHODS:
            from aeguard.plugins.classical.graphs import tail_terms

            terms = tail_terms(self.sorted_fit_, X, self.algorithm)
            return ScoreOutput(terms.sum(axis=1), terms)
        if self.algorithm == "hbos" and not isinstance(self.estimator_.n_bins, str):
            from pyod.models.hbos import _calculate_outlier_scores

            est = self.estimator_
            terms = -_calculate_outlier_scores(X, est.bin_edges_, est.hist_, est.n_bins, est.alpha, est.tol)
            return ScoreOutput(terms.sum(axis=1), terms)
        return ScoreOutput(np.asarray(self.estimator_.decision_function(X), dtype=np.float64), nan)

    def _fit_scores(self, X: np.ndarray) -> np.ndarray:
        scores = np.asarray(self.estimator_.decision_scores_, dtype=np.float64)
        if self.reference_ is None or not self.reference_.capped:
            return scores
        # capped reference: a kept row leaves itself out (PyOD's fit-set scores of the reference model), the
        # other fit rows are scored against the reference as new points, exactly as the graph scores them
        own = self.reference_.own_rows()
        out = np.empty(len(X))
        out[own >= 0] = scores[own[own >= 0]]
        out[own < 0] = self._score(X[own < 0]).score
        return out

    # --- export ---------------------------------------------------------------------------------------
    @property
    def standardize_(self) -> Any:
        """The fit-set scaling as the manifest's ``preprocessing`` block reads it (``mean``/``scale``), or None
        for ``scaling="none"``."""
        if not hasattr(self, "center_") or self._scaling() == "none":
            return None
        return SimpleNamespace(mean=self.center_, scale=self.scale_)

    def manifest_extra(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"scaling": self._scaling(), "pyod_params": dict(self.estimator_.get_params()),
                                 "contrib": ("per-feature terms (they sum to the score)"
                                             if self.algorithm in CONTRIB_METHODS else
                                             "NaN: this method's score has no per-feature split")}
        if self.reference_ is not None:
            extra["reference"] = self.reference_.manifest()
        if self.algorithm in TAIL_METHODS:
            extra["batch_rule"] = "each row is scored as PyOD scores a batch of one (fit set plus that row)"
        return extra

    def export_refusal(self) -> str | None:
        """Why this fitted model cannot be written as a graph (naming the PyOD option), or None."""
        est, algo = self.estimator_, self.algorithm
        if algo == "hbos" and isinstance(est.n_bins, str):
            return "hbos option n_bins='auto' (a bin count per feature) has no ONNX graph; give an int n_bins"
        if algo in REFERENCE_METHODS:
            inner = est.neigh_ if algo == "knn" else est.detector_
            if inner.effective_metric_ != "euclidean":
                return (f"{algo} option metric={est.metric!r} (p={est.p!r}) has no ONNX graph; only the Euclidean "
                        "distance (metric='minkowski' with p=2, PyOD's default) is exported")
        if algo == "knn" and est.method not in ("largest", "mean", "median"):
            return f"knn option method={est.method!r} has no ONNX graph"
        if algo == "ocsvm" and est.kernel != "rbf":
            return f"ocsvm option kernel={est.kernel!r} has no ONNX graph; only kernel='rbf' (PyOD's default) is"
        return None

    def export_onnx(self, path: Any, variant: str = "fp32") -> dict[str, Any]:
        """Write the scoring graph (opset 18, or 17 for ``legacy``); refuses options it cannot express."""
        from aeguard.plugins.classical import build_graph, bytes_per_row, save_model

        self._check_fitted()
        if variant not in GRAPH_OPSETS:
            raise ValueError(f"unknown export variant {variant!r}; choose one of {tuple(GRAPH_OPSETS)}")
        refusal = self.export_refusal()
        if refusal:
            raise ArtifactError(f"cannot export {self.algorithm}: {refusal}")
        opset = GRAPH_OPSETS[variant]
        model, exporter = build_graph(self, opset)
        save_model(model, path)
        return {"variant": variant, "opset": opset, "input": "x", "input_shape": ["batch", int(self.n_features_in_)],
                "outputs": ["score", "contrib"], "fp32_scopes": [], "fp32_nodes": [],
                "int8_refusal": INT8_REFUSAL, "bytes_per_row": bytes_per_row(model, self.n_features_in_),
                "exporter": exporter}


def _as_float32(X: np.ndarray) -> np.ndarray:
    """``X`` rounded to float32 and held as float64 (the artifact's input dtype, see ``_scaled``)."""
    return np.asarray(X, dtype=np.float64).astype(np.float32).astype(np.float64)


#: methods scored against stored fit rows (capped by ``max_ref``)
REFERENCE_METHODS = ("knn", "lof")
#: methods whose graph holds the sorted fit values and joins one row to them
TAIL_METHODS = ("ecod", "copod")
#: methods whose score is a sum of per-feature terms (``contrib``)
CONTRIB_METHODS = ("hbos", "ecod", "copod")
GRAPH_OPSETS = {"fp32": 18, "legacy": 17}
INT8_REFUSAL = ("a classical baseline's graph holds fit data (reference rows, support vectors, sorted values, bin "
                "edges, tree thresholds), not trained weights: int8 rounding of its distances would change the "
                "detector, and nothing else in it is quantizable; ship the FP32 artifact")


# --- OCSVM scoring without libsvm's per-pair loop ---------------------------------------------------------
# PyOD's OCSVM scores through libsvm, which evaluates one kernel pair at a time; with PyOD's defaults (nu=0.5)
# half or more of a 20,000-row fit split become support vectors, so scoring a 100k-row split took minutes.
# The functions below evaluate the same decision function, sum_i a_i exp(-gamma ||x - sv_i||^2) - rho, with
# BLAS; the fitted model (libsvm, PyOD's parameters) is unchanged and the scores agree to rounding (~1e-14).

#: exp(-t) is exactly 0.0 in float64 for t > 745.2, so kernel terms beyond this exponent contribute nothing
_EXP_UNDERFLOW = 746.0


def _is_rbf_ocsvm(estimator: Any) -> bool:
    return type(estimator).__module__ == "pyod.models.ocsvm" and getattr(estimator, "kernel", None) == "rbf"


def _fit_rbf_ocsvm(estimator: Any, X: np.ndarray) -> None:
    """PyOD's ``OCSVM.fit`` step by step (same libsvm model), with the fit-set scores from :func:`rbf_svm_decision`."""
    from sklearn.svm import OneClassSVM

    estimator._set_n_classes(None)
    estimator.detector_ = OneClassSVM(
        kernel=estimator.kernel, degree=estimator.degree, gamma=estimator.gamma, coef0=estimator.coef0,
        tol=estimator.tol, nu=estimator.nu, shrinking=estimator.shrinking, cache_size=estimator.cache_size,
        verbose=estimator.verbose, max_iter=estimator.max_iter,
    ).fit(X)
    estimator.decision_scores_ = -rbf_svm_decision(estimator.detector_, X)
    estimator._process_decision_scores()


def rbf_svm_decision(svm: Any, X: np.ndarray, max_block: int = 4_000_000) -> np.ndarray:
    """``svm.decision_function(X)`` of a fitted RBF ``sklearn.svm.OneClassSVM``, evaluated with BLAS.

    Dense blocks of at most ``max_block`` kernel terms; when a probe shows that almost every term underflows to
    exactly 0.0 (``scaling="none"`` on unscaled features such as ODDS cover), only support vectors within the
    underflow radius are visited (KD-tree), which gives the same sum.
    """
    sv = np.asarray(svm.support_vectors_, dtype=np.float64)
    center = sv.mean(axis=0)  # distances are translation-invariant; centring limits cancellation below
    sv = np.ascontiguousarray(sv - center)
    X = np.ascontiguousarray(np.asarray(X, dtype=np.float64) - center)
    coef = np.asarray(svm.dual_coef_, dtype=np.float64).ravel()
    gamma = float(svm._gamma)
    if _mostly_zero_kernel(X, sv, gamma):
        out = _sparse_rbf_sum(X, sv, coef, gamma)
    else:
        out = np.empty(len(X))
        sv_sq = np.einsum("ij,ij->i", sv, sv)
        rows = max(1, max_block // max(1, len(sv)))
        for start in range(0, len(X), rows):
            q = X[start:start + rows]
            k = q @ sv.T
            k *= 2.0
            k -= np.einsum("ij,ij->i", q, q)[:, None]
            k -= sv_sq  # now -||q - sv||^2
            np.minimum(k, 0.0, out=k)
            k *= gamma
            np.exp(k, out=k)
            out[start:start + rows] = k @ coef
    return out + float(np.ravel(svm.intercept_)[0])


def _mostly_zero_kernel(X: np.ndarray, sv: np.ndarray, gamma: float, probe: int = 256) -> bool:
    if X.shape[1] > 32:  # KD-trees stop paying off in high dimensions
        return False
    q = X[np.linspace(0, len(X) - 1, min(probe, len(X))).astype(int)]
    d2 = np.einsum("ij,ij->i", q, q)[:, None] - 2.0 * (q @ sv.T) + np.einsum("ij,ij->i", sv, sv)
    return float(np.mean(gamma * d2 < _EXP_UNDERFLOW)) < 0.02


def _sparse_rbf_sum(X: np.ndarray, sv: np.ndarray, coef: np.ndarray, gamma: float, rows: int = 4096) -> np.ndarray:
    from sklearn.neighbors import KDTree

    tree = KDTree(sv)
    radius = float(np.sqrt(_EXP_UNDERFLOW / gamma))
    out = np.zeros(len(X))
    for start in range(0, len(X), rows):
        q = X[start:start + rows]
        neighbours = tree.query_radius(q, r=radius)
        counts = np.fromiter((len(n) for n in neighbours), dtype=np.int64, count=len(q))
        if not counts.sum():
            continue
        idx = np.concatenate(neighbours)
        owner = np.repeat(np.arange(len(q)), counts)
        d2 = np.square(sv[idx] - q[owner]).sum(axis=1)
        out[start:start + len(q)] = np.bincount(owner, weights=coef[idx] * np.exp(-gamma * d2), minlength=len(q))
    return out
