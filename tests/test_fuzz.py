"""Property-based fuzzing (hypothesis) of every parser that reads untrusted input.

Properties: only the documented error type comes out (ValueError and its subclasses for data files and
parameters, ``RequestError`` for request bodies, ``ArtifactError`` / ``GraphError`` for artifacts), and what
is accepted has the right shape (one finite float row per input row, one score per row). CI runs
``AEGUARD_FUZZ_EXAMPLES`` (default 100) examples per property; ``make fuzz`` runs many more. Cases the fuzzers
found are pinned with ``@example``.
"""

from __future__ import annotations

import io
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from aeguard.core.artifact import ArtifactError, load_artifact, parse_manifest, seal_manifest
from aeguard.core.graphcheck import GraphError, inspect_graph
from aeguard.datasets.loaders import load_table, load_xy
from aeguard.serving import inputs
from aeguard.serving.inputs import RequestError
from conftest import arrow_bytes

EXAMPLES = int(os.environ.get("AEGUARD_FUZZ_EXAMPLES", "100"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("AEGUARD_FUZZ_RANDOM"),
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
NAMES = ["s0", "s1", "s2", "s3"]


@pytest.fixture(scope="module")
def model(small_ae):
    return load_artifact(small_ae[0])


# --- strategies ----------------------------------------------------------------------------------------

numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**70), 2**70))
cells = st.one_of(numbers, st.booleans(), st.none(), st.text(max_size=5), st.lists(st.integers(), max_size=2))
json_values = st.recursive(st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=8)),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                                       max_size=4), max_leaves=20)
names = st.one_of(st.sampled_from(NAMES), st.sampled_from(["extra", "", "S0", "s0 "]))
records = st.lists(st.dictionaries(names, cells, max_size=6), max_size=6)
value_rows = st.lists(st.lists(cells, max_size=6), max_size=6)
good_rows = st.lists(st.lists(st.floats(-1e6, 1e6), min_size=4, max_size=4), min_size=1, max_size=8)
option_values = st.fixed_dictionaries({}, optional={
    "explain": cells, "components": cells, "threshold": cells, "contamination": st.one_of(cells, st.just("auto")),
    "model": st.one_of(st.text(max_size=5), cells)})


@st.composite
def json_bodies(draw: st.DrawFn) -> dict:
    """Near-valid ``/score`` bodies: each form, with wrong cells, names, widths and options mixed in."""
    form = draw(st.sampled_from(["rows", "records", "columns", "values", "junk"]))
    body: dict = {}
    if form == "rows":
        body["rows"] = draw(st.one_of(value_rows, good_rows))
    elif form == "records":
        body["rows"] = draw(records)
    elif form == "columns":
        body["columns"] = draw(st.dictionaries(names, st.one_of(st.lists(cells, max_size=5), cells), max_size=6))
    elif form == "values":
        body["features"] = draw(st.one_of(st.permutations(NAMES), st.lists(names, max_size=5), cells))
        body["values"] = draw(st.one_of(value_rows, good_rows, cells))
    else:
        body = draw(st.dictionaries(st.text(max_size=8), json_values, max_size=4))
    body.update(draw(option_values))
    return body


def check_matrix(X: np.ndarray, n_rows: int) -> None:
    assert X.shape == (n_rows, len(NAMES)) and X.dtype.kind == "f" and np.isfinite(X).all()


# --- request conversion (serving/inputs.py) -------------------------------------------------------------


@FUZZ
@given(body=json_bodies(), query=st.text(max_size=30))
@example(body={"rows": [[1.0, 2.0, 3.0, True]]}, query="")
@example(body={"rows": [{"s0": 1, "s1": 2, "s2": 3, "s3": 10**400}]}, query="")
def test_json_bodies_give_a_matrix_or_a_request_error(body, query):
    try:
        data, opts = inputs.split_json_body(body)
        inputs.parse_options(opts, query)
        X = inputs.matrix_from_json(data, NAMES, max_rows=5)
    except RequestError as exc:
        assert 400 <= exc.status < 500
        return
    rows = data.get("rows") or data.get("values") or next(iter(data["columns"].values()))
    check_matrix(X, len(rows))


@FUZZ
@given(raw=st.one_of(st.binary(max_size=200), st.builds(lambda b: json.dumps(b).encode(), json_bodies())))
@example(raw=b"[" * 100_000)
@example(raw=b'{"rows": [[NaN, 1, 2, 3]]}')
def test_raw_json_bytes_never_crash_the_parser(raw):
    try:
        obj = inputs.load_json(raw)
        data, _ = inputs.split_json_body(obj)
        inputs.matrix_from_json(data, NAMES, max_rows=5)
    except RequestError:
        pass


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


