"""Mean-Shift Scoring (MSS): a reusable target transform for reconstruction-style detectors (``apre.md`` s. 4-6).

MSS keeps the network input unchanged and replaces the reconstruction target by the point's kNN mean-shifted
version (Tan et al., arXiv 2304.00709; authors' ``libs/data_shift.py``):

- fit set (offline, sklearn ``NearestNeighbors``: a tree or chunked brute force): ``X(0) = Z_fit``;
  ``X(t)_i = mean of the k nearest rows of X(t-1) to X(t-1)_i``, the point itself included, every row updated
  from the previous level (synchronous), kNN recomputed per level; fit point i gets target ``X(m)_i``;
- new point q (in the exported graph): ``q(t) = (q(t-1) + sum of its k-1 nearest rows of R_{t-1}) / k`` with
  reference levels ``R_t = X(t)``, t = 0..m-1; test points never serve as neighbours.

aeguard design: the label-free k rule ``clip(round(sqrt(n_fit)), 5, 100)``, a seeded reference cap
``mss_max_ref`` (the levels are computed on the full fit set, only rows are subsampled), and the threshold rule
under the cap (fit points are scored through the new-point path, each leaving its own reference row out, so
served scores and threshold share one path).

Any :class:`~aeguard.core.deep.DeepDetector` whose model has ``score_against(z, t)`` gets MSS through
:class:`MSSMixin` (which implements the base's ``make_target`` hook) or :func:`with_mss` (a subclass of an
existing detector class with the ``mss*`` parameters added). The exported target module :class:`MeanShift` is
brute force in export-friendly ops: ``||q||^2 - 2 q R^T + ||R||^2`` (MatMul), TopK, Gather, mean.
In process, new points are shifted with sklearn trees instead (same neighbours on tie-free data, far less
memory than a B x n_ref distance matrix).
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from aeguard.core.base import ScoreOutput
from aeguard.core.params import Bool, Choice, Int, Spec
from aeguard.core.reference import ReferenceDraw, draw_reference, max_reference_rows

#: the mean-shift hyperparameters every MSS-enabled detector accepts, with their label-free defaults
MSS_PARAMS: dict[str, Any] = {"mss": True, "mss_k": None, "mss_m": 1, "mss_max_ref": 10000, "mss_cap_k": "same"}
#: their types and ranges (aeguard.core.params), declared once for every MSS-enabled detector
MSS_SPEC: dict[str, Spec] = {
    "mss": Bool(), "mss_k": Int(low=2, none=True, none_means="the sqrt(n) rule"), "mss_m": Int(low=1),
    "mss_max_ref": Int(low=2, none=True, none_means="byte cap only"), "mss_cap_k": Choice(choices=("same", "scaled")),
}


#: rows of a scoring batch times reference rows kept in one in-graph distance matrix (float32: 256 MiB)
GRAPH_CELLS = 1 << 26


def default_k(n_fit: int) -> int:
    """Label-free k: ``clip(round(sqrt(n_fit)), 5, 100)``; grows with sample density, within the authors'
    range, and the floor of 5 keeps the self weight 1/k from dominating on tiny sets."""
    return int(min(100, max(5, round(math.sqrt(n_fit)))))


def check_mss_params(k: Any, m: Any, max_ref: Any, cap_k: Any) -> None:
    """One-line ValueErrors for bad ``mss_*`` values."""
    if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2):
        raise ValueError(f"mss_k must be None (the sqrt(n) rule) or an int >= 2, got {k!r}")
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
        raise ValueError(f"mss_m must be an int >= 1, got {m!r}")
    if max_ref is not None and (isinstance(max_ref, bool) or not isinstance(max_ref, (int, np.integer))
                                or max_ref < 2):
        raise ValueError(f"mss_max_ref must be None (byte cap only) or an int >= 2, got {max_ref!r}")
    if cap_k not in ("same", "scaled"):
        raise ValueError(f"mss_cap_k must be 'same' or 'scaled', got {cap_k!r}")


#: memory (MiB) sklearn's brute-force kNN may use per chunk of queries (its default, 1024, doubled peak RSS)
KNN_WORKING_MB = 128

#: widest input for which a KD-tree beats sklearn's chunked brute force at MSS-sized k (measured, docs/apre.md)
TREE_MAX_DIM = 5


def _neighbors(data: np.ndarray, n_neighbors: int) -> Any:
    from sklearn.neighbors import NearestNeighbors

    # With k up to 100, a KD-tree only wins in very low dimension (20k x 20k rows, k = 99, one core: d = 3 tree
    # 0.8 s vs brute 2.6 s; d = 10 tree 18 s vs brute 2.7 s); sklearn's "auto" would pick the tree up to d = 15.
    algorithm = "kd_tree" if data.shape[1] <= TREE_MAX_DIM else "brute"
    return NearestNeighbors(n_neighbors=n_neighbors, algorithm=algorithm).fit(data)


def shift_fit_set(z_fit: np.ndarray, k: int, m: int) -> list[np.ndarray]:
    """Levels ``[X(0), ..., X(m)]`` of the offline shift: self-inclusive kNN, synchronous updates."""
    from sklearn import config_context

    levels = [np.asarray(z_fit, dtype=np.float64)]
    for _ in range(m):
        current = levels[-1]
        # Querying the fitted rows themselves returns each row among its own neighbours (distance 0); with
        # duplicates a copy may stand in for it, which leaves the mean unchanged.
        with config_context(working_memory=KNN_WORKING_MB):
            idx = _neighbors(current, k).kneighbors(current, return_distance=False)
        levels.append(current[idx].mean(axis=1))
    return levels


def shift_points(queries: np.ndarray, refs: list[np.ndarray], k: int, own_rows: np.ndarray | None = None,
                 index: list[Any] | None = None) -> np.ndarray:
    """New-point shift ``q(t) = (q(t-1) + sum of its k-1 nearest rows of R_{t-1}) / k`` for every level.

    ``own_rows[i] >= 0`` marks a query that is itself reference row ``own_rows[i]``: that row is left out
    of its neighbours (used for fit-set threshold scores under the cap).
    """
    from sklearn import config_context

    q = np.asarray(queries, dtype=np.float64)
    for t, ref in enumerate(refs):
        nn_t = index[t] if index is not None else _neighbors(ref, k - 1)
        with config_context(working_memory=KNN_WORKING_MB):
            if own_rows is None:
                idx = nn_t.kneighbors(q, n_neighbors=k - 1, return_distance=False)
            else:
                idx = nn_t.kneighbors(q, n_neighbors=min(k, len(ref)), return_distance=False)
                idx = _drop_own(idx, own_rows, k - 1)
        q = (q + ref[idx].sum(axis=1)) / k
    return q


def _drop_own(idx: np.ndarray, own_rows: np.ndarray, keep: int) -> np.ndarray:
    """Remove each row's own reference index (or, if absent, its last neighbour) and keep ``keep`` columns."""
    own = idx == own_rows[:, None]
    drop = np.where(own.any(axis=1), own.argmax(axis=1), idx.shape[1] - 1)
    mask = np.ones(idx.shape, dtype=bool)
    mask[np.arange(len(idx)), drop] = False
    return idx[mask].reshape(len(idx), idx.shape[1] - 1)[:, :keep]


