"""Scoring graphs of the PyOD baselines: raw features in, PyOD's ``decision_function`` out.

Each ``*_graph`` function takes the fitted quantities as numpy arrays (no PyOD object), so the graph states
exactly which numbers it holds; :mod:`aeguard.plugins.pyod_baselines` pulls them out of the fitted model.
All arithmetic is float64 after the input cast (see :mod:`.builder`).

ECOD and COPOD score a batch by joining it to the fit set (``decision_function(X)`` concatenates the training
rows and ``X`` and recomputes the empirical CDFs and the skewness over the union), so a PyOD score depends on
the other rows of its batch. A served score must not: these graphs give every row the score PyOD gives it
**as a batch of one** (fit set plus that row), which :func:`tail_terms` computes in numpy for the in-process
detector as well.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .builder import GraphBuilder, model_from, nan_contrib


def _frame(opset: int, center: np.ndarray, scale: np.ndarray) -> tuple[GraphBuilder, str, str]:
    """Builder, input name and the float64 scaled input ``(x - center) / scale``."""
    b = GraphBuilder(opset)
    x = "x"
    z = b.op("Div", b.op("Sub", b.cast(x, b.DOUBLE), b.const(center, stem="center")), b.const(scale, stem="scale"))
    return b, x, z


# --- distance-based: knn, lof, ocsvm, pca ---------------------------------------------------------------


def knn_graph(opset: int, center: np.ndarray, scale: np.ndarray, ref: np.ndarray, k: int, method: str) -> Any:
    """PyOD ``KNN``: the distance to the ``k``-th nearest reference row (``largest``), or the mean / median of
    the ``k`` distances. Neighbours by one float64 MatMul + TopK, their distances recomputed exactly."""
    b, x, z = _frame(opset, center, scale)
    d2 = b.sq_dist(z, ref)
    _, idx = b.op("TopK", d2, b.const([k], np.int64, "k"), n_out=2, axis=1, largest=0, sorted=1)
    dist = b.row_dist(z, b.const(ref, stem="ref"), idx)  # [batch, k], ascending
    if method == "largest":
        score = b.op("Gather", dist, b.const(k - 1, np.int64, "last"), axis=1)
    elif method == "mean":
        score = b.reduce("ReduceMean", dist, [1])
    else:  # median of the k sorted distances, as np.median
        lo, hi = (k - 1) // 2, k // 2
        pick = b.op("Gather", dist, b.const([lo, hi], np.int64, "mid"), axis=1)
        score = b.reduce("ReduceMean", pick, [1])
    return model_from(b, x, score, nan_contrib(b, x), len(center), f"PyOD KNN (k={k}, method={method})")


def lof_graph(opset: int, center: np.ndarray, scale: np.ndarray, ref: np.ndarray, k: int, k_dist: np.ndarray,
              lrd: np.ndarray) -> Any:
    """PyOD ``LOF`` (scikit-learn ``LocalOutlierFactor(novelty=True)``): mean over the ``k`` nearest reference
    rows of ``lrd[nb] / lrd(x)``, with ``lrd(x) = 1 / (mean(max(dist, k_dist[nb])) + 1e-10)``."""
    b, x, z = _frame(opset, center, scale)
    d2 = b.sq_dist(z, ref)
    _, idx = b.op("TopK", d2, b.const([k], np.int64, "k"), n_out=2, axis=1, largest=0, sorted=1)
    dist = b.row_dist(z, b.const(ref, stem="ref"), idx)
    reach = b.op("Max", dist, b.op("Gather", b.const(k_dist, stem="k_dist"), idx, axis=0))
    x_lrd = b.op("Div", b.const(1.0), b.op("Add", b.reduce("ReduceMean", reach, [1], keepdims=1),
                                             b.const(1e-10)))
    ratios = b.op("Div", b.op("Gather", b.const(lrd, stem="lrd"), idx, axis=0), x_lrd)
    score = b.reduce("ReduceMean", ratios, [1])
    return model_from(b, x, score, nan_contrib(b, x), len(center), f"PyOD LOF (k={k})")


def ocsvm_graph(opset: int, center: np.ndarray, scale: np.ndarray, sv: np.ndarray, coef: np.ndarray,
                gamma: float, intercept: float) -> Any:
    """PyOD ``OCSVM`` with the RBF kernel: ``-(sum_i coef_i exp(-gamma |z - sv_i|^2) + intercept)``, the
    support vectors centred on their mean first (as :func:`~aeguard.plugins.pyod_baselines.rbf_svm_decision`)."""
    sv = np.asarray(sv, dtype=np.float64)
    sv_mean = sv.mean(axis=0)
    b, x, z = _frame(opset, center, scale)
    zc = b.op("Sub", z, b.const(sv_mean, stem="sv_mean"))
    d2 = b.sq_dist(zc, sv - sv_mean)
    kern = b.op("Exp", b.op("Mul", d2, b.const(-float(gamma))))
    dec = b.op("Add", b.op("MatMul", kern, b.const(np.asarray(coef, dtype=np.float64).ravel(), stem="dual_coef")),
               b.const(float(intercept)))
    score = b.op("Neg", dec)
    return model_from(b, x, score, nan_contrib(b, x), len(center), f"PyOD OCSVM (rbf, {len(sv)} support vectors)")


def pca_graph(opset: int, center: np.ndarray, scale: np.ndarray, mu: np.ndarray | None, sigma: np.ndarray | None,
              components: np.ndarray, weights: np.ndarray) -> Any:
    """PyOD ``PCA``: its own StandardScaler (``mu``, ``sigma``; None when ``standardization=False``), then
    ``sum_j |z - c_j| / w_j`` over the selected components ``c_j`` (cdist to the component vectors)."""
    b, x, z = _frame(opset, center, scale)
    if mu is not None:
        z = b.op("Div", b.op("Sub", z, b.const(mu, stem="pca_mean")), b.const(sigma, stem="pca_scale"))
    dist = b.op("Sqrt", b.sq_dist(z, components))
    score = b.reduce("ReduceSum", b.op("Div", dist, b.const(weights, stem="weights")), [1])
    return model_from(b, x, score, nan_contrib(b, x), len(center), f"PyOD PCA ({len(components)} components)")


# --- per-feature: hbos, ecod, copod ---------------------------------------------------------------------


def hbos_graph(opset: int, center: np.ndarray, scale: np.ndarray, edges: np.ndarray, hist: np.ndarray,
               alpha: float, tol: float) -> Any:
    """PyOD ``HBOS`` with a fixed number of bins: per feature ``-log2(hist[bin] + alpha)`` (``contrib``, which
    sums to the score); a value outside the fit range within ``tol`` bin widths takes the edge bin, further out
    the feature's lowest density. ``edges`` is ``[n_bins + 1, d]``, ``hist`` ``[n_bins, d]``."""
    edges = np.asarray(edges, dtype=np.float64)
    log_h = np.log2(np.asarray(hist, dtype=np.float64) + alpha)  # [n_bins, d]
    n_bins = log_h.shape[0]
    b, x, z = _frame(opset, center, scale)
    # np.digitize(right=True): the number of edges strictly below z
    below = b.op("Cast", b.op("Less", b.const(edges.T, stem="edges"), b.op("Unsqueeze", z, b.const([2], np.int64,
                                                                                                  "axes"))),
                 to=b.INT64)
    ind = b.reduce("ReduceSum", below, [2])  # [batch, d] in 0..n_bins+1
    inside = b.op("Sub", b.op("Clip", ind, b.const(1, np.int64), b.const(n_bins, np.int64)), b.const(1, np.int64))
    # per feature table lookup: flat index j * n_bins + bin
    offsets = b.const(np.arange(log_h.shape[1], dtype=np.int64) * n_bins, np.int64, "offsets")
    value = b.op("Gather", b.const(log_h.T.ravel(), stem="log_hist"), b.op("Add", inside, offsets), axis=0)
    width_lo, width_hi = edges[1] - edges[0], edges[-1] - edges[-2]
    far_lo = b.op("Greater", b.op("Sub", b.const(edges[0]), z), b.const(width_lo * tol))
    far_hi = b.op("Greater", b.op("Sub", z, b.const(edges[-1])), b.const(width_hi * tol))
    lo, hi = b.op("Equal", ind, b.const(0, np.int64)), b.op("Equal", ind, b.const(n_bins + 1, np.int64))
    far = b.op("Or", b.op("And", lo, far_lo), b.op("And", hi, far_hi))
    terms = b.op("Where", far, b.const(log_h.min(axis=0), stem="log_hist_min"), value)
    contrib = b.op("Neg", terms)
    score = b.reduce("ReduceSum", contrib, [1])
    return model_from(b, x, score, contrib, len(center), f"PyOD HBOS ({n_bins} bins)")


