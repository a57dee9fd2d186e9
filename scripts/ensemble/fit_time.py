"""Fit time of ``n_members`` ensembles against one model, on the benchmark's own splits (docs/apre.md).

One process, one fit at a time, so wall and CPU seconds of the 1- and M-member fits are measured under the same
conditions; CPU seconds (``time.process_time``) are the figure to trust on a shared machine, wall seconds the
one a user waits for. Also prints each fit's test ROC-AUC and the epochs run.

    python scripts/ensemble/fit_time.py --datasets cardio,mammography,satellite --detectors ae,apre \
        --members 1,5 --seeds 0 --out runs/ens-fit-time.csv

``--detectors`` takes benchmark specs: a spec that sets ``n_members`` itself is fitted as written, the others
once per ``--members`` value, e.g. ``--detectors "ae,ae(n_members=5,member_subsample=0.2)"``.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

from sklearn.metrics import roc_auc_score

from aeguard.benchmark.cells import build_detector, load_labelled
from aeguard.benchmark.protocol import make_split, parse_detector_list, parse_detector_spec, with_param
from aeguard.core import registry


def fits(specs: list[str], members: list[int]) -> list[str]:
    """Each spec as written when it sets ``n_members``, else once per ``members`` value."""
    out = []
    for spec in specs:
        _, _, params = parse_detector_spec(spec)
        out.extend([spec] if "n_members" in params else [with_param(spec, "n_members", str(n)) for n in members])
    return out


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
    specs = fits(parse_detector_list(args.detectors), [int(m) for m in args.members.split(",")])
    for name in dict.fromkeys(parse_detector_spec(s)[1] for s in specs):  # imports, Lightning, torch warm-up
        registry.create(name, random_state=0, epochs=20, n_members=2).fit(warm_X[:200])
    with args.out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for dataset in args.datasets.split(","):
            X, y = load_labelled(dataset, args.data_dir)
            for seed in [int(s) for s in args.seeds.split(",")]:
                X_fit, X_test, _, y_test = make_split(X, y, seed)
                for spec in specs:
                    det = build_detector(spec, seed)
                    wall, cpu = time.perf_counter(), time.process_time()
                    det.fit(X_fit)
                    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                    hist = det.history_
                    row = {"dataset": dataset, "detector": spec, "n_members": det.n_members, "seed": seed,
                           "fit_wall_s": round(wall, 2), "fit_cpu_s": round(cpu, 2),
                           "train_cpu_s": hist.get("train_cpu_seconds"), "epochs_run": hist.get("epochs_run"),
                           "roc_auc": round(float(roc_auc_score(y_test, det.decision_function(X_test))), 4),
                           "training": (hist.get("ensemble") or {}).get("training", "single")}
                    writer.writerow(row)
                    fh.flush()
                    print(row, flush=True)


if __name__ == "__main__":
    main()
