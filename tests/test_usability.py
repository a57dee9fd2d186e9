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
    aeguard("fit", "apre", csv_path, "-o", out, "--label-column", "label", "--param", "mss=False", *FAST)
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
                                   "random_state, val_fraction, verbose")
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
