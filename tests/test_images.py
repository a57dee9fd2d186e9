"""Images end to end: (N, C, H, W) and (N, H, W) arrays through fit, score, explain, the ONNX artifact, data files,
the CLI, HTTP, the edge runtime and the benchmark, on scikit-learn's bundled 8x8 digits (real images, no
download) and small made-up sets where a property needs one (a constant border)."""

from __future__ import annotations

import json
from functools import lru_cache

import numpy as np
import pytest

from aeguard.core import registry
from aeguard.core.artifact import load_artifact, manifest_digest, read_manifest
from aeguard.plugins.ae.detector import AEDetector

FAST = {"epochs": 60, "epochs_per_step": 20}


@lru_cache(maxsize=1)
def digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 8x8 digits as uint8 (N, 1, 8, 8) images (pixel counts 0-16 scaled to 0-255) and their classes."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return np.round(d.images * (255 / 16)).astype(np.uint8)[:, None], d.target


def digit_split(c: int = 0, n_fit: int = 100) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit images of one digit; a test batch of held-out ones (label 0) and other digits (label 1)."""
    X, t = digits()
    own = X[t == c]
    other = X[t != c][::20]
    test = np.concatenate([own[n_fit:], other])
    return own[:n_fit], test, np.r_[np.zeros(len(own) - n_fit, int), np.ones(len(other), int)]


def image_detectors() -> list[str]:
    return [name for name, rec in registry.detectors().items() if "image" in rec.modalities]


def build(name: str, **params):
    from conftest import fast_params

    cls = registry.get(name).cls
    return registry.build_detector(name, {**fast_params(cls), **FAST, **params}, seed=0)


class ImageOnly(AEDetector):
    """An image-only detector (a plugin may declare one): tables are refused."""

    modalities = ("image",)


# --- records and refusals -------------------------------------------------------------------------


def test_every_record_states_the_modalities_its_class_enforces(example_plugin_installed):
    for name, record in registry.detectors().items():
        assert tuple(record.modalities) == tuple(record.cls.modalities), name
    assert {"ae", "apre", "ae+mss"} <= set(image_detectors())


def test_images_to_a_table_only_detector_and_tables_to_an_image_only_one_are_refused():
    X, _ = digits()
    with pytest.raises(ValueError, match=r"takes tables only .*got an image batch"):
        registry.build_detector("iforest", seed=0).fit(X[:50])
    with pytest.raises(ValueError, match=r"takes images only .*got a table"):
        ImageOnly(**FAST).fit(X[:50].reshape(50, -1))
    table_fit = AEDetector(**FAST, random_state=0).fit(X[:50].reshape(50, -1).astype(float))
    with pytest.raises(ValueError, match="fitted on a table of 64 features, got an image batch"):
        table_fit.decision_function(X[:3])


def test_bad_image_batches_are_refused_with_the_problem_named():
    X, _ = digits()
    det = build("ae").fit(X[:60])
    with pytest.raises(ValueError, match=r"wrong image shape: got \(C, H, W\) = \(1, 7, 8\)"):
        det.decision_function(X[:3, :, :7])
    with pytest.raises(ValueError, match="not a table"):
        det.decision_function(X[:3].reshape(3, -1))
    with pytest.raises(ValueError, match=r"outside the pixel range \[0, 255\]"):
        det.decision_function(X[:3].astype(float) * 2)
    with pytest.raises(ValueError, match=r"NaN or infinite pixel in image 1 at \(c=0, h=2, w=3\)"):
        bad = X[:3].astype(float)
        bad[1, 0, 2, 3] = np.nan
        det.decision_function(bad)
    with pytest.raises(ValueError, match=r"outside the pixel range \[0, 1\]"):  # floats default to [0, 1]
        AEDetector(**FAST).fit(X[:50].astype(np.float64))
    with pytest.raises(ValueError, match="pixel_range applies to image batches only"):
        AEDetector(**FAST).fit(X[:50].reshape(50, -1), pixel_range=(0, 255))


# --- fit / score / explain ------------------------------------------------------------------------


def test_fit_score_explain_on_nchw_and_nhw_and_a_stated_float_range():
    fit, test, y = digit_split()
    det = build("ae").fit(fit)
    assert det.image_shape_ == det.input_shape_ == (1, 8, 8) and det.n_features_in_ == 64
    assert det.feature_names_[:2] == ["c0_h0_w0", "c0_h0_w1"] and det.feature_names_[-1] == "c0_h7_w7"
    scores = det.decision_function(test)
    np.testing.assert_array_equal(scores, det.decision_function(test[:, 0]))  # (N, H, W) -> C = 1
    from aeguard.core.metrics import roc_auc

    assert roc_auc(y, scores) > 0.9  # other digits score higher than held-out zeros
    maps = det.explain_maps(test[:4])
    assert maps.shape == (4, 1, 8, 8)
    np.testing.assert_allclose(maps.sum(axis=(1, 2, 3)), scores[:4], rtol=1e-5)  # MSE terms sum to the score
    assert list(det.explain(test[:2]).columns) == det.feature_names_
    # the same pixels as floats with their range stated give the same model input, hence the same scores
    as_float = build("ae").fit(fit.astype(np.float64) / 255 * 16, pixel_range=(0, 16))
    np.testing.assert_allclose(as_float.decision_function(test / 255 * 16), scores, rtol=1e-4, atol=1e-4)


def test_rgb_images_are_standardized_per_channel():
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(40, 3, 6, 5), dtype=np.uint8)
    X[:, 2] //= 4  # a dark blue channel: its own mean and scale
    det = build("ae").fit(X)
    std = det.standardize_
    assert std.mean.shape == (3, 1, 1) and std.layout == "flat"
    x01 = X / 255.0
    np.testing.assert_allclose(std.mean.flatten().numpy(), x01.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(std.scale.flatten().numpy(), x01.std(axis=(0, 2, 3), ddof=1) + 1e-5, rtol=1e-5)


def test_a_constant_border_cannot_dominate_the_score():
    """Per-pixel standardization gives a constant border pixel a scale of 1e-5, so one grey level there outscores
    any real defect (``apre.md`` section 7); per-channel standardization keeps it one grey level."""
    rng = np.random.default_rng(1)
    X = np.zeros((80, 1, 10, 10), dtype=np.uint8)
    X[:, 0, 2:8, 2:8] = rng.integers(60, 200, size=(80, 6, 6))  # textured centre, constant black border
    probe = X[:2].copy()
    probe[0, 0, 0, 0] = 1  # one grey level on the border
    probe[1, 0, 3:7, 3:7] = 255  # a real defect: a white blob in the centre
    images = build("ae").fit(X)
    s_img = images.decision_function(probe)
    assert s_img[0] < images.threshold_ < s_img[1]
    # the same detector on the flattened pixels (the old path, per-pixel statistics) is dominated by the border
    flat = build("ae").fit(X.reshape(80, -1).astype(float))
    s_flat = flat.decision_function(probe.reshape(2, -1).astype(float))
    assert s_flat[0] > 100 * flat.threshold_ and s_flat[0] > s_flat[1]


# --- artifacts and parity -------------------------------------------------------------------------


@pytest.mark.parametrize("name", image_detectors())
def test_onnx_parity_on_images_for_every_image_capable_detector(name, tmp_path):
    fit, test, _ = digit_split(3)
    det = build(name).fit(fit)
    art = load_artifact(det.save_artifact(tmp_path / name))
    assert art.modality == "image" and art.image_shape == (1, 8, 8)
    assert art.session.get_inputs()[0].shape == ["batch", 1, 8, 8]
    m = art.manifest
    assert m["format_version"] == 2 and m["input"] == {"modality": "image", "shape": [1, 8, 8],
                                                       "pixel_range": [0.0, 255.0]}
    assert m["preprocessing"]["type"] == "image_standardize" and len(m["preprocessing"]["mean"]) == 1
    ref = det.score_output(test)
    got = art.score(test)
    err = np.abs(got.score - ref.score).max() / max(1.0, np.abs(ref.score).max())
    assert err < 1e-5, err
    np.testing.assert_allclose(got.contrib, ref.contrib, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(art.predict(test), det.predict(test))
    np.testing.assert_allclose(art.explain_maps(test[:3]), det.explain_maps(test[:3]), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match=r"expects \(1, 8, 8\)"):
        art.score(np.zeros((2, 1, 8, 9), np.uint8))


def test_a_format_1_manifest_still_loads_as_a_table(tmp_path, table):
    X, _ = table
    path = AEDetector(**FAST, random_state=0).fit(X).save_artifact(tmp_path / "t")
    manifest = json.loads((path / "manifest.json").read_text())
    old = {k: v for k, v in manifest.items() if k not in ("input", "manifest_sha256")}
    old["format_version"] = 1
    (path / "manifest.json").write_text(json.dumps({**old, "manifest_sha256": manifest_digest(old)}))
    art = load_artifact(path)
    assert read_manifest(path)["format_version"] == 1 and art.modality == "tabular" and art.input_shape == (6,)
    assert art.score(X[:5]).score.shape == (5,)