class MeanShift(nn.Module):
    """Exportable new-point shift: reference levels are constants; distances, TopK, Gather and mean in-graph.

    Squared distances ``||q||^2 - 2 q R^T + ||R||^2`` need no square root (ranking only); ``k`` is baked in.
    Declared ``keep_fp32``: INT8 distances would reorder neighbours (a different detector, not rounding).
    """

    keep_fp32 = True

    def __init__(self, refs: list[np.ndarray], k: int) -> None:
        super().__init__()
        if k < 2:
            raise ValueError(f"mean-shift k must be >= 2, got {k}")
        self.k = int(k)
        self.n_levels = len(refs)
        for t, ref in enumerate(refs):
            ref64 = np.asarray(ref, dtype=np.float64)
            self.register_buffer(f"ref_{t}", torch.as_tensor(ref64, dtype=torch.float32))
            self.register_buffer(f"ref_sq_{t}", torch.as_tensor((ref64 ** 2).sum(axis=1), dtype=torch.float32))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        q = z
        for t in range(self.n_levels):
            ref = getattr(self, f"ref_{t}")
            ref_sq = getattr(self, f"ref_sq_{t}")
            dist = (q * q).sum(dim=1, keepdim=True) - 2.0 * (q @ ref.t()) + ref_sq
            idx = torch.topk(dist, self.k - 1, dim=1, largest=False, sorted=False).indices
            q = (q + ref[idx].sum(dim=1)) / self.k
        return q


