"""Decompose the ``apre(mss=false)`` score on the splits where it inverts: which term ranks outliers low?

Set ``AEGUARD_TRAIN_CACHE`` to the benchmark run's cache to score the very networks of its rows.
"""

import json
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from aeguard.benchmark.cells import build_detector, load_labelled
from aeguard.benchmark.protocol import make_split

SPLITS = [("musk", 4), ("musk", 0), ("shuttle", 1), ("shuttle", 0), ("cover", 0), ("cardio", 0)]


def decompose(dataset: str, seed: int, data_dir: str = "../shared/data/odds") -> dict:
    X, y = load_labelled(dataset, data_dir)
    X_fit, X_test, y_fit, y_test = make_split(X, y, seed)
    det = build_detector("apre(mss=false)", seed).fit(X_fit)
    with torch.no_grad():
        mu, s2 = det.model_(det.standardize_(torch.as_tensor(X_test, dtype=torch.float32)))
        z_test = det.standardize_(torch.as_tensor(X_test, dtype=torch.float32))
        _, s2_fit = det.model_(det.standardize_(torch.as_tensor(X_fit, dtype=torch.float32)))
    err2 = (z_test - mu).square()
    log_var_fit = torch.log(s2_fit + 1e-5).sum(1).numpy()

    def auc(score) -> float:
        return round(float(roc_auc_score(y_test, np.asarray(score))), 3)

    return {"dataset": dataset, "seed": seed, "contamination_fit": round(float(y_fit.mean()), 3),
            "wnll": auc(det.decision_function(X_test)), "squared_error_of_mu": auc(err2.sum(1)),
            "normalised_error": auc((err2 / (s2 + 1e-5)).sum(1)),
            "log_variance": auc(torch.log(s2 + 1e-5).sum(1)),
            "fit_outlier_minus_inlier_median_log_var": round(float(np.median(log_var_fit[y_fit == 1])
                                                                   - np.median(log_var_fit[y_fit == 0])), 2)}


if __name__ == "__main__":
    rows = []
    for dataset, seed in SPLITS:
        rows.append(decompose(dataset, seed))
        print(json.dumps(rows[-1]), flush=True)
    Path("runs/profile").mkdir(parents=True, exist_ok=True)
    Path("runs/profile/why_apre_inverts.json").write_text(json.dumps(rows, indent=1))
