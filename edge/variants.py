"""Export variants of an artifact, made at the ONNX level (no torch): INT8 and opset-17 "legacy" graphs.

``aeguard export ARTIFACT -o OUT --int8`` / ``--legacy`` run here. Each variant is a complete artifact with a
fresh manifest: same features, threshold, calibration and fit-score quantiles as its source, plus the variant,
the transforms applied, a probe comparison against the source graph and ``source`` (the source manifest's
sha256, detector and variant).

- ``int8``: weights int8, by op type, and nothing the detector declared FP32.

  * **FP32 by declaration.** The exporter records ``graph.fp32_nodes``: the ONNX nodes of every module a plugin
    declared ``keep_fp32`` (kNN distances to a reference set, whitening, prototype distances: anything whose
    ranking int8 rounding would change, which is a different detector rather than a rounding error). Exactly
    those nodes stay float32 (onnxruntime's ``nodes_to_exclude``); no graph heuristic guesses them. A source
    manifest without ``fp32_nodes`` (an older aeguard) is refused: re-export it.
  * **MatMul / Gemm**: onnxruntime dynamic quantization (int8 weights, uint8 activations quantized at run time,
    integer MatMul). ``quant_pre_process`` runs first (shape inference only: node names survive, so the
    declared ones still match) because the dynamo exporter's graphs lack the shape information the quantizer
    needs. Weights are symmetric int8 with one scale per output channel (half the ROC-AUC change of one scale
    per tensor on ODDS, ``aeguard bench-edge``) and ``reduce_range`` (7 bits): x86 CPUs without VNNI multiply
    uint8 x int8 with a saturating 16-bit instruction, so full-range weights gave x86 scores up to 2 off the
    aarch64 ones (measured); with 7-bit weights no sum saturates and x86 and ARM compute the same integers.
    Activations are quantized per row (:func:`quantize_activations_per_row`), so a row's score does not
    depend on the rows it is batched with.
  * **Conv / ConvTranspose: weight-only int8** (:func:`quantize_conv_weights`): int8 weights with one scale per
    output channel, and a ``DequantizeLinear`` feeding the float convolution. onnxruntime's dynamic
    ``ConvInteger`` quantizes the activations with one scale per batch, and its zero-point correction cannot
    be moved after the convolution per row the way it is for MatMul (padding breaks the identity), so
    quantizing conv activations would make a row's score depend on its batch; weight-only keeps rows
    independent and x86/ARM parity (float arithmetic), and shrinks conv weights 4x.
  * **Refused by declaration.** A graph whose manifest gives ``graph.int8_refusal`` (a reason: its constants are
    fit data rather than weights, so quantizing would change the detector) is refused with that reason.
  * Recurrent layers (``LSTM``, ``GRU``, ``RNN``) are refused with a message naming the op, rather than
    shipped silently float in an "INT8" artifact.
- ``legacy``: the graph converted to opset 17 and IR version 8 for older edge runtimes (onnxruntime >= 1.12).
  The dynamo export (opset 18) is converted directly when the converter manages it, else after
  ``onnxscript.optimizer.optimize`` has folded constants into initializers (the converter needs constant
  ``axes`` to turn them back into attributes). A graph that is already at opset <= 17 is copied.

Thresholds are NOT recomputed for INT8: an artifact carries no fit data, so the FP32 threshold and
calibration are kept and the score drift is measured (``graph.check`` in the manifest, ``aeguard bench-edge``).
Needs ``onnx`` (and ``onnxscript`` for the legacy fallback), which the ``train`` extra installs; scoring a
variant needs only onnxruntime.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from aeguard.core.artifact import (
    GRAPH,
    ArtifactError,
    installed_version,
    manifest_digest,
    read_manifest,
    write_artifact,
)
from aeguard.core.metrics import spearman

LEGACY_OPSET = 17
LEGACY_IR_VERSION = 8
#: quantized dynamically: int8 weights, uint8 activations quantized per row at run time, integer MatMul
INT8_OP_TYPES = ("MatMul", "Gemm")
#: the name suffix onnxruntime's dynamic quantizer gives the MatMul it makes of a Gemm
GEMM_AS_MATMUL = "_MatMul"
#: quantized weight-only (int8 weights + DequantizeLinear, float arithmetic); the output-channel axis of the weight
WEIGHT_ONLY_OP_TYPES = {"Conv": 0, "ConvTranspose": 1}
#: ops with trained weights that INT8 does not quantize: refused rather than left silently float
UNSUPPORTED_WEIGHT_OP_TYPES = ("LSTM", "GRU", "RNN")
PROBE_ROWS = 256
#: a legacy graph must reproduce its source this closely on the probe batch (float32 arithmetic)
LEGACY_RTOL, LEGACY_ATOL = 1e-4, 1e-5


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise RuntimeError("exporting a variant needs the onnx package: pip install 'aeguard[train]' "
                           "(scoring the result needs only onnxruntime)") from None
    return onnx


def graph_opset(model: Any) -> int:
    """The default-domain opset of an ONNX model."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise ArtifactError("graph imports no default ONNX opset")


