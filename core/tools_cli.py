"""Extra commands: ``aeguard bench-train`` (``aeguard demo`` lives with the embedded dataset, ``datasets/demo.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console()


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

    app.command("explain")(explain)
    app.command("bench-train")(bench_train)
