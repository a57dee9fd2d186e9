"""Issue 17: every row of its table, through the CLI and the Python API (real fits, kept small)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from aeguard.core import registry
from aeguard.core.cli import app
from aeguard.core.params import Bool, Float, Int, ParamError, coerce_params, parse_literal
from conftest import make_table

FAST = ["--param", "epochs=20", "--param", "epochs_per_step=10"]


def aeguard(*args: object, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
    """The real command (a subprocess): exit code and the one-line error format are part of what is tested."""
    proc = subprocess.run([sys.executable, "-m", "aeguard.core.cli", *map(str, args)], capture_output=True,
                          text=True, input=stdin)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def invoke(*args: object):
    """The command in process (fast): errors stay exceptions in ``result.exception``."""
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory):
    X, y = make_table(150, 10, 4, seed=3)
    path = tmp_path_factory.mktemp("usability") / "d.csv"
    pd.DataFrame(X, columns=[f"s{i}" for i in range(4)]).assign(label=y).to_csv(path, index=False)
    return path


# --- row 1: booleans and the two parsers that disagreed ------------------------------------------------------

@pytest.mark.parametrize("text", ["False", "false", "no", "NO", "off", "Off", "0"])
def test_false_words_are_false_in_param_and_benchmark_spec(text):
    assert registry.build_detector("apre", {"mss": text}).mss is False
    assert registry.build_detector("apre", {"faithful": text}).faithful is False
    from aeguard.benchmark.cells import build_detector

    assert build_detector(f"apre(mss={text},faithful={text})", 0).get_params()["mss"] is False


@pytest.mark.parametrize("text", ["True", "yes", "ON", "1"])
def test_true_words_are_true(text):
    assert registry.build_detector("apre", {"mss": text}).mss is True


def test_literals_and_none():
    assert [parse_literal(t) for t in ("None", "null", "3", "2.5", "[1, 2]", "'a'", "abc", "Off")] == \
        [None, None, 3, 2.5, [1, 2], "a", "abc", False]
    assert registry.build_detector("ae", {"batch_size": "none"}).batch_size is None
    assert registry.build_detector("apre", {"var_floor": "none"}).var_floor == "none"


def test_mss_false_through_fit_reaches_the_artifact(csv_path, tmp_path):
    out = tmp_path / "apre-nomss"
    result = invoke("fit", "apre", csv_path, "-o", out, "--label-column", "label", "--param", "mss=False",
                    "--param", "epochs=10", "--param", "epochs_per_step=10")
    assert result.exit_code == 0, result.exception
    import json

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["detector"]["params"]["mss"] is False
    assert "mss" not in manifest["extra"]  # with MSS on (the default, and what the old parser gave) it records "mss"


# --- row 2: every bad value names the parameter -----------------------------------------------------------

BAD_PARAMS = [
    ("epochs", "abc", "epochs must be an int >= 1, got 'abc'"),
    ("lr", "abc", "lr must be a number > 0, got 'abc'"),
    ("epochs_per_step", "0", "epochs_per_step must be an int >= 1, got 0"),
    ("epochs", "2.5", "epochs must be an int >= 1, got 2.5"),
    ("val_fraction", "1.5", "val_fraction must be a number >= 0 and < 1, got 1.5"),
    ("batch_size", "0", "batch_size must be an int >= 1 or None (full batch), got 0"),
    ("early_stopping", "-3", "early_stopping must be an int >= 1 or None (off), got -3"),
    ("mss", "maybe", "mss must be a boolean (true/false, yes/no, on/off), got 'maybe'"),
    ("device", "tpu", "device must be one of 'auto', 'cpu', 'cuda', got 'tpu'"),
]


@pytest.mark.parametrize(("key", "value", "message"), BAD_PARAMS)
def test_bad_param_values_are_named_in_cli_and_api(key, value, message, csv_path, tmp_path):
    result = invoke("fit", "ae+mss", csv_path, "-o", tmp_path / "x", "--label-column", "label", "--param",
                    f"{key}={value}")
    assert result.exit_code != 0 and str(result.exception) == message
    assert not (tmp_path / "x").exists()
    typed = parse_literal(value)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        registry.create("ae+mss", **{key: typed}).fit(np.random.default_rng(0).standard_normal((20, 3)))


def test_unknown_parameter_lists_the_valid_ones(csv_path, tmp_path):
    proc = aeguard("fit", "ae", csv_path, "-o", tmp_path / "x", "--param", "epochz=3", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == ("error: unknown parameter(s) for ae: ['epochz']; valid: batch_size, "
                                   "contamination, device, early_stopping, epochs, epochs_per_step, lr, "
                                   "member_grid, member_subsample, n_members, random_state, val_fraction, verbose")
    with pytest.raises(ParamError, match=r"unknown parameter\(s\) for knn: \['bogus'\]; valid: .*n_neighbors"):
        registry.build_detector("knn", {"bogus": "1"})
    assert registry.build_detector("knn", {"n_neighbors": "10"}).params == {"n_neighbors": 10}


def test_spec_objects():
    assert Int(low=1).parse("n", "1e3") == 1000 and Float(low=0, high=1).parse("f", "0.5") == 0.5
    with pytest.raises(ParamError, match="n must be an int >= 1, got True"):
        Int(low=1).check("n", True)
    with pytest.raises(ParamError, match="b must be a boolean"):
        Bool().check("b", "False")  # a string is not a bool when it comes from Python
    with pytest.raises(ParamError, match="algorithm is fixed for knn"):
        coerce_params(registry.get("knn").cls, {"algorithm": "lof"}, "knn", dict(registry.get("knn").fixed_params))


def test_example_plugin_declares_its_specs(example_plugin_installed):
    with pytest.raises(ValueError, match="min_scale must be a number > 0, got -1"):
        registry.build_detector(example_plugin_installed, {"min_scale": "-1"})


# --- row 4: benchmark specs checked before the run; all-failed exits non-zero ------------------------------

@pytest.fixture(scope="module")
def suite_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("suite")
    X, y = make_table(120, 12, 4, seed=1)
    np.savez(folder / "alpha.npz", X=X, y=y)
    return folder


def test_benchmark_refuses_bad_specs_before_running(suite_dir, tmp_path):
    result = invoke("benchmark", "--suite", suite_dir, "--detectors", "iforest(bogus=1),ae(epochs=abc)",
                    "--seeds", "1", "--out", tmp_path, "--no-progress")
    assert result.exit_code != 0
    assert "detector spec 'iforest(bogus=1)': unknown parameter(s) for iforest: ['bogus']" in str(result.exception)
    assert not (tmp_path / "results.csv").exists()
    result = invoke("benchmark", "--suite", suite_dir, "--detectors", "ae(epochs=abc)", "--out", tmp_path)
    assert "detector spec 'ae(epochs=abc)': epochs must be an int >= 1, got 'abc'" in str(result.exception)


def test_benchmark_where_every_cell_fails_exits_nonzero(suite_dir, tmp_path):
    result = invoke("benchmark", "--suite", suite_dir, "--detectors", "iforest(n_estimators=-5)", "--seeds", "2",
                    "--out", tmp_path, "--workers", "1", "--no-progress")
    assert result.exit_code == 1, result.output
    assert "every cell failed (2 of 2)" in result.output


# --- shared small artifact for the input and `score` rows ---------------------------------------------------

@pytest.fixture(scope="module")
def fitted(csv_path):
    """An `ae` fitted on csv_path's features (API), its artifact folder and the frame."""
    frame = pd.read_csv(csv_path)
    features = frame.drop(columns="label")
    det = registry.create("ae", epochs=20, epochs_per_step=10, random_state=0).fit(features)
    out = csv_path.parent / "ae-art"
    det.save_artifact(out)
    return det, out, frame


