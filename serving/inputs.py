"""Request payloads -> validated float matrices in the artifact's feature order (numpy, orjson, pyarrow).

Every problem raises :class:`RequestError` with an HTTP status and one sentence that names it (which row,
which feature), so the service answers 4xx before anything reaches onnxruntime.

JSON bodies are parsed by orjson and checked without per-row models: the values of all rows go into one
``np.array`` call, and its dtype is the strict check (strings make it a string array, ``null`` and nested
lists an object array, ragged rows fail). The one thing that dtype cannot show is a boolean among numbers
(numpy turns ``true`` into 1.0), so the cells that came out exactly 0 or 1 have their JSON type looked at,
and only those. Any failed check finds the first bad cell, so the answer is the 400 naming it
(``rows[0].sensor_2: Input should be a valid number``).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import numpy as np

from aeguard.core.validation import F32_MAX, check_features, check_float32_range

JSON_MEDIA = "application/json"
ARROW_MEDIA = "application/vnd.apache.arrow.stream"
NPY_MEDIA = "application/x-npy"
#: the request-body forms of ``POST /score`` (one of them per request)
DATA_FIELDS = ("rows", "columns", "features", "values", "images")
OPTION_FIELDS = ("explain", "components", "threshold", "contamination", "model")
FORMS_HINT = ("give exactly one of 'rows' (a list of records or value lists), 'columns' (feature -> list of "
              "values), 'features' + 'values' (feature names and value lists in that order) or, for image "
              "models, 'images' (nested C x H x W or H x W lists)")


class RequestError(ValueError):
    """A client error: ``status`` is the HTTP status to answer with (400, 404, 413, 415)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _preview(names: Sequence[str], limit: int = 10) -> str:
    names = list(names)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"{names[:limit]}{more}"


def _check_rows_limit(n_rows: int, max_rows: int) -> None:
    if n_rows == 0:
        raise RequestError("empty batch: no rows to score")
    if n_rows > max_rows:
        raise RequestError(f"batch of {n_rows} rows exceeds the limit of {max_rows} rows per request "
                           "(AEGUARD_MAX_ROWS); split it into smaller requests", status=413)


def _name_problem(given: Sequence[str], names: Sequence[str]) -> str:
    """What is wrong with a set of feature names (missing, unknown, duplicate); empty when nothing is."""
    expected = set(names)
    unknown = [k for k in given if k not in expected]
    present = set(given)
    missing = [n for n in names if n not in present]
    parts = []
    if missing:
        parts.append(f"missing feature(s) {_preview(missing)}")
    if unknown:
        parts.append(f"unknown feature(s) {_preview(unknown)}")
    if not parts and len(present) != len(given):
        parts.append("duplicate feature names")
    return "; ".join(parts)


def _not_a_number(where: str) -> RequestError:
    return RequestError(f"{where}: Input should be a valid number")


def _is_number(value: Any) -> bool:
    return type(value) is float or type(value) is int  # not bool, whose type is a subclass of int


# --- options ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """The per-request options of ``/score`` (from the JSON body or the query string)."""

    explain: bool = False
    components: bool = False
    threshold: float | None = None
    contamination: float | str | None = None
    model: str | None = None


def check_threshold_args(threshold: float | None, contamination: Any) -> None:
    """Per-request threshold overrides: one of the two, and finite."""
    if threshold is not None and contamination is not None:
        raise RequestError("give either 'threshold' or 'contamination', not both")
    if threshold is not None and not math.isfinite(threshold):
        raise RequestError("'threshold' must be a finite number")


def _option(name: str, value: Any) -> Any:
    """One option value from JSON, strictly typed as in the published schema."""
    if value is None:
        if name in ("explain", "components"):
            raise RequestError(f"{name}: Input should be a valid boolean")
        return None
    if name in ("explain", "components"):
        if type(value) is not bool:
            raise RequestError(f"{name}: Input should be a valid boolean")
        return value
    if name == "threshold":
        if not _is_number(value):
            raise _not_a_number("threshold")
        return float(value)
    if name == "contamination":
        if value == "auto" and isinstance(value, str):
            return value
        if not _is_number(value):
            raise RequestError("contamination: Input should be a number in [0, 0.5] or 'auto'")
        if not 0.0 <= value <= 0.5:
            raise RequestError("contamination: Input should be between 0 and 0.5, or 'auto'")
        return float(value)
    if not isinstance(value, str):
        raise RequestError("model: Input should be a valid string")
    return value


