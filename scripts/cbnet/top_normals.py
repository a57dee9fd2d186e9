"""Why the default `cbnet` has a lower AP than `s_input` alone: who sits at the top of its ranking.

On the benchmark's split (seed given), fit the default `cbnet` on the fit split, take the top k test rows by score
(k = the number of test anomalies, where AP is decided), and report how many of them are normal rows and what
share of their score comes from the scaled s_conv term; plus the AP of the score and of each scaled term alone.
Labels are read for this analysis only. With `AEGUARD_TRAIN_CACHE` pointing at the ODDS run's cache, the fits are
loads.

    AEGUARD_TRAIN_CACHE=runs/cache .venv/bin/python scripts/cbnet/top_normals.py satimage-2,musk,smtp,thyroid,cardio
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    from aeguard.benchmark.protocol import make_split
    from aeguard.core import registry
    from aeguard.core.metrics import average_precision

    parser = argparse.ArgumentParser()
    parser.add_argument("datasets")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default="/work/shared/data/odds")
    args = parser.parse_args()
    for name in args.datasets.split(","):
        data = np.load(Path(args.data_dir) / f"{name}.npz")
        X_fit, X_test, _, y = make_split(data["X"].astype(np.float64), data["y"].astype(int).ravel(), args.seed)
        det = registry.create("cbnet", random_state=args.seed).fit(X_fit)
        out = det.score_output(X_test)
        scales = det.component_scales_
        terms = {k: out.components[k] / scales[k] for k in ("s_conv", "s_ent", "s_input")}
        top = np.argsort(-out.score)[: max(1, int(y.sum()))]
        normals = top[y[top] == 0]
        share = float(np.mean(terms["s_conv"][normals] / out.score[normals])) if len(normals) else float("nan")
        print(json.dumps({"dataset": name, "seed": args.seed, "n_classes": det.classes_info_["n_classes"],
                          "top_k": len(top), "normals_in_top_k": len(normals),
                          "s_conv_share_of_their_score": round(share, 3),
                          "ap_score": round(average_precision(y, out.score), 3),
                          **{f"ap_{k}": round(average_precision(y, v), 3) for k, v in terms.items()}}), flush=True)


if __name__ == "__main__":
    main()
