"""`fader` (FADeR-style, ``fader.md``): real small Lightning fits on tables, 8x8 digits and 28x28 synthetic images.

What is checked: the deterministic mask rule against numpy, stage A frozen in stage B, the graph's outputs
(score, contrib, masked_error, mask, soft scores), what ``explain`` sums to, ONNX vs torch for both export
variants, the image U-Net's adaptation to the input size, the multi-mask tiling and the refusal of bad values.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aeguard.core import registry
from aeguard.core.artifact import load_artifact
from aeguard.core.export import VARIANTS
from aeguard.core.params import ParamError
from aeguard.plugins.fader.detector import FaderDetector, feature_groups, quartile_hint
from aeguard.plugins.fader.torch_model import ImageFader, TabularFader
from conftest import make_table

FAST = {"epochs": 20, "epochs_b": 5, "epochs_per_step": 10}


def build(**params) -> FaderDetector:
    return registry.create("fader", random_state=0, **{**FAST, **params})


@pytest.fixture(scope="module")
def wide_table():
    """12 correlated features (so G = 8 groups come from the correlation clustering), tie-free."""
    return make_table(n_inliers=400, n_outliers=20, d=12, seed=3)


@pytest.fixture(scope="module")
def fitted(wide_table):
    X, _ = wide_table
    return build().fit(X)


def digits(c: int = 0, n_fit: int = 120):
    from sklearn.datasets import load_digits

    d = load_digits()
    X = np.round(d.images * (255 / 16)).astype(np.uint8)[:, None]
    own, other = X[d.target == c], X[d.target != c][::25]
    return own[:n_fit], np.concatenate([own[n_fit:], other])


def synthetic_28(n: int = 48, seed: int = 0) -> np.ndarray:
    """28x28 grey images: a bright disc at a jittered centre on a textured background, uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:28, 0:28]
    out = np.empty((n, 1, 28, 28), dtype=np.uint8)
    for i in range(n):
        cy, cx = 14 + rng.normal(0, 1.5, 2)
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2 < 36).astype(float)
        img = 40 + 150 * disc + rng.normal(0, 12, (28, 28))
        out[i, 0] = np.clip(img, 0, 255).astype(np.uint8)
    return out


# --- tables ----------------------------------------------------------------------------------------------


def test_groups_and_quartile_hint_follow_the_spec(wide_table):
    X, _ = wide_table
    z = (X - X.mean(0)) / X.std(0, ddof=1)
    labels = feature_groups(z, 8, "correlation")
    assert labels.shape == (12,) and set(labels) == set(range(8)) and labels[0] == 0
    assert list(feature_groups(z, 4, "contiguous")) == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert list(feature_groups(z[:, :5], 8, "correlation")) == [0, 1, 2, 3, 4]  # G = min(d, 8)
    edges, centres = quartile_hint(z)
    assert edges.shape == (12, 3) and centres.shape == (12, 4)
    assert (np.diff(centres, axis=1) > 0).all() and (centres[:, 1:] >= edges).all() and (centres[:, :3] <= edges).all()
    # discrete column: empty bins take their lower edge, never NaN
    _, c2 = quartile_hint(np.r_[np.zeros(50), np.ones(10)][:, None])
    assert np.isfinite(c2).all()


def test_deterministic_mask_rule_in_the_graph_matches_numpy(fitted, wide_table):
    X, _ = wide_table
    det = fitted
    z = (X - det.standardize_.mean.numpy().astype(np.float64)) / det.standardize_.scale.numpy().astype(np.float64)
    G = det.n_units_
    susp = np.abs(z - det.median_) / det.mad_scale_
    per_group = np.stack([susp[:, det.groups_ == g].mean(axis=1) for g in range(G)], axis=1)
    k = det.model_.k
    assert k == int(np.ceil(0.25 * G))
    expected = np.zeros_like(per_group)
    np.put_along_axis(expected, np.argsort(-per_group, axis=1)[:, :k], 1.0, axis=1)
    mask = det.score_output(X).components["mask"]
    assert mask.shape == (len(X), G) and (mask.sum(axis=1) == k).all()
    np.testing.assert_array_equal(mask, expected)
    np.testing.assert_array_equal(det.score_output(X[::-1]).components["mask"], mask[::-1])  # no batch effect


