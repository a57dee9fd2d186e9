"""Label-assisted protocols (a method's paper protocol), run per dataset and kept apart from label-free cells.

A protocol is registered by a plugin (hook ``aeguard_protocols``) as ``fn(dataset, X, y, **options) -> rows``.
It chooses with labels (epochs, k, seeds), so its rows go to ``OUT/protocol-NAME.csv``, never into
``results.csv``, and the report shows them in their own section. Rows are appended per dataset; a rerun skips
datasets already done, and a dataset that fails records its error and the run goes on.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

from aeguard.core import registry

from .cells import OK, error_status, load_labelled
from .runner import Suite, _Progress

#: leading columns of a protocol results file; a protocol's extra fields follow in the order it returns them
LEAD = ("dataset", "detector", "roc_auc", "ap")


def protocol_path(out: Path, name: str) -> Path:
    return Path(out) / f"protocol-{name}.csv"


def run_protocol(name: str, suite: Suite, out: Path, options: dict[str, Any] | None = None,
                 progress: bool | None = None) -> tuple[int, int]:
    """Run protocol ``name`` on every dataset of ``suite`` not yet in its results file; ``(ran, failed)``."""
    fn = registry.protocol(name)
    path = protocol_path(out, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    done = {r["dataset"] for r in read_protocol(path) if r.get("status") == OK}
    todo = [e for e in suite.datasets if e.name not in done]
    ran = failed = 0
    with _Progress(len(todo), enabled=progress) as bar:
        for entry in todo:
            started = time.perf_counter()
            try:
                X, y = load_labelled(entry.source, suite.data_dir)
                rows = [{**row, "status": OK} for row in fn(entry.name, X, y, **(options or {}))]
            except Exception as exc:  # noqa: BLE001 - a failing dataset is a result, not the end of the run
                rows = [{"dataset": entry.name, "detector": name, "status": error_status(exc)}]
                failed += 1
            for row in rows:
                row.setdefault("wall_seconds", round(time.perf_counter() - started, 3))
            _append(path, rows)
            ran += 1
            bar.advance(entry.name)
    return ran, failed


def read_protocol(path: Path) -> list[dict[str, str]]:
    if not Path(path).exists():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _append(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append rows; the header is the union of the old header and the new keys (the file is rewritten when
    a new column appears, which only happens between datasets)."""
    old = read_protocol(path)
    columns = list(dict.fromkeys([*LEAD, *(old[0].keys() if old else ()), *(k for r in rows for k in r)]))
    columns.remove("status")
    columns.append("status")
    rewrite = not old or list(old[0].keys()) != columns
    with open(path, "w" if rewrite else "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, restval="")
        if rewrite:
            writer.writeheader()
            writer.writerows(old)
        writer.writerows(rows)


def protocol_table(path: Path) -> tuple[list[str], list[list[str]]] | None:
    """Per-row-name means over the datasets of a protocol file: ``(header, rows)``; None when it has no result."""
    import pandas as pd

    frame = pd.DataFrame(read_protocol(path))
    if frame.empty or "roc_auc" not in frame:
        return None
    frame = frame[frame["status"] == OK]
    if frame.empty:
        return None
    for column in ("roc_auc", "ap"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    grouped = frame.groupby("detector", sort=False)
    rows = [[f"`{name}`", str(group["dataset"].nunique()), f"{group['roc_auc'].mean():.3f}",
             f"{group['ap'].mean():.3f}"] for name, group in grouped]
    return ["row", "datasets", "mean ROC-AUC", "mean AP"], rows


def protocol_markdown(path: Path, name: str) -> str:
    """A short Markdown report of one protocol file (means, then every row)."""
    lines = [f"# Protocol `{name}` (label-assisted)", "",
             "These rows use outlier labels for choices (epoch, k, seed); never compare them with label-free "
             "rows as if they were.", ""]
    table = protocol_table(path)
    if table:
        header, rows = table
        lines += ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
        lines += ["| " + " | ".join(r) + " |" for r in rows] + [""]
    records = read_protocol(path)
    if records:
        columns = list(records[0])
        lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in records]
    return "\n".join(lines) + "\n"
