"""Edge deployment: INT8 and legacy export variants, the torch-free ``aeguard-edge`` command, watch mode."""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import TensorProto, helper

from aeguard.core import registry
from aeguard.core.artifact import ArtifactError, load_artifact, manifest_digest, read_manifest
from aeguard.core.edge_cli import RowParser
from aeguard.core.variants import convert_legacy, export_variant, knn_matmuls, spearman
from conftest import fast_params

BIN = Path(sys.executable).parent
EDGE = str(BIN / "aeguard-edge")
HEAVY = ("torch", "lightning", "pytorch_lightning", "sklearn", "pyod", "bentoml", "onnx", "scipy")


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(list(args), input=stdin, capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture(scope="module")
def arts(tmp_path_factory, table_frame):
    """A small fitted `ae` artifact, its INT8 and legacy variants, and CSV data to score."""
    X, _ = table_frame
    root = tmp_path_factory.mktemp("edge")
    detector = registry.create("ae", random_state=0, **fast_params(registry.get("ae").cls))
    detector.fit(X)
    fp32 = detector.save_artifact(root / "fp32")
    int8 = export_variant(fp32, root / "int8", int8=True)
    legacy = export_variant(fp32, root / "legacy", legacy=True)
    X.to_csv(root / "data.csv", index=False)
    return {"fp32": fp32, "int8": int8, "legacy": legacy, "csv": root / "data.csv", "X": X, "root": root}


def test_variants_are_complete_artifacts(arts):
    src = read_manifest(arts["fp32"])
    for variant in ("int8", "legacy"):
        manifest = read_manifest(arts[variant], verify=True)  # checksums and manifest seal verified
        assert manifest["graph"]["variant"] == variant
        assert manifest["source"]["manifest_sha256"] == manifest_digest(src)
        assert manifest["source"]["detector"] == "ae" and manifest["source"]["variant"] == "fp32"
        for key in ("features", "threshold", "calibration", "fit_scores", "preprocessing"):
            assert manifest[key] == src[key]
        model = load_artifact(arts[variant])
        assert model.feature_names == [f"sensor_{i}" for i in range(6)]
        assert model.score(arts["X"]).score.shape == (len(arts["X"]),)


def test_legacy_graph_is_opset_17_and_exact(arts):
    graph = onnx.load(str(arts["legacy"] / "model.onnx"))
    assert {o.domain: o.version for o in graph.opset_import}[""] == 17
    assert graph.ir_version == 8
    fp = load_artifact(arts["fp32"]).score(arts["X"]).score
    np.testing.assert_allclose(load_artifact(arts["legacy"]).score(arts["X"]).score, fp, rtol=1e-6, atol=1e-5)


def test_int8_graph_is_quantized_and_keeps_the_ranking(arts):
    ops = {n.op_type for n in onnx.load(str(arts["int8"] / "model.onnx")).graph.node}
    assert {"QuantizeLinear", "MatMulInteger"} <= ops  # per-row dynamic quantization feeding integer MatMuls
    assert not ops & {"Gemm", "MatMul", "DynamicQuantizeLinear"}
    fp = load_artifact(arts["fp32"]).score(arts["X"]).score
    q = load_artifact(arts["int8"]).score(arts["X"]).score
    assert spearman(fp, q) > 0.95
    graph = read_manifest(arts["int8"])["graph"]
    assert graph["check"]["spearman_score"] > 0.9 and graph["transforms"][-1]["per_row_quantizers"] >= 2


def test_int8_row_score_does_not_depend_on_its_batch(arts):
    """Activations are quantized per row: an extreme row in the batch must not change the others' scores."""
    model = load_artifact(arts["int8"])
    X = arts["X"].to_numpy()[:20]
    alone = np.concatenate([model.score(X[i:i + 1]).score for i in range(len(X))])
    with_extreme = model.score(np.vstack([X, X[:1] * 1000.0])).score[:-1]
    np.testing.assert_allclose(with_extreme, alone, rtol=1e-6, atol=1e-6)


def test_export_command_and_its_errors(arts, tmp_path):
    from typer.testing import CliRunner

    from aeguard.core.cli import app

    runner = CliRunner()
    both = runner.invoke(app, ["export", str(arts["fp32"]), "-o", str(tmp_path / "both"), "--int8", "--legacy"])
    assert both.exit_code == 0, both.output
    graph = read_manifest(tmp_path / "both")["graph"]
    assert graph["variant"] == "int8-legacy" and graph["opset"] == 17
    with pytest.raises(ValueError, match="choose a variant"):
        export_variant(arts["fp32"], tmp_path / "none")
    with pytest.raises(ArtifactError, match="already an INT8"):
        export_variant(arts["int8"], tmp_path / "again", int8=True)


def test_legacy_conversion_falls_back_to_the_optimizer(tmp_path):
    """The opset 18 -> 17 converter needs constant ``axes``; an Identity in between makes it fail directly."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    outs = [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"]),
            helper.make_tensor_value_info("contrib", TensorProto.FLOAT, ["batch", 4])]
    nodes = [helper.make_node("Constant", [], ["axes"], value=helper.make_tensor("a", TensorProto.INT64, [1], [1])),
             helper.make_node("Identity", ["axes"], ["axes2"]),
             helper.make_node("Mul", ["x", "x"], ["contrib"]),
             helper.make_node("ReduceMean", ["contrib", "axes2"], ["score"], keepdims=0)]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], outs), opset_imports=[helper.make_opsetid("", 18)])
    onnx.save(model, str(tmp_path / "in.onnx"))
    info = convert_legacy(tmp_path / "in.onnx", tmp_path / "out.onnx")
    assert info["method"].startswith("onnxscript.optimizer") and info["opset"] == 17
    out = onnx.load(str(tmp_path / "out.onnx"))
    assert out.opset_import[0].version == 17


def test_knn_matmuls_stay_float():
    """MatMuls feeding TopK (kNN distances) are excluded from INT8; the autoencoder's weights are not."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 4], np.eye(4, dtype=np.float32).ravel().tolist())
    ref = helper.make_tensor("ref", TensorProto.FLOAT, [4, 8], np.ones(32, dtype=np.float32).tolist())
    k = helper.make_tensor("k", TensorProto.INT64, [1], [2])
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="weights"),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "ref"], ["dots"], name="distances"),
             helper.make_node("Neg", ["dots"], ["neg"]),
             helper.make_node("TopK", ["neg", "k"], ["vals", "idx"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("vals", TensorProto.FLOAT, [1, 2])],
                              initializer=[w, ref, k])
    assert knn_matmuls(helper.make_model(graph)) == ["distances"]


