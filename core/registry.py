"""Detector registry: every detector is found through pluggy, built-in or third-party alike.

``core`` never names a plugin. The built-in ones register through the same entry-point group as
third-party packages (``aeguard.plugins``, declared in our own pyproject), so there is one discovery path.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

import pluggy

from aeguard.core import hookspecs


@dataclass(frozen=True)
class DetectorRecord:
    """What the registry knows about one detector, without importing it.

    ``target`` is ``"module:Class"``; :attr:`cls` imports it on first use.
    """

    name: str
    target: str
    description: str
    modalities: tuple[str, ...] = ("tabular",)
    uses_labels: bool = False
    exports_onnx: bool = True
    #: the class accepts ``fit(X, classes=...)`` (class labels of normal data); must equal the class's own
    #: ``accepts_classes``, which ``BaseDetector.fit`` enforces (a test checks every record)
    accepts_classes: bool = False
    mss_compatible: bool = False
    #: constructor arguments fixed by the record (one adapter class can back several names)
    fixed_params: tuple[tuple[str, Any], ...] = ()
    plugin: str = field(default="", compare=False)

    @property
    def cls(self) -> type:
        module_name, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module_name), attr)

    def create(self, **params: Any) -> Any:
        return self.cls(**{**dict(self.fixed_params), **params})

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["modalities"] = list(self.modalities)
        out["fixed_params"] = dict(self.fixed_params)
        return out


@lru_cache(maxsize=1)
def plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.load_setuptools_entrypoints(hookspecs.ENTRY_POINT_GROUP)
    return pm


def _collect() -> dict[str, DetectorRecord]:
    pm = plugin_manager()
    records: dict[str, DetectorRecord] = {}
    for impl in pm.hook.aeguard_detectors.get_hookimpls():
        plugin_name = pm.get_name(impl.plugin) or ""
        for rec in impl.function() or []:
            if rec.name in records:
                raise RuntimeError(
                    f"detector name {rec.name!r} registered twice (by {records[rec.name].plugin!r} "
                    f"and {plugin_name!r})"
                )
            records[rec.name] = DetectorRecord(**{**asdict(rec), "plugin": plugin_name})
    return dict(sorted(records.items()))


@lru_cache(maxsize=1)
def _records() -> dict[str, DetectorRecord]:
    return _collect()


def register(plugin: object, name: str | None = None) -> None:
    """Register a plugin object at run time (notebooks, tests of third-party code)."""
    plugin_manager().register(plugin, name=name)
    _records.cache_clear()


def detectors() -> dict[str, DetectorRecord]:
    """All registered detectors by name."""
    return dict(_records())


def get(name: str) -> DetectorRecord:
    records = _records()
    if name not in records:
        raise ValueError(f"unknown detector {name!r}; registered: {', '.join(records) or 'none'}")
    return records[name]


def create(name: str, **params: Any) -> Any:
    """Instantiate a registered detector with keyword hyperparameters."""
    return get(name).create(**params)


def protocols() -> dict[str, str]:
    """Label-assisted evaluation protocols by name (``"module:function"``), from every plugin."""
    found: dict[str, str] = {}
    for mapping in plugin_manager().hook.aeguard_protocols():
        found.update(mapping or {})
    return dict(sorted(found.items()))


def protocol(name: str) -> Callable[..., list[dict[str, Any]]]:
    """The protocol function registered as ``name`` (imported on demand)."""
    found = protocols()
    if name not in found:
        raise ValueError(f"unknown protocol {name!r}; registered: {', '.join(found) or 'none'}")
    module_name, _, attr = found[name].partition(":")
    return getattr(importlib.import_module(module_name), attr)


def build_detector(name: str, params: dict[str, Any] | None = None, *, seed: int | None = None,
                   contamination: Any = None, verbose: bool | None = None) -> Any:
    """The one way text or typed hyperparameters become a detector (``--param``, benchmark specs, HTTP).

    Values are parsed and checked by the class's declared specs (:mod:`aeguard.core.params`); unknown names
    are refused with the valid ones listed (a class with a free-form ``params`` dict takes them there).
    ``seed`` and ``contamination`` override the params of the same name; ``verbose`` is a default only.
    """
    from aeguard.core.params import check_params, coerce_params, param_specs

    record = get(name)
    typed = coerce_params(record.cls, params or {}, owner=name, fixed=dict(record.fixed_params))
    if seed is not None:
        typed["random_state"] = seed
    if contamination is not None:
        typed["contamination"] = contamination
    if verbose is not None and "verbose" in param_specs(record.cls) and "verbose" not in typed:
        typed["verbose"] = verbose
    detector = record.create(**typed)
    check_params(detector)
    return detector

