"""An ONNX graph is untrusted input: check it before onnxruntime sees a byte (no ``onnx`` package needed).

The edge install has numpy and onnxruntime only, and onnxruntime exposes no graph protobuf, so this module
reads the protobuf wire format itself: only the fields the checks need, with bounded nesting, skipping the
payloads by length (a memoryview, no copies). What it refuses, each with an :class:`ArtifactError` naming it:

- **external data**: a tensor whose data lives in another file (``data_location = EXTERNAL`` or
  ``external_data`` entries). aeguard writes self-contained graphs and onnxruntime gets the graph as bytes, so a
  path (inside the folder or outside it, ``../../etc/shadow``) is never followed;
- **custom-op domains**: a node or opset import outside :data:`ALLOWED_DOMAINS` (a domain onnxruntime would
  resolve in a custom-op library), except the model's own local functions;
- **allocation bombs**: a tensor (initializer, ``Constant``, attribute) whose declared shape needs more than
  the tensor cap, or more elements than its data holds; a ``ConstantOfShape`` / ``Expand`` whose constant shape
  would allocate more than the cap; declared input/output/value shapes whose fixed dimensions alone exceed it;
- **malformed bytes**: truncated fields, group wire types, nesting deeper than :data:`MAX_DEPTH`.

:func:`inspect_graph` also returns the graph's input and output names and the input element type, which the
loader matches against the manifest.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

#: operator domains onnxruntime implements itself; anything else needs a custom-op library
ALLOWED_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})
MAX_DEPTH = 16
ENV_MAX_TENSOR_MB = "AEGUARD_MAX_TENSOR_MB"
DEFAULT_MAX_TENSOR_MB = 1024

#: bytes per element of TensorProto.DataType (0 = undefined; strings count 1 byte as a lower bound)
ITEM_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 8: 1, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 14: 8, 15: 16,
              16: 2, 17: 1, 18: 1, 19: 1, 20: 1, 21: 1, 22: 1, 23: 1}
FLOAT = 1
INT64 = 7


class GraphError(ValueError):
    """The graph bytes break a rule; the loader re-raises it as an ArtifactError with the file name."""


def max_tensor_bytes() -> int:
    """The largest allocation one declared tensor or shape may need (``AEGUARD_MAX_TENSOR_MB``, default 1024)."""
    raw = os.environ.get(ENV_MAX_TENSOR_MB, "").strip()
    try:
        mb = float(raw) if raw else DEFAULT_MAX_TENSOR_MB
    except ValueError:
        raise ValueError(f"{ENV_MAX_TENSOR_MB} must be a number of MiB, got {raw!r}") from None
    return int(mb * (1 << 20))


# --- protobuf wire format ---------------------------------------------------------------------------------


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise GraphError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise GraphError("varint longer than 10 bytes")


def fields(buf: memoryview) -> list[tuple[int, int, int | memoryview]]:
    """``(field number, wire type, value)`` of one message: ints for varint/fixed, memoryviews for bytes."""
    out: list[tuple[int, int, int | memoryview]] = []
    pos = 0
    n = len(buf)
    while pos < n:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise GraphError("field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            if pos + 8 > n:
                raise GraphError("truncated 64-bit field")
            value, pos = int.from_bytes(buf[pos:pos + 8], "little"), pos + 8
        elif wire == 5:
            if pos + 4 > n:
                raise GraphError("truncated 32-bit field")
            value, pos = int.from_bytes(buf[pos:pos + 4], "little"), pos + 4
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > n:
                raise GraphError("length-delimited field runs past the end of the data")
            value, pos = buf[pos:pos + length], pos + length
        else:
            raise GraphError(f"unsupported protobuf wire type {wire}")
        out.append((number, wire, value))
    return out


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _ints(values: list[tuple[int, int | memoryview]]) -> list[int]:
    """A repeated int64 field, packed (wire type 2) or not."""
    out: list[int] = []
    for wire, v in values:
        if wire == 0:
            out.append(_signed(int(v)))  # type: ignore[arg-type]
        elif wire == 2:
            pos, buf = 0, v
            while pos < len(buf):  # type: ignore[arg-type]
                x, pos = _varint(buf, pos)  # type: ignore[arg-type]
                out.append(_signed(x))
        else:
            raise GraphError("malformed repeated integer field")
    return out


def _count(values: list[tuple[int, int | memoryview]], width: int) -> int:
    """Elements in a repeated numeric field: packed fixed-width, packed varints or one per entry."""
    total = 0
    for wire, v in values:
        if wire != 2:
            total += 1
        elif width:
            total += len(v) // width  # type: ignore[arg-type]
        else:
            total += sum(1 for b in v if not b & 0x80)  # type: ignore[union-attr]
    return total


def _text(v: int | memoryview) -> str:
    if not isinstance(v, memoryview):
        raise GraphError("expected a string field")
    try:
        return bytes(v).decode("utf-8")
    except UnicodeDecodeError:
        raise GraphError("a string field is not UTF-8") from None


def _group(buf: memoryview) -> dict[int, list[tuple[int, int | memoryview]]]:
    grouped: dict[int, list[tuple[int, int | memoryview]]] = {}
    for number, wire, value in fields(buf):
        grouped.setdefault(number, []).append((wire, value))
    return grouped


def _msgs(grouped: dict[int, list[tuple[int, int | memoryview]]], number: int) -> list[memoryview]:
    out = []
    for wire, v in grouped.get(number, []):
        if wire != 2:
            raise GraphError(f"field {number} should be a message")
        out.append(v)  # type: ignore[arg-type]
    return out


def _one_text(grouped: dict[int, list[tuple[int, int | memoryview]]], number: int) -> str:
    values = grouped.get(number)
    return _text(values[-1][1]) if values else ""


def _one_int(grouped: dict[int, list[tuple[int, int | memoryview]]], number: int, default: int = 0) -> int:
    values = grouped.get(number)
    if not values:
        return default
    wire, v = values[-1]
    if wire != 0:
        raise GraphError(f"field {number} should be an integer")
    return _signed(int(v))  # type: ignore[arg-type]


# --- the checks ------------------------------------------------------------------------------------------


@dataclass
class GraphFacts:
    """What the loader compares with the manifest."""

    inputs: list[str] = field(default_factory=list)
    input_types: list[int] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    domains: set[str] = field(default_factory=set)
    tensors: int = 0


@dataclass
class _Context:
    cap: int
    local_domains: set[str]
    facts: GraphFacts
    constants: dict[str, list[int]] = field(default_factory=dict)


# TensorProto fields
_T_DIMS, _T_TYPE, _T_FLOAT, _T_INT32, _T_STRING, _T_INT64, _T_NAME, _T_RAW = 1, 2, 4, 5, 6, 7, 8, 9
_T_DOUBLE, _T_UINT64, _T_EXTERNAL, _T_LOCATION = 10, 11, 13, 14
_DATA_WIDTH = {_T_FLOAT: 4, _T_INT32: 0, _T_STRING: -1, _T_INT64: 0, _T_DOUBLE: 8, _T_UINT64: 0}


def _tensor(buf: memoryview, ctx: _Context, where: str) -> tuple[str, list[int] | None]:
    """Check one TensorProto; returns its name and, for a small int64 tensor, its values (for shape inputs)."""
    t = _group(buf)
    name = _one_text(t, _T_NAME)
    label = f"{where} tensor {name!r}" if name else f"{where} tensor"
    ctx.facts.tensors += 1
    if _one_int(t, _T_LOCATION) == 1 or _T_EXTERNAL in t:
        location = ""
        for entry in _msgs(t, _T_EXTERNAL):
            e = _group(entry)
            if _one_text(e, 1) == "location":
                location = _one_text(e, 2)
        raise GraphError(f"{label} references external data {location!r}: a graph must be self-contained "
                         "(external data, inside the folder or outside it, is refused)")
    dims = _ints(t.get(_T_DIMS, []))
    if any(d < 0 for d in dims):
        raise GraphError(f"{label} declares a negative dimension {dims}")
    dtype = _one_int(t, _T_TYPE)
    elements = 1
    for d in dims:
        elements *= d
    declared = elements * ITEM_BYTES.get(dtype, 1)
    if declared > ctx.cap:
        raise GraphError(f"{label} declares shape {dims} ({declared / (1 << 20):.0f} MiB), over the "
                         f"{ctx.cap >> 20} MiB cap per tensor ({ENV_MAX_TENSOR_MB}): refusing an allocation bomb")
    if _T_RAW in t:
        present = len(t[_T_RAW][-1][1]) // max(1, ITEM_BYTES.get(dtype, 1))  # type: ignore[arg-type]
    else:
        present = sum(len(t.get(f, [])) if w < 0 else _count(t.get(f, []), w) for f, w in _DATA_WIDTH.items())
    if elements and present < elements:
        raise GraphError(f"{label} declares shape {dims} ({elements} elements) but holds {present}: refusing "
                         "a tensor that claims more data than it carries")
    values = None
    if dtype == INT64 and elements <= 64:
        if _T_RAW in t:
            values = np.frombuffer(bytes(t[_T_RAW][-1][1]), dtype="<i8").tolist()  # type: ignore[arg-type]
        else:
            values = _ints(t.get(_T_INT64, []))
    return name, values


def _attribute(buf: memoryview, ctx: _Context, depth: int, where: str) -> list[int] | None:
    """Check a node attribute: its tensors and subgraphs; returns the values of an int64 tensor ``value``."""
    a = _group(buf)
    name = _one_text(a, 1)
    values = None
    for tensor in _msgs(a, 5) + _msgs(a, 10):
        _, v = _tensor(tensor, ctx, f"{where} attribute {name!r}")
        values = v if name == "value" else values
    for sparse in _msgs(a, 22) + _msgs(a, 23):
        _sparse(sparse, ctx, f"{where} attribute {name!r}")
    for graph in _msgs(a, 6) + _msgs(a, 11):
        _graph(graph, ctx, depth + 1, top=False)
    return values


def _sparse(buf: memoryview, ctx: _Context, where: str) -> None:
    s = _group(buf)
    for part in _msgs(s, 1) + _msgs(s, 2):
        _tensor(part, ctx, f"sparse {where}")
    dims = _ints(s.get(3, []))
    elements = 1
    for d in dims:
        if d < 0:
            raise GraphError(f"sparse {where} tensor declares a negative dimension {dims}")
        elements *= d
    if elements * 4 > ctx.cap:
        raise GraphError(f"sparse {where} tensor declares dense shape {dims}, over the {ctx.cap >> 20} MiB cap "
                         f"per tensor ({ENV_MAX_TENSOR_MB}): refusing an allocation bomb")


def _domain(domain: str, ctx: _Context, what: str) -> None:
    ctx.facts.domains.add(domain)
    if domain not in ALLOWED_DOMAINS and domain not in ctx.local_domains:
        raise GraphError(f"{what} uses the custom operator domain {domain!r}: only {sorted(ALLOWED_DOMAINS)} "
                         "(operators onnxruntime implements itself) and the model's own functions are allowed")


#: ops whose input ``index`` is a shape the op allocates
_SHAPE_OPS = {"ConstantOfShape": 0, "Expand": 1}


def _node(buf: memoryview, ctx: _Context, depth: int) -> None:
    n = _group(buf)
    op = _one_text(n, 4)
    label = f"node {_one_text(n, 3) or op!r} ({op})"
    _domain(_one_text(n, 7), ctx, label)
    outputs = [_text(v) for _, v in n.get(2, [])]
    inputs = [_text(v) for _, v in n.get(1, [])]
    for attr in _msgs(n, 5):
        values = _attribute(attr, ctx, depth, label)
        if op == "Constant" and values is not None and outputs:
            ctx.constants[outputs[0]] = values
    if op in _SHAPE_OPS and len(inputs) > _SHAPE_OPS[op]:
        shape = ctx.constants.get(inputs[_SHAPE_OPS[op]])
        if shape is not None:
            elements = 1
            for d in shape:
                elements *= max(d, 1)
            if elements * 4 > ctx.cap:
                raise GraphError(f"{label} would allocate shape {shape} ({elements * 4 / (1 << 30):.1f} GiB), over "
                                 f"the {ctx.cap >> 20} MiB cap per tensor ({ENV_MAX_TENSOR_MB}): refusing an "
                                 "allocation bomb")


def _value_info(buf: memoryview, ctx: _Context, what: str) -> tuple[str, int]:
    """A graph input/output/value_info: its name and element type; fixed dimensions are size-checked."""
    v = _group(buf)
    name = _one_text(v, 1)
    elem = 0
    for type_proto in _msgs(v, 2):
        tp = _group(type_proto)
        for tensor_type in _msgs(tp, 1):
            tt = _group(tensor_type)
            elem = _one_int(tt, 1)
            elements = 1
            for shape in _msgs(tt, 2):
                for dim in _msgs(_group(shape), 1):
                    size = _one_int(_group(dim), 1, default=1)
                    if size < 0:
                        raise GraphError(f"{what} {name!r} declares a negative dimension")
                    elements *= max(size, 1)
            if elements * ITEM_BYTES.get(elem, 1) > ctx.cap:
                raise GraphError(f"{what} {name!r} declares a fixed shape of {elements} elements, over the "
                                 f"{ctx.cap >> 20} MiB cap per tensor ({ENV_MAX_TENSOR_MB})")
    return name, elem


def _graph(buf: memoryview, ctx: _Context, depth: int, top: bool) -> None:
    if depth > MAX_DEPTH:
        raise GraphError(f"subgraphs nested deeper than {MAX_DEPTH} levels")
    g = _group(buf)
    initializers = set()
    for tensor in _msgs(g, 5):
        name, values = _tensor(tensor, ctx, "initializer")
        initializers.add(name)
        if values is not None:
            ctx.constants[name] = values
    for sparse in _msgs(g, 15):
        _sparse(sparse, ctx, "initializer")
    for node in _msgs(g, 1):
        _node(node, ctx, depth)
    for info in _msgs(g, 13):
        _value_info(info, ctx, "value")
    ins = [_value_info(i, ctx, "input") for i in _msgs(g, 11)]
    outs = [_value_info(o, ctx, "output") for o in _msgs(g, 12)]
    if top:
        real = [(name, elem) for name, elem in ins if name not in initializers]
        ctx.facts.inputs = [name for name, _ in real]
        ctx.facts.input_types = [elem for _, elem in real]
        ctx.facts.outputs = [name for name, _ in outs]


def inspect_graph(data: bytes | memoryview, cap: int | None = None) -> GraphFacts:
    """Check ONNX model bytes (see the module docstring); raises :class:`GraphError` naming the problem."""
    buf = memoryview(data)
    cap = max_tensor_bytes() if cap is None else cap
    model = _group(buf)
    graphs = _msgs(model, 7)
    if len(graphs) != 1:
        raise GraphError("not an ONNX model: it has no graph" if not graphs else "an ONNX model has one graph")
    local = set()
    for function in _msgs(model, 25):
        local.add(_one_text(_group(function), 10))
    ctx = _Context(cap=cap, local_domains=local, facts=GraphFacts())
    for opset in _msgs(model, 8):
        _domain(_one_text(_group(opset), 1), ctx, "an opset import")
    for function in _msgs(model, 25):
        f = _group(function)
        for opset in _msgs(f, 9):
            _domain(_one_text(_group(opset), 1), ctx, f"function {_one_text(f, 1)!r}")
        for node in _msgs(f, 7):
            _node(node, ctx, 1)
    _graph(graphs[0], ctx, 0, top=True)
    return ctx.facts
