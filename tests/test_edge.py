"""Edge deployment: INT8 and legacy export variants, the torch-free ``aeguard-edge`` command, watch mode."""

from __future__ import annotations

import ast
import copy
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
from aeguard.core.artifact import ArtifactError, load_artifact, manifest_digest, read_manifest, write_artifact
from aeguard.edge.cli import RowParser
from aeguard.edge.variants import convert_legacy, export_variant, quantize_int8, spearman
from conftest import REPO, fast_params

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


@pytest.fixture(scope="module")
def knn_arts(tmp_path_factory, table_frame):
    """Fitted `ae+mss` and `apre` artifacts (each declares its kNN target ``keep_fp32``) and their INT8 variants."""
    X, _ = table_frame
    root = tmp_path_factory.mktemp("knn")
    out = {}
    for name in ("ae+mss", "apre"):
        detector = registry.create(name, random_state=0, **fast_params(registry.get(name).cls))
        detector.fit(X)
        fp32 = detector.save_artifact(root / name)
        out[name] = {"fp32": fp32, "int8": export_variant(fp32, root / f"{name}-int8", int8=True)}
    return out


def redeclare(src: Path, dst: Path, fp32_nodes: list[str] | None) -> Path:
    """A sealed copy of ``src`` whose manifest declares ``fp32_nodes`` (``None``: no declaration, as before)."""
    manifest = read_manifest(src)
    shutil.copyfile(src / "model.onnx", dst.parent / f"{dst.name}.onnx")

    def build(files: dict) -> dict:
        new = copy.deepcopy(manifest)
        new["files"] = files
        if fp32_nodes is None:
            del new["graph"]["fp32_nodes"]
        else:
            new["graph"]["fp32_nodes"] = fp32_nodes
        return new

    return write_artifact(dst, dst.parent / f"{dst.name}.onnx", build)


