"""Why the raw BCE term ranked digits 8 and 9 poorly.

ROC-AUC of the reconstruction term as scored (the Bernoulli KL since fe807cc), of the raw BCE (the KL plus the
image's own entropy), of that entropy alone, and of `ae`, on the one-class digits tasks named on the command line
(seed 0). Usage: ``python scripts/mahalanobis/bce_entropy.py 1 2 8 9``.
"""

from __future__ import annotations

import sys

import numpy as np

from aeguard.benchmark.images import digits_task
from aeguard.core import registry
from aeguard.core.metrics import roc_auc


def main(tasks: list[int]) -> None:
    for c in tasks:
        X, y, fit, test, _ = digits_task(f"sklearn-digits:{c}", 0)
        images = (X / 16.0).reshape(-1, 1, 8, 8)
        det = registry.build_detector("mahalanobis", {"terms": "recon"}, seed=0)
        det.fit(images[fit], pixel_range=(0.0, 1.0))
        kl = det.score_output(images[test]).components["recon"] / det.beta_  # the scored term
        x = images[test].reshape(len(test), -1).astype(np.float64)
        p = np.clip(x, 1e-7, 1 - 1e-7)
        entropy = -(x * np.log(p) + (1 - x) * np.log(1 - p)).mean(axis=1)  # the raw BCE's floor
        ae = registry.build_detector("ae", {}, seed=0).fit(images[fit], pixel_range=(0.0, 1.0))
        y_test, ae_scores = y[test], ae.decision_function(images[test])
        print(f"digit {c}  raw BCE {roc_auc(y_test, kl + entropy):.3f}  KL {roc_auc(y_test, kl):.3f}  "
              f"entropy alone {roc_auc(y_test, entropy):.3f}  ae {roc_auc(y_test, ae_scores):.3f}", flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [8, 9])
