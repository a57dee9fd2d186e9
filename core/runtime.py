"""onnxruntime sessions with an honest provider choice (no torch here).

``onnxruntime-gpu`` lists the CUDA provider even on machines without CUDA and silently falls back to the
CPU when a session is created, so the provider list alone does not prove a GPU: we create the session and
read back the providers it really uses.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

DEVICES = ("auto", "cpu", "cuda")


def _ort() -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise RuntimeError(
            "onnxruntime is not installed: install aeguard[cpu] (or aeguard[gpu] on a CUDA machine)"
        ) from None
    return ort


def make_session(model: str | Path | bytes, device: str = "auto", threads: int | None = None,
                 config: dict[str, str] | None = None, inter_op_threads: int | None = None) -> Any:
    """An ``InferenceSession`` on CUDA when asked for (or ``auto`` and really available), else CPU.

    ``model`` is a path or the graph's bytes (the loader passes the bytes it verified, so onnxruntime reads
    nothing from disk and cannot resolve external-data paths); ``config`` adds session config entries."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    ort = _ort()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    threads = threads if threads is not None else int(os.environ.get("AEGUARD_ORT_THREADS", "0"))
    if threads:
        options.intra_op_num_threads = threads
    if inter_op_threads:
        options.inter_op_num_threads = inter_op_threads
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    available = ort.get_available_providers()
    want_cuda = device in ("auto", "cuda") and "CUDAExecutionProvider" in available
    if device == "cuda" and not want_cuda:
        raise RuntimeError("device='cuda' but this onnxruntime build has no CUDA provider "
                           "(install aeguard[gpu] instead of aeguard[cpu])")
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if want_cuda else ["CPUExecutionProvider"]
    source = model if isinstance(model, bytes) else str(model)
    session = ort.InferenceSession(source, sess_options=options, providers=providers)
    if device == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
        raise RuntimeError("device='cuda' but CUDA could not be initialised; onnxruntime fell back to CPU")
    return session


def session_device(session: Any) -> str:
    """``cuda`` when the session really runs on the CUDA provider, else ``cpu``."""
    return "cuda" if "CUDAExecutionProvider" in session.get_providers() else "cpu"
