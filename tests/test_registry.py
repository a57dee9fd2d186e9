"""Plugin registry: built-ins and a real third-party package found through the entry-point group."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from aeguard.core import registry
from aeguard.plugins import PYOD_BASELINES


def test_builtin_records():
    records = registry.detectors()
    assert "ae" in records and set(PYOD_BASELINES) <= set(records)
    ae = records["ae"]
    assert ae.exports_onnx and ae.mss_compatible and not ae.uses_labels and "tabular" in ae.modalities
    assert ae.plugin == "builtin" and ae.description
    for name in PYOD_BASELINES:
        assert records[name].exports_onnx and records[name].cls.exportable
        assert registry.create(name).get_params()["algorithm"] == name


def test_unknown_detector_names_the_choices():
    with pytest.raises(ValueError, match="unknown detector 'nope'; registered: .*ae"):
        registry.get("nope")


def test_listing_imports_no_torch():
    code = ("import sys; from aeguard.core import registry; registry.detectors(); "
            "print(sorted(m for m in ('torch', 'pytorch_lightning', 'sklearn', 'pyod') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_third_party_plugin_is_discovered_through_entry_points(example_plugin_installed):
    out = subprocess.run([sys.executable, "-m", "aeguard.core.cli", "detectors", "--json"],
                         capture_output=True, text=True, check=True).stdout
    records = {r["name"]: r for r in json.loads(out)}
    assert example_plugin_installed in records
    assert records[example_plugin_installed]["plugin"] == "example"
    assert {"ae", "iforest", "ecod", "copod", "hbos", "knn", "lof", "ocsvm", "pca"} <= set(records)
    code = ("import numpy as np; from aeguard.core import registry; "
            "rng = np.random.default_rng(0); X = rng.standard_normal((200, 3)); X[:5] += 8; "
            f"d = registry.create({example_plugin_installed!r}).fit(X); "
            "print(int(d.decision_function(X).argmax() < 5))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "1"


def test_duplicate_names_are_refused():
    from aeguard.core.hookspecs import hookimpl
    from aeguard.core.registry import DetectorRecord

    class Clash:
        @hookimpl
        def aeguard_detectors(self):
            return [DetectorRecord(name="ae", target="x:y", description="clash")]

    plugin = Clash()
    registry.register(plugin, name="clash")
    try:
        with pytest.raises(RuntimeError, match="registered twice"):
            registry.detectors()
    finally:
        registry.plugin_manager().unregister(plugin)
        registry._records.cache_clear()
