"""`mahalanobis` (Denouden et al.): real training on small tables, the latent distance against scipy, the
covariance options, scales from the hold-out, class modes, explanations, mean-shift scoring, ONNX/INT8/edge."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.spatial.distance import mahalanobis as scipy_mahalanobis

from aeguard.core import registry
from aeguard.core.artifact import load_artifact, read_manifest
from aeguard.core.deep import FitData
from aeguard.core.metrics import roc_auc
from aeguard.core.params import ParamError
from aeguard.plugins.mahalanobis.detector import MAD_FACTOR, fit_gaussian, fit_gaussian_robustly, ridge, whitening
from aeguard.plugins.mahalanobis.torch_model import MahalanobisAutoEncoder
from conftest import make_table

BIN = Path(sys.executable).parent
#: small, real training: enough epochs to learn the tables below, a second or two per fit
FAST = {"epochs": 40, "epochs_per_step": 20, "random_state": 0}


def _fit(X, name: str = "mahalanobis", classes=None, **params):
    return registry.create(name, **{**FAST, **params}).fit(X, classes=classes)


def _codes(det, X) -> np.ndarray:
    """Latent codes of the fit rows exactly as the fit computed them (float64 standardization, then float32)."""
    X = np.asarray(X, dtype=np.float64)
    mean, scale = det._standardize_stats(X)
    with torch.no_grad():
        return det.model_.encode(torch.from_numpy(((X - mean) / scale).astype(np.float32))).numpy().astype(float)


def _ridged(cov: np.ndarray, codes: np.ndarray | None = None) -> np.ndarray:
    """The ridge: 1e-6 x the trace of the codes' sample covariance / m (the spec's trace(S) for empirical)."""
    m = len(cov)
    spread = np.trace(cov) if codes is None else np.var(codes, axis=0, ddof=1).sum()
    return cov + max(1e-6 * spread / m, 1e-12) * np.eye(m)


def _clusters(n_per: int = 120, d: int = 6, seed: int = 0):
    """Three separated Gaussian classes, each with its own correlation, plus a few scattered outliers."""
    rng = np.random.default_rng(seed)
    parts, labels = [], []
    for c, centre in enumerate((0.0, 6.0, -6.0)):
        basis = rng.standard_normal((d, d)) * 0.5
        parts.append(rng.standard_normal((n_per, d)) @ basis + centre)
        labels += [f"c{c}"] * n_per
    return np.vstack(parts), np.array(labels)


@pytest.fixture(scope="module")
def table():
    return make_table(n_inliers=300, n_outliers=15, d=6, seed=1)


@pytest.fixture(scope="module")
def fitted(table):
    X, _ = table
    return _fit(X)


@pytest.mark.parametrize("covariance", ["empirical", "ledoit_wolf", "mcd"])
def test_whitened_distance_is_the_mahalanobis_distance_of_each_covariance_option(table, covariance):
    """Without a hold-out every fit row trains the AE and the Gaussian; ``d_m / alpha`` must equal scipy's
    Mahalanobis distance under the option's covariance (computed here independently) plus the ridge."""
    from sklearn.covariance import LedoitWolf, MinCovDet

    X, _ = table
    det = _fit(X, covariance=covariance, val_fraction=0.0)
    codes = _codes(det, X)
    if covariance == "empirical":
        mu, cov = codes.mean(axis=0), np.cov(codes, rowvar=False, ddof=1)
    elif covariance == "ledoit_wolf":
        mu, cov = codes.mean(axis=0), LedoitWolf().fit(codes).covariance_
    else:
        mcd = MinCovDet(random_state=0).fit(codes)
        mu, cov = mcd.location_, mcd.covariance_
    precision = np.linalg.inv(_ridged(cov, codes))
    expected = np.array([scipy_mahalanobis(c, mu, precision) for c in codes])
    out = det.score_output(X)
    extra = det.manifest_extra()["mahalanobis"]
    # float32 graph vs float64 scipy; MCD's support can be nearly flat, which amplifies float32 rounding of the codes
    np.testing.assert_allclose(out.components["d_m"] / extra["alpha"], expected, rtol=1e-3, atol=1e-3)
    assert extra["covariance"] == covariance and extra["whitening"] == ["cholesky"]
    assert extra["scales_from"] == "training" and not det.history_["stopped_early"]  # no hold-out: no early stop
    assert det.history_["epochs_run"] == FAST["epochs"]