def float_inputs(model: onnx.ModelProto, node: onnx.NodeProto) -> bool:
    """Every input of ``node`` is a float32 tensor that no DequantizeLinear produced."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.input, *inferred.graph.value_info]}
    types |= {t.name: t.data_type for t in inferred.graph.initializer}
    dequantized = {o for n in inferred.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return all(types[i] == TensorProto.FLOAT and i not in dequantized for i in node.input if i)


def test_int8_keeps_exactly_the_declared_nodes_fp32(knn_arts, table_frame):
    """`ae+mss`: the declared kNN MatMul stays a float MatMul; every other MatMul/Gemm becomes integer."""
    arts = knn_arts["ae+mss"]
    declared = read_manifest(arts["fp32"])["graph"]["fp32_nodes"]
    source = {n.name: n for n in onnx.load(str(arts["fp32"] / "model.onnx")).graph.node}
    weights = [n for n in source.values() if n.op_type in ("MatMul", "Gemm")]
    kept = sorted(n.name for n in weights if n.name in declared)
    assert kept and len(kept) < len(weights)  # the kNN distances are declared, the autoencoder is not
    int8 = onnx.load(str(arts["int8"] / "model.onnx"))
    result = {n.name: n for n in int8.graph.node}
    for name in declared:
        if name in result:
            assert result[name].op_type == source[name].op_type
    for name in kept:
        assert float_inputs(int8, result[name]), name
    assert sum(n.op_type == "MatMulInteger" for n in int8.graph.node) == len(weights) - len(kept)
    assert not [n for n in int8.graph.node if n.op_type in ("MatMul", "Gemm") and n.name not in kept]
    transform = read_manifest(arts["int8"])["graph"]["transforms"][-1]
    assert transform["kept_fp32_nodes"] == kept and transform["declared_fp32_nodes"] == len(declared)
    X = table_frame[0]
    assert spearman(load_artifact(arts["fp32"]).score(X).score, load_artifact(arts["int8"]).score(X).score) > 0.95


def test_int8_follows_the_declaration_not_the_graph(knn_arts, tmp_path):
    """Declare nothing and the kNN MatMul is quantized too; no declaration at all (an older aeguard) is refused."""
    src = knn_arts["ae+mss"]["fp32"]
    undeclared = export_variant(redeclare(src, tmp_path / "none", []), tmp_path / "none-int8", int8=True)
    ops = [n.op_type for n in onnx.load(str(undeclared / "model.onnx")).graph.node]
    assert "MatMul" not in ops and "Gemm" not in ops and "MatMulInteger" in ops
    old = redeclare(src, tmp_path / "old", None)
    with pytest.raises(ArtifactError, match="re-export"):
        export_variant(old, tmp_path / "old-int8", int8=True)
    out = run(str(BIN / "aeguard"), "export", str(old), "-o", str(tmp_path / "old-cli"), "--int8")
    assert out.returncode == 1 and "re-export" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert export_variant(old, tmp_path / "old-legacy", legacy=True).is_dir()  # FP32 variants need no declaration
    with pytest.raises(ArtifactError, match="not in the graph"):
        export_variant(redeclare(src, tmp_path / "wrong", ["no_such_node"]), tmp_path / "wrong-int8", int8=True)


class TinyConvNet:
    """A conv autoencoder-like graph on (B, 1, 8, 8) rows: score (B) and contrib (B x 64)."""

    @staticmethod
    def export(path: Path) -> Path:
        import torch
        from torch import nn

        from aeguard.core.export import export_graph

        class Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.enc = nn.Conv2d(1, 4, 3, padding=1)
                self.dec = nn.ConvTranspose2d(4, 1, 3, padding=1)

            def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                contrib = (self.dec(torch.relu(self.enc(x))) - x).flatten(1) ** 2
                return contrib.sum(1), contrib

        torch.manual_seed(0)
        export_graph(Net(), (1, 8, 8), ["score", "contrib"], path)
        return path


def test_int8_conv_weights_are_int8_and_rows_stay_independent(tmp_path):
    src = TinyConvNet.export(tmp_path / "conv.onnx")
    info = quantize_int8(src, tmp_path / "int8.onnx", keep_fp32=[])
    model = onnx.load(str(tmp_path / "int8.onnx"))
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {t.name: t for t in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    assert len(convs) == 2 and sorted(info["weight_only_nodes"]) == sorted(n.name for n in convs)
    for conv in convs:  # int8 weights, one scale per output channel, dequantized into the float convolution
        dq = producers[conv.input[1]]
        assert dq.op_type == "DequantizeLinear" and inits[dq.input[0]].data_type == TensorProto.INT8
        axis = {"Conv": 0, "ConvTranspose": 1}[conv.op_type]
        assert list(inits[dq.input[1]].dims) == [inits[dq.input[0]].dims[axis]]
    assert not [t for t in model.graph.initializer if t.data_type == TensorProto.FLOAT and len(t.dims) == 4]
    assert (tmp_path / "int8.onnx").stat().st_size < src.stat().st_size
    import onnxruntime as ort

    fp, q = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (src, tmp_path / "int8.onnx"))
    X = np.random.default_rng(0).standard_normal((40, 1, 8, 8)).astype(np.float32)
    a, b = fp.run(["score"], {"x": X})[0], q.run(["score"], {"x": X})[0]
    assert spearman(a, b) > 0.99 and not np.array_equal(a, b)
    alone = np.concatenate([q.run(["score"], {"x": X[i:i + 1]})[0] for i in range(len(X))])
    with_extreme = q.run(["score"], {"x": np.concatenate([X, X[:1] * 1000.0])})[0][:-1]
    np.testing.assert_allclose(with_extreme, alone, rtol=1e-6, atol=1e-6)
    keep = convs[0].name  # a declared conv keeps its float weights
    quantize_int8(src, tmp_path / "kept.onnx", keep_fp32=[keep])
    kept = onnx.load(str(tmp_path / "kept.onnx"))
    assert float_inputs(kept, next(n for n in kept.graph.node if n.name == keep))


def test_int8_refuses_recurrent_layers_naming_the_op(tmp_path):
    d, hidden = 4, 3
    rng = np.random.default_rng(0)
    w = helper.make_tensor("W", TensorProto.FLOAT, [1, 4 * hidden, d], rng.standard_normal(4 * hidden * d).tolist())
    r = helper.make_tensor("R", TensorProto.FLOAT, [1, 4 * hidden, hidden],
                           rng.standard_normal(4 * hidden * hidden).tolist())
    nodes = [helper.make_node("Unsqueeze", ["x", "zero"], ["seq"]),
             helper.make_node("LSTM", ["seq", "W", "R"], ["", "h"], name="lstm", hidden_size=hidden),
             helper.make_node("ReduceSum", ["h"], ["score"], keepdims=0),
             helper.make_node("Mul", ["x", "x"], ["contrib"])]
    zero = helper.make_tensor("zero", TensorProto.INT64, [1], [0])
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", d])],
                              [helper.make_tensor_value_info("score", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("contrib", TensorProto.FLOAT, ["batch", d])],
                              initializer=[w, r, zero])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(tmp_path / "lstm.onnx"))
    with pytest.raises(ArtifactError, match=r"INT8 cannot quantize LSTM \(lstm\)"):
        quantize_int8(tmp_path / "lstm.onnx", tmp_path / "out.onnx", keep_fp32=[])


def test_core_imports_nothing_from_the_user_paths():
    """core is the contract: it never imports the edge, serving, benchmark, datasets or plugins packages (parsed,
    not run); everything else is found through the registry and the command entry points."""
    forbidden = ("aeguard.edge", "aeguard.serving", "aeguard.benchmark", "aeguard.datasets", "aeguard.plugins")
    found = []
    for path in sorted((REPO / "core").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = "aeguard.core" if node.level == 1 else "aeguard" if node.level == 2 else ""
                names = [".".join(p for p in (base, node.module) if p)]
            else:
                continue
            found += [f"{path.name}:{node.lineno} {n}" for n in names if n.startswith(forbidden)]
    assert not found, found
    assert not [p.name for p in (REPO / "core").glob("*.py") if p.stem in ("edge_cli", "variants", "export_cli")]


def test_edge_score_matches_aeguard_score(arts, tmp_path):
    edge = run(EDGE, "score", str(arts["int8"]), str(arts["csv"]), "-o", str(tmp_path / "edge.csv"))
    assert edge.returncode == 0, edge.stderr
    full = run(str(BIN / "aeguard"), "score", str(arts["int8"]), str(arts["csv"]), "-o", str(tmp_path / "full.csv"))
    assert full.returncode == 0, full.stderr
    assert (tmp_path / "edge.csv").read_bytes() == (tmp_path / "full.csv").read_bytes()
    frame = pd.read_csv(tmp_path / "edge.csv")
    assert list(frame.columns) == ["score", "label", "probability"] and len(frame) == len(arts["X"])


def test_edge_components_add_columns_in_graph_order(knn_arts, table_frame, tmp_path):
    """`apre`: --components appends its named outputs after score,label,probability; the default is unchanged."""
    X = table_frame[0]
    X.to_csv(tmp_path / "data.csv", index=False)
    art = knn_arts["apre"]["fp32"]
    names = [o for o in read_manifest(art)["graph"]["outputs"] if o not in ("score", "contrib")]
    assert names  # apre's components
    out = run(EDGE, "score", str(art), str(tmp_path / "data.csv"), "--components", "-o", str(tmp_path / "c.csv"))
    assert out.returncode == 0, out.stderr
    frame = pd.read_csv(tmp_path / "c.csv")
    assert list(frame.columns) == ["score", "label", "probability", *names]
    expected = load_artifact(art).score(X)
    for name in names:
        np.testing.assert_allclose(frame[name], expected.components[name], rtol=1e-6, atol=1e-7)
    plain = run(EDGE, "score", str(art), str(tmp_path / "data.csv"))
    full = run(str(BIN / "aeguard"), "score", str(art), str(tmp_path / "data.csv"))
    assert plain.returncode == full.returncode == 0 and plain.stdout == full.stdout
    assert plain.stdout.splitlines()[0] == "score,label,probability"
    rows = [",".join(f"{v:.17g}" for v in X.iloc[i]) for i in range(2)]
    watched = run(EDGE, "watch", str(art), "--components", "--header", "--on-error", "nan",
                  stdin="\n".join([rows[0], "1,2", rows[1]]) + "\n")
    assert watched.returncode == 0, watched.stderr
    lines = watched.stdout.splitlines()
    assert lines[0] == ",".join(["score", "label", "probability", *names])
    assert lines[2] == ",".join(["nan"] * (3 + len(names)))
    got = np.array([[float(v) for v in line.split(",")] for line in (lines[1], lines[3])])
    np.testing.assert_allclose(got[:, 3:], np.column_stack([expected.components[n][:2] for n in names]),
                               rtol=1e-5, atol=1e-6)


def test_edge_components_print_integer_outputs_as_integers(arts, tmp_path):
    """A graph with an integer component (a predicted ``class``) and a float one, in an artifact of its own."""
    d = 6
    nodes = [helper.make_node("Mul", ["x", "x"], ["contrib"]),
             helper.make_node("ReduceSum", ["contrib", "axes"], ["score"], keepdims=0),
             helper.make_node("ArgMax", ["x"], ["class"], axis=1, keepdims=0),
             helper.make_node("ReduceMax", ["x", "axes"], ["peak"], keepdims=0)]
    outputs = [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"]),
               helper.make_tensor_value_info("contrib", TensorProto.FLOAT, ["batch", d]),
               helper.make_tensor_value_info("class", TensorProto.INT64, ["batch"]),
               helper.make_tensor_value_info("peak", TensorProto.FLOAT, ["batch"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", d])],
                              outputs, initializer=[helper.make_tensor("axes", TensorProto.INT64, [1], [1])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(tmp_path / "g.onnx"))
    manifest = read_manifest(arts["fp32"])

    def build(files: dict) -> dict:
        new = copy.deepcopy(manifest)
        new["files"] = files
        new["graph"] = {**new["graph"], "outputs": ["score", "contrib", "class", "peak"], "bytes_per_row": 64}
        return new

    art = write_artifact(tmp_path / "classes", tmp_path / "g.onnx", build)
    out = run(EDGE, "score", str(art), str(arts["csv"]), "--components")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "score,label,probability,class,peak"
    X = arts["X"].to_numpy()
    classes = [line.split(",")[3] for line in lines[1:]]
    assert classes == [str(int(c)) for c in X.argmax(axis=1)]  # "3", not "3.0"
    np.testing.assert_allclose([float(line.split(",")[4]) for line in lines[1:]], X.max(axis=1), rtol=1e-6)


def test_edge_cli_imports_no_training_stack(arts, tmp_path):
    argv = ["score", str(arts["fp32"]), str(arts["csv"]), "-o", str(tmp_path / "o.csv")]
    code = ("import json, sys\n"
            "from aeguard.edge.cli import main\n"
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


def test_edge_check_compare_allows_one_float32_step_of_large_scores_and_fails_beyond(tmp_path):
    """``make edge-check``'s compare: the tolerance is absolute up to |score| 1 and relative above."""
    import json

    from aeguard.edge.check_score import main as check_main

    def side(folder, scores):
        folder.mkdir()
        (folder / "env.json").write_text(json.dumps({"machine": folder.name, "onnxruntime": "x",
                                                     "variants": {"big-fp32": "fp32"}}))
        np.savez(folder / "raw.npz", **{"big-fp32/score": scores, "big-fp32/contrib": scores[:, None] / 2})
        lines = ["score,label,probability"] + [f"{float(s)!r},0,0.5" for s in scores]
        (folder / "big-fp32.csv").write_text("\n".join(lines) + "\n")

    base = np.array([1700.0, 900.5, 3.0], dtype=np.float32)
    side(tmp_path / "a", base)
    side(tmp_path / "b", np.nextafter(base, np.float32(np.inf)))  # one float32 step: 1.2e-4 at 1.7e3
    assert check_main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    side(tmp_path / "c", base + np.float32(0.1))  # 6e-5 relative: a real difference
    assert check_main(["compare", str(tmp_path / "a"), str(tmp_path / "c")]) == 1


