"""Image suites of ``aeguard benchmark``: ``--suite digits`` and ``--as-images CxHxW`` for any suite.

``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images, pixel counts 0-16, no download) under the
one-class protocol of the specs (``fader.md`` section 7, ``mahalanobis.md`` section 7): for each digit c and
seed, every class is split 60/40 with that seed (``train_test_split(test_size=0.4, random_state=seed)``); the fit
split is the 60 % of class c (clean: no other digit), the test split the 40 % of class c (label 0) plus the 40 %
of every other class (label 1). Ten tasks (``digit0`` .. ``digit9``) per seed.

``digits-holdout``: the held-out-class protocol (``mahalanobis.md`` section 9.5: class-conditional modes with
the digit labels as classes): for each digit c and seed, every class is split 60/40 the same way; the fit split is
the 60 % of the nine other digits, with their digit labels as ``classes`` for detectors that accept them; the
test split is the 40 % of every class, digit c labelled 1. Ten tasks (``without0`` .. ``without9``) per seed.

In an image suite (digits, or ``--as-images`` on a folder/ODDS suite) each cell hands detectors whose class lists
``"image"`` in ``modalities`` the rows as (N, C, H, W) images with the stated pixel range; every other detector
(the PyOD baselines) gets the same pixels flattened, in the same run, on the same split.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

DIGITS_SUITE = "digits"
#: the cell source of one digits task: ``sklearn-digits:3``
DIGITS_SOURCE = "sklearn-digits:"
HOLDOUT_SUITE = "digits-holdout"
#: the cell source of one held-out-class task: ``sklearn-digits-holdout:3`` (digit 3 is the anomaly)
HOLDOUT_SOURCE = "sklearn-digits-holdout:"
DIGITS_SHAPE = (1, 8, 8)
DIGITS_RANGE = (0.0, 16.0)


def parse_image_shape(text: str) -> tuple[int, int, int]:
    """``"1x8x8"`` (C x H x W) as a tuple of three positive ints."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"--as-images must be CxHxW with three positive integers (e.g. 1x8x8), got {text!r}")
    return shape  # type: ignore[return-value]


def is_digits_source(source: str) -> bool:
    return source.startswith((DIGITS_SOURCE, HOLDOUT_SOURCE))


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    X = np.asarray(data.data, dtype=np.float64)
    X.setflags(write=False)
    return X, np.asarray(data.target, dtype=np.int64)


def digits_task(source: str, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                                 np.ndarray | None]:
    """(X flat 0-16, y, fit rows, test rows, classes) of one digits task: one-class (y = 1: not digit c; no
    classes) or held-out class (y = 1: digit c; the digit labels as classes)."""
    X, target = _digits()
    if source.startswith(HOLDOUT_SOURCE):
        c = int(source[len(HOLDOUT_SOURCE):])
        fit_idx, test_idx = held_out_class_split(target, c, seed)
        return X, (target == c).astype(np.int64), fit_idx, test_idx, target
    c = int(source[len(DIGITS_SOURCE):])
    fit_idx, test_idx = one_class_split(target, c, seed)
    return X, (target != c).astype(np.int64), fit_idx, test_idx, None


def digits_images(task: str, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fit images, test images, test labels) of the one-class task ``digitC`` as (N, 1, 8, 8) pixels 0-16,
    the split the benchmark's cell uses for ``seed`` (for analysis scripts; fit with ``pixel_range=DIGITS_RANGE``)."""
    if not task.startswith("digit") or not task[len("digit"):].isdigit():
        raise ValueError(f"a digits task is digit0 .. digit9, got {task!r}")
    X, y, fit_rows, test_rows, _ = digits_task(DIGITS_SOURCE + task[len("digit"):], seed)
    return X[fit_rows].reshape(-1, *DIGITS_SHAPE), X[test_rows].reshape(-1, *DIGITS_SHAPE), y[test_rows]


def one_class_split(target: np.ndarray, normal: int, seed: int, test_size: float = 0.4) -> tuple[np.ndarray,
                                                                                                np.ndarray]:
    """Fit rows: 60 % of class ``normal``; test rows: the other 40 % of it plus 40 % of every other class."""
    return _class_split(target, lambda k: k == normal, normal, seed, test_size)


def held_out_class_split(target: np.ndarray, anomaly: int, seed: int,
                         test_size: float = 0.4) -> tuple[np.ndarray, np.ndarray]:
    """Fit rows: 60 % of every class but ``anomaly``; test rows: 40 % of every class (the same per-class split
    as :func:`one_class_split`)."""
    return _class_split(target, lambda k: k != anomaly, anomaly, seed, test_size)


def _class_split(target: np.ndarray, in_fit, named: int, seed: int, test_size: float) -> tuple[np.ndarray,
                                                                                                np.ndarray]:
    from sklearn.model_selection import train_test_split

    if named not in set(np.unique(target).tolist()):
        raise ValueError(f"class {named} is not in the data")
    fit, test = [], []
    for k in np.unique(target):
        rows = np.flatnonzero(target == k)
        a, b = train_test_split(rows, test_size=test_size, random_state=seed)
        if in_fit(k):
            fit.append(a)
        test.append(b)
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(test))
