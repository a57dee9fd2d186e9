"""Core v2: data-aware construction, training stages with frozen parts, the split and class labels in the
hooks, reference sets, integer components and FP32-declared nodes, proven end to end by the third-party
``example-staged`` plugin (tests/example_plugin): trained for real, exported, parity-checked against torch,
served over HTTP and scored by ``aeguard-edge``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
import torch
from torch import nn

from aeguard.core import registry
from aeguard.core.artifact import load_artifact, read_manifest
from aeguard.core.base import BaseDetector, ScoreOutput
from aeguard.core.deep import FitData, Stage
from aeguard.core.reference import draw_reference
from aeguard.core.training import train_stages
from aeguard.plugins.ae.detector import AEDetector
from aeguard.plugins.apre.detector import APREDetector
from conftest import make_table

BIN = Path(sys.executable).parent


def _data(n: int = 60, d: int = 4, n_val: int = 0, seed: int = 0) -> FitData:
    z = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return FitData(z=z, train_idx=np.arange(n - n_val), val_idx=np.arange(n - n_val, n), seed=seed)


class _Quiet:
    """The two knobs train_stages reads from a detector."""

    device_ = "cpu"

    def _param(self, name, default):
        return default


def test_a_stage_trains_only_its_parameters_and_the_rest_stays_frozen():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 2), nn.Linear(2, 4))
    before = [p.detach().clone() for p in model.parameters()]
    loss = lambda m, z: ((m(z) - z) ** 2).mean()  # noqa: E731
    stage = Stage(name="decoder only", loss=loss, parameters=lambda m: m[1].parameters(), epochs=20, lr=0.05)
    history = train_stages(_Quiet(), model, [stage], _data())
    after = list(model.parameters())
    assert torch.equal(after[0], before[0]) and torch.equal(after[1], before[1])  # encoder frozen
    assert not torch.equal(after[2], before[2])  # decoder trained
    assert all(p.requires_grad for p in model.parameters())  # unfrozen again after the stage
    assert history["stages"][0]["frozen_parameters"] == 4 * 2 + 2


def test_stage_tensors_carry_per_row_targets_and_after_step_hooks_run():
    data = _data()
    targets = np.ones((len(data.z), 4), dtype=np.float32)
    calls = []
    model = nn.Linear(4, 4)
    stage = Stage(name="to ones", loss=lambda m, z, t: ((m(z) - t) ** 2).mean(), epochs=200, lr=0.05,
                  tensors=lambda d: (d.z_train, targets[d.train_idx]), after_step=lambda m: calls.append(1),
                  batch_size=16)
    train_stages(_Quiet(), model, [stage], data)
    assert len(calls) == 200 * 4  # one per optimiser step: 60 rows in batches of 16
    with torch.no_grad():
        np.testing.assert_allclose(model(torch.from_numpy(data.z)).numpy(), 1.0, atol=0.05)


def test_patience_is_counted_in_epochs_whatever_the_chunk():
    X = make_table()[0]
    for chunk, expected in ((7, 28), (4, 24)):  # lr ~ 0: best at the first check, stop 20 epochs later
        det = AEDetector(epochs=500, lr=1e-30, val_fraction=0.2, early_stopping=20, epochs_per_step=chunk,
                         random_state=0).fit(X)
        assert det.history_["stopped_early"] and det.history_["epochs_run"] == expected


def test_stage_settings_are_checked_with_the_stage_named():
    with pytest.raises(ValueError, match="stage 'bad': epochs must be an int >= 1"):
        train_stages(_Quiet(), nn.Linear(2, 2), [Stage(name="bad", loss=lambda m, z: z.sum(), epochs=0)], _data())


class _Recorder(AEDetector):
    def prepare(self, data):
        self.seen_ = {"prepare": (data.z_train.shape, None if data.z_val is None else data.z_val.shape)}

    def fit_after_training(self, model, data):
        self.train_val_ = (data.train_idx.copy(), data.val_idx.copy())


def test_the_split_reaches_the_hooks_apart_and_is_recorded(tmp_path):
    X = make_table()[0]
    det = _Recorder(epochs=5, val_fraction=0.25, random_state=1).fit(X)
    train_idx, val_idx = det.train_val_
    assert len(train_idx) + len(val_idx) == len(X) and not set(train_idx) & set(val_idx)
    assert det.seen_["prepare"] == ((len(train_idx), X.shape[1]), (len(val_idx), X.shape[1]))
    assert det.split_ == {"n_train": len(train_idx), "n_val": len(val_idx), "seed": 1, "val_fraction": 0.25}


def test_classes_only_for_detectors_that_accept_them(table):
    X = table[0]
    with pytest.raises(ValueError, match="does not accept class labels"):
        AEDetector(epochs=2).fit(X, classes=np.zeros(len(X)))
    with pytest.raises(ValueError, match="does not accept class labels"):
        registry.create("iforest").fit(X, classes=np.zeros(len(X)))


def test_every_record_states_what_its_class_enforces(example_plugin_installed):
    for name, record in registry.detectors().items():
        assert record.accepts_classes == record.cls.accepts_classes, name
    assert registry.get("example-staged").accepts_classes


def test_score_output_keeps_integer_components_integer():
    out = ScoreOutput.from_outputs({"score": np.zeros(3, np.float32), "contrib": np.zeros((3, 2), np.float32),
                                    "class": np.array([0, 2, 1]), "dist": np.ones(3, np.float32)})
    assert out.components["class"].dtype == np.int64 and out.components["dist"].dtype == np.float64


def test_the_one_metrics_module_equals_scikit_learn_with_ties():
    from scipy.stats import spearmanr
    from sklearn.metrics import average_precision_score, roc_auc_score

    from aeguard.core.metrics import average_precision, roc_auc, spearman

    rng = np.random.default_rng(0)
    y = rng.random(300) < 0.1
    scores = np.round(rng.standard_normal(300) + y, 1)  # many ties
    assert abs(roc_auc(y, scores) - roc_auc_score(y, scores)) < 1e-12
    assert abs(average_precision(y, scores) - average_precision_score(y, scores)) < 1e-12
    other = scores + np.round(rng.standard_normal(300), 1)
    assert abs(spearman(scores, other) - spearmanr(scores, other).statistic) < 1e-12


def test_reference_draw_caps_rows_and_bytes_and_maps_own_rows():
    draw = draw_reference(1000, 8, cap_rows=100, seed=3)
    assert draw.n_ref == 100 and draw.capped and np.all(np.diff(draw.rows) > 0)
    np.testing.assert_array_equal(draw.rows, draw_reference(1000, 8, cap_rows=100, seed=3).rows)
    own = draw.own_rows()
    assert (own >= 0).sum() == 100 and np.array_equal(own[draw.rows], np.arange(100))
    assert draw_reference(1000, 8, cap_rows=None, cap_bytes=8 * 4 * 50).n_ref == 50  # the byte cap
    assert draw_reference(10, 8, cap_rows=100).rows is None and draw_reference(10, 8).own_rows().tolist() == list(
        range(10))
    assert draw.manifest() == {"n_fit": 1000, "n_ref": 100, "capped": True, "cap_rows": 100,
                               "cap_bytes": 32 << 20, "bytes": 100 * 8 * 4, "seed": 3}
    with pytest.raises(ValueError, match="reference cap"):
        draw_reference(10, 2, cap_rows=1)


def test_apre_feature_major_cache_never_serves_a_stale_batch():
    """The old cache was keyed by ``data_ptr()``: a freed batch's memory comes back for the next one."""
    det = APREDetector()
    for _ in range(5):
        z = torch.randn(10000, 3)
        np.testing.assert_array_equal(det._feature_major(z).numpy(), z.t().numpy())
        del z
    X = np.random.default_rng(0).standard_normal((20000, 3))
    fitted = APREDetector(epochs=2, batch_size=10000, mss=False, val_fraction=0.0, random_state=0).fit(X)
    assert fitted.history_["epochs_run"] == 2 and np.isfinite(fitted.decision_scores_).all()