def test_emit_report_prints_and_writes_the_same_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The speed scripts' one report writer: the printed and the written JSON are the same document."""
    from aeguard.edge.export_cli import emit_report

    report = {"dataset": "cardio", "ratios": {"rows_per_s": 0.5}}
    out = tmp_path / "speed.json"
    emit_report(report, out)
    assert json.loads(capsys.readouterr().out) == report
    assert json.loads(out.read_text()) == report
    emit_report(report, None)
    assert json.loads(capsys.readouterr().out) == report


def test_edge_check_make_accepts_detector_specs_and_builds_an_ensemble(tmp_path: Path) -> None:
    """``EDGE_DETECTORS='ae(n_members=2)'``: the spec's parameters reach the fit (here a 2-member ensemble) and
    the artifact folders are named after the spec, so ensembles get the same aarch64 parity check."""
    from aeguard.core.artifact import read_manifest
    from aeguard.edge.check_score import artifact_slug
    from aeguard.edge.check_score import main as check_main

    assert artifact_slug("apre(n_members=3)") == "apre_n_members_3" and artifact_slug("ae+mss") == "ae_mss"
    job = tmp_path / "job"
    assert check_main(["make", str(job), "--detectors", "ae(n_members=2,epochs=20)", "--rows", "200",
                       "--score-rows", "50", "--features", "4"]) == 0
    made = sorted(p.name for p in (job / "artifacts").iterdir())
    assert made == ["ae_n_members_2_epochs_20-fp32", "ae_n_members_2_epochs_20-int8", "ae_n_members_2_epochs_20-legacy"]
    manifest = read_manifest(job / "artifacts" / made[0])
    assert manifest["extra"]["ensemble"]["n_members"] == 2
    # in its own interpreter, as under emulation: scoring an ensemble loads no heavy module
    scored = subprocess.run([sys.executable, "-m", "aeguard.edge.check_score", "score", str(job),
                             str(tmp_path / "x86")], capture_output=True, text=True)
    assert scored.returncode == 0, scored.stdout + scored.stderr
    raw = np.load(tmp_path / "x86" / "raw.npz")
    assert raw[f"{made[0]}/score"].shape == (50,)
    with pytest.raises(ValueError, match="n_members"):
        check_main(["make", str(tmp_path / "bad"), "--detectors", "ae(n_members=0)"])


def test_int8_versus_fp32_reports_what_the_two_artifacts_score(table_frame, tmp_path):
    from aeguard.core.metrics import roc_auc
    from aeguard.edge.export_cli import int8_versus_fp32

    X, _ = table_frame
    y = (np.arange(len(X)) % 7 == 0).astype(int)
    detector = registry.create("ae", random_state=0, **fast_params(registry.get("ae").cls)).fit(X)
    row = int8_versus_fp32(detector, X, y, tmp_path, agree_on=("class",))  # ae has no class output
    a, b = load_artifact(tmp_path / "fp32").score(X), load_artifact(tmp_path / "int8").score(X)
    assert read_manifest(tmp_path / "int8")["graph"]["variant"] == "int8"
    assert row["roc_auc_fp32"] == round(roc_auc(y, a.score), 4) and row["roc_auc_int8"] == round(roc_auc(y, b.score), 4)
    assert abs(row["delta"] - (roc_auc(y, b.score) - roc_auc(y, a.score))) < 1e-4
    assert row["label_agreement"] == round(float(np.mean(a.label == b.label)), 4)
    assert "class_agreement" not in row and 0 < row["size_ratio"] < 1
