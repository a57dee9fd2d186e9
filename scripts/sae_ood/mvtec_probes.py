"""Two label-free probes behind docs/sae_ood.md, "Under-training" and "Why the code kNN adds little on MVTec".

``lr``: the held-out NMSE (best validation loss, the training's own 1/6 hold-out) of the embedding-mode default
trained at several learning rates on each category's protocol fit split (seed 0). No label is read.

``knn``: for the default, per category (seed 0, protocol split): the ROC-AUC of the score and of each component
alone, of the code norm, the Spearman correlation of ``s_knn`` with the code norm and with ``s_rec``, and how many
of its 32 active atoms a test code shares with its 10 nearest fit codes (labels only for the ROC-AUCs).

    AEGUARD_TRAIN_CACHE=runs/cache .venv/bin/python scripts/sae_ood/mvtec_probes.py knn \
        --suite /work/shared/data/embeddings/mvtec-resnet18 --out docs/benchmarks/sae_ood_knn_probe.json
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from aeguard.benchmark.cells import build_detector
from aeguard.benchmark.protocol import make_split
from aeguard.edge.export_cli import emit_report

SPEC = "sae_ood(input_mode=embedding)"


def lr_probe(X_fit: np.ndarray, lrs: list[float]) -> dict[str, Any]:
    out = {}
    for lr in lrs:
        h = build_detector(f"sae_ood(input_mode=embedding,lr={lr})", 0).fit(X_fit).history_
        out[str(lr)] = {"best_val_nmse": round(float(h["best_val_loss"]), 4), "best_epoch": int(h["best_epoch"]),
                        "final_train_nmse": round(float(h["final_loss"]), 4)}
    return out


def knn_probe(X_fit: np.ndarray, X_test: np.ndarray, y_test: np.ndarray) -> dict[str, float]:
    det = build_detector(SPEC, 0).fit(X_fit)
    test, fit = det.score_output(X_test), det.score_output(X_fit)
    comp, code, ref = test.components, test.components["code"], fit.components["code"]
    norm = np.linalg.norm(code, axis=1)
    shared = (code > 0).astype(float) @ (ref > 0).astype(float).T
    row = {"n_fit": len(X_fit), "roc_score": roc_auc_score(y_test, test.score)}
    row.update({f"roc_{c}": roc_auc_score(y_test, comp[c]) for c in ("s_rec", "s_knn", "s_rare")})
    row.update(roc_code_norm=roc_auc_score(y_test, norm), spearman_knn_norm=spearmanr(comp["s_knn"], norm)[0],
               spearman_knn_rec=spearmanr(comp["s_knn"], comp["s_rec"])[0],
               shared_atoms_10nn=float(np.sort(shared, axis=1)[:, -10:].mean()),
               active_atoms=float((code > 0).sum(axis=1).mean()))
    return {k: round(float(v), 4) for k, v in row.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("probe", choices=("lr", "knn"))
    parser.add_argument("--suite", default="/work/shared/data/embeddings/mvtec-resnet18")
    parser.add_argument("--datasets", default=None, help="comma-separated file stems (default: all)")
    parser.add_argument("--lrs", default="1e-4,1e-3,3e-3")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    files = sorted(Path(args.suite).glob("*.npz"))
    if args.datasets:
        files = [f for f in files if f.stem in args.datasets.split(",")]
    report: dict[str, Any] = {"probe": args.probe, "spec": SPEC, "seed": 0, "datasets": {}}
    for f in files:
        data = np.load(f)
        X_fit, X_test, _, y_test = make_split(data["X"], data["y"], 0)
        report["datasets"][f.stem] = (lr_probe(X_fit, [float(v) for v in args.lrs.split(",")])
                                      if args.probe == "lr" else knn_probe(X_fit, X_test, y_test))
        print(f.stem, report["datasets"][f.stem], flush=True)
    if args.probe == "knn":
        rows = list(report["datasets"].values())
        report["mean"] = {k: round(float(np.mean([r[k] for r in rows])), 4) for k in rows[0]}
    emit_report(report, args.out)


if __name__ == "__main__":
    main()
