"""Extra commands: ``aeguard demo`` (the README's first command) and ``aeguard bench-train``."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def demo(
    output: Path = typer.Option(Path("artifacts/demo-ae"), "-o", "--output", help="Artifact folder to write."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    epochs: int = typer.Option(500, "--epochs", help="Training epochs for `ae`."),
    top: int = typer.Option(10, "--top", help="How many top anomalies to show."),
) -> None:
    """Fit `ae` on the embedded breast-cancer table, write the artifact, score it and print ROC-AUC."""
    import numpy as np

    from aeguard.core import registry
    from aeguard.core.artifact import load_artifact
    from aeguard.core.metrics import average_precision, roc_auc
    from aeguard.datasets.default import load_default

    X, y = load_default(as_frame=True)
    console.print(f"[bold]embedded dataset[/]: Wisconsin diagnostic breast cancer, {len(X)} rows x "
                  f"{X.shape[1]} features, {int(y.sum())} outliers (malignant)")
    detector = registry.create("ae", epochs=epochs, random_state=seed, verbose=True)
    detector.fit(X)
    path = detector.save_artifact(output)
    console.print(f"wrote artifact [bold]{path}[/]")
    model = load_artifact(path)  # the torch-free scoring path, as a deployment would use it
    scored = model.score(X)
    console.print(f"ROC-AUC {roc_auc(y, scored.score):.4f}   average precision "
                  f"{average_precision(y, scored.score):.4f}   (fit set; labels used only for this report)")
    order = np.argsort(-scored.score)[:top]
    table = Table("row", "score", "probability", "label", "true", "top features", title=f"top {top} anomalies")
    for i in order:
        contrib = scored.contrib[i]
        names = [model.feature_names[j] for j in np.argsort(-contrib)[:3]]
        table.add_row(str(i), f"{scored.score[i]:.3f}", f"{scored.probability[i]:.3f}", str(scored.label[i]),
                      "outlier" if y[i] else "inlier", ", ".join(names))
    console.print(table)


def bench_train(
    detector: str = typer.Option("ae", "--detector", help="Deep detector to measure."),
    rows: int = typer.Option(2000, "--rows"),
    features: int = typer.Option(20, "--features"),
    epochs: int = typer.Option(1000, "--epochs"),
    repeats: int = typer.Option(3, "--repeats"),
    output: Path = typer.Option(None, "-o", "--output", help="JSON file for the results."),
) -> None:
    """Per-epoch training overhead of the Lightning loop against a bare torch loop (ratios, one run)."""
    from aeguard.core.overhead import measure_overhead

    result = measure_overhead(detector, rows=rows, features=features, epochs=epochs, repeats=repeats)
    table = Table("loop", "ms / epoch", "ratio to torch", "CPU ms / epoch", "CPU ratio")
    for key, value in result["ms_per_epoch"].items():
        table.add_row(key, f"{value:.4f}", f"{result['ratio_to_torch'][key]:.3f}",
                      f"{result['cpu_ms_per_epoch'][key]:.4f}", f"{result['cpu_ratio_to_torch'][key]:.3f}")
    console.print(table)
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(result, indent=2) + "\n")
        console.print(f"wrote {output}")


def register(app: typer.Typer) -> None:
    from aeguard.core.explain_cli import explain

    app.command("demo")(demo)
    app.command("explain")(explain)
    app.command("bench-train")(bench_train)
