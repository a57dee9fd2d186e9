"""The ``aeguard`` command line.

Every error ends the command with exit code 1 and one readable line on stderr (no traceback); set
``AEGUARD_DEBUG=1`` to see the traceback. Commands that train import torch; ``score`` and ``info`` do not.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="aeguard: autoencoder anomaly detection with ONNX artifacts.")
console = Console()
err_console = Console(stderr=True)

#: entry-point group of ``register(app)`` functions that add commands (each module imports no torch at load
#: time); aeguard's own parts (datasets, benchmark, serving, edge) register through it like any other package.
COMMANDS_GROUP = "aeguard.commands"


class CLIError(Exception):
    """An expected failure with a message for the user."""


def parse_params(items: list[str] | None) -> dict[str, str]:
    """``key=value`` pairs as text; the detector's parameter specs type and check them
    (:func:`aeguard.core.registry.build_detector`)."""
    params: dict[str, str] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise CLIError(f"--param expects key=value, got {item!r}")
        if key.strip() in params:
            raise CLIError(f"--param {key.strip()} given twice")
        params[key.strip()] = raw
    return params


def read_data(path: Path, label_column: str | None = None) -> tuple[Any, Any]:
    """Features and optional labels from CSV/Parquet (named columns) or NPZ/MAT (unnamed arrays)."""
    from aeguard.datasets.loaders import load_table

    if not path.exists():
        raise CLIError(f"data file not found: {path}")
    from aeguard.core.images import is_image_source, read_images

    if is_image_source(path):  # a PNG folder or an .npz of (N, C, H, W) / (N, H, W) images (core/images.py)
        return read_images(path)[:2]
    frame, y = load_table(path, label_column=label_column)
    if path.suffix.lower() in (".npz", ".mat"):
        return frame.to_numpy(), y
    return frame, y


def build_detector(name: str, params: dict[str, Any], seed: int | None, contamination: Any) -> Any:
    """The registry's one builder, with a progress bar when stderr is a terminal (and not CI)."""
    from aeguard.core import registry

    return registry.build_detector(name, params, seed=seed, contamination=contamination,
                                   verbose=sys.stderr.isatty() and not os.environ.get("CI"))


def _contamination(value: str | None) -> Any:
    if value is None:
        return None
    from aeguard.core.thresholds import check_contamination

    return check_contamination(value if value == "auto" else _float(value, "--contamination"))