arrays = st.builds(lambda shape, dtype, fill: np.full(shape, fill).astype(dtype, copy=False),
                   st.lists(st.integers(0, 6), min_size=0, max_size=3).map(tuple),
                   st.sampled_from(["f4", "f8", "i8", "u1", "bool", "U3", "c8", "f2"]),
                   st.sampled_from([0, 1, -3.5, np.nan, np.inf, 1e39]))


@FUZZ
@given(body=st.one_of(arrays.map(npy), st.binary(max_size=300),
                      st.builds(lambda a, cut: npy(a)[:cut], arrays, st.integers(0, 200))))
@example(body=b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, 'shape': (999999999999, 4), }"
         + b" " * 50 + b"\n")
def test_npy_bodies(body):
    try:
        X = inputs.matrix_from_npy(body, NAMES, max_rows=5)
    except RequestError:
        return
    check_matrix(X, X.shape[0])


frames = st.builds(
    lambda cols, n, data: pd.DataFrame({c: data.draw(st.lists(cells.filter(lambda v: not isinstance(v, list)),
                                                              min_size=n, max_size=n)) for c in cols}),
    st.lists(names, max_size=6, unique=True), st.integers(0, 5), st.data())


@FUZZ
@given(frame=frames, cut=st.none() | st.integers(0, 400))
def test_arrow_bodies(frame, cut):
    pytest.importorskip("pyarrow")
    try:
        body = arrow_bytes(frame)
    except Exception:  # noqa: BLE001 - pyarrow cannot encode every mixed-type frame; not our input then
        return
    body = body if cut is None else body[:cut]
    try:
        X = inputs.matrix_from_arrow(body, NAMES, max_rows=5)
    except RequestError:
        return
    check_matrix(X, len(frame))


# --- user-file loaders (datasets/loaders.py), through to the scores -------------------------------------


@FUZZ
@given(frame=frames, mangle=st.sampled_from(["none", "truncate", "bytes"]), raw=st.binary(max_size=200))
@example(frame=pd.DataFrame({"s0": [1.0]}), mangle="bytes", raw=b"s0,s1\n\xff\xfe,1\n")
@example(frame=pd.DataFrame(), mangle="bytes", raw=b'"')
def test_csv_files_load_and_score_or_raise_value_error(model, tmp_path_factory, frame, mangle, raw):
    path = tmp_path_factory.mktemp("csv", numbered=True) / "data.csv"
    text = frame.to_csv(index=False).encode()
    path.write_bytes(raw if mangle == "bytes" else text[: len(text) // 2] if mangle == "truncate" else text)
    try:
        loaded, _ = load_table(path)
        scored = model.score(loaded)
    except ValueError:
        return
    assert len(scored.score) == len(loaded) and np.isfinite(scored.score).all()


@FUZZ
@given(frame=frames)
def test_parquet_files_load_and_score_or_raise_value_error(model, tmp_path_factory, frame):
    pytest.importorskip("pyarrow")
    path = tmp_path_factory.mktemp("pq", numbered=True) / "data.parquet"
    try:
        frame.to_parquet(path)
    except Exception:  # noqa: BLE001 - a frame parquet cannot hold is not an input
        return
    try:
        loaded, _ = load_table(path)
        scored = model.score(loaded)
    except ValueError:
        return
    assert len(scored.score) == len(loaded)


@st.composite
def npz_files(draw: st.DrawFn) -> bytes:
    buf = io.BytesIO()
    members = draw(st.dictionaries(st.sampled_from(["X", "y", "z"]), arrays, max_size=3))
    np.savez(buf, **members)
    data = buf.getvalue()
    cut = draw(st.none() | st.integers(0, len(data)))
    return data if cut is None else data[:cut]


@FUZZ
@given(data=st.one_of(npz_files(), st.binary(max_size=300)))
@example(data=b"PK\x03\x04" + b"\0" * 40)
def test_npz_files_load_and_score_or_raise_value_error(model, tmp_path_factory, data):
    path = tmp_path_factory.mktemp("npz", numbered=True) / "data.npz"
    path.write_bytes(data)
    try:
        X, y = load_xy(path)
        scored = model.score(X)
    except ValueError:
        return
    assert X.ndim == 2 and len(scored.score) == len(X)
    assert y is None or len(y) == len(X)


# --- the typed parameter parser (core/params.py) --------------------------------------------------------


@FUZZ
@given(params=st.dictionaries(st.sampled_from(["epochs", "lr", "batch_size", "verbose", "device", "hidden",
                                                "val_fraction", "no_such"]),
                              st.one_of(st.text(max_size=12), st.integers(-5, 5).map(str),
                                        st.floats().map(str), st.sampled_from(["none", "yes", "OFF", "1e3"])),
                              max_size=4))
def test_typed_parameter_parser(params):
    from aeguard.core import registry
    from aeguard.core.params import ParamError, coerce_params, param_specs

    cls = registry.get("ae").cls
    specs = param_specs(cls)
    try:
        out = coerce_params(cls, params, owner="ae")
    except ParamError as exc:
        assert any(name in str(exc) for name in params)
        return
    assert set(out) == set(params)
    for name, value in out.items():
        assert specs[name].check(name, value) == value  # what the parser returns passes the check at fit
        if name == "epochs":
            assert type(value) is int and value >= 1


# --- the manifest reader and the graph reader -----------------------------------------------------------


@FUZZ
@given(raw=st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode())))
@example(raw=b'{"format": "aeguard-artifact", "format_version": true}')
@example(raw=b'{"a": 1, "a": 2}')
@example(raw=b"[" * 50_000)
def test_manifest_bytes_give_a_manifest_or_an_artifact_error(raw):
    try:
        parse_manifest(raw)
    except ArtifactError:
        pass


