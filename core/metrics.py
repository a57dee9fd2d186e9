"""The one metrics module: ranking metrics in numpy (ROC-AUC and AP equal scikit-learn's, ties included; the
torch-free runtime, the CLI, the benchmark and the edge checks use them without scikit-learn)."""

from __future__ import annotations

import numpy as np


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    boundaries = np.flatnonzero(np.diff(xs)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(x)]])
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + e + 1) / 2.0
    return ranks


def roc_auc(y: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC by the Mann-Whitney statistic (ties count one half), as scikit-learn computes it."""
    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC-AUC needs both outliers and inliers in y")
    ranks = _average_ranks(np.asarray(scores, dtype=np.float64))
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def average_precision(y: np.ndarray, scores: np.ndarray) -> float:
    """Average precision (step-wise, scikit-learn's definition) with tied scores grouped."""
    y = np.asarray(y).astype(bool)
    if not y.any():
        raise ValueError("average precision needs at least one outlier in y")
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")
    s, t = np.asarray(scores, dtype=np.float64)[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp = np.cumsum(t)[last]
    precision = tp / (last + 1)
    recall_gain = np.diff(np.r_[0, tp]) / t.sum()
    return float(np.sum(precision * recall_gain))


def fpr_at_tpr(y: np.ndarray, scores: np.ndarray, tpr: float = 0.95) -> float:
    """FPR at ``tpr`` TPR with the inliers as positives (the OOD papers' "FPR at 95 % TPR"): the fraction of
    outliers accepted by the lowest threshold that accepts at least ``tpr`` of the inliers (score <= threshold)."""
    y = np.asarray(y).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    inliers, outliers = np.sort(s[~y]), s[y]
    if not len(inliers) or not len(outliers):
        raise ValueError("FPR at TPR needs both outliers and inliers in y")
    threshold = inliers[max(int(np.ceil(tpr * len(inliers))) - 1, 0)]
    return float(np.mean(outliers <= threshold))


def aupr_in(y: np.ndarray, scores: np.ndarray) -> float:
    """Area under the precision-recall curve with the inliers as positives (lower score = more inlying);
    AUPR-out is :func:`average_precision` itself."""
    return average_precision(~np.asarray(y).astype(bool), -np.asarray(scores, dtype=np.float64))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); NaN when either side is constant."""
    ra, rb = _average_ranks(np.asarray(a, dtype=np.float64)), _average_ranks(np.asarray(b, dtype=np.float64))
    if np.ptp(ra) == 0 or np.ptp(rb) == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])
