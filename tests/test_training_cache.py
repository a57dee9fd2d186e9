"""The opt-in training cache (``AEGUARD_TRAIN_CACHE``): scoring variants share one training, nothing else does."""

from __future__ import annotations

import numpy as np
import pytest

from aeguard.core import registry


@pytest.fixture()
def table() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.normal(size=(240, 6)).astype(np.float32)


def _fit(name: str, X: np.ndarray, **params):
    return registry.create(name, random_state=0, epochs=30, **params).fit(X)


def test_scoring_variant_reuses_training_and_scores_as_retrained(table, tmp_path, monkeypatch):
    fresh = _fit("mahalanobis", table, covariance="empirical")
    monkeypatch.setenv("AEGUARD_TRAIN_CACHE", str(tmp_path))
    first = _fit("mahalanobis", table)
    second = _fit("mahalanobis", table, covariance="empirical", scale="std")
    assert first.history_["cache"] == "miss" and second.history_["cache"] == "hit"
    assert len(list(tmp_path.glob("*.npz"))) == 1
    # a hit gives the scores of a fresh training with the same parameters
    np.testing.assert_allclose(second.decision_function(table),
                               _fit("mahalanobis", table, covariance="empirical", scale="std").decision_function(table))
    assert fresh.history_.get("cache") is None  # unset: nothing stored, nothing loaded


@pytest.mark.parametrize("change", [{"lr": 5e-3}, {"latent": 3}, {"random_state": 1}, {"faithful": True}])
def test_training_parameter_change_misses(table, tmp_path, monkeypatch, change):
    monkeypatch.setenv("AEGUARD_TRAIN_CACHE", str(tmp_path))
    _fit("mahalanobis", table)
    params = {"random_state": 0, "epochs": 30, **change}
    other = registry.create("mahalanobis", **params).fit(table)
    assert other.history_["cache"] == "miss"


def test_other_data_misses(table, tmp_path, monkeypatch):
    monkeypatch.setenv("AEGUARD_TRAIN_CACHE", str(tmp_path))
    _fit("ae", table)
    assert _fit("ae", table[::-1].copy()).history_["cache"] == "miss"
    assert _fit("ae", table, contamination=0.2).history_["cache"] == "hit"
