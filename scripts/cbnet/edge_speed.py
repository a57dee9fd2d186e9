"""Edge speed of the `cbnet` graph vs a plain `ae` and vs an ordinary AE of g's size (cbnet.md section 9.5).

One run, side by side, onnxruntime CPU (one intra-op thread): rows/s on a 10,000-row batch and the median
single-row latency over 2,000 calls, for the FP32 and INT8 artifacts, plus each artifact's size in KB.
The AE of g's size is the `cbnet` converter trained as a reconstructor (same layers), exported with the same
exporter, so the ratio isolates what the prototypes + tiny classifier add.

    .venv/bin/python scripts/cbnet/edge_speed.py cardio --out docs/benchmarks/cbnet_speed.json

``--image``: the image `cbnet` graph (B-LeNet conv1 + exit-1 branch as f, the dense 512/256/64 converter as g)
on 1x28x28 inputs vs the full B-LeNet of the spec (conv1, exit 1 and the main branch to exit 2, both exits
computed: an ONNX graph without early-exit control flow runs every branch) and vs the truncated classifier alone.
The image cbnet is fitted briefly on synthetic two-class 28x28 images and B-LeNet keeps its initial weights:
only speed and size are measured, never quality.

    .venv/bin/python scripts/cbnet/edge_speed.py --image --out docs/benchmarks/cbnet_speed_image.json
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


def timings(folder: Path, X: np.ndarray, batch: int = 10_000) -> dict[str, float]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(folder / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    big = np.ascontiguousarray(np.resize(X, (batch, *X.shape[1:])), dtype=np.float32)
    sess.run(None, {"x": big[:100]})
    start = time.perf_counter()
    for _ in range(3):
        sess.run(None, {"x": big})
    rows_s = 3 * len(big) / (time.perf_counter() - start)
    one = big[:1]
    lat = []
    for i in range(2000):
        t = time.perf_counter()
        sess.run(None, {"x": big[i:i + 1] if i < len(big) else one})
        lat.append(time.perf_counter() - t)
    return {"rows_per_s": round(rows_s), "latency_us": round(statistics.median(lat) * 1e6, 1)}


class BLeNet:
    """Builders for the spec's B-LeNet (BranchyNet ``networks/lenet_mnist.py``; Chainer max-pool =
    ``MaxPool2d(2, ceil_mode=True)``), 10 classes, outputs the softmax entropies of both exits."""

    @staticmethod
    def build(full: bool):  # noqa: ANN205 - a torch module built lazily (torch imported in main)
        import torch
        from torch import nn

        from aeguard.plugins.cbnet.torch_model import BranchClassifier, entropy

        class Full(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.conv1 = nn.Conv2d(1, 5, 5, padding=3)
                exit1 = BranchClassifier((1, 28, 28), 10)
                self.exit1 = nn.Sequential(*list(exit1.features)[1:], exit1.head)  # after conv1
                self.main = nn.Sequential(
                    nn.MaxPool2d(2, ceil_mode=True), nn.ReLU(), nn.Conv2d(5, 10, 5, padding=3),
                    nn.MaxPool2d(2, ceil_mode=True), nn.ReLU(), nn.Conv2d(10, 20, 5, padding=3),
                    nn.MaxPool2d(2, ceil_mode=True), nn.ReLU(), nn.Flatten(), nn.Linear(720, 84), nn.Linear(84, 10))
                self.full = full

            def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
                h = self.conv1(x)
                e1 = entropy(self.exit1(h))
                if not self.full:
                    return e1, e1
                return e1, entropy(self.main(h))

        return Full().eval()


def image_main(args: argparse.Namespace) -> None:
    from aeguard.core import registry
    from aeguard.core.export import export_graph
    from aeguard.edge.variants import export_variant

    rng = np.random.default_rng(0)
    base = rng.uniform(0, 255, size=(2, 1, 28, 28))
    X = np.clip(np.concatenate([b + rng.normal(0, 30, size=(200, 1, 28, 28)) for b in base]), 0, 255)
    X = X.astype(np.uint8)
    root = Path(tempfile.mkdtemp())
    det = registry.create("cbnet", random_state=0, epochs=2, min_steps=20).fit(X, classes=np.repeat([0, 1], 200))
    folders = {"cbnet": det.save_artifact(root / "cbnet")}
    for name, full in (("b_lenet_full", True), ("b_lenet_exit1", False)):
        (root / name).mkdir()
        export_graph(BLeNet.build(full), (1, 28, 28), ["exit1_entropy", "exit2_entropy"],
                     root / name / "model.onnx")
        folders[name] = root / name
    Xf = X.astype(np.float32)
    results: dict[str, dict] = {}
    for name, folder in folders.items():
        results[name] = {"fp32": {**timings(folder, Xf, batch=2000), "size_kb": size_kb(folder)}}
    q = export_variant(folders["cbnet"], root / "cbnet-int8", int8=True)
    results["cbnet"]["int8"] = {**timings(q, Xf, batch=2000), "size_kb": size_kb(q)}
    ratios = {f"cbnet/{base} fp32": {k: round(results["cbnet"]["fp32"][k] / results[base]["fp32"][k], 3)
                                      for k in ("rows_per_s", "latency_us")}
              for base in ("b_lenet_full", "b_lenet_exit1")}
    report = {"input": "1x28x28 uint8 (synthetic; speed only)", "load_average": os.getloadavg(),
              "onnxruntime_threads": 1, "batch_rows": 2000, "results": results, "ratios": ratios}
    emit_report(report, args.out)


def main() -> None:
    import torch

    from aeguard.core import registry
    from aeguard.core.deep import Standardize
    from aeguard.core.export import export_graph
    from aeguard.edge.variants import export_variant
    from aeguard.plugins.cbnet.torch_model import converter_widths, dense_converter

    parser = argparse.ArgumentParser()
    parser.add_argument("dataset", nargs="?", default="cardio")
    parser.add_argument("--data-dir", default="/work/shared/data/odds")
    parser.add_argument("--image", action="store_true", help="image cbnet vs the full B-LeNet on 1x28x28")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.image:
        image_main(args)
        return
    data = np.load(Path(args.data_dir) / f"{args.dataset}.npz")
    X = data["X"].astype(np.float64)
    root = Path(tempfile.mkdtemp())
    arts = {}
    for name in ("cbnet", "ae"):
        det = registry.create(name, random_state=0).fit(X)
        arts[name] = det.save_artifact(root / name)
    # an ordinary AE with g's layers (reconstruction of x), trained briefly: only its speed is measured
    enc, out = dense_converter(converter_widths(X.shape[1], image=False), relu_bottleneck=False)

    class Recon(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.std, self.enc, self.out = Standardize(X.mean(0), X.std(0) + 1e-5), enc, out

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            z = self.std(x)
            contrib = (self.out(self.enc(z)) - z) ** 2
            return contrib.sum(dim=1), contrib

    (root / "ae_g").mkdir()
    export_graph(Recon().eval(), X.shape[1], ["score", "contrib"], root / "ae_g" / "model.onnx")
    results: dict[str, dict] = {}
    for name, folder in {**arts, "ae_size_of_g": root / "ae_g"}.items():
        results[name] = {"fp32": {**timings(folder, X), "size_kb": size_kb(folder)}}
        if name in arts:
            q = export_variant(folder, root / f"{name}-int8", int8=True)
            results[name]["int8"] = {**timings(q, X), "size_kb": size_kb(q)}
    ratios = {f"cbnet/{base} {v}": {k: round(results["cbnet"][v][k] / results[base][v][k], 3)
                                     for k in ("rows_per_s", "latency_us")}
              for base in ("ae", "ae_size_of_g") for v in ("fp32", "int8") if v in results[base]}
    report = {"dataset": args.dataset, "n_features": int(X.shape[1]), "load_average": os.getloadavg(),
              "onnxruntime_threads": 1, "results": results, "ratios": ratios}
    emit_report(report, args.out)


if __name__ == "__main__":
    main()
