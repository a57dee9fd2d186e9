"""The one hook-specification module of aeguard (pluggy).

A plugin is any module or object with ``@hookimpl``-marked functions named as below. Built-in plugins live
in ``aeguard.plugins``; third-party packages advertise theirs under the entry-point group
``aeguard.plugins``::

    [project.entry-points."aeguard.plugins"]
    my_detectors = "my_package.aeguard_plugin"
"""

from __future__ import annotations

import pluggy

PROJECT = "aeguard"
ENTRY_POINT_GROUP = "aeguard.plugins"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def aeguard_detectors() -> list:
    """Return the :class:`aeguard.core.registry.DetectorRecord` entries this plugin provides.

    Records name their class by import path, so listing detectors imports no torch.
    """


@hookspec
def aeguard_protocols() -> dict:
    """Return ``{name: "module:function"}`` of label-assisted evaluation protocols (a method's paper protocol).

    The function is called as ``fn(dataset, X, y, **options)`` and returns result rows (dicts with at least
    ``dataset``, ``detector``, ``roc_auc`` and ``ap``). ``aeguard benchmark --protocol NAME`` runs it; its rows
    use labels for choices, so they are reported apart from the label-free ones.
    """