def _query_option(name: str, text: str) -> Any:
    """One option from the query string (text), converted to its JSON type first."""
    if name in ("explain", "components"):
        lowered = text.strip().lower()
        if lowered not in ("true", "false", "1", "0"):
            raise RequestError(f"{name}: Input should be a valid boolean (true or false)")
        return lowered in ("true", "1")
    if name == "model":
        return text
    if name == "contamination" and text.strip() == "auto":
        return "auto"
    try:
        return _option(name, float(text))
    except ValueError:
        raise RequestError(f"{name}: Input should be a valid number") from None


def parse_options(body_options: Mapping[str, Any], query: bytes | str = b"") -> Options:
    """Options from the JSON body and the query string (``?model=main&explain=true``); an option given in
    both is refused rather than silently picked."""
    values = {name: _option(name, value) for name, value in body_options.items()}
    text = query.decode("latin-1") if isinstance(query, bytes) else query
    if text:
        try:
            pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            raise RequestError(f"malformed query string {text[:100]!r}") from None
        for name, raw in pairs:
            if name not in OPTION_FIELDS:
                raise RequestError(f"unknown query parameter {name!r}; options are {list(OPTION_FIELDS)}")
            if name in values:
                raise RequestError(f"option {name!r} given twice (in the query string and the body, or twice "
                                   "in the query string)")
            values[name] = _query_option(name, raw)
    check_threshold_args(values.get("threshold"), values.get("contamination"))
    return Options(**values)


# --- JSON bodies -----------------------------------------------------------------------------------------


def load_json(body: bytes) -> Any:
    """orjson first; the standard library only for what orjson refuses but a JSON client may send (``NaN``,
    ``Infinity``, ``1e999``), so that those get the finite-value check's message instead of "malformed"."""
    import orjson

    if not body.strip():
        return {}
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            raise RequestError(f"malformed JSON body: {exc}") from None


