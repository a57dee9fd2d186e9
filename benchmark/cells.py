"""One benchmark cell = (dataset, detector spec, seed), run wherever a backend puts it.

:func:`run_cell` is a plain top-level function of a picklable :class:`Cell`, so joblib/loky, Dask and Ray all
ship the same work. It never raises for a detector failure: the row's ``status`` says ``error: ...`` and the
run goes on. It loads the data itself (cached per worker process), so only the cell description travels.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .protocol import FIT_CAP, parse_detector_spec, split_indices

#: columns of results.csv, in order
COLUMNS = ("dataset", "detector", "seed", "roc_auc", "ap", "fit_seconds", "score_seconds", "peak_rss_mb",
           "n_fit", "n_test", "fpr95", "aupr_in", "status")
OK = "ok"


@dataclass(frozen=True)
class Cell:
    """What a worker needs to run one cell; ``source`` is an ODDS name or a data file path."""

    dataset: str
    source: str
    detector: str
    seed: int
    data_dir: str | None = None
    fit_cap: int | None = FIT_CAP
    #: thread cap for BLAS/OpenMP/torch inside the cell (None = leave as is)
    threads: int | None = None
    #: every spec of the run, warmed up once per worker process before its first cell (see :func:`warm_up`)
    warmup: tuple[str, ...] = ()
    #: image suites: (C, H, W) of the rows and their pixel range, for detectors that take images
    image_shape: tuple[int, ...] | None = None
    pixel_range: tuple[float, float] | None = None

    @property
    def key(self) -> tuple[str, str, int]:
        return self.dataset, self.detector, self.seed


def run_cell(cell: Cell) -> dict[str, Any]:
    """Run one cell and return its results.csv row (never raises for a failing detector or dataset)."""
    row: dict[str, Any] = {"dataset": cell.dataset, "detector": cell.detector, "seed": cell.seed,
                           "roc_auc": None, "ap": None, "fit_seconds": None, "score_seconds": None,
                           "peak_rss_mb": None, "n_fit": None, "n_test": None, "fpr95": None, "aupr_in": None,
                           "status": OK}
    try:
        with _thread_limit(cell.threads), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # library warnings are not results; keep the progress bar clean
            warm_up((cell.detector, *cell.warmup), cell.threads)
            _run(cell, row)
    except Exception as exc:  # noqa: BLE001 - a failing cell is a result, not the end of the run
        row["status"] = error_status(exc)
    return row


def error_status(exc: BaseException) -> str:
    """``error: Type: first line of the message`` (one line, at most 300 characters)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    status = f"error: {type(exc).__name__}" + (f": {text}" if text else "")
    return status[:300]


def _run(cell: Cell, row: dict[str, Any]) -> None:
    from aeguard.core.metrics import aupr_in, average_precision, fpr_at_tpr, roc_auc

    from .images import digits_task, is_digits_source

    split = None
    if is_digits_source(cell.source):  # the digits suites' own protocols (benchmark/images.py)
        X, y, fit_rows, test_rows, classes = digits_task(cell.source, cell.seed)
        split = (fit_rows, test_rows)
    else:
        X, y = load_labelled(cell.source, cell.data_dir)
        classes = load_classes(cell.source)
    detector = build_detector(cell.detector, cell.seed)
    _limit_torch(cell.threads)
    with PeakRSS() as memory:
        fit_idx, test_idx = split or split_indices(y, cell.seed, fit_cap=cell.fit_cap)
        X_fit, X_test, y_test = X[fit_idx], X[test_idx], y[test_idx]
        row["n_fit"], row["n_test"] = len(X_fit), len(X_test)
        # no outlier labels: the protocol never shows y to a detector; class labels only to those that model them
        extra = {"classes": classes[fit_idx]} if classes is not None and type(detector).accepts_classes else {}
        if cell.image_shape is not None and "image" in type(detector).modalities:  # the rest get flat pixels
            X_fit, X_test = as_images(X_fit, cell.image_shape), as_images(X_test, cell.image_shape)
            extra["pixel_range"] = cell.pixel_range
        start = time.perf_counter()
        detector.fit(X_fit, **extra)
        row["fit_seconds"] = time.perf_counter() - start
        start = time.perf_counter()
        scores = np.asarray(detector.decision_function(X_test), dtype=np.float64)
        row["score_seconds"] = time.perf_counter() - start
    row["peak_rss_mb"] = memory.peak_mb
    if scores.shape != (len(X_test),) or not np.all(np.isfinite(scores)):
        raise ValueError(f"detector returned {np.sum(~np.isfinite(scores))} non-finite or misshapen scores")
    row["roc_auc"] = roc_auc(y_test, scores)
    row["ap"] = average_precision(y_test, scores)
    row["fpr95"] = fpr_at_tpr(y_test, scores, 0.95)
    row["aupr_in"] = aupr_in(y_test, scores)