def test_stage_a_is_frozen_in_stage_b(wide_table):
    X, _ = wide_table
    base = build(attenuation=False).fit(X)
    full = build().fit(X)
    names = [n for n, _ in full.model_.named_parameters() if not n.startswith("fader.")]
    assert names and all(n.startswith(("enc", "dec")) for n in names)
    a, b = dict(base.model_.named_parameters()), dict(full.model_.named_parameters())
    for name in names:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)  # stage B left every base weight unchanged
    assert any(not torch.equal(a[n], b[n]) for n in a if n.startswith("fader."))  # only the MLP trained
    stages = [s["stage"] for s in full.history_["stages"]]
    assert stages == ["inpaint", "attenuate", "active-1", "active-2"]
    frozen = full.history_["stages"][1]["frozen_parameters"]
    assert frozen == sum(p.numel() for n, p in full.model_.named_parameters() if not n.startswith("fader."))
    # attribution matrices from the frozen weights: rows sum to 1
    model: TabularFader = full.model_
    np.testing.assert_allclose(model.attr1.sum(1).numpy(), 1.0, rtol=1e-5)
    np.testing.assert_allclose(model.attr2.sum(1).numpy(), 1.0, rtol=1e-5)
    assert [r["round"] for r in full.manifest_extra()["fader"]["stage_b_rounds"]] == [0, 1, 2]
    # the base scores without gates: its soft scores are zeros, the FADeR model's are in (0, 1)
    assert (base.score_output(X).components["soft_scores"] == 0).all()
    s = full.score_output(X).components["soft_scores"]
    assert ((s > 0) & (s < 1)).all()


def test_outputs_and_explain_sum_to_the_score(fitted, wide_table):
    X, _ = wide_table
    out = fitted.score_output(X)
    assert fitted.output_names_ == ["score", "contrib", "masked_error", "mask", "soft_scores"]
    assert out.contrib.shape == X.shape
    np.testing.assert_allclose(fitted.explain(X).to_numpy().sum(axis=1), out.score, rtol=1e-5)
    # the masked-only sum: contributions of the masked groups' features
    up = out.components["mask"][:, fitted.groups_]
    np.testing.assert_allclose((out.contrib * up).sum(axis=1), out.components["masked_error"], rtol=1e-5)
    assert (out.components["masked_error"] <= out.score + 1e-6).all()


@pytest.mark.parametrize("variant", VARIANTS)
def test_onnx_matches_torch_on_tables(fitted, wide_table, tmp_path, variant):
    X, _ = wide_table
    art = load_artifact(fitted.save_artifact(tmp_path / "fader", variant=variant))
    ref, got = fitted.score_output(X), art.score(X)
    rel = np.abs(got.score - ref.score) / np.abs(ref.score)
    assert rel.max() <= 1e-4, rel.max()
    np.testing.assert_allclose(got.contrib, ref.contrib, rtol=1e-4, atol=1e-6)
    for name in ("masked_error", "mask", "soft_scores"):
        np.testing.assert_allclose(np.asarray(got.components[name]), ref.components[name], rtol=1e-4, atol=1e-6)
    assert art.manifest["extra"]["fader"]["groups"] == [int(g) for g in fitted.groups_]


def test_multi_mask_takes_each_features_error_from_the_pass_that_masked_it(wide_table, tmp_path):
    X, _ = wide_table
    det = build(n_masks=4, attenuation=False).fit(X)
    model = det.model_
    parts = model.partitions.numpy()
    assert parts.shape == (4, model.n_units) and (parts.sum(axis=0) == 1).all()  # disjoint, covering
    out = det.score_output(X)
    assert (out.components["mask"] == 1).all()
    z = det.standardize_(torch.from_numpy(X.astype(np.float32)))
    expected = torch.zeros_like(z)
    with torch.no_grad():
        for k in range(4):
            m = model.partitions[k].expand(len(z), -1)
            xhat, _ = model.reconstruct(model.mix(z, m), gated=False)
            expected += (z - xhat) ** 2 * model.up(m)
    np.testing.assert_allclose(out.contrib, expected.numpy(), rtol=1e-5, atol=1e-6)
    art = load_artifact(det.save_artifact(tmp_path / "multi"))
    np.testing.assert_allclose(art.score(X).score, out.score, rtol=1e-4)