def _with_cell(frame: pd.DataFrame, row: int, col: str, value: float) -> pd.DataFrame:
    out = frame.copy()
    out.loc[row, col] = value
    return out


# --- row 3: one input rule; a non-finite score is never an inlier -------------------------------------------

F32_MESSAGE = "value out of float32 range in row 2, feature 's1': the model computes in float32"


def test_values_beyond_float32_are_refused_everywhere(fitted, tmp_path):
    from aeguard.core.artifact import load_artifact
    from aeguard.serving.inputs import RequestError, matrix_from_csv

    det, art, frame = fitted
    bad = _with_cell(frame, 2, "s1", 1e39)
    path = tmp_path / "big.csv"
    bad.to_csv(path, index=False)
    features = bad.drop(columns="label")
    for call in (lambda: det.decision_function(features), lambda: load_artifact(art).score(features),
                 lambda: registry.create("ae", epochs=2).fit(features),
                 lambda: registry.create("iforest").fit(features)):
        with pytest.raises(ValueError, match=F32_MESSAGE):
            call()
    for cmd in ([sys.executable, "-m", "aeguard.core.cli", "score"], [sys.executable, "-m", "aeguard.edge.cli",
                                                                      "score"]):
        proc = subprocess.run([*cmd, str(art), str(path), "--label-column", "label"], capture_output=True,
                              text=True)
        assert proc.returncode == 1 and proc.stderr.strip() == f"error: {F32_MESSAGE}" and proc.stdout == ""
    with pytest.raises(RequestError, match=F32_MESSAGE):  # the server's check is the same function
        matrix_from_csv(path, [f"s{i}" for i in range(4)] + ["label"], 1000)
    result = invoke("fit", "ae", path, "-o", tmp_path / "x", "--label-column", "label", "--param", "epochs=2")
    assert str(result.exception) == F32_MESSAGE  # at fit: the cell, not "training diverged"