def _prune_opset_imports(model: Any) -> None:
    """Drop opset imports of domains no node uses (the quantizer adds several an old runtime may not know)."""
    used = {node.domain or "" for node in model.graph.node}
    for fn in model.functions:
        used |= {node.domain or "" for node in fn.node}
        used.add(fn.domain)
    keep = [o for o in model.opset_import if (o.domain or "") in used or o.domain in ("", "ai.onnx")]
    del model.opset_import[:]
    model.opset_import.extend(keep)


def _strip_metadata(model: Any) -> None:
    """Remove per-node/value metadata (torch.export provenance): IR < 10 has no such fields and an edge
    runtime never reads them (they are most of a small dynamo graph's bytes)."""
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        if hasattr(value, "metadata_props"):
            del value.metadata_props[:]
    for node in model.graph.node:
        if hasattr(node, "metadata_props"):
            del node.metadata_props[:]


# --- legacy (opset 17) ------------------------------------------------------------------------------


def convert_legacy(src: str | Path, dst: str | Path) -> dict[str, Any]:
    """Write ``src`` converted to opset 17 / IR 8 at ``dst``; returns what was done for the manifest."""
    onnx = _onnx()
    from onnx import version_converter

    model = onnx.load(str(src))
    opset = graph_opset(model)
    if opset <= LEGACY_OPSET:
        shutil.copyfile(src, dst)
        return {"transform": "legacy", "method": "copy (already opset <= 17)", "from_opset": opset,
                "opset": opset, "ir_version": int(model.ir_version)}
    errors = []
    converted = None
    for method in ("version_converter", "onnxscript.optimizer + version_converter"):
        try:
            source = model if method == "version_converter" else _optimized(model)
            converted = version_converter.convert_version(source, LEGACY_OPSET)
            converted.ir_version = min(int(converted.ir_version), LEGACY_IR_VERSION)
            _strip_metadata(converted)
            _prune_opset_imports(converted)
            onnx.checker.check_model(converted, full_check=True)
            break
        except Exception as exc:  # the converter raises bare RuntimeErrors/ValidationErrors with C++ text
            errors.append(f"{method}: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}")
            converted = None
    if converted is None:
        raise ArtifactError("cannot convert the graph to opset 17: " + " | ".join(errors))
    onnx.save(converted, str(dst))
    return {"transform": "legacy", "method": method, "from_opset": opset, "opset": LEGACY_OPSET,
            "ir_version": int(converted.ir_version)}


def _optimized(model: Any) -> Any:
    try:
        import onnxscript.optimizer
    except ImportError:
        raise RuntimeError("this graph needs onnxscript's optimizer before the opset conversion: "
                           "pip install onnxscript") from None
    return onnxscript.optimizer.optimize(copy.deepcopy(model))


# --- int8 (dynamic quantization) ----------------------------------------------------------------------


