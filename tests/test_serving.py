"""The HTTP scoring service against real servers: `aeguard serve` (a real `bentoml serve` process) on 127.0.0.1.

One session server serves two artifacts of different widths; a second, short-lived one serves a model-store
entry behind an API key. Servers run in their own process group and are stopped by PID.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("bentoml")
httpx = pytest.importorskip("httpx")

from aeguard.core.artifact import load_artifact  # noqa: E402
from aeguard.serving.bench import LocalServer, reference_command  # noqa: E402
from conftest import arrow_bytes, fast_params, make_table  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MAX_ROWS = 400
MAX_BODY = 300_000
CLI = [sys.executable, "-m", "aeguard.core.cli"]
#: environment that makes any network access fail fast (to show a step is offline)
OFFLINE = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9",
           "https_proxy": "http://127.0.0.1:9", "PIP_NO_INDEX": "1", "UV_OFFLINE": "1", "NO_PROXY": "127.0.0.1"}


def _fit(frame: pd.DataFrame, path: Path, seed: int, name: str = "ae") -> Path:
    from aeguard.core import registry

    record = registry.get(name)
    detector = record.create(**fast_params(record.cls), random_state=seed)
    detector.fit(frame)
    return detector.save_artifact(path)


@pytest.fixture(scope="session")
def arts(tmp_path_factory, table_frame):
    root = tmp_path_factory.mktemp("serving")
    frame, _ = table_frame
    narrow_X, _ = make_table(n_inliers=150, n_outliers=8, d=4, seed=3)
    narrow_frame = pd.DataFrame(narrow_X, columns=[f"f{i}" for i in range(4)])
    csv = root / "data.csv"
    frame.to_csv(csv, index=False)
    return SimpleNamespace(main=_fit(frame, root / "main-ae", 0), narrow=_fit(narrow_frame, root / "narrow-ae", 1),
                           apre=_fit(frame, root / "apre", 2, "apre"), frame=frame, narrow_frame=narrow_frame,
                           csv=csv, root=root)


def _gone(server: LocalServer) -> bool:
    try:
        os.killpg(server.process.pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture(scope="session")
def server(arts):
    srv = LocalServer([f"main={arts.main}", f"narrow={arts.narrow}", f"apre={arts.apre}"],
                      extra_args=["--max-rows", str(MAX_ROWS), "--max-body-bytes", str(MAX_BODY)])
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()
    assert srv.process.returncode is not None and _gone(srv)


@pytest.fixture(scope="session")
def client(server):
    with httpx.Client(base_url=server.url, timeout=60.0) as c:
        yield c


def records(frame: pd.DataFrame) -> list[dict[str, float]]:
    return frame.to_dict(orient="records")


def score(client, **body):
    response = client.post("/score", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def npy_bytes(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=allow_pickle)
    return buf.getvalue()


def read_arrow(body: bytes):
    import pyarrow as pa

    return pa.ipc.open_stream(pa.py_buffer(body)).read_all()


ARROW = "application/vnd.apache.arrow.stream"
NPY = "application/x-npy"


def cli_scores(artifact: Path, csv: Path) -> pd.DataFrame:
    out = subprocess.run([*CLI, "score", str(artifact), str(csv)], capture_output=True, text=True, check=True)
    return pd.read_csv(io.StringIO(out.stdout))


# --- good requests -----------------------------------------------------------------------------------


def test_scores_equal_aeguard_score(client, arts):
    expected = cli_scores(arts.main, arts.csv)
    got = score(client, rows=records(arts.frame))
    assert got["model"] == "main" and len(got["results"]) == len(arts.frame)
    frame = pd.DataFrame(got["results"])
    np.testing.assert_allclose(frame["score"], expected["score"], rtol=1e-6)
    np.testing.assert_allclose(frame["probability"], expected["probability"], rtol=1e-6, atol=1e-9)
    assert frame["label"].tolist() == expected["label"].tolist()
    assert got["threshold"] == pytest.approx(load_artifact(arts.main).threshold_)
    assert got["version"] == json.loads((arts.main / "manifest.json").read_text())["files"]["model.onnx"]["sha256"][:12]


def test_rows_columns_lists_and_csv_agree(client, arts):
    frame = arts.frame.iloc[:50]
    base = [r["score"] for r in score(client, rows=records(frame))["results"]]
    shuffled = [dict(reversed(list(r.items()))) for r in records(frame)]
    assert [r["score"] for r in score(client, rows=shuffled)["results"]] == base
    assert [r["score"] for r in score(client, rows=frame.to_numpy().tolist())["results"]] == base
    assert [r["score"] for r in score(client, columns=frame.to_dict(orient="list"))["results"]] == base
    csv = frame.to_csv(index=False).encode()
    response = client.post("/score_csv", files={"file": ("part.csv", csv, "text/csv")})
    assert response.status_code == 200, response.text
    assert [r["score"] for r in response.json()["results"]] == base


def test_explain_and_threshold_overrides(client, arts):
    frame = arts.frame.iloc[:40]
    model = load_artifact(arts.main)
    got = score(client, rows=records(frame), explain=True)
    contrib = pd.DataFrame([r["contributions"] for r in got["results"]])
    assert list(contrib.columns) == model.feature_names
    np.testing.assert_allclose(contrib.sum(axis=1), [r["score"] for r in got["results"]], rtol=1e-4)
    assert "contributions" not in score(client, rows=records(frame))["results"][0]

    scores = np.array([r["score"] for r in got["results"]])
    cut = float(np.median(scores))
    by_value = score(client, rows=records(frame), threshold=cut)
    assert by_value["threshold"] == cut
    assert [r["label"] for r in by_value["results"]] == (scores > cut).astype(int).tolist()
    by_rate = score(client, rows=records(frame), contamination=0.25)
    assert by_rate["threshold"] == pytest.approx(model.threshold_for(contamination=0.25))
    assert score(client, rows=records(frame), contamination="auto")["threshold"] == pytest.approx(
        model.threshold_for(contamination="auto"))
    form = {"explain": "true", "threshold": str(cut), "model": "main"}
    response = client.post("/score_csv", data=form, files={"file": ("x.csv", frame.to_csv(index=False), "text/csv")})
    assert response.status_code == 200, response.text
    assert [r["label"] for r in response.json()["results"]] == [r["label"] for r in by_value["results"]]
    assert "contributions" in response.json()["results"][0]


def test_body_forms_agree(client, arts):
    """records, value lists, columns, features + values (any order), Arrow and .npy give the same scores."""
    frame = arts.frame.iloc[:60]
    base = [r["score"] for r in score(client, rows=records(frame))["results"]]
    names = list(frame.columns)
    shuffled = names[::-1]
    got = score(client, features=shuffled, values=frame[shuffled].to_numpy().tolist())
    assert [r["score"] for r in got["results"]] == base
    for content, ctype in ((arrow_bytes(frame[shuffled]), ARROW), (npy_bytes(frame.to_numpy()), NPY),
                           (npy_bytes(frame.to_numpy(np.float32)), NPY)):
        response = client.post("/score", content=content, headers={"content-type": ctype})
        assert response.status_code == 200, response.text
        np.testing.assert_allclose([r["score"] for r in response.json()["results"]], base, rtol=1e-6)
    # Arrow both ways, options in the query string
    response = client.post("/score?explain=true&threshold=5.5", content=arrow_bytes(frame),
                           headers={"content-type": ARROW, "accept": ARROW})
    assert response.status_code == 200 and response.headers["content-type"] == ARROW
    table = read_arrow(response.content)
    assert table.column_names[:3] == ["score", "label", "probability"]
    assert [f"contributions.{n}" for n in names] == table.column_names[3:]
    np.testing.assert_allclose(table.column("score").to_numpy(), base, rtol=1e-6)
    assert table.column("label").to_pylist() == (np.asarray(base) > 5.5).astype(int).tolist()
    assert float(table.schema.metadata[b"threshold"]) == 5.5 and table.schema.metadata[b"model"] == b"main"
    # a JSON body may take its options from the query string too
    by_query = client.post("/score?model=narrow", json={"rows": records(arts.narrow_frame.iloc[:3])}).json()
    assert by_query["model"] == "narrow" and len(by_query["results"]) == 3


def test_components_over_http(client, arts):
    """apre's named outputs (error, uncertainty, shift_norm) with "components": true, as in-process scoring."""
    frame = arts.frame.iloc[:25]
    expected = load_artifact(arts.apre).score(frame).components
    assert set(expected) == {"error", "uncertainty", "shift_norm"}
    got = score(client, rows=records(frame), model="apre", components=True)
    comps = pd.DataFrame([r["components"] for r in got["results"]])
    assert sorted(comps.columns) == sorted(expected)
    for name, values in expected.items():
        np.testing.assert_allclose(comps[name], values, rtol=1e-5)
    assert "components" not in score(client, rows=records(frame), model="apre")["results"][0]
    both = score(client, rows=records(frame.iloc[:2]), model="apre", components=True, explain=True)["results"][0]
    assert set(both) == {"score", "label", "probability", "contributions", "components"}
    # a detector without components answers an empty object
    assert score(client, rows=records(frame.iloc[:1]), components=True)["results"][0]["components"] == {}
    response = client.post("/score?model=apre&components=true", content=arrow_bytes(frame),
                           headers={"content-type": ARROW, "accept": ARROW})
    table = read_arrow(response.content)
    for name, values in expected.items():
        np.testing.assert_allclose(table.column(f"components.{name}").to_numpy(), values, rtol=1e-5)
    form = {"components": "true", "model": "apre"}
    csv = client.post("/score_csv", data=form, files={"file": ("x.csv", frame.to_csv(index=False), "text/csv")})
    assert csv.status_code == 200, csv.text
    assert csv.json()["results"][0]["components"] == got["results"][0]["components"]


