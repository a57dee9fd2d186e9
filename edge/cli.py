"""``aeguard-edge``: score with an artifact on a device that has numpy and onnxruntime only.

``pip install aeguard[cpu]`` gives this command without torch, Lightning, scikit-learn, PyOD or BentoML. It
imports only numpy, onnxruntime, pandas (for CSV/Parquet input) and aeguard's torch-free modules (artifact,
runtime, validation, thresholds, dataset loaders); argparse keeps start-up short on small boards.

- ``aeguard-edge score ARTIFACT DATA [-o OUT.csv]``: the same CSV as ``aeguard score`` (score,label,probability).
- ``aeguard-edge watch ARTIFACT``: one ``score,label,probability`` line per stdin row, flushed at once, for
  sensor pipelines; a bad row is reported on stderr and the stream goes on.
- ``--components`` (score and watch): one more column per named component output of the graph (e.g. ``apre``'s
  error, uncertainty, shift_norm), in graph output order; integer outputs (a predicted class) as integers.
  Outputs with several values per row (a sparse ``code``, B x n_latents) are not CSV columns: they are
  left out (``aeguard-edge info`` lists them; the Python ``Artifact`` and the HTTP API return them).
- Images (image artifacts): ``score ARTIFACT images.npz|PNG_FOLDER`` and ``watch ARTIFACT --folder DIR`` (new PNGs
  polled, one ``name,score,label,probability`` line each); PNGs need Pillow (``pip install aeguard[images]``).
- ``aeguard-edge info ARTIFACT``: the manifest summary, checksums verified and the graph loaded.

Errors end with one ``error: ...`` line and exit code 1 (``AEGUARD_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import numpy as np

from aeguard.core.outputs import component_columns, component_names

HEADER = "score,label,probability"
ON_ERROR = ("skip", "nan")


class EdgeError(Exception):
    """An expected failure with a message for the user."""


def format_row(score: float, label: int, probability: float, components: Iterable[Any] = ()) -> str:
    """One output line, formatted like ``aeguard score`` (pandas ``float_format='%.9g'``); ``components`` are
    Python ints (written as integers) or floats."""
    extra = "".join(f",{v}" if isinstance(v, int) else f",{v:.9g}" for v in components)
    return f"{score:.9g},{int(label)},{probability:.9g}{extra}"


def csv_header(names: list[str]) -> str:
    """``score,label,probability`` and the component columns."""
    return ",".join([HEADER, *names])


def load(path: str | Path, device: str = "auto", threads: int | None = None,
         trusted_keys: str | None = None) -> Any:
    from aeguard.core.artifact import load_artifact

    return load_artifact(path, device=device, threads=threads, trusted_keys=trusted_keys)


def read_rows(path: Path, label_column: str | None = None) -> Any:
    """CSV/Parquet as a named frame (matched to the features by name), NPZ/MAT as an array (by width)."""
    from aeguard.core.io import load_table

    if not path.exists():
        raise EdgeError(f"data file not found: {path}")
    from aeguard.core.images import is_image_source, read_images

    if is_image_source(path):  # an image .npz or a folder of PNGs (sorted by name; Pillow needed for PNGs)
        return read_images(path)[0]
    frame, _ = load_table(path, label_column=label_column)
    if path.suffix.lower() in (".npz", ".mat"):
        return frame.to_numpy()
    return frame


def write_scores(scored: Any, out: IO[str], components: list[str] | None = None) -> None:
    """The CSV of ``aeguard score``; ``components`` names the component columns to append (default none)."""
    names = components or []
    out.write(csv_header(names) + "\n")
    extra = zip(*component_columns(scored, names)) if names else itertools.repeat(())
    out.writelines(format_row(s, lab, p, c) + "\n" for s, lab, p, c in
                   zip(scored.score.tolist(), scored.label.tolist(), scored.probability.tolist(), extra))


# --- commands -----------------------------------------------------------------------------------------


def cmd_score(args: argparse.Namespace) -> int:
    model = load(args.artifact, device=args.device, threads=args.threads, trusted_keys=args.trusted_keys)
    X = read_rows(Path(args.data), args.label_column)
    scored = model.score(X, threshold=args.threshold)
    names = component_names(model) if args.components else None
    if args.output is None or str(args.output) == "-":
        write_scores(scored, sys.stdout, names)
        sys.stdout.flush()
    else:
        with open(args.output, "w", newline="") as fh:
            write_scores(scored, fh, names)
        print(f"wrote {len(scored.score)} scores to {args.output} ({int(scored.label.sum())} flagged)",
              file=sys.stderr)
    return 0


class RowParser:
    """Turns stdin lines into feature rows: comma-separated numbers, an optional header of feature names."""

    def __init__(self, feature_names: list[str]) -> None:
        self.names = list(feature_names)
        self.order: list[int] | None = None
        self.seen_data = False

    def parse(self, lineno: int, line: str) -> np.ndarray | None:
        """A (1, d) float row, ``None`` for blank/comment/header lines; ``ValueError`` for a bad line."""
        text = line.strip()
        if not text or text.startswith("#"):
            return None
        fields = [f.strip() for f in text.split(",")]
        try:
            values = [float(f) for f in fields]
        except ValueError:
            if not self.seen_data and self.order is None:
                self.order = self._header(lineno, fields)
                return None
            bad = next(f for f in fields if not _is_float(f))
            raise ValueError(f"line {lineno}: not a number: {bad[:40]!r}") from None
        self.seen_data = True
        if len(values) != len(self.names):
            raise ValueError(f"line {lineno}: expected {len(self.names)} values, got {len(values)}")
        if self.order is not None:
            values = [values[i] for i in self.order]
        for name, value in zip(self.names, values):
            if not math.isfinite(value):
                raise ValueError(f"line {lineno}: feature {name!r} is {value} (NaN/inf cannot be scored)")
        return np.asarray([values], dtype=np.float64)

    def _header(self, lineno: int, fields: list[str]) -> list[int]:
        missing = [n for n in self.names if n not in fields]
        unknown = [f for f in fields if f not in set(self.names)]
        if missing or unknown or len(set(fields)) != len(fields):
            parts = [f"missing {missing[:10]}" if missing else "", f"unknown {unknown[:10]}" if unknown else ""]
            detail = "; ".join(p for p in parts if p) or "duplicate names"
            raise EdgeError(f"line {lineno}: header does not match the artifact's features ({detail})")
        return [fields.index(n) for n in self.names]


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def watch(model: Any, lines: Iterable[str], out: IO[str], err: IO[str], threshold: float | None = None,
          on_error: str = "skip", header: bool = False, components: bool = False) -> tuple[int, int]:
    """Score each row as it arrives; returns (rows scored, bad lines)."""
    parser = RowParser(model.feature_names)
    cut = model.threshold_for(threshold)
    names = component_names(model) if components else []
    scored = bad = 0
    if header:
        out.write(csv_header(names) + "\n")
        out.flush()
    nan_row = ",".join(["nan"] * (3 + len(names))) + "\n"
    for lineno, line in enumerate(lines, 1):
        if on_error == "nan" and (not line.strip() or line.lstrip().startswith("#")):
            out.write(nan_row)  # a blank or comment line still holds a place: output stays aligned with input
            out.flush()
            continue
        try:
            row = parser.parse(lineno, line)
            if row is None:
                continue
            result = model.score(row, threshold=cut)
        except ValueError as exc:
            bad += 1
            err.write(f"bad row: {exc}\n")
            err.flush()
            if on_error == "nan":
                out.write(nan_row)
                out.flush()
            continue
        extra = [column[0] for column in component_columns(result, names)]
        out.write(format_row(result.score[0], result.label[0], result.probability[0], extra) + "\n")
        out.flush()
        scored += 1
    return scored, bad


def watch_folder(model: Any, folder: Path, out: IO[str], err: IO[str], threshold: float | None = None,
                 interval: float = 0.5, existing: bool = False, max_images: int | None = None,
                 settle: int = 20) -> int:
    """Score each new PNG that appears in ``folder`` (polled every ``interval`` s), one CSV line
    ``name,score,label,probability`` per image in arrival (then name) order; returns the images scored.

    Bounded: one image is read and scored at a time; a file that does not decode yet (still being written) is
    retried on the next polls, then reported and skipped after ``settle`` tries. Stops after ``max_images``
    or on Ctrl-C. With ``existing`` the PNGs already in the folder are scored first.
    """
    import time

    from aeguard.core.images import ImageFileError, png_files, read_png_files

    if not folder.is_dir():
        raise EdgeError(f"{folder} is not a folder")
    if model.image_shape is None:
        raise EdgeError(f"artifact {model.detector_name!r} takes tables; watch a folder with an image artifact")
    cut = model.threshold_for(threshold)
    seen: set[str] = set() if existing else {p.name for p in png_files(folder)}
    tries: dict[str, int] = {}
    scored = 0
    out.write("name," + HEADER + "\n")
    out.flush()
    while max_images is None or scored < max_images:
        fresh = [p for p in png_files(folder) if p.name not in seen]
        for path in fresh:
            try:
                result = model.score(read_png_files([path]), threshold=cut)
            except (ImageFileError, ValueError, OSError) as exc:
                tries[path.name] = tries.get(path.name, 0) + 1
                if tries[path.name] >= settle:
                    seen.add(path.name)
                    tries.pop(path.name, None)
                    err.write(f"bad image: {exc}\n")
                    err.flush()
                continue
            seen.add(path.name)
            tries.pop(path.name, None)
            out.write(f"{path.name}," + format_row(result.score[0], result.label[0], result.probability[0]) + "\n")
            out.flush()
            scored += 1
            if max_images is not None and scored >= max_images:
                return scored
        time.sleep(interval)
    return scored


def cmd_watch(args: argparse.Namespace) -> int:
    model = load(args.artifact, device=args.device, threads=args.threads, trusted_keys=args.trusted_keys)
    if args.folder is not None:
        watch_folder(model, Path(args.folder), sys.stdout, sys.stderr, threshold=args.threshold,
                     interval=args.interval, existing=args.existing, max_images=args.max_images)
        return 0
    scored, bad = watch(model, iter(sys.stdin.readline, ""), sys.stdout, sys.stderr, threshold=args.threshold,
                        on_error=args.on_error, header=args.header, components=args.components)
    if bad:
        print(f"scored {scored} rows; {bad} bad line(s) reported above", file=sys.stderr)
    return 0


def info_lines(model: Any) -> list[tuple[str, str]]:
    """Key/value summary of a loaded artifact."""
    import onnxruntime as ort

    m = model.manifest
    graph = m["graph"]
    names = m["features"]["names"]
    size = sum(int(meta.get("bytes", 0)) for meta in m["files"].values())
    rows = [
        ("artifact", str(model.path)),
        ("detector", m["detector"]["name"]),
        ("features", f"{len(names)}: {', '.join(names[:8])}" + (" ..." if len(names) > 8 else "")),
        ("graph", f"{graph['file']} ({graph['variant']}, opset {graph['opset']}, outputs "
                  f"{', '.join(graph['outputs'])}, {size} bytes)"),
        ("threshold", f"{m['threshold']:.6g} ({json.dumps(m['threshold_rule'])})"),
        ("components", ", ".join(model.component_names) or "-"),
    ]
    if model.vector_output_names:
        rows.append(("vector outputs", ", ".join(model.vector_output_names) + " (several values per row: not in "
                                                                         "--components CSV columns)"))
    if "source" in m:
        src = m["source"]
        rows.append(("exported from", f"{src['detector']} {src['variant']} artifact, manifest sha256 "
                                      f"{src['manifest_sha256'][:16]}..."))
        check = graph.get("check")
        if check:
            rows.append(("variant check", f"max abs score diff {check['max_abs_diff']['score']:.3g}, Spearman "
                                          f"{check['spearman_score']:.6f} on {check['probe_rows']} probe rows"))
    rows += [
        ("trained on", f"{m['training']['fingerprint']['n_rows']} rows, seed {m['training']['seed']}"),
        ("runtime", f"onnxruntime {ort.__version__} on {model.device} "
                    f"(available: {', '.join(ort.get_available_providers())})"),
        ("checksums", "verified"),
    ]
    return rows


def cmd_info(args: argparse.Namespace) -> int:
    model = load(args.artifact, device=args.device, trusted_keys=args.trusted_keys)
    if args.json:
        print(json.dumps(model.manifest, indent=2))
        return 0
    rows = info_lines(model)
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


# --- entry point --------------------------------------------------------------------------------------


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("aeguard")
    except metadata.PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aeguard-edge", description="Score with an aeguard artifact "
                                     "(numpy + onnxruntime only; no torch).")
    parser.add_argument("--version", action="version", version=f"aeguard-edge {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{score,watch,info}")

    def runtime_opts(p: argparse.ArgumentParser) -> None:
        p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                       help="onnxruntime provider (auto: CUDA when really available, else CPU)")
        p.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: all)")
        trusted_opt(p)

    def trusted_opt(p: argparse.ArgumentParser) -> None:
        p.add_argument("--trusted-keys", default=None, metavar="DIR",
                       help="folder of Ed25519 *.pub keys: refuse artifacts not signed by one "
                            "(default: $AEGUARD_TRUSTED_KEYS; needs aeguard[sign])")

    def components_opt(p: argparse.ArgumentParser) -> None:
        p.add_argument("--components", action="store_true",
                       help="add a column per named component output of the graph (graph order)")

    p = sub.add_parser("score", help="score a CSV/Parquet/NPZ file; CSV out (score,label,probability)")
    p.add_argument("artifact", help="artifact folder")
    p.add_argument("data", help="CSV with header, Parquet, NPZ with X (a table or (N, C, H, W) images), or a "
                   "folder of PNGs (scored in file-name order)")
    p.add_argument("-o", "--output", default=None, help="CSV to write (default: stdout)")
    p.add_argument("--label-column", default=None, help="column with labels to drop")
    p.add_argument("--threshold", type=float, default=None, help="override the artifact's threshold")
    components_opt(p)
    runtime_opts(p)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("watch", help="score stdin rows one line at a time (sensor pipelines)")
    p.add_argument("artifact", help="artifact folder")
    p.add_argument("--threshold", type=float, default=None, help="override the artifact's threshold")
    p.add_argument("--on-error", default="skip", choices=ON_ERROR,
                   help="bad row: skip it (default) or write 'nan,nan,nan' (one nan per column; also for blank "
                   "and comment lines) to keep output lines aligned with input lines")
    p.add_argument("--header", action="store_true", help=f"write a '{HEADER}' header line first")
    p.add_argument("--folder", default=None, metavar="DIR",
                   help="watch DIR for new PNG images instead of stdin rows (image artifacts; needs Pillow); "
                        "writes name,score,label,probability per image")
    p.add_argument("--interval", type=float, default=0.5, help="--folder: seconds between polls (default 0.5)")
    p.add_argument("--existing", action="store_true", help="--folder: score the PNGs already there first")
    p.add_argument("--max-images", type=int, default=None, help="--folder: stop after N images")
    components_opt(p)
    runtime_opts(p)
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("info", help="show the manifest summary (checksums verified, graph loaded)")
    p.add_argument("artifact", help="artifact folder")
    p.add_argument("--json", action="store_true", help="print the whole manifest")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="provider to load with")
    trusted_opt(p)
    p.set_defaults(func=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point: run a command and turn failures into one readable line."""
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    except BrokenPipeError:  # the reader went away (e.g. `| head`): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 0
    except Exception as exc:  # noqa: BLE001 - the CLI boundary: one line, no traceback
        if os.environ.get("AEGUARD_DEBUG"):
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