def quantize_activations_per_row(model: Any) -> int:
    """Rewrite every ``DynamicQuantizeLinear`` -> ``MatMulInteger`` pair to quantize each row on its own.

    ``DynamicQuantizeLinear`` takes one scale for the whole batch, so a row's INT8 score depended on the other
    rows it was scored with (one extreme row coarsened everyone's activations: ``ae+mss`` on mnist scored a
    ROC-AUC of 0.67 in 4,096-row batches against 0.82 row by row). The replacement computes the same uint8
    quantization per row (range over the last axis widened to include 0, ties-to-even rounding) with
    standard ops; a 2-D activation uses one ``QuantizeLinear`` with a per-row (axis 0) scale.
    ``MatMulInteger`` only takes a scalar zero point, so the row zero points are applied
    after it, exactly, in int32: ``(A - zp) W = A W - zp * colsum(W)`` (weights are symmetric, zero point 0).
    Returns how many quantizers were rewritten; the batch result then equals scoring each row alone.
    """
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    attr_axes = graph_opset(model) < 18  # ReduceMin/ReduceMax take axes as an input from opset 18
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in [*graph.input, *graph.value_info]
             if v.type.tensor_type.HasField("shape")}
    new_inits: list[Any] = []
    rewritten = 0
    nodes: list[Any] = []

    def const(name: str, value: Any, dtype: Any = np.float32) -> str:
        new_inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    axes, zero, qmax = const("rowq.axes", [-1], np.int64), const("rowq.zero", 0.0), const("rowq.qmax", 255.0)
    tiny = const("rowq.tiny", np.finfo(np.float32).tiny)  # an all-zero row gets this scale instead of 0

    placed: set[str] = set()  # MatMulIntegers already emitted right after their rewritten quantizer
    for node in list(graph.node):
        if node.op_type == "MatMulInteger" and node.output[0] in placed:
            continue
        if node.op_type != "DynamicQuantizeLinear":
            nodes.append(copy.deepcopy(node))
            continue
        x, (y, y_scale, y_zp) = node.input[0], node.output
        users = consumers.get(y, [])
        if not users or any(u.op_type != "MatMulInteger" or u.input[0] != y or list(u.input[2:3]) != [y_zp]
                            for u in users):
            raise ArtifactError(f"unexpected quantized graph: {y} feeds {[u.op_type for u in users]}")
        p = f"rowq{rewritten}"
        reduce = ({"axes": [-1], "keepdims": 1}, [x]) if attr_axes else ({"keepdims": 1}, [x, axes])
        nodes += [
            helper.make_node("ReduceMin", reduce[1], [f"{p}.min_raw"], **reduce[0]),
            helper.make_node("ReduceMax", reduce[1], [f"{p}.max_raw"], **reduce[0]),
            helper.make_node("Min", [f"{p}.min_raw", zero], [f"{p}.min"]),
            helper.make_node("Max", [f"{p}.max_raw", zero], [f"{p}.max"]),
            helper.make_node("Sub", [f"{p}.max", f"{p}.min"], [f"{p}.range"]),
            helper.make_node("Div", [f"{p}.range", qmax], [f"{p}.scale_raw"]),
            helper.make_node("Max", [f"{p}.scale_raw", tiny], [y_scale]),
            helper.make_node("Neg", [f"{p}.min"], [f"{p}.neg_min"]),
            helper.make_node("Div", [f"{p}.neg_min", y_scale], [f"{p}.zp_raw"]),
            helper.make_node("Round", [f"{p}.zp_raw"], [f"{p}.zp"]),  # in [0, 255]: min <= 0 <= max
            helper.make_node("Cast", [f"{p}.zp"], [f"{p}.zp_i32"], to=TensorProto.INT32),
        ]
        if ranks.get(x) == 2:  # one fused op: QuantizeLinear with a per-row (axis 0) scale and zero point
            nodes += [
                helper.make_node("Squeeze", [y_scale, axes], [f"{p}.scale_vec"]),
                helper.make_node("Squeeze", [f"{p}.zp", axes], [f"{p}.zp_vec"]),
                helper.make_node("Cast", [f"{p}.zp_vec"], [f"{p}.zp_u8"], to=TensorProto.UINT8),
                helper.make_node("QuantizeLinear", [x, f"{p}.scale_vec", f"{p}.zp_u8"], [y], axis=0),
            ]
        else:  # the same arithmetic elementwise, for activations of any rank
            nodes += [
                helper.make_node("Div", [x, y_scale], [f"{p}.scaled"]),
                helper.make_node("Round", [f"{p}.scaled"], [f"{p}.rounded"]),
                helper.make_node("Add", [f"{p}.rounded", f"{p}.zp"], [f"{p}.shifted"]),
                helper.make_node("Clip", [f"{p}.shifted", zero, qmax], [f"{p}.clipped"]),
                helper.make_node("Cast", [f"{p}.clipped"], [y], to=TensorProto.UINT8),
            ]
        for k, original in enumerate(users):
            user = copy.deepcopy(original)
            weight = inits.get(user.input[1])
            w_zp = inits.get(user.input[3]) if len(user.input) > 3 and user.input[3] else None
            if weight is None or (w_zp is not None and np.any(numpy_helper.to_array(w_zp) != 0)):
                raise ArtifactError(f"unexpected quantized graph at {user.name}: weights must be constant and "
                                    "symmetric (zero point 0)")
            colsum = numpy_helper.to_array(weight).astype(np.int32).sum(axis=-2, keepdims=True)
            raw = f"{p}.{k}.mm"
            out = user.output[0]
            placed.add(out)
            del user.input[2:]  # drop the (now per-row) activation zero point and the zero weight zero point
            user.output[0] = raw
            nodes.append(user)  # moved here, after its quantizer, keeping topological order
            nodes += [helper.make_node("Mul", [f"{p}.zp_i32", const(f"{p}.{k}.colsum", colsum, np.int32)],
                                       [f"{p}.{k}.corr"]),
                      helper.make_node("Sub", [raw, f"{p}.{k}.corr"], [out])]
        rewritten += 1
    graph.ClearField("node")
    graph.node.extend(nodes)
    graph.initializer.extend(new_inits)
    used = {name for node in graph.node for name in node.input}
    for i in reversed(range(len(graph.initializer))):  # the dropped weight zero points
        if graph.initializer[i].name not in used:
            del graph.initializer[i]
    onnx.checker.check_model(model)
    return rewritten