def _paths(obj: object, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list) and obj:
        out += _paths(obj[0], (*prefix, 0))
    return out


@FUZZ
@given(data=st.data())
def test_mutated_manifests_load_and_score_or_raise_artifact_error(model, tmp_path_factory, data):
    """A real manifest with one field replaced by any JSON value and the checksum recomputed."""
    manifest = json.loads((model.path / "manifest.json").read_text())
    manifest.pop("manifest_sha256")
    target = data.draw(st.sampled_from(_paths(manifest)[1:]))
    value = data.draw(json_values)
    node = manifest
    for key in target[:-1]:
        node = node[key]
    node[target[-1]] = value
    path = tmp_path_factory.mktemp("man", numbered=True) / "a"
    shutil.copytree(model.path, path)
    (path / "manifest.json").write_text(json.dumps(seal_manifest(manifest)))
    try:
        loaded = load_artifact(path)
        scored = loaded.score(np.zeros((3, 4)))
    except ArtifactError:
        return
    except ValueError as exc:  # scoring-time checks (a changed threshold or calibration) stay ValueErrors
        assert "feature" in str(exc) or "calibration" in str(exc) or "threshold" in str(exc), exc
        return
    assert len(scored.score) == 3


@FUZZ
@given(data=st.data())
@example(data=None)
def test_mutated_graph_bytes_give_facts_or_a_graph_error(model, data):
    graph = (model.path / "model.onnx").read_bytes()
    if data is None:
        mutated = graph[:10]
    else:
        mutated = bytearray(graph)
        for _ in range(data.draw(st.integers(1, 8))):
            mutated[data.draw(st.integers(0, len(mutated) - 1))] = data.draw(st.integers(0, 255))
        cut = data.draw(st.none() | st.integers(0, len(mutated)))
        mutated = bytes(mutated if cut is None else mutated[:cut])
    try:
        inspect_graph(mutated)
    except GraphError:
        pass


@FUZZ
@given(raw=st.binary(max_size=400))
def test_random_graph_bytes_give_facts_or_a_graph_error(raw):
    try:
        inspect_graph(raw)
    except GraphError:
        pass


def test_regressions_found_by_the_fuzzers(model, tmp_path):
    """The cases above that failed before their fixes, as plain assertions on the messages."""
    header = b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, 'shape': (999999999999, 4), }"
    with pytest.raises(RequestError, match=r"header declares shape \(999999999999, 4\)"):
        inputs.matrix_from_npy(header + b" " * 50 + b"\n", NAMES, max_rows=10**13)
    buf = io.BytesIO()
    np.savez(buf, X=np.ones((3, 4), dtype=np.complex64))
    (tmp_path / "c.npz").write_bytes(buf.getvalue())
    with pytest.raises(ValueError, match="X is not numeric"):
        load_xy(tmp_path / "c.npz")
    (tmp_path / "t.npz").write_bytes(buf.getvalue()[:100])
    with pytest.raises(ValueError, match="not a readable .npz archive"):
        load_xy(tmp_path / "t.npz")
    manifest = json.loads((model.path / "manifest.json").read_text())
    for edit, message in (({"calibration": {**manifest["calibration"], "min": None}}, "calibration must be"),
                          ({"graph": {**manifest["graph"], "file": []}}, "lists no checksum")):
        with pytest.raises(ArtifactError, match=message):
            parse_manifest(json.dumps({**manifest, **edit}).encode())
