"""Hand cells to an existing executor and yield ``(cell, row)`` as each one finishes.

No scheduler of our own: joblib/loky on this machine, or an existing Dask or Ray cluster. Every backend yields
results in completion order so the parent appends each row to results.csv the moment it arrives. Cells are
submitted in the given order (largest datasets first) so long cells do not end up in the tail.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from .cells import Cell, error_status, run_cell

BACKENDS = ("loky", "dask", "ray")


def run_cells(cells: list[Cell], backend: str = "loky", workers: int = 1,
              scheduler: str | None = None) -> Iterator[tuple[Cell, dict[str, Any]]]:
    """Run ``cells`` on ``backend`` with ``workers`` parallel cells; yield ``(cell, row)`` in completion order."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if not cells:
        return iter(())
    if backend == "dask":
        return _dask(cells, workers, scheduler)
    if backend == "ray":
        return _ray(cells, scheduler)
    if workers <= 1:
        return ((cell, run_cell(cell)) for cell in cells)
    return _loky(cells, workers)


def _loky(cells: list[Cell], workers: int,
          run: Callable[[Cell], dict[str, Any]] = run_cell) -> Iterator[tuple[Cell, dict[str, Any]]]:
    """At most ``workers`` cells in flight on loky's reusable process pool, submitted in the given order.

    A worker that dies (out of memory, a segfault in native code) breaks the whole pool, so every cell in flight
    fails with it and nobody knows which one killed it. Those cells are run again one at a time at the end; a
    cell that kills its worker on its own is recorded as failed and the run goes on.
    """
    from joblib.externals.loky import FIRST_COMPLETED, get_reusable_executor, wait
    from joblib.externals.loky.process_executor import BrokenProcessPool

    queue, suspects = deque(cells), deque()
    in_flight: dict[Any, Cell] = {}
    executor = get_reusable_executor(max_workers=workers)
    while queue or in_flight or suspects:
        alone = not queue and not in_flight  # only suspects left: one at a time
        source = suspects if alone else queue
        while source and len(in_flight) < (1 if alone else workers):
            cell = source.popleft()
            in_flight[executor.submit(run, cell)] = cell
        done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
        for future in done:
            cell = in_flight.pop(future)
            try:
                yield cell, future.result()
            except BrokenProcessPool as exc:
                if alone:
                    yield cell, _failed_row(cell, exc)
                else:
                    suspects.append(cell)
                executor = get_reusable_executor(max_workers=workers)  # a fresh pool replaces the broken one


def dask_client(scheduler: str | None, workers: int) -> tuple[Any, Any]:
    """``(client, cluster)``: a client of the cluster at ``scheduler`` (or ``$DASK_SCHEDULER_ADDRESS``), else of a
    new ``LocalCluster`` on 127.0.0.1 with ``workers`` single-threaded worker processes (``cluster`` is then
    returned so the caller closes it)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise RuntimeError("--backend dask needs dask.distributed: pip install 'aeguard[distributed]'") from None
    address = scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if address:
        return Client(address), None
    cluster = LocalCluster(n_workers=max(1, workers), threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=None)
    return Client(cluster), cluster


def _dask(cells: list[Cell], workers: int, scheduler: str | None) -> Iterator[tuple[Cell, dict[str, Any]]]:
    from distributed import as_completed

    client, cluster = dask_client(scheduler, workers)
    try:
        futures = {}
        for i, cell in enumerate(cells):
            future = client.submit(run_cell, cell, pure=False, priority=len(cells) - i)
            futures[future] = cell
        for future in as_completed(futures):
            cell = futures[future]
            try:
                row = future.result()
            except Exception as exc:  # noqa: BLE001 - a lost worker fails its cell, not the run
                row = _failed_row(cell, exc)
            yield cell, row
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _ray(cells: list[Cell], address: str | None) -> Iterator[tuple[Cell, dict[str, Any]]]:
    try:
        import ray
    except ImportError:
        raise RuntimeError("--backend ray needs ray, which is not installed: pip install 'ray[default]'") from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=address or os.environ.get("RAY_ADDRESS"), include_dashboard=False,
                 log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=1)(run_cell)
        pending = {remote.remote(cell): cell for cell in cells}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            cell = pending.pop(done[0])
            try:
                row = ray.get(done[0])
            except Exception as exc:  # noqa: BLE001 - a lost worker fails its cell, not the run
                row = _failed_row(cell, exc)
            yield cell, row
    finally:
        if started:
            ray.shutdown()


def _failed_row(cell: Cell, exc: BaseException) -> dict[str, Any]:
    row = {"dataset": cell.dataset, "detector": cell.detector, "seed": cell.seed, "status": error_status(exc)}
    return row
