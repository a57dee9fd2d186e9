"""Helper of ``edge/check.sh`` (``make edge-check``): build artifacts, score them, compare two machines.

Run as ``python -m aeguard.edge.check_score COMMAND``:

    make DIR         fit a small artifact per exportable detector, or per detector spec given with --detectors
                     (``apre(n_members=3)``: an ensemble), on the host (needs torch), export its INT8 and
                     legacy variants; write DIR/data.csv to score
    score DIR OUT    score every artifact in DIR with the aeguard-edge code (in one process, so an emulated
                     interpreter starts once): OUT/<artifact>.csv as written by ``aeguard-edge score``,
                     OUT/raw.npz (score and contrib), OUT/env.json
    compare A B      compare two ``score`` outputs; exit 1 if an FP32/legacy score or contrib differs by more
                     than --tol, or an INT8 one by more than --tol-int8, times max(1, the artifact's largest
                     |score|): absolute for scores up to 1, relative above (one float32 step of a score of
                     1.7e3 is 1.2e-4, which no absolute 1e-5 can allow)
    devices DIR      CUDA provider against CPU on every artifact in DIR: max abs difference and batch
                     throughput side by side (CPU only, said so, where CUDA is absent)

``score`` runs under the aarch64 chroot with numpy + onnxruntime + pandas only: it imports nothing from aeguard
but the torch-free edge modules and records which heavy modules were loaded (none may be).
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import re
import sys
from pathlib import Path

import numpy as np

#: modules the edge runtime must never load
HEAVY = ("torch", "lightning", "pytorch_lightning", "sklearn", "pyod", "bentoml", "onnx", "scipy")
FAST = {"epochs": 100, "epochs_per_step": 50}


def synthetic(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Correlated Gaussian inliers (fixed basis) plus 5 % scattered outliers; continuous, so no score ties."""
    basis = np.random.default_rng(1234).standard_normal((d, d))
    rng = np.random.default_rng(seed)
    n_out = n // 20
    X = np.vstack([rng.standard_normal((n - n_out, d)) @ basis * 0.5 + 3.0, rng.uniform(-6, 12, (n_out, d))])
    y = np.r_[np.zeros(n - n_out, dtype=int), np.ones(n_out, dtype=int)]
    order = rng.permutation(n)
    return X[order], y[order]


def artifact_slug(spec: str) -> str:
    """A folder name for a detector spec: ``ae+mss`` -> ``ae_mss``, ``apre(n_members=3)`` -> ``apre_n_members_3``."""
    return re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9.-]", "_", spec)).strip("_")


