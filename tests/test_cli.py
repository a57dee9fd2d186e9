"""The `aeguard` command line, run as real subprocesses: fit -> artifact -> score, and its errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from aeguard.core.artifact import load_artifact

FAST = ["--param", "epochs=30", "--param", "epochs_per_step=10"]


def aeguard(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "aeguard.core.cli", *map(str, args)], capture_output=True,
                          text=True, env=None, stdin=subprocess.DEVNULL)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def data_csv(table_frame, tmp_path_factory):
    frame, y = table_frame
    path = tmp_path_factory.mktemp("cli") / "sensors.csv"
    frame.assign(label=y).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def artifact(data_csv):
    out = data_csv.parent / "ae-artifact"
    proc = aeguard("fit", "ae", data_csv, "-o", out, "--seed", "0", "--contamination", "0.05",
                   "--label-column", "label", *FAST)
    assert "wrote" in proc.stdout and "ROC-AUC" in proc.stdout
    return out


def test_score_writes_scores_in_input_order(artifact, data_csv, table_frame, tmp_path):
    frame, _ = table_frame
    out = tmp_path / "scores.csv"
    aeguard("score", artifact, data_csv, "--label-column", "label", "-o", out)
    scores = pd.read_csv(out)
    assert list(scores.columns) == ["score", "label", "probability"]
    expected = load_artifact(artifact).score(frame)
    np.testing.assert_allclose(scores["score"], expected.score, rtol=1e-7)
    np.testing.assert_array_equal(scores["label"], expected.label)
    assert scores["label"].mean() == pytest.approx(0.05, abs=0.02)
    stdout = aeguard("score", artifact, data_csv, "--label-column", "label").stdout
    assert stdout.splitlines()[0] == "score,label,probability" and len(stdout.splitlines()) == len(frame) + 1


def test_npz_and_parquet_inputs(table, tmp_path):
    X, y = table
    np.savez(tmp_path / "d.npz", X=X, y=y)
    aeguard("fit", "ae", tmp_path / "d.npz", "-o", tmp_path / "art", "--seed", "1", *FAST)
    pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])]).to_parquet(tmp_path / "d.parquet")
    a = aeguard("score", tmp_path / "art", tmp_path / "d.npz").stdout
    b = aeguard("score", tmp_path / "art", tmp_path / "d.parquet").stdout
    assert a == b and len(a.splitlines()) == len(X) + 1


def test_info_and_detectors(artifact):
    info = aeguard("info", artifact).stdout
    assert "ae" in info and "verified" in info and "sensor_0" in info
    manifest = json.loads(aeguard("info", artifact, "--json").stdout)
    assert manifest["contamination"] == 0.05
    listing = aeguard("detectors").stdout
    assert "ae" in listing and "iforest" in listing


def test_tampered_artifact_is_refused_with_one_line(artifact, data_csv, tmp_path):
    import shutil

    copy = tmp_path / "tampered"
    shutil.copytree(artifact, copy)
    raw = bytearray((copy / "model.onnx").read_bytes())
    raw[-10] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(raw))
    proc = aeguard("score", copy, data_csv, "--label-column", "label", check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("error: checksum mismatch for model.onnx")
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["fit", "nope", "{csv}", "-o", "{tmp}/x"], "unknown detector 'nope'"),
        (["fit", "hbos", "{csv}", "-o", "{tmp}/x", "--param", 'params={{"n_bins": "auto"}}'],
         "cannot export hbos: hbos option n_bins='auto'"),
        (["fit", "ae", "{csv}", "-o", "{tmp}/x", "--param", "epochz=3"], "unknown parameter(s) for ae: ['epochz']"),
        (["fit", "ae", "{csv}", "-o", "{tmp}/x", "--param", "noequals"], "--param expects key=value"),
        (["fit", "ae", "{tmp}/missing.csv", "-o", "{tmp}/x"], "data file not found"),
        (["fit", "ae", "{csv}", "-o", "{tmp}/x", "--contamination", "0.9"], "contamination must be in [0, 0.5]"),
        (["score", "{tmp}/no-artifact", "{csv}"], "artifact not found"),
        (["score", "{art}", "{bad}"], "NaN in row 1"),
        (["score", "{art}", "{csv}"], "unknown column(s) ['label']"),
    ],
)
def test_errors_exit_nonzero_with_one_readable_line(args, message, data_csv, artifact, tmp_path, table_frame):
    frame, _ = table_frame
    bad = tmp_path / "bad.csv"
    broken = frame.head(4).copy()
    broken.iloc[1, 0] = np.nan
    broken.to_csv(bad, index=False)
    fmt = {"csv": data_csv, "tmp": tmp_path, "art": artifact, "bad": bad}
    proc = aeguard(*[a.format(**fmt) for a in args], check=False)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_scoring_path_imports_no_torch(artifact, data_csv, tmp_path):
    """Load + score, through the API and through `aeguard score`, with torch and friends never imported."""
    code = f"""
import sys
from aeguard.core.artifact import load_artifact
import pandas as pd
m = load_artifact({str(artifact)!r})
m.score(pd.read_csv({str(data_csv)!r}).drop(columns="label"))
from aeguard.core.cli import main
sys.argv = ["aeguard", "score", {str(artifact)!r}, {str(data_csv)!r}, "--label-column", "label",
            "-o", {str(tmp_path / "s.csv")!r}]
try:
    main()
except SystemExit as exc:
    assert not exc.code, exc.code
heavy = ("torch", "pytorch_lightning", "lightning", "sklearn", "pyod", "bentoml")
print(sorted(m for m in heavy if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "s.csv").exists()
