"""``aeguard datasets``: list the ODDS registry with local availability, and fetch verified copies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from .fetch import ERROR, NO_SOURCE, FetchResult, fetch_datasets
from .paths import resolve_data_dir
from .registry import list_datasets

app = typer.Typer(
    name="datasets",
    help="List and fetch the ODDS outlier-detection benchmark datasets.",
    no_args_is_help=True,
    add_completion=False,
)

DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Dataset folder (default: $AEGUARD_DATA, then $XDG_CACHE_HOME/aeguard/odds or "
        "~/.cache/aeguard/odds).",
    ),
]


@app.command("list")
def list_command(
    json_output: Annotated[bool, typer.Option("--json", help="Print a JSON list, not a table.")] = False,
    data_dir: DataDirOption = None,
) -> None:
    """Show every registered dataset with its official size and whether it is present locally."""
    rows = list_datasets(data_dir)
    if json_output:
        typer.echo(json.dumps(rows, indent=2))
        return
    _print_table(rows, resolve_data_dir(data_dir))


@app.command("fetch")
def fetch_command(
    names: Annotated[list[str] | None, typer.Argument(help="Datasets to fetch (default: all).")] = None,
    data_dir: DataDirOption = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show download bars.")] = True,
) -> None:
    """Download datasets, verify their SHA-256 and cache them; exits 1 if any requested dataset failed."""
    try:
        results = fetch_datasets(names or None, data_dir, progress=progress)
    except ValueError as exc:  # unknown names: nothing was downloaded
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    failures = [r for r in results if _is_failure(r, explicit=bool(names))]
    for result in results:
        _report(result, failed=result in failures)
    if failures:
        raise typer.Exit(1)


def _is_failure(result: FetchResult, *, explicit: bool) -> bool:
    """Without explicit names, datasets that simply have no public source are skipped, not failures."""
    return not result.ok and (explicit or result.status != NO_SOURCE)


def _report(result: FetchResult, *, failed: bool) -> None:
    if failed:
        detail = result.message if result.status == ERROR else f"{result.status}: {result.message}"
        typer.echo(f"error: {result.name}: {detail}", err=True)
    elif result.ok:
        typer.echo(f"{result.name}: {result.status} ({result.path})")
    else:
        typer.echo(f"{result.name}: skipped, {result.message}")


def _print_table(rows: list[dict], folder: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ODDS datasets ({sum(r['present'] for r in rows)}/{len(rows)} present in {folder})")
    for header in ("name", "n", "d", "outlier %", "present"):
        table.add_column(header, justify="left" if header == "name" else "right")
    for row in rows:
        present = "[green]yes[/green]" if row["present"] else "[dim]no[/dim]"
        table.add_row(row["name"], str(row["n"]), str(row["d"]), f"{row['outlier_pct']:.2f}", present)
    Console().print(table)


def register(main: typer.Typer) -> None:
    """Add ``aeguard datasets list|fetch`` and ``aeguard demo`` to the aeguard CLI (entry point
    ``aeguard.commands``)."""
    from .demo import demo

    main.add_typer(app, name="datasets")
    main.command("demo")(demo)