@pytest.fixture(scope="module")
def staged(example_plugin_installed, tmp_path_factory):
    X, y = make_table(n_inliers=300, n_outliers=15, d=6, seed=4)
    names = [f"s{i}" for i in range(X.shape[1])]
    frame = pd.DataFrame(X, columns=names)
    classes = np.where(X[:, 0] > np.median(X[:, 0]), "high", "low")
    det = registry.create("example-staged", ref_cap=64, random_state=0).fit(frame, classes=classes)
    root = tmp_path_factory.mktemp("staged")
    art = det.save_artifact(root / "art")
    csv = root / "data.csv"
    frame.to_csv(csv, index=False)
    return det, art, frame, y, csv


def test_staged_plugin_uses_every_capability(staged):
    det, art, frame, y, _ = staged
    assert [s["stage"] for s in det.history_["stages"]] == ["reconstruct", "classify"]
    reconstruct, classify = det.history_["stages"]
    n_autoencoder = sum(p.numel() for m in (det.model_.encoder, det.model_.decoder) for p in m.parameters())
    assert classify["frozen_parameters"] == n_autoencoder and reconstruct["frozen_parameters"] > 0
    assert list(det.class_labels_) == ["high", "low"]
    manifest = read_manifest(art)
    assert manifest["extra"]["reference"]["n_ref"] == 64 and manifest["extra"]["reference"]["capped"]
    assert manifest["extra"]["split"]["n_val"] == round(0.2 * len(frame))
    assert manifest["graph"]["fp32_nodes"] and manifest["graph"]["fp32_scopes"] == ["model.nearest"]
    np.testing.assert_allclose(det.median_, np.median(det.standardize_(torch.tensor(
        frame.to_numpy(np.float32)))[det._train_rows].numpy(), axis=0), rtol=1e-5, atol=1e-6)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(y, det.decision_scores_) > 0.9


