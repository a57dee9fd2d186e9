"""ONNX speed of the `sae_ood` graph vs a plain AE of matching size (spec section 9.6), one run.

The matching AE has the SAE's weights: ``d -> n_latents`` (ReLU) ``-> d``, the same standardization, the squared
residual as score and contrib; it is exported with the same exporter and trained not at all (only its speed is
measured), so the ratio isolates what TopK + ScatterElements and the code-space kNN against the reference set
add. The registered `ae` (its default small MLP) is timed too, for scale. onnxruntime CPU, one intra-op
thread: rows/s on a 10,000-row batch (3 passes) and the median single-row latency over 2,000 calls, FP32 and
INT8 (`aeguard export --int8`), plus each artifact's size. Datasets: an ODDS table (tabular mode) and an
MVTec embedding file (embedding mode, d = 512 -> 4,096 latents).

    .venv/bin/python scripts/sae_ood/edge_speed.py --odds cardio \
        --npz /work/shared/data/embeddings/mvtec-resnet18/bottle.npz --out docs/benchmarks/sae_ood_speed.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from aeguard.edge.export_cli import emit_report


def size_kb(folder: Path) -> float:
    return round(sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) / 1024, 1)


def timings(folder: Path, X: np.ndarray) -> dict[str, float]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(folder / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    big = np.ascontiguousarray(np.resize(X, (10_000, X.shape[1])), dtype=np.float32)
    sess.run(None, {name: big[:100]})
    start = time.perf_counter()
    for _ in range(3):
        for i in range(0, len(big), 1000):  # 1,000-row chunks: the kNN holds a rows x n_ref matrix
            sess.run(None, {name: big[i:i + 1000]})
    rows_s = 3 * len(big) / (time.perf_counter() - start)
    lat = []
    for i in range(2000):
        t = time.perf_counter()
        sess.run(None, {name: big[i:i + 1]})
        lat.append(time.perf_counter() - t)
    return {"rows_per_s": round(rows_s), "latency_us": round(statistics.median(lat) * 1e6, 1)}


def one_dataset(label: str, X: np.ndarray, params: dict, root: Path) -> dict:
    import torch

    from aeguard.core import registry
    from aeguard.core.deep import Standardize
    from aeguard.core.export import export_graph
    from aeguard.edge.variants import export_variant

    arts = {}
    sae = registry.create("sae_ood", random_state=0, **params).fit(X)
    arts["sae_ood"] = sae.save_artifact(root / label / "sae_ood")
    arts["ae"] = registry.create("ae", random_state=0).fit(X).save_artifact(root / label / "ae")
    d, n = X.shape[1], sae.n_latents_
    mean, scale = sae.standardize_.mean.numpy(), sae.standardize_.scale.numpy()

    class MatchedAE(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.std = Standardize(mean, scale)
            self.enc, self.dec = torch.nn.Linear(d, n), torch.nn.Linear(n, d)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            z = self.std(x)
            contrib = (self.dec(torch.relu(self.enc(z))) - z) ** 2
            return contrib.sum(dim=1), contrib

    folder = root / label / "ae_matched"
    folder.mkdir(parents=True)
    export_graph(MatchedAE().eval(), d, ["score", "contrib"], folder / "model.onnx")
    results: dict[str, dict] = {}
    for name, path in {**arts, "ae_matched": folder}.items():
        results[name] = {"fp32": {**timings(path, X), "size_kb": size_kb(path)}}
        if name in arts:
            q = export_variant(path, root / label / f"{name}-int8", int8=True)
            results[name]["int8"] = {**timings(q, X), "size_kb": size_kb(q)}
    ratios = {f"sae_ood/{base} {v}": {k: round(results["sae_ood"][v][k] / results[base][v][k], 3)
                                       for k in ("rows_per_s", "latency_us")}
              for base in ("ae_matched", "ae") for v in ("fp32", "int8") if v in results[base]}
    return {"n_rows": int(len(X)), "n_features": int(d), "n_latents": int(n), "k": int(sae.k_),
            "n_ref": int(sae.reference_.n_ref), "params": params, "results": results, "ratios": ratios}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--odds", default="cardio")
    parser.add_argument("--data-dir", default="/work/shared/data/odds")
    parser.add_argument("--npz", default=None, help="an embedding suite file (X, y), scored in embedding mode")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp())
    report: dict = {"command": "scripts/sae_ood/edge_speed.py", "onnxruntime_threads": 1,
                    "load_average_start": os.getloadavg(), "datasets": {}}
    X = np.load(Path(args.data_dir) / f"{args.odds}.npz")["X"].astype(np.float64)
    report["datasets"][args.odds] = one_dataset(args.odds, X, {}, root)
    if args.npz:
        data = np.load(args.npz)
        X = data["X"][data["y"] == 0].astype(np.float64)
        report["datasets"][Path(args.npz).stem] = one_dataset(Path(args.npz).stem, X, {"input_mode": "embedding"},
                                                              root)
    report["load_average_end"] = os.getloadavg()
    emit_report(report, args.out)


if __name__ == "__main__":
    main()