def test_a_non_finite_score_is_an_error_or_an_explicit_nan_row(fitted):
    from aeguard.core.artifact import load_artifact
    from aeguard.edge.cli import watch

    det, art, frame = fitted
    extreme = _with_cell(frame, 2, "s1", 3e38).drop(columns="label")  # in float32 range; the graph overflows
    model = load_artifact(art)
    with pytest.raises(ValueError, match=r"non-finite score \((nan|inf)\) in row 2"):
        model.score(extreme)
    with pytest.raises(ValueError, match=r"non-finite score \((nan|inf)\) in row 2"):
        det.predict(extreme)
    import io

    lines = ["1,2,3,4\n", f"{extreme.iloc[2, 0]},{3e38},1,1\n", "1,2,3,4\n"]
    out, err = io.StringIO(), io.StringIO()
    assert watch(model, lines, out, err, on_error="nan") == (2, 1)
    rows = out.getvalue().splitlines()
    assert len(rows) == 3 and rows[1] == "nan,nan,nan" and "non-finite score" in err.getvalue()


# --- row 5: empty and header-only files ----------------------------------------------------------------------

def test_header_only_and_empty_files_say_no_rows(fitted, tmp_path):
    from aeguard.core.validation import check_features

    _, art, frame = fitted
    header = tmp_path / "header.csv"
    frame.head(0).to_csv(header, index=False)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    for path in (header, empty):
        for args in (("fit", "ae", path, "-o", tmp_path / "x"), ("score", art, path)):
            result = invoke(*args)
            assert result.exit_code != 0 and "no rows" in str(result.exception), result.exception
    with pytest.raises(ValueError, match="no rows"):
        check_features(frame.head(0))
    with pytest.raises(ValueError, match="no rows"):
        registry.create("ae").fit(np.empty((0, 3)))
    wide = pd.DataFrame({f"c{i}": ["a"] for i in range(12)})  # the list of bad columns says how many it left out
    with pytest.raises(ValueError, match=r"non-numeric column\(s\) \['c0', .*'c9'\] and 2 more"):
        check_features(wide)


# --- row 6 and 7: warnings at fit (one line each), constant columns that cannot explode ----------------------

def _fit_stderr(path, tmp_path, *extra):
    result = invoke("fit", "ae", path, "-o", tmp_path / "art", "--seed", "0", *FAST, *extra)
    assert result.exit_code == 0, result.exception
    return [line for line in result.stderr.splitlines() if line.startswith("warning: ")]