def split_json_body(obj: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A parsed JSON body -> (data fields, option fields); unknown fields are refused."""
    if not isinstance(obj, dict):
        raise RequestError("body: Input should be an object with 'rows', 'columns' or 'features' + 'values'")
    unknown = [k for k in obj if k not in DATA_FIELDS and k not in OPTION_FIELDS]
    if unknown:
        raise RequestError(f"unknown field {unknown[0]!r} in the request body")
    data = {k: obj[k] for k in DATA_FIELDS if obj.get(k) is not None}
    options = {k: obj[k] for k in OPTION_FIELDS if k in obj}
    return data, options


def matrix_from_json(data: Mapping[str, Any], names: Sequence[str], max_rows: int) -> np.ndarray:
    """The data fields of a JSON body (see :data:`DATA_FIELDS`) -> finite float64 matrix in feature order."""
    form = tuple(data)
    if form == ("rows",):
        return matrix_from_rows(data["rows"], names, max_rows)
    if form == ("columns",):
        return matrix_from_columns(data["columns"], names, max_rows)
    if form == ("features", "values"):
        return matrix_from_values(data["features"], data["values"], names, max_rows)
    if form == ("features",):
        raise RequestError("'features' needs 'values' (a list of value lists in that feature order)")
    if form == ("values",):
        raise RequestError("'values' needs 'features' (the feature names, in the order of each value list)")
    raise RequestError(FORMS_HINT)


def _numeric(values: Any, shape: tuple[int, ...], locate: Any) -> np.ndarray:
    """``np.array(values)`` as float64 of exactly ``shape`` (the nesting of ``values``), or the 400 naming the
    first cell that is not a number (``locate()`` finds it; it runs only when the vectorised check fails)."""
    try:
        arr = np.array(values)
    except (ValueError, TypeError, OverflowError):
        arr = None
    if arr is None or arr.dtype.kind not in "iuf" or arr.shape != shape or _hides_booleans(arr, values):
        where = locate()
        if where is not None:
            raise _not_a_number(where)
    try:
        return np.asarray(values if arr is None else arr, dtype=np.float64).reshape(shape)
    except OverflowError:  # an integer beyond float64, kept as a Python int by the parser
        raise RequestError("a number in the body is out of range: the model computes in float32") from None
    except (ValueError, TypeError):
        raise RequestError("every value must be a number, one per feature and row") from None


def _hides_booleans(arr: np.ndarray, values: Any) -> bool:
    """Whether a JSON ``true``/``false`` became a 1.0/0.0 of ``arr`` (only cells equal to 0 or 1 are looked at)."""
    if arr.size <= 256:  # small batches: looking at every cell is cheaper than the numpy calls
        cells = values if arr.ndim == 1 else (v for row in values for v in row)
        return any(type(v) is bool for v in cells)
    flat = arr.reshape(-1)
    candidates = np.flatnonzero((flat == 0) | (flat == 1))
    if not candidates.size:
        return False
    if arr.ndim == 1:
        return any(type(values[i]) is bool for i in candidates.tolist())
    rows, cols = np.unravel_index(candidates, arr.shape[:2])
    return any(type(values[i][j]) is bool for i, j in zip(rows.tolist(), cols.tolist()))


def matrix_from_rows(rows: Any, names: Sequence[str], max_rows: int) -> np.ndarray:
    """``rows``: records ``{feature: value}`` (any key order) or lists of values in feature order."""
    if not isinstance(rows, list):
        raise RequestError("rows: Input should be a valid list")
    _check_rows_limit(len(rows), max_rows)
    d = len(names)
    if isinstance(rows[0], dict):
        pick = itemgetter(*names)
        try:
            values = [pick(row) for row in rows]
            bad_width = any(len(row) != d for row in rows)
        except (KeyError, TypeError):
            bad_width = True
        if bad_width:
            _record_problems(rows, names)

        def locate() -> str | None:
            for i, row in enumerate(rows):
                for name in names:
                    if not _is_number(row[name]):
                        return f"rows[{i}].{name}"
            return None
    else:
        for i, row in enumerate(rows):
            if isinstance(row, dict):
                raise RequestError(f"row {i}: mixes records and value lists; use one form for the whole batch")
            if not isinstance(row, list):
                raise RequestError(f"rows[{i}]: Input should be a record or a list of numbers")
            if len(row) != d:
                raise RequestError(f"row {i} has {len(row)} values, expected {d} (one per feature, in the order "
                                   f"{_preview(names)})")
        values = rows

        def locate() -> str | None:
            return _first_bad_cell(rows, "rows")
    nesting = (len(rows), d) if d > 1 or not isinstance(rows[0], dict) else (len(rows),)
    X = _numeric(values, nesting, locate).reshape(len(rows), d)
    return _finite(X, names)


def _record_problems(rows: list[Any], names: Sequence[str]) -> None:
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise RequestError(f"row {i}: mixes records and value lists; use one form for the whole batch")
        problem = _name_problem(list(row), names)
        if problem:
            raise RequestError(f"row {i}: {problem} (expected the {len(names)} features {_preview(names)})")


def _first_bad_cell(lists: Sequence[Any], label: str) -> str | None:
    for i, row in enumerate(lists):
        for j, value in enumerate(row):
            if not _is_number(value):
                return f"{label}[{i}][{j}]"
    return None


def matrix_from_columns(columns: Any, names: Sequence[str], max_rows: int) -> np.ndarray:
    """``columns``: ``{feature: [values]}`` with every feature present and all columns equally long."""
    if not isinstance(columns, dict):
        raise RequestError("columns: Input should be an object (feature -> list of values)")
    problem = _name_problem(list(columns), names)
    if problem:
        raise RequestError(f"columns: {problem} (expected the {len(names)} features {_preview(names)})")
    for name in names:
        if not isinstance(columns[name], list):
            raise RequestError(f"columns.{name}: Input should be a valid list")
    lengths = {n: len(columns[n]) for n in names}
    if len(set(lengths.values())) > 1:
        short = min(lengths, key=lengths.get)
        long = max(lengths, key=lengths.get)
        raise RequestError(f"columns have different lengths: {short!r} has {lengths[short]} values, {long!r} has "
                           f"{lengths[long]}")
    n = lengths[names[0]]
    _check_rows_limit(n, max_rows)

    def locate() -> str | None:
        for name in names:
            for i, value in enumerate(columns[name]):
                if not _is_number(value):
                    return f"columns.{name}[{i}]"
        return None

    X = _numeric([columns[name] for name in names], (len(names), n), locate).T
    return _finite(X, names)


def matrix_from_values(features: Any, values: Any, names: Sequence[str], max_rows: int) -> np.ndarray:
    """``features`` (the names, in any order) and ``values`` (one list per row, in that order)."""
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        raise RequestError("features: Input should be a list of feature names")
    problem = _name_problem(features, names)
    if problem:
        raise RequestError(f"features: {problem} (expected the {len(names)} features {_preview(names)})")
    if not isinstance(values, list):
        raise RequestError("values: Input should be a valid list")
    _check_rows_limit(len(values), max_rows)
    d = len(names)
    for i, row in enumerate(values):
        if not isinstance(row, list):
            raise RequestError(f"values[{i}]: Input should be a list of numbers")
        if len(row) != d:
            raise RequestError(f"values[{i}] has {len(row)} values, expected {d} (one per entry of 'features')")
    X = _numeric(values, (len(values), d), lambda: _first_bad_cell(values, "values"))
    if list(features) != list(names):
        order = {f: j for j, f in enumerate(features)}
        X = X[:, [order[n] for n in names]]
    return _finite(X, names)


# --- binary bodies ---------------------------------------------------------------------------------------


def matrix_from_npy(body: bytes, names: Sequence[str], max_rows: int) -> np.ndarray:
    """One ``.npy`` array (rows x features, in the manifest's feature order); pickles are refused."""
    if not body:
        raise RequestError("empty .npy body: send one 2-D array (rows x features) written by numpy.save")
    _check_npy_header(body, len(names), max_rows)
    try:
        arr = np.load(io.BytesIO(body), allow_pickle=False)
    except (ValueError, OSError, EOFError, TypeError) as exc:
        raise RequestError(f"malformed .npy body: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")\
            from None
    if not isinstance(arr, np.ndarray):
        raise RequestError("malformed .npy body: expected one array written by numpy.save, got an .npz archive")
    if arr.dtype.kind not in "iuf":
        raise RequestError(f".npy array of dtype {arr.dtype}: every feature must be a number (int or float)")
    if arr.ndim != 2:
        raise RequestError(f".npy array of shape {arr.shape}: expected 2-D (rows x {len(names)} features)")
    if arr.shape[1] != len(names):
        raise RequestError(f".npy array has {arr.shape[1]} columns, expected {len(names)} (the features "
                           f"{_preview(names)}, in that order)")
    _check_rows_limit(arr.shape[0], max_rows)
    return _finite(arr if arr.dtype == np.float32 else arr.astype(np.float64, copy=False), names)


def _check_npy_header(body: bytes, width: int, max_rows: int) -> None:
    """Refuse an .npy whose header declares more data than the body holds, before numpy allocates it (a
    100-byte body declaring a (10**12, 4) array would otherwise make numpy allocate 29 TiB)."""
    from numpy.lib import format as npformat

    buf = io.BytesIO(body)
    try:
        version = npformat.read_magic(buf)
        reader = npformat.read_array_header_1_0 if version == (1, 0) else npformat.read_array_header_2_0
        shape, _, dtype = reader(buf, max_header_size=10_000)
    except (ValueError, OSError, EOFError, TypeError, SyntaxError) as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RequestError(f"malformed .npy body: {text}") from None
    if dtype.hasobject:
        raise RequestError("malformed .npy body: object arrays (pickles) are refused; send numbers")
    count = 1
    for d in shape:
        count *= int(d)
    if len(shape) == 2 and shape[0] > max_rows:
        _check_rows_limit(int(shape[0]), max_rows)
    if count * dtype.itemsize > len(body) - buf.tell():
        raise RequestError(f"malformed .npy body: the header declares shape {tuple(shape)} of {dtype} "
                           f"({count * dtype.itemsize} bytes) but the body holds {len(body) - buf.tell()}")


def matrix_from_arrow(body: bytes, names: Sequence[str], max_rows: int) -> np.ndarray:
    """An Arrow IPC stream whose column names are the feature names (any order, numeric types, no nulls)."""
    import pyarrow as pa

    if not body:
        raise RequestError("empty Arrow body: send an Arrow IPC stream (columns named by feature)")
    try:
        table = pa.ipc.open_stream(pa.py_buffer(body)).read_all()
    except (pa.ArrowException, ValueError, OSError) as exc:
        raise RequestError(f"malformed Arrow IPC stream: {str(exc).splitlines()[0] if str(exc) else exc!r}")\
            from None
    problem = _name_problem(table.column_names, names)
    if problem:
        raise RequestError(f"Arrow columns: {problem} (expected the {len(names)} features {_preview(names)})")
    _check_rows_limit(table.num_rows, max_rows)
    for field in table.schema:
        if not (pa.types.is_integer(field.type) or pa.types.is_floating(field.type)):
            raise RequestError(f"Arrow column {field.name!r} has type {field.type}: every feature must be a number")
    # one row-major copy in feature order (float32 columns stay float32); nulls become NaN here
    batch = table.select(list(names)).combine_chunks().to_batches()[0]
    X = np.asarray(batch.to_tensor(null_to_nan=True, row_major=True))
    try:
        return _finite(X, names)
    except RequestError:
        for name in names:  # a null is named as such, not as the NaN it became
            column = table.column(name)
            if column.null_count:
                row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
                raise RequestError(f"null in row {row}, feature {name!r}: impute or drop it before scoring") from None
        raise


def matrix_from_csv(path: str | Path, names: Sequence[str], max_rows: int) -> np.ndarray:
    """A CSV upload with a header row; columns are matched by name, as ``aeguard score`` does."""
    import pandas as pd

    try:
        frame = pd.read_csv(path, nrows=max_rows + 1)
    except pd.errors.EmptyDataError:
        raise RequestError("empty CSV: no header and no rows") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise RequestError(f"cannot parse the CSV upload: {str(exc).strip().splitlines()[0]}") from None
    _check_rows_limit(len(frame), max_rows)
    try:
        X = check_features(frame, feature_names=list(names), n_features=len(names))
    except ValueError as exc:
        raise RequestError(str(exc)) from None
    return _in_float32(X, names)


def _finite(X: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Finite and within float32, which the graphs compute in (float32 input stays float32, anything else
    becomes float64). One reduction decides (the max of ``|X|`` is NaN when any cell is); only a batch that
    fails it goes through core's check for the message."""
    if X.size and np.abs(X).max() <= F32_MAX:
        return np.ascontiguousarray(X)
    try:
        X = check_features(X, feature_names=list(names), n_features=len(names))
    except ValueError as exc:
        raise RequestError(str(exc)) from None
    return _in_float32(X, names)


def _in_float32(X: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """core's float32 rule (the same one fit, the CLI and the edge runtime apply), answered as a 400."""
    try:
        return check_float32_range(X, list(names))
    except ValueError as exc:
        raise RequestError(str(exc)) from None


# --- images ----------------------------------------------------------------------------------------------
# ``{"images": [...]}`` bodies of ``POST /score`` and the PNG uploads of ``POST /score_images``, for artifacts
# whose manifest says ``modality: image``; checked with core's image rules (shape, pixel range, finite).


def batch_from_json(data: Mapping[str, Any], artifact: Any, max_rows: int) -> np.ndarray:
    """The data fields of a JSON body for this artifact: images for image models, tables for the others."""
    if "images" in data:
        if len(data) > 1:
            raise RequestError("'images' comes alone: do not mix it with 'rows', 'columns' or 'features'")
        if artifact.image_shape is None:
            raise RequestError(f"this model takes tables of {artifact.n_features_in_} features, not images; "
                               "send 'rows', 'columns' or 'features' + 'values'")
        return images_from_json(data["images"], artifact, max_rows)
    if artifact.image_shape is not None and data:
        raise RequestError(f"this model takes {_shape_text(artifact.image_shape)} images: send "
                           "{\"images\": [...]} (nested C x H x W or H x W lists) or PNG files to POST /score_images")
    return matrix_from_json(data, artifact.feature_names, max_rows)


def _shape_text(shape: Sequence[int]) -> str:
    c, h, w = shape
    return f"{c}x{h}x{w} (C x H x W)"


def _check_images(X: Any, artifact: Any) -> np.ndarray:
    from aeguard.core.validation import check_images

    try:
        return check_images(X, pixel_range=artifact.pixel_range, image_shape=artifact.image_shape,
                            owner="this model")[0]
    except ValueError as exc:
        raise RequestError(str(exc)) from None


def images_from_json(images: Any, artifact: Any, max_rows: int) -> np.ndarray:
    """``images``: one nested list per image, C x H x W (or H x W for one channel), numbers only."""
    if not isinstance(images, list):
        raise RequestError("images: Input should be a list of images (nested lists of numbers)")
    _check_rows_limit(len(images), max_rows)
    try:
        arr = np.array(images)
    except (ValueError, TypeError, OverflowError):
        arr = None
    if arr is None or arr.dtype.kind not in "iuf" or arr.ndim not in (3, 4):
        for i, image in enumerate(images):
            try:
                one = np.array(image)
            except (ValueError, TypeError, OverflowError):
                one = None
            if one is None or one.dtype.kind not in "iuf":
                raise RequestError(f"images[{i}]: every pixel must be a number, in equal-length nested lists")
        raise RequestError(f"images: every image must be C x H x W or H x W of one shape; this model takes "
                           f"{_shape_text(artifact.image_shape)}")
    if _has_boolean(arr, images):
        raise RequestError("images: pixels must be numbers, not true/false")
    return _check_images(arr, artifact)


def _has_boolean(arr: np.ndarray, values: Any) -> bool:
    """Whether a JSON ``true``/``false`` became a 1/0 of ``arr``: only cells equal to 0 or 1 are looked at."""
    candidates = np.argwhere((arr == 0) | (arr == 1))
    for index in candidates.tolist():
        cell = values
        for i in index:
            cell = cell[i]
        if type(cell) is bool:
            return True
    return False


def images_from_pngs(files: Sequence[tuple[str, bytes]], artifact: Any, max_rows: int) -> np.ndarray:
    """Uploaded PNG files (name, bytes), in upload order, as one batch for this image artifact."""
    from aeguard.core.images import ImageFileError, decode_png

    if artifact.image_shape is None:
        raise RequestError(f"this model takes tables of {artifact.n_features_in_} features, not images; use "
                           "POST /score or /score_csv")
    if not files:
        raise RequestError("no PNG files in the upload: send one or more files (multipart/form-data)")
    if len(files) > max_rows:
        raise RequestError(f"{len(files)} images exceed the limit of {max_rows} images per request "
                           "(AEGUARD_MAX_ROWS); split them into smaller requests", status=413)
    c, h, w = artifact.image_shape
    decoded = []
    for i, (name, data) in enumerate(files):
        label = f"file {i} ({name!r})"
        try:
            img = decode_png(data, label, size=(w, h))
        except ImageFileError as exc:
            raise RequestError(str(exc)) from None
        if img.shape[0] != c:
            kind = "grayscale" if img.shape[0] == 1 else "RGB"
            raise RequestError(f"{label}: image is {kind}, this model takes {c}-channel images "
                               f"({_shape_text(artifact.image_shape)})")
        decoded.append(img)
    return _check_images(np.stack(decoded), artifact)
