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
    from aeguard.core.artifact import load_artifact
    from aeguard.core.metrics import roc_auc
    from aeguard.edge.variants import export_variant

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
            fp32 = det.save_artifact(root / f"digit{digit}")
            int8 = export_variant(fp32, root / f"digit{digit}-int8", int8=True)
            a, b = load_artifact(fp32).score(X_test), load_artifact(int8).score(X_test)
            auc32, auc8 = roc_auc(y, a.score), roc_auc(y, b.score)
            rows.append({"task": f"digit{digit}", "roc_auc_fp32": round(auc32, 4), "roc_auc_int8": round(auc8, 4),
                         "delta": round(auc8 - auc32, 4),
                         "label_agreement": round(float(np.mean(a.label == b.label)), 4),
                         # the integer components (fader's mask, cbnet's class): the share of equal entries
                         **{f"{k}_agreement": round(float(np.mean(np.asarray(a.components[k])
                                                                  == np.asarray(b.components[k]))), 4)
                            for k in ("mask", "class") if k in a.components},
                         "size_ratio": round(sum(f.stat().st_size for f in int8.glob("*.onnx"))
                                             / sum(f.stat().st_size for f in fp32.glob("*.onnx")), 3)})
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
