"""An optional in-process micro-batcher: joins the rows of concurrent requests for one model into one call.

Off by default (``AEGUARD_BATCH_WAIT_MS=0``): on a CPU, onnxruntime scores a small batch in tens of
microseconds, far less than any wait would cost. Worth turning on only where one call has a large fixed cost
(a GPU, a large graph). The wait is fixed: the first request of a batch starts a timer of ``wait_s``; the
batch runs when the timer fires or when it holds ``max_rows`` rows, whichever comes first. Nothing is learned
from traffic, so a burst cannot leave a longer wait behind (BentoML's adaptive batcher did: single-row
latency tripled after a 10 s burst and recovered over tens of seconds).

The batch runs on the event loop, like unbatched scoring. Each request's rows stay contiguous and come back
in order; a request still queued after ``max_latency_s`` (an overloaded loop) fails with :class:`Overloaded`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

Outputs = dict[str, np.ndarray]


class Overloaded(RuntimeError):
    """A request waited longer than the latency budget in the batcher's queue."""


@dataclass
class _Pending:
    X: np.ndarray
    future: asyncio.Future
    queued: float = field(default_factory=time.monotonic)


class MicroBatcher:
    """``await batcher(X)`` -> the outputs of ``run`` for ``X``'s rows, computed in a joined batch."""

    def __init__(self, run: Callable[[np.ndarray], Outputs], wait_s: float, max_rows: int,
                 max_latency_s: float = 5.0) -> None:
        self.run = run
        self.wait_s = wait_s
        self.max_rows = max_rows
        self.max_latency_s = max_latency_s
        self.pending: list[_Pending] = []
        self.rows = 0
        self.timer: asyncio.TimerHandle | None = None
        #: batches run and the rows they held, for ``/models`` and tests
        self.batches = 0
        self.batched_rows = 0

    async def __call__(self, X: np.ndarray) -> Outputs:
        loop = asyncio.get_running_loop()
        item = _Pending(X, loop.create_future())
        self.pending.append(item)
        self.rows += len(X)
        if self.rows >= self.max_rows:
            self.flush()
        elif self.timer is None:
            self.timer = loop.call_later(self.wait_s, self.flush)
        return await item.future

    def flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        batch, self.pending, self.rows = self.pending, [], 0
        now = time.monotonic()
        live = []
        for item in batch:
            if item.future.done():  # the client went away
                continue
            if now - item.queued > self.max_latency_s:
                item.future.set_exception(Overloaded(f"queued {now - item.queued:.1f} s"))
                continue
            live.append(item)
        if not live:
            return
        try:
            outputs = self.run(np.concatenate([item.X for item in live]) if len(live) > 1 else live[0].X)
        except Exception as exc:  # noqa: BLE001 - every request of the batch gets the same failure
            for item in live:
                item.future.set_exception(exc)
            return
        self.batches += 1
        self.batched_rows += sum(len(item.X) for item in live)
        start = 0
        for item in live:
            stop = start + len(item.X)
            item.future.set_result({name: value[start:stop] for name, value in outputs.items()})
            start = stop