def cmd_make(args: argparse.Namespace) -> int:
    import pandas as pd

    from aeguard.benchmark.protocol import parse_detector_list, parse_detector_spec
    from aeguard.core import registry
    from aeguard.core.artifact import read_manifest
    from aeguard.edge.variants import export_variant

    out = Path(args.dir)
    (out / "artifacts").mkdir(parents=True, exist_ok=True)
    names = [f"sensor_{i}" for i in range(args.features)]
    X_fit, _ = synthetic(args.rows, args.features, seed=0)
    X_new, _ = synthetic(args.score_rows, args.features, seed=1)
    pd.DataFrame(X_new, columns=names).to_csv(out / "data.csv", index=False, float_format="%.17g")
    records = registry.detectors()
    wanted = (parse_detector_list(args.detectors, list(records)) if args.detectors
              else [n for n, r in records.items() if r.exports_onnx])
    for spec in wanted:
        _, name, given = parse_detector_spec(spec)
        accepted = registry.get(name).cls().get_params(deep=False)
        fast = {k: v for k, v in FAST.items() if k in accepted and k not in given}
        detector = registry.build_detector(name, {**fast, **given}, seed=0)
        detector.fit(pd.DataFrame(X_fit, columns=names))
        slug = artifact_slug(spec)
        fp32 = detector.save_artifact(out / "artifacts" / f"{slug}-fp32")
        made = ["fp32"]
        if not read_manifest(fp32)["graph"].get("int8_refusal"):  # a graph may declare that INT8 does not apply
            export_variant(fp32, out / "artifacts" / f"{slug}-int8", int8=True)
            made.append("int8")
        export_variant(fp32, out / "artifacts" / f"{slug}-legacy", legacy=True)
        print(f"made {slug}: {', '.join(made + ['legacy'])}", flush=True)
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    import onnxruntime as ort
    import pandas as pd

    from aeguard.core.artifact import load_artifact
    from aeguard.edge.cli import main as edge_main

    root, out = Path(args.dir), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    raw: dict[str, np.ndarray] = {}
    variants = {}
    for art in sorted(p for p in (root / "artifacts").iterdir() if (p / "manifest.json").exists()):
        try:  # exactly what `aeguard-edge score ARTIFACT DATA -o OUT` runs
            edge_main(["score", str(art), str(root / "data.csv"), "-o", str(out / f"{art.name}.csv"),
                       "--device", "cpu"])
        except SystemExit as exc:
            if exc.code:
                print(f"aeguard-edge score failed on {art.name} (exit {exc.code})", file=sys.stderr)
                return 1
        model = load_artifact(art, device="cpu")
        frame = pd.read_csv(root / "data.csv")
        outs = model.run(model.validate(frame))
        raw[f"{art.name}/score"] = outs["score"]
        raw[f"{art.name}/contrib"] = outs["contrib"]
        variants[art.name] = model.manifest["graph"]["variant"]
    np.savez(out / "raw.npz", **raw)
    env = {"machine": platform.machine(), "python": platform.python_version(), "onnxruntime": ort.__version__,
           "numpy": np.__version__, "providers": ort.get_available_providers(), "variants": variants,
           "heavy_modules_loaded": sorted(m for m in HEAVY if m in sys.modules)}
    (out / "env.json").write_text(json.dumps(env, indent=2) + "\n")
    print(f"scored {len(variants)} artifacts on {env['machine']} (onnxruntime {env['onnxruntime']}); heavy "
          f"modules loaded: {env['heavy_modules_loaded'] or 'none'}", flush=True)
    return 1 if env["heavy_modules_loaded"] else 0


def _csv_scores(path: Path) -> np.ndarray:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return np.array([[float(r["score"]), float(r["label"]), float(r["probability"])] for r in rows])


def cmd_compare(args: argparse.Namespace) -> int:
    from aeguard.edge.variants import max_abs_diff

    a, b = Path(args.a), Path(args.b)
    env_a, env_b = (json.loads((p / "env.json").read_text()) for p in (a, b))
    raw_a, raw_b = np.load(a / "raw.npz"), np.load(b / "raw.npz")
    print(f"{env_a['machine']} (onnxruntime {env_a['onnxruntime']}) vs {env_b['machine']} "
          f"(onnxruntime {env_b['onnxruntime']}); difference allowed: {args.tol:g} (FP32 graphs), "
          f"{args.tol_int8:g} (INT8), times max(1, largest |score|)")
    width = max([22, *(len(name) for name in env_a["variants"])])
    print(f"{'artifact':<{width}} {'variant':<12} {'score max|d|':>13} {'relative':>9} {'contrib max|d|':>15} "
          f"{'csv max|d|':>11} {'labels differ':>13}  result")
    failed, results = [], {}
    for name, variant in sorted(env_a["variants"].items()):
        if name not in env_b["variants"]:
            failed.append(name)
            print(f"{name:<{width}} missing on {env_b['machine']}")
            continue
        ds = float(np.max(np.abs(raw_a[f"{name}/score"].astype(np.float64) - raw_b[f"{name}/score"])))
        dc = max_abs_diff(raw_a[f"{name}/contrib"], raw_b[f"{name}/contrib"])  # NaN contrib (no split) matches
        ca, cb = _csv_scores(a / f"{name}.csv"), _csv_scores(b / f"{name}.csv")
        dcsv = float(np.max(np.abs(ca[:, 0] - cb[:, 0])))
        flips = int(np.sum(ca[:, 1] != cb[:, 1]))
        magnitude = float(np.max(np.abs(raw_a[f"{name}/score"])))
        tol = (args.tol_int8 if variant.startswith("int8") else args.tol) * max(1.0, magnitude)
        ok = max(ds, dc, dcsv) <= tol
        verdict = "ok" if ok else "FAIL"
        if not ok:
            failed.append(name)
        rel = ds / max(magnitude, 1e-12)
        results[name] = {"variant": variant, "score": ds, "score_rel": rel, "contrib": dc, "csv": dcsv,
                         "label_flips": flips, "tolerance": tol, "result": verdict}
        print(f"{name:<{width}} {variant:<12} {ds:>13.3g} {rel:>9.2g} {dc:>15.3g} {dcsv:>11.3g} {flips:>13d}  "
              f"{verdict}")
    if args.json:
        Path(args.json).write_text(json.dumps({"a": env_a, "b": env_b, "tol": args.tol, "results": results},
                                              indent=2) + "\n")
    if failed:
        print(f"FAILED: {', '.join(failed)}")
        return 1
    print("parity ok")
    return 0


