"""``aeguard export`` (INT8 / opset-17 variants of an artifact) and ``aeguard bench-edge`` (their evaluation).

Nothing heavy is imported at module load: ``export`` needs onnx + onnxruntime only, ``bench-edge`` fits
detectors and so imports torch inside the command.
"""

from __future__ import annotations

import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


def export_cmd(
    artifact: Path = typer.Argument(..., help="Source artifact folder."),
    output: Path = typer.Option(..., "-o", "--output", help="Artifact folder to write."),
    int8: bool = typer.Option(False, "--int8", help="INT8 dynamic quantization (onnxruntime)."),
    legacy: bool = typer.Option(False, "--legacy", help="Opset-17 graph for older edge runtimes."),
    per_tensor: bool = typer.Option(False, "--per-tensor", help="INT8: one weight scale per tensor, not per "
                                    "output channel (smaller, less accurate)."),
) -> None:
    """Write ARTIFACT's graph as a new artifact: --int8 (quantized), --legacy (opset 17), or both."""
    from aeguard.edge.variants import export_variant

    path = export_variant(artifact, output, int8=int8, legacy=legacy, per_channel=not per_tensor)
    manifest = json.loads((path / "manifest.json").read_text())
    graph = manifest["graph"]
    check = graph["check"]
    src_bytes = (artifact / manifest["graph"]["file"]).stat().st_size
    new_bytes = manifest["files"][graph["file"]]["bytes"]
    console.print(f"wrote {path} ({graph['variant']}, opset {graph['opset']}, {new_bytes} bytes; source "
                  f"{src_bytes} bytes); on {check['probe_rows']} probe rows: max abs score difference "
                  f"{check['max_abs_diff']['score']:.3g}, Spearman {check['spearman_score']:.6f}")
    if int8:
        err_console.print("note: the FP32 threshold and calibration are kept (an artifact has no fit data); "
                          "INT8 scores differ slightly, so labels near the threshold can flip")


# --- bench-edge ---------------------------------------------------------------------------------------


