"""The estimator contract, exercised on every registered detector with real training."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from aeguard.core import registry
from aeguard.core.metrics import roc_auc
from conftest import fast_params

ALL = sorted(registry.detectors())


def _fit(name, X, **extra):
    cls = registry.get(name).cls
    det = registry.create(name, random_state=0, **fast_params(cls), **extra)
    return det.fit(X)


@pytest.fixture(scope="module")
def fitted(table):
    X, _ = table
    return {name: _fit(name, X) for name in ALL}


@pytest.mark.parametrize("name", ALL)
def test_scores_rank_outliers_and_follow_conventions(name, fitted, table):
    X, y = table
    det = fitted[name]
    scores = det.decision_function(X)
    assert scores.shape == (len(X),) and np.isfinite(scores).all()
    assert roc_auc(y, scores) > 0.8, "higher score must mean more anomalous"
    # fit-set scores may be leave-one-out (kNN, LOF) but must rank like the scoring path
    assert np.corrcoef(np.argsort(np.argsort(det.decision_scores_)), np.argsort(np.argsort(scores)))[0, 1] > 0.9
    assert det.labels_.mean() == pytest.approx(0.1, abs=0.02)
    assert set(np.unique(det.predict(X))) <= {0, 1}
    proba = det.predict_proba(X)
    assert proba.shape == (len(X), 2) and (proba >= 0).all() and (proba <= 1).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert det.n_features_in_ == X.shape[1]


@pytest.mark.parametrize("name", ALL)
def test_set_threshold_moves_without_retraining(name, fitted, table):
    X, _ = table
    det = fitted[name]
    before = det.decision_scores_.copy()
    det.set_threshold(contamination=0.05)
    assert det.labels_.mean() == pytest.approx(0.05, abs=0.01)
    det.set_threshold(fpr=0.2)
    assert det.labels_.mean() == pytest.approx(0.2, abs=0.02)
    np.testing.assert_array_equal(det.predict(X), (det.decision_function(X) > det.threshold_).astype(int))
    np.testing.assert_array_equal(det.decision_scores_, before)
    det.set_threshold(contamination=0.1)


def test_contamination_modes(table):
    X, _ = table
    det = _fit("ae", X, contamination=0)
    assert det.labels_.sum() == 0, "novelty mode: no fit point is an outlier"
    assert det.threshold_ == pytest.approx(det.decision_scores_.max())
    det.set_threshold(contamination="auto")
    med = np.median(det.decision_scores_)
    mad = 1.4826 * np.median(np.abs(det.decision_scores_ - med))
    assert det.threshold_ == pytest.approx(med + 3 * mad)
    for bad in (0.7, -0.1, "lots", None):
        with pytest.raises(ValueError, match="contamination"):
            registry.create("iforest", contamination=bad).fit(X)


def test_random_state_reproducible(table):
    X, _ = table
    a = _fit("ae", X).decision_scores_
    b = _fit("ae", X).decision_scores_
    c = registry.create("ae", random_state=1, **fast_params(registry.get("ae").cls)).fit(X).decision_scores_
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_dataframe_columns_are_kept_and_checked(table_frame):
    frame, _ = table_frame
    det = _fit("ae", frame)
    assert list(det.feature_names_in_) == list(frame.columns)
    shuffled = frame[frame.columns[::-1]]
    np.testing.assert_allclose(det.decision_function(shuffled), det.decision_function(frame), rtol=1e-6)
    with pytest.raises(ValueError, match="missing feature column.*sensor_2"):
        det.decision_function(frame.drop(columns="sensor_2"))
    with pytest.raises(ValueError, match="unknown column.*extra"):
        det.decision_function(frame.assign(extra=1.0))
    expl = det.explain(frame.head(5))
    assert list(expl.columns) == list(frame.columns)
    np.testing.assert_allclose(expl.sum(axis=1), det.decision_function(frame.head(5)), rtol=1e-4)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (lambda X: np.where(np.arange(X.size).reshape(X.shape) == 7, np.nan, X), "NaN in row 1"),
        (lambda X: np.where(np.arange(X.size).reshape(X.shape) == 3, np.inf, X), "infinite value in row 0"),
        (lambda X: X[:, :-1], "X has 5 features, but PyODDetector is expecting 6 features"),
        (lambda X: X[:0], "empty input"),
        (lambda X: X[0], "1-D"),
        (lambda X: X.astype(str).astype(object) + "a", "non-numeric"),
        (lambda X: pd.DataFrame(X).assign(**{"0": "x"}), "non-numeric"),
    ],
)
def test_bad_input_raises_value_error_naming_the_problem(bad, message, fitted, table):
    X, _ = table
    with pytest.raises(ValueError, match=message):
        fitted["iforest"].decision_function(bad(X[:10].copy()))


def test_bad_training_input(table):
    X, _ = table
    with pytest.raises(ValueError, match="NaN"):
        registry.create("iforest").fit(np.where(X == X[3, 2], np.nan, X))
    with pytest.raises(ValueError, match="at least 2 rows"):
        registry.create("iforest").fit(X[:1])
    with pytest.raises(ValueError, match="y must be 1-D"):
        registry.create("iforest").fit(X, y=np.zeros(3))


def test_constant_scores_fail_loudly():
    X = np.ones((50, 4))
    with pytest.raises(RuntimeError, match="constant"):
        registry.create("knn").fit(X)


def test_unfitted_detector_says_so(table):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError, match="not fitted"):
        registry.create("ae").decision_function(table[0])
