"""INT8 vs FP32 ROC-AUC of `cbnet` artifacts on ODDS sets, on the benchmark's split for the seed (fit on the fit
split, both artifacts score the test split); with `AEGUARD_TRAIN_CACHE` pointing at an ODDS benchmark's cache the
fits are loads. Images: `scripts/fader/int8_digits.py --detector cbnet`.

    .venv/bin/python scripts/cbnet/int8_delta.py wbc,cardio,glass,pima,thyroid --out docs/benchmarks/cbnet_int8.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np


def main() -> None:
    from aeguard.benchmark.protocol import make_split
    from aeguard.core import registry
    from aeguard.edge.export_cli import int8_versus_fp32

    parser = argparse.ArgumentParser()
    parser.add_argument("datasets")
    parser.add_argument("--data-dir", default="/work/shared/data/odds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aeguard-int8-") as tmp:
        root = Path(tmp)
        rows = []
        for name in args.datasets.split(","):
            data = np.load(Path(args.data_dir) / f"{name}.npz")
            X_fit, X, _, y = make_split(data["X"].astype(np.float64), data["y"].astype(int).ravel(), args.seed)
            det = registry.create("cbnet", random_state=args.seed).fit(X_fit)
            rows.append({"dataset": name, **int8_versus_fp32(det, X, y, root / name, agree_on=("class",)),
                         "n_classes": det.classes_info_["n_classes"]})
            print(rows[-1])
    report = {"seed": args.seed, "protocol": "benchmark split (make_split), test split scored", "rows": rows,
              "mean_delta": round(float(np.mean([r["delta"] for r in rows])), 4)}
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(report["mean_delta"])


if __name__ == "__main__":
    main()