def block_layout(sorted_cols: np.ndarray) -> tuple[np.ndarray, int]:
    """Sorted fit values ``[n, d]`` as ``[d * m, K]`` blocks of ``K = ceil(sqrt(n))`` (padded with +inf), so a
    rank lookup compares with ``m`` block heads and one block (``2 sqrt(n)`` comparisons instead of ``n``)."""
    n, d = sorted_cols.shape
    size = int(np.ceil(np.sqrt(n)))
    m = int(np.ceil(n / size))
    padded = np.full((m * size, d), np.inf)
    padded[:n] = sorted_cols
    return padded.T.reshape(d * m, size), m


def _count(b: GraphBuilder, z: str, blocks: str, heads: str, size: int, offsets: str, strict: bool) -> str:
    """Per (row, feature): how many fit values are ``<= z`` (``< z`` when ``strict``), float64 ``[batch, d]``."""
    cmp = "Less" if strict else "LessOrEqual"
    z3 = b.op("Unsqueeze", z, b.const([2], np.int64, "axes"))  # [batch, d, 1]
    n_heads = b.reduce("ReduceSum", b.op("Cast", b.op(cmp, heads, z3), to=b.INT64), [2])  # heads [d, m]
    block = b.op("Max", b.op("Sub", n_heads, b.const(1, np.int64)), b.const(0, np.int64))
    rows = b.op("Gather", blocks, b.op("Add", block, offsets), axis=0)  # [batch, d, K]
    inside = b.reduce("ReduceSum", b.op("Cast", b.op(cmp, rows, z3), to=b.INT64), [2])
    return b.cast(b.op("Add", b.op("Mul", block, b.const(size, np.int64)), inside), b.DOUBLE)