def median_us(fn: Any, repeats: int) -> float:
    """Median wall time of ``repeats`` calls of ``fn``, in microseconds (also used by the scripts' speed runs)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - start)
    return statistics.median(times) / 1e3


def emit_report(report: dict[str, Any], out: str | Path | None) -> None:
    """Print a speed run's JSON report and, with ``out``, write it there too (the scripts' speed runs)."""
    text = json.dumps(report, indent=2)
    print(text)
    if out:
        Path(out).write_text(text + "\n")


def measure_latency(models: dict[str, Any], X: Any, single_repeats: int = 300,
                    batch_repeats: int = 30, batch_rows: int = 1000) -> dict[str, dict[str, float]]:
    """Median latency (microseconds) of 1 row and ``batch_rows`` rows per variant, interleaved round by round
    so every variant sees the same machine load; graph only (``session.run``) and end to end (``score``)."""
    import numpy as np

    reps = int(np.ceil(batch_rows / len(X)))
    batch = np.ascontiguousarray(np.tile(X, (reps, 1))[:batch_rows], dtype=np.float32)
    one = batch[:1]
    out: dict[str, dict[str, list[float]]] = {k: {} for k in models}
    plans = [("graph_1_row_us", lambda m: (lambda: m.session.run(None, {m.input_name: one})), single_repeats),
             ("graph_1000_rows_us", lambda m: (lambda: m.session.run(None, {m.input_name: batch})), batch_repeats),
             ("score_1_row_us", lambda m: (lambda: m.score(one)), single_repeats),
             ("score_1000_rows_us", lambda m: (lambda: m.score(batch)), batch_repeats)]
    for key, make, repeats in plans:
        for model in models.values():  # warm-up
            make(model)()
        rounds = 10
        for _ in range(rounds):
            for name, model in models.items():
                out[name].setdefault(key, []).append(median_us(make(model), max(1, repeats // rounds)))
    return {name: {k: float(np.median(v)) for k, v in d.items()} for name, d in out.items()}


def _graph_bytes(path: Path) -> int:
    manifest = json.loads((path / "manifest.json").read_text())
    return int(manifest["files"][manifest["graph"]["file"]]["bytes"])


def _weight_bytes(path: Path) -> int:
    import onnx

    model = onnx.load(str(path / "model.onnx"))
    return int(sum(len(t.raw_data) or onnx.numpy_helper.to_array(t).nbytes for t in model.graph.initializer))


def _score(model: Any, X: Any) -> Any:
    """``model.score`` in 4,096-row chunks: kNN graphs hold a (rows x reference set) matrix per chunk."""
    import numpy as np

    from aeguard.core import thresholds as th
    from aeguard.core.artifact import ScoredBatch

    score = model.run(model.validate(X), batch_rows=4096)["score"].astype(np.float64)
    return ScoredBatch(score=score, label=th.labels(score, model.threshold_),
                       probability=th.probability(score, model.calibration_), threshold=model.threshold_)


def int8_versus_fp32(detector: Any, X_test: Any, y_test: Any, folder: Path,
                     agree_on: tuple[str, ...] = ()) -> dict[str, Any]:
    """Save a fitted ``detector``'s FP32 artifact and its INT8 variant under ``folder`` and score ``X_test`` with
    both through onnxruntime: ROC-AUC of each and their difference, the share of equal labels (FP32 threshold) and
    of equal entries of each component named in ``agree_on`` that the detector outputs (a mask, a class), and the
    INT8 / FP32 graph size. What the INT8 comparison scripts of one detector report (``bench-edge`` compares every
    variant, on tables)."""
    import numpy as np

    from aeguard.core.artifact import load_artifact
    from aeguard.core.metrics import roc_auc
    from aeguard.edge.variants import export_variant

    fp32 = detector.save_artifact(folder / "fp32")
    int8 = export_variant(fp32, folder / "int8", int8=True)
    a, b = load_artifact(fp32).score(X_test), load_artifact(int8).score(X_test)
    auc32, auc8 = roc_auc(y_test, a.score), roc_auc(y_test, b.score)
    return {"roc_auc_fp32": round(auc32, 4), "roc_auc_int8": round(auc8, 4), "delta": round(auc8 - auc32, 4),
            "label_agreement": round(float(np.mean(a.label == b.label)), 4),
            **{f"{k}_agreement": round(float(np.mean(np.asarray(a.components[k]) == np.asarray(b.components[k]))), 4)
               for k in agree_on if k in a.components},
            "size_ratio": round(_graph_bytes(int8) / _graph_bytes(fp32), 3)}


#: the variants ``bench-edge`` compares with FP32 (``aeguard export`` options); ``int8_per_batch`` is what plain
#: ``quantize_dynamic`` gives (one activation scale per batch, scored here in 4,096-row chunks)
BENCH_VARIANTS: dict[str, dict[str, Any]] = {
    "legacy": {"legacy": True},
    "int8": {"int8": True},
    "int8_per_tensor": {"int8": True, "per_channel": False},
    "int8_per_batch": {"int8": True, "per_row": False},
}


def bench_one(spec: str, dataset: str, seed: int, data_dir: str | None, workdir: Path, threads: int,
              latency: bool, source: str | None = None) -> dict[str, Any]:
    """Fit ``spec`` on one protocol split, export every variant and compare it with FP32 on the test split
    (``source``: what the loader reads, e.g. an .npz path of a folder suite; default the ODDS name)."""
    import numpy as np

    from aeguard.benchmark.cells import build_detector, load_labelled
    from aeguard.benchmark.protocol import make_split
    from aeguard.core import thresholds as th
    from aeguard.core.artifact import load_artifact
    from aeguard.core.metrics import average_precision, roc_auc
    from aeguard.edge.variants import export_variant, spearman

    X, y = load_labelled(source or dataset, data_dir)
    X_fit, X_test, _, y_test = make_split(X, y, seed)
    detector = build_detector(spec, seed)
    start = time.perf_counter()
    detector.fit(X_fit)
    fit_s = time.perf_counter() - start
    base = workdir / f"{dataset}-{seed}"
    paths = {"fp32": detector.save_artifact(base / "fp32")}
    for name, options in BENCH_VARIANTS.items():
        paths[name] = export_variant(paths["fp32"], base / name, **options)
    models = {k: load_artifact(p, device="cpu", threads=threads) for k, p in paths.items()}
    test = {k: _score(m, X_test) for k, m in models.items()}
    fp = test["fp32"]
    # the threshold rule re-applied to graph scores of the fit split, per variant (for MSS-style detectors the
    # manifest threshold uses fit-set targets instead, so compare these with each other only)
    rule = models["fp32"].manifest["threshold_rule"]
    contamination = rule.get("contamination", models["fp32"].manifest.get("contamination", 0.1))
    refit = {k: th.threshold_from_scores(_score(models[k], X_fit).score, contamination)
             for k in ("fp32", "int8", "int8_per_tensor")}
    row: dict[str, Any] = {
        "detector": spec, "dataset": dataset, "seed": seed, "n_fit": len(X_fit), "n_test": len(X_test),
        "d": int(X.shape[1]), "fit_s": round(fit_s, 3),
        "auc": {k: roc_auc(y_test, t.score) for k, t in test.items()},
        "ap": {k: average_precision(y_test, t.score) for k, t in test.items()},
        "spearman": {k: spearman(fp.score, t.score) for k, t in test.items() if k != "fp32"},
        "max_abs_diff": {k: float(np.max(np.abs(fp.score - t.score))) for k, t in test.items() if k != "fp32"},
        # labels with the FP32 threshold kept in the manifest (what an exported artifact does)
        "label_agreement": {k: float(np.mean(fp.label == t.label)) for k, t in test.items() if k != "fp32"},
        "flagged": {k: int(t.label.sum()) for k, t in test.items()},
        "threshold_fp32": float(models["fp32"].threshold_),
        "threshold_refit": {k: float(v) for k, v in refit.items()},
        "threshold_shift_rel": {k: (refit[k] - refit["fp32"]) / abs(refit["fp32"] or 1.0)
                                for k in ("int8", "int8_per_tensor")},
        "bytes": {k: _graph_bytes(p) for k, p in paths.items()},
        "weight_bytes": {k: _weight_bytes(p) for k, p in paths.items()},
    }
    row["auc_delta"] = {k: row["auc"][k] - row["auc"]["fp32"] for k in test if k != "fp32"}
    if latency:
        row["latency"] = measure_latency(models, X_test)
    return row


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per detector and variant: ROC-AUC change against FP32 (mean, extremes), agreement, size and latency
    ratios (medians over datasets)."""
    import numpy as np

    out: dict[str, Any] = {}
    for spec in dict.fromkeys(r["detector"] for r in rows):
        rs = [r for r in rows if r["detector"] == spec]
        entry: dict[str, Any] = {"datasets": len({r["dataset"] for r in rs}), "runs": len(rs),
                                 "auc_fp32_mean": float(np.mean([r["auc"]["fp32"] for r in rs]))}
        lat = [r["latency"] for r in rs if "latency" in r]
        for k in rs[0]["auc_delta"]:
            delta = np.array([r["auc_delta"][k] for r in rs])
            v = {"auc_mean": float(np.mean([r["auc"][k] for r in rs])), "auc_delta_mean": float(delta.mean()),
                 "auc_delta_min": float(delta.min()), "auc_delta_max": float(delta.max()),
                 "auc_delta_abs_max": float(np.abs(delta).max()),
                 "runs_abs_delta_over_0.01": int((np.abs(delta) > 0.01).sum()),
                 "spearman_median": float(np.median([r["spearman"][k] for r in rs])),
                 "label_agreement_mean": float(np.mean([r["label_agreement"][k] for r in rs])),
                 "max_abs_diff_max": float(max(r["max_abs_diff"][k] for r in rs)),
                 "bytes_ratio_median": float(np.median([r["bytes"][k] / r["bytes"]["fp32"] for r in rs])),
                 "bytes_ratio_to_legacy_median": float(np.median([r["bytes"][k] / r["bytes"]["legacy"]
                                                                  for r in rs]))}
            for key in (lat[0]["fp32"] if lat else {}):
                v[f"{key.removesuffix('_us')}_ratio_median"] = float(
                    np.median([m[k][key] / m["fp32"][key] for m in lat]))
            entry[k] = v
        out[spec] = entry
    return out


