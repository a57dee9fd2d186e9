"""Tests for aeguard.benchmark: protocol, cells, results file, backends (loky, Dask), report and CLI.

Everything is real: small .npz suites written in tmp_path, real detectors (PyOD baselines and a short `ae`
training), a real subprocess killed mid-run, and a real distributed.LocalCluster on 127.0.0.1.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from aeguard.benchmark import BASELINES, make_split, parse_detector_list, parse_detector_spec
from aeguard.benchmark.cells import COLUMNS, OK, Cell, run_cell
from aeguard.benchmark.protocol import baseline_scaling, with_param
from aeguard.benchmark.report import build_report, critical_difference, rank_table, wins_ties_losses
from aeguard.benchmark.results import ResultsFile, read_results
from aeguard.benchmark.runner import resolve_suite, run_benchmark
from aeguard.core.cli import app
from conftest import make_table

AEGUARD = Path(sys.executable).with_name("aeguard")


@pytest.fixture(scope="module")
def suite_dir(tmp_path_factory) -> Path:
    """Two small datasets in a folder: what `--suite DIR` runs."""
    folder = tmp_path_factory.mktemp("suite")
    for name, (n_in, n_out, d, seed) in {"alpha": (180, 20, 5, 1), "beta": (280, 20, 8, 2)}.items():
        X, y = make_table(n_in, n_out, d, seed)
        np.savez(folder / f"{name}.npz", X=X, y=y)
    return folder


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# --- protocol ----------------------------------------------------------------------------------------


def test_make_split_is_stratified_60_40_capped_and_deterministic():
    X, y = make_table(950, 50, 4, 0)
    X_fit, X_test, y_fit, y_test = make_split(X, y, seed=3, fit_cap=None)
    assert (len(X_fit), len(X_test)) == (600, 400)
    assert (y_fit.sum(), y_test.sum()) == (30, 20)  # the outlier ratio is kept in both parts
    again = make_split(X, y, seed=3, fit_cap=None)
    assert all(np.array_equal(a, b) for a, b in zip((X_fit, X_test, y_fit, y_test), again))
    assert not np.array_equal(make_split(X, y, seed=4, fit_cap=None)[1], X_test)

    capped_fit, capped_test, capped_y, _ = make_split(X, y, seed=3, fit_cap=250)
    assert len(capped_fit) == 250 and len(capped_y) == 250
    assert np.array_equal(capped_test, X_test)  # the test split is never subsampled
    fit_rows = {r.tobytes() for r in X_fit}
    assert all(r.tobytes() in fit_rows for r in capped_fit)  # a subsample of the same fit split
    assert np.array_equal(make_split(X, y, seed=3, fit_cap=250)[0], capped_fit)


def test_parse_detector_spec_and_list():
    assert parse_detector_spec("ae") == ("ae", "ae", {})
    assert parse_detector_spec("apre(mss=false,alpha=1,beta=1)") == (
        "apre(mss=false,alpha=1,beta=1)", "apre", {"mss": False, "alpha": 1, "beta": 1})
    assert parse_detector_spec("apre(mss_m=2)")[2] == {"mss_m": 2}
    assert parse_detector_spec("knn(method='mean', sizes=[8, 4], x=none)")[2] == {
        "method": "mean", "sizes": [8, 4], "x": None}
    assert parse_detector_list("ae,apre(mss=false,alpha=1),iforest") == ["ae", "apre(mss=false,alpha=1)", "iforest"]
    assert parse_detector_list("baselines") == list(BASELINES)
    assert parse_detector_list("all,ae", registered=["ae", "iforest"]) == ["ae", "iforest"]
    for bad in ("", "ae(", "ae(epochs)", "ae(x=1,x=2)", "a b", "ae)"):
        with pytest.raises(ValueError):
            parse_detector_list(bad)
    assert with_param("ocsvm", "scaling", "none") == "ocsvm(scaling=none)"
    assert with_param("knn(n_neighbors=10)", "scaling", "none") == "knn(n_neighbors=10,scaling=none)"
    with pytest.raises(ValueError, match="already sets 'scaling'"):
        with_param("knn(scaling=minmax)", "scaling", "none")
    assert [baseline_scaling(s) for s in ("ocsvm", "ocsvm(scaling=none)", "knn(scaling=minmax)", "ae")] == [
        "standard", "none", "minmax", None]


def test_critical_difference_and_ranks():
    # Demsar (2006): k = 3, q = 2.343 -> CD = 2.343 * sqrt(3 * 4 / (6 * 10))
    assert critical_difference(3, 10) == pytest.approx(2.343 * np.sqrt(12 / 60))
    assert critical_difference(12, 27) > critical_difference(10, 27)  # beyond the table, from scipy
    import pandas as pd

    means = pd.DataFrame({"a": [0.9, 0.7, 0.8], "b": [0.8, 0.7, 0.5], "c": [np.nan] * 3},
                         index=["d1", "d2", "d3"])
    ranks = rank_table(means)
    assert list(ranks.columns) == ["a", "b"]  # a detector without results is left out
    assert ranks.loc["d2"].tolist() == [1.5, 1.5]
    assert wins_ties_losses(means, "a", "b") == (2, 1, 0)


def test_ocsvm_scores_equal_pyods_own(table):
    """The adapter evaluates OCSVM's decision function with BLAS; it must match PyOD/libsvm to rounding, on raw
    features and on the fit-split z-score the adapter applies by default."""
    from pyod.models.ocsvm import OCSVM

    from aeguard.core import registry

    X, _ = table
    # unscaled features: nearly every RBF term underflows to 0 (the KD-tree path) except within a tight cluster
    rng = np.random.default_rng(0)
    spread = np.vstack([rng.standard_normal((1400, 4)) * 1000, rng.standard_normal((100, 4))])[rng.permutation(1500)]
    # float32 rows (the adapter rounds its input to float32, as its artifact receives it)
    X, spread = (a.astype(np.float32).astype(np.float64) for a in (X, spread))
    for fit, test in ((X[:200], X[200:]), (spread[:900], spread)):
        for scaling in ("none", "standard"):
            ours = registry.create("ocsvm", random_state=0, scaling=scaling).fit(fit)
            mean, std = (fit.mean(axis=0), fit.std(axis=0, ddof=1) + 1e-5) if scaling == "standard" else (0.0, 1.0)
            ref = OCSVM().fit((fit - mean) / std)
            scale = max(np.abs(ref.decision_scores_).max(), 1.0)
            assert np.allclose(ours.decision_scores_, ref.decision_scores_, rtol=0, atol=1e-10 * scale)
            assert np.allclose(ours.decision_function(test), ref.decision_function((test - mean) / std), rtol=0,
                               atol=1e-10 * scale)


def _noise_dominated_table(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Outliers stand out in 4 unit-scale columns; a fifth column of pure noise is 1e4 times wider, so raw
    distances and kernels see almost only the noise."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((300, 5))
    y = np.r_[np.zeros(280, dtype=int), np.ones(20, dtype=int)]
    X[280:, :4] += 4.0
    X[:, 4] *= 1e4
    order = rng.permutation(len(X))
    return X[order], y[order]


def test_baseline_scaling_is_fitted_on_the_fit_set_and_applied_when_scoring():
    from sklearn.metrics import roc_auc_score

    from aeguard.core import registry

    X, y = _noise_dominated_table(0)
    X = np.column_stack([X, np.full(len(X), 7.0)])  # and a constant column
    X = X.astype(np.float32).astype(np.float64)  # float32 rows, as the adapter (and its artifact) takes them
    fit, test = X[:200], X[200:]
    standard = registry.create("knn", random_state=0).fit(fit)  # the default
    assert standard.scaling == "standard"
    np.testing.assert_array_equal(standard.center_, fit.mean(axis=0))
    # std + 1e-5, and the constant column scaled by its own magnitude (core.validation.standard_scale)
    np.testing.assert_array_equal(standard.scale_, np.r_[fit[:, :-1].std(axis=0, ddof=1) + 1e-5, 7.0])
    minmax = registry.create("knn", random_state=0, scaling="minmax").fit(fit)
    np.testing.assert_array_equal(minmax.center_, fit.min(axis=0))
    np.testing.assert_array_equal(minmax.scale_, np.r_[np.ptp(fit[:, :-1], axis=0), 1.0])  # constant: range 1
    raw = registry.create("knn", random_state=0, scaling=None).fit(fit)  # the spec value `none` parses as None
    np.testing.assert_array_equal(raw.center_, 0.0)

    from pyod.models.knn import KNN

    for det in (standard, minmax, raw):  # the same model fitted and scored on the scaled rows
        z = (test - det.center_) / det.scale_
        ref = KNN().fit((fit - det.center_) / det.scale_)
        np.testing.assert_allclose(det.decision_function(test), ref.decision_function(z), rtol=1e-12)
    # knn on raw features sees almost only the noise column; on scaled ones it finds the outliers
    auc = {d.scaling: roc_auc_score(y[200:], d.decision_function(test)) for d in (standard, minmax, raw)}
    assert auc["standard"] > 0.9 and auc["minmax"] > 0.9 and auc[None] < 0.7, auc
    with pytest.raises(ValueError, match="scaling must be one of 'standard', 'minmax', 'none', got 'zscore'"):
        registry.create("knn", scaling="zscore").fit(fit)


# --- cells and the results file ------------------------------------------------------------------------


def test_run_cell_fits_without_labels_and_reports_errors(suite_dir):
    source = str(suite_dir / "alpha.npz")
    row = run_cell(Cell("alpha", source, "iforest", seed=0))
    assert row["status"] == OK and set(row) == set(COLUMNS)
    assert (row["n_fit"], row["n_test"]) == (120, 80)
    assert 0.5 < row["roc_auc"] <= 1 and 0 < row["ap"] <= 1 and row["fit_seconds"] > 0
    assert row["peak_rss_mb"] >= 0
    assert run_cell(Cell("alpha", source, "iforest", seed=0))["roc_auc"] == row["roc_auc"]  # seeded

    bad = run_cell(Cell("alpha", source, "ae(no_such_param=1)", seed=0))
    assert bad["status"].startswith("error: ParamError: unknown parameter(s) for ae: ['no_such_param']")
    assert bad["roc_auc"] is None
    missing = run_cell(Cell("gone", str(suite_dir / "gone.npz"), "iforest", seed=0))
    assert missing["status"].startswith("error: FileNotFoundError")


def test_results_file_keeps_one_row_per_cell_and_drops_a_cut_line(tmp_path):
    path = tmp_path / "results.csv"
    results = ResultsFile(path)
    assert results.prepare(retry=[]) == [] and path.read_text().strip() == ",".join(COLUMNS)
    ok = {"dataset": "a", "detector": "iforest", "seed": 0, "roc_auc": 0.9, "ap": 0.5, "fit_seconds": 0.1,
          "score_seconds": 0.01, "peak_rss_mb": 1.0, "n_fit": 60, "n_test": 40, "status": OK}
    failed = {**ok, "detector": "ecod", "roc_auc": None, "ap": None, "status": "error: ValueError: x, y"}
    for row in (ok, failed, ok):
        results.append(row)
    with open(path, "a") as fh:
        fh.write("a,knn,0,0.8")  # a write cut short by a kill
    kept = results.prepare(retry=[("a", "ecod", 0)])
    assert [(r["detector"], r["status"]) for r in kept] == [("iforest", OK)]
    assert len(read_results(path)) == 1 and path.read_text().count("\n") == 2
    results.append(failed)
    assert [r["status"] for r in results.prepare(retry=[])] == [OK, "error: ValueError: x, y"]  # not retried


def test_a_results_file_from_before_the_ood_columns_reads_and_is_upgraded_on_resume(tmp_path):
    path = tmp_path / "results.csv"
    old = [c for c in COLUMNS if c not in ("fpr95", "aupr_in")]
    path.write_text(",".join(old) + "\na,iforest,0,0.9,0.5,0.1,0.01,1,60,40,ok\n")
    (row,) = read_results(path)
    assert row["roc_auc"] == 0.9 and row["n_test"] == 40 and row["fpr95"] is None
    ResultsFile(path).prepare(retry=[])
    assert path.read_text().splitlines()[0] == ",".join(COLUMNS) and read_results(path)[0]["ap"] == 0.5
    path.write_text("dataset,detector,seed,auc\n")
    with pytest.raises(ValueError, match="not a benchmark results file"):
        read_results(path)


# --- runs --------------------------------------------------------------------------------------------


def test_cli_end_to_end_with_report(suite_dir, tmp_path):
    out = tmp_path / "run"
    args = ["benchmark", "--suite", str(suite_dir), "--detectors", "ae(epochs=20),iforest,ecod", "--seeds", "2",
            "--out", str(out), "--workers", "1", "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "12 cells run" in result.output

    with open(out / "results.csv", newline="") as fh:
        assert next(csv.reader(fh)) == list(COLUMNS)
    rows = _rows(out / "results.csv")
    # beta (300 x 8) is larger than alpha (200 x 5), so its cells run first; then detector order, then seed
    expected = [(ds, det, str(s)) for ds in ("beta", "alpha") for det in ("ae(epochs=20)", "iforest", "ecod")
                for s in (0, 1)]
    assert [(r["dataset"], r["detector"], r["seed"]) for r in rows] == expected
    assert all(r["status"] == OK and 0 <= float(r["roc_auc"]) <= 1 for r in rows)
    assert {r["n_fit"] for r in rows if r["dataset"] == "alpha"} == {"120"}

    run = json.loads((out / "run.json").read_text())
    assert run["cells_run"] == 12 and run["completed"] and run["wall_seconds"] > 0
    assert run["workers"] == 1 and run["backend"] == "loky" and run["machine"]["cpu_count"]

    report = (out / "report.md").read_text()
    for text in ("ROC-AUC per dataset", "AP per dataset", "avg rank", "Wins / ties / losses", "`ae(epochs=20)`",
                 "fit / iforest", "figures/rank_heatmap.png", "figures/cd_roc_auc.png"):
        assert text in report
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<table>" in page and 'src="figures/cd_ap.png"' in page
    for name in ("rank_heatmap", "cd_roc_auc", "cd_ap", "time_ratio"):
        assert (out / "figures" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"

    (out / "report.md").unlink()
    again = CliRunner().invoke(app, ["benchmark", "--report-only", "--out", str(out)])
    assert again.exit_code == 0 and (out / "report.md").read_text() == report

    rerun = CliRunner().invoke(app, args)  # everything is done: nothing runs, nothing is appended
    assert rerun.exit_code == 0 and "0 cells run" in rerun.output and len(_rows(out / "results.csv")) == 12


def test_failing_cell_is_recorded_the_run_goes_on_and_a_rerun_retries_it(suite_dir, tmp_path):
    suite = resolve_suite(str(suite_dir), names=["beta"])
    specs = ["iforest(n_estimators=-5)", "ecod"]
    summary = run_benchmark(suite, specs, 1, tmp_path, workers=1, progress=False)
    assert (summary.ran, summary.failed) == (2, 1)
    rows = {r["detector"]: r for r in _rows(tmp_path / "results.csv")}
    assert rows["iforest(n_estimators=-5)"]["status"].startswith("error: ")
    assert rows["iforest(n_estimators=-5)"]["roc_auc"] == "" and rows["ecod"]["status"] == OK

    again = run_benchmark(suite, specs, 1, tmp_path, workers=1, progress=False)
    assert (again.skipped, again.ran, again.failed) == (1, 1, 1)  # the failed cell is retried, ecod is not
    assert sorted(r["detector"] for r in _rows(tmp_path / "results.csv")) == sorted(specs)  # one row per cell
    build_report(tmp_path)
    assert "Failed cells" in (tmp_path / "report.md").read_text()


def _die_on_crash_spec(cell: Cell) -> dict:
    """Cell runner for the test below: the process running a ``crash`` cell dies as an OOM-killed one would."""
    if cell.detector == "crash":
        os._exit(137)
    return run_cell(cell)


def test_a_cell_that_kills_its_worker_is_recorded_and_the_other_cells_finish(suite_dir):
    from aeguard.benchmark.backends import _loky

    cells = [Cell(name, str(suite_dir / f"{name}.npz"), detector, 0)
             for name in ("alpha", "beta") for detector in ("iforest", "crash", "ecod")]
    rows = {cell.key: row for cell, row in _loky(cells, workers=2, run=_die_on_crash_spec)}
    assert sorted(rows) == sorted(c.key for c in cells)  # every cell answered once, nothing lost
    for (_, detector, _), row in rows.items():
        if detector == "crash":
            assert row["status"].startswith("error: ") and "TerminatedWorkerError" in row["status"], row
        else:
            assert row["status"] == OK, row  # cells that shared the broken pool were rerun, not failed


@pytest.mark.parametrize("scaling", ["standard", "minmax", "none"])
def test_pca_keeps_only_components_with_variance_on_rank_deficient_splits(table, scaling):
    from aeguard.core import registry

    X, _ = table
    full = registry.create("pca", random_state=0, scaling=scaling).fit(X)
    assert full.estimator_.n_components_ == X.shape[1]  # full rank: PyOD's default, untouched
    X = np.column_stack([X, np.zeros(len(X)), X[:, 0] - 2 * X[:, 1]])  # a constant and a dependent column
    det = registry.create("pca", random_state=0, scaling=scaling).fit(X)
    assert det.estimator_.n_components_ == X.shape[1] - 2
    assert np.isfinite(det.decision_function(X)).all()


def test_paper_protocol_rows_stay_apart_from_label_free_results(suite_dir, tmp_path):
    from aeguard.core import registry

    assert "paper-protocol" in registry.protocols()  # found through the plugin hook, like detectors
    out = tmp_path / "out"
    args = ["benchmark", "--suite", str(suite_dir), "--datasets", "alpha", "--paper-protocol",
            "--protocol-epochs", "3", "--out", str(out), "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = _rows(out / "protocol-paper-protocol.csv")
    assert {r["detector"] for r in rows} == {"apre (paper protocol)", "apre(mss_m=2) (paper protocol)",
                                             "apre(mss_m=3) (paper protocol)", "apre(mss=false) (paper protocol)"}
    assert all(r["status"] == OK and 0 <= float(r["roc_auc"]) <= 1 for r in rows), rows
    assert all(int(r["k"]) >= 2 for r in rows if "mss=false" not in r["detector"]), rows  # the chosen k
    assert not (out / "results.csv").exists()  # label-assisted rows never land among the label-free ones
    assert "label-assisted" in (out / "protocol-paper-protocol.md").read_text()

    again = CliRunner().invoke(app, args)  # a rerun skips the finished dataset
    assert again.exit_code == 0 and "0 datasets run" in again.output
    run_benchmark(resolve_suite(str(suite_dir), names=["alpha"]), ["ecod"], 1, out, workers=1, progress=False)
    build_report(out)
    assert "Label-assisted protocols" in (out / "report.md").read_text()


def test_baseline_scaling_option_reaches_the_baselines_is_recorded_and_keys_the_rows(tmp_path):
    from sklearn.metrics import roc_auc_score

    from aeguard.core import registry

    folder = tmp_path / "suite"
    folder.mkdir()
    X, y = _noise_dominated_table(3)
    np.savez(folder / "wide.npz", X=X, y=y)
    out = tmp_path / "out"
    base = ["benchmark", "--suite", str(folder), "--seeds", "1", "--out", str(out), "--workers", "1",
            "--no-progress"]
    raw = CliRunner().invoke(app, [*base, "--detectors", "ocsvm,knn(scaling=minmax),ae(epochs=2)",
                                   "--baseline-scaling", "none"])
    assert raw.exit_code == 0, raw.output + repr(raw.exception)
    again = CliRunner().invoke(app, [*base, "--detectors", "ocsvm"])  # the default: standard
    assert again.exit_code == 0 and "1 cells run" in again.output, again.output  # not skipped as done

    rows = {r["detector"]: r for r in _rows(out / "results.csv")}
    assert sorted(rows) == ["ae(epochs=2)", "knn(scaling=minmax)", "ocsvm", "ocsvm(scaling=none)"]
    X_fit, X_test, _, y_test = make_split(X, y, seed=0)
    for label, scaling in (("ocsvm", "standard"), ("ocsvm(scaling=none)", "none"), ("knn(scaling=minmax)", "minmax")):
        det = registry.create(parse_detector_spec(label)[1], random_state=0, scaling=scaling).fit(X_fit)
        expected = roc_auc_score(y_test, det.decision_function(X_test))
        assert float(rows[label]["roc_auc"]) == pytest.approx(expected, rel=1e-5), label
    assert float(rows["ocsvm"]["roc_auc"]) > float(rows["ocsvm(scaling=none)"]["roc_auc"]) + 0.1

    run = json.loads((out / "run.json").read_text())
    assert run["baseline_scaling"] == "standard" and run["detectors_run"] == ["ocsvm"]
    assert run["history"][0]["baseline_scaling"] == "none"
    assert run["history"][0]["detectors"] == ["ocsvm(scaling=none)", "knn(scaling=minmax)", "ae(epochs=2)"]
    report = (out / "report.md").read_text()
    assert "`--baseline-scaling none / standard`, recorded in run.json" in report
    assert "fit-split standardized features" in report
    assert "the raw features (no scaling): `ocsvm(scaling=none)`" in report
    assert "Invocation 1: `aeguard" in report and "Invocation 2: `aeguard" in report


def test_run_json_and_report_say_whether_a_training_cache_was_set(suite_dir, tmp_path, monkeypatch):
    """With AEGUARD_TRAIN_CACHE a cached cell's fit time is a load: the invocation record must say so."""
    out, cache = tmp_path / "out", tmp_path / "cache"
    base = ["benchmark", "--suite", str(suite_dir), "--datasets", "alpha", "--seeds", "1", "--out", str(out),
            "--workers", "1", "--no-progress"]
    monkeypatch.setenv("AEGUARD_TRAIN_CACHE", str(cache))
    first = CliRunner().invoke(app, [*base, "--detectors", "ae(epochs=2)"])
    assert first.exit_code == 0, first.output + repr(first.exception)
    assert any(cache.glob("*.npz"))  # the training was cached, so the flag is about something real
    monkeypatch.delenv("AEGUARD_TRAIN_CACHE")
    second = CliRunner().invoke(app, [*base, "--detectors", "ecod"])
    assert second.exit_code == 0, second.output
    run = json.loads((out / "run.json").read_text())
    assert run["history"][0]["training_cache"] == str(cache) and run["training_cache"] is None
    report = (out / "report.md").read_text()
    assert f"training cache `{cache}` (a cell whose training was already cached" in report
    assert "; no training cache; load average" in report


