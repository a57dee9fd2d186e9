"""Figures of the ensemble rows of one benchmark run (docs/apre.md, "Ensembles"): per row the mean ROC-AUC and AP
over datasets (of the per-dataset mean over seeds), the average rank among the run's rows, the mean seed std,
the cells' summed fit and score seconds; the paired gain of each ``(n_members=M)`` row over its single model;
the datasets where a row still loses against ``iforest``; and the per-dataset fit-time ratio M : 1.

    python scripts/ensemble/analyse.py runs/ens/results.csv
    python scripts/ensemble/analyse.py runs/odds-ens/results.csv --detectors "iforest,apre,apre(n_members=5)"

``--detectors`` keeps only those rows (benchmark specs), so a row that finished on fewer datasets does not shrink
the set every other row is compared on.
"""

from __future__ import annotations

import argparse

import pandas as pd

from aeguard.benchmark.protocol import parse_detector_list, parse_detector_spec


def main(path: str, detectors: str | None = None) -> None:
    df = pd.read_csv(path)
    df = df[df.status == "ok"]
    if detectors:
        df = df[df.detector.isin(parse_detector_list(detectors))]
    per = df.groupby(["detector", "dataset"]).agg(auc=("roc_auc", "mean"), ap=("ap", "mean"),
                                                  std=("roc_auc", "std"), fit=("fit_seconds", "sum"),
                                                  score=("score_seconds", "sum"), n=("seed", "count"))
    complete = per.reset_index().groupby("dataset").detector.nunique()
    datasets = sorted(complete[complete == complete.max()].index)
    per = per[per.index.get_level_values("dataset").isin(datasets)]
    auc = per.auc.unstack("detector")
    ranks = auc.round(3).rank(axis=1, ascending=False).mean()
    ap_ranks = per.ap.unstack("detector").round(3).rank(axis=1, ascending=False).mean()
    rows = per.groupby("detector").agg(auc=("auc", "mean"), ap=("ap", "mean"), seed_std=("std", "mean"),
                                       fit_s=("fit", "sum"), score_s=("score", "sum"))
    rows["rank_auc"], rows["rank_ap"] = ranks, ap_ranks
    print(f"datasets complete for every row: {len(datasets)}; seeds per cell: {int(per.n.max())}")
    print(rows.sort_values("auc", ascending=False).round(3).to_string())
    print("\n| row | mean ROC-AUC | mean AP | avg rank ROC-AUC | avg rank AP | seed std of AUC | fit s (cells) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for det, r in rows.sort_values("auc", ascending=False).iterrows():
        print(f"| `{det}` | {r.auc:.3f} | {r.ap:.3f} | {r.rank_auc:.2f} | {r.rank_ap:.2f} | {r.seed_std:.3f} | "
              f"{r.fit_s:,.0f} |")
    print("\nper-dataset ROC-AUC (mean over seeds):")
    print(auc.round(3).to_string())
    for det in auc.columns:
        _, base, params = parse_detector_spec(det)
        if int(params.get("n_members", 1)) < 2 or base not in auc.columns:
            continue
        d = auc[det] - auc[base]
        print(f"\n{det} - {base}: mean {d.mean():+.3f}, better/worse (>0.001) {(d > 0.001).sum()}/{(d < -0.001).sum()}")
        ratio = (per.fit.unstack("detector")[det] / per.fit.unstack("detector")[base])
        print("fit-time ratio per dataset:", ratio.round(2).sort_values().to_dict())
    if "iforest" in auc.columns:
        for det in auc.columns:
            if det == "iforest" or parse_detector_spec(det)[1] not in ("ae", "apre", "ae+mss"):
                continue
            d = (auc[det] - auc["iforest"]).sort_values()
            print(f"\n{det} - iforest: mean {d.mean():+.3f}, worst: {d.head(6).round(3).to_dict()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", default="runs/ens/results.csv")
    parser.add_argument("--detectors", default=None, help="comma-separated specs to keep (default: every row)")
    args = parser.parse_args()
    main(args.results, args.detectors)
