"""The ``aeguard`` command line.

Every error ends the command with exit code 1 and one readable line on stderr (no traceback); set
``AEGUARD_DEBUG=1`` to see the traceback. Commands that train import torch; ``score`` and ``info`` do not.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
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


def version() -> str:
    """The installed aeguard version."""
    from importlib import metadata

    try:
        return metadata.version("aeguard")
    except metadata.PackageNotFoundError:
        return "unknown"


def _print_version(value: bool) -> None:
    if value:
        print(f"aeguard {version()}")
        raise typer.Exit()


@app.callback()
def _root(show_version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                            help="Print the aeguard version and exit.")) -> None:
    """aeguard: autoencoder anomaly detection with ONNX artifacts."""


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
    from aeguard.core.io import load_table

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


def detectors_markdown(records: list[Any]) -> str:
    """The Markdown detector table of the README (generated, so it cannot drift from the registry)."""
    lines = ["| name | modalities | exports ONNX | classes | mean-shift scoring | description |",
             "|---|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| `{r.name}` | {', '.join(r.modalities)} | {'yes' if r.exports_onnx else 'no'} | "
                     f"{'yes' if getattr(r, 'accepts_classes', False) else 'no'} | "
                     f"{'yes' if r.mss_compatible else 'no'} | {r.description} |")
    return "\n".join(lines) + "\n"


@app.command("detectors")
def detectors_cmd(
    as_json: bool = typer.Option(False, "--json", help="Print JSON records."),
    markdown: bool = typer.Option(False, "--markdown", help="Print a Markdown table (the README's)."),
    plugin: str = typer.Option(None, "--plugin", help="Only the detectors of this plugin (e.g. builtin).",
                               show_default="all"),
) -> None:
    """List registered detectors (built-in and third-party plugins)."""
    from aeguard.core import registry

    records = {n: r for n, r in registry.detectors().items() if plugin is None or r.plugin == plugin}
    if markdown:
        print(detectors_markdown(list(records.values())), end="")
        return
    if as_json:
        print(json.dumps([r.to_dict() for r in records.values()], indent=2))
        return
    table = Table("name", "plugin", "modalities", "labels", "onnx", "mss", "description")
    for r in records.values():
        table.add_row(r.name, r.plugin, ",".join(r.modalities), "optional" if r.uses_labels else "no",
                      "yes" if r.exports_onnx else "no", "yes" if r.mss_compatible else "no", r.description)
    console.print(table)


def warn(message: str) -> None:
    """One ``warning: ...`` line on stderr (plain print: rich would wrap it)."""
    print(f"warning: {message}", file=sys.stderr)


def _split_columns(frame: Any, columns: list[str], what: str) -> tuple[Any, Any]:
    """``(features without columns, the columns)``; unknown names are an error listing the file's columns."""
    if not columns:
        return frame, None
    if not hasattr(frame, "columns"):
        raise CLIError(f"{what} needs named columns (CSV or Parquet), not an array file")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise CLIError(f"{what}: column(s) {missing} not in the file (columns: {', '.join(map(str, frame.columns))})")
    return frame.drop(columns=columns), frame[columns]


def outlier_labels(y: Any, outlier_value: str | None) -> tuple[Any, str | None]:
    """0/1 labels for the report, or ``(None, why not)``: labels never reach the detector.

    Labels that are already 0/1 (or booleans) are used as they are; any other values need ``outlier_value``
    (compared as numbers when both sides are numbers, else as text).
    """
    import numpy as np

    if y is None:
        return None, None
    values = np.asarray(y)
    if outlier_value is not None:
        from aeguard.core.params import parse_literal

        wanted = parse_literal(outlier_value)
        numeric = values.dtype.kind in "biuf" and isinstance(wanted, (int, float)) and not isinstance(wanted, bool)
        hit = values == wanted if numeric else values.astype(str) == str(outlier_value)
        if not hit.any():
            shown = sorted({str(v) for v in values.tolist()})[:10]
            raise CLIError(f"--outlier-value {outlier_value!r} matches no label (values: {', '.join(shown)})")
        y01 = hit.astype(np.int64)
    else:
        distinct = set(values.tolist())
        if not distinct <= {0, 1}:
            shown = ", ".join(sorted(map(repr, distinct))[:10])
            return None, (f"labels are not 0/1 (values: {shown}); pass --outlier-value VALUE to say which value "
                          "marks an outlier; ROC-AUC skipped")
        y01 = values.astype(np.int64)
    if len(set(y01.tolist())) != 2:
        return None, "the labels hold one class only; ROC-AUC skipped"
    return y01, None