def tail_graph(opset: int, center: np.ndarray, scale: np.ndarray, sorted_cols: np.ndarray, method: str) -> Any:
    """PyOD ``ECOD`` / ``COPOD`` for one row joined to the fit set (see the module docstring).

    With ``n = n_fit + 1``, ``c_le`` / ``c_ge`` the fit values ``<=`` / ``>=`` the row's value, PyOD's ECDF gives
    ``U_l = -log(p(c_le))`` and ``U_r = -log(p(c_ge))`` with ``p(c) = np.linspace(1/n, 1, n)[c]``; the sign of the
    skewness of the fit values plus the row (scipy's ``skew``, 0 for a constant column) picks ``U_skew``; ECOD
    keeps ``max(U_l, U_r, U_skew)`` per feature, COPOD ``max(U_skew, (U_l + U_r) / 2)``. ``contrib`` holds those
    per-feature terms (they sum to the score).
    """
    sorted_cols = np.asarray(sorted_cols, dtype=np.float64)
    n_fit, d = sorted_cols.shape
    n = n_fit + 1
    b, x, z = _frame(opset, center, scale)
    padded, m = block_layout(sorted_cols)
    blocks = b.const(padded, stem="sorted_fit")
    heads = b.const(padded[:, 0].reshape(d, m), stem="block_heads")
    offsets = b.const(np.arange(d, dtype=np.int64) * m, np.int64, "offsets")
    c_le = _count(b, z, blocks, heads, padded.shape[1], offsets, strict=False)
    c_lt = _count(b, z, blocks, heads, padded.shape[1], offsets, strict=True)
    c_ge = b.op("Sub", b.const(float(n_fit)), c_lt)
    step = (1.0 - 1.0 / n) / (n - 1)

    def neg_log_p(count: str) -> str:  # rank `count` (0-based) in the union: linspace(1/n, 1, n)[count]
        p = b.op("Add", b.op("Mul", count, b.const(step)), b.const(1.0 / n))
        p = b.op("Where", b.op("Equal", count, b.const(float(n - 1))), b.const(1.0), p)
        return b.op("Neg", b.op("Log", p))

    u_l, u_r = neg_log_p(c_le), neg_log_p(c_ge)
    sign = _skew_sign(b, z, sorted_cols)
    one = b.const(1.0)
    u_skew = b.op("Add", b.op("Mul", u_l, b.op("Neg", b.op("Sign", b.op("Sub", sign, one)))),
                  b.op("Mul", u_r, b.op("Sign", b.op("Add", sign, one))))
    if method == "ecod":
        contrib = b.op("Max", u_skew, b.op("Max", u_l, u_r))
    else:
        contrib = b.op("Max", u_skew, b.op("Div", b.op("Add", u_l, u_r), b.const(2.0)))
    score = b.reduce("ReduceSum", contrib, [1])
    return model_from(b, x, score, contrib, d, f"PyOD {method.upper()} (one row joined to {n_fit} fit rows)")


def skew_sums(sorted_cols: np.ndarray) -> dict[str, np.ndarray]:
    """Fit-set power sums about the fit mean, the constants of the joined skewness."""
    v = np.asarray(sorted_cols, dtype=np.float64)
    mu = v.mean(axis=0)
    a = v - mu
    return {"mu": mu, "s1": a.sum(axis=0), "s2": (a * a).sum(axis=0), "s3": (a * a * a).sum(axis=0),
            "n": np.float64(len(v))}


