"""What the FADeR-style soft scores and gates do on ODDS and digits (why the spec's stage-B loss left them inverted).

Per dataset (protocol split, seed 0), for the default `fader` fit: the mean soft group score s on test inliers
and outliers, the share of (row, group) gates ``1 - s`` below 0.5, the ROC-AUC of ``max_g s_g`` alone, and the
ROC-AUC of the error summed over masked vs unmasked features, for the stage-A base, the FADeR model and the
shallow-skip-off variant. Writes JSON and one bar figure.

    .venv/bin/python scripts/fader/gate_analysis.py wbc,cardio,glass,pima,thyroid \\
        --out docs/benchmarks/fader_gates.json --figure docs/benchmarks/figures/fader/gates.png
    .venv/bin/python scripts/fader/gate_analysis.py wbc,cardio,glass,pima,thyroid \\
        --params lam=1,recon_on=all,min_steps=1 --out docs/benchmarks/fader_gates_spec_loss.json \\
        --figure docs/benchmarks/figures/fader/gates_spec_loss.png
    .venv/bin/python scripts/fader/gate_analysis.py digit0,digit1,digit2 --out docs/benchmarks/fader_gates_digits.json

A name ``digitC`` is the one-class digits task of ``--suite digits`` (seed 0; 1x8x8 images, the benchmark's split).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    from aeguard.benchmark.cells import build_detector
    from aeguard.benchmark.images import DIGITS_RANGE, digits_images
    from aeguard.benchmark.protocol import make_split
    from aeguard.core.metrics import roc_auc

    parser = argparse.ArgumentParser()
    parser.add_argument("datasets")
    parser.add_argument("--data-dir", default="/work/shared/data/odds")
    parser.add_argument("--out", default=None)
    parser.add_argument("--figure", default=None)
    parser.add_argument("--params", default="", help="extra fader parameters, e.g. 'lam=1,recon_on=all,min_steps=1' "
                        "(the spec's stage-B loss without the step floor: the code before the lam analysis)")
    args = parser.parse_args()
    rows = []
    for name in args.datasets.split(","):
        fit_kw: dict = {}
        if name.startswith("digit"):  # the digits suite's one-class task, as images
            X_fit, X_test, y = digits_images(name, 0)
            fit_kw = {"pixel_range": DIGITS_RANGE}
        else:
            d = np.load(Path(args.data_dir) / f"{name}.npz")
            X_fit, X_test, _, y = make_split(d["X"].astype(np.float64), d["y"].astype(int), 0)
        row: dict = {"dataset": name}
        extra = f",{args.params}" if args.params else ""
        for label, spec in (("base", f"fader(attenuation=false{extra})"), ("fader", f"fader({extra.lstrip(',')})"),
                            ("fader_deep", f"fader(skip_levels_at_inference=deep{extra})")):
            det = build_detector(spec.replace("fader()", "fader"), 0).fit(X_fit, **fit_kw)
            out = det.score_output(X_test)
            mask = np.asarray(out.components["mask"])
            up = mask[:, det.groups_] if hasattr(det, "groups_") else _pixels(mask, det.patch_, X_test.shape)
            row[label] = {"roc_auc": roc_auc(y, out.score), "roc_auc_error_sum": roc_auc(y, out.contrib.sum(axis=1)),
                          "roc_auc_masked_error": roc_auc(y, out.components["masked_error"]),
                          "roc_auc_unmasked_error": roc_auc(y, (out.contrib * (1 - up)).sum(axis=1))}
            if label == "fader":
                s = np.asarray(out.components["soft_scores"])
                row["soft"] = {"mean_inliers": float(s[y == 0].mean()), "mean_outliers": float(s[y == 1].mean()),
                               "share_gates_below_0.5": float((s > 0.5).mean()),
                               "roc_auc_max_s": roc_auc(y, s.max(axis=1))}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"command": "scripts/fader/gate_analysis.py", "params": args.params,
                                              "seed": 0,
                                              "rows": rows}, indent=2) + "\n")
    if args.figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
        names = [r["dataset"] for r in rows]
        x = np.arange(len(rows))
        for i, (label, key) in enumerate((("base", "base"), ("FADeR-style", "fader"), ("FADeR, deep", "fader_deep"))):
            axes[0].bar(x + (i - 1) * 0.27, [r[key]["roc_auc"] for r in rows], 0.27, label=label)
        axes[0].set_xticks(x, names)
        axes[0].set_ylim(0.5, 1.0)
        axes[0].set_ylabel("test ROC-AUC (seed 0)")
        axes[0].legend(fontsize=8)
        axes[1].bar(x - 0.2, [r["soft"]["mean_inliers"] for r in rows], 0.4, label="inliers")
        axes[1].bar(x + 0.2, [r["soft"]["mean_outliers"] for r in rows], 0.4, label="outliers")
        axes[1].set_xticks(x, names)
        axes[1].set_ylabel("mean soft group score s")
        axes[1].legend(fontsize=8)
        fig.tight_layout()
        Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.figure, dpi=110)


def _pixels(mask: np.ndarray, patch: int, shape: tuple[int, ...]) -> np.ndarray:
    """A (B x P) patch mask as flat per-pixel values, in the layout of ``contrib``."""
    c, h, w = shape[1:]
    grid = mask.reshape(len(mask), 1, h // patch, w // patch)
    up = np.repeat(np.repeat(grid, patch, axis=2), patch, axis=3)
    return np.broadcast_to(up, (len(mask), c, h, w)).reshape(len(mask), -1)


if __name__ == "__main__":
    main()