def _ranking_summary(y01: Any, scores: Any) -> str:
    from aeguard.core.metrics import average_precision, roc_auc

    return f"ROC-AUC {roc_auc(y01, scores):.4f}, AP {average_precision(y01, scores):.4f}"


@app.command("fit")
def fit_cmd(
    name: str = typer.Argument(..., help="Detector name (see `aeguard detectors`)."),
    data: Path = typer.Argument(..., help="CSV with header, Parquet, or NPZ with X (and optional y)."),
    output: Path = typer.Option(..., "-o", "--output", help="Artifact folder to write."),
    param: list[str] = typer.Option(None, "--param", help="Hyperparameter key=value (repeatable); typed and "
                                    "checked by the detector (true/false/yes/no/on/off/none, numbers)."),
    seed: int = typer.Option(None, "--seed", help="Random seed.", show_default="drawn and recorded"),
    contamination: str = typer.Option(None, "--contamination", help="Float in [0, 0.5], 0 or 'auto'.",
                                      show_default="the detector's, 0.1"),
    label_column: str = typer.Option(None, "--label-column", help="Column with outlier labels: dropped from the "
                                     "features, used only for the fit-set ROC-AUC/AP line."),
    outlier_value: str = typer.Option(None, "--outlier-value", help="Label value that marks an outlier (for "
                                      "labels other than 0/1, e.g. 'anomaly' or 2)."),
    class_column: str = typer.Option(None, "--class-column", help="Column with class labels, dropped from the "
                                     "features and passed as fit(X, classes=...) (detectors that accept them)."),
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
    if class_column is not None and not getattr(record, "accepts_classes", False):
        raise ValueError(f"{name} does not accept classes (its registry record has accepts_classes=False); "
                         "drop --class-column or choose a detector that takes them")
    rate = _contamination(contamination)
    detector = build_detector(name, parse_params(param), seed, rate)  # parameters checked before reading data
    X, y = read_data(data, label_column)
    X, classes = _split_columns(X, [class_column] if class_column else [], "--class-column")
    y01, why = outlier_labels(y, outlier_value)
    for line in _table_warnings(X, label_column):
        warn(line)
    fit_kwargs = {"classes": classes.iloc[:, 0].to_numpy()} if classes is not None else {}
    with console.status(f"fitting {name} on {len(X)} rows") if not getattr(detector, "verbose", False) else _null(), \
            _data_warnings_as_lines():
        detector.fit(X, pixel_range=pixel_range, **fit_kwargs)
    path = detector.save_artifact(output, variant=variant)
    msg = f"wrote {path} (threshold {detector.threshold_:.6g}, {int(detector.labels_.sum())} fit rows flagged)"
    if y01 is not None:
        msg += f"; fit set {_ranking_summary(y01, detector.decision_scores_)}"
    console.print(msg, soft_wrap=True)
    if why:
        warn(why)


@contextlib.contextmanager
def _data_warnings_as_lines() -> Iterator[None]:
    """Print the fit set's :class:`DataWarning` s as ``warning:`` lines when they are raised (other warnings
    are shown as usual)."""
    import warnings

    from aeguard.core.validation import DataWarning

    with warnings.catch_warnings():
        warnings.simplefilter("always", DataWarning)
        shown = warnings.showwarning

        def show(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
            if issubclass(category, DataWarning):
                warn(str(message))
            else:
                shown(message, category, *args, **kwargs)

        warnings.showwarning = show
        yield


def _table_warnings(X: Any, label_column: str | None) -> list[str]:
    if not hasattr(X, "columns"):
        return []
    from aeguard.core.io import table_warnings

    return table_warnings(X, label_column)


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


def _columns_option(value: str | None) -> list[str]:
    return [c.strip() for c in value.split(",") if c.strip()] if value else []


@app.command("score")
def score_cmd(
    artifact: Path = typer.Argument(..., help="Artifact folder."),
    data: Path = typer.Argument(..., help="CSV with header, Parquet, or NPZ with X."),
    output: Path = typer.Option(None, "-o", "--output", help="CSV to write.", show_default="stdout"),
    label_column: str = typer.Option(None, "--label-column", help="Column with labels: dropped from the "
                                     "features; with 0/1 labels (or --outlier-value) a ROC-AUC/AP summary line "
                                     "goes to stderr."),
    outlier_value: str = typer.Option(None, "--outlier-value", help="Label value that marks an outlier."),
    id_column: str = typer.Option(None, "--id-column", help="Column copied to the output as its first column "
                                  "(not a feature)."),
    keep_columns: str = typer.Option(None, "--keep-columns", help="Comma-separated columns copied to the output "
                                     "(not features)."),
    explain: int = typer.Option(0, "--explain", min=0, help="Add the top-K contributing features per row "
                                "(top1_feature, top1_contribution, ...)."),
    components: bool = typer.Option(False, "--components", help="Add a column per named component output of "
                                    "the graph (graph order; integer outputs such as a class stay integers)."),
    threshold: float = typer.Option(None, "--threshold", help="Score threshold for the label.",
                                    show_default="the artifact's"),
    contamination: str = typer.Option(None, "--contamination", help="Move the threshold to this share of the "
                                      "fit-set scores (float in [0, 0.5] or 'auto'), as the server does.",
                                      show_default="the artifact's"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    trusted_keys: Path = typer.Option(None, "--trusted-keys", envvar="AEGUARD_TRUSTED_KEYS",
                                      help="Folder of Ed25519 *.pub keys: refuse artifacts not signed by one."),
) -> None:
    """Score DATA with an artifact: CSV with columns score,label,probability in input order."""
    import pandas as pd

    from aeguard.core.artifact import load_artifact
    from aeguard.core.outputs import component_columns, component_names, top_features

    if threshold is not None and contamination is not None:
        raise CLIError("give either --threshold or --contamination, not both")
    rate = _contamination(contamination)
    model = load_artifact(artifact, device=device, trusted_keys=trusted_keys)
    X, y = read_data(data, label_column)
    passed = ([id_column] if id_column else []) + [c for c in _columns_option(keep_columns) if c != id_column]
    X, kept = _split_columns(X, passed, "--id-column/--keep-columns")
    y01, why = outlier_labels(y, outlier_value)
    scored = model.score(X, threshold=threshold, contamination=rate)
    frame = scored.to_frame()
    if components:
        names = component_names(model)
        for name, values in zip(names, component_columns(scored, names)):
            frame[name] = values
    if explain:
        feats, contrib = top_features(scored.contrib, model.feature_names, explain)
        for k in range(feats.shape[1]):
            frame[f"top{k + 1}_feature"] = feats[:, k]
            frame[f"top{k + 1}_contribution"] = contrib[:, k]
    if kept is not None:
        clash = [c for c in kept.columns if c in frame.columns]
        if clash:
            raise CLIError(f"--id-column/--keep-columns: {clash} would repeat an output column's name")
        frame = pd.concat([kept.reset_index(drop=True), frame], axis=1)
    if output is None:
        frame.to_csv(sys.stdout, index=False, float_format="%.9g")
    else:
        frame.to_csv(output, index=False, float_format="%.9g")
        print(f"wrote {len(frame)} scores to {output} ({int(scored.label.sum())} flagged at threshold "
              f"{scored.threshold:.6g})", file=sys.stderr)
    if y01 is not None:
        print(f"{len(frame)} rows, {int(y01.sum())} labelled outliers, {int(scored.label.sum())} flagged: "
              f"{_ranking_summary(y01, scored.score)}", file=sys.stderr)
    elif why:
        warn(why)


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
