"""`sae_ood`: TopK SAE training constraints, code-space scoring, leave-self-out, export and the scoring paths."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
import torch

from aeguard.core import registry
from aeguard.core.artifact import load_artifact, read_manifest
from aeguard.plugins.sae_ood.detector import geometric_median
from conftest import make_table

FAST = {"epochs": 30, "epochs_per_step": 10}
EDGE = str(Path(sys.executable).parent / "aeguard-edge")


def skewed(n: int = 240, d: int = 8, seed: int = 1) -> np.ndarray:
    """Skewed, tie-free rows: the geometric median differs clearly from the mean."""
    rng = np.random.default_rng(seed)
    return rng.lognormal(size=(n, d)) @ rng.standard_normal((d, d))


@pytest.fixture(scope="module")
def table():
    return make_table()


@pytest.fixture(scope="module")
def fitted(table):
    X, _ = table
    return registry.create("sae_ood", random_state=0, ref_cap=120, **FAST).fit(X)


def test_training_keeps_gao_constraints_and_counts_training_rows_only():
    """Unit-norm decoder columns, b_pre initialised at the geometric median, counters over training rows only."""
    X = skewed()
    det = registry.create("sae_ood", random_state=0, epochs=20, epochs_per_step=5, batch_size=64).fit(X)
    cols = det.model_.decoder.detach().norm(dim=0).numpy()
    np.testing.assert_allclose(cols, 1.0, atol=1e-5)
    # b_pre: zero subgradient of the sum of distances over the (standardized) training rows
    z_train = det.standardize_(torch.from_numpy(X.astype(np.float32))).numpy().astype(np.float64)
    n_train, n_val = det.split_["n_train"], det.split_["n_val"]
    assert n_val == round(len(X) / 6) and n_train + n_val == len(X)
    m = det.pre_bias_.astype(np.float64)
    # the training split the detector drew (core.deep: the fit seed's first permutation)
    rng = np.random.default_rng(det.seed_)
    perm = rng.permutation(len(X))
    train = np.sort(perm[n_val:])
    pts = z_train[train]
    unit = (pts - m) / np.linalg.norm(pts - m, axis=1, keepdims=True)
    assert np.linalg.norm(unit.mean(axis=0)) < 1e-3
    assert np.linalg.norm(pts.mean(axis=0) - m) > 0.05  # not the mean
    np.testing.assert_allclose(geometric_median(pts), m, atol=1e-4)
    # dead-latent counters: every training row once per epoch, no validation row (validation ran every 5 epochs)
    assert det.rows_counted_ == 20 * n_train
    assert det.history_["n_val"] == n_val and det.since_fired_.max() <= det.rows_counted_
    assert (det.since_fired_ >= 0).all()


def test_codes_are_topk_sparse_and_nonnegative(fitted, table):
    X, _ = table
    out = fitted.score_output(X)
    code = out.components["code"]
    assert code.shape == (len(X), fitted.n_latents_) == (len(X), 8 * X.shape[1])
    assert fitted.k_ == round(X.shape[1] / 4) and (code >= 0).all()
    assert ((code > 0).sum(axis=1) <= fitted.k_).all() and (code > 0).sum(axis=1).max() == fitted.k_
    wide = registry.create("sae_ood", random_state=0, alpha=2.0, k=100, **FAST).fit(X)
    assert wide.k_ == X.shape[1] // 2  # tabular k clamped to d/2
    assert ((wide.score_output(X).components["code"] > 0).sum(axis=1) <= 2 * wide.k_).all()


def test_fit_scores_leave_their_own_reference_code_out(fitted, table):
    """Default ``knn_metric="euclidean"``: mean Euclidean distance to the K nearest raw reference codes, a
    reference row leaving its own code out."""
    X, _ = table
    det = fitted
    assert det.knn_metric == "euclidean" and det.reference_.capped and det.reference_.n_ref == 120
    code = det.score_output(X).components["code"].astype(np.float64)
    refs = det.model_.knn.refs.numpy().astype(np.float64)
    dist = np.sqrt(((code[:, None, :] - refs[None]) ** 2).sum(-1))
    own = det._own_ref
    assert (own >= 0).sum() == 120
    dist[own >= 0, own[own >= 0]] = np.inf
    knn = np.sort(dist, axis=1)[:, :det.n_neighbors_].mean(axis=1)
    new = det.score_output(X)
    expected = new.score + (knn - new.components["s_knn"]) / det.scales_["knn"]
    np.testing.assert_allclose(det.decision_scores_, expected, rtol=1e-4, atol=1e-5)
    mine = own >= 0
    assert (det.decision_scores_[mine] > new.score[mine]).mean() > 0.9  # a new-point pass counts itself
    np.testing.assert_allclose(det.decision_scores_[~mine], new.score[~mine], rtol=1e-6)


def test_explain_sums_to_score_and_components_combine(fitted, table):
    X, _ = table
    out = fitted.score_output(X)
    np.testing.assert_allclose(fitted.explain(X).to_numpy().sum(axis=1), out.score, rtol=1e-5, atol=1e-6)
    c, s = out.components, fitted.scales_
    np.testing.assert_allclose(out.score, c["s_rec"] / s["rec"] + c["s_knn"] / s["knn"], rtol=1e-5, atol=1e-6)
    assert set(c) == {"s_rec", "s_knn", "s_rare", "code"}
    assert fitted.decision_function(X)[np.argsort(-out.score)[:1]] > fitted.threshold_


def test_components_are_selectable_and_classes_give_s_cap(table):
    X, _ = table
    classes = np.where(X[:, 0] > np.median(X[:, 0]), "hi", "lo")
    det = registry.create("sae_ood", random_state=0, score_components="knn+cap", **FAST).fit(X, classes=classes)
    out = det.score_output(X)
    assert "s_cap" in out.components and ((out.components["s_cap"] >= 0) & (out.components["s_cap"] <= 2)).all()
    np.testing.assert_allclose(out.score, out.components["s_knn"] / det.scales_["knn"]
                               + out.components["s_cap"] / det.scales_["cap"], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="needs class labels"):
        registry.create("sae_ood", score_components="rec+cap", **FAST).fit(X)
    with pytest.raises(ValueError, match="score_components"):
        registry.create("sae_ood", score_components="rec+nope", **FAST).fit(X)
    with pytest.raises(ValueError, match="k must be"):
        registry.create("sae_ood", k=0).fit(X)
    with pytest.raises(ValueError, match="input_mode"):
        registry.create("sae_ood", input_mode="pixels").fit(X)


def test_onnx_graph_has_topk_scatter_and_reference_constants(fitted, table, tmp_path):
    X, _ = table
    art = fitted.save_artifact(tmp_path / "sae")
    model = onnx.load(str(art / "model.onnx"))
    ops = [n.op_type for n in model.graph.node]
    assert {"TopK", "Relu", "ScatterElements"} <= set(ops) and ops.count("TopK") == 2  # code and kNN
    shapes = {tuple(t.dims) for t in model.graph.initializer}
    # reference codes (the exporter may store them transposed) and their inverse norms
    assert {(120, fitted.n_latents_), (fitted.n_latents_, 120)} & shapes and (120,) in shapes
    manifest = read_manifest(art)
    assert manifest["extra"]["reference"]["n_ref"] == 120 and manifest["extra"]["sae"]["k"] == fitted.k_
    fp32 = manifest["graph"]["fp32_nodes"]
    assert any("topk" in n for n in fp32) and any("linear" in n or "matmul" in n for n in fp32)
    loaded = load_artifact(art)
    onnx_out, torch_out = loaded.score(X), fitted.score_output(X)
    np.testing.assert_allclose(onnx_out.score, torch_out.score, rtol=1e-4)
    np.testing.assert_allclose(onnx_out.components["code"], torch_out.components["code"], rtol=1e-4, atol=1e-6)
    assert loaded.component_names == ["s_rec", "s_knn", "s_rare"] and loaded.vector_output_names == ["code"]


def test_embedding_mode_layer_norm_parity(tmp_path):
    """Backbone-embedding input: no per-feature standardization, Gao's per-sample layer norm in the graph."""
    rng = np.random.default_rng(3)
    X = np.abs(rng.standard_normal((150, 40)) @ rng.standard_normal((40, 40))).astype(np.float64)
    det = registry.create("sae_ood", input_mode="embedding", random_state=0, **FAST).fit(X)
    assert det._use_layer_norm() and det.k_ == 10 and float(det.standardize_.scale.max()) == 1.0
    assert det.history_["stages"][0]["n_train"] == 125
    shifted = det.decision_function(X * 3.0 + 1.0)  # layer norm: invariant to a per-row affine change
    np.testing.assert_allclose(shifted, det.decision_function(X), rtol=1e-3, atol=1e-4)
    art = load_artifact(det.save_artifact(tmp_path / "emb"))
    np.testing.assert_allclose(art.score(X).score, det.decision_function(X), rtol=1e-4)


