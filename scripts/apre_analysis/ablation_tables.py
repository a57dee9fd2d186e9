"""Tables for docs/apre.md and the closing note, from runs/ablation/results.csv."""
import sys

import pandas as pd

from aeguard.benchmark.report import rank_table

f = pd.read_csv(sys.argv[1] if len(sys.argv) > 1 else "runs/ablation/results.csv")
ok = f[f.status == "ok"]
auc = ok.pivot_table(index="dataset", columns="detector", values="roc_auc", aggfunc="mean")
ap = ok.pivot_table(index="dataset", columns="detector", values="ap", aggfunc="mean")
std = ok.pivot_table(index="dataset", columns="detector", values="roc_auc", aggfunc="std")
common = auc.dropna().index
ranks = rank_table(auc.loc[common]).mean()
ranks_ap = rank_table(ap.loc[common]).mean()
below = (ok.assign(b=ok.roc_auc < 0.5).groupby("detector").b.sum())
summary = pd.DataFrame({"datasets": auc.notna().sum(), "roc_auc": auc.mean(), "ap": ap.mean(),
                        "rank_roc": ranks, "rank_ap": ranks_ap, "cells<0.5": below,
                        "seed_std": std.mean()}).sort_values("roc_auc", ascending=False)
print(summary.round(3).to_string())
print("common datasets", len(common), "cells", len(f), "failed", (f.status != "ok").sum())
PAIRS = [("ae", "ae+mss"), ("apre(mss=false)", "apre"), ("apre(var_floor=none)", "apre"),
         ("apre(mss=false,alpha=1,beta=1)", "apre(mss=false)"), ("apre", "apre(mss_m=2)"),
         ("apre", "apre(mss_m=3)"), ("iforest", "apre")]
for a, b in PAIRS:
    d = (auc[b] - auc[a]).dropna()
    print(f"{b} - {a}: mean {d.mean():+.4f}, wins {(d > 0.001).sum()}, losses {(d < -0.001).sum()}, of {len(d)}")
d = (auc["apre"] - auc["iforest"]).sort_values()
print(pd.DataFrame({"apre": auc["apre"], "apre_std": std["apre"], "apre(mss=false)": auc["apre(mss=false)"],
                    "apre(var_floor=none)": auc["apre(var_floor=none)"], "ae+mss": auc["ae+mss"],
                    "iforest": auc["iforest"], "diff": d}).loc[d.index].round(3).to_string())
