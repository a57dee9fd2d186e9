"""Opt-in cache of trained weights, so scoring variants of one trained network are not retrained.

Many ablation rows of the benchmark differ only in how a trained network is scored (``apre`` with NLL, WNLL,
MSS m = 1, 2, 3; ``mahalanobis`` with another covariance, scale or term): training never sees those
parameters, which a detector declares as ``scoring_params`` (:class:`aeguard.core.deep.DeepDetector`). With
the environment variable ``AEGUARD_TRAIN_CACHE`` set to a folder, every deep fit stores its trained weights
and history under a key made of everything else training could depend on (detector and model class, the
initial weights, every other resolved parameter, seed, device, the exact standardized training and validation
bytes and class labels, torch version), and an identical later fit loads them instead of training again.
Results are those of a fresh training run (CPU training is deterministic); only the fit time differs, which
the manifest history records as ``cache: "hit"``. Unset (the default), nothing is stored.

Concurrent workers: the first one to claim a key trains while holding a lock file; the others wait for its
result (or take over when the holder's process is gone), so no work is done twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch is imported where it is used, so the benchmark runner can read cache_dir() cheaply
    import torch

ENV = "AEGUARD_TRAIN_CACHE"


def cache_dir() -> Path | None:
    value = os.environ.get(ENV, "").strip()
    return Path(value) if value else None


def training_key(parts: dict[str, Any], arrays: list[np.ndarray | None]) -> str:
    """sha256 over a JSON description and the raw bytes of the training arrays."""
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode())
    for arr in arrays:
        if arr is None:
            digest.update(b"none")
            continue
        arr = np.ascontiguousarray(arr)
        digest.update(f"{arr.dtype}{arr.shape}".encode())
        digest.update(arr.tobytes())
    import torch

    digest.update(torch.__version__.encode())
    return digest.hexdigest()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _save(path: Path, model: torch.nn.Module, history: dict[str, Any]) -> None:
    """Weights as plain arrays and the history as JSON: no pickle, even in a cache."""
    arrays = {f"state/{k}": v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    np.savez(path, history=np.array(json.dumps(history, default=str)), **arrays)


def _load(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    import torch

    with np.load(path, allow_pickle=False) as data:
        state = {k[len("state/"):]: torch.from_numpy(data[k].copy()) for k in data.files if k.startswith("state/")}
        return state, json.loads(str(data["history"]))


def cached_training(key: str, model: torch.nn.Module, train: Callable[[], dict[str, Any]],
                    folder: Path | None = None, wait_seconds: float = 6 * 3600) -> dict[str, Any]:
    """Run ``train()`` (which trains ``model`` in place) unless ``key`` is cached; then load the weights."""
    folder = cache_dir() if folder is None else folder
    if folder is None:
        return train()
    folder.mkdir(parents=True, exist_ok=True)
    blob, lock = folder / f"{key}.npz", folder / f"{key}.lock"
    deadline = time.monotonic() + wait_seconds
    while True:
        if blob.exists():
            state, history = _load(blob)
            model.load_state_dict(state)
            return {**history, "cache": "hit"}
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                holder = int(lock.read_text() or 0)
            except (OSError, ValueError):
                holder = 0
            if holder and not _alive(holder) or time.monotonic() > deadline:
                lock.unlink(missing_ok=True)  # the trainer died (or never finished): take over
            time.sleep(1.0)
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(str(os.getpid()))
        break
    try:
        history = train()
        tmp = folder / f".{key}.{os.getpid()}.tmp.npz"
        _save(tmp, model, history)
        os.replace(tmp, blob)
        return {**history, "cache": "miss"}
    finally:
        lock.unlink(missing_ok=True)
