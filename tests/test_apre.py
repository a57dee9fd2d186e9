"""`apre` (probabilistic AE, PRE/WNLL) and the reusable `mss` scorer: formulas, mean shift, export parity."""

from __future__ import annotations

import pickle

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from sklearn.base import clone

from aeguard.core import registry
from aeguard.core.artifact import load_artifact
from aeguard.plugins.apre.detector import APREDetector
from aeguard.plugins.apre.torch_model import ProbabilisticAutoEncoder, pre_loss, pre_terms
from aeguard.plugins.mss import (
    AEMSSDetector,
    MeanShift,
    MSSMixin,
    create_with_mss,
    default_k,
    fit_mean_shift,
    shift_fit_set,
    shift_points,
    with_mss,
)
from conftest import make_table

FAST = {"epochs": 30, "epochs_per_step": 10}


def _linear_shapes(model: torch.nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, torch.nn.Linear)]


# --- model and formulas ------------------------------------------------------------------------------------

@pytest.mark.parametrize("d, widths", [
    (6, [6, 3, 3, 12]),
    (64, [64, 32, 16, 16, 32, 128]),
    (166, [166, 83, 42, 21, 21, 42, 83, 332]),
    (274, [274, 137, 68, 17, 17, 68, 137, 548]),
])
def test_layer_size_rule(d, widths):
    shapes = _linear_shapes(ProbabilisticAutoEncoder(d))
    half = len(widths) // 2
    enc = list(zip(widths[:half - 1], widths[1:half]))
    dec = list(zip(widths[half:-1], widths[half + 1:]))
    assert shapes == enc + dec


def test_softplus_variance_from_the_second_half():
    torch.manual_seed(0)
    model = ProbabilisticAutoEncoder(5)
    z = torch.randn(8, 5)
    mu, s2 = model(z)
    out = model.decoder(model.encoder(z))  # the authors' layout: one Linear(h, 2d)
    assert torch.allclose(mu, out[:, :5], atol=1e-6)
    assert torch.allclose(s2, F.softplus(out[:, 5:]), atol=1e-6)
    assert bool((s2 > 0).all())


def test_pre_loss_and_score_match_numpy():
    rng = np.random.default_rng(1)
    mu, t = rng.normal(size=(7, 4)), rng.normal(size=(7, 4))
    s2 = rng.uniform(0.01, 2.0, size=(7, 4))
    loss = pre_loss(*(torch.tensor(a) for a in (mu, s2, t)))
    direct = np.mean(np.sum((t - mu) ** 2 / (s2 + 1e-5), axis=1) + np.sum(np.log(s2 + 1e-5), axis=1))
    assert float(loss) == pytest.approx(direct, rel=1e-10)
    err, unc = pre_terms(*(torch.tensor(a) for a in (mu, s2, t)), alpha=0.5, beta=2.0)
    score = 0.5 * np.sum((t - mu) ** 2 / (s2 + 1e-5), axis=1) + 2.0 * np.sum(np.log(s2 + 1e-5), axis=1)
    np.testing.assert_allclose((err + unc).sum(1).numpy(), score, rtol=1e-10)


def test_wnll_ranking_depends_only_on_the_ratio():
    """APRE(a, b) = a * APRE(1, b/a): same ranking for the same beta/alpha; a = b ranks as NLL."""
    torch.manual_seed(0)
    model = ProbabilisticAutoEncoder(4).eval()
    z = torch.randn(50, 4)

    def score(a: float, b: float) -> np.ndarray:
        model.alpha, model.beta = a, b
        with torch.no_grad():
            return model.score_against(z, z)["score"].double().numpy()

    np.testing.assert_allclose(score(0.5, 2.0), 0.5 * score(1.0, 4.0), rtol=1e-5, atol=1e-5)
    assert (np.argsort(score(3.0, 3.0)) == np.argsort(score(1.0, 1.0))).all()


# --- mean shift --------------------------------------------------------------------------------------------

