"""Export a :class:`~aeguard.core.deep.ScoringGraph` to ONNX.

Variants (recorded in the manifest):

- ``fp32``: the torch.export ("dynamo") exporter, opset 18, float32.
- ``legacy``: the TorchScript exporter at opset 17, for older edge runtimes.

Both take raw inputs (input ``x``, dynamic batch) and give named outputs ``score``, ``contrib`` and the
detector's components. Two facts about the graph are measured here and recorded in the manifest, so that the
torch-free runtime and the export variants need no heuristics:

- ``fp32_nodes``: the ONNX nodes of every submodule declared ``keep_fp32 = True`` (kNN distances against a
  reference set, whitening, prototype distances: anything whose ranking INT8 rounding would change). The INT8
  variant keeps exactly these nodes in float32.
- ``bytes_per_row``: an upper bound of the scoring memory one input row needs (every intermediate tensor's
  per-row size, summed, as if nothing were freed); the runtime sizes its scoring chunks from it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

VARIANTS = ("fp32", "legacy")

#: the attribute a module sets (class or instance) to keep its ONNX nodes float32 in the INT8 variant
KEEP_FP32 = "keep_fp32"


def fp32_scopes(graph: nn.Module) -> list[str]:
    """Dotted paths (relative to ``graph``) of the submodules declared ``keep_fp32``."""
    return [name for name, module in graph.named_modules() if name and getattr(module, KEEP_FP32, False)]


def node_scope(node: Any) -> tuple[str, ...]:
    """The module path of an ONNX node made by torch's exporters.

    The dynamo exporter records it in the ``pkg.torch.onnx.name_scopes`` metadata (``['', 'target', 'mul_2']``:
    the module path, then the op; or ``['', 'model.nearest', 'matmul']`` for a submodule that a method other
    than ``forward`` calls); the TorchScript exporter in the node name (``/target/MatMul``).
    """
    path: list[str] = []
    for prop in getattr(node, "metadata_props", []):
        if prop.key == "pkg.torch.onnx.name_scopes":
            import ast

            path = [p for p in ast.literal_eval(prop.value) if p][:-1]
            break
    else:
        if node.name.startswith("/"):
            path = [p for p in node.name.split("/")[1:-1] if p]
    # nested modules may be recorded by their full dotted names at every level ('model.encoder.0')
    dotted = [p for p in path if "." in p]
    return tuple(max(dotted, key=len).split(".")) if dotted else tuple(path)


def _in_scope(path: tuple[str, ...], scope: tuple[str, ...]) -> bool:
    """``path`` lies in ``scope``; a path recorded relative to an inner module (TorchScript names the modules
    a method other than ``forward`` calls from that module down: ``/nearest/MatMul`` for ``model.nearest``)
    matches the scope's tail."""
    return any(path[:len(scope) - k] == scope[k:] for k in range(len(scope)))


def fp32_node_names(model: Any, scopes: Sequence[str]) -> list[str]:
    """Names of the nodes of ``model`` (an ONNX ModelProto) that lie inside one of the dotted ``scopes``."""
    wanted = [tuple(s.split(".")) for s in scopes]
    out = []
    for node in model.graph.node:
        path = node_scope(node)
        if any(_in_scope(path, w) for w in wanted):
            out.append(node.name)
    return out


def bytes_per_row(graph: nn.Module, row_shape: Sequence[int], rows: tuple[int, int] = (4, 8)) -> int:
    """Upper bound of the scoring memory per input row: the per-row bytes of every tensor an op creates, summed.

    Runs the graph on two batch sizes under a dispatch mode that sees every op's outputs; the difference
    between the two totals, per added row, is what grows with the batch (constants and weights drop out).
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    class _Sizes(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor):
                    self.total += t.numel() * t.element_size()
            return out

    totals = []
    for n in rows:
        sizes = _Sizes()
        with torch.no_grad(), sizes:
            graph(torch.zeros(n, *row_shape, dtype=torch.float32))
        totals.append(sizes.total)
    return max(1, int((totals[1] - totals[0]) // (rows[1] - rows[0])))


def export_graph(graph: torch.nn.Module, row_shape: int | Sequence[int], output_names: list[str], path: Any,
                 variant: str = "fp32") -> dict[str, Any]:
    """Write ``graph`` to ``path``; ``row_shape`` is the shape of one input row (``d`` or ``(C, H, W)``)."""
    import onnx

    if variant not in VARIANTS:
        raise ValueError(f"unknown export variant {variant!r}; choose one of {VARIANTS}")
    row_shape = (int(row_shape),) if isinstance(row_shape, int) else tuple(int(s) for s in row_shape)
    path = Path(path)
    graph = graph.to("cpu").eval()
    example = torch.zeros(3, *row_shape, dtype=torch.float32)
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
    scopes = fp32_scopes(graph)
    nodes = fp32_node_names(onnx.load(str(path)), scopes) if scopes else []
    if scopes and not nodes:
        raise RuntimeError(f"modules {scopes} are declared keep_fp32 but no exported node could be traced to them")
    return {"variant": variant, "opset": opset, "input": "x", "input_shape": ["batch", *row_shape],
            "outputs": list(output_names), "fp32_scopes": scopes, "fp32_nodes": nodes,
            "bytes_per_row": bytes_per_row(graph, row_shape),
            "exporter": "torch.onnx (dynamo)" if variant == "fp32" else "torch.onnx (torchscript)",
            "torch": torch.__version__}
