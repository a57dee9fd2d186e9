"""Shared fixtures: real data, real training (kept small), quiet environment for servers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_ODDS = REPO.parent / "shared" / "data" / "odds"

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
os.environ.setdefault("BENTOML_HOME", str(REPO / ".bentoml" / "tests"))
os.environ.setdefault("TQDM_DISABLE", "1")

#: hyperparameters that keep any deep detector's test fit to a second or two
FAST_PARAMS = {"epochs": 30, "epochs_per_step": 10}


def fast_params(detector_cls: type) -> dict:
    """The subset of FAST_PARAMS a detector class accepts (found from its signature, no names hard-coded)."""
    accepted = detector_cls().get_params(deep=False)
    return {k: v for k, v in FAST_PARAMS.items() if k in accepted}


@pytest.fixture(scope="session")
def odds_dir() -> Path:
    if not SHARED_ODDS.is_dir():
        pytest.skip("ODDS data folder ../shared/data/odds not present")
    return SHARED_ODDS


def make_table(n_inliers: int = 300, n_outliers: int = 15, d: int = 6, seed: int = 0):
    """Correlated Gaussian inliers plus scattered outliers; tie-free, so kNN parity is well defined."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((d, d))
    inliers = rng.standard_normal((n_inliers, d)) @ basis * 0.5 + 3.0
    outliers = rng.uniform(-6, 12, size=(n_outliers, d))
    X = np.vstack([inliers, outliers])
    y = np.r_[np.zeros(n_inliers, dtype=int), np.ones(n_outliers, dtype=int)]
    order = rng.permutation(len(X))
    return X[order], y[order]


@pytest.fixture(scope="session")
def table():
    return make_table()


@pytest.fixture(scope="session")
def table_frame(table):
    import pandas as pd

    X, y = table
    return pd.DataFrame(X, columns=[f"sensor_{i}" for i in range(X.shape[1])]), y


def ensure_example_plugin() -> None:
    """Install the third-party example plugin (tests/example_plugin) into this environment if missing or stale.

    Runs before collection (``pytest_configure``), so the suites parametrised over the registry see its
    detectors from the first test; the registry's caches are cleared after an install.
    """
    import importlib
    import importlib.metadata
    import subprocess
    import sys

    source = REPO / "tests" / "example_plugin" / "aeguard_example_plugin"
    try:
        dist = importlib.metadata.distribution("aeguard-example-plugin")
        # a copy installed from an older source is reinstalled, so the tests see the plugin as it is now
        installed = [Path(str(dist.locate_file(f"aeguard_example_plugin/{p.name}"))) for p in source.glob("*.py")]
        stale = any(not i.exists() or i.read_text() != p.read_text() for i, p in zip(installed, source.glob("*.py")))
    except importlib.metadata.PackageNotFoundError:
        stale = True
    if stale:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--force-reinstall", str(REPO / "tests" / "example_plugin")], check=True)
        importlib.invalidate_caches()
        from aeguard.core import registry

        registry.plugin_manager.cache_clear()
        registry._records.cache_clear()


def pytest_configure(config: pytest.Config) -> None:
    ensure_example_plugin()


@pytest.fixture(scope="session")
def example_plugin_installed() -> str:
    """The example plugin's simplest detector (installed before collection by :func:`ensure_example_plugin`)."""
    return "example-zscore"


@pytest.fixture(scope="session")
def small_ae(tmp_path_factory):
    """One small `ae` artifact (4 features, names s0..s3) and its training frame, shared by the security and
    fuzz tests (one fit for both)."""
    import pandas as pd

    from aeguard.core import registry

    X, _ = make_table(n_inliers=120, n_outliers=6, d=4, seed=5)
    frame = pd.DataFrame(X, columns=[f"s{i}" for i in range(4)])
    record = registry.get("ae")
    det = record.create(**fast_params(record.cls), random_state=0).fit(frame)
    return det.save_artifact(tmp_path_factory.mktemp("small-ae") / "ae"), frame


def arrow_bytes(frame) -> bytes:
    """An Arrow IPC stream of a DataFrame (column names = feature names), as HTTP clients send it."""
    import pyarrow as pa

    table = pa.Table.from_pandas(frame, preserve_index=False)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()
