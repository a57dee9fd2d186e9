"""`cbnet` (CBNet-style converting AE + lightweight classifier): real training on small data, real onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aeguard.core import registry
from aeguard.core.artifact import load_artifact, read_manifest
from aeguard.core.metrics import roc_auc
from aeguard.core.params import ParamError
from aeguard.edge.variants import export_variant, spearman
from aeguard.plugins.cbnet.detector import CBNetDetector

FAST = {"epochs": 30, "epochs_per_step": 10, "random_state": 0}


def blobs(n_per: int = 120, d: int = 5, seed: int = 0):
    """Three separated Gaussian classes (the normal data, with class codes) and scattered outliers."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 6, size=(3, d))
    X = np.vstack([c + rng.standard_normal((n_per, d)) for c in centres])
    classes = np.repeat(np.array(["a", "b", "c"]), n_per)
    outliers = rng.uniform(-14, 14, size=(20, d))
    return X, classes, outliers


@pytest.fixture(scope="module")
def data():
    return blobs()


@pytest.fixture(scope="module")
def given(data):
    X, classes, _ = data
    return CBNetDetector(**FAST).fit(X, classes=classes)


def test_given_classes_train_f_and_the_class_component_is_int64(given, data):
    X, classes, outliers = data
    info = read_info(given)
    assert info["classes"]["source"] == "given" and info["classes"]["n_outputs"] == 3
    out = given.score_output(X)
    assert out.components["class"].dtype == np.int64
    # the nearest prototype's class is the given class of (nearly) every normal row
    assert (given.class_labels_[out.components["class"]] == classes).mean() > 0.9
    scores = given.decision_function(np.vstack([X, outliers]))
    # medoid representatives (the default) on these clean blobs: ~0.76; lowest-entropy ones ~0.98 (docs/cbnet.md)
    assert roc_auc(np.r_[np.zeros(len(X)), np.ones(len(outliers))], scores) > 0.7
    assert info["component_scales"]["measured_on"] == "hold-out" and info["component_scales"]["n_rows"] == 60


def read_info(det):
    return det.manifest_extra()


def test_explain_sums_to_the_score_and_components_are_as_documented(given, data):
    X, _, outliers = data
    rows = np.vstack([X[:10], outliers[:5]])
    out = given.score_output(rows)
    np.testing.assert_allclose(given.explain(rows).sum(axis=1), out.score, rtol=1e-5)
    s = given.component_scales_
    np.testing.assert_allclose(out.score, sum(out.components[k] / s[k] for k in ("s_conv", "s_ent", "s_input")),
                               rtol=1e-5)
    # s_input: the standardized input's distance to the prototype its conversion lands on
    z = given.standardize_(torch.from_numpy(rows.astype(np.float32))).numpy()
    R = given.model_.nearest.prototypes.numpy()
    y = given.model_.convert(torch.from_numpy(z)).detach().numpy()
    chosen = R[np.argmin(((y[:, None] - R[None]) ** 2).sum(2), axis=1)]
    np.testing.assert_allclose(out.components["s_input"], ((z - chosen) ** 2).sum(1), rtol=1e-4)
    spec = CBNetDetector(components="conv+ent", **FAST).fit(data[0], classes=data[1]).score_output(rows)
    parts = spec.components
    np.testing.assert_allclose(spec.score, parts["s_conv"] / s["s_conv"] + parts["s_ent"] / s["s_ent"], rtol=1e-5)
    assert (out.components["s_ent"] >= 0).all() and (out.components["s_ent"] <= np.log(3) + 1e-5).all()


def test_onnx_and_int8_match_torch_including_the_class(given, data, tmp_path):
    X, _, outliers = data
    rows = np.vstack([X, outliers])
    fp32 = given.save_artifact(tmp_path / "fp32")
    torch_out = given.score_output(rows)
    onnx_out = load_artifact(fp32).score(rows)
    np.testing.assert_allclose(onnx_out.score, torch_out.score, rtol=1e-4)
    np.testing.assert_array_equal(onnx_out.components["class"], torch_out.components["class"])
    assert onnx_out.components["class"].dtype == np.int64
    manifest = read_manifest(fp32)
    assert manifest["graph"]["fp32_nodes"], "the prototype distances are declared FP32"
    int8 = export_variant(fp32, tmp_path / "int8", int8=True)
    q = load_artifact(int8).score(rows)
    assert spearman(q.score, torch_out.score) > 0.9
    assert (q.components["class"] == torch_out.components["class"]).mean() > 0.95