def test_fit_warns_about_tables_that_were_probably_misread(fitted, tmp_path):
    _, _, frame = fitted
    features = frame.drop(columns="label")
    features.to_csv(tmp_path / "nohead.csv", index=False, header=False)
    (warning,) = _fit_stderr(tmp_path / "nohead.csv", tmp_path)
    assert warning.startswith("warning: the header looks like data") and "first data row" in warning
    features.to_csv(tmp_path / "index.csv")
    (warning,) = _fit_stderr(tmp_path / "index.csv", tmp_path)
    assert "['Unnamed: 0'] look like a saved pandas index" in warning
    frame.to_parquet(tmp_path / "lab.parquet")
    (warning,) = _fit_stderr(tmp_path / "lab.parquet", tmp_path)
    assert "['label'] are named like labels" in warning and "--label-column label" in warning
    assert _fit_stderr(tmp_path / "lab.parquet", tmp_path, "--label-column", "label") == []
    features.assign(y=0, Class=1.0).to_csv(tmp_path / "y.csv", index=False)
    warnings = _fit_stderr(tmp_path / "y.csv", tmp_path)
    assert any("['y', 'Class'] are named like labels" in w for w in warnings)


def test_constant_columns_and_extreme_values_warn_and_cannot_explode_scores(fitted, tmp_path):
    from aeguard.core.artifact import load_artifact

    _, _, frame = fitted
    features = frame.drop(columns="label").assign(k=0.0)
    features.to_csv(tmp_path / "const.csv", index=False)
    (warning,) = _fit_stderr(tmp_path / "const.csv", tmp_path)
    assert "constant column(s) ['k']" in warning and "scale max(|value|, 1)" in warning
    model = load_artifact(tmp_path / "art")
    base = model.score(features.head(20)).score
    moved = model.score(features.head(20).assign(k=1.0)).score  # the always-0 sensor reads 1
    # with std + 1e-5 the change would be 1e5 spreads, a score of ~1e10; here it weighs like one spread
    assert moved.max() < 10 * base.max() and np.abs(moved - base).max() < 10
    from aeguard.core.validation import DataWarning

    for name in ("ae+mss", "apre"):  # every standardizing deep detector shares the rule
        with pytest.warns(DataWarning, match=r"constant column\(s\) \['k'\]"):  # a plain Python fit says so too
            det = registry.create(name, epochs=10, epochs_per_step=10, random_state=0).fit(features)
        assert det.standardize_.scale[-1].item() == 1.0
    big = _with_cell(frame.drop(columns="label"), 7, "s1", 1e30)
    big.to_csv(tmp_path / "big.csv", index=False)
    (warning,) = _fit_stderr(tmp_path / "big.csv", tmp_path)
    assert "extreme value 1e+30 in row 7, feature 's1'" in warning


# --- row 8: labels only feed the report ----------------------------------------------------------------------

def test_non_binary_labels_warn_or_use_outlier_value_and_exit_zero(fitted, tmp_path):
    _, _, frame = fitted
    words = frame.assign(label=np.where(frame["label"] == 1, "anomaly", "normal"))
    words.to_csv(tmp_path / "words.csv", index=False)
    proc = invoke("fit", "ae", tmp_path / "words.csv", "-o", tmp_path / "a", "--label-column", "label", *FAST)
    assert proc.exit_code == 0 and "wrote" in proc.stdout and "ROC-AUC" not in proc.stdout
    assert "labels are not 0/1 (values: 'anomaly', 'normal'); pass --outlier-value" in proc.stderr
    assert (tmp_path / "a" / "manifest.json").exists()
    frame.assign(label=frame["label"] + 1).to_csv(tmp_path / "12.csv", index=False)
    result = invoke("fit", "ae", tmp_path / "12.csv", "-o", tmp_path / "b", "--label-column", "label",
                    "--outlier-value", "2", *FAST)
    assert result.exit_code == 0 and "fit set ROC-AUC" in result.stdout and " AP " in result.stdout
    result = invoke("fit", "ae", tmp_path / "12.csv", "-o", tmp_path / "c", "--label-column", "label",
                    "--outlier-value", "anomaly", *FAST)
    assert "--outlier-value 'anomaly' matches no label (values: 1, 2)" in str(result.exception)
    assert not (tmp_path / "c").exists()  # checked before training


# --- row 9 (deliver 4): a self-sufficient `aeguard score` --------------------------------------------------