def test_ablation_switches_change_the_graph_not_the_contract(wide_table):
    X, y = wide_table
    from aeguard.core.metrics import roc_auc

    for params in ({"gate": "scalar"}, {"mask_rule": "random"}, {"skip_levels_at_inference": "deep"},
                   {"active_rounds": 0}, {"corruption_prob": 0.0}, {"faithful": True}):
        det = build(**params).fit(X)
        out = det.score_output(X)
        assert np.isfinite(out.score).all() and roc_auc(y, out.score) > 0.8, params
    random_mask = build(mask_rule="random").fit(X).score_output(X).components["mask"]
    rule_mask = build().fit(X).score_output(X).components["mask"]
    assert (random_mask != rule_mask).any()
    assert build(faithful=True).fit(X).model_.drop_shallow  # EAR's inference setting


def test_bad_values_are_refused_naming_the_parameter(wide_table):
    X, _ = wide_table
    for name, value in (("mask_ratio", 0), ("mask_ratio", 1.5), ("n_masks", 0), ("gate", "soft"),
                        ("mask_rule", "attention"), ("active_rounds", -1), ("active_top_frac", 0),
                        ("corruption_prob", 2), ("lam", -1), ("epochs_b", 0), ("patch_size", 1),
                        ("skip_levels_at_inference", "none"), ("image_score", "mean"), ("blur_sigma", 0)):
        with pytest.raises(ParamError, match=name):
            FaderDetector(**{name: value}).fit(X)
        with pytest.raises(ParamError, match=name):
            registry.build_detector("fader", {name: str(value)})
    clipped = build(n_masks=9, attenuation=False).fit(X)  # more masks than the 8 groups: one group per mask
    assert clipped.model_.n_masks == 8 and clipped.manifest_extra()["fader"]["n_masks"] == 8
    with pytest.raises(ValueError, match="patch_size"):
        build(patch_size=4).fit(np.zeros((4, 1, 10, 10), np.uint8) + np.arange(4, dtype=np.uint8)[:, None, None, None])


# --- images ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digit_fit():
    fit, test = digits()
    return build(epochs=10).fit(fit), test


