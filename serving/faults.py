"""Fault and endurance runs against a real ``aeguard serve`` on 127.0.0.1: ``aeguard fault-kill`` and ``aeguard soak``.

- :func:`worker_kill`: a bounded load (``concurrency`` keep-alive connections, mixed good and bad requests) runs
  while one worker process gets SIGKILL; counts the requests that failed (a good request not answered 200, a
  bad one not answered 4xx, or no answer) and the requests sent a second time because their connection died
  with the worker before any answer (the load client retries those once, on a new connection), and times the
  worker's return (BentoML's arbiter respawns it) and the last failure after the kill.
- :func:`soak`: the same mixed load for minutes; the servers' resident memory (arbiter and workers) is sampled
  after a warm-up and at the end, with requests/s and the status counts.

The load is the loopback client of :mod:`aeguard.serving.loadgen`; the requests are those of ``aeguard
bench-serve`` (:func:`aeguard.serving.bench.bad_bodies`), so every bad case must get its 4xx here too.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from typing import Any

import numpy as np

from aeguard.serving.bench import JSON, LocalServer, bad_bodies, good_body, sample_rows
from aeguard.serving.loadgen import Outcome, Request, build_request, drive

WORKER_MARK = "_bentoml_impl.worker.service"


def worker_pids(server: LocalServer) -> list[int]:
    """PIDs of the server's worker processes (children of BentoML's arbiter), oldest first."""
    import psutil

    try:
        root = psutil.Process(server.process.pid)
        procs = [p for p in root.children(recursive=True) if WORKER_MARK in " ".join(p.cmdline())]
    except psutil.NoSuchProcess:
        return []
    return [p.pid for p in sorted(procs, key=lambda p: p.create_time())]


def client_connections(pid: int, port: int) -> int:
    """Established connections a worker process holds on the server port (keep-alive clients it serves)."""
    import psutil

    try:
        conns = psutil.Process(pid).net_connections(kind="tcp")
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0
    return sum(1 for c in conns if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port)


def server_rss(server: LocalServer) -> int:
    """Resident bytes of the server: arbiter plus every worker."""
    import psutil

    total = 0
    try:
        root = psutil.Process(server.process.pid)
        for proc in [root, *root.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                pass
    except psutil.NoSuchProcess:
        pass
    return total


def mixed_plan(manifest: dict[str, Any], n: int, rows: int = 16, bad_fraction: float = 0.5,
               api_key: str | None = None, limits: dict[str, int] | None = None, seed: int = 0) -> list[Request]:
    """``n`` prebuilt requests: good ``rows``-row scoring requests and the bench's bad cases, shuffled."""
    rng = np.random.default_rng(seed)
    names = list(manifest["features"]["names"])
    headers = {**JSON, **({"authorization": f"Bearer {api_key}"} if api_key else {})}
    good = [build_request("/score", good_body(names, sample_rows(manifest, rows, rng)), headers) for _ in range(8)]
    bad = [build_request("/score", body, {**headers, **extra}, kind=kind)
           for kind, body, extra in bad_bodies(names, sample_rows(manifest, 2, rng), limits or {}, bool(api_key))]
    pick = random.Random(seed)
    return [pick.choice(bad) if pick.random() < bad_fraction else pick.choice(good) for _ in range(n)]


def failed(outcome: Outcome) -> bool:
    """A good request not answered 200, or a bad one not answered 4xx (transport errors included)."""
    if outcome.kind == "good":
        return outcome.status != 200
    return not (isinstance(outcome.status, int) and 400 <= outcome.status < 500)


def _port(server: LocalServer) -> int:
    return int(server.url.rsplit(":", 1)[1])