def test_an_output_folder_from_before_baseline_scaling_takes_no_new_baseline_rows(suite_dir, tmp_path):
    suite = resolve_suite(str(suite_dir), names=["alpha"])
    run_benchmark(suite, ["ecod"], 1, tmp_path, workers=1, progress=False)
    record = json.loads((tmp_path / "run.json").read_text())
    del record["baseline_scaling"]  # what a run before the option wrote: its `ecod` saw raw features
    (tmp_path / "run.json").write_text(json.dumps(record))
    with pytest.raises(RuntimeError, match="rows of ecod from before --baseline-scaling"):
        run_benchmark(suite, ["ecod", "iforest"], 1, tmp_path, workers=1, progress=False)
    build_report(tmp_path)
    assert "`ecod(scaling=none)`" in (tmp_path / "report.md").read_text()  # labelled as it would be today


def test_killed_run_resumes_with_only_the_missing_cells(tmp_path):
    folder = tmp_path / "suite"
    folder.mkdir()
    X, y = make_table(1900, 100, 8, 5)
    np.savez(folder / "big.npz", X=X, y=y)
    out = tmp_path / "out"
    args = [str(AEGUARD), "benchmark", "--suite", str(folder), "--detectors", "iforest", "--seeds", "12",
            "--out", str(out), "--workers", "2", "--no-progress"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                            env={**os.environ, "CI": "1"})
    results = out / "results.csv"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if results.exists() and results.read_text().count("\n") >= 2:  # header + first finished cell
                break
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its loky workers, as a crash would
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    before = results.read_text()
    done = len(read_results(results))
    assert 1 <= done < 12

    suite = resolve_suite(str(folder))
    summary = run_benchmark(suite, ["iforest"], 12, out, workers=1, progress=False)
    assert (summary.skipped, summary.ran) == (done, 12 - done)
    rows = _rows(results)
    assert sorted(int(r["seed"]) for r in rows) == list(range(12))  # every cell once, no duplicates
    complete_lines = before[: before.rfind("\n") + 1]
    assert results.read_text().startswith(complete_lines)  # finished cells were kept, not run again
    run = json.loads((out / "run.json").read_text())
    assert run["cells_todo"] == 12 - done and run["history"][0]["completed"] is False