def test_edge_score_matches_aeguard_score(arts, tmp_path):
    edge = run(EDGE, "score", str(arts["int8"]), str(arts["csv"]), "-o", str(tmp_path / "edge.csv"))
    assert edge.returncode == 0, edge.stderr
    full = run(str(BIN / "aeguard"), "score", str(arts["int8"]), str(arts["csv"]), "-o", str(tmp_path / "full.csv"))
    assert full.returncode == 0, full.stderr
    assert (tmp_path / "edge.csv").read_bytes() == (tmp_path / "full.csv").read_bytes()
    frame = pd.read_csv(tmp_path / "edge.csv")
    assert list(frame.columns) == ["score", "label", "probability"] and len(frame) == len(arts["X"])


def test_edge_cli_imports_no_training_stack(arts, tmp_path):
    argv = ["score", str(arts["fp32"]), str(arts["csv"]), "-o", str(tmp_path / "o.csv")]
    code = ("import json, sys\n"
            "from aeguard.core.edge_cli import main\n"
            f"try:\n    main({argv!r})\n"
            "except SystemExit as e:\n    assert not e.code, e.code\n"
            f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n")
    out = run(sys.executable, "-c", code)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
    assert len(pd.read_csv(tmp_path / "o.csv")) == len(arts["X"])


def test_watch_scores_line_by_line_and_survives_bad_rows(arts):
    X = arts["X"]
    names = list(X.columns)
    proc = subprocess.Popen([EDGE, "watch", str(arts["fp32"])], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, bufsize=1)
    try:
        rows = [",".join(f"{v:.17g}" for v in X.iloc[i]) for i in range(3)]
        proc.stdin.write(",".join(names) + "\n")
        lines = []
        for text in [rows[0], rows[1], "1,2,oops,4,5,6", "1,2,3", rows[2]]:
            proc.stdin.write(text + "\n")
            proc.stdin.flush()
            if text in rows:  # each good row is answered before the next one is sent
                ready, _, _ = select.select([proc.stdout], [], [], 60)
                assert ready, "no output line for a row within 60 s"
                lines.append(proc.stdout.readline().strip())
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
        err = proc.stderr.read()
    finally:
        proc.kill()
    assert "line 4: not a number: 'oops'" in err and "line 5: expected 6 values, got 3" in err
    expected = load_artifact(arts["fp32"]).score(X.iloc[:3])
    got = np.array([[float(v) for v in line.split(",")] for line in lines])
    np.testing.assert_allclose(got[:, 0], expected.score, rtol=1e-5)
    np.testing.assert_array_equal(got[:, 1], expected.label)
    np.testing.assert_allclose(got[:, 2], expected.probability, rtol=1e-5, atol=1e-7)


def test_watch_header_reorders_columns_and_wrong_header_stops(arts):
    names = arts["X"].columns.tolist()
    parser = RowParser(names)
    assert parser.parse(1, ",".join(reversed(names))) is None
    row = parser.parse(2, ",".join(str(float(i)) for i in range(6)))
    np.testing.assert_array_equal(row, [[5, 4, 3, 2, 1, 0]])
    out = run(EDGE, "watch", str(arts["fp32"]), stdin="a,b,c,d,e,f\n1,2,3,4,5,6\n")
    assert out.returncode == 1 and out.stderr.startswith("error: line 1: header does not match")


def test_tampered_exported_artifact_is_refused(arts, tmp_path):
    graph_bad = shutil.copytree(arts["int8"], tmp_path / "graph")
    with open(graph_bad / "model.onnx", "r+b") as fh:
        fh.seek(-8, os.SEEK_END)
        fh.write(b"\x00" * 8)
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        load_artifact(graph_bad)
    out = run(EDGE, "score", str(graph_bad), str(arts["csv"]))
    assert out.returncode == 1 and out.stderr.strip().startswith("error: checksum mismatch")
    manifest_bad = shutil.copytree(arts["legacy"], tmp_path / "manifest")
    manifest = json.loads((manifest_bad / "manifest.json").read_text())
    manifest["threshold"] *= 10
    (manifest_bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="modified"):
        load_artifact(manifest_bad)


def test_info_and_cpu_fallback(arts):
    out = run(EDGE, "info", str(arts["int8"]))
    assert out.returncode == 0, out.stderr
    assert "(int8, opset 18" in out.stdout and "exported from" in out.stdout
    assert re.search(r"^checksums +verified$", out.stdout, re.M)
    model = load_artifact(arts["fp32"], device="auto")  # CUDA only when onnxruntime really runs on it
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert model.device == "cpu"
        cuda = run(EDGE, "score", str(arts["fp32"]), str(arts["csv"]), "--device", "cuda")
        assert cuda.returncode == 1 and cuda.stderr.startswith("error: device='cuda'")
