"""Tests for aeguard.datasets: registry, paths, loaders, default dataset, verified fetching and the CLI.

Everything runs on real files: the shared ODDS copy when it exists, small arrays written in tmp_path, and a
real HTTP server on 127.0.0.1 for fetching.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from aeguard.datasets import (
    ODDS,
    DatasetInfo,
    fetch_datasets,
    list_datasets,
    load_dataset,
    load_default,
    load_table,
    load_xy,
    resolve_data_dir,
)
from aeguard.datasets.cli import app
from aeguard.datasets.default import DEFAULT_CSV, build_default_frame, default_csv_path, render_default_csv
from aeguard.datasets.fetch import CHECKSUM_MISMATCH, DOWNLOADED, ERROR, NO_SOURCE, PRESENT, sha256_file

SHARED_ODDS = Path(__file__).resolve().parents[2] / "shared" / "data" / "odds"
MISSING_FROM_SHARED = {"heart", "mulcross", "speech", "yeast"}
HTTP_EXTRA_ROWS = 19  # the 2016 ODDS http export has 567498 rows; the official table says 567479

needs_shared = pytest.mark.skipif(
    not SHARED_ODDS.is_dir(), reason=f"shared ODDS copy not found at {SHARED_ODDS}"
)


# --- registry ---------------------------------------------------------------------------------------------


def test_registry_has_all_31_odds_point_datasets():
    assert len(ODDS) == 31
    assert MISSING_FROM_SHARED <= set(ODDS)
    for name, info in ODDS.items():
        assert info.name == name
        assert info.n > info.n_outliers > 0 and info.d > 0
        assert info.outlier_pct == round(100 * info.n_outliers / info.n, 2)
        assert info.sha256 is None or len(info.sha256) == 64
        assert info.notes and info.source


def test_registry_urls_are_commit_pinned_and_checksummed():
    for info in ODDS.values():
        if info.url is None:
            continue
        assert info.url.startswith("https://raw.githubusercontent.com/")
        commit = info.url.split("/")[5]
        assert len(commit) == 40 and all(c in "0123456789abcdef" for c in commit)
        assert info.url.endswith(info.filename) and info.sha256 is not None


def test_registry_records_what_is_unknown():
    for name in ("heart", "yeast"):  # ODDS distributes no .mat for these: no reference checksum
        assert ODDS[name].sha256 is None and ODDS[name].url is None
    for name in ("speech", "mulcross"):  # reference checksum known, no retrievable copy
        assert ODDS[name].sha256 is not None and ODDS[name].url is None
    assert ODDS["http"].n == 567479


@needs_shared
def test_exactly_27_datasets_present_in_shared_copy():
    rows = list_datasets(SHARED_ODDS)
    assert len(rows) == 31
    absent = {row["name"] for row in rows if not row["present"]}
    assert absent == MISSING_FROM_SHARED
    assert sum(row["present"] for row in rows) == 27


@needs_shared
@pytest.mark.parametrize("name", sorted(set(ODDS) - MISSING_FROM_SHARED))
def test_shared_dataset_matches_official_figures(name):
    info = ODDS[name]
    X, y = load_dataset(name, SHARED_ODDS)
    expected_n = info.n + (HTTP_EXTRA_ROWS if name == "http" else 0)
    assert X.dtype == np.float64
    assert X.shape == (expected_n, info.d)
    assert y is not None and y.shape == (expected_n,)
    assert int(y.sum()) == info.n_outliers
    assert set(np.unique(y)) <= {0, 1}


@needs_shared
@pytest.mark.parametrize("name", ["ecoli", "seismic"])
def test_rebuilt_datasets_pin_the_shared_npz(name):
    assert sha256_file(SHARED_ODDS / f"{name}.npz") == ODDS[name].sha256


# --- paths ------------------------------------------------------------------------------------------------


def test_resolve_data_dir_precedence(tmp_path, monkeypatch):
    explicit, from_env, cache = tmp_path / "explicit", tmp_path / "env", tmp_path / "xdg"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.delenv("AEGUARD_DATA", raising=False)
    assert resolve_data_dir() == cache / "aeguard" / "odds"
    monkeypatch.setenv("AEGUARD_DATA", str(from_env))
    assert resolve_data_dir() == from_env
    assert resolve_data_dir(explicit) == explicit
    assert resolve_data_dir(str(explicit)) == explicit


def test_resolve_data_dir_falls_back_to_home_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("AEGUARD_DATA", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_data_dir() == tmp_path / ".cache" / "aeguard" / "odds"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # XDG: relative values are ignored
    assert resolve_data_dir() == tmp_path / ".cache" / "aeguard" / "odds"


# --- loaders ----------------------------------------------------------------------------------------------


def _arrays(n: int = 12, d: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = np.zeros(n, dtype=np.int8)
    y[:3] = 1
    return X, y


def _write_mat_v5(path: Path, X: np.ndarray, y: np.ndarray) -> Path:
    from scipy.io import savemat

    savemat(path, {"X": X, "y": y.astype(np.float64).reshape(-1, 1)})  # ODDS layout: y is an n x 1 double
    return path


def _write_mat_v73(path: Path, X: np.ndarray, y: np.ndarray) -> Path:
    """MATLAB v7.3 layout: HDF5 behind a 512-byte header, every matrix stored transposed (column-major)."""
    import h5py

    with h5py.File(path, "w", userblock_size=512) as f:
        f.create_dataset("X", data=X.T)
        f.create_dataset("y", data=y.astype(np.float64).reshape(1, -1))
    with path.open("r+b") as fh:
        fh.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: test HDF5 schema 1.00 .".ljust(128))
    return path


def test_load_xy_npz(tmp_path):
    X, y = _arrays()
    np.savez_compressed(tmp_path / "a.npz", X=X.astype(np.float32), y=y)
    np.savez_compressed(tmp_path / "nolabel.npz", X=X)
    X1, y1 = load_xy(tmp_path / "a.npz")
    assert X1.dtype == np.float64 and np.allclose(X1, X) and np.array_equal(y1, y)
    X2, y2 = load_xy(tmp_path / "nolabel.npz")
    assert np.array_equal(X2, X) and y2 is None


def test_load_xy_mat_v5(tmp_path):
    X, y = _arrays()
    X1, y1 = load_xy(_write_mat_v5(tmp_path / "v5.mat", X, y))
    assert np.array_equal(X1, X)
    assert y1.shape == (12,) and y1.dtype.kind == "i" and np.array_equal(y1, y)


def test_load_xy_mat_v73_transposes_back(tmp_path):
    X, y = _arrays(n=9, d=5)
    X1, y1 = load_xy(_write_mat_v73(tmp_path / "v73.mat", X, y))
    assert X1.shape == (9, 5) and np.array_equal(X1, X)
    assert y1.shape == (9,) and np.array_equal(y1, y)


def test_load_xy_rejects_missing_X_and_length_mismatch(tmp_path):
    np.savez(tmp_path / "noX.npz", data=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="no array 'X'"):
        load_xy(tmp_path / "noX.npz")
    np.savez(tmp_path / "short.npz", X=np.zeros((4, 2)), y=np.zeros(3))
    with pytest.raises(ValueError, match="3 labels but X has 4 rows"):
        load_xy(tmp_path / "short.npz")
    with pytest.raises(FileNotFoundError, match="no such data file"):
        load_xy(tmp_path / "absent.npz")


@pytest.fixture
def table_frame() -> pd.DataFrame:
    X, y = _arrays(n=6, d=3)
    frame = pd.DataFrame(X, columns=["alpha", "beta", "gamma"])
    frame["is_outlier"] = y.astype(np.int64)
    return frame


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_load_table_with_and_without_label(tmp_path, table_frame, suffix):
    path = tmp_path / f"table{suffix}"
    if suffix == ".csv":
        table_frame.to_csv(path, index=False)
    else:
        table_frame.to_parquet(path)
    X, y = load_table(path, label_column="is_outlier")
    assert list(X.columns) == ["alpha", "beta", "gamma"]
    assert np.array_equal(X.to_numpy(), table_frame[["alpha", "beta", "gamma"]].to_numpy())
    assert np.array_equal(y, table_frame["is_outlier"].to_numpy())
    X_all, y_none = load_table(path)
    assert list(X_all.columns) == ["alpha", "beta", "gamma", "is_outlier"] and y_none is None
    with pytest.raises(ValueError, match="label column 'target' not found"):
        load_table(path, label_column="target")


def test_load_table_array_files_get_positional_names(tmp_path):
    X, y = _arrays(d=3)
    path = _write_mat_v5(tmp_path / "arr.mat", X, y)
    frame, labels = load_table(path)
    assert list(frame.columns) == ["x0", "x1", "x2"] and np.array_equal(labels, y)
    with pytest.raises(ValueError, match="does not apply to .mat"):
        load_table(path, label_column="label")


def test_load_dataset_by_path_and_unsupported_type(tmp_path, table_frame):
    csv_path = tmp_path / "t.csv"
    table_frame.to_csv(csv_path, index=False)
    X, y = load_dataset(csv_path, label_column="is_outlier")
    assert X.shape == (6, 3) and X.dtype == np.float64 and int(y.sum()) == 3
    (tmp_path / "t.txt").write_text("1 2 3\n")
    with pytest.raises(ValueError, match="unsupported data file type"):
        load_dataset(tmp_path / "t.txt")
    with pytest.raises(FileNotFoundError, match="neither a registered ODDS dataset nor an existing file"):
        load_dataset("no-such-dataset")


def test_load_dataset_missing_registered_file_names_dir_and_fetch(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("wbc", tmp_path)
    assert str(tmp_path) in str(err.value) and "aeguard datasets fetch wbc" in str(err.value)


def test_load_dataset_prefers_npz_and_rejects_other_variants(tmp_path):
    X, y = _arrays(n=10, d=ODDS["glass"].d)
    np.savez(tmp_path / "glass.npz", X=X, y=y)
    _write_mat_v5(tmp_path / "glass.mat", X + 1, y)
    X1, _ = load_dataset("glass", tmp_path)
    assert np.array_equal(X1, X)
    np.savez(tmp_path / "ionosphere.npz", X=np.zeros((5, 32)), y=np.zeros(5))  # ADBench's 32-column variant
    with pytest.raises(ValueError, match="32 features but ODDS ionosphere has 33"):
        load_dataset("ionosphere", tmp_path)


def test_package_imports_without_optional_dependencies():
    optional = "{'scipy', 'h5py', 'sklearn', 'typer', 'rich'}"
    code = f"import sys, aeguard.datasets; print(sorted({optional} & set(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- default dataset --------------------------------------------------------------------------------------


def test_load_default_shape_and_labels():
    X, y = load_default()
    assert X.shape == (378, 30) and (X.dtypes == np.float64).all()
    assert "mean radius" in X.columns and "label" not in X.columns
    assert y.shape == (378,) and int(y.sum()) == 21
    X_arr, _ = load_default(as_frame=False)
    assert isinstance(X_arr, np.ndarray) and np.array_equal(X_arr, X.to_numpy())


def test_shipped_default_csv_matches_generator():
    pytest.importorskip("sklearn")
    shipped = default_csv_path()
    assert shipped.name == DEFAULT_CSV
    frame = build_default_frame()
    assert shipped.read_text(encoding="utf-8") == render_default_csv(frame)
    X, y = load_default()
    assert np.array_equal(X.to_numpy(), frame.drop(columns="label").to_numpy())  # bit-exact floats
    assert np.array_equal(y, frame["label"].to_numpy())


# --- fetch against a real local HTTP server ---------------------------------------------------------------


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture
def http_root(tmp_path):
    """Serve tmp_path/served on 127.0.0.1:<free port>; yields (folder, base URL)."""
    root = tmp_path / "served"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _info(name: str, sha256: str | None, url: str | None) -> DatasetInfo:
    return DatasetInfo(name, 12, 4, 3, 25.0, sha256, url, "mat", "test fixture", "built in tmp_path")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fetch_verifies_caches_and_rejects_corrupt(tmp_path, http_root):
    served, base = http_root
    X, y = _arrays()
    good = _write_mat_v5(served / "good.mat", X, y)
    _write_mat_v5(served / "bad.mat", X + 1.0, y)  # different bytes than the checksum below
    registry = {
        "good": _info("good", _sha(good), f"{base}/good.mat"),
        "bad": _info("bad", _sha(good), f"{base}/bad.mat"),
    }
    cache = tmp_path / "cache"

    results = {r.name: r for r in fetch_datasets(None, cache, registry=registry, progress=False)}

    assert results["good"].status == DOWNLOADED and results["good"].ok
    assert _sha(cache / "good.mat") == _sha(good)
    assert np.array_equal(load_xy(cache / "good.mat")[0], X)
    assert results["bad"].status == CHECKSUM_MISMATCH and not results["bad"].ok
    assert "expected" in results["bad"].message
    assert sorted(p.name for p in cache.iterdir()) == ["good.mat"]  # no bad.mat, no leftover temp file

    good.unlink()  # a second run must not need the server for a verified copy
    again = fetch_datasets(["good"], cache, registry=registry, progress=True)
    assert [(r.name, r.status) for r in again] == [("good", PRESENT)]


def test_fetch_replaces_corrupt_cached_copy(tmp_path, http_root):
    served, base = http_root
    X, y = _arrays()
    good = _write_mat_v5(served / "tiny.mat", X, y)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "tiny.mat").write_bytes(b"truncated")
    registry = {"tiny": _info("tiny", _sha(good), f"{base}/tiny.mat")}
    [result] = fetch_datasets(["tiny"], cache, registry=registry, progress=True)
    assert result.status == DOWNLOADED and _sha(cache / "tiny.mat") == _sha(good)
    assert sorted(p.name for p in cache.iterdir()) == ["tiny.mat"]


def test_fetch_keeps_unverifiable_file_placed_by_hand(tmp_path):
    (tmp_path / "own.mat").write_bytes(b"user supplied")
    registry = {"own": _info("own", None, "http://127.0.0.1:9/own.mat")}
    [result] = fetch_datasets(["own"], tmp_path, registry=registry, progress=False)
    assert result.status == PRESENT and "no reference checksum" in result.message


def test_fetch_url_overrides_and_missing_source(tmp_path, http_root, monkeypatch):
    served, base = http_root
    X, y = _arrays()
    (served / "alt").mkdir()
    good = _write_mat_v5(served / "alt" / "tiny.mat", X, y)
    registry = {"tiny": _info("tiny", _sha(good), None), "nosrc": _info("nosrc", "0" * 64, None)}
    monkeypatch.delenv("AEGUARD_ODDS_MIRROR", raising=False)

    by_name = fetch_datasets(
        ["tiny"], tmp_path / "a", registry=registry, base_urls={"tiny": f"{base}/alt"}, progress=False
    )
    assert by_name[0].status == DOWNLOADED and by_name[0].url == f"{base}/alt/tiny.mat"

    monkeypatch.setenv("AEGUARD_ODDS_MIRROR", f"{base}/alt/")
    results = {r.name: r for r in fetch_datasets(None, tmp_path / "b", registry=registry, progress=False)}
    assert results["tiny"].status == DOWNLOADED
    assert results["nosrc"].status == ERROR and "HTTP 404" in results["nosrc"].message

    monkeypatch.delenv("AEGUARD_ODDS_MIRROR")
    [missing] = fetch_datasets(["nosrc"], tmp_path / "c", registry=registry, progress=False)
    assert missing.status == NO_SOURCE and not missing.ok
    assert not (tmp_path / "c").exists()


def test_fetch_unknown_name_raises_before_downloading(tmp_path):
    with pytest.raises(ValueError, match="did you mean wbc"):
        fetch_datasets(["wbcc"], tmp_path, progress=False)


# --- CLI --------------------------------------------------------------------------------------------------


def test_cli_list_json(tmp_path):
    X, y = _arrays(d=ODDS["wine"].d)
    np.savez(tmp_path / "wine.npz", X=X, y=y)
    result = CliRunner().invoke(app, ["list", "--json", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 31
    assert set(rows[0]) == {"name", "n", "d", "n_outliers", "outlier_pct", "present"}
    assert [r["name"] for r in rows if r["present"]] == ["wine"]


def test_cli_list_table(tmp_path):
    result = CliRunner().invoke(app, ["list", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0 and "annthyroid" in result.stdout and "0/31 present" in result.stdout


def test_cli_fetch_checksum_failure_exits_1(tmp_path, http_root):
    served, base = http_root
    (served / "wbc.mat").write_bytes(b"not the ODDS wbc.mat")
    env = {"AEGUARD_ODDS_MIRROR": base}
    cache = tmp_path / "cache"
    result = CliRunner().invoke(app, ["fetch", "wbc", "--data-dir", str(cache), "--no-progress"], env=env)
    assert result.exit_code == 1
    assert "error: wbc: checksum mismatch" in result.stderr
    assert "Traceback" not in result.output and not isinstance(result.exception, ValueError)
    assert not cache.exists() or list(cache.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "expected"),
    [(["heart"], "error: heart: no public source"), (["wbcc"], "unknown dataset(s): 'wbcc'")],
)
def test_cli_fetch_failures_are_one_line(tmp_path, args, expected):
    result = CliRunner().invoke(
        app, ["fetch", *args, "--data-dir", str(tmp_path), "--no-progress"], env={"AEGUARD_ODDS_MIRROR": ""}
    )
    assert result.exit_code == 1
    assert expected in result.stderr and "Traceback" not in result.output
