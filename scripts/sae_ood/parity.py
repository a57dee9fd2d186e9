"""ONNX-vs-torch parity of ``sae_ood`` on real data: the figure behind docs/sae_ood.md, "Parity".

For each dataset (seed-0 protocol split): fit the default, score the test split with torch
(``score_output``) and with the saved artifact through onnxruntime, for the FP32 graph (opset 18) and the
legacy variant (opset 17). Reports the max relative score error, the max abs error of the components and
whether any sparse code selects other latents (a TopK tie would). The tests assert the same at 1e-4 on
synthetic tables; this script says how close it is on the benchmark's data.

    python scripts/sae_ood/parity.py --odds cardio,satellite \
        --npz /work/shared/data/embeddings/mvtec-resnet18/bottle.npz --out docs/benchmarks/sae_ood_parity.json
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from aeguard.benchmark.cells import build_detector
from aeguard.benchmark.protocol import make_split
from aeguard.core.artifact import load_artifact
from aeguard.edge.export_cli import emit_report
from aeguard.edge.variants import export_variant


def compare(det: Any, X: np.ndarray, folder: Path) -> dict[str, Any]:
    """Torch vs each export variant on ``X``."""
    ref = det.score_output(X)
    fp32 = det.save_artifact(folder / "fp32")
    variants = {"fp32": fp32, "legacy": export_variant(fp32, folder / "legacy", legacy=True)}
    out = {}
    for name, path in variants.items():
        got = load_artifact(path).score(X)
        rel = np.abs(got.score - ref.score) / np.maximum(np.abs(ref.score), 1e-12)
        comp = max(float(np.max(np.abs(got.components[c] - ref.components[c]))) for c in ref.components
                   if c != "code")
        support = (got.components["code"] > 0) != (ref.components["code"] > 0)
        out[name] = {"max_rel_score": float(rel.max()), "median_rel_score": float(np.median(rel)),
                     "max_abs_component": comp, "rows_with_other_latents": int(support.any(axis=1).sum())}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--odds", default="cardio", help="comma-separated ODDS names (tabular mode)")
    ap.add_argument("--data-dir", default="/work/shared/data/odds")
    ap.add_argument("--npz", action="append", default=[], help="embedding .npz files (embedding mode)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    jobs = [(Path(args.data_dir) / f"{n}.npz", "sae_ood") for n in args.odds.split(",") if n]
    jobs += [(Path(p), "sae_ood(input_mode=embedding)") for p in args.npz]
    report: dict[str, Any] = {"seed": 0, "datasets": {}}
    for path, spec in jobs:
        data = np.load(path)
        X_fit, X_test, _, _ = make_split(data["X"], data["y"], 0)
        det = build_detector(spec, 0).fit(X_fit)
        with tempfile.TemporaryDirectory() as tmp:
            res = compare(det, X_test.astype(np.float32), Path(tmp))
        report["datasets"][path.stem] = {"spec": spec, "n_test": len(X_test), **res}
        print(path.stem, res, flush=True)
    emit_report(report, args.out)


if __name__ == "__main__":
    main()