def worker_kill(server: LocalServer, plan: list[Request], concurrency: int = 4, before_s: float = 3.0,
                after_s: float = 12.0) -> dict[str, Any]:
    """Run ``plan`` for ``before_s + after_s`` seconds; after ``before_s``, SIGKILL the worker that holds the
    most of the client's connections (so requests are in flight on it)."""
    workers_before = worker_pids(server)
    if len(workers_before) < 2:
        raise RuntimeError(f"need a server with at least 2 workers, found {len(workers_before)}")
    state: dict[str, Any] = {}

    async def monitor(t0: float) -> None:
        await asyncio.sleep(before_s)
        held = {pid: client_connections(pid, _port(server)) for pid in workers_before}
        victim = max(workers_before, key=lambda pid: held[pid])  # the worker serving the most connections
        state["victim"], state["victim_connections"] = victim, held[victim]
        state["kill_at"] = time.perf_counter()
        os.kill(victim, signal.SIGKILL)
        while time.perf_counter() < t0 + before_s + after_s:
            now = worker_pids(server)
            if "respawned_at" not in state and len(now) >= len(workers_before) and victim not in now:
                state["respawned_at"] = time.perf_counter()
                state["new_pid"] = next(p for p in now if p not in workers_before)
            await asyncio.sleep(0.05)

    async def both() -> Any:
        t0 = time.perf_counter()
        result, _ = await asyncio.gather(drive("127.0.0.1", _port(server), plan, concurrency,
                                               duration_s=before_s + after_s), monitor(t0))
        return result

    result = asyncio.run(both())
    kill_at = state["kill_at"]
    outcomes = result.outcomes
    bad = [o for o in outcomes if failed(o)]
    after = [o for o in outcomes if o.started >= kill_at]
    last_failure = max((o.started + o.seconds for o in bad), default=None)
    done = sorted([kill_at] + [o.started + o.seconds for o in after])
    gap = max((b - a for a, b in zip(done, done[1:])), default=None)  # longest pause in answers after the kill
    return {
        "workers": len(workers_before),
        "killed_pid": state["victim"],
        "killed_worker_connections": state["victim_connections"],
        "new_pid": state.get("new_pid"),
        "worker_back_s": round(state["respawned_at"] - kill_at, 3) if "respawned_at" in state else None,
        "requests": len(outcomes),
        "requests_after_kill": len(after),
        "failed": len(bad),
        #: requests whose connection died with the worker before any answer, sent once more on a new connection
        "retried": sum(1 for o in outcomes if o.attempts > 1),
        "failed_kinds": sorted({f"{o.kind}:{o.status}" for o in bad}),
        "longest_pause_after_kill_s": round(gap, 3) if gap is not None else None,
        "last_failure_after_kill_s": round(last_failure - kill_at, 3) if last_failure is not None else None,
        "server_errors_5xx": sum(1 for o in outcomes if isinstance(o.status, int) and o.status >= 500),
        "requests_per_s": round(len(outcomes) / result.wall_s, 1) if result.wall_s else 0.0,
        "server_alive": server.process.poll() is None,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def soak(server: LocalServer, plan: list[Request], duration_s: float = 300.0, concurrency: int = 4,
         warmup_s: float = 15.0, sample_every_s: float = 10.0) -> dict[str, Any]:
    """Mixed load for ``duration_s`` after a ``warmup_s`` warm-up; RSS after the warm-up and at the end."""
    port = _port(server)
    asyncio.run(drive("127.0.0.1", port, plan, concurrency, duration_s=warmup_s))
    samples: list[tuple[float, int]] = []
    load_start = os.getloadavg()

    async def sampler(t0: float) -> None:
        while time.perf_counter() < t0 + duration_s:
            samples.append((round(time.perf_counter() - t0, 1), server_rss(server)))
            await asyncio.sleep(sample_every_s)

    async def both() -> Any:
        t0 = time.perf_counter()
        result, _ = await asyncio.gather(drive("127.0.0.1", port, plan, concurrency, duration_s=duration_s),
                                         sampler(t0))
        return result

    result = asyncio.run(both())
    rss_end = server_rss(server)
    rss_start = samples[0][1]
    outcomes = result.outcomes
    statuses: dict[str, int] = {}
    for o in outcomes:
        statuses[str(o.status)] = statuses.get(str(o.status), 0) + 1
    return {
        "duration_s": round(result.wall_s, 1),
        "requests": len(outcomes),
        "requests_per_s": round(len(outcomes) / result.wall_s, 1),
        "good": sum(1 for o in outcomes if o.kind == "good"),
        "failed": sum(1 for o in outcomes if failed(o)),
        "retried": sum(1 for o in outcomes if o.attempts > 1),
        "server_errors_5xx": sum(1 for o in outcomes if isinstance(o.status, int) and o.status >= 500),
        "status_counts": dict(sorted(statuses.items())),
        "rss_start_mib": round(rss_start / (1 << 20), 1),
        "rss_end_mib": round(rss_end / (1 << 20), 1),
        "rss_max_mib": round(max(r for _, r in samples + [(0, rss_end)]) / (1 << 20), 1),
        "rss_growth_pct": round(100.0 * (rss_end - rss_start) / rss_start, 2),
        "rss_samples_mib": [(t, round(r / (1 << 20), 1)) for t, r in samples],
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
    }