def test_one_run_per_output_folder(suite_dir, tmp_path):
    fcntl = pytest.importorskip("fcntl")
    suite = resolve_suite(str(suite_dir), names=["beta"])
    with open(tmp_path / ".lock", "w") as held:  # another run holds the folder
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(RuntimeError, match="another benchmark run"):
            run_benchmark(suite, ["iforest"], 1, tmp_path, workers=1, progress=False)
    assert run_benchmark(suite, ["iforest"], 1, tmp_path, workers=1, progress=False).ran == 1


def test_dask_backend_on_a_local_cluster(suite_dir, tmp_path):
    distributed = pytest.importorskip("distributed")
    suite = resolve_suite(str(suite_dir))
    reference = run_benchmark(suite, ["iforest", "ecod"], 1, tmp_path / "local", workers=1, progress=False)
    assert reference.failed == 0
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp://",
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        summary = run_benchmark(suite, ["iforest", "ecod"], 1, tmp_path / "dask", backend="dask",
                                scheduler=cluster.scheduler_address, progress=False)
    assert (summary.ran, summary.failed) == (4, 0)
    key = ("dataset", "detector", "seed")
    local = {tuple(r[k] for k in key): r["roc_auc"] for r in _rows(tmp_path / "local" / "results.csv")}
    remote = {tuple(r[k] for k in key): r["roc_auc"] for r in _rows(tmp_path / "dask" / "results.csv")}
    assert remote == local  # same cells, same splits, same seeds: same numbers on the cluster
    assert json.loads((tmp_path / "dask" / "run.json").read_text())["backend"] == "dask"