def quantize_conv_weights(model: Any, exclude: set[str], per_channel: bool = True) -> list[str]:
    """Rewrite the weights of every Conv/ConvTranspose not in ``exclude`` to int8 + ``DequantizeLinear``.

    Weight-only: the convolution itself stays float32, so a row's score does not depend on its batch and x86
    and ARM compute the same floats; the file holds 1 byte per weight. Symmetric (zero point 0, range +-127)
    with one scale per output channel (``per_channel``) or per tensor. Returns the names of the rewritten nodes.
    """
    onnx = _onnx()
    from onnx import numpy_helper

    graph = model.graph
    if graph_opset(model) < 13:
        raise ArtifactError("INT8 conv weights need opset >= 13 (per-channel DequantizeLinear)")
    inits = {t.name: t for t in graph.initializer}
    dequantized: dict[str, str] = {}  # float weight -> its DequantizeLinear output (a shared weight once)
    new_nodes: list[Any] = []
    rewritten: list[str] = []
    for node in graph.node:
        if node.op_type not in WEIGHT_ONLY_OP_TYPES or node.name in exclude:
            continue
        weight = node.input[1]
        if weight not in inits:
            raise ArtifactError(f"INT8 cannot quantize {node.op_type} node {node.name!r}: its weights are computed, "
                                "not a constant")
        axis = WEIGHT_ONLY_OP_TYPES[node.op_type]
        if weight not in dequantized:
            w = numpy_helper.to_array(inits[weight]).astype(np.float32)
            reduce_axes = tuple(i for i in range(w.ndim) if i != axis) if per_channel else None
            amax = np.max(np.abs(w), axis=reduce_axes)
            scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)  # an all-zero channel: any scale
            shape = [-1 if i == axis else 1 for i in range(w.ndim)] if per_channel else []
            q = np.clip(np.rint(w / scale.reshape(shape)), -127, 127).astype(np.int8)
            names = (f"{weight}.int8", f"{weight}.scale", f"{weight}.zero_point", f"{weight}.dequantized")
            graph.initializer.extend([numpy_helper.from_array(q, names[0]), numpy_helper.from_array(scale, names[1]),
                                      numpy_helper.from_array(np.zeros_like(scale, dtype=np.int8), names[2])])
            extra = {"axis": axis} if per_channel else {}
            new_nodes.append(onnx.helper.make_node("DequantizeLinear", list(names[:3]), [names[3]],
                                                   name=f"{weight}.DequantizeLinear", **extra))
            dequantized[weight] = names[3]
        node.input[1] = dequantized[weight]
        rewritten.append(node.name)
    if new_nodes:  # inputs are initializers only, so the graph's start keeps the topological order
        nodes = [*new_nodes, *graph.node]
        graph.ClearField("node")
        graph.node.extend(nodes)
        used = {name for n in graph.node for name in n.input} | {i.name for i in graph.input}
        for i in reversed(range(len(graph.initializer))):  # the float weights now unused
            if graph.initializer[i].name not in used:
                del graph.initializer[i]
    return rewritten


