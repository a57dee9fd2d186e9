"""onnxruntime sessions tuned for serving: one intra-op thread per worker, threads that sleep between calls.

onnxruntime's defaults suit one big batch at a time: a pool with one thread per core whose threads spin after
every call. In a server that takes a core from the event loop (a 256-row request cost 24.6 ms of CPU with the
default pool against 8.4 ms with one thread), and N workers would each start one thread per core. Serving
therefore asks for ``intra_op_num_threads=1`` and ``session.intra_op.allow_spinning=0`` unless
``AEGUARD_ORT_THREADS`` / ``AEGUARD_ORT_SPINNING`` say otherwise.

``aeguard.core.runtime.make_session`` takes a thread count but no session config entries, so the artifact is
loaded (and verified) by :func:`aeguard.core.artifact.load_artifact` with one thread, and its session is then
replaced by one with the serving options and the same execution providers the core chose (the core's honest
CUDA check stays the one that decides the device).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aeguard.core.artifact import Artifact, load_artifact

SPINNING_KEY = "session.intra_op.allow_spinning"


def session_options(threads: int = 1, spinning: bool = False) -> Any:
    """``SessionOptions`` for serving; ``threads=0`` keeps onnxruntime's default (one per core)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry(SPINNING_KEY, "1" if spinning else "0")
    return options


def load_for_serving(path: str | Path, device: str = "auto", threads: int = 1, spinning: bool = False) -> Artifact:
    """A verified artifact whose session uses the serving thread settings."""
    import onnxruntime as ort

    from aeguard.core.runtime import session_device

    artifact = load_artifact(path, device=device, threads=1)
    graph = artifact.path / artifact.manifest["graph"]["file"]
    providers = artifact.session.get_providers()
    artifact.session = ort.InferenceSession(str(graph), sess_options=session_options(threads, spinning),
                                            providers=providers)
    artifact.device = session_device(artifact.session)
    return artifact


def session_settings(artifact: Artifact) -> dict[str, Any]:
    """What ``/models`` reports about a serving session."""
    options = artifact.session.get_session_options()
    return {"intra_op_threads": options.intra_op_num_threads,
            "allow_spinning": options.get_session_config_entry(SPINNING_KEY) == "1"}