def test_pseudo_classes_by_kmeans_and_auto(data):
    X, classes, _ = data
    fixed = CBNetDetector(n_classes=3, **FAST).fit(X)
    assert fixed.classes_info_["source"] == "k-means" and fixed.classes_info_["n_classes"] == 3
    codes = fixed.score_output(X).components["class"]
    # the pseudo-classes recover the three blobs (up to naming)
    assert all(len(np.unique(codes[classes == c])) == 1 for c in "abc") and len(np.unique(codes)) == 3
    auto = CBNetDetector(n_classes="auto", **FAST).fit(X)
    assert auto.classes_info_["n_classes"] == 3 and max(auto.classes_info_["silhouette"].values()) > 0.25
    blob = np.random.default_rng(1).standard_normal((200, 4))
    assert CBNetDetector(**FAST).fit(blob).classes_info_["n_classes"] == 1, "no structure: one class"


def test_stage_two_trains_g_with_f_frozen(data):
    X, classes, _ = data
    seen = {}

    class Spy(CBNetDetector):
        def _conversion_pairs(self, model, data):  # runs when stage 2 starts, after f is trained
            seen["f"] = {k: v.clone() for k, v in model.classifier.state_dict().items()}
            seen["g"] = {k: v.clone() for k, v in model.output.state_dict().items()}
            return super()._conversion_pairs(model, data)

    det = Spy(**FAST).fit(X, classes=classes)
    for k, v in det.model_.classifier.state_dict().items():
        torch.testing.assert_close(v, seen["f"][k], rtol=0, atol=0)
    assert any(not torch.equal(v, seen["g"][k]) for k, v in det.model_.output.state_dict().items())
    stages = det.history_["stages"]
    assert [s["stage"] for s in stages] == ["classify", "convert"]
    assert stages[1]["frozen_parameters"] == sum(p.numel() for p in det.model_.classifier.parameters())
    # balanced pairs: every hard row plus as many easy rows of its class
    assert stages[1]["n_train"] == sum(2 * e["n_hard"] if e["n_hard"] else e["n_easy"] for e in det.easy_sets_)


def test_options_medoid_faithful_components_and_intra_class(data):
    X, classes, _ = data
    base = CBNetDetector(representative="lowest_entropy", **FAST).fit(X, classes=classes)
    medoid = CBNetDetector(**FAST).fit(X, classes=classes)
    assert medoid.representative == "medoid"
    assert [e["representative_row"] for e in medoid.easy_sets_] != [e["representative_row"] for e in base.easy_sets_]
    faithful = CBNetDetector(faithful=True, easy_threshold=1e-3, **FAST).fit(X, classes=classes)
    assert "fixed entropy threshold" in faithful.manifest_extra()["easy_rule"]
    conv = CBNetDetector(components="conv", **FAST).fit(X, classes=classes).score_output(X)
    np.testing.assert_allclose(conv.score, conv.components["s_conv"] / conv.components["s_conv"].dtype.type(
        CBNetDetector(components="conv", **FAST).fit(X, classes=classes).component_scales_["s_conv"]), rtol=1e-5)
    split = CBNetDetector(intra_class_clusters=2, **FAST).fit(X, classes=classes)
    assert split.classes_info_["n_outputs"] == 6 and split.classes_info_["n_classes"] == 3
    assert set(np.unique(split.score_output(X).components["class"])) <= {0, 1, 2}


def test_use_classes_false_ignores_given_classes(data):
    X, classes, _ = data
    det = CBNetDetector(use_classes=False, n_classes=3, **FAST).fit(X, classes=classes)
    assert det.classes_info_["source"] == "k-means"
    assert registry.build_detector("cbnet", {"use_classes": "false"}).use_classes is False


def test_one_class_representative_is_the_medoid_not_the_first_row():
    """With one class every row has entropy 0: the lowest-entropy rule ties on every row and must not fall back
    to row order."""
    rng = np.random.default_rng(1)
    X = np.vstack([rng.uniform(-6, 6, size=(1, 4)) + 8, rng.standard_normal((199, 4))])  # row 0: far off
    det = CBNetDetector(n_classes="auto", representative="lowest_entropy", **FAST).fit(X)
    assert det.classes_info_["n_classes"] == 1
    assert det.easy_sets_[0]["representative_row"] != 0


