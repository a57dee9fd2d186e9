"""Input validation shared by the estimators and the torch-free artifact runtime.

Everything that enters a detector passes through :func:`check_features`, so a bad batch fails with one
``ValueError`` that names the problem (which column, which row) instead of a shape error deep inside torch
or onnxruntime. Where scikit-learn has a wording for a problem (1-D input, too few samples, no features,
sparse, complex or object input, a feature-count mismatch) the message contains it, so
``sklearn.utils.estimator_checks`` recognises it (tests/test_sklearn_conformance.py); this module still
imports only numpy and pandas, because the torch-free scoring path uses it too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

try:  # pandas is a base dependency, but keep the array path usable without it.
    import pandas as pd
except ImportError:  # pragma: no cover - pandas is in the base install
    pd = None


#: the largest magnitude the graphs can compute with (they run in float32)
F32_MAX = float(np.finfo(np.float32).max)
#: a value this many robust spreads from its column's median is reported as extreme at fit
EXTREME_SPREADS = 1e6


class DataWarning(UserWarning):
    """A fit set problem that does not stop training (constant columns, extreme values): ``fit`` warns with it,
    so Python users see what the CLI prints; filter it with ``warnings.simplefilter("ignore", DataWarning)``."""


class InputTypeError(TypeError, ValueError):
    """Input of a kind that cannot be a feature matrix (sparse matrices, cells such as dicts).

    A ``TypeError`` as scikit-learn raises for these, and a ``ValueError`` so that one ``except ValueError``
    (serving, the CLI) still catches every bad input.
    """


#: scikit-learn's wording (``check_array(accept_sparse=False)``): the graphs compute on dense rows
SPARSE_MESSAGE = ("Sparse data was passed for X, but dense data is required. Use '.toarray()' to convert to a "
                  "dense numpy array.")


def _is_sparse(X: Any) -> bool:
    """A scipy.sparse matrix or array (or pydata sparse), detected without importing scipy."""
    return type(X).__module__.split(".")[:2] == ["scipy", "sparse"] or type(X).__module__.startswith("sparse")


def _is_frame(X: Any) -> bool:
    return pd is not None and isinstance(X, pd.DataFrame)


def feature_names_of(X: Any) -> list[str] | None:
    """Column names of a DataFrame (as strings), ``None`` for arrays."""
    if _is_frame(X):
        return [str(c) for c in X.columns]
    return None


def default_feature_names(n_features: int) -> list[str]:
    return [f"x{i}" for i in range(n_features)]


def _first_bad_position(mask: np.ndarray) -> tuple[int, int]:
    rows, cols = np.nonzero(mask)
    return int(rows[0]), int(cols[0])


def _as_float_matrix(X: Any) -> np.ndarray:
    if _is_sparse(X):
        raise InputTypeError(SPARSE_MESSAGE)
    if _is_frame(X):
        non_numeric = [str(c) for c, dt in X.dtypes.items() if not pd.api.types.is_numeric_dtype(dt)]
        if non_numeric:
            raise ValueError(f"non-numeric column(s) {preview(non_numeric)}: every feature must be a number")
        if any(pd.api.types.is_complex_dtype(dt) for dt in X.dtypes):
            raise ValueError("Complex data not supported: every feature must be a real number")
        arr = X.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        arr = np.asarray(X)
        if arr.dtype == object or arr.dtype.kind in "USaV":
            try:
                arr = arr.astype(np.float64)
            except TypeError as exc:  # a cell that is no number at all (dict, list, complex): numpy's TypeError
                raise InputTypeError(f"non-numeric values in input: {exc}") from None
            except ValueError as exc:  # a string that does not parse as a number
                raise ValueError(f"non-numeric values in input: {exc}") from None
        elif arr.dtype.kind == "c":
            raise ValueError("Complex data not supported: every feature must be a real number")
        elif arr.dtype.kind not in "biuf":
            raise ValueError(f"unsupported input dtype {arr.dtype}: every feature must be a number")
        arr = arr.astype(np.float64, copy=False)
    if arr.ndim == 1:
        raise ValueError(
            f"expected a 2-D table (rows x features), got a 1-D array of length {arr.shape[0]}. Reshape your "
            "data either using X.reshape(-1, 1) if it has a single feature or X.reshape(1, -1) if it is a "
            "single row"
        )
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D table (rows x features), got shape {arr.shape}")
    return arr


def _too_few_rows(shape: tuple[int, ...], min_samples: int) -> str:
    what = "empty input (no rows)" if shape[0] == 0 else f"need at least {min_samples} rows"
    return (f"{what}: found array with {shape[0]} sample(s) (shape={shape}) while a minimum of {min_samples} "
            "is required.")


def check_features(
    X: Any,
    *,
    feature_names: Sequence[str] | None = None,
    n_features: int | None = None,
    names_required: bool = False,
    min_samples: int = 1,
    owner: str = "the detector",
) -> np.ndarray:
    """Return ``X`` as a finite float64 matrix, checked against the fitted feature layout.

    - DataFrames are matched to ``feature_names`` by column name: missing or unknown columns raise, and
      columns are reordered to the fitted order (so a caller's column order does not matter).
    - Arrays are checked by width only; ``names_required`` turns that into an error (artifacts fitted on
      named columns accept arrays, but callers who want safety pass frames).
    - NaN, inf, strings and empty batches raise ``ValueError`` naming the first offending cell; fewer than
      ``min_samples`` rows raise (fitting needs 2).
    - Sparse input and cells that are no number (dicts) raise :class:`InputTypeError`.
    - ``owner`` names the fitted model in the feature-count message (scikit-learn passes the class name).
    """
    if X is None:
        raise ValueError("no input data (got None)")
    if _is_frame(X) and feature_names is not None:
        cols = [str(c) for c in X.columns]
        missing = [n for n in feature_names if n not in cols]
        unknown = [c for c in cols if c not in set(feature_names)]
        if missing or unknown:
            parts = []
            if missing:
                parts.append(f"missing feature column(s) {missing[:10]}")
            if unknown:
                parts.append(f"unknown column(s) {unknown[:10]}")
            raise ValueError("; ".join(parts) + f" (expected {len(feature_names)} features)")
        if len(set(cols)) != len(cols):
            raise ValueError("duplicate column names in input")
        X = X.set_axis(cols, axis=1)[list(feature_names)]
    elif names_required and not _is_frame(X):
        raise ValueError("this detector was fitted on named columns; pass a DataFrame")
    if _is_frame(X) and len(X) < min_samples:  # before the dtype check: a header-only table has no numbers
        raise ValueError(_too_few_rows(X.shape, min_samples))
    arr = _as_float_matrix(X)
    if arr.shape[0] < min_samples:
        raise ValueError(_too_few_rows(arr.shape, min_samples))
    if arr.shape[1] == 0:
        raise ValueError(f"input has no feature columns: found array with 0 feature(s) (shape={arr.shape}) while a "
                         "minimum of 1 is required.")
    expected = n_features if n_features is not None else (len(feature_names) if feature_names else None)
    if expected is not None and arr.shape[1] != expected:
        raise ValueError(f"wrong number of features: X has {arr.shape[1]} features, but {owner} is expecting "
                         f"{expected} features as input")
    finite = np.isfinite(arr)
    if not finite.all():
        r, c = _first_bad_position(~finite)
        name = feature_names[c] if feature_names else f"column {c}"
        kind = "NaN" if np.isnan(arr[r, c]) else "infinite value"
        n_bad = int((~finite).any(axis=1).sum())
        raise ValueError(f"{kind} in row {r}, feature {name!r} ({n_bad} row(s) with NaN/inf); "
                         "impute or drop them before scoring")
    check_float32_range(arr, feature_names or feature_names_of(X))
    return np.ascontiguousarray(arr)


def preview(names: Sequence[str], limit: int = 10) -> str:
    """``['a', 'b'] and 3 more``: a list in a message that says how much was left out."""
    names = list(names)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"{names[:limit]}{more}"


def check_float32_range(X: np.ndarray, feature_names: Sequence[str] | None = None) -> np.ndarray:
    """Refuse values beyond float32 (what every graph computes in), naming the first cell; the one rule of
    fit, the Python API, the CLI, the edge runtime and the server."""
    big = np.abs(X) > F32_MAX
    if big.any():
        r, c = _first_bad_position(big)
        name = feature_names[c] if feature_names else f"column {c}"
        raise ValueError(f"value out of float32 range in row {r}, feature {name!r}: the model computes in float32")
    return X


def check_finite_scores(scores: np.ndarray) -> np.ndarray:
    """Scores about to be labelled: a non-finite one is an error naming its row, never an inlier label."""
    scores = np.asarray(scores)
    bad = ~np.isfinite(scores)
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise ValueError(f"non-finite score ({scores[r]}) in row {r} ({int(bad.sum())} row(s)): the row's values "
                         "are too extreme for the model's float32 arithmetic; check them")
    return scores


def constant_columns(X: np.ndarray) -> np.ndarray:
    """Boolean mask of columns with one value in every row (up to float rounding of that value)."""
    X = np.asarray(X, dtype=np.float64)
    spread = X.max(axis=0) - X.min(axis=0)
    return spread <= 1e-12 * np.maximum(np.abs(X).max(axis=0), 1.0)


def standard_scale(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fit-set ``(mean, scale)`` for ``(x - mean) / scale``: unbiased std + 1e-5, except that a constant column
    gets the scale of its own magnitude, ``max(|value|, 1)``.

    Why: with std + 1e-5 a constant column divides a new value's difference by 1e-5, so any change there (a
    sensor that was always 0 reads 1) scores ~1e10 and drowns every other feature. Measured in its own units a
    change of the column's own size weighs like one spread of an ordinary column.
    """
    X = np.asarray(X, dtype=np.float64)
    mean = X.mean(axis=0)
    std = X.std(axis=0, ddof=1) if len(X) > 1 else np.zeros(X.shape[1])
    return mean, np.where(constant_columns(X), np.maximum(np.abs(mean), 1.0), std + 1e-5)


def fit_warnings(X: np.ndarray, feature_names: Sequence[str] | None = None) -> list[str]:
    """One line per problem a fit set has that does not stop training: constant columns, extreme values."""
    X = np.asarray(X, dtype=np.float64)
    names = list(feature_names) if feature_names is not None else default_feature_names(X.shape[1])
    out = []
    constant = constant_columns(X)
    if constant.any():
        cols = [names[j] for j in np.flatnonzero(constant)]
        out.append(f"constant column(s) {preview(cols)}: one value in every fit row, so they cannot help at fit; "
                   "the standardizing detectors measure a new value there in the column's own magnitude "
                   "(scale max(|value|, 1)), so a change there cannot explode the score")
    med = np.median(X, axis=0)
    dev = np.abs(X - med)
    spread = 1.4826 * np.median(dev, axis=0)
    spread = np.where(spread > 0, spread, dev.mean(axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        extreme = (dev > EXTREME_SPREADS * spread) & (spread > 0)
    for j in np.flatnonzero(extreme.any(axis=0))[:10]:
        r = int(np.flatnonzero(extreme[:, j])[0])
        out.append(f"extreme value {X[r, j]:.6g} in row {r}, feature {names[j]!r} ({dev[r, j] / spread[j]:.3g} "
                   "times the column's typical spread): standardization squashes the column's other rows to ~0; "
                   "check for sentinel values or unit errors")
    return out


def check_labels(y: Any, n_rows: int) -> np.ndarray | None:
    """Optional labels: ``None`` stays ``None``; otherwise a 1-D integer array of the right length."""
    if y is None:
        return None
    arr = np.asarray(y)
    if arr.ndim != 1 or arr.shape[0] != n_rows:
        raise ValueError(f"y must be 1-D with {n_rows} entries, got shape {arr.shape}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError("y contains NaN or inf")
    return arr


def check_classes(classes: Any, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Class labels of the fit rows: (sorted distinct labels, int64 codes 0..K-1), refusing missing values."""
    arr = np.asarray(classes.to_numpy() if hasattr(classes, "to_numpy") else classes)
    if arr.ndim != 1 or arr.shape[0] != n_rows:
        raise ValueError(f"classes must be 1-D with {n_rows} entries (one per row), got shape {arr.shape}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError("classes contain NaN or inf; every fit row needs a class")
    if arr.dtype.kind == "O" and any(v is None or (isinstance(v, float) and v != v) for v in arr):
        raise ValueError("classes contain missing values; every fit row needs a class")
    labels, codes = np.unique(arr.astype(str) if arr.dtype.kind == "O" else arr, return_inverse=True)
    return labels, codes.astype(np.int64).reshape(-1)


def check_scores(scores: np.ndarray, what: str = "fit-set scores") -> np.ndarray:
    """Fail loudly on scores that cannot rank anything (non-finite or constant)."""
    scores = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(scores).all():
        n_bad = int((~np.isfinite(scores)).sum())
        raise RuntimeError(f"{what}: {n_bad} non-finite score(s); training diverged or the input is degenerate")
    if scores.size > 1 and np.ptp(scores) == 0.0:
        raise RuntimeError(f"{what} are constant ({scores[0]!r}); the detector cannot rank anything")
    return scores


# --- images ------------------------------------------------------------------------------------------
# Image batches are (N, C, H, W) or (N, H, W) (one channel) numpy arrays. They are validated here, apart from
# the table checks above, so the torch-free runtime refuses the same inputs with the same words as ``fit``.

#: the modalities a detector class or a registry record can name
MODALITIES = ("tabular", "image")


def is_image_batch(X: Any) -> bool:
    """An array-like of 3 or 4 dimensions (never a DataFrame): a batch of (H, W) or (C, H, W) images."""
    if X is None or _is_frame(X) or _is_sparse(X):
        return False
    ndim = getattr(X, "ndim", None)
    if not isinstance(ndim, int):  # lists, and array-likes that only offer __array__
        try:
            ndim = np.asarray(X).ndim
        except (TypeError, ValueError):  # ragged or odd input: the table checks name the problem
            return False
    return ndim in (3, 4)


def input_modality(X: Any) -> str:
    """``"image"`` for (N, C, H, W) / (N, H, W) arrays, ``"tabular"`` for everything else."""
    return "image" if is_image_batch(X) else "tabular"


def check_modality(owner: str, modalities: Sequence[str], modality: str) -> None:
    """Refuse an input of a modality the detector class does not declare (its record says the same)."""
    if modality in modalities:
        return
    if modality == "image":
        raise ValueError(f"{owner} takes tables only (modalities {tuple(modalities)}), got an image batch; "
                         "use an image-capable detector (`aeguard detectors` lists modalities) or flatten the "
                         "images yourself with X.reshape(len(X), -1)")
    raise ValueError(f"{owner} takes images only (modalities {tuple(modalities)}), got a table; pass an "
                     "(N, C, H, W) or (N, H, W) array")


def pixel_feature_names(image_shape: Sequence[int]) -> list[str]:
    """Feature names of the flattened pixels in C-order: ``c{channel}_h{row}_w{column}``."""
    c, h, w = (int(v) for v in image_shape)
    return [f"c{i}_h{j}_w{k}" for i in range(c) for j in range(h) for k in range(w)]


def default_pixel_range(dtype: np.dtype) -> tuple[float, float]:
    """The pixel range a dtype implies: unsigned integers their full range (uint8: 0-255), floats [0, 1]."""
    dtype = np.dtype(dtype)
    if dtype.kind == "u":
        return 0.0, float(np.iinfo(dtype).max)
    return 0.0, 1.0


def check_pixel_range(pixel_range: Any) -> tuple[float, float]:
    """``(low, high)`` as two finite floats with ``low < high``; also accepts the text ``"LOW,HIGH"``."""
    if isinstance(pixel_range, str):
        pixel_range = pixel_range.replace(":", ",").split(",")
    try:
        lo, hi = (float(v) for v in pixel_range)
    except (TypeError, ValueError):
        raise ValueError(f"pixel_range must be two numbers (low, high), got {pixel_range!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"pixel_range must be finite with low < high, got {(lo, hi)}")
    return lo, hi


def check_images(
    X: Any,
    *,
    pixel_range: Any = None,
    image_shape: Sequence[int] | None = None,
    min_samples: int = 1,
    owner: str = "the detector",
) -> tuple[np.ndarray, tuple[float, float]]:
    """Return an image batch as a float64 (N, C, H, W) array and its pixel range, or raise naming the problem.

    (N, H, W) becomes (N, 1, H, W). ``pixel_range`` (low, high) says what the pixel values mean: None takes the
    dtype's (uint8: 0-255, floats: [0, 1]). Values outside it are refused (a 0-255 image sent to a model fitted
    on [0, 1] pixels would otherwise score as garbage). ``image_shape`` (C, H, W) is the fitted shape.
    """
    if X is None:
        raise ValueError("no input data (got None)")
    if _is_sparse(X):
        raise InputTypeError(SPARSE_MESSAGE)
    arr = np.asarray(X)
    if arr.dtype == object or arr.dtype.kind in "USaV":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"non-numeric pixel values in image batch: {exc}") from None
    elif arr.dtype.kind not in "biuf":
        raise ValueError(f"unsupported image dtype {arr.dtype}: pixels must be real numbers")
    if arr.ndim == 3:
        arr = arr[:, None, :, :]
    if arr.ndim != 4:
        raise ValueError(f"expected an image batch (N, C, H, W) or (N, H, W), got shape {arr.shape}")
    lo, hi = default_pixel_range(arr.dtype) if pixel_range is None else check_pixel_range(pixel_range)
    arr = arr.astype(np.float64, copy=False)
    if arr.shape[0] < min_samples:
        what = "empty input" if arr.shape[0] == 0 else f"need at least {min_samples} images"
        raise ValueError(f"{what}: found {arr.shape[0]} image(s) (shape={arr.shape}) while a minimum of "
                         f"{min_samples} is required.")
    if min(arr.shape[1:]) == 0:
        raise ValueError(f"images have an empty dimension: shape {arr.shape}")
    if image_shape is not None and tuple(arr.shape[1:]) != tuple(int(v) for v in image_shape):
        raise ValueError(f"wrong image shape: got (C, H, W) = {tuple(arr.shape[1:])}, but {owner} expects "
                         f"{tuple(int(v) for v in image_shape)}")
    finite = np.isfinite(arr)
    if not finite.all():
        n, c, h, w = (int(v[0]) for v in np.nonzero(~finite))
        raise ValueError(f"NaN or infinite pixel in image {n} at (c={c}, h={h}, w={w})")
    outside = (arr < lo) | (arr > hi)
    if outside.any():
        n, c, h, w = (int(v[0]) for v in np.nonzero(outside))
        raise ValueError(f"pixel value {arr[n, c, h, w]!r} in image {n} at (c={c}, h={h}, w={w}) lies outside the "
                         f"pixel range [{lo:g}, {hi:g}]; state the range of your pixels (pixel_range=(low, high), "
                         "--pixel-range LOW,HIGH)")
    return np.ascontiguousarray(arr), (lo, hi)


def check_layout(
    X: Any,
    *,
    owner: str,
    n_features: int,
    feature_names: Sequence[str] | None = None,
    image_shape: Sequence[int] | None = None,
    pixel_range: Any = None,
) -> np.ndarray:
    """``X`` checked against a fitted input layout: the one rule of fitted detectors and loaded artifacts.

    Images of ``image_shape`` (C, H, W) when it is given; else a table, matched by column name when both sides
    have names (``feature_names`` and a DataFrame), by width otherwise. Mixing the two modalities is refused
    naming what the model takes.
    """
    if image_shape is not None:
        if input_modality(X) != "image":
            raise ValueError(f"{owner} takes {tuple(int(v) for v in image_shape)} (C x H x W) images: pass an "
                             "(N, C, H, W) or (N, H, W) array, not a table")
        return check_images(X, pixel_range=pixel_range, image_shape=image_shape, owner=owner)[0]
    if input_modality(X) == "image":
        raise ValueError(f"{owner} takes tables of {n_features} features, got an image batch of shape {np.shape(X)}")
    names = [str(n) for n in feature_names] if feature_names is not None and feature_names_of(X) is not None else None
    return check_features(X, feature_names=names, n_features=n_features, owner=owner)