def _brute_fit_shift(Z: np.ndarray, k: int, m: int) -> list[np.ndarray]:
    levels = [Z]
    for _ in range(m):
        X = levels[-1]
        d2 = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
        idx = np.argsort(d2, axis=1, kind="stable")[:, :k]  # self (distance 0) + k-1 others
        if len(levels) == 1:  # later levels may hold exact duplicates (same neighbour sets): any copy will do
            assert (idx[:, 0] == np.arange(len(X))).all()
        levels.append(X[idx].mean(axis=1))  # synchronous: every row from the previous level
    return levels


def _brute_new(Q: np.ndarray, refs: list[np.ndarray], k: int) -> np.ndarray:
    q = Q.copy()
    for R in refs:
        d2 = ((q[:, None, :] - R[None, :, :]) ** 2).sum(-1)
        idx = np.argsort(d2, axis=1)[:, :k - 1]
        q = (q + R[idx].sum(axis=1)) / k
    return q


def test_default_k_rule():
    assert [default_k(n) for n in (4, 30, 77, 1000, 20000)] == [5, 5, 9, 32, 100]


def test_fit_set_shift_is_self_inclusive_and_synchronous():
    Z = np.random.default_rng(0).normal(size=(40, 3))
    ours = shift_fit_set(Z, k=6, m=3)
    ref = _brute_fit_shift(Z, k=6, m=3)
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_new_points_shift_against_the_shifted_fit_set():
    rng = np.random.default_rng(1)
    Z, Q = rng.normal(size=(60, 4)), rng.normal(size=(9, 4)) * 2
    levels = shift_fit_set(Z, k=7, m=2)
    expected = _brute_new(Q, levels[:2], k=7)  # R_0 = Z, R_1 = X(1); queries never neighbour each other
    np.testing.assert_allclose(shift_points(Q, levels[:2], 7), expected, rtol=1e-12)
    fit = fit_mean_shift(Z, k=7, m=2, max_ref=None)
    np.testing.assert_allclose(fit.fit_targets, levels[2], rtol=1e-6)
    np.testing.assert_allclose(fit.shift(Q), expected, rtol=1e-5)
    with torch.no_grad():
        graph_targets = fit.module()(torch.as_tensor(Q, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(graph_targets, expected, rtol=1e-4, atol=1e-5)


def test_reference_cap_is_seeded_and_levels_use_the_full_fit_set():
    Z = np.random.default_rng(2).normal(size=(120, 3))
    a = fit_mean_shift(Z, k=6, m=2, max_ref=50, seed=3)
    b = fit_mean_shift(Z, k=6, m=2, max_ref=50, seed=3)
    c = fit_mean_shift(Z, k=6, m=2, max_ref=50, seed=4)
    assert a.n_ref == 50 and a.n_fit == 120 and len(a.refs) == 2
    assert (a.ref_rows == b.ref_rows).all() and not (a.ref_rows == c.ref_rows).all()
    full = shift_fit_set(Z, k=6, m=2)
    for level, ref in zip(full, a.refs):  # rows of the full-set levels, not levels of the subsample
        np.testing.assert_allclose(ref, level[a.ref_rows], rtol=1e-6)
    # under the cap the threshold uses the served path, each reference row leaving itself out
    inside = a.ref_rows[0]
    others = np.delete(np.arange(50), 0)
    expected = _brute_new(Z[inside:inside + 1], [r[others] for r in a.refs], 6)
    np.testing.assert_allclose(a.fit_targets[inside], expected[0], rtol=1e-5)
    outside = np.setdiff1d(np.arange(120), a.ref_rows)[0]
    np.testing.assert_allclose(a.fit_targets[outside], _brute_new(Z[[outside]], a.refs, 6)[0], rtol=1e-5)
    assert fit_mean_shift(Z, k=20, max_ref=50, cap_k="scaled").k_ref == 8
    assert fit_mean_shift(Z, k=None, max_ref=None).k == default_k(120)


def test_mss_parameter_errors():
    X, _ = make_table(n_inliers=40, n_outliers=2)
    for bad in ({"mss_m": 0}, {"mss_k": 1}, {"mss_cap_k": "both"}, {"mss_max_ref": 1}):
        with pytest.raises(ValueError, match="mss_"):
            APREDetector(**FAST, **bad).fit(X)
    with pytest.raises(ValueError, match="var_floor"):
        APREDetector(**FAST, var_floor="big").fit(X)


# --- detectors, explanations, registry ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def fitted_apre():
    X, y = make_table(n_inliers=240, n_outliers=12, d=5, seed=3)
    return APREDetector(**FAST, random_state=0).fit(X), X, y


def test_apre_contributions_sum_to_score(fitted_apre):
    det, X, _ = fitted_apre
    out = det.score_output(X)
    np.testing.assert_allclose(out.contrib.sum(axis=1), out.score, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(out.components["error"] + out.components["uncertainty"], out.score, rtol=1e-5,
                               atol=1e-4)
    assert (out.components["shift_norm"] > 0).all()
    frame = det.explain(X[:5])
    np.testing.assert_allclose(frame.to_numpy().sum(axis=1), det.decision_function(X[:5]), rtol=1e-5, atol=1e-4)
    assert det.mss_.k == default_k(len(X)) and det.mss_.m == 1
    assert det.threshold_ == pytest.approx(np.quantile(det.decision_scores_, 0.9))


def test_benchmark_spec_var_floor_none_turns_the_floor_off():
    from aeguard.benchmark.cells import build_detector

    X, _ = make_table(n_inliers=200, d=4, seed=3)
    det = build_detector("apre(var_floor=none,epochs=20,epochs_per_step=10)", seed=0).fit(X)
    assert det.var_floor is None  # what the spec parser makes of "none"
    assert not det.model_.var_floor.any()


def test_mss_wnll_uses_the_shift_variance_floor(fitted_apre):
    det, X, _ = fitted_apre
    z = det.standardize_(torch.as_tensor(X, dtype=torch.float32))
    z_fit = z.double().numpy()
    floor = ((det.mss_.fit_targets - z_fit) ** 2).mean(axis=0)
    np.testing.assert_allclose(det.model_.var_floor.numpy(), floor, rtol=1e-4)
    t = torch.as_tensor(det.mss_.shift(z.numpy()))
    with torch.no_grad():
        mu, s2 = det.model_(z)
    v = s2.double() + torch.as_tensor(floor) + 1e-5
    expected = (0.5 * ((t.double() - mu.double()) ** 2 / v).sum(1) + 2 * torch.log(v).sum(1)).numpy()
    np.testing.assert_allclose(det.decision_function(X), expected, rtol=1e-4, atol=1e-3)
    # trained on 5/6 with the held-out PRE watched; the best weights are kept
    assert det.history_["n_val"] == round(len(X) / 6) and "best_epoch" in det.history_


def test_apre_without_mss_is_plain_wnll(fitted_apre):
    _, X, _ = fitted_apre
    det = APREDetector(**FAST, mss=False, random_state=0).fit(X)
    z = det.standardize_(torch.as_tensor(X, dtype=torch.float32))
    with torch.no_grad():
        mu, s2 = det.model_(z)
    expected = (0.5 * ((z - mu) ** 2 / (s2 + 1e-5)).sum(1) + 2 * torch.log(s2 + 1e-5).sum(1)).numpy()
    np.testing.assert_allclose(det.decision_function(X), expected, rtol=1e-5, atol=1e-4)
    assert det.mss_ is None and (det.score_output(X).components["shift_norm"] == 0).all()


def test_faithful_uses_the_authors_training_settings():
    det = APREDetector(faithful=True, epochs=10, early_stopping=3, val_fraction=0.2)
    assert det._param("epochs", None) == 5000 and det._param("early_stopping", 1) is None
    assert det._param("val_fraction", 1) == 0.0 and det._param("alpha", None) == 0.5
    assert det._param("restore_best", True) is False and det._param("var_floor", None) == "none"
    assert det._split(60, np.random.default_rng(0))[1].size == 0  # the whole fit set is trained on


def test_ae_mss_through_the_registry():
    rec = registry.get("ae+mss")
    assert rec.mss_compatible and registry.get("apre").mss_compatible
    X, y = make_table(n_inliers=150, n_outliers=8, d=4, seed=5)
    det = registry.create("ae+mss", **FAST, random_state=0, mss_k=6).fit(X)
    assert isinstance(det, MSSMixin) and det.get_params()["mss_k"] == 6 and det.mss_.k == 6
    z = det.standardize_(torch.as_tensor(X, dtype=torch.float32))
    with torch.no_grad():
        recon = det.model_(z).double().numpy()
    target = _brute_new(z.double().numpy(), [z.double().numpy()], 6)
    np.testing.assert_allclose(det.decision_function(X), ((recon - target) ** 2).sum(1), rtol=1e-4, atol=1e-4)
    same = pickle.loads(pickle.dumps(det))
    np.testing.assert_allclose(same.decision_function(X), det.decision_function(X))
    assert clone(det).get_params() == det.get_params()
    assert type(create_with_mss("ae", **FAST)) is AEMSSDetector and with_mss(APREDetector) is APREDetector
    with pytest.raises(ValueError, match="mss_compatible"):
        create_with_mss("iforest")


# --- export parity with the mean shift inside the graph ----------------------------------------------------

@pytest.mark.parametrize("variant", ["fp32", "legacy"])
@pytest.mark.parametrize("name, params", [("apre", {"mss_m": 2}), ("ae+mss", {"mss_max_ref": 100})])
def test_onnx_parity_with_mss_in_graph(tmp_path, variant, name, params):
    X, _ = make_table(n_inliers=200, n_outliers=10, d=5, seed=7)
    det = registry.create(name, **FAST, random_state=0, **params).fit(X)
    path = det.save_artifact(tmp_path / "art", variant=variant)
    graph = onnx.load(str(path / "model.onnx"))
    ops = {node.op_type for node in graph.graph.node}
    assert "TopK" in ops and ("Gather" in ops or "GatherElements" in ops or "GatherND" in ops)
    art = load_artifact(path, device="cpu")
    Xn = make_table(n_inliers=60, n_outliers=5, d=5, seed=8)[0]
    ours, theirs = det.score_output(Xn), art.score(Xn)
    np.testing.assert_allclose(theirs.score, ours.score, rtol=1e-4, atol=1e-4 * np.abs(ours.score).max())
    np.testing.assert_allclose(theirs.contrib, ours.contrib, rtol=1e-4, atol=1e-4 * np.abs(ours.contrib).max())
    assert art.manifest["extra"]["mss"]["n_ref"] == det.mss_.n_ref
    assert art.threshold_ == pytest.approx(det.threshold_)


def test_meanshift_module_matches_sklearn_path_with_cap():
    rng = np.random.default_rng(4)
    Z, Q = rng.normal(size=(300, 6)), rng.normal(size=(40, 6)) * 1.5
    fit = fit_mean_shift(Z, k=9, m=3, max_ref=120, seed=0)
    module = fit.module()
    assert isinstance(module, MeanShift) and module.k == 9
    with torch.no_grad():
        graph = module(torch.as_tensor(Q, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(graph, fit.shift(Q), rtol=1e-4, atol=1e-5)


# --- the authors' label-assisted protocol (benchmark only) --------------------------------------------------

def test_paper_protocol_split_and_tiny_run(odds_dir):
    from aeguard.datasets.loaders import load_dataset
    from aeguard.plugins.apre.paper_protocol import ROW_NAME, paper_protocol_rows, paper_split

    X, y = load_dataset("wine", odds_dir)
    tr, va, te = paper_split(y)
    assert len(np.intersect1d(tr, va)) == len(np.intersect1d(tr, te)) == 0 and len(tr) + len(va) + len(te) == len(y)
    for part, share in ((tr, 0.5), (va, 0.25)):  # per class, as the authors split inliers and outliers apart
        assert abs(y[part].sum() - share * y.sum()) <= 1 and abs((1 - y[part]).sum() - share * (1 - y).sum()) <= 1
    rows = paper_protocol_rows("wine", X, y, epochs=5, step1_seeds=(0,), step2_seeds=(0, 1), k_max=6)
    names = {r["detector"] for r in rows}
    assert ROW_NAME in names and "apre(mss=false) (paper protocol)" in names and len(rows) == 4
    for r in rows:
        assert 0.0 <= r["roc_auc"] <= 1.0 and r["seed"] in (0, 1)
        assert r["k"] is None or 2 <= r["k"] <= 6
