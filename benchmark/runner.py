"""Plan the cells of a benchmark run, run the missing ones on a backend, and record the run.

``OUT/results.csv`` is appended by this (parent) process as each cell finishes; ``OUT/run.json`` records the
command line, versions, machine, timing and load of every invocation, so the wall time of a full suite is on
file next to its results.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from aeguard.core.training_cache import cache_dir

from .backends import BACKENDS, run_cells
from .cells import OK, Cell, check_specs
from .images import DIGITS_RANGE, DIGITS_SHAPE, DIGITS_SOURCE, DIGITS_SUITE, HOLDOUT_SOURCE, HOLDOUT_SUITE
from .protocol import (
    FIT_CAP,
    SCALING_PARAM,
    TEST_SIZE,
    baseline_scaling,
    is_baseline,
    parse_detector_list,
    parse_detector_spec,
    with_param,
)
from .results import ResultsFile

ODDS_SUITE = "odds"
#: ``--baseline-scaling`` default: the baselines see the fit-split z-score every aeguard detector applies
BASELINE_SCALING = "standard"


@dataclass(frozen=True)
class DatasetEntry:
    """One dataset of a suite: its label in the results, what the loader reads, and its size for scheduling."""

    name: str
    source: str
    n: int
    d: int


@dataclass
class Suite:
    datasets: list[DatasetEntry]
    #: requested ODDS datasets that are not in the data directory
    missing: list[str] = field(default_factory=list)
    data_dir: str | None = None
    kind: str = ODDS_SUITE
    #: image suites (digits, --as-images): (C, H, W) of a row and the pixel range (benchmark/images.py)
    image_shape: tuple[int, ...] | None = None
    pixel_range: tuple[float, float] | None = None


@dataclass
class RunSummary:
    planned: int
    skipped: int
    ran: int
    failed: int
    wall_seconds: float
    out: Path


def default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def resolve_suite(suite: str, data_dir: str | Path | None = None, names: list[str] | None = None) -> Suite:
    """The datasets of ``--suite odds`` (registered ODDS datasets present in the data dir) or ``--suite DIR``
    (every ``.npz`` in DIR), filtered by ``names``.

    Unknown names are an error; an ODDS dataset named explicitly but absent is an error too, while absent ones
    of the full collection are only listed in ``missing``.
    """
    if suite == ODDS_SUITE:
        return _odds_suite(data_dir, names)
    if suite == DIGITS_SUITE:
        return _digits_suite(names)
    if suite == HOLDOUT_SUITE:
        return _digits_suite(names, holdout=True)
    folder = Path(suite).expanduser()
    if not folder.is_dir():
        raise ValueError(f"--suite must be 'odds' or a folder of .npz files; {suite!r} is neither")
    files = {p.stem: p for p in sorted(folder.glob("*.npz"))}
    if not files:
        raise ValueError(f"no .npz files in {folder}")
    chosen = _select(files, names, f"in {folder}")
    return Suite([_entry(name, str(files[name].resolve()), files[name]) for name in chosen], [], None,
                 kind=str(folder.resolve()))


def _digits_suite(names: list[str] | None, holdout: bool = False) -> Suite:
    """Ten tasks on scikit-learn's bundled digits (benchmark/images.py): one-class ``digit0`` .. ``digit9``, or
    held-out class ``without0`` .. ``without9``."""
    prefix, source, kind = ("without", HOLDOUT_SOURCE, HOLDOUT_SUITE) if holdout else ("digit", DIGITS_SOURCE,
                                                                                      DIGITS_SUITE)
    tasks = {f"{prefix}{c}": f"{source}{c}" for c in range(10)}
    chosen = _select(tasks, names, f"in the {kind} suite")
    return Suite([DatasetEntry(name, tasks[name], 1797, 64) for name in chosen], [], None, kind=kind,
                 image_shape=DIGITS_SHAPE, pixel_range=DIGITS_RANGE)


def as_image_suite(suite: Suite, shape: tuple[int, ...], pixel_range: tuple[float, float] | None) -> Suite:
    """``suite`` with its rows handed to image-capable detectors as ``shape`` images (``--as-images``)."""
    width = int(np.prod(shape))
    wrong = [f"{e.name} ({e.d})" for e in suite.datasets if e.d and e.d != width]
    if wrong:
        raise ValueError(f"--as-images {'x'.join(map(str, shape))} needs {width} features per row; these datasets "
                         f"have other widths: {', '.join(wrong)}")
    suite.image_shape, suite.pixel_range = tuple(shape), pixel_range
    return suite


def _odds_suite(data_dir: str | Path | None, names: list[str] | None) -> Suite:
    from aeguard.datasets.paths import resolve_data_dir
    from aeguard.datasets.registry import ODDS, find_local_file

    folder = resolve_data_dir(data_dir)
    chosen = _select(dict.fromkeys(ODDS), [n.lower() for n in names] if names else None, "in the ODDS registry")
    present, missing = [], []
    for name in chosen:
        path = find_local_file(name, folder)
        if path is None:
            missing.append(name)
        else:  # the local file's own shape (http has 19 more rows than the ODDS table), else the official one
            n, d = _npz_shape(path) if path.suffix == ".npz" else (0, 0)
            present.append(DatasetEntry(name, name, n or ODDS[name].n, d or ODDS[name].d))
    if names and missing:
        raise ValueError(f"dataset(s) not found in {folder}: {', '.join(missing)} "
                         "(see `aeguard datasets list`, or fetch them with `aeguard datasets fetch`)")
    if not present:
        raise ValueError(f"no ODDS dataset found in {folder}; set --data-dir or AEGUARD_DATA, "
                         "or run `aeguard datasets fetch`")
    return Suite(present, missing, str(folder), kind=ODDS_SUITE)


def _select(available: dict[str, Any], names: list[str] | None, where: str) -> list[str]:
    if not names:
        return list(available)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ValueError(f"unknown dataset(s) {where}: {', '.join(unknown)}; available: {', '.join(available)}")
    return list(dict.fromkeys(names))


def _entry(name: str, source: str, path: Path) -> DatasetEntry:
    n, d = _npz_shape(path)
    return DatasetEntry(name, source, n, d)


def _npz_shape(path: Path) -> tuple[int, int]:
    """Shape of ``X`` from the .npy header inside an .npz, without loading the array (0, 0 if unreadable)."""
    try:
        with zipfile.ZipFile(path) as archive, archive.open("X.npy") as fh:
            version = np.lib.format.read_magic(fh)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape = read(fh)[0]
        return int(shape[0]), int(shape[1]) if len(shape) > 1 else 1
    except Exception:  # noqa: BLE001 - only a scheduling hint; the cell reports real load errors
        return 0, 0


def plan_cells(suite: Suite, detectors: list[str], seeds: int, threads: int | None,
               fit_cap: int | None = FIT_CAP) -> list[Cell]:
    """All cells, costliest datasets first (see :func:`cell_cost`), then detector order, then seed."""
    if seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {seeds}")
    ordered = sorted(suite.datasets, key=lambda e: (-cell_cost(e, fit_cap), e.name))
    return [Cell(dataset=e.name, source=e.source, detector=spec, seed=seed, data_dir=suite.data_dir,
                 fit_cap=fit_cap, threads=threads, warmup=tuple(detectors), image_shape=suite.image_shape,
                 pixel_range=suite.pixel_range)
            for e in ordered for spec in detectors for seed in range(seeds)]


def cell_cost(entry: DatasetEntry, fit_cap: int | None = FIT_CAP) -> float:
    """Scheduling hint: n_fit x (n_fit + n_test) x sqrt(d), the shape of kNN/kernel costs (the slow baselines).

    Long cells start first, so the run does not end with one worker busy on a big dataset and the rest idle.
    """
    n_test = TEST_SIZE * entry.n
    n_fit = min(entry.n - n_test, fit_cap or entry.n)
    return n_fit * (n_fit + n_test) * max(entry.d, 1) ** 0.5


def expand_detectors(text: str) -> list[str]:
    """``--detectors`` value -> specs, checked against the registry (unknown names fail before anything runs)."""
    from aeguard.core import registry

    records = registry.detectors()
    specs = parse_detector_list(text, registered=list(records))
    unknown = sorted({parse_detector_spec(s)[1] for s in specs} - set(records))
    if unknown:
        raise ValueError(f"unknown detector(s): {', '.join(unknown)}; registered: {', '.join(records)}")
    check_specs(specs)  # a bad parameter stops the run here, not as an error row in every cell
    return specs


def apply_baseline_scaling(specs: list[str], scaling: str = BASELINE_SCALING) -> list[str]:
    """Every baseline spec that declares ``scaling`` and does not set it runs with ``scaling``.

    A value other than the detector's default becomes part of the label (``ocsvm`` -> ``ocsvm(scaling=none)``),
    so rows fitted on differently scaled features never share a name: reruns with another ``--baseline-scaling``
    into the same OUT add their own rows (and the report shows both) instead of being skipped as done.
    """
    from aeguard.plugins.pyod_baselines import SCALINGS

    if scaling not in SCALINGS:
        raise ValueError(f"--baseline-scaling must be one of {', '.join(SCALINGS)}, got {scaling!r}")
    out = []
    for spec in specs:
        default = baseline_scaling(spec)
        explicit = SCALING_PARAM in parse_detector_spec(spec)[2]
        out.append(with_param(spec, SCALING_PARAM, scaling) if default not in (None, scaling) and not explicit
                   else spec)
    return list(dict.fromkeys(out))


def run_benchmark(suite: Suite, detectors: list[str], seeds: int, out: Path, workers: int | None = None,
                  backend: str = "loky", scheduler: str | None = None, progress: bool | None = None,
                  argv: list[str] | None = None, baseline_scaling: str = BASELINE_SCALING) -> RunSummary:
    """Run every cell of the plan that ``OUT/results.csv`` does not already hold with status ok.

    ``baseline_scaling`` is applied to the baseline specs (:func:`apply_baseline_scaling`) and recorded in
    ``OUT/run.json``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    detectors = apply_baseline_scaling(detectors, baseline_scaling)
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    parallel = backend != "loky" or workers > 1
    cells = plan_cells(suite, detectors, seeds, threads=1 if parallel else None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with _exclusive(out):
        _refuse_raw_baseline_rows(out)
        return _run_locked(suite, detectors, seeds, out, cells, workers, backend, scheduler, progress, argv,
                           baseline_scaling)


def records_baseline_scaling(run: dict[str, Any]) -> bool:
    """Whether a run.json record comes from a version with ``--baseline-scaling``; before it, a bare baseline
    label (``ocsvm``) meant raw features, now it means the standardized default."""
    return "baseline_scaling" in run


def _refuse_raw_baseline_rows(out: Path) -> None:
    """An OUT written before ``--baseline-scaling`` holds raw-feature rows under the bare baseline names; adding
    standardized rows under the same names would mix the two, so such a folder takes no new run."""
    try:
        previous = json.loads((out / "run.json").read_text())
    except (OSError, json.JSONDecodeError):
        return
    if not isinstance(previous, dict) or records_baseline_scaling(previous):
        return
    from .results import read_results

    raw = sorted({r["detector"] for r in read_results(out / "results.csv")
                  if is_baseline(r["detector"]) and SCALING_PARAM not in parse_detector_spec(r["detector"])[2]})
    if raw:
        raise RuntimeError(f"{out} holds rows of {', '.join(raw)} from before --baseline-scaling (fitted on raw "
                           "features); new rows under the same names would mix with them: use another --out")


def _run_locked(suite: Suite, detectors: list[str], seeds: int, out: Path, cells: list[Cell], workers: int,
                backend: str, scheduler: str | None, progress: bool | None, argv: list[str] | None,
                scaling: str) -> RunSummary:
    results = ResultsFile(out / "results.csv")
    kept = results.prepare(retry=[c.key for c in cells])
    done = {(r["dataset"], r["detector"], r["seed"]) for r in kept if r["status"] == OK}
    todo = [c for c in cells if c.key not in done]

    record = _run_record(suite, detectors, seeds, workers, backend, scheduler, argv, len(cells), len(todo))
    record["baseline_scaling"] = scaling
    cache = cache_dir()  # with a training cache, a cell whose training is cached times a load, not a training
    record["training_cache"] = str(cache) if cache else None
    record["detectors_run"] = list(dict.fromkeys(c.detector for c in todo))
    _write_run_json(out / "run.json", record, new_invocation=True)  # a killed run leaves its record too
    cpu_start = _cpu_seconds(0.0)
    started = time.perf_counter()
    failed = ran = 0
    try:
        with _Progress(len(todo), enabled=progress) as bar:
            for cell, row in run_cells(todo, backend=backend, workers=workers, scheduler=scheduler):
                results.append(row)
                ran += 1
                failed += row["status"] != OK
                bar.advance(f"{cell.dataset} · {cell.detector} · seed {cell.seed}")
    finally:
        wall = time.perf_counter() - started
        record.update(end=_now(), wall_seconds=round(wall, 3), cpu_seconds=_cpu_seconds(cpu_start),
                      cells_run=ran, cells_failed=failed, completed=ran == len(todo), load_end=_load())
        _write_run_json(out / "run.json", record, new_invocation=False)
    return RunSummary(len(cells), len(cells) - len(todo), ran, failed, wall, out)


@contextlib.contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """One run per output folder: an advisory lock on OUT/.lock, released by the OS even if the run is killed."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with open(out / ".lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            owner = fh.read().strip() or "?"
            raise RuntimeError(f"another benchmark run (pid {owner}) is writing to {out}; "
                               "wait for it to finish or stop it") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class _Progress:
    """rich progress bar with ETA on an interactive stderr; silent in pipes and CI."""

    def __init__(self, total: int, enabled: bool | None = None) -> None:
        if enabled is None:
            enabled = sys.stderr.isatty() and not os.environ.get("CI")
        self.total, self.enabled = total, enabled and total > 0
        self._progress: Any = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(TextColumn("[bold]benchmark"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                      TextColumn("{task.description}"), console=Console(stderr=True))
            self._progress.__enter__()
            self._task = self._progress.add_task("", total=self.total)
        return self

    def advance(self, description: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=1, description=description)

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)


def _run_record(suite: Suite, detectors: list[str], seeds: int, workers: int, backend: str,
                scheduler: str | None, argv: list[str] | None, planned: int, todo: int) -> dict[str, Any]:
    import psutil

    return {
        "command": " ".join(argv if argv is not None else ["aeguard", *sys.argv[1:]]),
        "start": _now(),
        "end": None,
        "completed": False,
        "suite": suite.kind,
        "data_dir": suite.data_dir,
        "datasets": [asdict(e) for e in suite.datasets],
        "missing_datasets": suite.missing,
        "detectors": detectors,
        "seeds": list(range(seeds)),
        "protocol": ({"one_class": True, "fit": "60 % of the normal class", "test": "40 % of every class",
                      "labels_used": False} if suite.kind == DIGITS_SUITE else
                     {"held_out_class": True, "fit": "60 % of every class but the held-out one",
                      "test": "40 % of every class", "labels_used": False,
                      "classes": "digit labels of the fit rows, for detectors that accept classes"}
                     if suite.kind == HOLDOUT_SUITE else
                     {"test_size": TEST_SIZE, "stratified": True, "fit_cap": FIT_CAP, "labels_used": False}),
        "images": ({"shape": list(suite.image_shape), "pixel_range": list(suite.pixel_range or (0.0, 1.0)),
                    "image_detectors": "detectors whose class lists 'image' in modalities; the rest get flat rows"}
                   if suite.image_shape is not None else None),
        "backend": backend,
        "scheduler": (scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")) if backend == "dask" else scheduler,
        "workers": workers,
        "cells_planned": planned,
        "cells_todo": todo,
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "physical_cores": psutil.cpu_count(logical=False),
                    "memory_gb": round(psutil.virtual_memory().total / 2**30, 1)},
        "load_start": _load(),
        "versions": _versions(),
        "peak_rss_mb": "peak resident memory of the worker during split+fit+score minus its RSS at cell start",
    }


def _write_run_json(path: Path, record: dict[str, Any], new_invocation: bool) -> None:
    """Latest invocation at the top level; earlier invocations of the same OUT kept under ``history``.

    Written when a run starts (``completed: false``, no end yet) and again when it ends, so the record of a
    killed run survives into the next one's history.
    """
    history: list[dict[str, Any]] = []
    if path.exists():
        try:
            previous = json.loads(path.read_text())
            history = previous.pop("history", [])
            if new_invocation:
                history.append(previous)
        except (json.JSONDecodeError, AttributeError):
            history = []
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({**record, "history": history}, indent=2) + "\n")
    os.replace(tmp, path)


def _versions() -> dict[str, str]:
    from aeguard.core.artifact import versions

    return versions(("aeguard", "numpy", "scikit-learn", "scipy", "pyod", "torch", "pytorch-lightning", "joblib",
                     "dask", "distributed", "ray"))


def _cpu_seconds(since: float) -> float | None:
    """CPU seconds (user + system) of this process and its worker processes, live or exited, minus ``since``.

    On a shared machine the wall time depends on the load; this does much less, so it is recorded next to it.
    Workers of a remote Dask/Ray cluster are not counted.
    """
    try:
        import psutil

        me = psutil.Process()
        total = sum(me.cpu_times()[:4])  # user, system, children_user, children_system (exited children)
        for child in me.children(recursive=True):
            try:
                total += sum(child.cpu_times()[:2])
            except psutil.Error:
                continue
        return round(total - since, 2)
    except Exception:  # noqa: BLE001 - accounting only
        return None


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
