"""``aeguard benchmark``: the offline benchmark harness (ODDS or any folder of ``.npz`` files).

Imports no torch, scikit-learn or PyOD at module import: every heavy import happens inside the command.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import typer


def benchmark_cmd(
    suite: str = typer.Option("odds", "--suite", help="'odds' (registered ODDS datasets), 'digits' (scikit-learn's "
                              "8x8 digits as 1x8x8 images, one-class protocol: 10 tasks), 'digits-holdout' (the same "
                              "images, one digit held out as the anomaly, the others' labels as classes) or a "
                              "folder of .npz files (X, y with 1 = outlier)."),
    as_images: str = typer.Option(None, "--as-images", help="Hand image-capable detectors each row as a CxHxW "
                                  "image (e.g. 1x8x8 for optdigits); the others get the flat rows."),
    pixel_range: str = typer.Option(None, "--pixel-range", help="With --as-images: LOW,HIGH of the pixel values "
                                    "(default 0,1; optdigits: 0,16)."),
    detectors: str = typer.Option("all", "--detectors", help="Comma-separated specs: ae, iforest, "
                                  "apre(mss=false,alpha=1); 'baselines' = the 8 PyOD baselines, 'all' = every "
                                  "registered detector."),
    datasets: str = typer.Option(None, "--datasets", help="Comma-separated dataset names (default: all in the "
                                 "suite)."),
    seeds: int = typer.Option(5, "--seeds", help="Number of seeds; seeds 0..N-1."),
    data_dir: Path = typer.Option(None, "--data-dir", help="ODDS folder (default: $AEGUARD_DATA, then the "
                                  "per-user cache)."),
    out: Path = typer.Option(None, "--out", help="Output folder (default: runs/<suite>). A rerun skips cells "
                             "already finished there."),
    workers: int = typer.Option(None, "--workers", help="Cells in parallel (default: min(2, CPUs)); with "
                                "dask, the LocalCluster size when no scheduler is given."),
    backend: str = typer.Option("loky", "--backend", help="loky (joblib, this machine), dask or ray."),
    scheduler: str = typer.Option(None, "--scheduler", help="Dask scheduler / Ray address (default: "
                                  "$DASK_SCHEDULER_ADDRESS / $RAY_ADDRESS, else a local cluster on 127.0.0.1)."),
    paper_protocol: bool = typer.Option(False, "--paper-protocol", help="Run the 'paper-protocol' protocol (the APRE "
                                        "authors' label-assisted choice of epoch, k and seed) instead of the "
                                        "label-free cells; rows go to OUT/protocol-paper-protocol.csv."),
    protocol: str = typer.Option(None, "--protocol", help="Run this registered label-assisted protocol instead of "
                                 "the label-free cells (see --paper-protocol)."),
    protocol_epochs: int = typer.Option(None, "--protocol-epochs", help="Training epochs inside the protocol "
                                        "(default: the protocol's own, 5000 for paper-protocol)."),
    baseline_scaling: str = typer.Option("standard", "--baseline-scaling", help="Input scaling of the PyOD "
                                         "baselines, fitted on each fit split: standard ((x - mean) / (std + "
                                         "1e-5), as every aeguard detector does inside its graph), minmax "
                                         "(ADBench) or none (raw features). A spec's own scaling= wins; a "
                                         "non-default value is part of the row's name, e.g. ocsvm(scaling=none)."),
    report_only: bool = typer.Option(False, "--report-only", help="Only rebuild the report from OUT/results.csv."),
    report_to: Path = typer.Option(None, "--report-to", help="Also write the Markdown report to this path, with "
                                   "its figures in figures/ next to it (figures/<page>/ for pages other than "
                                   "odds.md; e.g. docs/benchmarks/odds.md)."),
    with_: list[Path] = typer.Option(None, "--with", help="Also rank the detectors of another run on the same "
                                     "protocol: its folder, its results.csv, or (when only that is left) a report "
                                     "page `aeguard benchmark` wrote (per-dataset mean ± std). Repeatable; a "
                                     "detector already in OUT or an earlier --with is not taken again; the report "
                                     "names each source."),
    with_detectors: str = typer.Option(None, "--with-detectors", help="Comma-separated detector labels to take from "
                                       "the --with sources (default: all they have)."),
    progress: bool = typer.Option(None, "--progress/--no-progress", help="Progress bar (default: on in an "
                                  "interactive terminal, off in pipes and CI)."),
) -> None:
    """Benchmark detectors on ODDS (or a folder of .npz files) with PyOD baselines on the same splits.

    Protocol: stratified 60/40 fit/test split per seed, fit split capped at 20,000 rows, no label used for any
    choice; baselines fitted on fit-split-standardized features by default (--baseline-scaling). Writes
    OUT/results.csv (appended as cells finish), OUT/run.json, OUT/report.md, OUT/report.html.
    """
    out = out or Path("runs") / ("odds" if suite == "odds" else Path(suite).expanduser().resolve().name)
    merge = {"merge": list(with_ or []), "merge_detectors": _labels(with_detectors)}
    if report_only:
        typer.echo("wrote " + ", ".join(map(str, _reports(out, report_to, **merge))))
        return

    from .runner import expand_detectors, resolve_suite, run_benchmark

    names = [n.strip() for n in datasets.split(",") if n.strip()] if datasets else None
    specs = expand_detectors(detectors)
    chosen = resolve_suite(suite, data_dir, names)
    if as_images is not None or pixel_range is not None:
        from aeguard.core.validation import check_pixel_range

        from .images import parse_image_shape
        from .runner import as_image_suite

        if as_images is None:
            raise typer.BadParameter("--pixel-range needs --as-images (or --suite digits, whose range is 0,16)")
        chosen = as_image_suite(chosen, parse_image_shape(as_images),
                                check_pixel_range(pixel_range) if pixel_range else None)
    if chosen.missing:
        typer.echo(f"not in {chosen.data_dir}, skipped: {', '.join(chosen.missing)}", err=True)
    protocol = "paper-protocol" if paper_protocol else protocol
    if protocol:
        _run_protocol(protocol, chosen, out, protocol_epochs, progress)
        return
    summary = run_benchmark(chosen, specs, seeds, out, workers=workers, backend=backend, scheduler=scheduler,
                            progress=progress, argv=["aeguard", *sys.argv[1:]], baseline_scaling=baseline_scaling)
    written = _reports(out, report_to, **merge)
    failed = f", {summary.failed} failed (see the report)" if summary.failed else ""
    typer.echo(f"{summary.ran} cells run in {summary.wall_seconds:.1f} s ({summary.skipped} already done"
               f"{failed}); wrote {out / 'results.csv'}, " + ", ".join(map(str, written)))
    if summary.ran and summary.failed == summary.ran:
        typer.echo(f"error: every cell failed ({summary.failed} of {summary.ran}); see the status column of "
                   f"{out / 'results.csv'}", err=True)
        raise typer.Exit(1)


def _run_protocol(name: str, suite: Any, out: Path, epochs: int | None, progress: bool | None) -> None:
    from .protocols import protocol_markdown, protocol_path, run_protocol

    started = time.perf_counter()
    ran, failed = run_protocol(name, suite, out, {"epochs": epochs} if epochs else None, progress)
    path = protocol_path(out, name)
    report = path.with_suffix(".md")
    report.write_text(protocol_markdown(path, name))
    failed_text = f", {failed} failed" if failed else ""
    typer.echo(f"protocol {name}: {ran} datasets run in {time.perf_counter() - started:.1f} s{failed_text}; "
               f"wrote {path}, {report}")


def _labels(text: str | None) -> list[str] | None:
    from .protocol import parse_detector_list

    return parse_detector_list(text) if text else None


def _reports(out: Path, report_to: Path | None, merge: list[Path] | None = None,
             merge_detectors: list[str] | None = None) -> list[Path]:
    """``OUT/report.md`` + ``.html``, and the ``--report-to`` page (``--with`` sources are read before it is
    written, so a page may be both a source and the target)."""
    from .report import build_report

    written = build_report(out, merge=merge, merge_detectors=merge_detectors)
    if report_to is not None:
        written += build_report(out, md_path=report_to, fig_dir=figure_dir(Path(report_to)), write_html=False,
                                merge=merge, merge_detectors=merge_detectors)
    return written


def figure_dir(page: Path) -> Path:
    """Where a ``--report-to`` page's figures go: ``figures/`` beside ``odds.md`` (the first page, whose links
    predate the others), ``figures/<page>/`` beside any other page, so two pages never overwrite each other's."""
    return page.parent / "figures" if page.stem == "odds" else page.parent / "figures" / page.stem


def register(app: typer.Typer) -> None:
    """Add the ``benchmark`` command to the aeguard CLI."""
    app.command("benchmark")(benchmark_cmd)
