"""Measure what Lightning adds per optimiser epoch, against a bare torch loop on the same model and data.

Full-batch training on a small table makes each step cheap, so framework cost would dominate if every
epoch were a Lightning step. The measurement runs, side by side in one process:

- ``torch``: a plain loop of Adam steps (the floor);
- ``lightning chunked``: :func:`aeguard.core.training.train_model` with the default ``epochs_per_step``;
- ``lightning per-epoch``: the same with ``epochs_per_step=1`` (one Lightning step per epoch).

and reports milliseconds per epoch and the ratios to the torch floor, both in wall time and in CPU time of the
training thread (``time.thread_time``), which a shared, loaded machine disturbs far less.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch


def _bare_loop(detector: Any, model: torch.nn.Module, z: torch.Tensor, epochs: int) -> tuple[float, float]:
    optimizer, scheduler = detector.configure_optimizer(model)
    started, cpu = time.perf_counter(), time.thread_time()
    for _ in range(epochs):
        loss = detector.training_loss(model, z)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return time.perf_counter() - started, time.thread_time() - cpu


def measure_overhead(detector_name: str = "ae", rows: int = 2000, features: int = 20, epochs: int = 1000,
                     repeats: int = 3, seed: int = 0) -> dict[str, Any]:
    """Milliseconds per epoch for the three loops (best of ``repeats``) and their ratios to bare torch."""
    from aeguard.core import registry
    from aeguard.core.deep import FitData, torch_threads
    from aeguard.core.training import train_model

    rng = np.random.default_rng(seed)
    z = rng.standard_normal((rows, features)).astype(np.float32)
    detector = registry.create(detector_name, epochs=epochs, random_state=seed)
    detector.device_ = "cpu"
    default_chunk = int(getattr(detector, "epochs_per_step", 50))
    data = FitData(z=z, train_idx=np.arange(rows), val_idx=np.arange(0), seed=seed)
    timings: dict[str, list[float]] = {"torch": [], "lightning chunked": [], "lightning per-epoch": []}
    cpu: dict[str, list[float]] = {k: [] for k in timings}
    train_model(detector, detector.build_model(data), z[:50], None, seed=seed)  # warm-up imports
    for _ in range(repeats):
        torch.manual_seed(seed)
        with torch_threads():  # the same thread setting the Lightning loop uses
            wall, thread = _bare_loop(detector, detector.build_model(data), torch.from_numpy(z), epochs)
        timings["torch"].append(wall)
        cpu["torch"].append(thread)
        for label, chunk in (("lightning chunked", default_chunk), ("lightning per-epoch", 1)):
            detector.epochs_per_step = chunk
            torch.manual_seed(seed)
            started = time.thread_time()
            history = train_model(detector, detector.build_model(data), z, None, seed=seed)
            cpu[label].append(time.thread_time() - started)
            timings[label].append(history["train_seconds"])
    best = {k: min(v) * 1000.0 / epochs for k, v in timings.items()}
    best_cpu = {k: min(v) * 1000.0 / epochs for k, v in cpu.items()}
    return {
        "detector": detector_name, "rows": rows, "features": features, "epochs": epochs,
        "epochs_per_step": default_chunk, "threads": torch.get_num_threads(),
        "ms_per_epoch": {k: round(v, 4) for k, v in best.items()},
        "ratio_to_torch": {k: round(v / best["torch"], 3) for k, v in best.items()},
        "overhead_ms_per_epoch": {k: round(v - best["torch"], 4) for k, v in best.items() if k != "torch"},
        "cpu_ms_per_epoch": {k: round(v, 4) for k, v in best_cpu.items()},
        "cpu_ratio_to_torch": {k: round(v / best_cpu["torch"], 3) for k, v in best_cpu.items()},
    }