def test_digits_use_2x2_patches_and_two_levels_and_match_onnx(digit_fit, tmp_path):
    det, test = digit_fit
    model: ImageFader = det.model_
    assert (model.patch, model.grid, model.levels, model.channels) == (2, (4, 4), 2, [32, 64])
    # the optimiser-step floor (20 x epochs per stage) holds for images too: 2 batches of 64 per epoch here
    batches = -(-det.split_["n_train"] // 64)
    floors = [200] + [100] * 3  # epochs=10, epochs_b=5 (FAST), stage A then three stage-B rounds
    assert [s["epochs_run"] for s in det.history_["stages"]] == [-(-f // batches) for f in floors]
    out = det.score_output(test)
    assert out.contrib.shape == (len(test), 64)
    np.testing.assert_allclose(det.explain(test).to_numpy().sum(axis=1), out.components["error_sum"], rtol=1e-5)
    assert out.components["mask"].shape == (len(test), 16) and (out.components["mask"].sum(1) == 4).all()
    # the image rule: patch means of |x - mean normal image| in [0, 1] pixels, top ceil(qP)
    x01 = test.astype(np.float64) / 255.0
    diff = np.abs(x01 - det.mean_image_)[:, 0]
    susp = diff.reshape(len(test), 4, 2, 4, 2).mean(axis=(2, 4)).reshape(len(test), 16)
    expected = np.zeros_like(susp)
    np.put_along_axis(expected, np.argsort(-susp, axis=1)[:, :4], 1.0, axis=1)
    np.testing.assert_array_equal(out.components["mask"], expected)
    # the score is the maximum of the Gaussian-blurred error map
    emap = torch.from_numpy(out.contrib.reshape(-1, 1, 8, 8).astype(np.float32))
    blurred = torch.nn.functional.conv2d(emap, model.blur, padding=model.blur_pad).flatten(1).max(1).values
    np.testing.assert_allclose(out.score, blurred.numpy(), rtol=1e-5)
    for variant in VARIANTS:
        art = load_artifact(det.save_artifact(tmp_path / variant, variant=variant))
        got = art.score(test)
        assert np.abs(got.score - out.score).max() / np.abs(out.score).max() < 1e-4
        np.testing.assert_allclose(np.asarray(got.components["soft_scores"]), out.components["soft_scores"],
                                   rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(np.asarray(got.components["mask"]), out.components["mask"])


def test_int8_export_of_the_image_graph_leaves_the_working_directory_clean(digit_fit, tmp_path, monkeypatch):
    """onnxruntime's symbolic shape inference gives up on the image U-Net and saves its temporary model and a
    <uuid>.data file into the current directory; the export runs it inside its own temporary folder."""
    from aeguard.edge.variants import export_variant

    det, test = digit_fit
    fp32 = det.save_artifact(tmp_path / "fp32")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    int8 = export_variant(fp32, tmp_path / "int8", int8=True)
    assert sorted(p.name for p in cwd.iterdir()) == []
    got, ref = load_artifact(int8).score(test), det.score_output(test)
    np.testing.assert_array_equal(np.asarray(got.components["mask"]), ref.components["mask"])  # the FP32 rule


def test_28px_images_use_4x4_patches_and_three_levels(tmp_path):
    X = synthetic_28()
    det = build(epochs=3, epochs_b=2, width=8, active_rounds=1).fit(X[:40])
    model: ImageFader = det.model_
    assert (model.patch, model.grid, model.levels, model.channels) == (4, (7, 7), 3, [8, 16, 32])
    assert model.k == 13 and float(model.blur.sum()) == pytest.approx(1.0)
    probe = X[40:].copy()
    probe[0, 0, 2:8, 2:8] = 255  # a bright square off the disc
    out = det.score_output(probe)
    assert out.contrib.shape == (8, 784) and out.components["soft_scores"].shape == (8, 49)
    art = load_artifact(det.save_artifact(tmp_path / "p28"))
    got = art.score(probe)
    assert np.abs(got.score - out.score).max() / np.abs(out.score).max() < 1e-4
    multi = build(epochs=2, epochs_b=1, width=8, n_masks=4, active_rounds=0, image_score="top1").fit(X[:40])
    assert (multi.score_output(probe).components["mask"] == 1).all()
    np.testing.assert_allclose(load_artifact(multi.save_artifact(tmp_path / "m28")).score(probe).score,
                               multi.decision_function(probe), rtol=1e-4)


# --- every path: CLI, INT8, edge, HTTP ---------------------------------------------------------------------


def test_int8_edge_cli_and_http_serve_the_fader_graph(fitted, wide_table, digit_fit, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    import pandas as pd

    from aeguard.edge.variants import export_variant, spearman

    X, _ = wide_table
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    det = build().fit(frame)
    fp32 = det.save_artifact(tmp_path / "fp32")
    int8 = export_variant(fp32, tmp_path / "int8", int8=True)
    ref = load_artifact(fp32).score(frame)
    q = load_artifact(int8).score(frame)
    assert spearman(ref.score, q.score) > 0.99
    np.testing.assert_array_equal(np.asarray(q.components["mask"]), np.asarray(ref.components["mask"]))  # FP32 rule
    frame.to_csv(tmp_path / "x.csv", index=False)
    edge = Path(sys.executable).parent / "aeguard-edge"
    done = subprocess.run([str(edge), "score", str(int8), str(tmp_path / "x.csv"), "--components"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    got = pd.read_csv(__import__("io").StringIO(done.stdout))
    assert list(got.columns) == ["score", "label", "probability", "masked_error"]  # vector outputs stay out
    np.testing.assert_allclose(got["score"], q.score, rtol=1e-6)
    pytest.importorskip("bentoml")
    import httpx

    from aeguard.serving.bench import LocalServer

    image_det, test = digit_fit
    image_art = image_det.save_artifact(tmp_path / "img")
    srv = LocalServer([f"tab={fp32}", f"img={image_art}"])
    try:
        srv.wait_ready()
        with httpx.Client(base_url=srv.url, timeout=60.0) as client:
            r = client.post("/score", json={"rows": frame.iloc[:20].to_dict(orient="records"), "model": "tab",
                                            "components": True, "explain": True})
            assert r.status_code == 200, r.text
            results = r.json()["results"]
            np.testing.assert_allclose([x["score"] for x in results], ref.score[:20], rtol=1e-6)
            np.testing.assert_allclose([x["components"]["soft_scores"] for x in results],
                                       np.asarray(ref.components["soft_scores"])[:20], rtol=1e-5, atol=1e-7)
            r = client.post("/score", json={"images": test[:4].tolist(), "model": "img", "explain": True})
            assert r.status_code == 200, r.text
            expected = load_artifact(image_art).score(test[:4])
            np.testing.assert_allclose([x["score"] for x in r.json()["results"]], expected.score, rtol=1e-6)
    finally:
        srv.stop()