def test_staged_artifact_matches_torch_with_an_integer_component(staged):
    det, art, frame, _, _ = staged
    torch_out = det.score_output(frame)
    onnx_out = load_artifact(art).score(frame)
    np.testing.assert_allclose(onnx_out.score, torch_out.score, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(onnx_out.components["nn_dist"], torch_out.components["nn_dist"], rtol=1e-4,
                               atol=1e-5)
    assert onnx_out.components["class"].dtype == np.int64
    np.testing.assert_array_equal(onnx_out.components["class"], torch_out.components["class"])
    assert set(np.unique(torch_out.components["class"])) == {0, 1}


def test_staged_fit_rows_leave_themselves_out_of_the_reference(staged):
    det, _, frame, _, _ = staged
    new_point_scores = det.decision_function(frame)
    kept = np.flatnonzero(det.reference_.own_rows() >= 0)
    kept_rows = det._train_rows[kept]
    assert np.all(det.decision_scores_[kept_rows] > new_point_scores[kept_rows])  # distance 0 was replaced
    others = np.setdiff1d(np.arange(len(frame)), kept_rows)
    np.testing.assert_allclose(det.decision_scores_[others], new_point_scores[others], rtol=1e-6)


def test_staged_int8_variant_keeps_the_declared_node_float(staged, tmp_path):
    from aeguard.edge.variants import export_variant

    _, art, frame, _, _ = staged
    int8 = export_variant(art, tmp_path / "int8", int8=True)
    declared = set(read_manifest(art)["graph"]["fp32_nodes"])
    nodes = {n.name: n.op_type for n in onnx.load(str(int8 / "model.onnx")).graph.node}
    assert [name for name in declared if nodes.get(name) == "MatMul"]  # the distance MatMul stays float
    assert "MatMulInteger" in nodes.values()
    scored = load_artifact(int8).score(frame)
    assert scored.components["class"].dtype == np.int64


def test_staged_artifact_served_over_http_and_by_aeguard_edge(staged, tmp_path):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("bentoml")
    from aeguard.serving.bench import LocalServer

    det, art, frame, _, csv = staged
    expected = load_artifact(art).score(frame.iloc[:20])
    server = LocalServer([f"staged={art}"])
    try:
        server.wait_ready()
        response = httpx.post(f"{server.url}/score", json={"rows": frame.iloc[:20].to_dict(orient="records"),
                                                            "components": True}, timeout=60)
    finally:
        server.stop()
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["components"]["class"] for r in results] == expected.components["class"].tolist()
    assert all(isinstance(r["components"]["class"], int) for r in results)
    np.testing.assert_allclose([r["score"] for r in results], expected.score, rtol=1e-5)
    out = subprocess.run([str(BIN / "aeguard-edge"), "score", str(art), str(csv), "--components"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    edge = pd.read_csv(pd.io.common.StringIO(out.stdout))
    assert list(edge.columns) == ["score", "label", "probability", "nn_dist", "class"]
    np.testing.assert_array_equal(edge["class"].to_numpy(), load_artifact(art).score(frame).components["class"])


class ClassChecker(BaseDetector):
    """Accepts classes and fails unless every fit row arrives with its own class (column 0 holds the class)."""

    accepts_classes = True

    def __init__(self, contamination=0.1, random_state=None):
        self.contamination = contamination
        self.random_state = random_state

    def _fit(self, X, y, classes=None):
        if classes is None or not np.array_equal(self.class_labels_[classes], X[:, 0].astype(int)):
            raise ValueError("classes did not arrive aligned with the fit rows")

    def _score(self, X):
        return ScoreOutput(np.abs(X).sum(axis=1), np.abs(X))


@pytest.fixture
def class_checker():
    from aeguard.core.hookspecs import hookimpl
    from aeguard.core.registry import DetectorRecord

    class Plugin:
        @hookimpl
        def aeguard_detectors(self):
            return [DetectorRecord(name="class-checker", target=f"{__name__}:ClassChecker",
                                   description="test", exports_onnx=False, accepts_classes=True)]

    plugin = Plugin()
    registry.register(plugin, name="class-checker-plugin")
    yield "class-checker"
    registry.plugin_manager().unregister(plugin)
    registry._records.cache_clear()


def test_benchmark_passes_a_datasets_classes_to_detectors_that_accept_them(class_checker, tmp_path):
    from aeguard.benchmark import make_split
    from aeguard.benchmark.cells import Cell, run_cell
    from aeguard.benchmark.protocol import split_indices

    rng = np.random.default_rng(0)
    y = (rng.random(200) < 0.1).astype(int)
    classes = rng.integers(0, 3, 200)
    X = np.column_stack([classes, rng.standard_normal((200, 3)) + 3 * y[:, None]])
    np.savez(tmp_path / "withclasses.npz", X=X, y=y, classes=classes)
    row = run_cell(Cell("withclasses", str(tmp_path / "withclasses.npz"), class_checker, seed=1))
    assert row["status"] == "ok", row["status"]
    np.savez(tmp_path / "noclasses.npz", X=X, y=y)
    assert "did not arrive" in run_cell(Cell("noclasses", str(tmp_path / "noclasses.npz"), class_checker,
                                             seed=1))["status"]
    assert run_cell(Cell("withclasses", str(tmp_path / "withclasses.npz"), "iforest", seed=1))["status"] == "ok"
    fit_idx, test_idx = split_indices(y, 1, fit_cap=50)
    X_fit, X_test, _, _ = make_split(X, y, 1, fit_cap=50)
    np.testing.assert_array_equal(X[fit_idx], X_fit)
    np.testing.assert_array_equal(X[test_idx], X_test)


def test_bench_train_reports_wall_and_cpu_ratios_for_the_stage_loop():
    from aeguard.core.overhead import measure_overhead

    result = measure_overhead("ae", rows=100, features=4, epochs=20, repeats=1)
    for key in ("ratio_to_torch", "cpu_ratio_to_torch"):
        assert set(result[key]) == {"torch", "lightning chunked", "lightning per-epoch"}
        assert result[key]["torch"] == 1.0 and all(v > 0 for v in result[key].values())


def test_baselines_and_deep_detectors_share_one_scaling_rule_constant_columns_included():
    X = make_table()[0]
    X[:, 2] = 7.0  # constant on the fit set
    deep = AEDetector(epochs=2, random_state=0).fit(X)
    base = registry.create("iforest", random_state=0).fit(X)
    np.testing.assert_allclose(deep.standardize_.scale.numpy(), base.scale_, rtol=1e-6)
    assert base.scale_[2] == 7.0 and deep.standardize_.scale[2] == 7.0


def test_ood_metrics_match_their_definitions_and_scikit_learn():
    from sklearn.metrics import average_precision_score, roc_curve

    from aeguard.core.metrics import aupr_in, fpr_at_tpr

    rng = np.random.default_rng(3)
    y = rng.random(400) < 0.3
    scores = rng.normal(size=400) + 1.5 * y
    assert abs(aupr_in(y, scores) - average_precision_score(~y, -scores)) < 1e-12
    # inliers positive, lower score = inlier: the first ROC point with TPR >= 0.95 gives the FPR
    fpr, tpr, _ = roc_curve(~y, -scores)
    assert fpr_at_tpr(y, scores) == pytest.approx(fpr[np.argmax(tpr >= 0.95)])
    assert fpr_at_tpr([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 0.0
    assert fpr_at_tpr([0, 0, 1, 1], [0.3, 0.4, 0.1, 0.2]) == 1.0
    with pytest.raises(ValueError, match="both outliers and inliers"):
        fpr_at_tpr([0, 0], [0.1, 0.2])
