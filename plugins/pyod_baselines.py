"""PyOD baselines behind the aeguard contract, so the benchmark and the CLI treat them like any detector.

They run with PyOD's default hyperparameters (as in PyOD's published ODDS benchmark) on features scaled with
fit-set statistics (``scaling``): by default the same z-score every aeguard detector applies inside its graph,
so a comparison on the same splits gives every detector the same input. They do not export to ONNX yet.
PyOD's algorithms are kept as they are, including their batch behaviour: ECOD and COPOD score a batch against
the empirical CDFs of fit set plus batch, so a row's score depends on its batch (docs/conformance.md).
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, ClassVar

import numpy as np

from aeguard.core.base import BaseDetector, ScoreOutput
from aeguard.core.params import Choice, Spec
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
    rank = int((singular > singular.max() * max(Z.shape) * np.finfo(np.float64).eps).sum())
    return params if rank >= X.shape[1] else {**params, "n_components": max(rank, 1)}


#: ``scaling`` values: fit-set z-score (the spec's rule for every aeguard detector), fit-set min-max (ADBench), raw
SCALINGS = ("standard", "minmax", "none")


def scaling_stats(X: np.ndarray, scaling: str) -> tuple[np.ndarray, np.ndarray]:
    """``(center, scale)`` of the fit set, float64, so that the model sees ``(X - center) / scale``.

    - ``standard``: mean and unbiased std ``+ 1e-5`` (exactly the rule of ``DeepDetector._standardize_stats`` and
      the specs' "Data and preprocessing", so baselines and aeguard detectors see the same input);
    - ``minmax``: min and ``max - min``, a constant column's range replaced by 1, as ADBench's
      ``MinMaxScaler().fit(X_train)`` (scikit-learn sets a range below ``10 * eps`` to 1); new rows may fall
      outside [0, 1];
    - ``none``: 0 and 1 (the raw features, bit for bit).
    """
    X = np.asarray(X, dtype=np.float64)
    if scaling == "standard":
        return X.mean(axis=0), X.std(axis=0, ddof=1) + 1e-5
    if scaling == "minmax":
        low = X.min(axis=0)
        width = X.max(axis=0) - low
        return low, np.where(width < 10 * np.finfo(np.float64).eps, 1.0, width)
    return np.zeros(X.shape[1]), np.ones(X.shape[1])


class PyODDetector(BaseDetector):
    """Adapter around one PyOD model; ``params`` are passed to its constructor unchanged.

    ``scaling`` (``"standard"``, ``"minmax"`` or ``"none"``; ``None`` means ``"none"``, as a benchmark spec
    ``scaling=none`` parses) is fitted on the fit set and applied before the model in fit and scoring alike; the
    statistics are ``center_`` and ``scale_``.
    """

    #: types of the adapter's own hyperparameters (aeguard.core.params); ``params`` is free-form, checked by PyOD
    param_spec: ClassVar[dict[str, Spec]] = {
        "algorithm": Choice(choices=tuple(BASELINES)),
        "scaling": Choice(choices=SCALINGS, none=True, none_means="'none'"),
    }

    @classmethod
    def free_param_names(cls, fixed: dict[str, Any]) -> list[str]:
        """Names the wrapped PyOD model accepts in ``params`` (so a misspelt one fails before any fit)."""
        module_name, _, attr = BASELINES[fixed.get("algorithm", "iforest")][0].partition(":")
        accepted = inspect.signature(getattr(importlib.import_module(module_name), attr).__init__).parameters
        return [n for n in accepted if n not in ("self", "contamination", "random_state")]

    def __init__(self, algorithm: str = "iforest", params: dict[str, Any] | None = None,
                 contamination: Any = 0.1, random_state: int | None = None, scaling: str | None = "standard") -> None:
        self.algorithm = algorithm
        self.params = params
        self.contamination = contamination
        self.random_state = random_state
        self.scaling = scaling

    def _scaling(self) -> str:
        scaling = "none" if self.scaling is None else self.scaling
        if scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {', '.join(map(repr, SCALINGS))}, got {self.scaling!r}")
        return scaling

    def _scaled(self, X: np.ndarray) -> np.ndarray:
        return (X - self.center_) / self.scale_

    def _pyod_class(self) -> type:
        if self.algorithm not in BASELINES:
            raise ValueError(f"unknown PyOD baseline {self.algorithm!r}; choose from {sorted(BASELINES)}")
        module_name, _, attr = BASELINES[self.algorithm][0].partition(":")
        return getattr(importlib.import_module(module_name), attr)

    def _fit(self, X: np.ndarray, y: np.ndarray | None) -> None:
        self.center_, self.scale_ = scaling_stats(X, self._scaling())
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
        if _is_rbf_ocsvm(estimator):
            _fit_rbf_ocsvm(estimator, X)
        else:
            estimator.fit(X)
        self.estimator_ = estimator

    def _score(self, X: np.ndarray) -> ScoreOutput:
        X = self._scaled(X)
        if _is_rbf_ocsvm(self.estimator_):
            return ScoreOutput(-rbf_svm_decision(self.estimator_.detector_, X))
        return ScoreOutput(np.asarray(self.estimator_.decision_function(X), dtype=np.float64))

    def _fit_scores(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.estimator_.decision_scores_, dtype=np.float64)


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
