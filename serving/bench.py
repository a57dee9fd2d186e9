"""``aeguard bench-serve``: the aeguard service against the HTTP ceiling, side by side, over loopback.

It starts (a) ``aeguard serve ARTIFACT`` and (b) the reference endpoint of :mod:`aeguard.serving.reference`
(plain Starlette + orjson + onnxruntime on the same artifact with the same session settings, nothing else),
or targets running ones (``--url``, ``--reference-url``), and drives both with the same bounded client
(:mod:`aeguard.serving.loadgen`). For every body form x rows per request R x concurrency C it reports rows/s,
requests/s, p50 and p99 latency, server CPU per request (when it started the server), the ratios (a)/(b),
and served/raw: served rows/s over in-process ``Artifact.run`` rows/s at R rows per call, with the serving
session settings. The burst phase (``--burst-seconds``) measures single-row latency before and right after a
burst of 256-row requests at C=8, to show whether latency recovers.

Bodies are encoded before the clock starts, so the client measures the servers, not its encoder. The client
shares the machine's cores with the servers, which the report states with the load average.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from aeguard.serving.inputs import ARROW_MEDIA, JSON_MEDIA, NPY_MEDIA
from aeguard.serving.loadgen import Outcome, Request, build_request, drive

JSON = {"content-type": JSON_MEDIA}
BODY_KINDS = ("records", "columns", "values", "arrow", "npy")
#: the burst of the burst phase: rows per request and concurrency (issue 18: R=256, C=8)
BURST_ROWS, BURST_CONCURRENCY = 256, 8


@dataclass
class BenchConfig:
    artifact: str
    requests: int = 1000
    concurrency: tuple[int, ...] = (1,)
    rows_per_request: tuple[int, ...] = (1,)
    bodies: tuple[str, ...] = ("records",)
    url: str | None = None
    reference: bool | None = None  # None: compare with the reference when this command starts the servers
    reference_url: str | None = None
    workers: int = 1
    bad_fraction: float = 0.0
    max_rows: int | None = None
    max_body_bytes: int | None = None
    api_key: str | None = None
    seed: int = 0
    warmup: int | None = None
    duration_s: float | None = None
    rounds: int = 1
    burst_s: float = 0.0
    access_log: bool = False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalServer:
    """``aeguard serve`` in its own process group on 127.0.0.1; stopped by its PID (the whole group)."""

    def __init__(self, artifacts: list[str], workers: int = 1, env: dict[str, str] | None = None,
                 extra_args: list[str] | None = None, port: int | None = None,
                 command: list[str] | None = None) -> None:
        """``command`` replaces ``aeguard serve ARTIFACTS`` (``--host 127.0.0.1 --port PORT`` are appended)."""
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(prefix="aeguard-serve-", suffix=".log", delete=False)
        if command is None:
            command = [sys.executable, "-m", "aeguard.core.cli", "serve", *artifacts, "--workers", str(workers),
                       *(extra_args or [])]
        command = [*command, "--host", "127.0.0.1", "--port", str(self.port)]
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env={**os.environ, **(env or {})}, start_new_session=True)

    def log_tail(self, n: int = 2000) -> str:
        return Path(self.log.name).read_text(errors="replace")[-n:]

    def wait_ready(self, timeout: float = 180.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with code {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"server was not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def cpu_seconds(self) -> float:
        """User + system CPU of the server and all its processes (BentoML's arbiter and workers)."""
        import psutil

        total = 0.0
        try:
            root = psutil.Process(self.process.pid)
            for proc in [root, *root.children(recursive=True)]:
                try:
                    times = proc.cpu_times()
                    total += times.user + times.system
                except psutil.NoSuchProcess:
                    pass
        except psutil.NoSuchProcess:
            pass
        return total

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
            except ProcessLookupError:
                pass
        self.log.close()

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def reference_command(artifact: str, workers: int = 1) -> list[str]:
    return [sys.executable, "-m", "aeguard.serving.reference", artifact, "--workers", str(workers)]


# --- request bodies --------------------------------------------------------------------------------------


def sample_rows(manifest: dict[str, Any], n: int, rng: np.random.Generator) -> np.ndarray:
    """Rows around the training distribution (the manifest's standardization), so scores are realistic."""
    d = int(manifest["features"]["n_features"])
    pre = manifest.get("preprocessing", {})
    mean = np.asarray(pre.get("mean", np.zeros(d)), dtype=np.float64)
    scale = np.asarray(pre.get("scale", np.ones(d)), dtype=np.float64)
    return mean + scale * rng.standard_normal((n, d))


def encode_body(kind: str, names: list[str], X: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """One request body of form ``kind`` (see :data:`BODY_KINDS`) and its headers; Arrow (float32 columns)
    asks for Arrow back."""
    import orjson

    if kind == "records":
        return orjson.dumps({"rows": [dict(zip(names, row)) for row in X.tolist()]}), dict(JSON)
    if kind == "columns":
        return orjson.dumps({"columns": {n: X[:, j].tolist() for j, n in enumerate(names)}}), dict(JSON)
    if kind == "values":
        return orjson.dumps({"features": list(names), "values": X.tolist()}), dict(JSON)
    if kind == "arrow":
        import pyarrow as pa

        # float32 columns: what the graph computes in, and half the bytes of float64
        table = pa.table({n: X[:, j].astype(np.float32) for j, n in enumerate(names)})
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return sink.getvalue().to_pybytes(), {"content-type": ARROW_MEDIA, "accept": ARROW_MEDIA}
    if kind == "npy":
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(X, dtype=np.float64), allow_pickle=False)
        return buf.getvalue(), {"content-type": NPY_MEDIA}
    raise ValueError(f"unknown body form {kind!r}; choose from {BODY_KINDS}")


def good_body(names: list[str], X: np.ndarray) -> bytes:
    return encode_body("records", names, X)[0]


def bad_bodies(names: list[str], X: np.ndarray, limits: dict[str, int],
               api_key: bool) -> list[tuple[str, bytes, dict[str, str]]]:
    """One request per bad-input case; every one must be answered 4xx."""
    row = dict(zip(names, map(float, X[0])))
    values = list(map(float, X[0]))
    cases = [
        ("unknown_feature", {"rows": [{**row, "not_a_feature": 1.0}]}),
        ("missing_feature", {"rows": [{k: v for k, v in list(row.items())[1:]}]}),
        ("wrong_width", {"rows": [values[:-1]]}),
        ("nan", None),
        ("string", {"rows": [{**row, names[0]: "abc"}]}),
        ("boolean", {"rows": [{**row, names[0]: True}]}),
        ("empty", {"rows": []}),
        ("unknown_model", {"rows": [row], "model": "no-such-model"}),
        ("both_thresholds", {"rows": [row], "threshold": 1.0, "contamination": 0.1}),
    ]
    out = [(name, json.dumps(body).encode() if body is not None else b"", JSON) for name, body in cases]
    out[3] = ("nan", ('{"rows": [[NaN' + ", 1.0" * (len(names) - 1) + "]]}").encode(), JSON)
    out.append(("malformed_json", b'{"rows": [[1.0, 2', JSON))
    out.append(("wrong_content_type", b"rows=1", {"content-type": "application/x-www-form-urlencoded"}))
    out.append(("malformed_arrow", b"not an arrow stream", {"content-type": ARROW_MEDIA}))
    out.append(("npy_wrong_width", encode_body("npy", names[:-1], X[:, :-1])[0], {"content-type": NPY_MEDIA}))
    if limits.get("max_rows", 10**9) <= 5000:
        over = np.repeat(X[:1], limits["max_rows"] + 1, axis=0)
        out.append(("too_many_rows", good_body(names, over), JSON))
    if limits.get("max_body_bytes", 10**12) <= 2 * 1024 * 1024:
        out.append(("body_too_large", b'{"rows": [' + b" " * limits["max_body_bytes"] + b"]}", JSON))
    if api_key:
        wrong = {**JSON, "authorization": "Bearer wrong-key"}
        out.append(("wrong_api_key", json.dumps({"rows": [row]}).encode(), wrong))
    return out


def raw_rows_per_s(model: Any, X: np.ndarray, min_seconds: float = 1.0) -> float:
    """In-process ``Artifact.run`` throughput at ``len(X)`` rows per call."""
    model.run(X)
    calls, start = 0, time.perf_counter()
    while True:
        model.run(X)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds and calls >= 5:
            return calls * len(X) / elapsed


# --- measuring -------------------------------------------------------------------------------------------


@dataclass
class Target:
    """A server under test: where it listens and, when this command started it, its processes."""

    name: str
    url: str
    server: LocalServer | None = None

    @property
    def host_port(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        return parts.hostname or "127.0.0.1", parts.port or 80

    def cpu_seconds(self) -> float | None:
        return self.server.cpu_seconds() if self.server is not None else None


def _run(target: Target, plan: Sequence[Request], concurrency: int, duration_s: float | None = None,
         keep_bodies: bool = False) -> Any:
    try:
        import uvloop

        runner: Callable[[Any], Any] = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is in the serve extra
        runner = asyncio.run
    host, port = target.host_port
    return runner(drive(host, port, plan, concurrency, duration_s, keep_bodies))


def measure(targets: Sequence[Target], plan: Sequence[Request], concurrency: int, rows: int, warmup: int,
            duration_s: float | None = None, rounds: int = 1) -> dict[str, dict[str, Any]]:
    """Warm every target up, then send ``plan`` (or as much of it as ``duration_s`` allows) to each, split
    into ``rounds`` that alternate between the targets, so that a burst of load from elsewhere on a shared
    machine hits both alike; statistics of the timed parts, pooled per target."""
    for target in targets:
        if warmup:
            _run(target, [plan[i % len(plan)] for i in range(warmup)], concurrency)
    pooled: dict[str, dict[str, Any]] = {t.name: {"outcomes": [], "wall": 0.0, "cpu": 0.0, "client": 0.0}
                                         for t in targets}
    share = max(1, len(plan) // rounds)
    for r in range(rounds):
        part = plan[r * share:(r + 1) * share] if rounds > 1 else plan
        for target in (targets if r % 2 == 0 else targets[::-1]):
            cpu0, client0 = target.cpu_seconds(), _client_cpu()
            result = _run(target, part, concurrency, duration_s / rounds if duration_s else None)
            cpu1, client1 = target.cpu_seconds(), _client_cpu()
            acc = pooled[target.name]
            acc["outcomes"] += result.outcomes
            acc["wall"] += result.wall_s
            acc["cpu"] = None if cpu0 is None or acc["cpu"] is None else acc["cpu"] + cpu1 - cpu0
            acc["client"] += client1 - client0
    out = {}
    for name, acc in pooled.items():
        stats = summarize_outcomes(acc["outcomes"], acc["wall"], rows)
        n = len(acc["outcomes"])
        stats["server_cpu_ms_per_request"] = 1000.0 * acc["cpu"] / n if acc["cpu"] is not None and n else None
        stats["client_cpu_ms_per_request"] = 1000.0 * acc["client"] / n if n else None
        out[name] = stats
    return out


def _client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def summarize_outcomes(outcomes: Sequence[Outcome], wall: float, rows: int) -> dict[str, Any]:
    statuses = Counter(str(o.status) for o in outcomes)
    good_ok = sum(1 for o in outcomes if o.kind == "good" and o.status == 200)
    wrong = [o for o in outcomes if (o.kind == "good" and o.status != 200)
             or (o.kind != "good" and not (isinstance(o.status, int) and 400 <= o.status < 500))]
    lat_ms = np.asarray([o.seconds for o in outcomes]) * 1000.0
    good = np.asarray([o.seconds for o in outcomes if o.kind == "good"]) * 1000.0
    return {
        "requests": len(outcomes),
        "requests_per_s": len(outcomes) / wall if wall else 0.0,
        "rows_per_s": good_ok * rows / wall if wall else 0.0,
        "p50_ms": float(np.percentile(lat_ms, 50)) if lat_ms.size else None,
        "p99_ms": float(np.percentile(lat_ms, 99)) if lat_ms.size else None,
        "good_p50_ms": float(np.percentile(good, 50)) if good.size else None,
        "good_p99_ms": float(np.percentile(good, 99)) if good.size else None,
        "errors": len(wrong),
        "server_errors_5xx": sum(1 for o in outcomes if isinstance(o.status, int) and o.status >= 500),
        "status_counts": dict(sorted(statuses.items())),
        "wall_s": wall,
    }


def response_scores(body: bytes, arrow: bool) -> np.ndarray:
    if arrow:
        import pyarrow as pa

        return pa.ipc.open_stream(pa.py_buffer(body)).read_all().column("score").to_numpy()
    return np.asarray([r["score"] for r in json.loads(body)["results"]], dtype=np.float64)


def scores_agree(targets: Sequence[Target], request: Request, arrow: bool) -> bool:
    """Both servers answer the same request with the same scores."""
    answers = [_run(t, [request], 1, keep_bodies=True).outcomes[0] for t in targets]
    if any(a.status != 200 for a in answers):
        return False
    scores = [response_scores(a.body, arrow) for a in answers]
    return all(np.allclose(s, scores[0], rtol=1e-6, atol=1e-9) for s in scores[1:])


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


# --- the run ---------------------------------------------------------------------------------------------


def _limits(url: str, headers: dict[str, str]) -> dict[str, int]:
    import httpx

    response = httpx.get(f"{url}/models", headers=headers, timeout=30.0)
    response.raise_for_status()
    return response.json().get("limits", {})


def _start_servers(config: BenchConfig, log: Callable[[str], None]) -> tuple[Target, Target | None]:
    if config.url is not None:
        aeguard = Target("aeguard", config.url.rstrip("/"))
    else:
        extra = []
        if config.max_rows:
            extra += ["--max-rows", str(config.max_rows)]
        if config.max_body_bytes:
            extra += ["--max-body-bytes", str(config.max_body_bytes)]
        if not config.access_log:
            extra.append("--no-access-log")
        env = {"AEGUARD_API_KEY": config.api_key} if config.api_key else {}
        log(f"starting aeguard serve {config.artifact} ({config.workers} worker(s)) ...")
        server = LocalServer([config.artifact], workers=config.workers, env=env, extra_args=extra)
        aeguard = Target("aeguard", server.url, server)
        server.wait_ready()
    with_reference = config.reference if config.reference is not None else (
        config.url is None and config.bad_fraction == 0 and not config.api_key)
    if config.reference_url is not None:
        return aeguard, Target("reference", config.reference_url.rstrip("/"))
    if not with_reference:
        return aeguard, None
    log(f"starting the reference endpoint ({config.workers} worker(s)) ...")
    server = LocalServer([], command=reference_command(config.artifact, config.workers))
    reference = Target("reference", server.url, server)
    server.wait_ready()
    return aeguard, reference


def run_bench(config: BenchConfig, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Every cell of the grid, then the burst phase; one result dict each (see :func:`cell_result`)."""
    from aeguard.serving.runtime import load_for_serving
    from aeguard.serving.settings import Settings
    from aeguard.serving.store import ModelRef, resolve

    settings = Settings.from_env()
    resolved = resolve(ModelRef.parse(config.artifact))
    model = load_for_serving(resolved.path, threads=settings.ort_threads, spinning=settings.ort_spinning)
    names = model.feature_names
    headers = {"authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    aeguard = reference = None
    results: list[dict[str, Any]] = []
    raw_cache: dict[int, float] = {}
    try:
        aeguard, reference = _start_servers(config, log)
        limits = _limits(aeguard.url, headers)
        targets = [aeguard] if reference is None else [aeguard, reference]
        cells = [(b, r, c) for b in config.bodies for r in config.rows_per_request for c in config.concurrency]
        for index, (kind, R, C) in enumerate(cells):
            rng = np.random.default_rng(config.seed + index)
            plan = _plan(config, kind, R, names, model.manifest, rng, limits, headers)
            warm = config.warmup if config.warmup is not None else max(20, 2 * C)
            log(f"[{index + 1}/{len(cells)}] {kind}, R={R}, C={C}: {len(plan)} requests"
                + (f" or {config.duration_s:g} s" if config.duration_s else "") + f" per server after {warm} warm-up")
            stats = measure(targets if index % 2 == 0 else targets[::-1], plan, C, R, warm, config.duration_s,
                            config.rounds)
            if R not in raw_cache:
                raw_cache[R] = raw_rows_per_s(model, sample_rows(model.manifest, R, np.random.default_rng(R)))
            agree = scores_agree(targets, next(p for p in plan if p.kind == "good"), kind == "arrow") \
                if reference is not None else None
            results.append(cell_result(config, kind, R, C, stats, raw_cache[R], agree))
            _check_alive(targets)
        if config.burst_s > 0:
            for target in targets:
                log(f"burst phase on {target.name}: {config.burst_s:g} s of R={BURST_ROWS} C={BURST_CONCURRENCY}, "
                    "then single rows")
                results.append(burst_phase(config, target, names, model.manifest, headers))
            _check_alive(targets)
    finally:
        for target in (aeguard, reference):
            if target is not None and target.server is not None:
                target.server.stop()
    return results


def _plan(config: BenchConfig, kind: str, R: int, names: list[str], manifest: dict[str, Any],
          rng: np.random.Generator, limits: dict[str, int], headers: dict[str, str]) -> list[Request]:
    pool = []
    for _ in range(16 if R <= 256 else 4):  # a few distinct bodies; large ones cost memory
        body, extra = encode_body(kind, names, sample_rows(manifest, R, rng))
        pool.append(build_request("/score", body, {**extra, **headers}))
    bad = [build_request("/score", body, {**extra, **headers}, kind=name)
           for name, body, extra in bad_bodies(names, sample_rows(manifest, 2, rng), limits, bool(config.api_key))]
    n_bad = int(round(config.requests * config.bad_fraction))
    kinds = ["bad"] * n_bad + ["good"] * (config.requests - n_bad)
    rng.shuffle(kinds)
    return [pool[i % len(pool)] if k == "good" else bad[i % len(bad)] for i, k in enumerate(kinds)]


def _check_alive(targets: Sequence[Target]) -> None:
    for t in targets:
        if t.server is not None and t.server.process.poll() is not None:
            raise RuntimeError(f"the {t.name} server died during the run:\n{t.server.log_tail()}")


def cell_result(config: BenchConfig, kind: str, R: int, C: int, stats: dict[str, dict[str, Any]], raw: float,
                agree: bool | None) -> dict[str, Any]:
    """One grid cell: aeguard's statistics at the top level (as before), the reference's under ``reference``,
    and the ratios."""
    ours, ref = stats["aeguard"], stats.get("reference")
    out = {"phase": "grid", "config": _config(config), "body": kind, "rows_per_request": R, "concurrency": C,
           **ours, "raw_rows_per_s": raw, "served_to_raw": ours["rows_per_s"] / raw}
    if ref is not None:
        out.update({
            "reference": ref,
            "rows_ratio": _ratio(ours["rows_per_s"], ref["rows_per_s"]),
            "requests_ratio": _ratio(ours["requests_per_s"], ref["requests_per_s"]),
            "cpu_ratio": _ratio(ours["server_cpu_ms_per_request"], ref["server_cpu_ms_per_request"]),
            "reference_served_to_raw": ref["rows_per_s"] / raw,
            "scores_agree": agree,
        })
    out.update(_machine())
    return out


def burst_phase(config: BenchConfig, target: Target, names: list[str], manifest: dict[str, Any],
                headers: dict[str, str]) -> dict[str, Any]:
    """Single-row latency at C=1 and C=8 before, and right after, ``burst_s`` seconds of 256-row requests."""
    rng = np.random.default_rng(config.seed + 1000)
    single = [build_request("/score", *_with(encode_body("records", names, sample_rows(manifest, 1, rng)), headers))
              for _ in range(16)] * 100_000
    burst = [build_request("/score", *_with(encode_body("records", names, sample_rows(manifest, BURST_ROWS, rng)),
                                            headers)) for _ in range(16)] * 100_000
    out: dict[str, Any] = {"phase": "burst", "server": target.name, "config": _config(config),
                           "burst_s": config.burst_s}
    for C in (1, 8):
        out[f"before_c{C}"] = _latency(_run(target, single, C, 2.0).outcomes)
        _run(target, burst, BURST_CONCURRENCY, config.burst_s)
        after = _run(target, single, C, 3.0).outcomes
        start = min(o.started for o in after)
        out[f"after_c{C}_first_s"] = _latency([o for o in after if o.started - start < 1.0])
        out[f"after_c{C}"] = _latency(after)
    out.update(_machine())
    return out


def _with(encoded: tuple[bytes, dict[str, str]], headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return encoded[0], {**encoded[1], **headers}


def _latency(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    ms = np.asarray([o.seconds for o in outcomes]) * 1000.0
    bad = sum(1 for o in outcomes if o.status != 200)
    return {"requests": len(outcomes), "p50_ms": float(np.percentile(ms, 50)) if ms.size else None,
            "p99_ms": float(np.percentile(ms, 99)) if ms.size else None, "not_200": bad}


def _config(config: BenchConfig) -> dict[str, Any]:
    return {k: v for k, v in asdict(config).items() if k != "api_key"}


def _machine() -> dict[str, Any]:
    return {"cpu_count": os.cpu_count(), "loadavg": [round(v, 2) for v in os.getloadavg()]}


# --- the report ------------------------------------------------------------------------------------------


def _f(value: Any, digits: int = 3) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.{digits}g}"
    return str(value)


def markdown_report(results: Sequence[dict[str, Any]]) -> str:
    """The grid and burst tables of docs/serving.md."""
    lines = ["| body | R | C | aeguard rows/s | req/s | p50 ms | p99 ms | reference rows/s | req/s | p50 ms | "
             "p99 ms | (a)/(b) rows/s | served/raw | CPU ms/req (a) | (b) | CPU (a)/(b) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        if r["phase"] != "grid":
            continue
        ref = r.get("reference") or {}
        lines.append("| " + " | ".join([
            r["body"], str(r["rows_per_request"]), str(r["concurrency"]), _f(r["rows_per_s"]),
            _f(r["requests_per_s"]), _f(r["p50_ms"]), _f(r["p99_ms"]), _f(ref.get("rows_per_s")),
            _f(ref.get("requests_per_s")), _f(ref.get("p50_ms")), _f(ref.get("p99_ms")), _f(r.get("rows_ratio"), 2),
            _f(r["served_to_raw"], 2), _f(r["server_cpu_ms_per_request"]),
            _f(ref.get("server_cpu_ms_per_request")), _f(r.get("cpu_ratio"), 2)]) + " |")
    bursts = [r for r in results if r["phase"] == "burst"]
    if bursts:
        lines += ["", "| server | single-row C | before: p50 / p99 ms | first second after the burst | "
                      "3 s after the burst |", "|---|---:|---:|---:|---:|"]
        for r in bursts:
            for C in (1, 8):
                cells = [r[f"before_c{C}"], r[f"after_c{C}_first_s"], r[f"after_c{C}"]]
                lines.append(f"| {r['server']} | {C} | " + " | ".join(
                    f"{_f(c['p50_ms'])} / {_f(c['p99_ms'])}" for c in cells) + " |")
    return "\n".join(lines) + "\n"