def test_score_passes_columns_through_explains_moves_the_threshold_and_reports(fitted, tmp_path):
    from aeguard.core.artifact import load_artifact

    _, art, frame = fitted
    data = frame.assign(id=[f"r{i}" for i in range(len(frame))], site="north")
    data.to_csv(tmp_path / "ids.csv", index=False)
    out = tmp_path / "s.csv"
    result = invoke("score", art, tmp_path / "ids.csv", "--id-column", "id", "--keep-columns", "site",
                    "--label-column", "label", "--explain", "2", "--contamination", "0.2", "-o", out)
    assert result.exit_code == 0, result.exception
    scores = pd.read_csv(out)
    assert list(scores.columns) == ["id", "site", "score", "label", "probability", "top1_feature",
                                    "top1_contribution", "top2_feature", "top2_contribution"]
    assert scores["id"].tolist() == data["id"].tolist() and set(scores["site"]) == {"north"}
    model = load_artifact(art)
    expected = model.score(frame.drop(columns="label"), contamination=0.2)
    np.testing.assert_array_equal(scores["label"], expected.label)
    assert scores["label"].mean() == pytest.approx(0.2, abs=0.05)
    top = np.argmax(expected.contrib, axis=1)
    assert scores["top1_feature"].tolist() == [model.feature_names[j] for j in top]
    assert (scores["top1_contribution"] >= scores["top2_contribution"]).all()
    summary = result.stderr.strip().splitlines()[-1]
    assert summary.startswith(f"{len(frame)} rows, {int(frame['label'].sum())} labelled outliers") and \
        "ROC-AUC" in summary and "AP" in summary
    result = invoke("score", art, tmp_path / "ids.csv", "--id-column", "id", "--keep-columns", "site",
                    "--label-column", "label", "--threshold", "1e9", "-o", out)
    assert pd.read_csv(out)["label"].sum() == 0
    result = invoke("score", art, tmp_path / "ids.csv", "--threshold", "1", "--contamination", "0.1")
    assert "give either --threshold or --contamination, not both" in str(result.exception)


def test_class_column_feeds_fit_classes_and_score_components_keeps_the_class_an_int(fitted, tmp_path,
                                                                                  example_plugin_installed):
    _, _, frame = fitted
    data = frame.assign(kind=np.where(frame["s0"] > frame["s0"].median(), "hi", "lo"))
    data.to_csv(tmp_path / "k.csv", index=False)
    result = invoke("fit", "ae", tmp_path / "k.csv", "-o", tmp_path / "x", "--label-column", "label",
                    "--class-column", "kind", "--param", "epochs=2")
    assert isinstance(result.exception, ValueError) and "ae does not accept classes" in str(result.exception)
    result = invoke("fit", "example-staged", tmp_path / "k.csv", "-o", tmp_path / "staged", "--label-column",
                    "label", "--class-column", "kind", "--seed", "0", "--param", "epochs=10",
                    "--param", "head_epochs=10")
    assert result.exit_code == 0, result.exception
    import json

    manifest = json.loads((tmp_path / "staged" / "manifest.json").read_text())
    assert manifest["features"]["names"] == ["s0", "s1", "s2", "s3"]  # the class column is no feature
    out = tmp_path / "c.csv"
    result = invoke("score", tmp_path / "staged", tmp_path / "k.csv", "--label-column", "label", "--keep-columns",
                    "kind", "--components", "-o", out)
    assert result.exit_code == 0, result.exception
    lines = out.read_text().splitlines()
    header = lines[0].split(",")
    assert header[:4] == ["kind", "score", "label", "probability"] and "class" in header and "nn_dist" in header
    classes = [row.split(",")[header.index("class")] for row in lines[1:]]
    assert set(classes) <= {"0", "1"} and len(set(classes)) == 2  # integers, not 0.0 / 1.0
    from aeguard.core.artifact import load_artifact

    scored = load_artifact(tmp_path / "staged").score(frame.drop(columns="label"))
    np.testing.assert_allclose(pd.read_csv(out)["nn_dist"], scored.components["nn_dist"], rtol=1e-6)


# --- row 9 (table): artifact permissions ----------------------------------------------------------------------