def _float(value: str, flag: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise CLIError(f"{flag} must be a number, got {value!r}") from None


@app.command("detectors")
def detectors_cmd(as_json: bool = typer.Option(False, "--json", help="Print JSON records.")) -> None:
    """List registered detectors (built-in and third-party plugins)."""
    from aeguard.core import registry

    records = registry.detectors()
    if as_json:
        print(json.dumps([r.to_dict() for r in records.values()], indent=2))
        return
    table = Table("name", "plugin", "modalities", "labels", "onnx", "mss", "description")
    for r in records.values():
        table.add_row(r.name, r.plugin, ",".join(r.modalities), "optional" if r.uses_labels else "no",
                      "yes" if r.exports_onnx else "no", "yes" if r.mss_compatible else "no", r.description)
    console.print(table)


@app.command("fit")
def fit_cmd(
    name: str = typer.Argument(..., help="Detector name (see `aeguard detectors`)."),
    data: Path = typer.Argument(..., help="CSV with header, Parquet, or NPZ with X (and optional y)."),
    output: Path = typer.Option(..., "-o", "--output", help="Artifact folder to write."),
    param: list[str] = typer.Option(None, "--param", help="Hyperparameter key=value (repeatable)."),
    seed: int = typer.Option(None, "--seed", help="Random seed."),
    contamination: str = typer.Option(None, "--contamination", help="Float in [0, 0.5], 0 or 'auto'."),
    label_column: str = typer.Option(None, "--label-column", help="Column with outlier labels to drop."),
    variant: str = typer.Option("fp32", "--variant", help="Export variant: fp32 or legacy (opset 17)."),
    pixel_range: str = typer.Option(None, "--pixel-range", help="Images: LOW,HIGH of the pixel values "
                                    "(default uint8 0,255; floats 0,1)."),
) -> None:
    """Fit a detector on DATA (a table, an image .npz or a folder of PNGs) and write an ONNX artifact."""
    from aeguard.core import registry

    record = registry.get(name)
    if not record.exports_onnx:
        raise CLIError(f"{name} does not export to ONNX, so it cannot be written as an artifact; "
                       "use it from Python or in `aeguard benchmark`")
    rate = _contamination(contamination)
    X, y = read_data(data, label_column)
    detector = build_detector(name, parse_params(param), seed, rate)
    with console.status(f"fitting {name} on {len(X)} rows") if not getattr(detector, "verbose", False) else _null():
        detector.fit(X, pixel_range=pixel_range)
    path = detector.save_artifact(output, variant=variant)
    msg = f"wrote {path} (threshold {detector.threshold_:.6g}, {int(detector.labels_.sum())} fit rows flagged)"
    if y is not None and len(set(y.tolist())) == 2:
        from aeguard.core.metrics import roc_auc

        msg += f"; fit-set ROC-AUC {roc_auc(y, detector.decision_scores_):.4f}"
    console.print(msg)


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


@app.command("score")
def score_cmd(
    artifact: Path = typer.Argument(..., help="Artifact folder."),
    data: Path = typer.Argument(..., help="CSV with header, Parquet, or NPZ with X."),
    output: Path = typer.Option(None, "-o", "--output", help="CSV to write (default: stdout)."),
    label_column: str = typer.Option(None, "--label-column", help="Column with labels to drop."),
    threshold: float = typer.Option(None, "--threshold", help="Override the artifact's threshold."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    trusted_keys: Path = typer.Option(None, "--trusted-keys", envvar="AEGUARD_TRUSTED_KEYS",
                                      help="Folder of Ed25519 *.pub keys: refuse artifacts not signed by one."),
) -> None:
    """Score DATA with an artifact: CSV with columns score,label,probability in input order."""
    from aeguard.core.artifact import load_artifact

    model = load_artifact(artifact, device=device, trusted_keys=trusted_keys)
    X, _ = read_data(data, label_column)
    frame = model.score(X, threshold=threshold).to_frame()
    if output is None:
        frame.to_csv(sys.stdout, index=False, float_format="%.9g")
    else:
        frame.to_csv(output, index=False, float_format="%.9g")
        err_console.print(f"wrote {len(frame)} scores to {output} ({int(frame['label'].sum())} flagged)")


@app.command("info")
def info_cmd(
    artifact: Path = typer.Argument(..., help="Artifact folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole manifest."),
) -> None:
    """Show an artifact's manifest (checksums verified)."""
    from aeguard.core.artifact import read_manifest

    manifest = read_manifest(artifact, verify=True)
    if as_json:
        print(json.dumps(manifest, indent=2))
        return
    det = manifest["detector"]
    table = Table(show_header=False)
    rows = [
        ("detector", det["name"]),
        ("params", json.dumps(det["params"])),
        ("features", f"{manifest['features']['n_features']}: {', '.join(manifest['features']['names'][:8])}"
         + (" ..." if manifest["features"]["n_features"] > 8 else "")),
        ("graph", f"{manifest['graph']['file']} ({manifest['graph']['variant']}, opset {manifest['graph']['opset']},"
                  f" outputs {', '.join(manifest['graph']['outputs'])})"),
        ("threshold", f"{manifest['threshold']:.6g} ({json.dumps(manifest['threshold_rule'])})"),
        ("trained on", f"{manifest['training']['fingerprint']['n_rows']} rows, seed {manifest['training']['seed']}"),
        ("versions", ", ".join(f"{k} {v}" for k, v in manifest["versions"].items())),
        ("checksums", "verified"),
    ]
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)


def _register_commands() -> None:
    """Commands of every installed part, found through the ``aeguard.commands`` entry points."""
    from importlib.metadata import entry_points

    for ep in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        try:
            register = ep.load()
        except ModuleNotFoundError as exc:
            if exc.name and ep.value.startswith(exc.name):
                continue  # an optional part that is not in this install
            raise
        register(app)


_register_commands()


def main() -> None:
    """Entry point: run the app and turn failures into one readable line."""
    try:
        app()
    except SystemExit:
        raise
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the CLI boundary: one line, no traceback
        if os.environ.get("AEGUARD_DEBUG"):
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {message}", file=sys.stderr)  # plain print: rich would wrap the one line
        sys.exit(1)


if __name__ == "__main__":
    main()