def bench_edge(
    detectors: str = typer.Option("onnx", "--detectors",
                                  help="Comma-separated specs, or 'onnx' for every detector that exports ONNX."),
    suite: str = typer.Option("odds", "--suite", help="'odds' or a folder of .npz files (X, y with 1 = outlier), "
                              "as in `aeguard benchmark --suite`."),
    datasets: str = typer.Option(None, "--datasets", help="Comma-separated dataset names (default: all present)."),
    seeds: int = typer.Option(1, "--seeds", help="Seeds per dataset (0..N-1)."),
    data_dir: Path = typer.Option(None, "--data-dir", help="ODDS folder (default: AEGUARD_DATA or the cache)."),
    threads: int = typer.Option(1, "--threads", help="onnxruntime intra-op threads for scoring and latency."),
    output: Path = typer.Option(Path("docs/benchmarks/edge.json"), "-o", "--output", help="JSON results file."),
) -> None:
    """INT8 vs FP32 on the benchmark protocol split (ODDS or a folder suite): ROC-AUC change, model sizes, 1-row
    and 1,000-row latency."""
    from aeguard.benchmark.protocol import parse_detector_list
    from aeguard.benchmark.runner import resolve_suite
    from aeguard.core import registry

    exportable = [n for n, r in registry.detectors().items() if r.exports_onnx]
    specs = exportable if detectors == "onnx" else parse_detector_list(detectors, list(registry.detectors()))
    resolved = resolve_suite(suite, data_dir, [d.strip() for d in datasets.split(",")] if datasets else None)
    entries = sorted(resolved.datasets, key=lambda e: e.n * e.d)
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="aeguard-bench-edge-") as tmp:
        for spec in specs:
            for entry in entries:
                name = entry.name
                for seed in range(seeds):
                    try:
                        row = bench_one(spec, name, seed, str(resolved.data_dir) if resolved.data_dir else None,
                                        Path(tmp) / spec, threads, latency=seed == 0, source=entry.source)
                    except Exception as exc:  # noqa: BLE001 - one failed cell must not lose the others
                        row = {"detector": spec, "dataset": name, "seed": seed, "error": f"{type(exc).__name__}: "
                               f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"}
                        err_console.print(f"{spec} {name} seed {seed}: {row['error']}", highlight=False)
                    else:
                        auc = row["auc"]
                        err_console.print(f"{spec:>8} {name:<12} seed {seed}: ROC-AUC fp32 {auc['fp32']:.4f} int8 "
                                          f"{auc['int8']:.4f} per-tensor {auc['int8_per_tensor']:.4f} "
                                          f"per-batch {auc['int8_per_batch']:.4f}", highlight=False)
                    rows.append(row)
    ok = [r for r in rows if "error" not in r]
    result = {"command": "aeguard bench-edge", "suite": suite,
              "protocol": "benchmark.protocol.make_split (60/40 stratified, fit cap 20,000); exported variants keep "
              "the FP32 threshold", "variants": BENCH_VARIANTS,
              "seeds": seeds, "threads": threads,
              "machine": {"platform": platform.platform(), "processor": _cpu_model(),
                          "python": platform.python_version()},
              "versions": _versions(), "wall_s": round(time.perf_counter() - started, 1),
              "summary": summarize(ok) if ok else {}, "rows": rows}
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    table = Table("detector", "variant", "datasets", "ROC-AUC", "mean Δ", "max |Δ|", "labels agree",
                  "size / fp32", "1 row / fp32", "1000 rows / fp32")
    for spec, entry in result["summary"].items():
        table.add_row(spec, "fp32", str(entry["datasets"]), f"{entry['auc_fp32_mean']:.4f}", "", "", "", "", "", "")
        for k, v in entry.items():
            if isinstance(v, dict):
                table.add_row("", k, "", f"{v['auc_mean']:.4f}", f"{v['auc_delta_mean']:+.4f}",
                              f"{v['auc_delta_abs_max']:.4f}", f"{v['label_agreement_mean']:.4f}",
                              f"{v['bytes_ratio_median']:.2f}",
                              f"{v.get('graph_1_row_ratio_median', float('nan')):.2f}",
                              f"{v.get('graph_1000_rows_ratio_median', float('nan')):.2f}")
    Console(width=max(console.width, 150)).print(table)
    console.print(f"wrote {output} ({len(ok)} runs, {len(rows) - len(ok)} failed, {result['wall_s']} s)")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions() -> dict[str, str]:
    from aeguard.core.artifact import versions

    return versions(("aeguard", "onnxruntime", "onnx", "torch", "numpy"))


def register(app: typer.Typer) -> None:
    app.command("export")(export_cmd)
    app.command("bench-edge")(bench_edge)