def test_trains_ranks_outliers_and_scales_both_terms_on_the_hold_out(fitted, table):
    X, y = table
    out = fitted.score_output(X)
    assert roc_auc(y, out.score) > 0.9
    np.testing.assert_allclose(out.score, out.components["d_m"] + out.components["recon"], rtol=1e-5)
    extra = fitted.manifest_extra()
    assert extra["split"]["n_val"] == round(len(X) / 6) and extra["mahalanobis"]["scales_from"] == "validation"
    train_idx, val_idx = fitted._split(len(X), np.random.default_rng(fitted.seed_))  # the fit's own split
    for name in ("d_m", "recon"):  # alpha = 1 / (1.4826 MAD) of the hold-out: the scaled terms have unit MAD there
        val = out.components[name][val_idx]
        assert MAD_FACTOR * np.median(np.abs(val - np.median(val))) == pytest.approx(1.0, rel=1e-4)
    train = out.components["d_m"][train_idx]
    assert abs(MAD_FACTOR * np.median(np.abs(train - np.median(train))) - 1.0) > 1e-3  # not the training rows
    std = _fit(X, scale="std").score_output(X)
    assert np.std(std.components["recon"][val_idx], ddof=1) == pytest.approx(1.0, rel=1e-4)
    for terms, off, on in (("latent", "recon", "d_m"), ("recon", "d_m", "recon")):  # the section 9.1 ablations
        single = _fit(X, terms=terms).score_output(X)
        assert not single.components[off].any()
        np.testing.assert_allclose(single.score, out.components[on], rtol=1e-5)


def test_explain_is_the_reconstruction_term_plus_an_even_share_of_the_latent_term(fitted, table):
    X, _ = table
    out = fitted.score_output(X)
    expl = fitted.explain(X)
    np.testing.assert_allclose(expl.sum(axis=1), out.score, rtol=1e-5, atol=1e-5)
    d = X.shape[1]
    with torch.no_grad():
        z = fitted.standardize_(torch.from_numpy(X.astype(np.float32)))
        recon = ((fitted.model_(z) - z) ** 2).numpy() / d * fitted.beta_
    np.testing.assert_allclose(expl.to_numpy() - out.components["d_m"][:, None] / d, recon, rtol=1e-4, atol=1e-6)
    latent = fitted.explain_latent(X)
    assert latent.shape == (len(X), fitted.model_.m)
    np.testing.assert_allclose(latent.sum(axis=1), out.components["d_m"], rtol=1e-4, atol=1e-5)


