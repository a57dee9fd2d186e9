"""Export a :class:`~aeguard.core.deep.ScoringGraph` to ONNX.

Variants (recorded in the manifest):

- ``fp32``: the torch.export ("dynamo") exporter, opset 18, float32.
- ``legacy``: the TorchScript exporter at opset 17, for older edge runtimes.

Both take raw features (input ``x``, dynamic batch) and give named outputs ``score``, ``contrib`` and the
detector's components.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import torch

VARIANTS = ("fp32", "legacy")


def export_graph(graph: torch.nn.Module, n_features: int, output_names: list[str], path: Any,
                 variant: str = "fp32") -> dict[str, Any]:
    if variant not in VARIANTS:
        raise ValueError(f"unknown export variant {variant!r}; choose one of {VARIANTS}")
    path = Path(path)
    graph = graph.to("cpu").eval()
    example = torch.zeros(3, n_features, dtype=torch.float32)
    kwargs: dict[str, Any] = {"input_names": ["x"], "output_names": list(output_names)}
    if variant == "legacy":
        opset = 17
        axes = {name: {0: "batch"} for name in ["x", *output_names]}
        kwargs.update(dynamo=False, opset_version=opset, dynamic_axes=axes)
    else:
        opset = 18
        kwargs.update(dynamo=True, opset_version=opset,
                      dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}}, external_data=False)
    sink = io.StringIO()
    onnx_logger = logging.getLogger("torch.onnx")
    level = onnx_logger.level
    onnx_logger.setLevel(logging.ERROR)  # "torchvision is not installed" and similar notices
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            torch.onnx.export(graph, (example,), str(path), **kwargs)
    finally:
        onnx_logger.setLevel(level)
    return {"variant": variant, "opset": opset, "input": "x", "outputs": list(output_names),
            "exporter": "torch.onnx (dynamo)" if variant == "fp32" else "torch.onnx (torchscript)",
            "torch": torch.__version__}
