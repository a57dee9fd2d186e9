"""Latency and throughput of the stage-A base, FADeR-style and multi-mask graphs as ratios from one run (fader.md 9.6).

CPU onnxruntime, one intra-op thread, FP32 artifacts and their INT8 variants (per-batch activation scales for all
four graphs: the per-row rewrite of ``aeguard export --int8`` refuses the multi-mask graphs, whose one input row
becomes K activation rows, so its row-by-row check cannot hold). Every graph is fitted on the same
protocol split (seed 0) with the same seed, so the base and the FADeR-style model share their stage-A weights;
the multi-mask rows use ``n_masks = ceil(1/q) = 4`` disjoint masks (RIAD-style, with and without the FADeR
gates). Timings are interleaved round by round so every graph sees the same machine load: median single-row
latency and rows/s on a batch of 1,000 rows (``session.run`` only). Ratios are to the stage-A base.

    .venv/bin/python scripts/fader/edge_speed.py --tabular cardio --images digits --out docs/benchmarks/fader_speed.json
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from aeguard.edge.export_cli import emit_report, median_us

GRAPHS = {"base (stage A)": "fader(attenuation=false)", "fader": "fader",
          "multi-mask x4": "fader(n_masks=4,attenuation=false)", "multi-mask x4 + fader": "fader(n_masks=4)"}


def timings(models: dict[str, Any], X: np.ndarray, rounds: int = 10) -> dict[str, dict[str, float]]:
    """Interleaved medians: 1-row latency (us) and 1,000-row batch time (us) -> rows/s."""
    batch = np.ascontiguousarray(X[np.arange(1000) % len(X)], dtype=np.float32)
    one = batch[:1]
    lat: dict[str, list[float]] = {k: [] for k in models}
    big: dict[str, list[float]] = {k: [] for k in models}
    for m in models.values():
        m.session.run(None, {m.input_name: batch[:100]})
    for _ in range(rounds):
        for name, m in models.items():
            lat[name].append(median_us(lambda m=m: m.session.run(None, {m.input_name: one}), 50))
            big[name].append(median_us(lambda m=m: m.session.run(None, {m.input_name: batch}), 3))
    return {k: {"latency_us": round(float(np.median(lat[k])), 1),
                "rows_per_s": round(1000 / (float(np.median(big[k])) / 1e6))} for k in models}


def size_kb(folder: Path) -> float:
    return round((folder / "model.onnx").stat().st_size / 1024, 1)


def with_params(spec: str, extra: str) -> str:
    """``fader(a=1)`` + ``b=2`` -> ``fader(a=1,b=2)``."""
    if not extra:
        return spec
    return f"{spec[:-1]},{extra})" if spec.endswith(")") else f"{spec}({extra})"


def one_suite(label: str, X_fit: np.ndarray, X_test: np.ndarray, root: Path, extra: str = "") -> dict[str, Any]:
    from aeguard.benchmark.cells import build_detector
    from aeguard.core.artifact import load_artifact
    from aeguard.edge.variants import export_variant

    paths: dict[str, dict[str, Path]] = {}
    fit_s = {}
    for name, spec in GRAPHS.items():
        det = build_detector(with_params(spec, extra), 0)
        start = time.perf_counter()
        det.fit(X_fit)
        fit_s[name] = round(time.perf_counter() - start, 2)
        fp32 = det.save_artifact(root / label / name.replace(" ", "_"))
        paths[name] = {"fp32": fp32, "int8": export_variant(fp32, root / label / f"{name.replace(' ', '_')}-int8",
                                                            int8=True, per_row=False)}
    out: dict[str, Any] = {"n_fit": int(len(X_fit)), "extra_params": extra, "input_shape": list(X_fit.shape[1:]),
                           "fit_s": fit_s, "results": {}, "ratios_to_base": {}}
    for variant in ("fp32", "int8"):
        models = {n: load_artifact(p[variant], device="cpu", threads=1) for n, p in paths.items()}
        res = timings(models, X_test)
        for n in res:
            res[n]["size_kb"] = size_kb(paths[n][variant])
            out["results"].setdefault(n, {})[variant] = res[n]
        base = res["base (stage A)"]
        out["ratios_to_base"][variant] = {n: {"latency": round(r["latency_us"] / base["latency_us"], 3),
                                              "throughput": round(r["rows_per_s"] / base["rows_per_s"], 3)}
                                          for n, r in res.items()}
    return out


def main() -> None:
    from aeguard.benchmark.protocol import make_split

    parser = argparse.ArgumentParser()
    parser.add_argument("--tabular", default="cardio", help="ODDS dataset name")
    parser.add_argument("--images", default="digits", help="'digits' (8x8, digit 0 one-class) or 'none'")
    parser.add_argument("--data-dir", default="/work/shared/data/odds")
    parser.add_argument("--table-train", default="epochs=10,epochs_b=2,min_steps=1",
                        help="extra parameters of the table fits (only their speed is measured: short training)")
    parser.add_argument("--image-train", default="epochs=10,epochs_b=2",
                        help="extra parameters of the image fits (only their speed is measured: short training)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp())
    report: dict[str, Any] = {"command": "scripts/fader/edge_speed.py", "onnxruntime_threads": 1,
                              "graphs": GRAPHS, "suites": {}}
    data = np.load(Path(args.data_dir) / f"{args.tabular}.npz")
    X_fit, X_test, _, _ = make_split(data["X"].astype(np.float64), data["y"].astype(int), 0)
    report["suites"][args.tabular] = one_suite(args.tabular, X_fit, X_test, root, args.table_train)
    if args.images == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        X = np.round(d.images * (255 / 16)).astype(np.uint8)[:, None]
        own = X[d.target == 0]
        report["suites"]["digits-0 (1x8x8)"] = one_suite("digits", own[:120], X, root, args.image_train)
    report["load_average"] = os.getloadavg()
    emit_report(report, args.out)


if __name__ == "__main__":
    main()
