"""Size and speed of the baseline artifacts against PyOD in process, in one run (issue 16, item 4).

    python -m aeguard.plugins.classical.bench --data-dir DIR [--datasets cardio,mammography,http] [-o JSON]

Per dataset (ODDS ``.npz``, the benchmark's stratified 60/40 split with its 20,000-row fit cap, seed 0) and
baseline: the artifact's bytes (graph + manifest) over the bytes of the fitted PyOD model pickled (PyOD's own way
to ship a model; measured here, never stored), and ONNX rows/s (``Artifact.run``, onnxruntime CPU, 1 thread)
over PyOD's ``decision_function`` rows/s on the same scaled rows (1 BLAS thread), best of ``--repeats``, on at
most ``--rows`` test rows. For ``knn``/``lof`` the test ROC-AUC with the default reference cap against the
uncapped model. Prints a markdown table; ``-o`` writes every figure as JSON.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one thread on both sides, before numpy loads BLAS

import argparse  # noqa: E402
import json  # noqa: E402
import pickle  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

DATASETS = ("cardio", "mammography", "http")


def _best(fn: Any, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench_one(name: str, X_fit: np.ndarray, X_test: np.ndarray, y_test: np.ndarray, rows: int, repeats: int,
              workdir: Path) -> dict[str, Any]:
    from aeguard.core import registry
    from aeguard.core.artifact import load_artifact
    from aeguard.core.metrics import roc_auc
    from aeguard.plugins.pyod_baselines import TAIL_METHODS

    det = registry.create(name, random_state=0)
    start = time.perf_counter()
    det.fit(X_fit)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    path = det.save_artifact(workdir / name)
    export_s = time.perf_counter() - start
    art_bytes = sum(p.stat().st_size for p in path.iterdir())
    pickle_bytes = len(pickle.dumps(det.estimator_, protocol=pickle.HIGHEST_PROTOCOL))
    model = load_artifact(path, device="cpu", threads=1)
    X = X_test[:rows]
    Z = det._scaled(X)
    x32 = model.validate(X)
    if name in TAIL_METHODS:  # PyOD joins the batch to the fit set; time its batch call all the same
        pyod_call = lambda: det.estimator_.decision_function(Z)  # noqa: E731
    elif name == "ocsvm":  # PyOD's own path (libsvm), not the adapter's BLAS evaluation
        pyod_call = lambda: -det.estimator_.detector_.decision_function(Z)  # noqa: E731
    else:
        pyod_call = lambda: det.estimator_.decision_function(Z)  # noqa: E731
    onnx_s = _best(lambda: model.run(x32), repeats)
    pyod_s = _best(pyod_call, repeats)
    onnx_scores = model.run(x32)["score"]
    row = {"detector": name, "n_fit": len(X_fit), "n_scored": len(X), "d": X.shape[1], "fit_s": fit_s,
           "export_s": export_s, "artifact_bytes": art_bytes, "pyod_pickle_bytes": pickle_bytes,
           "size_ratio": art_bytes / pickle_bytes, "onnx_rows_s": len(X) / onnx_s, "pyod_rows_s": len(X) / pyod_s,
           "speed_ratio": pyod_s / onnx_s, "roc_auc": roc_auc(y_test[:rows], onnx_scores),
           "max_rel_diff_vs_adapter": float(np.max(np.abs(onnx_scores - det.decision_function(X))
                                                   / np.maximum(np.abs(det.decision_function(X)), 1e-12)))}
    if det.reference_ is not None:
        full = registry.create(name, random_state=0, max_ref=None).fit(X_fit)
        row["reference"] = det.reference_.manifest()
        row["roc_auc_full_test"] = roc_auc(y_test, det.decision_function(X_test))
        row["roc_auc_uncapped_full_test"] = roc_auc(y_test, full.decision_function(X_test))
    return row


def main(argv: list[str] | None = None) -> int:
    from aeguard.benchmark.protocol import make_split
    from aeguard.core.artifact import versions
    from aeguard.plugins import PYOD_BASELINES

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="folder with the ODDS .npz files")
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--detectors", default=",".join(sorted(PYOD_BASELINES)))
    p.add_argument("--rows", type=int, default=20000, help="test rows timed per dataset (the first of the split)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("-o", "--output", default=None, help="JSON file for every figure")
    args = p.parse_args(argv)
    results = []
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="aeguard-classical-bench-") as tmp:
        for ds in args.datasets.split(","):
            with np.load(Path(args.data_dir) / f"{ds}.npz") as npz:
                X, y = np.asarray(npz["X"], dtype=np.float64), np.asarray(npz["y"]).ravel().astype(int)
            X_fit, X_test, _, y_test = make_split(X, y, 0)
            for name in args.detectors.split(","):
                row = {"dataset": ds, **bench_one(name, X_fit, X_test, y_test, args.rows, args.repeats,
                                                  Path(tmp) / ds)}
                results.append(row)
                print(f"{ds:<12} {name:<8} size x{row['size_ratio']:.2f} speed x{row['speed_ratio']:.2f} "
                      f"({row['onnx_rows_s']:.0f} vs {row['pyod_rows_s']:.0f} rows/s)", flush=True)
    report = {"load_average_start": load, "load_average_end": os.getloadavg(), "threads": 1,
              "versions": versions(["numpy", "onnx", "onnxruntime", "scikit-learn", "pyod", "skl2onnx"]),
              "results": results}
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))
    return 0


def markdown(report: dict[str, Any]) -> str:
    """The docs table: one row per baseline, size and speed ratios per dataset."""
    rows = report["results"]
    sets = list(dict.fromkeys(r["dataset"] for r in rows))
    names = list(dict.fromkeys(r["detector"] for r in rows))
    by = {(r["dataset"], r["detector"]): r for r in rows}
    head = "| baseline | " + " | ".join(f"{s}: size KiB (x pickle) | {s}: ONNX rows/s (x PyOD)" for s in sets) + " |"
    lines = [head, "|---|" + "---:|---:|" * len(sets)]
    for n in names:
        cells = []
        for s in sets:
            r = by.get((s, n))
            if r is None:
                cells += ["", ""]
                continue
            cells += [f"{r['artifact_bytes'] / 1024:,.0f} (x{r['size_ratio']:.2f})",
                      f"{r['onnx_rows_s']:,.0f} (x{r['speed_ratio']:.2f})"]
        lines.append(f"| `{n}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
