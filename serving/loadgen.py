"""A bounded HTTP/1.1 load client for loopback benchmarks (asyncio streams, keep-alive, prebuilt requests).

A general client such as httpx spends a few hundred microseconds of Python per request; on a 2-core machine
that shares the cores with the server it would measure mostly itself. This one writes prebuilt request bytes
and reads the status line, the headers it needs (``content-length``, ``transfer-encoding``, ``connection``)
and the body, nothing else: each of ``concurrency`` workers owns one keep-alive connection and has at most
one request in flight. A connection the server closed is reopened, and a request that failed on a reused
connection before any answer arrived is sent once more (as browsers and httpx do).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Request:
    """One prebuilt request: ``kind`` labels it in the results (``good`` or the name of a bad-input case)."""

    kind: str
    raw: bytes


def build_request(path: str, body: bytes, headers: dict[str, str] | None = None, host: str = "127.0.0.1",
                  kind: str = "good") -> Request:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return Request(kind, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)


@dataclass
class Outcome:
    kind: str
    status: int | str  # the HTTP status, or "transport:<error>"
    seconds: float
    started: float  # time.perf_counter() when the request was written
    body: bytes = b""
    attempts: int = 1  # 2: the first try's connection dropped before any answer and it was sent again


@dataclass
class RunResult:
    outcomes: list[Outcome] = field(default_factory=list)
    wall_s: float = 0.0


class _Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.used = False

    async def open(self) -> None:
        self.close()
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=2**24)
        self.used = False

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def exchange(self, raw: bytes, keep_body: bool) -> tuple[int, bytes]:
        if self.writer is None:
            await self.open()
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        self.used = True
        status = int(head[9:12])
        length, chunked, close = None, False, False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = value.strip().lower() == b"close"
        if chunked:
            body = await self._chunked()
        elif length is not None:
            body = await self.reader.readexactly(length)
        else:
            body = await self.reader.read()
            close = True
        if close:
            self.close()
        return status, body if keep_body else b""

    async def _chunked(self) -> bytes:
        parts = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)


async def drive(host: str, port: int, plan: Sequence[Request], concurrency: int, duration_s: float | None = None,
                keep_bodies: bool = False) -> RunResult:
    """Send ``plan`` (in order, ``concurrency`` at a time); stop early after ``duration_s`` when given."""
    result = RunResult()
    position = 0
    deadline = None

    async def worker() -> None:
        nonlocal position
        conn = _Connection(host, port)
        try:
            while position < len(plan) and (deadline is None or time.perf_counter() < deadline):
                request = plan[position]
                position += 1
                result.outcomes.append(await _one(conn, request, keep_bodies))
        finally:
            conn.close()

    start = time.perf_counter()
    if duration_s is not None:
        deadline = start + duration_s
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.wall_s = time.perf_counter() - start
    return result


async def _one(conn: _Connection, request: Request, keep_body: bool) -> Outcome:
    t0 = time.perf_counter()
    for attempt in range(2):
        reused = conn.used and conn.writer is not None
        try:
            status, body = await conn.exchange(request.raw, keep_body)
            return Outcome(request.kind, status, time.perf_counter() - t0, t0, body, attempt + 1)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            conn.close()
            if attempt == 0 and reused:
                continue  # the server had closed the idle connection: send again on a fresh one
            return Outcome(request.kind, f"transport:{type(exc).__name__}", time.perf_counter() - t0, t0,
                           attempts=attempt + 1)
    raise AssertionError("unreachable")