@pytest.mark.parametrize(("param", "value"), [("n_classes", 1), ("n_classes", "many"), ("representative", "mean"),
                                              ("easy_percentile", 0), ("components", "all"), ("min_steps", 0)])
def test_bad_values_are_refused_naming_the_parameter(param, value):
    with pytest.raises(ParamError, match=param):
        registry.build_detector("cbnet", {param: value})
    with pytest.raises(ValueError, match=param):
        CBNetDetector(**{param: value}).fit(np.random.default_rng(0).standard_normal((30, 3)))


def test_record_is_honest():
    rec = registry.get("cbnet")
    assert rec.accepts_classes and not rec.mss_compatible and rec.exports_onnx
    assert tuple(rec.modalities) == CBNetDetector.modalities == ("tabular", "image")
    assert registry.build_detector("cbnet", {"n_classes": "auto"}).n_classes == "auto"
    assert registry.build_detector("cbnet", {"n_classes": "4"}).n_classes == 4


def test_images_use_the_branch_classifier_and_export(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 255, size=(2, 1, 12, 12))
    X = np.clip(np.concatenate([b + rng.normal(0, 20, size=(60, 1, 12, 12)) for b in base]), 0, 255)
    X = X.astype(np.uint8)
    det = CBNetDetector(**FAST).fit(X, classes=np.repeat([0, 1], 60))
    assert type(det.model_.classifier).__name__ == "BranchClassifier"
    assert det.model_.output.keep_fp32 and not det.model_.encoder.keep_fp32  # the wide encoder stays INT8
    noise = rng.uniform(0, 255, size=(10, 1, 12, 12)).astype(np.uint8)
    out = det.score_output(np.concatenate([X[:20], noise]))
    assert out.contrib.shape == (30, 144)
    model = load_artifact(det.save_artifact(tmp_path / "img"))
    onnx_out = model.score(np.concatenate([X[:20], noise]))
    np.testing.assert_allclose(onnx_out.score, out.score, rtol=1e-4)
    np.testing.assert_array_equal(onnx_out.components["class"], out.components["class"])


def test_training_cache_shares_training_between_component_variants(data, tmp_path, monkeypatch):
    """``components`` and ``scale`` are scoring parameters: a cached training loads prototypes and easy sets
    and scores exactly as a fresh fit with the same parameters."""
    X, classes, outliers = data
    rows = np.vstack([X, outliers])
    fresh = CBNetDetector(components="conv", **FAST).fit(X, classes=classes)
    monkeypatch.setenv("AEGUARD_TRAIN_CACHE", str(tmp_path))
    first = CBNetDetector(**FAST).fit(X, classes=classes)
    hit = CBNetDetector(components="conv", **FAST).fit(X, classes=classes)
    assert first.history_["cache"] == "miss" and hit.history_["cache"] == "hit"
    assert hit.easy_sets_ == fresh.easy_sets_
    np.testing.assert_allclose(hit.decision_function(rows), fresh.decision_function(rows), rtol=1e-6)


def test_int8_keeps_the_converter_fp32_so_labels_survive_a_near_constant_g(tmp_path):
    """One class (a blob): g is close to a constant map and normal rows' s_conv is far below INT8 rounding, so an
    INT8 g would reorder them; g is declared FP32 for tables (only its output layer for images, tested above)."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((400, 6))
    rows = np.vstack([X, rng.uniform(-5, 5, size=(40, 6))])
    det = CBNetDetector(**FAST).fit(X)
    assert det.classes_info_["n_classes"] == 1
    fp32 = det.save_artifact(tmp_path / "fp32")
    int8 = export_variant(fp32, tmp_path / "int8", int8=True)
    assert {"model.encoder", "model.output", "model.nearest"} <= set(read_manifest(int8)["graph"]["fp32_scopes"])
    a, b = load_artifact(fp32).score(rows), load_artifact(int8).score(rows)
    assert (a.label == b.label).mean() > 0.99
    np.testing.assert_allclose(b.components["s_conv"], a.components["s_conv"], rtol=1e-3, atol=1e-6)