def _skew_sign(b: GraphBuilder, z: str, sorted_cols: np.ndarray) -> str:
    """sign(skew) of each fit column plus the row's value, from fit power sums (see :func:`skew_sign`)."""
    s = skew_sums(sorted_cols)
    n = s["n"]
    y = b.op("Sub", z, b.const(s["mu"], stem="fit_mean"))
    delta = b.op("Div", y, b.const(n + 1))
    yd = b.op("Sub", y, delta)
    d2 = b.op("Mul", delta, delta)
    m2 = b.op("Add", b.op("Add", b.op("Sub", b.const(s["s2"], stem="s2"),
                                      b.op("Mul", b.const(2.0 * s["s1"], stem="s1x2"), delta)),
                          b.op("Mul", b.const(n), d2)), b.op("Mul", yd, yd))
    m3 = b.op("Sub", b.const(s["s3"], stem="s3"), b.op("Mul", b.const(3.0 * s["s2"], stem="s2x3"), delta))
    m3 = b.op("Add", m3, b.op("Mul", b.const(3.0 * s["s1"], stem="s1x3"), d2))
    m3 = b.op("Sub", m3, b.op("Mul", b.const(n), b.op("Mul", d2, delta)))
    m3 = b.op("Add", m3, b.op("Mul", yd, b.op("Mul", yd, yd)))
    mean = b.op("Add", b.const(s["mu"], stem="fit_mean"), delta)
    eps_mean = b.op("Mul", mean, b.const(np.finfo(np.float64).eps))
    zero = b.op("LessOrEqual", b.op("Div", m2, b.const(n + 1)), b.op("Mul", eps_mean, eps_mean))
    return b.op("Where", zero, b.const(0.0), b.op("Sign", m3))


# --- numpy twins of the joined ECDF scores (the in-process detector) --------------------------------------


def skew_sign(sorted_cols: np.ndarray, Z: np.ndarray) -> np.ndarray:
    """``sign(scipy.stats.skew)`` of each fit column joined with one value of ``Z`` (``[rows, d]``), computed
    from fit power sums about the fit mean (exact to rounding; scipy's zero-variance rule gives 0)."""
    s = skew_sums(sorted_cols)
    n = s["n"]
    y = np.asarray(Z, dtype=np.float64) - s["mu"]
    delta = y / (n + 1)
    yd = y - delta
    m2 = s["s2"] - 2.0 * s["s1"] * delta + n * delta * delta + yd * yd
    m3 = s["s3"] - 3.0 * s["s2"] * delta + 3.0 * s["s1"] * delta * delta - n * delta * delta * delta + yd * yd * yd
    eps_mean = (s["mu"] + delta) * np.finfo(np.float64).eps
    return np.where(m2 / (n + 1) <= eps_mean * eps_mean, 0.0, np.sign(m3))


def tail_terms(sorted_cols: np.ndarray, Z: np.ndarray, method: str) -> np.ndarray:
    """Per-feature ECOD/COPOD terms ``[rows, d]`` of each row of ``Z`` joined alone to the fit set (what
    :func:`tail_graph` computes): their row sums are PyOD's ``decision_function`` of that row as a batch of one."""
    sorted_cols = np.asarray(sorted_cols, dtype=np.float64)
    Z = np.asarray(Z, dtype=np.float64)
    n_fit = len(sorted_cols)
    n = n_fit + 1
    c_le = np.empty(Z.shape)
    c_lt = np.empty(Z.shape)
    for j in range(Z.shape[1]):
        c_le[:, j] = np.searchsorted(sorted_cols[:, j], Z[:, j], side="right")
        c_lt[:, j] = np.searchsorted(sorted_cols[:, j], Z[:, j], side="left")
    step = (1.0 - 1.0 / n) / (n - 1)

    def neg_log_p(count: np.ndarray) -> np.ndarray:
        return -np.log(np.where(count == n - 1, 1.0, count * step + 1.0 / n))

    u_l, u_r = neg_log_p(c_le), neg_log_p(n_fit - c_lt)
    sign = skew_sign(sorted_cols, Z)
    u_skew = u_l * -np.sign(sign - 1) + u_r * np.sign(sign + 1)
    if method == "ecod":
        return np.maximum(u_skew, np.maximum(u_l, u_r))
    return np.maximum(u_skew, (u_l + u_r) / 2)


# --- trees: iforest via skl2onnx ----------------------------------------------------------------------------