def test_ray_backend_without_ray_says_how_to_install(suite_dir, tmp_path):
    try:
        import ray  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("ray is installed")
    suite = resolve_suite(str(suite_dir), names=["beta"])
    with pytest.raises(RuntimeError, match="pip install"):
        run_benchmark(suite, ["iforest"], 1, tmp_path, backend="ray", progress=False)


# --- suites and CLI errors -------------------------------------------------------------------------------


def test_odds_suite_lists_missing_datasets(odds_dir):
    suite = resolve_suite("odds", odds_dir)
    names = [e.name for e in suite.datasets]
    assert len(names) == 27 and sorted(suite.missing) == ["heart", "mulcross", "speech", "yeast"]
    http = next(e for e in suite.datasets if e.name == "http")
    assert (http.n, http.d) == (567498, 3)  # the local file's shape, used to schedule big cells first
    assert names.index("wine") >= 0 and resolve_suite("odds", odds_dir, ["wine"]).missing == []
    with pytest.raises(ValueError, match="not found"):
        resolve_suite("odds", odds_dir, ["speech"])


@pytest.mark.parametrize(("args", "message"), [
    (["--detectors", "nope"], "unknown detector(s): nope"),
    (["--datasets", "gamma"], "unknown dataset(s)"),
    (["--backend", "spark"], "unknown backend"),
    (["--seeds", "0"], "--seeds must be at least 1"),
    (["--baseline-scaling", "zscore"], "--baseline-scaling must be one of standard, minmax, none"),
])
def test_cli_rejects_bad_arguments(suite_dir, tmp_path, args, message):
    result = CliRunner().invoke(app, ["benchmark", "--suite", str(suite_dir), "--detectors", "iforest",
                                      "--out", str(tmp_path), *args])
    assert result.exit_code != 0 and message in str(result.exception)
    assert not (tmp_path / "results.csv").exists() or len(_rows(tmp_path / "results.csv")) == 0


