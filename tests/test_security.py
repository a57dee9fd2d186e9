"""Untrusted artifacts, Ed25519 signatures, API keys and faults, against real artifacts, real onnxruntime and a
real `aeguard serve` with 2 workers on 127.0.0.1.

Every crafted artifact is what an attacker who can write the folder would make: the manifest checksums are
recomputed after the change (``forge``), so only the new checks stand between it and onnxruntime.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import TensorProto, helper, numpy_helper

from aeguard.core.artifact import ArtifactError, load_artifact, read_manifest, seal_manifest

pytest.importorskip("cryptography")

CLI = [sys.executable, "-m", "aeguard.core.cli"]
EDGE = [sys.executable, "-m", "aeguard.edge.cli"]


@pytest.fixture(scope="module")
def small(small_ae):
    return small_ae


@pytest.fixture()
def copy(small, tmp_path):
    counter = iter(range(1000))

    def make() -> Path:
        dst = tmp_path / f"art{next(counter)}"
        shutil.copytree(small[0], dst)
        return dst
    return make


def forge(path: Path, manifest_edit=None, graph: onnx.ModelProto | bytes | None = None) -> None:
    """Rewrite the graph and/or manifest and recompute every checksum, as an attacker would."""
    manifest = json.loads((path / "manifest.json").read_text())
    if graph is not None:
        data = graph if isinstance(graph, bytes) else graph.SerializeToString()
        (path / "model.onnx").write_bytes(data)
        manifest["files"]["model.onnx"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    if manifest_edit is not None:
        manifest_edit(manifest)
    manifest.pop("manifest_sha256", None)
    (path / "manifest.json").write_text(json.dumps(seal_manifest(manifest), indent=2))


def graph_of(path: Path) -> onnx.ModelProto:
    return onnx.load(str(path / "model.onnx"))


# --- untrusted artifacts: each crafted case and its error ------------------------------------------------


def test_external_data_outside_the_folder_is_refused(copy, tmp_path):
    path = copy()
    model = graph_of(path)
    init = model.graph.initializer[0]
    (tmp_path / "secret.bin").write_bytes(init.raw_data or numpy_helper.to_array(init).tobytes())
    init.ClearField("raw_data")
    init.data_location = TensorProto.EXTERNAL
    init.external_data.add(key="location", value="../secret.bin")
    forge(path, graph=model)
    with pytest.raises(ArtifactError, match=r"references external data '\.\./secret\.bin'.*self-contained"):
        load_artifact(path)


def test_external_data_inside_the_folder_is_refused_too(copy):
    path = copy()
    model = graph_of(path)
    from onnx.external_data_helper import convert_model_to_external_data

    convert_model_to_external_data(model, all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    onnx.save(model, str(path / "model.onnx"))
    data = (path / "model.onnx").read_bytes()
    weights = (path / "weights.bin").read_bytes()
    forge(path, manifest_edit=lambda m: m["files"].update(
        {"weights.bin": {"sha256": hashlib.sha256(weights).hexdigest(), "bytes": len(weights)}}), graph=data)
    with pytest.raises(ArtifactError, match="references external data 'weights.bin'"):
        load_artifact(path)


def test_custom_op_domain_is_refused(copy):
    path = copy()
    model = graph_of(path)
    out = model.graph.output[0].name
    node = model.graph.node[-1]
    node.output[list(node.output).index(out)] = "pre_score"
    model.graph.node.append(helper.make_node("Exfiltrate", ["pre_score"], [out], domain="evil.ops"))
    model.opset_import.append(helper.make_opsetid("evil.ops", 1))
    forge(path, graph=model)
    with pytest.raises(ArtifactError, match="custom operator domain 'evil.ops'"):
        load_artifact(path)


def test_graph_inputs_and_outputs_must_match_the_manifest(copy):
    path = copy()
    forge(path, manifest_edit=lambda m: m["graph"].update(outputs=["score", "contrib", "secret"]))
    with pytest.raises(ArtifactError, match=r"graph outputs \['score', 'contrib'\], manifest lists"):
        load_artifact(path)
    path = copy()
    model = graph_of(path)
    model.graph.input[0].name = "y"
    for node in model.graph.node:
        node.input[:] = ["y" if i == "x" else i for i in node.input]
    forge(path, graph=model)
    with pytest.raises(ArtifactError, match="graph input 'y', manifest says 'x'"):
        load_artifact(path)
    path = copy()
    model = graph_of(path)
    model.graph.input.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, ["batch", 1]))
    forge(path, graph=model)
    with pytest.raises(ArtifactError, match=r"graph has 2 inputs \['x', 'extra'\], expected 1"):
        load_artifact(path)


def test_unknown_keys_in_security_blocks_are_refused_and_open_blocks_stay_open(copy):
    path = copy()
    forge(path, manifest_edit=lambda m: m["features"].update(transform="eval(x)"))
    with pytest.raises(ArtifactError, match=r"unknown key\(s\) \['transform'\] in the security-relevant block "
                                            "'features'"):
        load_artifact(path)
    path = copy()
    forge(path, manifest_edit=lambda m: m["files"]["model.onnx"].update(url="http://example.invalid/x.onnx"))
    with pytest.raises(ArtifactError, match=r"files\['model.onnx'\] must be .* with no other keys"):
        load_artifact(path)
    path = copy()  # plugins' manifest_extra, exporters' graph notes and new top-level notes still load
    forge(path, manifest_edit=lambda m: (m["extra"].update(mss={"k": 3}), m["graph"].update(tools={"x": "1"}),
                                         m.update(source={"note": "converted"})))
    assert load_artifact(path).manifest["extra"]["mss"] == {"k": 3}


def test_symlinks_out_of_the_folder_are_refused(copy, tmp_path):
    path = copy()
    outside = tmp_path / "elsewhere.onnx"
    shutil.move(path / "model.onnx", outside)
    (path / "model.onnx").symlink_to(outside)
    with pytest.raises(ArtifactError, match="model.onnx is a symlink pointing out of the artifact folder"):
        load_artifact(path)
    path = copy()
    shutil.move(path / "manifest.json", tmp_path / "m.json")
    (path / "manifest.json").symlink_to(tmp_path / "m.json")
    with pytest.raises(ArtifactError, match="manifest.json is a symlink pointing out"):
        read_manifest(path)
    path = copy()  # a link that stays inside the folder is fine
    shutil.move(path / "model.onnx", path / "real.onnx")
    (path / "model.onnx").symlink_to("real.onnx")
    assert load_artifact(path).n_features_in_ == 4


def test_files_over_the_size_cap_are_refused(copy, monkeypatch):
    path = copy()
    size = (path / "model.onnx").stat().st_size
    monkeypatch.setenv("AEGUARD_MAX_ARTIFACT_MB", str(size / 2 / (1 << 20)))
    with pytest.raises(ArtifactError, match=f"model.onnx has {size} bytes, over the cap"):
        load_artifact(path)
    monkeypatch.delenv("AEGUARD_MAX_ARTIFACT_MB")
    path = copy()
    with open(path / "manifest.json", "a") as fh:
        fh.write(" " * (17 << 20))
    with pytest.raises(ArtifactError, match="manifest.json has .* bytes, over the cap"):
        read_manifest(path)


def raw_tensor(name: str, dims: list[int], raw: bytes) -> TensorProto:
    """A float tensor whose declared shape need not match its data (onnx.helper refuses to make one)."""
    tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, raw_data=raw)
    tensor.dims.extend(dims)
    return tensor


def test_allocation_bombs_are_refused(copy):
    path = copy()  # a constant that declares 16 TiB and carries 4 bytes
    model = graph_of(path)
    model.graph.initializer.append(raw_tensor("bomb", [1 << 21, 1 << 21], b"\0\0\0\0"))
    forge(path, graph=model)
    with pytest.raises(ArtifactError, match=r"initializer tensor 'bomb' declares shape \[2097152, 2097152\] "
                                            r".*allocation bomb"):
        load_artifact(path)
    path = copy()  # under the cap but claiming more elements than it holds
    model = graph_of(path)
    model.graph.initializer.append(raw_tensor("liar", [1000], b"\0" * 16))
    forge(path, graph=model)
    with pytest.raises(ArtifactError, match=r"'liar' declares shape \[1000\] \(1000 elements\) but holds 4"):
        load_artifact(path)
    path = copy()  # a tiny graph whose ConstantOfShape would fill 400 GB
    model = graph_of(path)
    shape = helper.make_node("Constant", [], ["big_shape"], value=numpy_helper.from_array(
        np.array([100_000, 100_000, 10], dtype=np.int64)))
    fill = helper.make_node("ConstantOfShape", ["big_shape"], ["filled"])
    model.graph.node.extend([shape, fill])
    model.graph.output.append(helper.make_tensor_value_info("filled", TensorProto.FLOAT, None))
    forge(path, graph=model, manifest_edit=lambda m: m["graph"].update(outputs=[*m["graph"]["outputs"], "filled"]))
    with pytest.raises(ArtifactError, match=r"ConstantOfShape\) would allocate shape \[100000, 100000, 10\] "
                                            r"\(372\.5 GiB\)"):
        load_artifact(path)


def test_malformed_graph_bytes_get_an_artifact_error(copy):
    path = copy()
    data = (path / "model.onnx").read_bytes()
    forge(path, graph=data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="refusing model.onnx: .*(truncated|past the end)"):
        load_artifact(path)


# --- interrupted writes -----------------------------------------------------------------------------------

KILL_SCRIPT = """
import json, os, signal, sys, shutil, tempfile
from pathlib import Path
from aeguard.core import artifact
dest, point, source = sys.argv[1], sys.argv[2], Path(sys.argv[3])
die = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
if point == "export":       # a real fit and export; half a graph written, then killed inside the exporter
    import pandas as pd
    sys.path.insert(0, sys.argv[4])
    from conftest import fast_params, make_table
    from aeguard.core import registry
    X, _ = make_table(n_inliers=60, n_outliers=3, d=4, seed=1)
    record = registry.get("ae")
    det = record.create(**fast_params(record.cls), random_state=1).fit(pd.DataFrame(X, columns=list("abcd")))
    real = det.export_onnx
    def export(path, variant="fp32"):
        real(path, variant=variant)
        data = open(path, "rb").read()
        open(path, "wb").write(data[: len(data) // 2])
        die()
    det.export_onnx = export
    det.save_artifact(dest)
if point == "staged":       # graph moved into the staging folder, manifest not yet written
    artifact.seal_manifest = die
elif point == "swap":       # new artifact in place, the old one being removed
    real_rmtree = shutil.rmtree
    shutil.rmtree = lambda p, *a, **k: die() if ".old." in str(p) else real_rmtree(p, *a, **k)
manifest = json.loads((source / "manifest.json").read_text())
manifest["threshold"] = 123.0  # tells the new artifact from the old one
graph = Path(tempfile.mkdtemp()) / "model.onnx"
shutil.copyfile(source / "model.onnx", graph)
artifact.write_artifact(dest, graph, lambda files: {**manifest, "files": files})
"""


@pytest.mark.parametrize("point,existing", [("export", True), ("staged", False), ("staged", True),
                                            ("swap", True)])
def test_interrupted_write_never_leaves_a_half_written_artifact(small, tmp_path, point, existing):
    """SIGKILL inside the exporter, after the graph is staged, and while the old artifact is removed: the
    destination holds the old artifact or the new one, complete, or (nothing there before) nothing."""
    dest = tmp_path / "out"
    if existing:
        shutil.copytree(small[0], dest)
    args = [sys.executable, "-c", KILL_SCRIPT, str(dest), point, str(small[0]), str(Path(__file__).parent)]
    proc = subprocess.run(args, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    if not existing:
        assert not dest.exists()
        return
    model = load_artifact(dest)
    assert model.threshold_ == (123.0 if point == "swap" else load_artifact(small[0]).threshold_)




# --- signatures -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """A release key pair whose public key is the only trusted one, and a second, untrusted key."""
    from aeguard.core.signing import keygen

    root = tmp_path_factory.mktemp("keys")
    proc = subprocess.run([*CLI, "keygen", "-o", str(root / "release")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (root / "release.key").stat().st_mode & 0o777 == 0o600
    trusted = root / "trusted"
    trusted.mkdir()
    shutil.copy(root / "release.pub", trusted / "release.pub")
    other, _ = keygen(root / "other")
    return SimpleNamespace(key=root / "release.key", other=other, trusted=trusted)


def sign(path: Path, key: Path) -> None:
    proc = subprocess.run([*CLI, "sign", str(path), "--key", str(key)], capture_output=True, text=True)
    assert proc.returncode == 0 and "signed" in proc.stdout, proc.stderr


def test_signed_artifacts_load_and_forgeries_are_refused(copy, keys, tmp_path):
    from aeguard.core.signing import sign_artifact

    good = copy()
    sign(good, keys.key)
    assert load_artifact(good, trusted_keys=keys.trusted).n_features_in_ == 4
    with pytest.raises(ArtifactError, match="is not signed .* sign it with `aeguard sign`"):
        load_artifact(copy(), trusted_keys=keys.trusted)
    stranger = copy()
    sign_artifact(stranger, keys.other)
    with pytest.raises(ArtifactError, match="signed by key .* which is not among the trusted keys"):
        load_artifact(stranger, trusted_keys=keys.trusted)
    rewritten = copy()  # the attacker edits the threshold and recomputes every checksum: still refused
    sign_artifact(rewritten, keys.key)
    forge(rewritten, manifest_edit=lambda m: m.update(threshold=1e9))
    assert read_manifest(rewritten)["threshold"] == 1e9  # the checksums alone no longer catch it
    with pytest.raises(ArtifactError, match="bad signature .* manifest.json was changed after it was signed"):
        load_artifact(rewritten, trusted_keys=keys.trusted)
    swapped = copy()  # a new graph, its sha256 in the manifest, the manifest resealed
    sign_artifact(swapped, keys.key)
    model = graph_of(swapped)
    model.producer_name = "attacker"
    forge(swapped, graph=model)
    with pytest.raises(ArtifactError, match="bad signature"):
        load_artifact(swapped, trusted_keys=keys.trusted)
    (tmp_path / "no-keys").mkdir()
    with pytest.raises(ArtifactError, match="no trusted keys: .* has no \\*.pub files"):
        load_artifact(good, trusted_keys=tmp_path / "no-keys")
    assert load_artifact(copy()).n_features_in_ == 4  # without trusted keys nothing changes


def test_score_edge_and_serve_refuse_unsigned_or_forged_artifacts(copy, keys, small, tmp_path):
    _, frame = small
    csv = tmp_path / "rows.csv"
    frame.head(20).to_csv(csv, index=False)
    signed = copy()
    sign(signed, keys.key)
    forged = copy()
    sign(forged, keys.key)
    forge(forged, manifest_edit=lambda m: m.update(threshold=-1.0))
    ok = subprocess.run([*CLI, "score", str(signed), str(csv), "--trusted-keys", str(keys.trusted)],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and len(pd.read_csv(io.StringIO(ok.stdout))) == 20, ok.stderr
    bad = subprocess.run([*CLI, "score", str(forged), str(csv), "--trusted-keys", str(keys.trusted)],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "bad signature" in bad.stderr
    env = {**os.environ, "AEGUARD_TRUSTED_KEYS": str(keys.trusted)}
    edge_ok = subprocess.run([*EDGE, "score", str(signed), str(csv)], capture_output=True, text=True, env=env)
    assert edge_ok.returncode == 0 and edge_ok.stdout.startswith("score,label,probability"), edge_ok.stderr
    edge_bad = subprocess.run([*EDGE, "info", str(copy()), "--trusted-keys", str(keys.trusted)],
                              capture_output=True, text=True)
    assert edge_bad.returncode == 1 and "is not signed" in edge_bad.stderr
    serve_bad = subprocess.run([*CLI, "serve", str(forged), "--trusted-keys", str(keys.trusted)],
                               capture_output=True, text=True, timeout=60)
    assert serve_bad.returncode == 1 and "bad signature" in serve_bad.stderr


# --- access control -------------------------------------------------------------------------------------


def test_keys_are_compared_in_constant_time_against_every_key(monkeypatch):
    from aeguard.serving import gate

    calls = []
    real = gate.hmac.compare_digest
    monkeypatch.setattr(gate.hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    g = gate.Gate(None, api_key=None, api_keys=("old-key", "new-key"), max_body_bytes=100)
    assert gate.key_matches("old-key", g.keys) and gate.key_matches("new-key", g.keys)
    assert not gate.key_matches("old-ke", g.keys) and not gate.key_matches("", g.keys)
    assert len(calls) == 8  # every configured key is compared, whether the first one matched or none did


def test_api_keys_from_env_and_file(tmp_path):
    from aeguard.serving.settings import Settings

    keys_file = tmp_path / "keys.txt"
    keys_file.write_text("# rotated in\nthird-key\n\n")
    s = Settings.from_env({"AEGUARD_API_KEY": "old-key, new-key", "AEGUARD_API_KEYS_FILE": str(keys_file)})
    assert s.api_keys == ("old-key", "new-key", "third-key") and s.api_key == "old-key"
    assert Settings.from_env({}).api_keys == () and Settings.from_env({}).api_key is None
    (tmp_path / "empty").write_text("# none yet\n")
    with pytest.raises(ValueError, match="AEGUARD_API_KEYS_FILE: .* has no keys"):
        Settings.from_env({"AEGUARD_API_KEYS_FILE": str(tmp_path / "empty")})


@pytest.fixture(scope="module")
def server(small, keys, tmp_path_factory):
    """A real `aeguard serve` of a signed artifact: 2 workers, two accepted API keys, signatures required."""
    pytest.importorskip("bentoml")
    from aeguard.serving.bench import LocalServer

    path = tmp_path_factory.mktemp("served") / "signed-ae"
    shutil.copytree(small[0], path)
    sign(path, keys.key)
    srv = LocalServer([str(path)], workers=2, env={"AEGUARD_API_KEY": "old-key,new-key"},
                      extra_args=["--trusted-keys", str(keys.trusted)])
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def test_several_keys_wrong_key_logged_without_it_and_open_routes(server, small):
    import httpx

    _, frame = small
    body = {"rows": frame.head(3).to_dict(orient="records")}
    with httpx.Client(base_url=server.url, timeout=30) as c:
        assert c.post("/score", json=body, headers={"Authorization": "Bearer old-key"}).status_code == 200
        assert c.post("/score", json=body, headers={"X-API-Key": "new-key"}).status_code == 200
        missing = c.post("/score", json=body)
        assert missing.status_code == 401 and missing.json()["error"].startswith("missing API key")
        wrong = c.post("/score", json=body, headers={"Authorization": "Bearer wrong-SECRET-4711"})
        assert wrong.status_code == 401 and wrong.json()["error"].startswith("invalid API key")
        assert c.get("/models").status_code == 401
        models = c.get("/models", headers={"X-API-Key": "old-key"}).json()
        assert models["runtime"]["signatures_required"] and models["runtime"]["api_key_required"]
        for route in ("/healthz", "/readyz", "/metrics"):
            assert c.get(route).status_code == 200, route
    log = server.log_tail(200_000)
    assert "401 POST /score from 127.0.0.1" in log and "invalid API key" in log
    assert "wrong-SECRET-4711" not in log and "old-key" not in log


def test_fuzzed_http_requests_never_get_a_5xx(server):
    """The request fuzzer's bodies (tests/test_fuzz.py), raw bytes and odd content types over real HTTP."""
    import httpx
    from hypothesis import given
    from hypothesis import strategies as st
    from test_fuzz import FUZZ, json_bodies

    media = st.sampled_from(["application/json", "application/vnd.apache.arrow.stream", "application/x-npy",
                             "text/csv", "multipart/form-data; boundary=x", ""])
    bodies = st.one_of(json_bodies().map(lambda b: json.dumps(b).encode()), st.binary(max_size=300))
    statuses = []
    with httpx.Client(base_url=server.url, timeout=30, headers={"X-API-Key": "old-key"}) as c:
        @FUZZ
        @given(body=bodies, content_type=media, route=st.sampled_from(["/score", "/score_csv"]),
               query=st.sampled_from(["", "?explain=true", "?threshold=x", "?model=%00", "?a=1&a=2"]))
        def post(body, content_type, route, query):
            response = c.post(route + query, content=body, headers={"content-type": content_type})
            statuses.append(response.status_code)
            assert response.status_code < 500, (response.status_code, response.text[:300])
            if response.status_code >= 400:
                assert response.json()["error"]

        post()
    assert statuses and all(s < 500 for s in statuses)


def test_killed_worker_comes_back_and_failures_are_bounded(server):
    from aeguard.core.artifact import read_manifest
    from aeguard.serving.faults import mixed_plan, worker_kill, worker_pids

    manifest = read_manifest(Path(server.process.args[server.process.args.index("serve") + 1]))
    plan = mixed_plan(manifest, 60_000, bad_fraction=0.3, api_key="new-key")
    result = worker_kill(server, plan, concurrency=4, before_s=2.0, after_s=10.0)
    assert result["server_alive"] and result["server_errors_5xx"] == 0
    assert result["worker_back_s"] is not None and result["worker_back_s"] < 10.0, result
    assert result["killed_worker_connections"] >= 1, result  # the killed worker was serving the load
    # at most the requests in flight on the killed worker fail (or, sent again on a new connection, succeed)
    assert result["failed"] + result["retried"] <= 4, result
    assert result["requests_after_kill"] > 100 and result["longest_pause_after_kill_s"] < 5.0, result
    assert len(worker_pids(server)) == 2
