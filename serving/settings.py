"""Serving configuration from environment variables (read once per process).

Environment variables, so that the same service runs from ``aeguard serve``, ``bentoml serve`` and a built
bento without code changes:

========================  ==========================================================================
AEGUARD_ARTIFACTS         comma-separated artifacts to load: folder paths or model-store tags, each
                          optionally ``alias=...``; the first is the default model (required, except
                          in a built bento, which then serves the model versions it pins)
AEGUARD_API_KEY           when set, every scoring route (``/score``, ``/score_csv``, ``/models``) needs
                          ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``; unset means no check
AEGUARD_MAX_ROWS          rows per request (default 10000); more answers 413
AEGUARD_MAX_BODY_BYTES    request body bytes (default 16 MiB); more answers 413
AEGUARD_WORKERS           server worker processes, one onnxruntime session per model each (default 1)
AEGUARD_DEVICE            auto, cpu or cuda (default auto: CUDA only when a session really runs on it)
AEGUARD_MAX_BATCH_ROWS    most rows the adaptive batcher joins into one onnxruntime call (default 4096)
AEGUARD_MAX_LATENCY_MS    the batcher's latency budget in ms (default 5000); a request queued longer in an
                          overloaded server answers 503
AEGUARD_TIMEOUT_S         request timeout in seconds (default 60)
AEGUARD_ACCESS_LOG        1 (default) logs one line per request; 0 turns the access log off
AEGUARD_ORT_THREADS       onnxruntime intra-op threads per session (default: CPU cores / workers)
========================  ==========================================================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

ENV_ARTIFACTS = "AEGUARD_ARTIFACTS"
ENV_API_KEY = "AEGUARD_API_KEY"

DEFAULT_MAX_ROWS = 10_000
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return value


def split_refs(value: str) -> list[str]:
    """``a,b , c`` -> ``['a', 'b', 'c']`` (empty entries dropped)."""
    return [part.strip() for part in value.split(",") if part.strip()]


@dataclass(frozen=True)
class Settings:
    artifacts: tuple[str, ...] = ()
    api_key: str | None = None
    max_rows: int = DEFAULT_MAX_ROWS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    workers: int = 1
    device: str = "auto"
    max_batch_rows: int = 4096
    max_latency_ms: int = 5000
    timeout_s: int = 60
    access_log: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        device = env.get("AEGUARD_DEVICE", "auto").strip() or "auto"
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"AEGUARD_DEVICE must be auto, cpu or cuda, got {device!r}")
        return cls(
            artifacts=tuple(split_refs(env.get(ENV_ARTIFACTS, ""))),
            api_key=env.get(ENV_API_KEY) or None,
            max_rows=_int(env, "AEGUARD_MAX_ROWS", DEFAULT_MAX_ROWS),
            max_body_bytes=_int(env, "AEGUARD_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, minimum=64),
            workers=_int(env, "AEGUARD_WORKERS", 1),
            device=device,
            max_batch_rows=_int(env, "AEGUARD_MAX_BATCH_ROWS", 4096, minimum=2),
            max_latency_ms=_int(env, "AEGUARD_MAX_LATENCY_MS", 5000),
            timeout_s=_int(env, "AEGUARD_TIMEOUT_S", 60),
            access_log=env.get("AEGUARD_ACCESS_LOG", "1").strip().lower() not in ("0", "false", "no", "off"),
        )

    def ort_threads(self) -> int | None:
        """Intra-op threads per session: an explicit AEGUARD_ORT_THREADS wins, else share the cores between
        workers so N workers do not each start one thread per core."""
        if os.environ.get("AEGUARD_ORT_THREADS"):
            return None  # core.runtime.make_session reads it itself
        if self.workers <= 1:
            return None
        return max(1, (os.cpu_count() or 1) // self.workers)
