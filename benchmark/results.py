"""``results.csv``: one row per (dataset, detector, seed), appended by the parent process as each cell finishes.

The file is the run's only state. A rerun reads it, skips cells whose status is ``ok`` and runs the rest
again, so a crash or a kill loses at most the cells that were in flight. Rows of failed cells that are about
to be retried, duplicates, and a line cut short by a kill are dropped first (atomic rewrite), so the file keeps
exactly one row per cell.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .cells import COLUMNS, OK

_FLOATS = ("roc_auc", "ap", "fit_seconds", "score_seconds", "peak_rss_mb", "fpr95", "aupr_in")
#: columns added after the first release; a file written before them still reads (and is rewritten on resume)
_ADDED = ("fpr95", "aupr_in")
_INTS = ("seed", "n_fit", "n_test")


def row_key(row: dict[str, Any]) -> tuple[str, str, int]:
    return str(row["dataset"]), str(row["detector"]), int(row["seed"])


def read_results(path: Path) -> list[dict[str, Any]]:
    """Parsed rows of a results.csv (missing file -> []); malformed lines (a write cut by a kill) are skipped."""
    if not path.exists():
        return []
    rows: list[dict[str, Any]] = []
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            return []
        header = tuple(header)
        if header != COLUMNS and header != tuple(c for c in COLUMNS if c not in _ADDED):
            raise ValueError(f"{path} is not a benchmark results file (columns {list(header)}, expected "
                             f"{list(COLUMNS)})")
        for fields in reader:
            row = _parse(fields, header)
            if row is not None:
                rows.append(row)
    return rows


def _parse(fields: list[str], header: tuple[str, ...] = COLUMNS) -> dict[str, Any] | None:
    if len(fields) != len(header) or not fields[-1]:
        return None
    row: dict[str, Any] = {c: "" for c in COLUMNS} | dict(zip(header, fields))
    try:
        for key in _INTS:
            row[key] = int(row[key]) if row[key] != "" else None
        for key in _FLOATS:
            row[key] = float(row[key]) if row[key] != "" else None
    except ValueError:
        return None
    if row["seed"] is None or not (row["status"] == OK or row["status"].startswith("error")):
        return None
    return row


class ResultsFile:
    """Append-only writer for results.csv that survives being killed between (or during) appends."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def prepare(self, retry: Iterable[tuple[str, str, int]]) -> list[dict[str, Any]]:
        """Clean the file for a (re)run and return the rows it keeps.

        Keeps one row per cell (an ``ok`` row wins over a failed one, then the latest), drops the failed rows
        of cells in ``retry`` (they run again) and any cut-off line, and rewrites the file only if that changed
        something. Creates the file with its header if it does not exist.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        original = self.path.read_bytes() if self.path.exists() else b""
        rows = read_results(self.path)
        best: dict[tuple[str, str, int], dict[str, Any]] = {}
        for row in rows:
            key = row_key(row)
            if key not in best or row["status"] == OK or best[key]["status"] != OK:
                best[key] = row
        retry = set(retry)
        kept = [r for k, r in best.items() if r["status"] == OK or k not in retry]
        rendered = _render(kept)
        if rendered != original:
            tmp = self.path.with_suffix(".csv.tmp")
            tmp.write_bytes(rendered)
            os.replace(tmp, self.path)
        return kept

    def append(self, row: dict[str, Any]) -> None:
        """Append one row and push it to disk before returning (flush + fsync)."""
        with open(self.path, "a", newline="") as fh:
            csv.writer(fh, lineterminator="\n").writerow([_fmt(row.get(c)) for c in COLUMNS])
            fh.flush()
            os.fsync(fh.fileno())


def _render(rows: list[dict[str, Any]]) -> bytes:
    import io

    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([_fmt(row.get(c)) for c in COLUMNS])
    return buf.getvalue().encode()


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return f"{value:.6g}"
    return str(value)
