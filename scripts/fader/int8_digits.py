"""INT8 vs FP32 ROC-AUC of image artifacts on the digits one-class suite (`aeguard bench-edge` covers tables only);
any image detector (`--detector cbnet`), not only fader.

Per digit task (the benchmark's split for the seed, 1x8x8 images): fit the detector spec, save the FP32 artifact,
export its INT8 variant (`aeguard export --int8`), score the test images with both through onnxruntime and compare.
With `AEGUARD_TRAIN_CACHE` pointing at a digits benchmark's cache the fits are loads.

    AEGUARD_TRAIN_CACHE=runs/cache .venv/bin/python scripts/fader/int8_digits.py \\
        --out docs/benchmarks/fader_int8_digits.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np


def main() -> None:
    from aeguard.benchmark.cells import build_detector
    from aeguard.benchmark.images import DIGITS_RANGE, digits_images
    from aeguard.edge.export_cli import int8_versus_fp32

    parser = argparse.ArgumentParser()
    parser.add_argument("--detector", default="fader", help="benchmark spec of an image detector")
    parser.add_argument("--digits", default="0,1,2,3,4,5,6,7,8,9")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aeguard-int8-") as tmp:
        root = Path(tmp)
        rows = []
        for digit in args.digits.split(","):
            X_fit, X_test, y = digits_images(f"digit{digit}", args.seed)
            det = build_detector(args.detector, args.seed).fit(X_fit, pixel_range=DIGITS_RANGE)
            # the discrete components: fader's mask, cbnet's class
            rows.append({"task": f"digit{digit}",
                         **int8_versus_fp32(det, X_test, y, root / f"digit{digit}", agree_on=("mask", "class"))})
            print(json.dumps(rows[-1]), flush=True)
        deltas = [r["delta"] for r in rows]
    report = {"command": "scripts/fader/int8_digits.py", "detector": args.detector, "seed": args.seed, "rows": rows,
              "mean_roc_auc_fp32": round(float(np.mean([r["roc_auc_fp32"] for r in rows])), 4),
              "mean_roc_auc_int8": round(float(np.mean([r["roc_auc_int8"] for r in rows])), 4),
              "mean_delta": round(float(np.mean(deltas)), 4), "max_abs_delta": round(float(np.max(np.abs(deltas))), 4)}
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "rows"}))


if __name__ == "__main__":
    main()