def test_openapi_schema_documents_bodies_components_and_query_options(client):
    spec = client.get("/docs.json").json()
    operation = spec["paths"]["/score"]["post"]
    assert {"application/json", ARROW, NPY} <= set(operation["requestBody"]["content"])
    assert ARROW in operation["responses"]["200"]["content"]
    assert {p["name"] for p in operation["parameters"]} == {"explain", "components", "threshold", "contamination",
                                                            "model"}
    assert "components" in spec["components"]["schemas"]["ScoreResult"]["properties"]
    request = operation["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert {"rows", "columns", "features", "values", "components"} <= set(request)


def test_concurrent_requests_to_two_models_keep_rows_in_order(server, arts):
    """Concurrent requests of both widths share adaptive batches; every response matches in-process scoring."""
    models = {"main": (load_artifact(arts.main), arts.frame), "narrow": (load_artifact(arts.narrow), arts.narrow_frame)}
    rng = np.random.default_rng(0)
    plan = []
    for i in range(24):
        name = "main" if i % 2 == 0 else "narrow"
        frame = models[name][1]
        idx = rng.choice(len(frame), size=int(rng.integers(1, 30)), replace=False)
        plan.append((name, frame.iloc[idx]))

    async def run():
        async with httpx.AsyncClient(base_url=server.url, timeout=60.0) as c:
            return await asyncio.gather(*(c.post("/score", json={"rows": records(f), "model": n}) for n, f in plan))

    for (name, frame), response in zip(plan, asyncio.run(run())):
        assert response.status_code == 200, response.text
        expected = models[name][0].score(frame).score
        got = [r["score"] for r in response.json()["results"]]
        assert response.json()["model"] == name
        np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_models_health_and_metrics(client, arts):
    info = client.get("/models").json()
    assert info["default"] == "main"
    by_name = {m["name"]: m for m in info["models"]}
    manifest = json.loads((arts.main / "manifest.json").read_text())
    main = by_name["main"]
    assert main["features"] == manifest["features"]["names"] and main["detector"] == "ae"
    assert main["threshold"] == manifest["threshold"] and main["versions"] == manifest["versions"]
    assert main["manifest"]["training"]["fingerprint"] == manifest["training"]["fingerprint"]
    assert by_name["narrow"]["n_features"] == 4 and main["device"] in ("cpu", "cuda")
    assert info["runtime"]["torch_loaded"] is False and info["runtime"]["api_key_required"] is False
    assert info["limits"]["max_rows"] == MAX_ROWS
    for path in ("/healthz", "/readyz", "/livez"):
        assert client.get(path).status_code == 200
    runtime = info["runtime"]
    assert runtime["event_loop"] == "uvloop.Loop" and runtime["http_parser"] == "httptools"
    assert runtime["batching"]["wait_ms"] == 0 and main["session"] == {"intra_op_threads": 1, "allow_spinning": False}
    score(client, rows=records(arts.frame.iloc[:2]))
    metrics = client.get("/metrics")
    # /score is answered by the aeguard route inside BentoML's middleware, so BentoML still counts it
    assert metrics.status_code == 200
    assert re.search(r'request_total\{endpoint="/score",http_response_code="200"[^}]*\} [1-9]', metrics.text)


# --- bad input: a clear 4xx, never a 500, and the server keeps serving ---------------------------------


def _row(arts, **change):
    return {**records(arts.frame.iloc[:1])[0], **change}


BAD_JSON = [
    ("unknown feature", lambda a: {"rows": [_row(a, bogus=1.0)]}, 400, "unknown feature(s) ['bogus']"),
    ("missing feature", lambda a: {"rows": [{k: v for k, v in list(_row(a).items())[1:]}]}, 400,
     "missing feature(s) ['sensor_0']"),
    ("wrong row width", lambda a: {"rows": [[1.0, 2.0, 3.0]]}, 400, "row 0 has 3 values, expected 6"),
    ("columns of different lengths", lambda a: {"columns": {**{c: [1.0, 2.0] for c in a.frame.columns},
                                                            "sensor_3": [1.0]}}, 400, "different lengths"),
    ("string", lambda a: {"rows": [_row(a, sensor_2="abc")]}, 400, "rows[0].sensor_2: Input should be a valid number"),
    ("boolean", lambda a: {"rows": [_row(a, sensor_2=True)]}, 400, "rows[0].sensor_2"),
    ("null", lambda a: {"rows": [_row(a, sensor_2=None)]}, 400, "rows[0].sensor_2"),
    ("empty batch", lambda a: {"rows": []}, 400, "empty batch"),
    ("empty columns", lambda a: {"columns": {c: [] for c in a.frame.columns}}, 400, "empty batch"),
    ("too many rows", lambda a: {"rows": [[1.0] * 6] * (MAX_ROWS + 1)}, 413, f"limit of {MAX_ROWS} rows"),
    ("unknown model", lambda a: {"rows": [_row(a)], "model": "nope"}, 400, "unknown model 'nope'"),
    ("no rows or columns", lambda a: {}, 400, "give exactly one of 'rows'"),
    ("rows and columns", lambda a: {"rows": [_row(a)], "columns": {}}, 400, "give exactly one of 'rows'"),
    ("unknown field", lambda a: {"rowz": []}, 400, "unknown field 'rowz'"),
    ("two thresholds", lambda a: {"rows": [_row(a)], "threshold": 1.0, "contamination": 0.1}, 400, "not both"),
    ("contamination out of range", lambda a: {"rows": [_row(a)], "contamination": 0.9}, 400, "contamination:"),
    ("not an object", lambda a: [1, 2], 400, "Input should be an object"),
    ("boolean in a value list", lambda a: {"rows": [[1.0] * 5 + [True]]}, 400, "rows[0][5]: Input should be"),
    ("boolean deep in a large batch", lambda a: {"rows": [[1.0] * 6] * 300 + [[0.0] * 5 + [False]]}, 400,
     "rows[300][5]"),
    ("nested list in a row", lambda a: {"rows": [[[1.0]] * 6]}, 400, "rows[0][0]"),
    ("string in columns", lambda a: {"columns": {**{c: [1.0] for c in a.frame.columns}, "sensor_1": ["x"]}}, 400,
     "columns.sensor_1[0]"),
    ("features without values", lambda a: {"features": list(a.frame.columns)}, 400, "'features' needs 'values'"),
    ("values of the wrong width", lambda a: {"features": list(a.frame.columns), "values": [[1.0]]}, 400,
     "values[0] has 1 values, expected 6"),
    ("unknown feature in features", lambda a: {"features": [*a.frame.columns[:-1], "zz"], "values": [[1.0] * 6]},
     400, "unknown feature(s) ['zz']"),
    ("explain not a boolean", lambda a: {"rows": [_row(a)], "explain": "yes"}, 400, "explain: Input should be"),
]

BAD_RAW = [
    ("NaN", b'{"rows": [[NaN, 1, 1, 1, 1, 1]]}', "application/json", 400, "NaN in row 0, feature 'sensor_0'"),
    ("inf", b'{"rows": [[1, 1e999, 1, 1, 1, 1]]}', "application/json", 400, "infinite value in row 0"),
    ("float32 overflow", b'{"rows": [[1, 1e300, 1, 1, 1, 1]]}', "application/json", 400, "float32 range"),
    ("malformed JSON", b'{"rows": [[1, 2', "application/json", 400, "malformed JSON body"),
    ("empty body", b"", "application/json", 400, "give exactly one of 'rows'"),
    ("body too large", b'{"rows": [' + b" " * MAX_BODY + b"]}", "application/json", 413, f"limit of {MAX_BODY} bytes"),
    ("form body", b"rows=1", "application/x-www-form-urlencoded", 415, "Content-Type: application/json"),
    ("multipart to /score", b"--x\r\n", "multipart/form-data; boundary=x", 415, "application/json"),
    ("malformed Arrow", b"not arrow", ARROW, 400, "malformed Arrow IPC stream"),
    ("empty Arrow", b"", ARROW, 400, "empty Arrow body"),
    ("malformed .npy", b"\x93NUMPY garbage", NPY, 400, "malformed .npy body"),
    (".npy of the wrong width", npy_bytes(np.ones((2, 5))), NPY, 400, ".npy array has 5 columns, expected 6"),
    (".npy 1-D", npy_bytes(np.ones(6)), NPY, 400, "expected 2-D"),
    (".npy of strings", npy_bytes(np.array([["a"] * 6])), NPY, 400, "every feature must be a number"),
    (".npy with a pickle", npy_bytes(np.array([None] * 6, dtype=object).reshape(1, 6), allow_pickle=True), NPY, 400,
     "malformed .npy body"),
    (".npy with NaN", npy_bytes(np.full((1, 6), np.nan)), NPY, 400, "NaN in row 0, feature 'sensor_0'"),
    (".npy too large", b"\x00" * (MAX_BODY + 1), NPY, 413, f"limit of {MAX_BODY} bytes"),
]


def _assert_client_error(response, status: int, message: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body, dict) and message in body["error"], body


@pytest.mark.parametrize("case", BAD_JSON, ids=[c[0] for c in BAD_JSON])
def test_bad_json_input(client, arts, case):
    _, make, status, message = case
    _assert_client_error(client.post("/score", json=make(arts)), status, message)


@pytest.mark.parametrize("case", BAD_RAW, ids=[c[0] for c in BAD_RAW])
def test_bad_raw_input(client, case):
    _, body, ctype, status, message = case
    _assert_client_error(client.post("/score", content=body, headers={"content-type": ctype}), status, message)


def test_bad_binary_and_query_input(client, arts):
    frame = arts.frame.iloc[:3]
    cases = [
        (arrow_bytes(frame.drop(columns="sensor_4")), "", 400, "Arrow columns: missing feature(s) ['sensor_4']"),
        (arrow_bytes(frame.assign(extra=1.0)), "", 400, "unknown feature(s) ['extra']"),
        (arrow_bytes(frame.astype({"sensor_1": str})), "", 400, "Arrow column 'sensor_1' has type "),
        (arrow_bytes(frame.astype({"sensor_1": bool})), "", 400, "Arrow column 'sensor_1' has type bool"),
        (arrow_bytes(frame.assign(sensor_2=[1.0, None, 2.0])), "", 400, "null in row 1, feature 'sensor_2'"),
        (arrow_bytes(pd.concat([frame] * (MAX_ROWS // 3 + 1))), "", 413, f"limit of {MAX_ROWS} rows"),
        (arrow_bytes(frame), "?bogus=1", 400, "unknown query parameter 'bogus'"),
        (arrow_bytes(frame), "?explain=maybe", 400, "explain: Input should be a valid boolean"),
        (arrow_bytes(frame), "?threshold=abc", 400, "threshold: Input should be a valid number"),
        (arrow_bytes(frame), "?contamination=0.9", 400, "contamination:"),
        (arrow_bytes(frame), "?model=nope", 400, "unknown model 'nope'"),
        (arrow_bytes(frame), "?threshold=1&threshold=2", 400, "given twice"),
        (arrow_bytes(frame), "?threshold=1&contamination=0.1", 400, "not both"),
    ]
    for content, query, status, message in cases:
        _assert_client_error(client.post(f"/score{query}", content=content, headers={"content-type": ARROW}), status,
                             message)
    response = client.post("/score?explain=true", json={"rows": [_row(arts)], "explain": False})
    _assert_client_error(response, 400, "given twice")


def test_bad_csv_uploads(client, arts):
    good = arts.frame.iloc[:5]
    cases = [
        ({"file": ("x.csv", good.assign(sensor_1="abc").to_csv(index=False), "text/csv")}, None, 400, "non-numeric"),
        ({"file": ("x.csv", good.drop(columns="sensor_4").to_csv(index=False), "text/csv")}, None, 400,
         "missing feature column(s) ['sensor_4']"),
        ({"file": ("x.csv", good.assign(extra=1).to_csv(index=False), "text/csv")}, None, 400, "unknown column(s)"),
        ({"file": ("x.csv", b"", "text/csv")}, None, 400, "empty CSV"),
        ({"file": ("x.csv", ",".join(good.columns) + "\n", "text/csv")}, None, 400, "empty batch"),
        ({"file": ("x.csv", good.to_csv(index=False) + "1,2,3,4,5,6,7,8\n", "text/csv")}, None, 400,
         "cannot parse the CSV upload: Error tokenizing data"),
        ({"file": ("x.bin", bytes(range(256)) * 4, "application/octet-stream")}, None, 400, "cannot parse the CSV"),
        ({"file": ("x.csv", good.to_csv(index=False), "text/csv")}, {"model": "nope"}, 400, "unknown model"),
        ({"file": ("x.csv", good.to_csv(index=False), "text/csv")}, {"explain": "maybe"}, 400, "explain:"),
        ({"file": ("x.csv", good.to_csv(index=False), "text/csv")}, {"surprise": "1"}, 400, "unknown field"),
        ({"other": ("x.csv", b"a\n1\n", "text/csv")}, {"file": "http://127.0.0.1:9/x.csv"}, 400,
         "exactly one uploaded file"),
        ({"other": ("x.csv", good.to_csv(index=False), "text/csv")}, None, 400, "exactly one uploaded file"),
    ]
    for files, data, status, message in cases:
        _assert_client_error(client.post("/score_csv", files=files, data=data), status, message)
    too_many = pd.concat([good] * (MAX_ROWS // 5 + 1)).to_csv(index=False)
    _assert_client_error(client.post("/score_csv", files={"file": ("x.csv", too_many, "text/csv")}), 413, "rows")
    raw = [(b"garbage", "multipart/form-data; boundary=xx", 400, "malformed multipart"),
           (json.dumps({"file": "/etc/passwd"}).encode(), "application/json", 415, "multipart/form-data")]
    for body, ctype, status, message in raw:
        _assert_client_error(client.post("/score_csv", content=body, headers={"content-type": ctype}), status, message)


def test_old_internal_batch_routes_are_gone_and_server_still_serves(client, arts):
    for route in ("/_batch", "/_batch_explain"):
        assert client.post(route, json={"x": [[0, 1, 1, 1, 1, 1, 1]]}).status_code == 404
    assert client.get("/readyz").status_code == 200
    assert len(score(client, rows=records(arts.frame.iloc[:3]))["results"]) == 3


def test_mixed_soak_with_bench_serve(server, arts, tmp_path):
    """`aeguard bench-serve` against the running server: half bad input, zero 5xx, every bad request a 4xx."""
    out = tmp_path / "bench.jsonl"
    proc = subprocess.run([*CLI, "bench-serve", str(arts.main), "--url", server.url, "--requests", "300",
                           "--concurrency", "8", "--rows-per-request", "4", "--bad-fraction", "0.5", "-o", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text().splitlines()[-1])
    assert result["errors"] == 0 and result["server_errors_5xx"] == 0
    counts = result["status_counts"]
    assert counts["200"] == 150 and sum(v for k, v in counts.items() if k.startswith("4")) == 150
    assert {"413", "415", "400"} <= set(counts)
    assert result["rows_per_s"] > 0 and result["raw_rows_per_s"] > 0 and 0 < result["served_to_raw"]
    assert "reference" not in result  # --url and bad input: no reference run
    with httpx.Client(base_url=server.url) as c:
        assert c.get("/readyz").status_code == 200


def test_bench_serve_against_the_reference_endpoint(server, arts, tmp_path):
    """The reference endpoint answers the same scores; bench-serve reports both side by side, as ratios."""
    ref = LocalServer([], command=reference_command(str(arts.main)))
    try:
        ref.wait_ready()
        out, report = tmp_path / "bench.jsonl", tmp_path / "bench.md"
        proc = subprocess.run([*CLI, "bench-serve", str(arts.main), "--url", server.url, "--reference-url", ref.url,
                               "--requests", "60", "--concurrency", "1,3", "--rows-per-request", "5",
                               "--body", "records,columns,values,arrow,npy", "--rounds", "2", "-o", str(out),
                               "--report", str(report)], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        results = [json.loads(line) for line in out.read_text().splitlines()]
        assert [(r["body"], r["concurrency"]) for r in results] == [
            (b, c) for b in ("records", "columns", "values", "arrow", "npy") for c in (1, 3)]
        for r in results:
            assert r["scores_agree"] is True and r["errors"] == 0 and r["reference"]["errors"] == 0
            assert r["requests"] == 60 and r["reference"]["requests"] == 60
            assert r["rows_ratio"] > 0 and r["served_to_raw"] > 0 and r["reference_served_to_raw"] > 0
        table = report.read_text()
        assert table.startswith("| body | R | C | aeguard rows/s") and table.count("\n| records | 5 |") == 2
    finally:
        ref.stop()
    assert _gone(ref)


def test_schemathesis_finds_no_server_error(server, tmp_path):
    st = Path(sys.executable).with_name("st")
    if not st.exists():
        pytest.skip("schemathesis CLI not installed")
    proc = subprocess.run([str(st), "run", f"{server.url}/docs.json", "--checks", "not_a_server_error",
                           "--include-path-regex", "^/score", "--max-examples", "30", "--seed", "7",
                           "--generation-database", "none", "--no-color", "--report-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "2 passed" in proc.stdout or "passed" in proc.stdout


# --- API key, model store and bento -------------------------------------------------------------------


@pytest.fixture(scope="session")
def store_env(tmp_path_factory):
    home = tmp_path_factory.mktemp("bentoml-home")
    return {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True"}


def test_api_key_and_model_store(arts, store_env):
    imported = subprocess.run([*CLI, "models", "import", str(arts.main), "--name", "serving-test"], env=store_env,
                              capture_output=True, text=True, check=True)
    assert "serving-test:" in imported.stdout
    listed = json.loads(subprocess.run([*CLI, "models", "list", "--json"], env=store_env, capture_output=True,
                                       text=True, check=True).stdout)
    assert [m["detector"] for m in listed if m["tag"].startswith("serving-test:")] == ["ae"]

    srv = LocalServer(["serving-test:latest"], env={"BENTOML_HOME": store_env["BENTOML_HOME"],
                                                     "AEGUARD_API_KEY": "s3cret"})
    try:
        srv.wait_ready()
        body = {"rows": records(arts.frame.iloc[:5])}
        with httpx.Client(base_url=srv.url, timeout=60.0) as c:
            for headers in ({}, {"authorization": "Bearer wrong"}, {"x-api-key": "wrong"}):
                for method, path, kw in (("POST", "/score", {"json": body}), ("GET", "/models", {}),
                                         ("POST", "/score_csv", {"files": {"file": ("x.csv", b"a\n1\n")}})):
                    response = c.request(method, path, headers=headers, **kw)
                    assert response.status_code == 401 and "API key" in response.json()["error"], response.text
            ok = c.post("/score", json=body, headers={"authorization": "Bearer s3cret"})
            assert ok.status_code == 200
            assert c.post("/score", json=body, headers={"x-api-key": "s3cret"}).json() == ok.json()
            expected = load_artifact(arts.main).score(arts.frame.iloc[:5]).score
            np.testing.assert_allclose([r["score"] for r in ok.json()["results"]], expected, rtol=1e-6)
            models = c.get("/models", headers={"x-api-key": "s3cret"}).json()
            assert models["models"][0]["source"] == "store" and models["models"][0]["name"] == "serving-test"
            assert models["runtime"]["api_key_required"] is True
            assert c.get("/readyz").status_code == 200 and c.get("/metrics").status_code == 200
    finally:
        srv.stop()
    assert _gone(srv)


def test_serve_rejects_bad_artifacts_with_one_line(tmp_path, store_env):
    proc = subprocess.run([*CLI, "serve", str(tmp_path / "missing")], env=store_env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1 and proc.stderr.strip().startswith("error: artifact not found")
    proc = subprocess.run([*CLI, "serve", "no-such-model:latest"], env=store_env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1 and "aeguard models import" in proc.stderr


def test_bento_builds_offline(arts, store_env, tmp_path):
    """`bentoml build` from the top-level bentofile.yaml with the network blocked."""
    ctx = tmp_path / "ctx"
    (ctx / "docs").mkdir(parents=True)
    shutil.copy(REPO / "bentofile.yaml", ctx / "bentofile.yaml")
    shutil.copy(REPO / "docs" / "serving.md", ctx / "docs" / "serving.md")
    env = {**store_env, **OFFLINE}
    wheel = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(ctx / "dist"), str(REPO)]
    if subprocess.run([*wheel, "--no-build-isolation"], env=env, capture_output=True, timeout=300).returncode:
        # the venv lacks a recent setuptools/wheel: build the wheel with isolation (this step may use the index)
        subprocess.run(wheel, env=store_env, check=True, capture_output=True, timeout=300)
    import yaml

    config = yaml.safe_load((ctx / "bentofile.yaml").read_text())
    assert all((ctx / wheel).is_file() for wheel in config["python"]["wheels"]), sorted((ctx / "dist").iterdir())
    subprocess.run([*CLI, "models", "import", str(arts.main), "--name", "aeguard-demo"], env=env, check=True,
                   capture_output=True)
    built = subprocess.run([sys.executable, "-m", "bentoml", "build", ".", "--output", "tag"], env=env, cwd=ctx,
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    tag = built.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    name, version = tag.split(":")
    bento = Path(store_env["BENTOML_HOME"]) / "bentos" / name / version
    info = yaml.safe_load((bento / "bento.yaml").read_text())
    assert info["service"] == "aeguard.serving.service:AeguardService"
    assert [m["tag"].split(":")[0] for m in info["models"]] == ["aeguard-demo"]
    assert (bento / "env" / "python" / "wheels" / Path(config["python"]["wheels"][0]).name).is_file()
    # the bento serves the model version it pins, without AEGUARD_ARTIFACTS
    srv = LocalServer([], env={"BENTOML_HOME": store_env["BENTOML_HOME"]},
                      command=[sys.executable, "-m", "bentoml", "serve", tag])
    try:
        srv.wait_ready()
        with httpx.Client(base_url=srv.url, timeout=60.0) as c:
            served = c.get("/models").json()["models"]
            assert [m["tag"] for m in served] == [m["tag"] for m in info["models"]]
            assert c.post("/score", json={"rows": records(arts.frame.iloc[:2])}).status_code == 200
    finally:
        srv.stop()
    assert _gone(srv)


# --- import hygiene and pure helpers -------------------------------------------------------------------


def test_service_and_cli_import_no_torch():
    code = ("import sys, aeguard.serving.service, aeguard.serving.cli, aeguard.serving.reference, "
            "aeguard.serving.bench; bad = [m for m in ('torch', 'pytorch_lightning') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "AEGUARD_ARTIFACTS": ""})
    code = ("import sys, aeguard.serving.cli; "
            "bad = [m for m in ('torch', 'bentoml', 'httpx', 'onnxruntime') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_settings_and_helpers():
    from aeguard.serving.gate import _loc, validation_message
    from aeguard.serving.inputs import RequestError, matrix_from_columns, matrix_from_rows
    from aeguard.serving.settings import Settings
    from aeguard.serving.store import ModelRef

    s = Settings.from_env({"AEGUARD_ARTIFACTS": " a , b=c:1 ,", "AEGUARD_MAX_ROWS": "5", "AEGUARD_API_KEY": "k"})
    assert s.artifacts == ("a", "b=c:1") and s.max_rows == 5 and s.api_key == "k"
    assert Settings.from_env({}).api_key is None
    for env, message in (({"AEGUARD_MAX_ROWS": "x"}, "AEGUARD_MAX_ROWS must be an integer"),
                         ({"AEGUARD_WORKERS": "0"}, "AEGUARD_WORKERS must be at least 1"),
                         ({"AEGUARD_DEVICE": "tpu"}, "AEGUARD_DEVICE")):
        with pytest.raises(ValueError, match=message):
            Settings.from_env(env)
    assert ModelRef.parse("x=y:2") == ModelRef("x", "y:2") and ModelRef.parse("/a/b") == ModelRef(None, "/a/b")
    assert _loc(["rows", 3, "record", "values"]) == "rows[3].values"
    assert _loc(["contamination", "rate"]) == "contamination"
    assert validation_message([{"type": "float_type", "loc": ["rows", 0, "values", 2], "msg": "bad"}] * 2) == \
        "rows[0][2]: bad (and 1 more problem)"
    names = ["a", "b"]
    assert matrix_from_rows([{"b": 2.0, "a": 1.0}], names, 10).tolist() == [[1.0, 2.0]]
    assert matrix_from_columns({"a": [1.0], "b": [2.0]}, names, 10).tolist() == [[1.0, 2.0]]
    with pytest.raises(RequestError, match="mixes records"):
        matrix_from_rows([{"a": 1.0, "b": 2.0}, [1.0, 2.0]], names, 10)
    with pytest.raises(RequestError) as err:
        matrix_from_rows([[1.0, 2.0]] * 3, names, 2)
    assert err.value.status == 413



def test_new_settings():
    from aeguard.serving.settings import Settings

    s = Settings.from_env({})
    assert (s.batch_wait_ms, s.ort_threads, s.ort_spinning, s.tracing) == (0.0, 1, False, False)
    s = Settings.from_env({"AEGUARD_BATCH_WAIT_MS": "2.5", "AEGUARD_ORT_THREADS": "0", "AEGUARD_ORT_SPINNING": "1",
                           "AEGUARD_TRACING": "true"})
    assert (s.batch_wait_ms, s.ort_threads, s.ort_spinning, s.tracing) == (2.5, 0, True, True)
    for env, message in (({"AEGUARD_BATCH_WAIT_MS": "-1"}, "AEGUARD_BATCH_WAIT_MS must be a finite number"),
                         ({"AEGUARD_ORT_SPINNING": "maybe"}, "AEGUARD_ORT_SPINNING must be 0 or 1")):
        with pytest.raises(ValueError, match=message):
            Settings.from_env(env)


def test_micro_batcher_joins_concurrent_requests_with_a_fixed_wait(arts):
    """With AEGUARD_BATCH_WAIT_MS > 0, concurrent requests for one model share one onnxruntime call and each
    gets exactly its own rows back; a full batch runs without waiting."""
    from aeguard.serving.inputs import Options
    from aeguard.serving.scoring import Scorer
    from aeguard.serving.settings import Settings
    from aeguard.serving.store import load_models

    models = load_models([f"main={arts.main}"])
    scorer = Scorer(models, Settings(batch_wait_ms=50.0, max_batch_rows=64))
    X = arts.frame.to_numpy()
    parts = [X[i:i + n] for i, n in ((0, 3), (3, 1), (4, 7), (11, 2))]

    async def run(chunks):
        return await asyncio.gather(*(scorer.score(c, models[0], Options()) for c in chunks))

    scored = asyncio.run(run(parts))
    batcher = scorer.batchers["main"]
    assert (batcher.batches, batcher.batched_rows) == (1, 13)
    for part, res in zip(parts, scored):
        np.testing.assert_allclose(res.outputs["score"], models[0].artifact.run(part)["score"], rtol=1e-6)
    start = asyncio.run(asyncio.wait_for(run([X[:40], X[40:70]]), timeout=10))
    assert batcher.batches == 2 and [len(r.outputs["score"]) for r in start] == [40, 30]
    assert scorer.describe()["batches"]["main"] == {"batches": 2, "rows": 83}


def test_integer_components_stay_integers(arts):
    """A predicted class (an integer graph output) is a JSON integer and an Arrow integer column."""
    from aeguard.serving.inputs import Options
    from aeguard.serving.scoring import Scored, arrow_response, json_response
    from aeguard.serving.store import load_models

    model = load_models([f"apre={arts.apre}"])[0]
    outputs = model.artifact.run(arts.frame.to_numpy()[:4])
    outputs["class"] = np.array([0, 2, 1, 2], dtype=np.int64)
    scored = Scored(model, outputs, 1.0, Options(components=True))
    results = json.loads(json_response(scored))["results"]
    assert [r["components"]["class"] for r in results] == [0, 2, 1, 2]
    assert all(type(r["components"]["class"]) is int and type(r["components"]["error"]) is float for r in results)
    table = read_arrow(arrow_response(scored))
    assert str(table.schema.field("components.class").type) == "int64"
    assert table.column("components.class").to_pylist() == [0, 2, 1, 2]