@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o755), (0o027, 0o750)])
def test_artifact_folders_respect_the_umask(fitted, tmp_path, umask, mode):
    import os
    import stat

    det, _, _ = fitted
    old = os.umask(umask)
    try:
        path = det.save_artifact(tmp_path / "art")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert {stat.S_IMODE(p.stat().st_mode) for p in path.iterdir()} == {mode & 0o666}


# --- row 10: watch --on-error nan keeps lines aligned ----------------------------------------------------------

def test_watch_on_error_nan_keeps_output_aligned_with_blank_lines(fitted):
    _, art, _ = fitted
    lines = ["s0,s1,s2,s3", "1,2,3,4", "", "   ", "# a comment", "x,1,2,3", "1,2,3,4"]
    proc = subprocess.run([sys.executable, "-m", "aeguard.edge.cli", "watch", str(art), "--on-error", "nan"],
                          input="\n".join(lines) + "\n", capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert len(out) == len(lines) - 1  # every line but the header has its output line
    assert out[1:5] == ["nan,nan,nan"] * 4 and out[0] == out[5] and out[0] != "nan,nan,nan"
    skip = subprocess.run([sys.executable, "-m", "aeguard.edge.cli", "watch", str(art)],
                          input="\n".join(lines) + "\n", capture_output=True, text=True)
    assert skip.stdout.splitlines() == [out[0], out[5]]  # the default still skips


# --- row 11: the demo ----------------------------------------------------------------------------------------

def test_demo_scores_the_held_out_split_compares_and_draws(tmp_path):
    from aeguard.datasets.default import load_default
    from aeguard.datasets.demo import DEFAULT_DETECTOR, stratified_split

    _, y = load_default()
    fit, test = stratified_split(y, 0)
    assert not set(fit) & set(test) and len(test) == pytest.approx(0.4 * len(y), abs=2)
    assert y[test].sum() == round(0.4 * y.sum())  # stratified: the outlier share is kept
    result = invoke("demo", "-o", tmp_path / "demo", "--epochs", "20")
    assert result.exit_code == 0, result.exception
    text = result.stdout
    assert f"{DEFAULT_DETECTOR} (artifact)" in text and "iforest" in text and "ae+mss" in text
    assert f"held-out test {len(test)} rows" in text and "test ROC-AUC" in text and "test AP" in text
    rows = [line for line in text.splitlines() if "outlier" in line and "│" in line or "inlier" in line and "│" in line]
    assert len(rows) >= 10  # the top anomalies, each with its true label
    picture = tmp_path / "demo-scores.png"
    assert f"wrote picture {picture}" in " ".join(text.split()) and picture.read_bytes()[:4] == b"\x89PNG"
    from aeguard.core.artifact import load_artifact

    assert load_artifact(tmp_path / "demo").detector_name == DEFAULT_DETECTOR


# --- row 12: --version, defaults in --help, the README's detector table ---------------------------------------

def test_version_help_defaults_and_readme_table():
    from importlib.metadata import version
    from pathlib import Path

    from aeguard.core.cli import detectors_markdown

    proc = aeguard("--version")
    assert proc.stdout.strip() == f"aeguard {version('aeguard')}"
    import os

    wide = subprocess.run([sys.executable, "-m", "aeguard.core.cli", "fit", "--help"], capture_output=True,
                          text=True, env={**os.environ, "COLUMNS": "300"}).stdout
    help_text = " ".join(wide.split())
    assert "[default: (the detector's, 0.1)]" in help_text and "[default: (drawn and recorded)]" in help_text
    assert "[default: fp32]" in help_text
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = readme.split("<!-- detectors:start -->\n", 1)[1].split("<!-- detectors:end -->", 1)[0]
    builtin = [r for r in registry.detectors().values() if r.plugin == "builtin"]
    assert table == detectors_markdown(builtin), "README detector table is stale: paste " \
        "`aeguard detectors --markdown --plugin builtin` between the markers"
    assert {"apre", "ae+mss", "ae", "iforest"} <= {r.name for r in builtin}
    assert invoke("detectors", "--markdown", "--plugin", "builtin").stdout == table