def _throughput(model, X: np.ndarray, repeats: int) -> float:
    """Rows per second of ``session.run`` on the whole batch (median of ``repeats``)."""
    import time

    feed = {model.input_name: X}
    model.session.run(None, feed)  # warm-up (CUDA: kernels, transfers)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.session.run(None, feed)
        times.append(time.perf_counter() - start)
    return len(X) / float(np.median(times))


def cmd_devices(args: argparse.Namespace) -> int:
    import onnxruntime as ort

    from aeguard.core.artifact import load_artifact

    root = Path(args.dir)
    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    rng = np.random.default_rng(0)
    results = {}
    for art in sorted(p for p in (root / "artifacts").iterdir() if (p / "manifest.json").exists()):
        cpu_model = load_artifact(art, device="cpu")
        pre = cpu_model.manifest.get("preprocessing", {})
        d = cpu_model.n_features_in_
        X = (np.asarray(pre.get("mean", np.zeros(d))) + np.asarray(pre.get("scale", np.ones(d)))
             * rng.standard_normal((args.rows, d))).astype(np.float32)
        row = {"rows": args.rows, "cpu_rows_per_s": _throughput(cpu_model, X, args.repeats)}
        if cuda:
            gpu_model = load_artifact(art, device="cuda")  # raises if CUDA cannot really be used
            a, b = cpu_model.run(X), gpu_model.run(X)
            row.update(device=gpu_model.device, cuda_rows_per_s=_throughput(gpu_model, X, args.repeats),
                       max_abs_diff_score=float(np.max(np.abs(a["score"].astype(np.float64) - b["score"]))),
                       max_abs_diff_contrib=float(np.max(np.abs(a["contrib"].astype(np.float64) - b["contrib"]))))
            row["speedup"] = row["cuda_rows_per_s"] / row["cpu_rows_per_s"]
        results[art.name] = row
        print(art.name, json.dumps(row), flush=True)
    if not cuda:
        print(f"no CUDA provider in this onnxruntime build ({ort.get_available_providers()}): CPU figures only")
    if args.json:
        Path(args.json).write_text(json.dumps({"cuda": cuda, "onnxruntime": ort.__version__,
                                               "results": results}, indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aeguard.edge.check_score", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("make")
    p.add_argument("dir")
    p.add_argument("--detectors", default=None,
                   help="comma-separated names or specs, e.g. 'ae,apre(n_members=3)' (default: every exportable one)")
    p.add_argument("--rows", type=int, default=2000)
    p.add_argument("--score-rows", type=int, default=1000)
    p.add_argument("--features", type=int, default=8)
    p.set_defaults(func=cmd_make)
    p = sub.add_parser("score")
    p.add_argument("dir")
    p.add_argument("out")
    p.set_defaults(func=cmd_score)
    p = sub.add_parser("compare")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--tol", type=float, default=1e-5)
    p.add_argument("--tol-int8", type=float, default=1e-3)
    p.add_argument("--json", default=None)
    p.set_defaults(func=cmd_compare)
    p = sub.add_parser("devices")
    p.add_argument("dir")
    p.add_argument("--rows", type=int, default=65536)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--json", default=None)
    p.set_defaults(func=cmd_devices)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
