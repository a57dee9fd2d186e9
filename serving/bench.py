"""``aeguard bench-serve``: drive a local scoring server over loopback and compare it with raw onnxruntime.

A bounded async client (``concurrency`` requests in flight, one keep-alive connection each) sends
``requests`` timed POST /score requests after a warm-up that also lets BentoML's adaptive batcher calibrate.
Request bodies are encoded before the clock starts so the client measures the server, not its own JSON
encoder; the client still shares the machine's cores with the server, which the report states.

``served_to_raw`` is served rows/s divided by in-process ``Artifact.run`` rows/s on the same artifact and
machine, at the same rows per call (and, for reference, at 4096 rows per call).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

JSON = {"content-type": "application/json"}


@dataclass
class BenchConfig:
    artifact: str
    requests: int = 1000
    concurrency: int = 1
    rows_per_request: int = 1
    url: str | None = None
    workers: int = 1
    bad_fraction: float = 0.0
    max_rows: int | None = None
    max_body_bytes: int | None = None
    api_key: str | None = None
    seed: int = 0
    warmup: int | None = None


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
                raise RuntimeError(f"aeguard serve exited with code {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"aeguard serve was not ready after {timeout:.0f} s:\n{self.log_tail()}")

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


def sample_rows(manifest: dict[str, Any], n: int, rng: np.random.Generator) -> np.ndarray:
    """Rows around the training distribution (the manifest's standardization), so scores are realistic."""
    d = int(manifest["features"]["n_features"])
    pre = manifest.get("preprocessing", {})
    mean = np.asarray(pre.get("mean", np.zeros(d)), dtype=np.float64)
    scale = np.asarray(pre.get("scale", np.ones(d)), dtype=np.float64)
    return mean + scale * rng.standard_normal((n, d))


def good_body(names: list[str], X: np.ndarray) -> bytes:
    return json.dumps({"rows": [dict(zip(names, map(float, row))) for row in X]}).encode()


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
        ("empty", {"rows": []}),
        ("unknown_model", {"rows": [row], "model": "no-such-model"}),
        ("both_thresholds", {"rows": [row], "threshold": 1.0, "contamination": 0.1}),
    ]
    out = [(name, json.dumps(body).encode() if body is not None else b"", JSON) for name, body in cases]
    out[3] = ("nan", ('{"rows": [[NaN' + ", 1.0" * (len(names) - 1) + "]]}").encode(), JSON)
    out.append(("malformed_json", b'{"rows": [[1.0, 2', JSON))
    out.append(("wrong_content_type", b"rows=1", {"content-type": "application/x-www-form-urlencoded"}))
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
    """In-process ``Artifact.run`` throughput at ``len(X)`` rows per call (best of the timed calls' mean)."""
    model.run(X)
    calls, start = 0, time.perf_counter()
    while True:
        model.run(X)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds and calls >= 5:
            return calls * len(X) / elapsed


async def _drive(url: str, plan: list[tuple[str, bytes, dict[str, str]]], concurrency: int,
                 headers: dict[str, str]) -> tuple[list[float], list[tuple[str, int | str]], float]:
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    latencies: list[float] = []
    outcomes: list[tuple[str, int | str]] = []
    position = 0
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120.0, headers=headers) as client:

        async def worker() -> None:
            nonlocal position
            while position < len(plan):
                kind, body, extra = plan[position]
                position += 1
                t0 = time.perf_counter()
                try:
                    response = await client.post("/score", content=body, headers=extra)
                    status: int | str = response.status_code
                except httpx.HTTPError as exc:
                    status = f"transport:{type(exc).__name__}"
                latencies.append(time.perf_counter() - t0)
                outcomes.append((kind, status))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return latencies, outcomes, wall


def _limits(url: str, headers: dict[str, str]) -> dict[str, int]:
    import httpx

    response = httpx.get(f"{url}/models", headers=headers, timeout=30.0)
    response.raise_for_status()
    return response.json().get("limits", {})