@dataclass
class MeanShiftFit:
    """What MSS learns from a fit set: reference levels (capped), the k values and fit-set targets."""

    k: int
    k_ref: int
    m: int
    n_fit: int
    refs: list[np.ndarray]
    ref_rows: np.ndarray | None
    fit_targets: np.ndarray
    seconds: dict[str, float] = field(default_factory=dict)
    draw: ReferenceDraw | None = None
    _index: list[Any] | None = field(default=None, repr=False)

    @property
    def n_ref(self) -> int:
        return int(len(self.refs[0]))

    def index(self) -> list[Any]:
        """One fitted sklearn neighbour index per reference level (built once, reused for every batch)."""
        if self._index is None:
            self._index = [_neighbors(ref, self.k_ref - 1) for ref in self.refs]
        return self._index

    def shift(self, queries: np.ndarray) -> np.ndarray:
        """Targets of new points (float32), the in-process twin of :meth:`module`."""
        return shift_points(queries, self.refs, self.k_ref, index=self.index()).astype(np.float32)

    def module(self) -> MeanShift:
        return MeanShift(self.refs, self.k_ref)

    def batch_rows(self) -> int:
        """Largest scoring batch whose in-graph distance matrix stays within :data:`GRAPH_CELLS`."""
        return max(1, GRAPH_CELLS // max(1, self.n_ref))

    def summary(self) -> dict[str, Any]:
        d = self.refs[0].shape[1]
        return {"k": self.k, "k_ref": self.k_ref, "m": self.m, "n_fit": self.n_fit, "n_ref": self.n_ref,
                "capped": self.ref_rows is not None, "constant_bytes": int(self.m * self.n_ref * (d + 1) * 4),
                "max_batch_rows": self.batch_rows(), "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
                **({"reference": self.draw.manifest()} if self.draw is not None else {})}


def max_ref_rows(n_features: int, max_ref: int | None) -> int:
    """Reference rows kept: ``max_ref`` and at most 32 MiB (``core.reference``) per float32 level constant."""
    return max_reference_rows(n_features, max_ref)


def fit_mean_shift(z_fit: np.ndarray, k: int | None = None, m: int = 1, max_ref: int | None = 10000,
                   cap_k: str = "same", seed: int = 0) -> MeanShiftFit:
    """Offline shift of the (standardized) fit set, reference levels with the seeded cap, fit-set targets.

    ``k`` defaults to :func:`default_k`; it is lowered to ``n_fit - 1`` and to ``n_ref`` where needed. The
    reference cap is ``mss_max_ref`` rows and 32 MiB per level (:func:`max_ref_rows`); rows are drawn uniformly
    without replacement with the fit seed, the same rows for every level.
    """
    check_mss_params(k, m, max_ref, cap_k)
    z_fit = np.asarray(z_fit, dtype=np.float64)
    n_fit = len(z_fit)
    if n_fit < 3:
        raise ValueError(f"mean-shift scoring needs at least 3 fit rows, got {n_fit}")
    started, cpu_started = time.perf_counter(), time.process_time()
    k_fit = int(min(default_k(n_fit) if k is None else k, n_fit - 1))
    levels = shift_fit_set(z_fit, k_fit, m)
    t_shift, cpu_shift = time.perf_counter() - started, time.process_time() - cpu_started
    draw = draw_reference(n_fit, z_fit.shape[1], cap_rows=max_ref, seed=seed)
    capped, rows = draw.capped, draw.rows
    refs = [draw.take(lvl) for lvl in levels[:m]]
    n_ref = len(refs[0])
    k_ref = k_fit if (not capped or cap_k == "same") else max(2, round(k_fit * n_ref / n_fit))
    k_ref = int(min(k_ref, n_ref))  # k - 1 <= n_ref (and k - 1 <= n_ref - 1 for leave-own-row-out)
    fit = MeanShiftFit(k=k_fit, k_ref=k_ref, m=m, n_fit=n_fit, refs=[r.astype(np.float32) for r in refs],
                       ref_rows=rows, fit_targets=levels[m].astype(np.float32), draw=draw)
    if capped:
        # Threshold scores through the served path: every fit point is shifted as a new point, a point that is
        # itself a reference row leaving that row out (otherwise it would be its own nearest neighbour).
        own = draw.own_rows()
        fit.fit_targets = shift_points(z_fit, fit.refs, k_ref, own_rows=own, index=fit.index()).astype(np.float32)
    fit.seconds = {"fit_shift": t_shift, "total": time.perf_counter() - started, "fit_shift_cpu": cpu_shift,
                   "total_cpu": time.process_time() - cpu_started}
    return fit


class MSSMixin:
    """Mean-shift scoring for a DeepDetector: put it before the detector class in the bases.

    Reads ``mss``, ``mss_k``, ``mss_m``, ``mss_max_ref`` and ``mss_cap_k`` from the estimator (see
    :data:`MSS_PARAMS`); with ``mss=False`` the detector behaves exactly like its base.
    """

    mss_: MeanShiftFit | None = None
    param_spec: ClassVar[dict[str, Spec]] = MSS_SPEC
    #: the mean shift changes the score's target only: the network is trained on the original input
    scoring_params: ClassVar[frozenset[str]] = frozenset(MSS_PARAMS)

    def _mss_enabled(self) -> bool:
        return bool(getattr(self, "mss", False))

    def make_target(self, model: nn.Module, data: Any) -> tuple[nn.Module | None, np.ndarray | None]:
        if not self._mss_enabled():
            self.mss_ = None
            return super().make_target(model, data)  # type: ignore[misc]
        # The shift depends on the data, the mss* settings and the seed only, never on the network: the members
        # of an ensemble (aeguard.core.ensemble) share one fit, computed for the first and reused in this fit.
        key = (id(data), self.mss_k, self.mss_m, self.mss_max_ref, self.mss_cap_k, self.seed_)
        memo = self.__dict__.get("_mss_memo")
        if memo is not None and memo[0] == key and memo[1] is data:
            self.mss_ = memo[2]
        else:
            self.mss_ = fit_mean_shift(data.z, k=self.mss_k, m=self.mss_m, max_ref=self.mss_max_ref,
                                       cap_k=self.mss_cap_k, seed=self.seed_)
            self.__dict__["_mss_memo"] = (key, data, self.mss_)
        return self.mss_.module(), self.mss_.fit_targets

    def _fit(self, X: np.ndarray, y: np.ndarray | None, **kwargs: Any) -> None:
        if self._mss_enabled():
            check_mss_params(self.mss_k, self.mss_m, self.mss_max_ref, self.mss_cap_k)
        try:
            super()._fit(X, y, **kwargs)  # type: ignore[misc]
        finally:
            self.__dict__.pop("_mss_memo", None)

    def _score(self, X: np.ndarray) -> ScoreOutput:
        if self.mss_ is None:
            return super()._score(X)  # type: ignore[misc]
        from aeguard.core.chunks import MAX_CHUNK_ROWS, run_chunked
        from aeguard.core.deep import torch_threads

        def one(xb: np.ndarray) -> dict[str, np.ndarray]:
            z = self.standardize_(torch.from_numpy(np.ascontiguousarray(xb, dtype=np.float32)))
            out = self.model_.score_against(z, torch.from_numpy(self.mss_.shift(z.numpy())))
            return {name: out[name].numpy() for name in self.output_names_}

        # sklearn's neighbour search bounds its own memory (KNN_WORKING_MB), so chunks need no graph budget here
        with torch.no_grad(), torch_threads():
            return self._to_output(run_chunked(one, X, MAX_CHUNK_ROWS, self.output_names_))

    def manifest_extra(self) -> dict[str, Any]:
        parent = getattr(super(), "manifest_extra", None)
        extra = dict(parent()) if callable(parent) else {}
        if self.mss_ is not None:
            extra["mss"] = self.mss_.summary()
        return extra


_MSS_CLASSES: dict[str, type] = {}


def _rebuild(module: str, qualname: str, name: str) -> Any:
    import importlib

    base = importlib.import_module(module)
    for part in qualname.split("."):
        base = getattr(base, part)
    cls = with_mss(base, name)
    return cls.__new__(cls)


def with_mss(base: type, name: str | None = None) -> type:
    """A subclass of detector class ``base`` with mean-shift scoring and the ``mss*`` parameters added.

    The constructor signature is the base's plus :data:`MSS_PARAMS` (keyword-only), so scikit-learn's
    ``get_params``/``clone`` see every hyperparameter; instances pickle by rebuilding the class from ``base``.
    """
    if issubclass(base, MSSMixin):
        return base
    key = f"{base.__module__}:{base.__qualname__}"
    if key in _MSS_CLASSES:  # one MSS class per base, so instances and registry records agree on the type
        return _MSS_CLASSES[key]
    cls_name = name or f"{base.__name__}MSS"
    sig = inspect.signature(base.__init__)
    own = [p for p in sig.parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
    taken = {p.name for p in own}
    added = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=v) for n, v in MSS_PARAMS.items()
             if n not in taken]

    def __init__(self, **params: Any) -> None:
        mss_values = {n: params.pop(n, default) for n, default in MSS_PARAMS.items()}
        base.__init__(self, **params)
        for n, value in mss_values.items():
            setattr(self, n, value)

    def __reduce__(self):
        return _rebuild, (base.__module__, base.__qualname__, cls_name), self.__getstate__()

    __init__.__signature__ = sig.replace(parameters=own + added)  # type: ignore[attr-defined]
    cls = type(cls_name, (MSSMixin, base), {
        "__init__": __init__, "__reduce__": __reduce__, "__module__": __name__,
        "__doc__": f"{base.__name__} with mean-shift scoring (target = kNN mean-shifted input); see {__name__}.",
    })
    _MSS_CLASSES[key] = cls
    return cls


def create_with_mss(name: str, **params: Any) -> Any:
    """Build registered detector ``name`` with mean-shift scoring; its record must say ``mss_compatible``."""
    from aeguard.core.registry import get

    record = get(name)
    if not record.mss_compatible:
        raise ValueError(f"detector {name!r} does not support mean-shift scoring (its record is not mss_compatible)")
    cls = record.cls
    if not issubclass(cls, MSSMixin):
        cls = with_mss(cls)
    return cls(**{**dict(record.fixed_params), "mss": True, **params})


def _ae_mss() -> type:
    from aeguard.plugins.ae.detector import AEDetector

    return with_mss(AEDetector, "AEMSSDetector")


#: ``ae+mss``: the plain MLP autoencoder scored with MSS-MSE ``sum_j (AE(z)_j - x_MS_j)^2``
AEMSSDetector = _ae_mss()
