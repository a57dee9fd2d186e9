"""A small ONNX graph builder for the classical scoring graphs (``onnx.helper`` only, no torch).

Every classical graph has the same frame: input ``x`` (float32, ``[batch, d]``, raw features, like every
aeguard artifact), a float64 cast and the fit-set scaling ``(x - center) / scale`` in float64, the method, and
outputs ``score`` (float64, ``[batch]``) and ``contrib`` (float32, ``[batch, d]``). Arithmetic is float64
because onnxruntime's CPU kernels for the ops used here (MatMul, TopK, Gather, Exp, Log, reductions) support
it, so the graph reproduces PyOD's float64 ``decision_function`` to rounding rather than to float32 precision.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

#: ``contrib`` of a method without a natural per-feature split: NaN (``null`` in JSON answers), never zeros,
#: which would claim that no feature contributed
NO_CONTRIB = float("nan")


class GraphBuilder:
    """Nodes and initializers of one graph; ``op`` returns the (unique) name of the node's output."""

    def __init__(self, opset: int) -> None:
        from onnx import TensorProto

        self.opset = int(opset)
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.ml_domain = False
        self._count = 0
        self.DOUBLE, self.FLOAT, self.INT64, self.BOOL = (TensorProto.DOUBLE, TensorProto.FLOAT, TensorProto.INT64,
                                                          TensorProto.BOOL)

    def _name(self, stem: str) -> str:
        self._count += 1
        return f"{stem}_{self._count}"

    def const(self, value: Any, dtype: Any = np.float64, stem: str = "c") -> str:
        """An initializer holding ``value`` (float64 unless told)."""
        from onnx import numpy_helper

        name = self._name(stem)
        self.initializers.append(numpy_helper.from_array(np.array(value, dtype=dtype, order="C"), name))
        return name

    def op(self, op_type: str, *inputs: str, n_out: int = 1, domain: str = "", **attrs: Any) -> Any:
        """Append one node; returns its output name (a list when ``n_out > 1``)."""
        from onnx import helper

        name = self._name(op_type)
        outputs = [f"{name}_out{i}" for i in range(n_out)] if n_out > 1 else [f"{name}_out"]
        self.nodes.append(helper.make_node(op_type, list(inputs), outputs, name=name, domain=domain, **attrs))
        return outputs if n_out > 1 else outputs[0]

    def reduce(self, op_type: str, x: str, axes: list[int], keepdims: int = 0) -> str:
        """``Reduce*`` over ``axes``: an input from opset 18 on (ReduceSum: 13), an attribute before."""
        if op_type == "ReduceSum" or self.opset >= 18:
            return self.op(op_type, x, self.const(axes, np.int64, "axes"), keepdims=keepdims)
        return self.op(op_type, x, axes=list(axes), keepdims=keepdims)

    def cast(self, x: str, to: int) -> str:
        return self.op("Cast", x, to=to)

    def sq_dist(self, z: str, ref: np.ndarray) -> str:
        """Squared Euclidean distances ``[batch, n_ref]`` of rows ``z`` to the rows of ``ref``, clamped at 0.

        ``|z|^2 - 2 z.r + |r|^2`` in float64 (one MatMul): ranking-exact for neighbour search; where the
        exact value matters (the chosen neighbours' distances) graphs recompute them by :meth:`row_dist`.
        """
        ref = np.asarray(ref, dtype=np.float64)
        zz = self.reduce("ReduceSum", self.op("Mul", z, z), [1], keepdims=1)
        cross = self.op("MatMul", z, self.const(ref.T * -2.0, stem="ref_t"))
        d2 = self.op("Add", self.op("Add", cross, zz), self.const(np.einsum("ij,ij->i", ref, ref), stem="ref_sq"))
        return self.op("Max", d2, self.const(0.0))

    def row_dist(self, z: str, ref_name: str, idx: str) -> str:
        """Exact distances ``sqrt(sum((z - ref[idx])^2))`` ``[batch, k]`` to the ``k`` reference rows ``idx``."""
        picked = self.op("Gather", ref_name, idx, axis=0)  # [batch, k, d]
        diff = self.op("Sub", self.op("Unsqueeze", z, self.const([1], np.int64, "axes")), picked)
        return self.op("Sqrt", self.reduce("ReduceSum", self.op("Mul", diff, diff), [2]))


def model_from(builder: GraphBuilder, x: str, score: str, contrib: str, n_features: int, doc: str) -> Any:
    """The ONNX model with input ``x`` and outputs ``score`` (float64: no rounding between the graph and PyOD's
    float64 score, so discrete scores such as HBOS's tie with the fit-set threshold exactly as in process) and
    ``contrib`` (float32), checked."""
    import onnx
    from onnx import helper

    builder.nodes.append(helper.make_node("Cast", [score], ["score"], name="score_cast", to=builder.DOUBLE))
    builder.nodes.append(helper.make_node("Cast", [contrib], ["contrib"], name="contrib_cast", to=builder.FLOAT))
    graph = helper.make_graph(
        builder.nodes, "aeguard_classical",
        [helper.make_tensor_value_info(x, builder.FLOAT, ["batch", n_features])],
        [helper.make_tensor_value_info("score", builder.DOUBLE, ["batch"]),
         helper.make_tensor_value_info("contrib", builder.FLOAT, ["batch", n_features])],
        initializer=builder.initializers)
    opsets = [helper.make_opsetid("", builder.opset)]
    if builder.ml_domain:
        opsets.append(helper.make_opsetid("ai.onnx.ml", 3))
    model = helper.make_model(graph, opset_imports=opsets, producer_name="aeguard.plugins.classical", doc_string=doc)
    model.ir_version = 8 if builder.opset <= 17 else 9
    onnx.checker.check_model(model, full_check=True)
    return model


def nan_contrib(builder: GraphBuilder, x: str) -> str:
    """A ``[batch, d]`` float64 tensor of NaN: the ``contrib`` of a method with no per-feature split."""
    from onnx import helper

    value = helper.make_tensor("nan", builder.DOUBLE, [1], [NO_CONTRIB])
    return builder.op("ConstantOfShape", builder.op("Shape", x), value=value)


def bytes_per_row(model: Any, n_features: int, rows: tuple[int, int] = (4, 8)) -> int:
    """Upper bound of the scoring memory per input row: every intermediate tensor's per-row bytes, summed.

    The same measure as :func:`aeguard.core.export.bytes_per_row` for torch graphs, taken with onnxruntime:
    every intermediate value becomes a graph output, the graph runs on two batch sizes, and the growth per
    added row is what the runtime's chunking must budget for (constants drop out).
    """
    import onnx
    import onnxruntime as ort
    from onnx import helper

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    inferred = onnx.shape_inference.infer_shapes(probe)
    known = {o.name for o in probe.graph.output}
    for value in inferred.graph.value_info:
        if value.name not in known:
            probe.graph.output.append(helper.make_tensor_value_info(
                value.name, value.type.tensor_type.elem_type, None))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    totals = []
    for n in rows:
        outs = session.run(None, {session.get_inputs()[0].name: rng.standard_normal((n, n_features))
                                  .astype(np.float32)})
        totals.append(sum(np.asarray(o).nbytes for o in outs))
    return max(1, int((totals[1] - totals[0]) // (rows[1] - rows[0])))


def save_model(model: Any, path: str | Path) -> None:
    import onnx

    onnx.save(model, str(path))