def run_bench(config: BenchConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    from aeguard.core.artifact import load_artifact
    from aeguard.serving.store import ModelRef, resolve

    resolved = resolve(ModelRef.parse(config.artifact))
    model = load_artifact(resolved.path)
    names = model.feature_names
    rng = np.random.default_rng(config.seed)
    R = config.rows_per_request
    headers = {"authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    server = None
    load_before = os.getloadavg()
    try:
        if config.url is None:
            extra = []
            if config.max_rows:
                extra += ["--max-rows", str(config.max_rows)]
            if config.max_body_bytes:
                extra += ["--max-body-bytes", str(config.max_body_bytes)]
            env = {"AEGUARD_API_KEY": config.api_key} if config.api_key else {}
            log(f"starting aeguard serve {config.artifact} ({config.workers} worker(s)) ...")
            server = LocalServer([config.artifact], workers=config.workers, env=env,
                                 extra_args=[*extra, "--no-access-log"])
            server.wait_ready()
            url = server.url
        else:
            url = config.url.rstrip("/")
        limits = _limits(url, headers)
        pool = [good_body(names, sample_rows(model.manifest, R, rng)) for _ in range(32)]
        bad = bad_bodies(names, sample_rows(model.manifest, 2, rng), limits, bool(config.api_key))
        n_bad = int(round(config.requests * config.bad_fraction))
        kinds = ["bad"] * n_bad + ["good"] * (config.requests - n_bad)
        rng.shuffle(kinds)
        plan = [("good", pool[i % len(pool)], JSON) if k == "good" else bad[i % len(bad)] for i, k in enumerate(kinds)]
        warm = config.warmup if config.warmup is not None else max(20, 2 * config.concurrency)
        log(f"warm-up: {warm} requests; then {config.requests} timed requests, concurrency {config.concurrency}, "
            f"{R} rows each, {n_bad} bad")
        asyncio.run(_drive(url, [("good", pool[i % len(pool)], JSON) for i in range(warm)], config.concurrency,
                           headers))
        latencies, outcomes, wall = asyncio.run(_drive(url, plan, config.concurrency, headers))
        if server is not None and server.process.poll() is not None:
            raise RuntimeError(f"the server died during the run:\n{server.log_tail()}")
    finally:
        if server is not None:
            server.stop()
    load_after = os.getloadavg()
    return summarize(config, latencies, outcomes, wall, model, R, load_before, load_after)


def summarize(config: BenchConfig, latencies: list[float], outcomes: list[tuple[str, int | str]], wall: float,
              model: Any, R: int, load_before: tuple[float, ...], load_after: tuple[float, ...]) -> dict[str, Any]:
    statuses = Counter(str(s) for _, s in outcomes)
    good_ok = sum(1 for kind, s in outcomes if kind == "good" and s == 200)
    wrong = [(kind, s) for kind, s in outcomes
             if (kind == "good" and s != 200) or (kind != "good" and not (isinstance(s, int) and 400 <= s < 500))]
    n_5xx = sum(1 for _, s in outcomes if isinstance(s, int) and s >= 500)
    lat_ms = np.asarray(latencies) * 1000.0
    good_lat = np.asarray([t for t, (kind, _) in zip(latencies, outcomes) if kind == "good"]) * 1000.0
    rows_per_s = good_ok * R / wall
    X = sample_rows(model.manifest, R, np.random.default_rng(config.seed + 1))
    raw = raw_rows_per_s(model, X)
    raw_large = raw_rows_per_s(model, sample_rows(model.manifest, 4096, np.random.default_rng(config.seed + 2)))
    return {
        "config": {k: v for k, v in asdict(config).items() if k != "api_key"},
        "requests_per_s": len(outcomes) / wall,
        "rows_per_s": rows_per_s,
        "p50_ms": float(np.percentile(lat_ms, 50)),
        "p99_ms": float(np.percentile(lat_ms, 99)),
        "good_p50_ms": float(np.percentile(good_lat, 50)) if good_lat.size else None,
        "good_p99_ms": float(np.percentile(good_lat, 99)) if good_lat.size else None,
        "errors": len(wrong),
        "server_errors_5xx": n_5xx,
        "status_counts": dict(sorted(statuses.items())),
        "wall_s": wall,
        "raw_rows_per_s": raw,
        "served_to_raw": rows_per_s / raw,
        "raw_rows_per_s_large_batch": raw_large,
        "served_to_raw_large_batch": rows_per_s / raw_large,
        "cpu_count": os.cpu_count(),
        "loadavg_before": [round(v, 2) for v in load_before],
        "loadavg_after": [round(v, 2) for v in load_after],
    }
