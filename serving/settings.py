"""Serving configuration from environment variables (read once per process).

Environment variables, so that the same service runs from ``aeguard serve``, ``bentoml serve`` and a built
bento without code changes:

========================  ==========================================================================
AEGUARD_ARTIFACTS         comma-separated artifacts to load: folder paths or model-store tags, each
                          optionally ``alias=...``; the first is the default model (required, except
                          in a built bento, which then serves the model versions it pins)
AEGUARD_API_KEY           when set, every scoring route (``/score``, ``/score_csv``, ``/models``) needs
                          ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``; unset means no check.
                          Several keys separated by commas are all accepted (rotation: add the new key,
                          move the clients, drop the old one); compared in constant time
AEGUARD_API_KEYS_FILE     a file with one accepted key per line (``#`` comments), added to AEGUARD_API_KEY
AEGUARD_TRUSTED_KEYS      folder of Ed25519 ``*.pub`` keys: every artifact must be signed by one of them
AEGUARD_MAX_ROWS          rows per request (default 10000); more answers 413
AEGUARD_MAX_BODY_BYTES    request body bytes (default 16 MiB); more answers 413
AEGUARD_WORKERS           server worker processes, one onnxruntime session per model each (default 1)
AEGUARD_DEVICE            auto, cpu or cuda (default auto: CUDA only when a session really runs on it)
AEGUARD_BATCH_WAIT_MS     0 (default): every request is scored on its own, inline in the handler; > 0 turns
                          on the in-process micro-batcher, which joins the rows of concurrent requests for
                          one model, waiting at most this fixed time (ms) for more (never a learned wait)
AEGUARD_MAX_BATCH_ROWS    most rows the micro-batcher joins into one onnxruntime call (default 4096)
AEGUARD_MAX_LATENCY_MS    with the micro-batcher on: a request still queued after this many ms (an overloaded
                          event loop) answers 503 (default 5000)
AEGUARD_TIMEOUT_S         request timeout in seconds (default 60)
AEGUARD_ACCESS_LOG        1 (default) logs one line per request; 0 turns the access log off
AEGUARD_TRACING           0 (default) leaves ``/score`` out of BentoML's OpenTelemetry spans (four spans per
                          request, about a third of the per-request CPU even with no exporter); 1 traces it
AEGUARD_ORT_THREADS       onnxruntime intra-op threads per session (default 1: one per worker, so the thread
                          pool never competes with the event loop; 0 = onnxruntime's default, one per core)
AEGUARD_ORT_SPINNING      0 (default): onnxruntime threads sleep between calls instead of spinning
                          (``session.intra_op.allow_spinning=0``); 1 lets them spin
========================  ==========================================================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

ENV_ARTIFACTS = "AEGUARD_ARTIFACTS"
ENV_API_KEY = "AEGUARD_API_KEY"
ENV_API_KEYS_FILE = "AEGUARD_API_KEYS_FILE"
ENV_TRUSTED_KEYS = "AEGUARD_TRUSTED_KEYS"

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


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
    if not 0.0 <= value < float("inf"):
        raise ValueError(f"{name} must be a finite number >= 0, got {raw!r}")
    return value


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be 0 or 1, got {raw!r}")


def split_refs(value: str) -> list[str]:
    """``a,b , c`` -> ``['a', 'b', 'c']`` (empty entries dropped)."""
    return [part.strip() for part in value.split(",") if part.strip()]


def api_keys_from(env: Mapping[str, str]) -> tuple[str, ...]:
    """The accepted API keys: ``AEGUARD_API_KEY`` (comma-separated) and the lines of ``AEGUARD_API_KEYS_FILE``."""
    keys = split_refs(env.get(ENV_API_KEY, ""))
    path = env.get(ENV_API_KEYS_FILE, "").strip()
    if path:
        try:
            lines = open(path, encoding="utf-8").read().splitlines()
        except OSError as exc:
            raise ValueError(f"{ENV_API_KEYS_FILE}: cannot read {path}: {exc.strerror}") from None
        found = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
        if not found:
            raise ValueError(f"{ENV_API_KEYS_FILE}: {path} has no keys")
        keys += found
    return tuple(dict.fromkeys(keys))


@dataclass(frozen=True)
class Settings:
    artifacts: tuple[str, ...] = ()
    api_key: str | None = None
    api_keys: tuple[str, ...] = ()
    trusted_keys: str | None = None
    max_rows: int = DEFAULT_MAX_ROWS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    workers: int = 1
    device: str = "auto"
    batch_wait_ms: float = 0.0
    max_batch_rows: int = 4096
    max_latency_ms: int = 5000
    timeout_s: int = 60
    access_log: bool = True
    ort_threads: int = 1
    ort_spinning: bool = False
    tracing: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        device = env.get("AEGUARD_DEVICE", "auto").strip() or "auto"
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"AEGUARD_DEVICE must be auto, cpu or cuda, got {device!r}")
        keys = api_keys_from(env)
        return cls(
            artifacts=tuple(split_refs(env.get(ENV_ARTIFACTS, ""))),
            api_key=keys[0] if keys else None,
            api_keys=keys,
            trusted_keys=env.get(ENV_TRUSTED_KEYS, "").strip() or None,
            max_rows=_int(env, "AEGUARD_MAX_ROWS", DEFAULT_MAX_ROWS),
            max_body_bytes=_int(env, "AEGUARD_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, minimum=64),
            workers=_int(env, "AEGUARD_WORKERS", 1),
            device=device,
            batch_wait_ms=_float(env, "AEGUARD_BATCH_WAIT_MS", 0.0),
            max_batch_rows=_int(env, "AEGUARD_MAX_BATCH_ROWS", 4096, minimum=2),
            max_latency_ms=_int(env, "AEGUARD_MAX_LATENCY_MS", 5000),
            timeout_s=_int(env, "AEGUARD_TIMEOUT_S", 60),
            access_log=_flag(env, "AEGUARD_ACCESS_LOG", True),
            ort_threads=_int(env, "AEGUARD_ORT_THREADS", 1, minimum=0),
            ort_spinning=_flag(env, "AEGUARD_ORT_SPINNING", False),
            tracing=_flag(env, "AEGUARD_TRACING", False),
        )
