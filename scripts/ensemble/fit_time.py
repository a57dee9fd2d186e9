"""Fit time of ``n_members`` ensembles against one model, on the benchmark's own splits (docs/apre.md).

One process, one fit at a time, so wall and CPU seconds of the 1- and M-member fits are measured under the same
conditions; CPU seconds (``time.process_time``) are the figure to trust on a shared machine, wall seconds the
one a user waits for. Also prints each fit's test ROC-AUC and the epochs run.

    python scripts/ensemble/fit_time.py --datasets cardio,mammography,satellite --detectors ae,apre \
        --members 1,5 --seeds 0 --out runs/ens-fit-time.csv
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

from sklearn.metrics import roc_auc_score

from aeguard.benchmark.cells import load_labelled
from aeguard.benchmark.protocol import make_split
from aeguard.core import registry


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default="cardio,mammography,satellite")
    p.add_argument("--detectors", default="ae,apre")
    p.add_argument("--members", default="1,5")
    p.add_argument("--seeds", default="0")
    p.add_argument("--data-dir", default="/work/shared/data/odds")
    p.add_argument("--out", type=Path, default=Path("runs/ens-fit-time.csv"))
    args = p.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fields = ["dataset", "detector", "n_members", "seed", "fit_wall_s", "fit_cpu_s", "train_cpu_s", "epochs_run",
              "roc_auc", "training"]
    warm_X, _ = load_labelled(args.datasets.split(",")[0], args.data_dir)
    for name in args.detectors.split(","):  # imports, Lightning and torch warm-up are not a fit's cost
        registry.create(name, random_state=0, epochs=20, n_members=2).fit(warm_X[:200])
    with args.out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for dataset in args.datasets.split(","):
            X, y = load_labelled(dataset, args.data_dir)
            for seed in [int(s) for s in args.seeds.split(",")]:
                X_fit, X_test, _, y_test = make_split(X, y, seed)
                for name in args.detectors.split(","):
                    for n in [int(m) for m in args.members.split(",")]:
                        det = registry.create(name, random_state=seed, n_members=n)
                        wall, cpu = time.perf_counter(), time.process_time()
                        det.fit(X_fit)
                        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                        hist = det.history_
                        row = {"dataset": dataset, "detector": name, "n_members": n, "seed": seed,
                               "fit_wall_s": round(wall, 2), "fit_cpu_s": round(cpu, 2),
                               "train_cpu_s": hist.get("train_cpu_seconds"), "epochs_run": hist.get("epochs_run"),
                               "roc_auc": round(float(roc_auc_score(y_test, det.decision_function(X_test))), 4),
                               "training": (hist.get("ensemble") or {}).get("training", "single")}
                        writer.writerow(row)
                        fh.flush()
                        print(row, flush=True)


if __name__ == "__main__":
    main()
