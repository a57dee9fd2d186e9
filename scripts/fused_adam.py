"""Fused vs for-loop Adam on real fits, side by side in one run (why ``core.deep.adam`` takes the fused kernel).

For each dataset and detector: the benchmark's seed-0 split (``benchmark.protocol.split_indices``), one fit with
the fused kernel and one with the for-loop kernel (``aeguard.core.deep.FUSED_ADAM``), interleaved, one torch
thread. Reports training CPU seconds (``train_cpu_seconds``), epochs run and test ROC-AUC of both, and the CPU
ratio for-loop / fused. The update rule is the same; only rounding differs, so epochs and ROC-AUC may move a little.

    .venv/bin/python scripts/fused_adam.py --data-dir ../shared/data/odds --out docs/benchmarks/fused_adam.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from aeguard.benchmark.protocol import split_indices
from aeguard.core import deep, registry
from aeguard.core.metrics import roc_auc


def one_fit(name: str, X: np.ndarray, y: np.ndarray, fit: np.ndarray, test: np.ndarray, fused: bool) -> dict:
    deep.FUSED_ADAM = fused
    det = registry.create(name, random_state=0, verbose=False).fit(X[fit])
    history = det.history_
    return {"train_cpu_seconds": history["train_cpu_seconds"], "epochs_run": history["epochs_run"],
            "roc_auc": round(roc_auc(y[test], det.decision_function(X[test])), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--datasets", default="shuttle,satellite,cardio")
    parser.add_argument("--detectors", default="ae,mahalanobis,sae_ood")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for dataset in args.datasets.split(","):
        data = np.load(args.data_dir / f"{dataset}.npz")
        X, y = data["X"].astype(np.float64), data["y"].astype(int)
        fit, test = split_indices(y, seed=0)
        for name in args.detectors.split(","):
            fused, loop = one_fit(name, X, y, fit, test, True), one_fit(name, X, y, fit, test, False)
            rows.append({"dataset": dataset, "detector": name, "fused": fused, "for_loop": loop,
                         "cpu_ratio_loop_over_fused": round(loop["train_cpu_seconds"] / fused["train_cpu_seconds"], 2)})
            print(f"{dataset:10s} {name:12s} fused {fused}  for-loop {loop}  "
                  f"ratio {rows[-1]['cpu_ratio_loop_over_fused']}",
                  flush=True)
    deep.FUSED_ADAM = True
    report = {"torch": torch.__version__, "threads": 1, "rows": rows}
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
