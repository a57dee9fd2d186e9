"""onnxruntime sessions tuned for serving: one intra-op thread per worker, threads that sleep between calls.

onnxruntime's defaults suit one big batch at a time: a pool with one thread per core whose threads spin after
every call. In a server that takes a core from the event loop (a 256-row request cost 24.6 ms of CPU with the
default pool against 8.4 ms with one thread), and N workers would each start one thread per core. Serving
therefore asks for ``intra_op_num_threads=1`` and ``session.intra_op.allow_spinning=0`` unless
``AEGUARD_ORT_THREADS`` / ``AEGUARD_ORT_SPINNING`` say otherwise.

The artifact is loaded (and verified) by :class:`aeguard.core.artifact.Artifact`, whose one session gets these
options through ``aeguard.core.runtime.make_session`` (the core's honest CUDA check decides the device).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aeguard.core.artifact import Artifact

SPINNING_KEY = "session.intra_op.allow_spinning"


def load_for_serving(path: str | Path, device: str = "auto", threads: int = 1, spinning: bool = False,
                     trusted_keys: str | Path | None = None) -> Artifact:
    """A verified artifact whose session uses the serving thread settings (one session, made from the verified
    bytes; ``trusted_keys``: see :func:`aeguard.core.artifact.load_artifact`)."""
    return Artifact(path, device=device, threads=threads, trusted_keys=trusted_keys,
                    session_options={"inter_op_threads": 1, "config": {SPINNING_KEY: "1" if spinning else "0"}})


def session_settings(artifact: Artifact) -> dict[str, Any]:
    """What ``/models`` reports about a serving session."""
    options = artifact.session.get_session_options()
    return {"intra_op_threads": options.intra_op_num_threads,
            "allow_spinning": options.get_session_config_entry(SPINNING_KEY) == "1"}
