"""The Lightning base: chunked epochs, early stopping, mini-batches, divergence and device errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aeguard.core import registry


def test_epochs_are_counted_exactly_across_chunks(table):
    det = registry.create("ae", epochs=25, epochs_per_step=10, random_state=0).fit(table[0])
    assert det.history_["epochs_run"] == 25 and det.history_["lightning_steps"] == 3
    assert not det.history_["stopped_early"]


def test_early_stopping_on_a_label_free_holdout(table):
    # lr=1e-30 (below float32 resolution) leaves the validation loss flat, so early stopping must end training
    # `patience` epochs after the first check (validation every 10 epochs, patience 20 epochs: stop at epoch 30)
    det = registry.create("ae", epochs=1000, epochs_per_step=10, lr=1e-30, val_fraction=0.2, early_stopping=20,
                          random_state=0).fit(table[0])
    assert det.history_["stopped_early"] and det.history_["epochs_run"] == 30
    assert det.history_["n_val"] == round(0.2 * len(table[0]))


def test_minibatches_are_seeded(table):
    a = registry.create("ae", epochs=5, batch_size=64, random_state=3).fit(table[0]).decision_scores_
    b = registry.create("ae", epochs=5, batch_size=64, random_state=3).fit(table[0]).decision_scores_
    np.testing.assert_array_equal(a, b)


def test_divergence_fails_loudly(table):
    with pytest.raises(RuntimeError, match="training loss became (nan|inf)"):
        registry.create("ae", epochs=200, epochs_per_step=10, lr=1e30, random_state=0).fit(table[0])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error path")
def test_cuda_request_without_gpu_is_a_clear_error(table):
    with pytest.raises(ValueError, match="no CUDA device"):
        registry.create("ae", epochs=1, device="cuda").fit(table[0])


def test_auto_device_trains_where_available(table):
    det = registry.create("ae", epochs=2, random_state=0).fit(table[0])
    assert det.device_ == ("cuda" if torch.cuda.is_available() else "cpu")