def iforest_graph(opset: int, center: np.ndarray, scale: np.ndarray, forest: Any) -> Any:
    """PyOD ``IForest``: the trees of the fitted scikit-learn ``IsolationForest`` as converted by skl2onnx
    (one ``TreeEnsembleRegressor`` per tree, ai.onnx.ml opset 3, giving each row's leaf), on the scaled rows
    rounded to float32 as scikit-learn's trees round them; then scikit-learn's depth formula in float64:
    ``depth = sum_t (path_length_t[leaf] + avg_path_length_t[leaf] - 1)``, PyOD's score
    ``2 ** (-depth / (n_trees * c(max_samples))) + offset_`` (``-decision_function``).

    skl2onnx's own scoring head after the leaves runs in float32, which leaves errors of ~1e-8 on scores that
    cross zero (relative errors up to 1e-4 near the crossing); its float64 conversion fails for this model
    (skl2onnx 1.20: conflicting Add types), so only its tree nodes are used.
    """
    from sklearn.ensemble._iforest import _average_path_length

    d = len(center)
    b, x, z = _frame(opset, center, scale)
    b.ml_domain = True
    z32 = b.cast(z, b.FLOAT)
    n_trees = len(forest.estimators_)
    by_tree: list[str] = []
    for start in range(0, n_trees, _TREES_PER_CONVERSION):
        by_tree += _tree_leaf_nodes(b, forest, start, min(n_trees, start + _TREES_PER_CONVERSION), z32, opset)
    tables = [np.asarray(forest._decision_path_lengths[t], dtype=np.float64)
              + np.asarray(forest._average_path_length_per_tree[t], dtype=np.float64) - 1.0
              for t in range(len(by_tree))]
    offsets = np.cumsum([0] + [len(t) for t in tables[:-1]]).astype(np.int64)
    leaves = b.cast(b.op("Concat", *by_tree, axis=1), b.INT64)  # [batch, n_trees] leaf node ids
    terms = b.op("Gather", b.const(np.concatenate(tables), stem="leaf_depth"),
                 b.op("Add", leaves, b.const(offsets, np.int64, "tree_offsets")), axis=0)
    depth = b.reduce("ReduceSum", terms, [1])
    denominator = len(by_tree) * float(_average_path_length([forest._max_samples])[0])
    scores = b.op("Pow", b.const(2.0), b.op("Neg", b.op("Div", depth, b.const(denominator))))
    score = b.op("Add", scores, b.const(float(forest.offset_)))
    return model_from(b, x, score, nan_contrib(b, x), d,
                      f"PyOD IForest ({len(by_tree)} trees: skl2onnx tree nodes, float64 depth formula)")


#: trees per skl2onnx call: its node-name check is quadratic in a call's node count (100 trees in one call: 9 s)
_TREES_PER_CONVERSION = 10


def _tree_leaf_nodes(b: GraphBuilder, forest: Any, start: int, stop: int, source: str, opset: int) -> list[str]:
    """Append skl2onnx's tree nodes of trees ``start:stop`` reading ``source``; their leaf-id outputs in order."""
    import copy

    import onnx
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    part = copy.copy(forest)
    part.estimators_ = forest.estimators_[start:stop]
    part.estimators_features_ = forest.estimators_features_[start:stop]
    part._decision_path_lengths = forest._decision_path_lengths[start:stop]
    part._average_path_length_per_tree = forest._average_path_length_per_tree[start:stop]
    converted = convert_sklearn(part, initial_types=[("input", FloatTensorType([None, forest.n_features_in_]))],
                                target_opset={"": opset, "ai.onnx.ml": 3}, model_optim=False)
    inner = onnx.compose.add_prefix(converted, f"iforest{start}/").graph
    trees = [n for n in inner.node if n.op_type == "TreeEnsembleRegressor"]
    order = [int(n.output[0].rsplit("node_sample", 1)[1].split("_", 1)[0]) for n in trees]
    if sorted(order) != list(range(stop - start)):
        raise RuntimeError("cannot match skl2onnx's tree nodes to the forest's trees (unexpected node outputs)")
    needed, kept = {n.output[0] for n in trees}, []
    for node in reversed(list(inner.node)):  # the tree nodes and their feature-subset Gathers only
        if needed & set(node.output):
            kept.append(node)
            needed |= set(node.input)
    for node in reversed(kept):
        node.input[:] = [source if name == inner.input[0].name else name for name in node.input]
        b.nodes.append(node)
    used = {name for node in kept for name in node.input}
    b.initializers.extend(init for init in inner.initializer if init.name in used)
    return [n.output[0] for _, n in sorted(zip(order, trees))]