def _unsupported_weight_ops(model: Any, exclude: set[str]) -> list[str]:
    return [f"{n.op_type} ({n.name})" for n in model.graph.node
            if n.op_type in UNSUPPORTED_WEIGHT_OP_TYPES and n.name not in exclude]


def _check_kept_float(model: Any, kept: dict[str, str]) -> None:
    """Every declared node of a quantizable op is still there, the same op, with float32 inputs only."""
    onnx = _onnx()
    from onnx import TensorProto

    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.input, *inferred.graph.value_info]}
    types |= {t.name: t.data_type for t in inferred.graph.initializer}
    dequantized = {o for n in inferred.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    found = {n.name: n for n in inferred.graph.node}
    for name, op_type in kept.items():
        node = found.get(name)
        if node is None and op_type == "Gemm":  # split by the quantizer into "<name>_MatMul" + "<name>_Add"
            node = found.get(f"{name}{GEMM_AS_MATMUL}")
            op_type = "MatMul"
        if node is None or node.op_type != op_type:
            raise ArtifactError(f"the INT8 graph lost the declared FP32 node {name!r} ({op_type})")
        bad = [i for i in node.input
               if i and (i in dequantized or types.get(i, TensorProto.FLOAT) != TensorProto.FLOAT)]
        if bad:
            raise ArtifactError(f"the declared FP32 node {name!r} ({op_type}) has quantized inputs {bad}")


@contextlib.contextmanager
def _working_dir(folder: str | Path) -> Iterator[None]:
    """Run with ``folder`` as the current directory. onnxruntime's symbolic shape inference, when it gives up
    (it does on the image U-Nets), saves ``sym_shape_infer_temp.onnx`` and a ``<uuid>.data`` file of every weight
    into the current directory before raising: inside the temporary folder they go away with it."""
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def quantize_int8(src: str | Path, dst: str | Path, keep_fp32: list[str] | tuple[str, ...], per_channel: bool = True,
                  reduce_range: bool = True, per_row: bool = True) -> dict[str, Any]:
    """Write ``src`` quantized to INT8 at ``dst``; the nodes named in ``keep_fp32`` (the manifest's declared
    ``graph.fp32_nodes``) stay float32. MatMul/Gemm: dynamic, activations per row (``per_row``) so a row's
    score does not depend on its batch; Conv/ConvTranspose: weight-only."""
    onnx = _onnx()
    try:
        from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic
    except ImportError as exc:
        raise RuntimeError(f"INT8 export needs onnxruntime.quantization ({exc}); pip install onnxruntime onnx "
                           "sympy") from None
    keep = set(keep_fp32)
    with tempfile.TemporaryDirectory(prefix="aeguard-int8-") as tmp:
        pre, per_batch = Path(tmp) / "pre.onnx", Path(tmp) / "per_batch.onnx"
        # shape inference only: its graph optimisation folds Transpose(reference set) into a second copy and
        # would rename or fuse nodes, so the declared FP32 names would no longer match
        source = str(Path(src).resolve())  # the working directory changes below
        with _working_dir(tmp):
            try:
                quant_pre_process(source, str(pre), skip_optimization=True)
            except Exception:  # onnxruntime's symbolic shape inference gives up on some exported graphs
                quant_pre_process(source, str(pre), skip_optimization=True, skip_symbolic_shape=True)
        model = onnx.load(str(pre))
        for i, node in enumerate(model.graph.node):  # the quantizer addresses nodes by name
            if not node.name:
                node.name = f"{node.op_type}_{i}"
        missing = sorted(keep - {n.name for n in model.graph.node})
        if missing:
            raise ArtifactError(f"{len(missing)} declared FP32 node(s) are not in the graph ({', '.join(missing[:3])}"
                                f"{' ...' if len(missing) > 3 else ''}): the graph was changed after export")
        unsupported = _unsupported_weight_ops(model, keep)
        if unsupported:
            raise ArtifactError(f"INT8 cannot quantize {', '.join(unsupported[:3])}: recurrent layers are not "
                                "supported (use the FP32 or legacy artifact)")
        kept = {n.name: n.op_type for n in model.graph.node
                if n.name in keep and (n.op_type in INT8_OP_TYPES or n.op_type in WEIGHT_ONLY_OP_TYPES)}
        dynamic = [n.name for n in model.graph.node if n.op_type in INT8_OP_TYPES and n.name not in keep]
        if not dynamic and not any(n.op_type in WEIGHT_ONLY_OP_TYPES and n.name not in keep for n in model.graph.node):
            raise ArtifactError("the graph has no MatMul/Gemm/Conv weights outside its declared FP32 nodes; INT8 "
                                "would change nothing")
        onnx.save(model, str(pre))
        if dynamic:
            # the dynamic quantizer first rewrites every Gemm as MatMul + Add, renaming it "<name>_MatMul"
            # (onnxruntime ONNXModel.replace_gemm_with_matmul), so a declared Gemm is excluded under both names
            exclude = keep | {f"{n}{GEMM_AS_MATMUL}" for n, op in kept.items() if op == "Gemm"}
            quantize_dynamic(str(pre), str(per_batch), op_types_to_quantize=list(INT8_OP_TYPES),
                             per_channel=per_channel, reduce_range=reduce_range, weight_type=QuantType.QInt8,
                             nodes_to_exclude=sorted(exclude))
            model = onnx.load(str(per_batch))
        conv = quantize_conv_weights(model, keep, per_channel=per_channel)
        _strip_metadata(model)
        _prune_opset_imports(model)
        onnx.save(model, str(per_batch))  # the per-row check's reference: the same graph, activations per batch
        rewritten = quantize_activations_per_row(model) if per_row else 0
        _check_kept_float(model, kept)
        onnx.save(model, str(dst))
        row_check = _row_equivalence(per_batch, Path(dst)) if per_row else None
    ops = [n.op_type for n in model.graph.node]
    return {"transform": "int8", "method": "onnxruntime quant_pre_process + quantize_dynamic"
            + (" + per-row activation quantization" if per_row else "")
            + (" + weight-only int8 convolutions" if conv else ""),
            "weight_type": "int8 (symmetric" + (", 7-bit reduce_range)" if reduce_range else ")"),
            "activation_type": "uint8, dynamic " + ("per row" if per_row else "per batch"),
            "per_channel": per_channel, "reduce_range": reduce_range,
            "quantized_nodes": len(dynamic) + len(conv), "weight_only_nodes": conv,
            "per_row_quantizers": rewritten, "per_row_check_max_abs_diff": row_check,
            "declared_fp32_nodes": len(keep), "kept_fp32_nodes": sorted(kept),
            "integer_ops": sorted({op for op in ops if op in ("MatMulInteger", "DynamicQuantizeLinear",
                                                              "DynamicQuantizeMatMul", "QGemm")}),
            "opset": graph_opset(model)}


def _row_equivalence(per_batch: Path, per_row: Path, rows: int = 32) -> float:
    """Max abs score difference between the per-row graph on a batch and the per-batch graph on each row
    alone (the two must agree: a batch of one is quantized the same way by both)."""
    from aeguard.core.runtime import make_session

    a, b = make_session(per_batch, device="cpu"), make_session(per_row, device="cpu")
    name, shape = a.get_inputs()[0].name, a.get_inputs()[0].shape[1:]
    row_shape = tuple(int(s) if isinstance(s, int) else 1 for s in shape)
    X = np.random.default_rng(0).standard_normal((rows, *row_shape)).astype(np.float32)
    X[0] *= 100.0  # one extreme row: it would coarsen the others under a per-batch scale
    alone = np.concatenate([a.run(["score"], {name: X[i:i + 1]})[0] for i in range(rows)])
    batch = b.run(["score"], {name: X})[0]
    diff = float(np.max(np.abs(alone.astype(np.float64) - batch)))
    if diff > 1e-5 * max(1.0, float(np.max(np.abs(alone)))):
        raise ArtifactError(f"per-row INT8 rewrite does not reproduce row-by-row scoring (max diff {diff:.3g})")
    return diff


# --- artifacts ---------------------------------------------------------------------------------------


def probe_batch(manifest: dict[str, Any], rows: int = PROBE_ROWS, seed: int = 0) -> np.ndarray:
    """Synthetic rows shaped like the fit data (fit mean + scale * N(0, 1)) to compare two graphs."""
    from aeguard.core.artifact import read_input_block

    d = int(manifest["features"]["n_features"])
    rng = np.random.default_rng(seed)
    modality, shape, pixel_range = read_input_block(manifest)
    if modality == "image":  # pixels drawn over the fitted range, in the graph's (C, H, W) layout
        return rng.uniform(*pixel_range, size=(rows, *shape)).astype(np.float32)
    pre = manifest.get("preprocessing", {})
    mean = np.asarray(pre.get("mean", np.zeros(d)), dtype=np.float64)
    scale = np.asarray(pre.get("scale", np.ones(d)), dtype=np.float64)
    return (mean + scale * rng.standard_normal((rows, d))).astype(np.float32)


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Max abs difference; NaN in both at the same place counts as equal (an output that is NaN by definition,
    such as the ``contrib`` of a detector without a per-feature split), NaN on one side only as the largest float
    (finite, so the manifest stays valid JSON)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    both = np.isnan(a) & np.isnan(b)
    diff = np.where(both, 0.0, np.abs(a - b))
    return float(np.max(np.where(np.isnan(diff), np.finfo(np.float64).max, diff), initial=0.0))


def compare_graphs(reference: Path, candidate: Path, X: np.ndarray) -> dict[str, Any]:
    """Score ``X`` with both graphs; max abs/rel difference of every output and Spearman of ``score``."""
    from aeguard.core.runtime import make_session

    outs = []
    for path in (reference, candidate):
        session = make_session(path, device="cpu")
        names = [o.name for o in session.get_outputs()]
        outs.append(dict(zip(names, session.run(None, {session.get_inputs()[0].name: X}))))
    ref, cand = outs
    if set(ref) != set(cand):
        raise ArtifactError(f"variant graph outputs {sorted(cand)} differ from the source's {sorted(ref)}")
    diffs = {name: max_abs_diff(ref[name], cand[name]) for name in ref}
    span = float(np.max(np.abs(ref["score"]))) or 1.0
    return {"probe_rows": int(len(X)), "max_abs_diff": diffs, "score_span": span,
            "max_rel_diff_score": diffs["score"] / span, "spearman_score": spearman(ref["score"], cand["score"])}


def variant_name(source_variant: str, int8: bool, legacy: bool, opset: int) -> str:
    quantized = int8 or source_variant.startswith("int8")
    old = legacy or opset <= LEGACY_OPSET
    if quantized:
        return "int8-legacy" if old else "int8"
    return "legacy" if old else source_variant


def _declared_after(declared: list[str], before: Path, after: Path, refuse: bool) -> list[str] | None:
    """The declared FP32 names still in the graph after a transform (folded constants drop out).

    ``None`` when a declared MatMul/Gemm/Conv was renamed away, since INT8 could no longer keep it float:
    an error when ``refuse`` (an INT8 export follows), else the variant simply declares nothing.
    """
    onnx = _onnx()
    ops = {n.name: n.op_type for n in onnx.load(str(before)).graph.node}
    now = {n.name for n in onnx.load(str(after)).graph.node}
    quantizable = (*INT8_OP_TYPES, *WEIGHT_ONLY_OP_TYPES)
    lost = [name for name in declared if name not in now and ops.get(name) in quantizable]
    if lost and refuse:
        raise ArtifactError(f"the opset-17 conversion renamed declared FP32 node(s) {lost[:3]}, so INT8 could "
                            "not keep them float; export --int8 alone (opset 18)")
    return None if lost else [name for name in declared if name in now]


def export_variant(artifact: str | Path, output: str | Path, *, int8: bool = False, legacy: bool = False,
                   per_channel: bool = True, reduce_range: bool = True, per_row: bool = True) -> Path:
    """Write a new artifact at ``output`` holding the INT8 and/or opset-17 variant of ``artifact``'s graph."""
    if not (int8 or legacy):
        raise ValueError("choose a variant: --int8 and/or --legacy")
    src = Path(artifact)
    out = Path(output)
    manifest = read_manifest(src, verify=True)
    if out.resolve() == src.resolve():
        raise ArtifactError("the output folder must differ from the source artifact")
    source_variant = str(manifest["graph"].get("variant", "fp32"))
    if int8 and source_variant.startswith("int8"):
        raise ArtifactError(f"{src} is already an INT8 artifact (variant {source_variant!r})")
    declared = manifest["graph"].get("fp32_nodes")
    if int8 and manifest["graph"].get("int8_refusal"):  # the exporter declared that INT8 does not apply
        raise ArtifactError(f"{src} ({manifest['detector']['name']}) has no INT8 variant: "
                            f"{manifest['graph']['int8_refusal']}")
    if int8 and declared is None:
        raise ArtifactError(f"{src} was exported by an older aeguard: its manifest does not declare which nodes "
                            "must stay FP32 (graph.fp32_nodes); re-export it (aeguard fit) before --int8")
    src_graph = src / manifest["graph"]["file"]
    transforms: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="aeguard-export-") as tmp:
        current = Path(tmp) / "source.onnx"
        shutil.copyfile(src_graph, current)
        if legacy:  # convert first, so an int8-legacy graph is quantized at the opset it ships with
            nxt = Path(tmp) / "legacy.onnx"
            transforms.append(convert_legacy(current, nxt))
            if declared is not None:
                declared = _declared_after(declared, current, nxt, refuse=int8)
            current = nxt
        if int8:
            nxt = Path(tmp) / "int8.onnx"
            transforms.append(quantize_int8(current, nxt, declared, per_channel=per_channel,
                                            reduce_range=reduce_range, per_row=per_row))
            current = nxt
        check = compare_graphs(src_graph, current, probe_batch(manifest))
        limit = LEGACY_ATOL + LEGACY_RTOL * check["score_span"]
        if not int8 and check["max_abs_diff"]["score"] > limit:
            raise ArtifactError(f"the converted graph does not reproduce its source (max abs score difference "
                                f"{check['max_abs_diff']['score']:.3g} > {limit:.3g} on {check['probe_rows']} "
                                "probe rows)")
        onnx = _onnx()
        opset = graph_opset(onnx.load(str(current)))
        variant = variant_name(source_variant, int8, legacy, opset)
        source = {"manifest_sha256": manifest_digest(manifest), "detector": manifest["detector"]["name"],
                  "variant": source_variant, "created": manifest.get("created"), "path": str(src)}
        tools = {k: v for k in ("onnx", "onnxruntime", "onnxscript") if (v := installed_version(k))}

        def build(files: dict[str, Any]) -> dict[str, Any]:
            new = copy.deepcopy(manifest)
            new["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            new["graph"] = {**manifest["graph"], "file": GRAPH, "variant": variant, "opset": opset,
                            "exporter": "aeguard.edge.variants", "source_variant": source_variant,
                            "transforms": transforms, "tools": tools, "check": check}
            if declared is None:  # unknown, or lost by the opset conversion: an INT8 export of it is refused
                new["graph"].pop("fp32_nodes", None)
            else:
                new["graph"]["fp32_nodes"] = list(declared)
            new["source"] = source
            new["files"] = files
            return new

        final = Path(tmp) / GRAPH
        shutil.copyfile(current, final)
        return write_artifact(out, final, build)

