"""Extra output columns of a scored batch, shared by ``aeguard score`` and ``aeguard-edge`` (numpy only).

One place decides which graph outputs are components, how their values are typed (an integer output such as
a predicted class stays an integer) and which features explain a row most.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: graph outputs that are not components
CORE_OUTPUTS = ("score", "contrib")


def component_names(model: Any) -> list[str]:
    """The graph's named one-value-per-row outputs besides score and contrib, in graph output order.

    Outputs with several values per row (a sparse ``code``, B x n_latents; ``model.output_ranks`` says) do not
    fit a CSV column and are left out; :func:`vector_output_names` lists them (the Python ``Artifact`` and the
    HTTP API return them as arrays / lists)."""
    ranks = getattr(model, "output_ranks", {})
    return [n for n in model.output_names if n not in CORE_OUTPUTS and (ranks.get(n) or 1) <= 1]


def vector_output_names(model: Any) -> list[str]:
    """The graph's named outputs besides contrib with several values per row (``output_ranks`` of 2 or more)."""
    ranks = getattr(model, "output_ranks", {})
    return [n for n in model.output_names if n not in CORE_OUTPUTS and (ranks.get(n) or 1) > 1]


def component_columns(scored: Any, names: Sequence[str]) -> list[list[Any]]:
    """Per component, its per-row values as Python ints (integer outputs) or floats."""
    columns = []
    for name in names:
        values = np.asarray(scored.components[name])
        if values.ndim != 1:
            raise ValueError(f"component {name!r} has shape {values.shape}: only one value per row fits a CSV column")
        columns.append(values.astype(np.int64 if values.dtype.kind in "iub" else np.float64).tolist())
    return columns


def top_features(contrib: np.ndarray, names: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest contributions per row: ``(feature names (n, k), contributions (n, k))``, largest first."""
    contrib = np.asarray(contrib, dtype=np.float64)
    k = min(int(k), contrib.shape[1])
    order = np.argsort(-contrib, axis=1, kind="stable")[:, :k]
    return np.asarray(names, dtype=object)[order], np.take_along_axis(contrib, order, axis=1)