def as_images(X: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Flat rows as (N, C, H, W) images (C-order: channel, then row, then column)."""
    if X.shape[1] != int(np.prod(shape)):
        raise ValueError(f"--as-images {'x'.join(map(str, shape))} needs {int(np.prod(shape))} features per row, "
                         f"the data has {X.shape[1]}")
    return X.reshape(len(X), *shape)


_WARMED: set[str] = set()


def warm_up(specs: tuple[str, ...], threads: int | None = None) -> None:
    """Fit each spec once on 64 random rows, once per process, ignoring failures.

    One-time costs (importing torch/Lightning/numba, numba's JIT compile in HBOS: seconds each) then stay out
    of every cell's ``fit_seconds``. Warming every spec of the run in a worker's first cell also makes loky's
    memory baseline, taken after a worker's first task, include those libraries, so loky does not mistake
    the later import of torch for a leak and restart the worker (which would pay the costs again).
    """
    todo = [s for s in dict.fromkeys(specs) if s not in _WARMED]
    if not todo:
        return
    X = np.random.default_rng(0).standard_normal((64, 3))
    for spec in todo:
        _WARMED.add(spec)
        try:
            build_detector(spec, 0).fit(X)
        except Exception:  # noqa: BLE001 - the real cell reports the error
            pass
        _limit_torch(threads)


def _limit_torch(threads: int | None) -> None:
    if threads is not None and "torch" in sys.modules:  # a detector module imported torch
        torch = sys.modules["torch"]
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def build_detector(spec: str, seed: int | None) -> Any:
    """Instantiate a detector spec with ``random_state=seed`` through the registry's one builder.

    Values are typed and checked by the detector's parameter specs; parameters the class does not declare go
    into its free-form ``params`` dict when it has one (the PyOD adapter: ``knn(n_neighbors=10)``), else they
    are an error naming the valid ones.
    """
    from aeguard.core import registry

    _, name, params = parse_detector_spec(spec)
    return registry.build_detector(name, params, seed=seed)


def check_specs(specs: list[str]) -> None:
    """Build every spec once (cheap: constructors only store their arguments) so an unknown detector or a bad
    parameter stops a run before any cell starts; raises ``ValueError`` naming the spec."""
    for spec in specs:
        try:
            build_detector(spec, 0)
        except ValueError as exc:
            raise ValueError(f"detector spec {spec!r}: {exc}") from None


@lru_cache(maxsize=3)
def load_classes(source: str) -> np.ndarray | None:
    """The optional ``classes`` array (class labels of the rows, not outlier labels) of an ``.npz`` dataset."""
    path = Path(source)
    if path.suffix != ".npz" or not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        return np.asarray(data["classes"]).ravel() if "classes" in data.files else None


def load_labelled(source: str, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Features and 0/1 labels; cached per process because consecutive cells share their dataset."""
    from aeguard.datasets.loaders import load_dataset

    X, y = load_dataset(source, data_dir)
    if y is None:
        raise ValueError(f"{source} has no labels (y), so it cannot be benchmarked")
    y = np.asarray(y).ravel()
    values = set(np.unique(y).tolist())
    if not values <= {0, 1} or len(values) != 2:
        raise ValueError(f"{source}: labels must be 0/1 with both classes present, got values {sorted(values)}")
    X = np.asarray(X, dtype=np.float64)
    X.setflags(write=False)
    return X, y.astype(np.int64)


class _thread_limit:
    """Cap BLAS/OpenMP threads (threadpoolctl) so parallel cells do not oversubscribe the cores."""

    def __init__(self, threads: int | None) -> None:
        self.threads = threads
        self._ctx: Any = None

    def __enter__(self) -> None:
        if self.threads is not None:
            from threadpoolctl import threadpool_limits

            self._ctx = threadpool_limits(limits=self.threads)
            self._ctx.__enter__()

    def __exit__(self, *exc: Any) -> None:
        if self._ctx is not None:
            self._ctx.__exit__(*exc)


class PeakRSS:
    """Peak extra resident memory (MiB) of this process while the block runs.

    Measures ``peak RSS during the block - RSS at its start``: the memory the split, fit and scoring needed on
    top of what the worker already held (interpreter, libraries, the cached dataset). Memory that earlier cells
    freed is handed back to the OS first (glibc ``malloc_trim``), so a cell that reuses it is not counted as
    free of cost; without glibc the figure is a lower bound. On Linux the kernel's own
    high-water mark is reset at the start (``/proc/self/clear_refs`` = 5) and read from ``VmHWM`` at the end, so
    no short spike is missed; elsewhere a thread samples RSS every 5 ms. Cells running as threads of one process
    (Dask ``processes=False``) share the process, so their figures overlap.
    """

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak_mb: float | None = None
        self._hwm = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sampled = 0

    def __enter__(self) -> PeakRSS:
        gc.collect()
        _release_free_heap()
        self._start = _rss_bytes()
        self._sampled = self._start
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self._hwm = _vm_hwm_bytes() is not None
        except OSError:
            self._hwm = False
        if not self._hwm:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._sampled = max(self._sampled, _rss_bytes())

    def __exit__(self, *exc: Any) -> None:
        end = _rss_bytes()
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        peak = _vm_hwm_bytes() if self._hwm else None
        peak = max(peak if peak is not None else self._sampled, end)
        self.peak_mb = max(peak - self._start, 0) / 2**20


def _release_free_heap() -> None:
    """Return freed heap pages to the OS (glibc only; elsewhere a no-op)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _rss_bytes() -> int:
    import psutil

    return int(psutil.Process(os.getpid()).memory_info().rss)


def _vm_hwm_bytes() -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
