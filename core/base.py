"""The detector contract: a scikit-learn estimator with PyOD's outlier-detection conventions.

A detector implements two hooks, :meth:`BaseDetector._fit` and :meth:`BaseDetector._score`; this base owns
input validation, feature names, thresholding, labels, probabilities and explanations, so every detector
(deep or not, labelled or not) behaves the same at the boundary. Higher scores mean more anomalous.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.exceptions import NotFittedError

from aeguard.core import thresholds as th
from aeguard.core.params import check_params
from aeguard.core.validation import (
    DataWarning,
    check_classes,
    check_features,
    check_images,
    check_labels,
    check_layout,
    check_modality,
    check_scores,
    default_feature_names,
    feature_names_of,
    fit_warnings,
    input_modality,
    pixel_feature_names,
)


@dataclass
class ScoreOutput:
    """One scoring pass: the score, per-feature contributions and named component scores."""

    score: np.ndarray
    contrib: np.ndarray | None = None
    components: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def from_outputs(cls, outs: dict[str, np.ndarray]) -> ScoreOutput:
        """From named graph outputs: float64 score and contrib; components float64, integer ones int64."""
        comps = {k: as_component(v) for k, v in outs.items() if k not in ("score", "contrib")}
        contrib = outs.get("contrib")
        return cls(np.asarray(outs["score"], dtype=np.float64),
                   None if contrib is None else np.asarray(contrib, dtype=np.float64), comps)


def as_component(values: np.ndarray) -> np.ndarray:
    """A component output as callers see it: integers (a predicted class) stay int64, the rest float64."""
    values = np.asarray(values)
    return values.astype(np.int64 if np.issubdtype(values.dtype, np.integer) else np.float64)


def fingerprint(X: np.ndarray) -> dict[str, Any]:
    """A training-data fingerprint for the manifest: shape and sha256 of the float64 bytes."""
    arr = np.ascontiguousarray(X, dtype=np.float64)
    return {"n_rows": int(arr.shape[0]), "n_features": int(np.prod(arr.shape[1:])),
            "sha256": hashlib.sha256(arr.tobytes()).hexdigest()}


def resolve_seed(random_state: Any) -> int:
    """An int seed from ``random_state`` (None draws one, recorded so the fit can be repeated)."""
    if random_state is None:
        return int(np.random.SeedSequence().generate_state(1)[0] % (2**31 - 1))
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, 2**31 - 1))
    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        if random_state < 0:
            raise ValueError(f"random_state must be non-negative, got {random_state}")
        return int(random_state)
    raise ValueError(f"random_state must be None, an int or a RandomState, got {random_state!r}")


class BaseDetector(OutlierMixin, BaseEstimator):
    """Base of every aeguard detector.

    Subclasses declare their hyperparameters explicitly in ``__init__`` (each stored unchanged under its
    own name, scikit-learn style; ``contamination`` and ``random_state`` among them) and implement:

    - ``_fit(X, y)``: learn from a validated float64 matrix; ``y`` is ``None`` or optional labels. A detector
      with ``accepts_classes = True`` gets ``_fit(X, y, classes=codes)``: integer class codes ``0..K-1`` of the
      class labels (``class_labels_`` holds the labels), or None.
    - ``_score(X) -> ScoreOutput``: score a validated float64 matrix.
    - ``_fit_scores(X)`` (optional): fit-set scores for the threshold when they differ from ``_score``.

    Learned state ends with an underscore. ``exportable`` says whether :meth:`export_onnx` exists.
    """

    exportable: ClassVar[bool] = False
    #: whether ``fit(X, classes=...)`` is accepted (class labels, never outlier labels); enforced in :meth:`fit`
    accepts_classes: ClassVar[bool] = False
    #: what ``fit``/``decision_function`` accept: "tabular" (2-D tables) and/or "image" ((N, C, H, W) and
    #: (N, H, W) arrays); must equal the registry record's ``modalities`` (a test checks every record)
    modalities: ClassVar[tuple[str, ...]] = ("tabular",)
    contamination: Any = 0.1
    random_state: Any = None

    # --- hooks -------------------------------------------------------------------------------------
    def _fit(self, X: np.ndarray, y: np.ndarray | None) -> None:
        raise NotImplementedError

    def _score(self, X: np.ndarray) -> ScoreOutput:
        raise NotImplementedError

    def _fit_scores(self, X: np.ndarray) -> np.ndarray:
        return self._score(X).score

    # --- estimator API ---------------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None, classes: Any = None, pixel_range: Any = None) -> BaseDetector:
        """Fit on ``X`` (array or DataFrame, or an image batch); ``y`` is optional and ignored by unsupervised
        detectors.

        ``classes``: optional class labels of the (normal) rows, one per row, for detectors that model classes
        (their record says ``accepts_classes``); they are never outlier labels.
        ``pixel_range``: for image batches ((N, C, H, W) or (N, H, W), detectors with ``"image"`` in
        ``modalities``), the (low, high) range of the pixel values; default uint8 0-255, floats [0, 1].
        """
        th.check_contamination(self.contamination)
        if classes is not None and not type(self).accepts_classes:
            raise ValueError(f"{type(self).__name__} does not accept class labels (classes=...); "
                             "only detectors whose record says accepts_classes do")
        check_params(self)  # declared types and ranges (aeguard.core.params), before any work
        modality = input_modality(X)
        check_modality(type(self).__name__, type(self).modalities, modality)
        names = feature_names_of(X)
        if modality == "image":
            X_arr, self.pixel_range_ = check_images(X, pixel_range=pixel_range, min_samples=2)
            self.image_shape_ = tuple(int(v) for v in X_arr.shape[1:])
        else:
            if pixel_range is not None:
                raise ValueError("pixel_range applies to image batches only; X is a table")
            X_arr = check_features(X, min_samples=2)
            for line in fit_warnings(X_arr, names):
                warnings.warn(line, DataWarning, stacklevel=2)
            for stale in ("image_shape_", "pixel_range_"):
                if hasattr(self, stale):
                    delattr(self, stale)
        #: the shape of one input row: (d,) for tables, (C, H, W) for images
        self.input_shape_ = tuple(int(v) for v in X_arr.shape[1:])
        y_arr = check_labels(y, X_arr.shape[0])
        codes = None
        if classes is not None:
            self.class_labels_, codes = check_classes(classes, X_arr.shape[0])
        elif hasattr(self, "class_labels_"):
            del self.class_labels_
        self.n_features_in_ = int(np.prod(self.input_shape_))
        if names is not None:
            self.feature_names_in_ = np.asarray(names, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        self.seed_ = resolve_seed(self.random_state)
        self.fingerprint_ = fingerprint(X_arr)
        if codes is None:
            self._fit(X_arr, y_arr)
        else:
            self._fit(X_arr, y_arr, classes=codes)
        scores = check_scores(self._fit_scores(X_arr))
        self.decision_scores_ = scores
        self.calibration_ = th.calibration_from_scores(scores)
        self.threshold_ = th.threshold_from_scores(scores, self.contamination)
        self.threshold_rule_ = {"contamination": self.contamination}
        self.labels_ = th.labels(scores, self.threshold_)
        return self

    @property
    def feature_names_(self) -> list[str]:
        """Fitted feature names (``x0..`` when fitted on an array, ``c0_h0_w0..`` on images)."""
        self._check_fitted()
        if hasattr(self, "image_shape_"):
            return pixel_feature_names(self.image_shape_)
        if hasattr(self, "feature_names_in_"):
            return [str(n) for n in self.feature_names_in_]
        return default_feature_names(self.n_features_in_)

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "threshold_")

    def _check_fitted(self) -> None:
        """scikit-learn's ``NotFittedError`` (a ``ValueError`` and an ``AttributeError``) before ``fit``."""
        if not self.__sklearn_is_fitted__():
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(X) first")

    def _validate(self, X: Any) -> np.ndarray:
        """Check ``X`` against the fitted layout: by column name when both sides have names, else by width."""
        self._check_fitted()
        return check_layout(X, owner=type(self).__name__, n_features=self.n_features_in_,
                            feature_names=getattr(self, "feature_names_in_", None),
                            image_shape=getattr(self, "image_shape_", None),
                            pixel_range=getattr(self, "pixel_range_", None))

    def score_output(self, X: Any) -> ScoreOutput:
        """Full scoring output (score, contributions, components) for validated ``X``."""
        out = self._score(self._validate(X))
        out.score = np.asarray(out.score, dtype=np.float64)
        return out

    def decision_function(self, X: Any) -> np.ndarray:
        """Anomaly scores; higher is more anomalous."""
        return self.score_output(X).score

    def predict(self, X: Any) -> np.ndarray:
        """1 for outliers (score above ``threshold_``), 0 for inliers (PyOD convention)."""
        return th.labels(self.decision_function(X), self.threshold_)

    def predict_proba(self, X: Any) -> np.ndarray:
        """(n, 2) array of [inlier, outlier] probabilities, fit-set min-max scaled (PyOD "linear")."""
        p = th.probability(self.decision_function(X), self.calibration_)
        return np.column_stack([1.0 - p, p])

    def explain(self, X: Any) -> Any:
        """Per-feature contributions as a DataFrame (columns = feature names); see each plugin for what
        they sum to."""
        import pandas as pd

        out = self.score_output(X)
        if out.contrib is None:
            raise NotImplementedError(f"{type(self).__name__} gives no per-feature contributions")
        return pd.DataFrame(np.asarray(out.contrib, dtype=np.float64), columns=self.feature_names_)

    def explain_maps(self, X: Any) -> np.ndarray:
        """Per-pixel contribution maps (N, C, H, W) of an image-fitted detector: :meth:`explain` reshaped."""
        if not hasattr(self, "image_shape_"):
            raise ValueError(f"{type(self).__name__} was fitted on a table; use explain(X)")
        return self.explain(X).to_numpy().reshape(-1, *self.image_shape_)

    def set_threshold(self, contamination: Any = None, fpr: float | None = None) -> BaseDetector:
        """Move the threshold on the stored fit-set scores, without retraining."""
        self._check_fitted()
        if contamination is None and fpr is None:
            raise ValueError("give contamination or fpr")
        self.threshold_ = th.threshold_from_scores(self.decision_scores_, contamination, fpr)
        self.threshold_rule_ = {"contamination": contamination} if fpr is None else {"fpr": fpr}
        if contamination is not None:
            self.contamination = th.check_contamination(contamination)
        self.labels_ = th.labels(self.decision_scores_, self.threshold_)
        return self

    def manifest_extra(self) -> dict[str, Any]:
        """A JSON block this detector adds to its artifact manifest (``extra``); default: nothing."""
        return {}

    # --- export -----------------------------------------------------------------------------------
    def export_onnx(self, path: Any, variant: str = "fp32") -> dict[str, Any]:
        """Write the scoring graph to ``path``; returns graph metadata for the manifest."""
        raise NotImplementedError(f"{type(self).__name__} does not export to ONNX")

    def save_artifact(self, path: Any, variant: str = "fp32") -> Any:
        """Write an artifact folder (ONNX graph + manifest) for the torch-free runtime."""
        from aeguard.core.artifact import save_artifact

        return save_artifact(self, path, variant=variant)
