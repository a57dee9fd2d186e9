"""The PyOD baselines as ONNX artifacts: graph parity with PyOD's own ``decision_function``, the knn/lof reference
cap, refusals of options a graph cannot express, and scoring without scikit-learn/PyOD (API, both CLIs, HTTP)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aeguard.core import registry
from aeguard.core.artifact import ArtifactError, load_artifact, read_manifest
from aeguard.core.metrics import roc_auc
from aeguard.edge.variants import export_variant
from aeguard.plugins import PYOD_BASELINES
from aeguard.plugins.classical.graphs import tail_terms
from aeguard.plugins.pyod_baselines import CONTRIB_METHODS, TAIL_METHODS
from conftest import make_table

NAMES = sorted(PYOD_BASELINES)
BIN = Path(sys.executable).parent
HEAVY = ("torch", "pytorch_lightning", "lightning", "sklearn", "pyod", "scipy", "numba")
#: graph vs PyOD: relative error, with a floor of 1e-9 of the largest |score| (ocsvm and iforest scores cross 0)
EXACT = 1e-6


def parity_error(got: np.ndarray, want: np.ndarray) -> float:
    floor = 1e-9 * float(np.max(np.abs(want)))
    return float(np.max(np.abs(got - want) / np.maximum(np.abs(want), floor)))


@pytest.fixture(scope="module")
def data():
    """Gaussian table plus what real data has and the tie-free table lacks: a discrete column and duplicate rows."""
    X, y = make_table(n_inliers=300, n_outliers=15, d=5, seed=4)
    rng = np.random.default_rng(4)
    X = np.column_stack([X, rng.integers(0, 4, len(X)).astype(np.float64)])
    X[10:14] = X[20]  # duplicates
    cols = [f"f{i}" for i in range(X.shape[1])]
    return pd.DataFrame(X, columns=cols), y


@pytest.fixture(scope="module")
def arts(data, tmp_path_factory):
    frame, _ = data
    root = tmp_path_factory.mktemp("classical")
    out = {}
    for name in NAMES:
        det = registry.create(name, random_state=0).fit(frame)
        out[name] = (det, det.save_artifact(root / name))
    return out


def pyod_scores(det, X: np.ndarray, rows: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """(row indices, PyOD's decision_function of those rows on the adapter's scaled input); ECOD/COPOD score
    each row as a batch of one (the graph's rule), the others the whole matrix at once."""
    Z = det._scaled(X)
    if det.algorithm in TAIL_METHODS:
        idx = np.linspace(0, len(X) - 1, rows).astype(int)
        return idx, np.array([det.estimator_.decision_function(Z[i:i + 1])[0] for i in idx])
    return np.arange(len(X)), np.asarray(det.estimator_.decision_function(Z), dtype=np.float64)


@pytest.mark.parametrize("name", NAMES)
def test_graph_equals_pyod_decision_function(name, arts, data):
    frame, _ = data
    det, path = arts[name]
    out = load_artifact(path).score(frame)
    idx, want = pyod_scores(det, frame.to_numpy())
    err = parity_error(out.score[idx], want)
    assert err <= EXACT, f"{name}: max relative error {err:.3g} against PyOD"
    np.testing.assert_allclose(out.score, det.decision_function(frame), rtol=1e-12, atol=1e-12)
    if name in CONTRIB_METHODS:
        np.testing.assert_allclose(out.contrib.sum(axis=1), out.score, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(out.contrib, det.score_output(frame).contrib, rtol=1e-6, atol=1e-6)
    else:
        assert np.isnan(out.contrib).all() and out.contrib.shape == frame.shape
    manifest = read_manifest(path)
    assert manifest["preprocessing"]["type"] == "standardize" and manifest["extra"]["scaling"] == "standard"
    np.testing.assert_allclose(manifest["preprocessing"]["scale"], frame.to_numpy().std(axis=0, ddof=1) + 1e-5,
                               rtol=1e-6)


def test_tail_terms_are_pyod_batch_of_one():
    """The numpy twin of the ECOD/COPOD graphs against PyOD itself, including a constant column."""
    from pyod.models.copod import COPOD
    from pyod.models.ecod import ECOD

    X, _ = make_table(n_inliers=120, n_outliers=6, d=3, seed=7)
    X = np.column_stack([X, np.zeros(len(X))])
    Q = np.vstack([X[:5], X[:3] * 3.0 + 1.0, np.full((1, 4), 0.25)])
    for method, cls in (("ecod", ECOD), ("copod", COPOD)):
        model = cls().fit(X)
        want = np.array([model.decision_function(q[None])[0] for q in Q])
        got = tail_terms(np.sort(X, axis=0), Q, method).sum(axis=1)
        assert parity_error(got, want) <= 1e-12, method


@pytest.mark.parametrize("name", ["knn", "lof"])
def test_reference_cap(name, tmp_path):
    """Larger fit set than the cap: the capped graph equals the capped PyOD model, fit rows in the reference leave
    themselves out, and the cap costs little ROC-AUC against the uncapped model."""
    X, y = make_table(n_inliers=2400, n_outliers=120, d=6, seed=5)
    capped = registry.create(name, random_state=0, max_ref=600).fit(X)
    full = registry.create(name, random_state=0, max_ref=None).fit(X)
    assert capped.reference_.capped and capped.reference_.n_ref == 600 and not full.reference_.capped
    art = load_artifact(capped.save_artifact(tmp_path / "capped"))
    assert read_manifest(tmp_path / "capped")["extra"]["reference"]["n_ref"] == 600
    assert parity_error(art.score(X).score, capped.estimator_.decision_function(capped._scaled(X))) <= EXACT
    own = capped.reference_.own_rows()
    np.testing.assert_allclose(capped.decision_scores_[own >= 0], capped.estimator_.decision_scores_[own[own >= 0]])
    np.testing.assert_allclose(capped.decision_scores_[own < 0], art.score(X[own < 0]).score, rtol=1e-9)
    assert abs(roc_auc(y, capped.decision_scores_) - roc_auc(y, full.decision_scores_)) < 0.03


@pytest.mark.parametrize(("name", "params", "message"), [
    ("knn", {"metric": "manhattan"}, "knn option metric='manhattan'"),
    ("lof", {"p": 1}, "lof option metric='minkowski' (p=1)"),
    ("ocsvm", {"kernel": "linear"}, "ocsvm option kernel='linear'"),
])
def test_inexpressible_options_are_refused(name, params, message, data, tmp_path):
    det = registry.create(name, random_state=0, params=params).fit(data[0])
    with pytest.raises(ArtifactError, match=message.replace("(", r"\(").replace(")", r"\)")):
        det.save_artifact(tmp_path / name)


def test_int8_refused_legacy_converts(arts, data, tmp_path):
    _, path = arts["knn"]
    with pytest.raises(ArtifactError, match="has no INT8 variant: a classical baseline's graph holds fit data"):
        export_variant(path, tmp_path / "int8", int8=True)
    legacy = export_variant(path, tmp_path / "legacy", legacy=True)  # NaN contrib compares as equal
    assert read_manifest(legacy)["graph"]["check"]["max_abs_diff"]["contrib"] == 0.0
    np.testing.assert_allclose(load_artifact(legacy).score(data[0]).score, load_artifact(path).score(data[0]).score)


def test_scoring_needs_no_sklearn_or_pyod(arts, data, tmp_path):
    """Every baseline artifact scored through the API, `aeguard score` and `aeguard-edge score` in one fresh
    process: none of torch, scikit-learn, PyOD, scipy is imported."""
    csv = tmp_path / "data.csv"
    data[0].to_csv(csv, index=False)
    paths = {name: str(path) for name, (_, path) in arts.items()}
    code = f"""
import json, sys
import pandas as pd
from aeguard.core.artifact import load_artifact
frame = pd.read_csv({str(csv)!r})
scores = {{name: load_artifact(p).score(frame).score.tolist() for name, p in {paths!r}.items()}}
from aeguard.core.cli import main as aeguard_main
from aeguard.edge.cli import main as edge_main
sys.argv = ["aeguard", "score", {paths['iforest']!r}, {str(csv)!r}, "-o", {str(tmp_path / 'a.csv')!r}]
edge_argv = ["score", {paths['lof']!r}, {str(csv)!r}, "-o", {str(tmp_path / 'e.csv')!r}]
for call in (aeguard_main, lambda: edge_main(edge_argv)):
    try:
        call()
    except SystemExit as exc:
        assert not exc.code, exc.code
print(json.dumps({{"heavy": sorted(m for m in {HEAVY!r} if m in sys.modules), "scores": scores}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    for name, (det, _) in arts.items():
        np.testing.assert_allclose(result["scores"][name], det.decision_function(data[0]), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(pd.read_csv(tmp_path / "a.csv")["score"], result["scores"]["iforest"], rtol=1e-6)
    np.testing.assert_allclose(pd.read_csv(tmp_path / "e.csv")["score"], result["scores"]["lof"], rtol=1e-6)


def test_cli_fit_iforest_then_edge_score(data, tmp_path):
    """The issue's "done when": `aeguard fit iforest DATA -o ART && aeguard-edge score ART DATA`."""
    frame, y = data
    csv = tmp_path / "data.csv"
    frame.assign(label=y).to_csv(csv, index=False)
    fit = subprocess.run([str(BIN / "aeguard"), "fit", "iforest", str(csv), "-o", str(tmp_path / "art"),
                          "--label-column", "label", "--seed", "0"], capture_output=True, text=True, timeout=300)
    assert fit.returncode == 0, fit.stderr
    score = subprocess.run([str(BIN / "aeguard-edge"), "score", str(tmp_path / "art"), str(csv), "--label-column",
                            "label"], capture_output=True, text=True, timeout=120)
    assert score.returncode == 0, score.stderr
    from io import StringIO

    edge = pd.read_csv(StringIO(score.stdout))
    det = registry.create("iforest", random_state=0).fit(frame)
    np.testing.assert_allclose(edge["score"], det.decision_function(frame), rtol=1e-6, atol=1e-9)


@pytest.fixture(scope="module")
def server(arts):
    pytest.importorskip("bentoml")
    from aeguard.serving.bench import LocalServer

    srv = LocalServer([f"{name}={path}" for name, (_, path) in arts.items()])
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


@pytest.mark.parametrize("name", ["iforest", "hbos"])
def test_http_scores_equal_in_process(name, server, arts, data):
    """A real `bentoml serve` with every baseline; one method without and one with per-feature terms."""
    httpx = pytest.importorskip("httpx")
    frame, _ = data
    det, _ = arts[name]
    body = {"model": name, "rows": frame.head(40).to_dict(orient="records"), "explain": True}
    response = httpx.post(f"{server.url}/score", json=body, timeout=60.0)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    np.testing.assert_allclose([r["score"] for r in results], det.decision_function(frame.head(40)), rtol=1e-6)
    contrib = [list(r["contributions"].values()) for r in results]
    if name in CONTRIB_METHODS:
        np.testing.assert_allclose(contrib, det.score_output(frame.head(40)).contrib, rtol=1e-5, atol=1e-6)
    else:
        assert all(v is None for row in contrib for v in row)  # NaN: no per-feature split


def test_explain_says_when_an_artifact_has_no_contributions(arts, data, tmp_path):
    """knn has no natural per-feature split (NaN contrib): explain writes the CSV, says so, draws no empty bars;
    ecod has one and gets its pictures."""
    from typer.testing import CliRunner

    from aeguard.core.cli import app

    frame, _ = data
    csv = tmp_path / "d.csv"
    frame.to_csv(csv, index=False)
    for name, pictures in (("knn", 0), ("ecod", 3)):
        out = tmp_path / name
        result = CliRunner().invoke(app, ["explain", str(arts[name][1]), str(csv), "-o", str(out), "--top", "3"])
        assert result.exit_code == 0, result.output
        assert len(list(out.glob("*.png"))) == pictures
        assert len(pd.read_csv(out / "contributions.csv")) == len(frame)
        assert ("no per-feature contributions" in result.output) == (pictures == 0)
