"""Artifacts: every exportable detector x export variant, parity with torch, and refusal of bad artifacts."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest

from aeguard.core import registry
from aeguard.core.artifact import ArtifactError, load_artifact, read_manifest
from aeguard.core.export import VARIANTS
from conftest import fast_params

EXPORTABLE = sorted(name for name, rec in registry.detectors().items() if rec.exports_onnx)


@pytest.fixture(scope="module")
def fitted(table_frame):
    frame, _ = table_frame
    out = {}
    for name in EXPORTABLE:
        cls = registry.get(name).cls
        out[name] = registry.create(name, random_state=0, **fast_params(cls)).fit(frame)
    return out


@pytest.fixture(scope="module")
def artifacts(fitted, tmp_path_factory):
    root = tmp_path_factory.mktemp("artifacts")
    return {(name, variant): det.save_artifact(root / f"{name}-{variant}", variant=variant)
            for name, det in fitted.items() for variant in VARIANTS}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", EXPORTABLE)
def test_onnx_matches_torch(name, variant, fitted, artifacts, table_frame):
    frame, _ = table_frame
    det, model = fitted[name], load_artifact(artifacts[name, variant])
    torch_out = det.score_output(frame)
    onnx_out = model.score(frame)
    rel = np.abs(onnx_out.score - torch_out.score) / np.maximum(np.abs(torch_out.score), 1e-12)
    assert rel.max() <= 1e-4, f"max relative error {rel.max():.3g}"
    np.testing.assert_allclose(onnx_out.contrib, torch_out.contrib, rtol=1e-4, atol=1e-5)
    for comp, values in torch_out.components.items():
        np.testing.assert_allclose(onnx_out.components[comp], values, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(onnx_out.label, det.predict(frame))
    np.testing.assert_allclose(np.column_stack([1 - onnx_out.probability, onnx_out.probability]),
                               det.predict_proba(frame), atol=1e-5)
    np.testing.assert_allclose(model.explain(frame).to_numpy(), det.explain(frame).to_numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", EXPORTABLE)
def test_manifest_describes_the_artifact(name, variant, fitted, artifacts, table_frame):
    frame, _ = table_frame
    path = artifacts[name, variant]
    manifest = read_manifest(path)
    det = fitted[name]
    assert manifest["detector"]["name"] == name
    assert manifest["detector"]["params"]["random_state"] == 0
    assert manifest["features"]["names"] == list(frame.columns)
    assert manifest["threshold"] == pytest.approx(det.threshold_)
    assert manifest["calibration"]["method"] == "linear"
    assert manifest["training"]["fingerprint"]["n_rows"] == len(frame)
    assert {"numpy", "torch", "onnx"} <= set(manifest["versions"])
    assert manifest["graph"]["variant"] == variant
    assert manifest["graph"]["outputs"][:2] == ["score", "contrib"]
    graph = onnx.load(str(path / "model.onnx"))
    opsets = {o.domain: o.version for o in graph.opset_import}
    assert opsets[""] == manifest["graph"]["opset"] == (17 if variant == "legacy" else 18)
    assert [o.name for o in graph.graph.output][:2] == ["score", "contrib"]
    assert not list(path.glob("*.pkl")) and not list(path.glob("*.pt"))


def test_contamination_override_uses_stored_quantiles(fitted, artifacts, table_frame):
    frame, _ = table_frame
    det = fitted["ae"]
    model = load_artifact(artifacts["ae", "fp32"])
    for rate in (0.02, 0.1, 0.25):
        det.set_threshold(contamination=rate)
        assert model.threshold_for(contamination=rate) == pytest.approx(det.threshold_, rel=1e-2)
    det.set_threshold(contamination=0.1)
    assert model.score(frame, threshold=1e12).label.sum() == 0


@pytest.fixture()
def copy_of(artifacts, tmp_path):
    counter = iter(range(100))

    def make(name="ae", variant="fp32"):
        dst = tmp_path / f"{name}-{variant}-copy{next(counter)}"
        shutil.copytree(artifacts[name, variant], dst)
        return dst
    return make


def test_changed_byte_in_graph_is_refused(copy_of):
    path = copy_of()
    data = bytearray((path / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (path / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum mismatch for model.onnx"):
        load_artifact(path)


def test_edited_manifest_is_refused(copy_of):
    path = copy_of()
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["threshold"] = 0.0
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="modified after export"):
        load_artifact(path)


def test_incompatible_or_incomplete_artifacts_are_refused(copy_of, tmp_path):
    from aeguard.core.artifact import seal_manifest

    path = copy_of()
    manifest = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps(seal_manifest({**manifest, "format_version": 99})))
    with pytest.raises(ArtifactError, match="format version 99 is not supported"):
        load_artifact(path)
    path = copy_of()
    widened = {**manifest, "features": {**manifest["features"], "n_features": 7,
                                        "names": manifest["features"]["names"] + ["extra"]}}
    (path / "manifest.json").write_text(json.dumps(seal_manifest(widened)))
    with pytest.raises(ArtifactError, match="mismatched artifact: graph takes 6 features"):
        load_artifact(path)
    path = copy_of()
    (path / "model.onnx").unlink()
    with pytest.raises(ArtifactError, match="artifact file missing: model.onnx"):
        load_artifact(path)
    with pytest.raises(ArtifactError, match="not a folder"):
        load_artifact(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="manifest.json is missing"):
        load_artifact(tmp_path / "empty")


def test_scoring_input_is_validated(artifacts, table_frame):
    frame, _ = table_frame
    model = load_artifact(artifacts["ae", "fp32"])
    with pytest.raises(ValueError, match="missing feature column"):
        model.score(frame.drop(columns="sensor_0"))
    bad = frame.head(3).copy()
    bad.iloc[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN in row 1, feature 'sensor_2'"):
        model.score(bad)
    np.testing.assert_allclose(model.score(frame.to_numpy()).score, model.score(frame).score)


def test_inexpressible_option_cannot_be_saved(table, tmp_path):
    det = registry.create("hbos", random_state=0, params={"n_bins": "auto"}).fit(table[0])
    with pytest.raises(ArtifactError, match="hbos option n_bins='auto'"):
        det.save_artifact(tmp_path / "hbos")
    assert not (tmp_path / "hbos").exists()


def test_refuses_to_overwrite_a_foreign_folder(fitted, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ArtifactError, match="refusing to overwrite"):
        fitted["ae"].save_artifact(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