def test_edge_and_http_cope_with_the_code_output(fitted, table, tmp_path):
    """--components writes the per-row components only; HTTP gives the code as a list / fixed-size list."""
    from aeguard.edge.variants import export_variant
    from aeguard.serving.inputs import Options
    from aeguard.serving.scoring import Scored, arrow_response, json_response
    from aeguard.serving.store import load_models

    X, _ = table
    art = fitted.save_artifact(tmp_path / "sae")
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
    frame.to_csv(tmp_path / "d.csv", index=False)
    out = subprocess.run([EDGE, "score", str(art), str(tmp_path / "d.csv"), "--components"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "score,label,probability,s_rec,s_knn,s_rare"
    info = subprocess.run([EDGE, "info", str(art)], capture_output=True, text=True, timeout=120)
    assert info.returncode == 0 and "code" in info.stdout
    model = load_models([f"sae={art}"])[0]
    scored = Scored(model, model.artifact.run(X[:3]), 1.0, Options(components=True))
    rows = json.loads(json_response(scored))["results"]
    assert len(rows[0]["components"]["code"]) == fitted.n_latents_
    import pyarrow as pa

    table = pa.ipc.open_stream(arrow_response(scored)).read_all()
    assert table.column("components.code").type.list_size == fitted.n_latents_
    int8 = load_artifact(export_variant(art, tmp_path / "int8", int8=True))
    from aeguard.edge.variants import spearman

    assert spearman(int8.score(X).score, load_artifact(art).score(X).score) > 0.9


def test_mss_wraps_s_rec(table):
    X, _ = table
    plain = registry.create("sae_ood", random_state=0, **FAST).fit(X)
    shifted = registry.create("sae_ood", random_state=0, mss=True, **FAST).fit(X)
    a, b = plain.score_output(X).components, shifted.score_output(X).components
    np.testing.assert_allclose(a["s_knn"], b["s_knn"], rtol=1e-5)  # the code path is unchanged
    assert not np.allclose(a["s_rec"], b["s_rec"])
    assert np.isfinite(shifted.decision_scores_).all() and "mss" in shifted.manifest_extra()


def test_cosine_code_knn_option_matches_numpy_and_onnx(table, tmp_path):
    """``knn_metric="cosine"`` (the spec's s_knn): mean cosine distance to the K nearest reference codes (1 for a
    zero code), leave-self-out on the fit set, in the graph too."""
    X, _ = table
    det = registry.create("sae_ood", random_state=0, knn_metric="cosine", ref_cap=120, **FAST).fit(X)
    out = det.score_output(X)
    code = out.components["code"].astype(np.float64)
    refs = det.model_.knn.refs.numpy().astype(np.float64)
    cn = code / np.maximum(np.linalg.norm(code, axis=1, keepdims=True), 1e-30)
    rn = refs / np.maximum(np.linalg.norm(refs, axis=1, keepdims=True), 1e-30)
    sims = cn @ rn.T
    expected = 1 - np.sort(sims, axis=1)[:, ::-1][:, :det.n_neighbors_].mean(axis=1)
    expected[np.linalg.norm(code, axis=1) == 0] = 1.0
    np.testing.assert_allclose(out.components["s_knn"], expected, rtol=1e-4, atol=1e-5)
    own = det._own_ref
    sims[own >= 0, own[own >= 0]] = -np.inf
    knn = 1 - np.sort(sims, axis=1)[:, ::-1][:, :det.n_neighbors_].mean(axis=1)
    knn[np.linalg.norm(code, axis=1) == 0] = 1.0
    np.testing.assert_allclose(det.decision_scores_, out.score + (knn - out.components["s_knn"]) / det.scales_["knn"],
                               rtol=1e-5, atol=1e-6)
    art = load_artifact(det.save_artifact(tmp_path / "cosine"))
    np.testing.assert_allclose(art.score(X).score, out.score, rtol=1e-4, atol=1e-6)
    assert read_manifest(tmp_path / "cosine")["extra"]["sae"]["knn_metric"] == "cosine"
    with pytest.raises(ValueError, match="knn_metric"):
        registry.create("sae_ood", knn_metric="manhattan").fit(X)


def test_scoring_variants_share_one_training(table, tmp_path, monkeypatch):
    """With the training cache on, score_components / knn_metric / ref_trim variants reuse one trained SAE and
    score like a fresh training; a training parameter (k) trains again."""
    X, _ = table
    monkeypatch.setenv("AEGUARD_TRAIN_CACHE", str(tmp_path))
    first = registry.create("sae_ood", random_state=0, **FAST).fit(X)
    variant = {"score_components": "rec", "knn_metric": "cosine", "ref_trim": True}
    second = registry.create("sae_ood", random_state=0, **variant, **FAST).fit(X)
    assert first.history_["cache"] == "miss" and second.history_["cache"] == "hit"
    monkeypatch.delenv("AEGUARD_TRAIN_CACHE")
    fresh = registry.create("sae_ood", random_state=0, **variant, **FAST).fit(X)
    np.testing.assert_allclose(second.decision_function(X), fresh.decision_function(X), rtol=1e-5, atol=1e-6)
    monkeypatch.setenv("AEGUARD_TRAIN_CACHE", str(tmp_path))
    assert registry.create("sae_ood", random_state=0, k=1, **FAST).fit(X).history_["cache"] == "miss"


@pytest.mark.parametrize("params", [{}, {"knn_metric": "cosine"}, {"input_mode": "embedding"},
                                    {"score_components": "rec+knn+cap"}])
def test_legacy_opset17_export_matches_fp32(params, tmp_path):
    """The legacy (opset 17) variant converts in every mode (no ReduceMean / ReduceMax in the graph) and scores
    like the opset-18 graph."""
    from aeguard.edge.variants import export_variant

    X = np.abs(skewed(200, 8))
    det = registry.create("sae_ood", random_state=0, **params, **FAST)
    if "cap" in params.get("score_components", ""):
        det.fit(X, classes=(X[:, 0] > np.median(X[:, 0])).astype(int))
    else:
        det.fit(X)
    fp32 = det.save_artifact(tmp_path / "fp32")
    legacy = load_artifact(export_variant(fp32, tmp_path / "legacy", legacy=True))
    assert legacy.manifest["graph"]["opset"] == 17
    np.testing.assert_allclose(legacy.score(X).score, load_artifact(fp32).score(X).score, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(load_artifact(fp32).score(X).score, det.decision_function(X), rtol=1e-4, atol=1e-6)


def test_size_rules_relative_to_d():
    """``k="d/8"`` and ``n_latents="16d"``: one benchmark spec string per ablation on datasets of any width."""
    from aeguard.benchmark.protocol import parse_detector_spec

    X = skewed(120, 16)
    _, name, params = parse_detector_spec("sae_ood(k=d/8, n_latents=4d, epochs=2)")
    det = registry.create(name, random_state=0, **params).fit(X)
    assert (det.k_, det.n_latents_) == (2, 64)
    assert registry.create("sae_ood", random_state=0, k="d/2", epochs=2).fit(X).k_ == 8
    for bad in ("d/0", "x/8", "8x"):
        with pytest.raises(ValueError, match="k must be"):
            registry.create("sae_ood", k=bad).fit(X)


def test_raw_pixel_images_use_the_pixel_sizes_and_export(tmp_path):
    """Spec section 7 (a): images flattened, per-channel standardised in the graph, n_latents 1024, k 32."""
    from sklearn.datasets import load_digits

    imgs = load_digits().images[:200, None].astype(np.float64)  # (N, 1, 8, 8), values 0..16
    det = registry.create("sae_ood", random_state=0, epochs=5).fit(imgs, pixel_range=(0, 16))
    assert (det.n_latents_, det.k_) == (1024, 32)
    code = det.score_output(imgs).components["code"]
    assert code.shape == (200, 1024) and ((code > 0).sum(axis=1) <= 32).all()
    art = load_artifact(det.save_artifact(tmp_path / "img"))
    np.testing.assert_allclose(art.score(imgs).score, det.decision_function(imgs), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="input_mode"):
        registry.create("sae_ood", input_mode="embedding", epochs=2).fit(imgs, pixel_range=(0, 16))