def test_per_class_mode_takes_the_nearest_class_gaussian(tmp_path):
    X, labels = _clusters()
    det = _fit(X, classes=labels, covariance="empirical", val_fraction=0.0, epochs=80)
    out = det.score_output(X)
    assert out.components["class"].dtype == np.int64
    assert np.mean(det.class_labels_[out.components["class"]] == labels) > 0.6  # chance: 1/3
    codes = _codes(det, X)
    dists = []
    for c in det.class_labels_:
        own = codes[labels == c]
        precision = np.linalg.inv(_ridged(np.cov(own, rowvar=False, ddof=1), own))
        dists.append([scipy_mahalanobis(v, own.mean(axis=0), precision) for v in codes])
    dists = np.array(dists)
    alpha = det.manifest_extra()["mahalanobis"]["alpha"]
    np.testing.assert_allclose(out.components["d_m"] / alpha, dists.min(axis=0), rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(out.components["class"], dists.argmin(axis=0))
    extra = read_manifest(det.save_artifact(tmp_path / "art"))["extra"]["mahalanobis"]
    assert extra["class_mode"] == "per_class" and extra["n_gaussians"] == 3
    assert extra["class_labels"] == ["c0", "c1", "c2"]


def test_tied_mode_shares_one_pooled_covariance():
    X, labels = _clusters(seed=2)
    det = _fit(X, classes=labels, class_mode="tied", covariance="empirical", val_fraction=0.0)
    assert det.model_.latent.shared and det.model_.latent.n_gaussians == 3
    codes = _codes(det, X)
    means = {c: codes[labels == c].mean(axis=0) for c in det.class_labels_}
    residuals = codes - np.array([means[c] for c in labels])
    pooled = residuals.T @ residuals / (len(codes) - 3)
    precision = np.linalg.inv(_ridged(pooled))
    expected = np.min([[scipy_mahalanobis(v, means[c], precision) for v in codes] for c in det.class_labels_], axis=0)
    out = det.score_output(X)
    np.testing.assert_allclose(out.components["d_m"] / det.alpha_, expected, rtol=1e-3, atol=1e-3)
    single = _fit(X, classes=labels, class_mode="none", val_fraction=0.0)  # classes given, single Gaussian kept
    assert "class" not in single.score_output(X).components and single.model_.latent.n_gaussians == 1


def test_class_modes_and_parameters_are_checked(table):
    X, _ = table
    with pytest.raises(ValueError, match="class_mode='per_class' needs class labels"):
        _fit(X, class_mode="per_class", epochs=1)
    with pytest.raises(ValueError, match="class 'b' has 1 training row"):
        _fit(X, classes=["a"] * (len(X) - 1) + ["b"], val_fraction=0.0, epochs=1)
    with pytest.raises(ParamError, match="covariance must be one of"):
        registry.build_detector("mahalanobis", {"covariance": "oas"})
    with pytest.raises(ParamError, match="scale must be one of"):
        _fit(X, scale="iqr")
    with pytest.raises(ValueError, match="loss='bce' is for image inputs"):
        _fit(X, loss="bce", epochs=1)
    with pytest.raises(ParamError, match="mss is fixed for mahalanobis"):
        registry.build_detector("mahalanobis", {"mss": "true"})
    # a choice named "none" is reached from a spec's literal null (`class_mode=none` in a benchmark spec)
    assert registry.build_detector("mahalanobis", {"class_mode": None}).class_mode == "none"
    assert registry.build_detector("mahalanobis", {"class_mode": "none"}).class_mode == "none"


def test_covariance_helpers_ridge_and_eigen_fallback():
    rng = np.random.default_rng(0)
    codes = rng.standard_normal((50, 3)) @ rng.standard_normal((3, 3))
    mu, cov = fit_gaussian(codes, "empirical")
    np.testing.assert_allclose(cov, np.cov(codes, rowvar=False))
    cov_reg, eps = ridge(cov)
    assert eps == pytest.approx(1e-6 * np.trace(cov) / 3)
    w, how = whitening(cov_reg, eps)
    assert how == "cholesky" and np.allclose(np.triu(w, 1), 0)  # inverse of a lower factor is lower
    np.testing.assert_allclose(w.T @ w, np.linalg.inv(cov_reg), rtol=1e-8)
    w, how = whitening(np.diag([4.0, 0.0]), 1e-3)  # singular: Cholesky fails, eigenvalues floored at eps
    assert how == "eigh"
    np.testing.assert_allclose(w.T @ w, np.diag([0.25, 1e3]), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="covariance='mcd' needs more training rows"):
        fit_gaussian(codes[:3], "mcd")


def test_mcd_on_codes_that_mostly_coincide_falls_back_to_ledoit_wolf_and_says_so():
    """A dead-ReLU region maps most rows to one code: MCD's support has zero covariance (sklearn raises; seen on
    ecoli and vertebral in the ODDS run); Ledoit-Wolf on all codes is used, with a warning."""
    rng = np.random.default_rng(1)
    codes = np.vstack([np.tile([0.5, -1.0], (70, 1)), rng.standard_normal((30, 2))])
    with pytest.raises(ValueError, match="support data is equal to 0"):
        fit_gaussian(codes, "mcd")
    with pytest.warns(RuntimeWarning, match="MCD support of 100 latent codes is degenerate"):
        mu, cov, used = fit_gaussian_robustly(codes, "mcd")
    assert used == "ledoit_wolf"
    np.testing.assert_allclose(cov, fit_gaussian(codes, "ledoit_wolf")[1])
    assert fit_gaussian_robustly(codes, "empirical")[2] == "empirical"


def test_faithful_mode_uses_the_papers_settings(table):
    X, _ = table
    det = _fit(X, faithful=True)
    extra = det.manifest_extra()["mahalanobis"]
    assert (extra["optimizer"], extra["covariance"], extra["scale"], extra["loss"]) == ("adadelta", "empirical",
                                                                                       "std", "mse")
    stage = det.stages(det.model_, FitData(z=X.astype(np.float32), train_idx=np.arange(250),
                                           val_idx=np.arange(250, len(X)), seed=0))[0]
    assert (stage.epochs, stage.patience, stage.val_every, stage.lr) == (500, 20, 1, 1.0)
    optimizer, _ = stage.optimizer(list(det.model_.parameters()), stage)
    assert isinstance(optimizer, torch.optim.Adadelta)
    assert det.history_["epochs_run"] <= 500 and det.history_["n_val"] == round(len(X) / 6)
    assert det.history_["stopped_early"] == (det.history_["epochs_run"] < 500)


def test_mss_wraps_only_the_reconstruction_term(fitted, table):
    X, y = table
    mss = _fit(X, name="mahalanobis+mss")
    plain, shifted = fitted.score_output(X), mss.score_output(X)
    np.testing.assert_allclose(shifted.components["d_m"], plain.components["d_m"], rtol=1e-5)  # same training
    assert not np.allclose(shifted.components["recon"], plain.components["recon"])
    assert mss.beta_ != fitted.beta_ and mss.alpha_ == fitted.alpha_
    assert roc_auc(y, shifted.score) > 0.9
    assert "mss" in mss.manifest_extra()


def test_images_train_a_conv_autoencoder_with_bce_on_pixels_in_0_1():
    """Spec section 2/3 image path: C x H x W images (the 8x8 digits), a conv AE, BCE on [0, 1] pixels (the base's
    per-channel standardization undone exactly inside the model); one digit fitted, other digits rank higher."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)[:, None]
    own, other = images[digits.target == 0], images[digits.target != 0][::10]
    det = _fit(own[:120], epochs=60)
    assert det.loss_ == "bce" and det.model_.m == 32 and isinstance(det.model_.encoder[0], torch.nn.Conv2d)
    test = np.concatenate([own[120:], other])
    y = np.r_[np.zeros(len(own) - 120, int), np.ones(len(other), int)]
    out = det.score_output(test)
    assert roc_auc(y, out.score) > 0.85
    x01 = test.reshape(len(test), -1) / 255.0
    with torch.no_grad():
        xhat = det.model_(det.standardize_(torch.from_numpy(test.astype(np.float32)))).numpy().astype(float)
    p, t = np.clip(xhat, 1e-7, 1 - 1e-7), np.clip(x01, 1e-7, 1 - 1e-7)
    kl = (-(x01 * np.log(p) + (1 - x01) * np.log(1 - p)) + (x01 * np.log(t) + (1 - x01) * np.log(1 - t))).mean(axis=1)
    np.testing.assert_allclose(out.components["recon"], det.beta_ * kl, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(det.explain_maps(test[:3]).sum(axis=(1, 2, 3)), out.score[:3], rtol=1e-5)
    assert registry.create("mahalanobis")._loss() == "mse"  # tables: MSE
    assert isinstance(MahalanobisAutoEncoder((5,), 2).decoder[-1], torch.nn.Linear)
    for shape in ((1, 28, 28), (3, 27, 32)):  # the conv AE mirrors odd and even sizes exactly
        model = MahalanobisAutoEncoder(shape, 32)
        assert model(torch.zeros(2, int(np.prod(shape)))).shape == (2, int(np.prod(shape)))


def test_bce_term_is_the_clamped_spec_formula_minus_the_target_entropy_even_where_the_sigmoid_saturates():
    """The BCE of the logit equals the spec's clamped-probability formula (float64) across saturation, less the
    target's own entropy (so the term is the Bernoulli KL divergence, zero at a perfect reconstruction)."""
    model = MahalanobisAutoEncoder((1, 8, 8), 4, loss="bce", unit=(np.zeros(64), np.ones(64)))
    logit = torch.linspace(-40, 40, 64, dtype=torch.float32).reshape(1, 64).repeat(3, 1)
    target = torch.tensor([0.0, 1.0, 0.3]).reshape(3, 1).repeat(1, 64)
    got = model.recon_terms(logit, target).double().numpy() * 64
    p = np.clip(1 / (1 + np.exp(-logit.double().numpy())), 1e-7, 1 - 1e-7)
    t = target.double().numpy()
    tc = np.clip(t, 1e-7, 1 - 1e-7)
    entropy = -(t * np.log(tc) + (1 - t) * np.log(1 - tc))
    np.testing.assert_allclose(got, -(t * np.log(p) + (1 - t) * np.log(1 - p)) - entropy, rtol=2e-6, atol=2e-6)
    perfect = torch.logit(torch.tensor([[0.3] * 64]).double()).float()  # x^ = t = 0.3: KL 0, BCE 0.61
    assert abs(float(model.recon_terms(perfect, torch.full((1, 64), 0.3)).sum())) < 1e-5


def test_image_artifact_matches_torch_with_default_training(tmp_path):
    """Default training on digit 7 saturates the sigmoid output on the blank border: the artifact still matches
    torch to 1e-5 relative (it differed by 5e-3 when the BCE was formed from float32 probabilities)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)[:, None]
    own, other = images[digits.target == 7], images[digits.target != 7][::20]
    det = registry.create("mahalanobis", random_state=0).fit(own[:150])
    test = np.concatenate([own[150:], other])
    ref, got = det.score_output(test), load_artifact(det.save_artifact(tmp_path / "art")).score(test)
    assert np.max(np.abs(got.score - ref.score) / np.abs(ref.score)) < 1e-5
    np.testing.assert_allclose(got.components["recon"], ref.components["recon"], rtol=1e-5)


@pytest.fixture(scope="module")
def class_artifact(tmp_path_factory):
    """A per-class fit on a named table and its FP32 artifact."""
    X, labels = _clusters(seed=3)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    det = _fit(frame, classes=labels)
    return det, det.save_artifact(tmp_path_factory.mktemp("maha") / "art"), frame


def test_per_class_artifact_matches_torch_runs_int8_and_aeguard_edge(class_artifact, tmp_path):
    from aeguard.edge.variants import export_variant, spearman

    det, art, frame = class_artifact
    torch_out, onnx_out = det.score_output(frame), load_artifact(art).score(frame)
    np.testing.assert_allclose(onnx_out.score, torch_out.score, rtol=1e-4)
    for name in ("d_m", "recon"):
        np.testing.assert_allclose(onnx_out.components[name], torch_out.components[name], rtol=1e-4, atol=1e-5)
    assert onnx_out.components["class"].dtype == np.int64
    np.testing.assert_array_equal(onnx_out.components["class"], torch_out.components["class"])
    graph = read_manifest(art)["graph"]
    assert graph["outputs"] == ["score", "contrib", "d_m", "recon", "class"]
    assert graph["fp32_scopes"] == ["model.latent"] and graph["fp32_nodes"]
    import onnx

    ops = {n.op_type for n in onnx.load(str(art / "model.onnx")).graph.node}
    assert not ops & {"Inverse", "MatrixInverse"}  # the graph whitens with constants; it never inverts
    int8 = export_variant(art, tmp_path / "int8", int8=True)
    nodes = {n.name: n.op_type for n in onnx.load(str(int8 / "model.onnx")).graph.node}
    assert [n for n in graph["fp32_nodes"] if nodes.get(n) == "MatMul"]  # the whitening MatMul stays float
    assert "MatMulInteger" in nodes.values()
    q = load_artifact(int8).score(frame)
    assert spearman(q.score, onnx_out.score) > 0.9
    csv = tmp_path / "data.csv"
    frame.to_csv(csv, index=False)
    run = subprocess.run([str(BIN / "aeguard-edge"), "score", str(art), str(csv), "--components"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    edge = pd.read_csv(pd.io.common.StringIO(run.stdout))
    assert list(edge.columns) == ["score", "label", "probability", "d_m", "recon", "class"]
    np.testing.assert_allclose(edge["score"], onnx_out.score, rtol=1e-5)
    np.testing.assert_array_equal(edge["class"], onnx_out.components["class"])


def test_per_class_artifact_served_over_http_with_its_components(class_artifact):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("bentoml")
    from aeguard.serving.bench import LocalServer

    _, art, frame = class_artifact
    expected = load_artifact(art).score(frame.iloc[:10])
    server = LocalServer([f"maha={art}"])
    try:
        server.wait_ready()
        response = httpx.post(f"{server.url}/score", json={"rows": frame.iloc[:10].to_dict(orient="records"),
                                                            "components": True, "explain": True}, timeout=60)
    finally:
        server.stop()
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    np.testing.assert_allclose([r["score"] for r in results], expected.score, rtol=1e-5)
    assert [r["components"]["class"] for r in results] == expected.components["class"].tolist()
    np.testing.assert_allclose([r["components"]["d_m"] for r in results], expected.components["d_m"], rtol=1e-5)