def test_report_only_without_results_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(app, ["benchmark", "--report-only", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "no results" in str(result.exception)


def test_cli_module_imports_no_heavy_libraries():
    code = ("import sys, aeguard.benchmark.cli, aeguard.core.cli; "
            "print(sorted(m for m in ('torch', 'pyod', 'sklearn', 'matplotlib', 'distributed') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_report_ranks_detectors_of_another_run_from_its_results_or_its_page(suite_dir, tmp_path):
    suite = resolve_suite(str(suite_dir), names=["alpha"])
    run_benchmark(suite, ["iforest", "ecod"], 2, tmp_path / "a", workers=1, progress=False)
    run_benchmark(suite, ["hbos", "ecod"], 2, tmp_path / "b", workers=1, progress=False)
    build_report(tmp_path / "b")
    own = {(r["dataset"], r["detector"]): r for r in _rows(tmp_path / "a" / "results.csv")}
    theirs = [r for r in _rows(tmp_path / "b" / "results.csv") if r["detector"] == "hbos"]

    base = ["benchmark", "--report-only", "--out", str(tmp_path / "a")]
    result = CliRunner().invoke(app, [*base, "--with", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    rows_report = (tmp_path / "a" / "report.md").read_text()
    assert "Merged source 1: `hbos`: per-seed rows from" in rows_report  # ecod is a's own, never b's
    assert "Cells: 4 in results.csv" in rows_report  # a's own cells; b's are counted in its source line
    summary = rows_report.split("## Summary")[1].split("\n\n")[1]
    hbos_line = next(line for line in summary.splitlines() if line.startswith("| `hbos`"))
    assert hbos_line.endswith("| – | – |")  # times of another run are not set against a's iforest
    timing = rows_report.split("## Cost relative")[1]
    assert "| `hbos`" not in timing and "| `ecod`" in timing

    result = CliRunner().invoke(app, [*base, "--with", str(tmp_path / "b" / "report.md"), "--with-detectors",
                                      "hbos", "--report-to", str(tmp_path / "page.md")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    page_report = (tmp_path / "page.md").read_text()
    assert "`hbos`: per-dataset mean ± std over 2 seeds read from the report page" in page_report

    def cell(report: str, dataset: str, column: int) -> str:
        table = report.split("## ROC-AUC per dataset")[1]
        return next(line for line in table.splitlines() if line.startswith(f"| {dataset} ")).split(" | ")[column]

    for dataset in ("alpha",):  # columns: dataset, iforest, ecod, hbos
        values = [float(r["roc_auc"]) for r in theirs if r["dataset"] == dataset]
        expected = f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"
        assert cell(rows_report, dataset, 3).strip("* |") == cell(page_report, dataset, 3).strip("* |") == expected
        assert cell(page_report, dataset, 1).strip("* ").startswith(
            f"{np.mean([float(r['roc_auc']) for k, r in own.items() if k == (dataset, 'iforest')]):.3f}")

    # a page from before --baseline-scaling fitted raw features: its bare baseline names are relabelled
    old = tmp_path / "old.md"
    old.write_text((tmp_path / "b" / "report.md").read_text().replace("Baseline input:", "Baselines:"))
    result = CliRunner().invoke(app, [*base, "--with", str(old)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "`ecod(scaling=none)`, `hbos(scaling=none)`: per-dataset" in (tmp_path / "a" / "report.md").read_text()

    for extra, message in ((["--with", str(tmp_path / "b"), "--with-detectors", "hbos,knn"], "knn found in no source"),
                           (["--with", str(tmp_path / "b"), "--with-detectors", "ecod"], "adds no detector of ecod"),
                           (["--with", str(tmp_path / "nowhere.csv")], "no such file")):
        result = CliRunner().invoke(app, [*base, *extra])
        assert result.exit_code != 0 and message in str(result.exception)
