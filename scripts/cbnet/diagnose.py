"""Why `cbnet` ranks ODDS rows as it does: per-set test ROC-AUC of its components and of label-free diagnostics.

On the benchmark's own split (stratified 60/40, seeds 0..N-1; labels only for the ROC-AUC), fit `cbnet` with the
given parameters on the fit split and report on the test split the ROC-AUC of ``score``, ``s_conv``, ``s_ent``,
``s_input`` (the distance to the prototype g converts the row onto), ``x_proto`` (``min_c ||z - r_c||^2``: the
standardized input's distance to the nearest prototype), ``recon`` (``||g(z) - z||^2``) and ``z_norm``
(``||z||^2``), the chosen class count, the collapse ratio (median s_conv of test anomalies / of test normals), the
median s_conv / x_proto of the test normals, and how many prototypes are fit-split rows labelled outlier (labels
read for this analysis only, never by the fit).

    .venv/bin/python scripts/cbnet/diagnose.py wbc,cardio,glass,pima,thyroid --seeds 2 \
        --out docs/benchmarks/cbnet_diagnose.json
    .venv/bin/python scripts/cbnet/diagnose.py cardio --params '{"n_classes": 8}'
    .venv/bin/python scripts/cbnet/diagnose.py digit3,digit8 --seeds 1     # digits one-class tasks, as images
    AEGUARD_TRAIN_CACHE=runs/cache .venv/bin/python scripts/cbnet/diagnose.py all --seeds 5 \
        --out docs/benchmarks/cbnet_collapse_odds.json     # every set in --data-dir; fits load from the cache

``by_dataset`` in the output is the collapse check of ``cbnet.md`` section 9.4: per set, the mean over seeds of
s_conv's ROC-AUC alone and the median collapse ratio.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    import torch

    from aeguard.benchmark.images import DIGITS_RANGE, digits_images
    from aeguard.benchmark.protocol import make_split
    from aeguard.core import registry
    from aeguard.core.metrics import roc_auc

    parser = argparse.ArgumentParser()
    parser.add_argument("datasets")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--params", default="{}", help="JSON dict of cbnet parameters")
    parser.add_argument("--data-dir", default="/work/shared/data/odds")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    params = json.loads(args.params)
    rows = []
    names = (sorted(p.stem for p in Path(args.data_dir).glob("*.npz")) if args.datasets == "all"
             else args.datasets.split(","))
    for name in names:
        for seed in range(args.seeds):
            fit_kw: dict = {}
            if name.startswith("digit"):  # the digits suite's one-class task, as images (fit split: one digit)
                X_fit, X_test, y_test = digits_images(name, seed)
                y_fit, fit_kw = np.zeros(len(X_fit), dtype=int), {"pixel_range": DIGITS_RANGE}
            else:
                data = np.load(Path(args.data_dir) / f"{name}.npz")
                X_fit, X_test, y_fit, y_test = make_split(data["X"].astype(np.float64),
                                                          data["y"].astype(int).ravel(), seed)
            det = registry.create("cbnet", random_state=seed, **params).fit(X_fit, **fit_kw)
            out = det.score_output(X_test)
            m = det.model_
            with torch.no_grad():
                z = det.standardize_(torch.from_numpy(X_test.astype(np.float32)))
                g = m.convert(z).numpy().astype(np.float64)
            zf = z.numpy().reshape(len(X_test), -1).astype(np.float64)
            R = m.nearest.prototypes.numpy().astype(np.float64)
            x_proto = ((zf[:, None, :] - R[None]) ** 2).sum(2).min(1)
            recon = ((g - zf) ** 2).sum(1)
            s_conv = out.components["s_conv"]
            normal = y_test == 0
            # the training rows of the fit split (the detector's own seeded hold-out split, reproduced)
            train_idx, _ = det._split(len(X_fit), np.random.default_rng(det.seed_))
            reps = [int(train_idx[e["representative_row"]]) for e in det.easy_sets_]
            rep_outlier = [int(y_fit[r]) for r in reps]  # labels read for this analysis only
            row = {"dataset": name, "seed": seed, "n_classes": det.classes_info_["n_classes"],
                   "prototypes_labelled_outlier": f"{sum(rep_outlier)}/{len(reps)}",
                   "best_silhouette": round(max(det.classes_info_.get("silhouette", {"-": float("nan")}).values()), 3),
                   **{f"auc_{k}": round(roc_auc(y_test, v), 4) for k, v in {
                       "score": out.score, "s_conv": s_conv, "s_ent": out.components["s_ent"],
                       "s_input": out.components["s_input"],
                       "x_proto": x_proto, "recon": recon, "z_norm": (zf ** 2).sum(1)}.items()},
                   "collapse_ratio": round(float(np.median(s_conv[~normal])
                                                 / max(np.median(s_conv[normal]), 1e-12)), 3),
                   "median_s_conv_normal": float(np.median(s_conv[normal])),
                   "median_x_proto_normal": float(np.median(x_proto[normal])),
                   "scales": det.component_scales_}
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "scales"}), flush=True)
    keys = [k for k in rows[0] if k.startswith("auc_")]
    mean = {k: round(float(np.mean([r[k] for r in rows])), 4) for k in keys}
    by_dataset = {}
    for name in names:
        mine = [r for r in rows if r["dataset"] == name]
        by_dataset[name] = {"n_classes": sorted({r["n_classes"] for r in mine}),
                            **{k: round(float(np.mean([r[k] for r in mine])), 4) for k in keys},
                            "collapse_ratio": round(float(np.median([r["collapse_ratio"] for r in mine])), 3)}
        by_dataset[name]["s_conv_separates"] = by_dataset[name]["auc_s_conv"] > 0.5
    print("mean", json.dumps(mean))
    if args.out:
        Path(args.out).write_text(json.dumps({"params": params, "seeds": args.seeds, "mean": mean,
                                              "by_dataset": by_dataset, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
