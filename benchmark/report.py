"""Turn ``OUT/results.csv`` (+ ``OUT/run.json``) into ``report.md``, ``report.html`` and PNG figures.

Content: what was run; per-dataset mean +- std ROC-AUC and AP of every detector; the mean over datasets and the
average rank; wins/ties/losses of each aeguard detector against each baseline; a rank heatmap; critical-
difference style plots (Friedman average ranks with the Nemenyi CD at alpha = 0.05); and fit/score time as a
ratio to ``iforest`` measured in the same run. Both files are rendered from one list of blocks, so they always
say the same thing.

Rows of other runs on the same protocol can join the ranking (``--with``): another run's ``results.csv``, or, when
only its report page survives, the per-dataset mean +- std tables of that page (:func:`read_report_page`). The
report names every such source and which detectors came from it.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .cells import OK
from .protocol import BASELINES, SCALING_PARAM, baseline_scaling, is_baseline, parse_detector_spec, with_param
from .results import read_results

#: two detectors' mean scores on a dataset closer than this count as a tie in wins/ties/losses
TIE_TOLERANCE = 0.005
#: studentized range q_0.05 / sqrt(2) for k = 2..10 (Demsar 2006, table 5a); scipy computes larger k
_Q05 = {2: 1.960, 3: 2.343, 4: 2.569, 5: 2.728, 6: 2.850, 7: 2.949, 8: 3.031, 9: 3.102, 10: 3.164}
METRICS = {"roc_auc": "ROC-AUC", "ap": "AP"}
REFERENCE = "iforest"


@dataclass
class Report:
    """Blocks of the report: ``(kind, payload)`` with kind in h1, h2, h3, p, ul, table, img."""

    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def add(self, kind: str, payload: Any) -> None:
        self.blocks.append((kind, payload))


@dataclass
class Source:
    """Where rows of other runs came from (``--with``): a results.csv (``kind="results"``, per-seed rows) or a
    report page (``kind="page"``, per-dataset mean +- std only, in ``stats``)."""

    path: Path
    kind: str
    detectors: list[str]
    command: str | None = None
    sha256: str = ""
    seeds: int | None = None
    stats: dict[str, tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]] = field(default_factory=dict)


def build_report(out: Path, md_path: Path | None = None, html_path: Path | None = None,
                 fig_dir: Path | None = None, title: str | None = None, write_html: bool = True,
                 merge: list[Path] | None = None, merge_detectors: list[str] | None = None) -> list[Path]:
    """Write the report of the run in ``out``; returns the paths written (Markdown, then HTML).

    Defaults: ``out/report.md``, ``out/report.html``, figures in ``out/figures``. ``merge``: other runs' results
    (a run folder, its results.csv, or a report page this function wrote) whose detectors join the tables and
    ranks, limited to ``merge_detectors`` when given; a detector already present (in ``out`` or an earlier
    source) is never taken again, so rows of one label always come from one run.
    """
    out = Path(out)
    md_path = Path(md_path) if md_path else out / "report.md"
    html_path = Path(html_path) if html_path else out / "report.html"
    fig_dir = Path(fig_dir) if fig_dir else out / "figures"
    rows = read_results(out / "results.csv")
    if not rows:
        raise ValueError(f"no results in {out / 'results.csv'}; run `aeguard benchmark` first")
    run = _read_run(out / "run.json")
    frame = _label_raw_baselines(pd.DataFrame(rows), run).assign(source=0)
    frame, sources = merge_sources(frame, merge or [], merge_detectors)
    report = compose(frame, run, fig_dir, md_path.parent, title, sources)
    _protocols_section(report, out)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(render_markdown(report))
    if not write_html:
        return [md_path]
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(render_html(report, html_path.parent, md_path.parent))
    return [md_path, html_path]


def _read_run(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


# --- other runs (--with) -----------------------------------------------------------------------------

#: columns measured by the run that wrote them: not comparable with this run's, so merged rows drop them
_RUN_BOUND = ("fit_seconds", "score_seconds", "peak_rss_mb")


def merge_sources(frame: pd.DataFrame, paths: list[Path], wanted: list[str] | None = None
                  ) -> tuple[pd.DataFrame, list[Source]]:
    """``frame`` plus the rows of each source's detectors that are in ``wanted`` (all when None) and not present
    yet; returns the frame (merged rows carry ``source`` = their 1-based source number and no times) and the
    sources. A source that adds nothing, or a wanted detector found nowhere, is an error (a typo would otherwise
    drop a row from the ranking silently)."""
    present = set(frame["detector"])
    sources: list[Source] = []
    for number, path in enumerate(map(Path, paths), 1):
        path = path / "results.csv" if path.is_dir() else path
        if not path.is_file():
            raise ValueError(f"--with {path}: no such file (give a run folder, its results.csv or a report page)")
        if path.suffix == ".md":
            source = read_report_page(path)
            for metric, tables in source.stats.items():
                source.stats[metric] = tuple(t[[d for d in t.columns if _take(d, wanted, present)]] for t in tables)
            source.detectors = list(source.stats["roc_auc"][0].columns) if source.stats else []
        else:
            rows = read_results(path)
            if not rows:
                raise ValueError(f"--with {path}: no results")
            run = _read_run(path.parent / "run.json")
            other = _label_raw_baselines(pd.DataFrame(rows), run)
            other = other[[_take(d, wanted, present) for d in other["detector"]]]
            other = other.assign(source=number, **{c: np.nan for c in _RUN_BOUND})
            frame = pd.concat([frame, other], ignore_index=True)
            source = Source(path, "results", list(dict.fromkeys(other["detector"])), run.get("command"),
                            _sha256(path))
        if not source.detectors:
            raise ValueError(f"--with {path}: adds no detector"
                             + (f" of {', '.join(wanted)}" if wanted else "") + " that is not already in the report")
        present |= set(source.detectors)
        sources.append(source)
    missing = [d for d in wanted or [] if d not in present]
    if missing and paths:
        raise ValueError(f"--with-detectors: {', '.join(missing)} found in no source")
    return frame, sources


def _take(detector: str, wanted: list[str] | None, present: set[str]) -> bool:
    return detector not in present and (wanted is None or detector in wanted)


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


_CELL = re.compile(r"^\*{0,2}([-+]?\d*\.?\d+)(?: ± (\d*\.?\d+))?\*{0,2}$")


def read_report_page(path: Path) -> Source:
    """The per-dataset ROC-AUC and AP tables (mean +- std over seeds) of a Markdown report written by
    :func:`build_report`, for when a run's results.csv is gone but its page is committed.

    A page from before ``--baseline-scaling`` (no "Baseline input:" item) fitted its baselines on raw features
    under the bare names, so they are labelled ``NAME(scaling=none)``, as :func:`build_report` labels such a run.
    """
    text = Path(path).read_text()
    seeds = re.search(r"^- Seeds: ([\d, ]+)\.", text, re.M)
    n_seeds = len(seeds.group(1).split(",")) if seeds else None
    stats: dict[str, tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]] = {}
    for metric, label in METRICS.items():
        section = re.search(rf"^## {re.escape(label)} per dataset \(mean ± std over seeds\)\n\n((?:\|.*\n)+)", text,
                            re.M)
        if section is None:
            raise ValueError(f"--with {path}: no '{label} per dataset' table (not a page of `aeguard benchmark`)")
        lines = [line.strip().strip("|").split(" | ") for line in section.group(1).splitlines()]
        detectors = [h.strip().strip("`") for h in lines[0][1:]]
        means, stds = {}, {}
        for cells in lines[2:]:
            dataset = cells[0].strip()
            if dataset.startswith("**"):  # the mean and avg-rank rows
                continue
            parsed = [_CELL.match(c.strip()) for c in cells[1:]]
            means[dataset] = [float(m.group(1)) if m else np.nan for m in parsed]
            stds[dataset] = [float(m.group(2)) if m and m.group(2) else np.nan for m in parsed]
        mean = pd.DataFrame.from_dict(means, orient="index", columns=detectors)
        std = pd.DataFrame.from_dict(stds, orient="index", columns=detectors)
        count = mean.notna().astype(float) * (n_seeds or np.nan)
        stats[metric] = (mean, std, count)
    if "Baseline input:" not in text:
        stats = {m: tuple(t.rename(columns=_raw_label) for t in tables) for m, tables in stats.items()}
    command = re.search(r"^- (?:Command|Invocation \d+): `([^`]+)`", text, re.M)
    return Source(Path(path), "page", list(stats["roc_auc"][0].columns), command.group(1) if command else None,
                  _sha256(path), n_seeds, stats)


def _source_text(number: int, source: Source) -> str:
    """The source as it was given (``--with`` path), with the sha256 that pins its content."""
    dets = ", ".join(f"`{d}`" for d in source.detectors)
    where = f"`{source.path.as_posix()}` (sha256 {source.sha256[:12]})"
    command = f", written by `{source.command}`" if source.command else ""
    if source.kind == "page":
        return (f"Merged source {number}: {dets}: per-dataset mean ± std over {source.seeds or '?'} seeds read from "
                f"the report page {where}{command}. No per-seed rows: these columns have no times and no failed "
                "cells here.")
    return (f"Merged source {number}: {dets}: per-seed rows from {where}{command}. Their times were measured in "
            "that run, so they are left out of the time ratios.")


# --- analysis ----------------------------------------------------------------------------------------


def _label_raw_baselines(frame: pd.DataFrame, run: dict[str, Any]) -> pd.DataFrame:
    """A run recorded before ``--baseline-scaling`` fitted its baselines on raw features under the bare names that
    now mean standardized input; its rows are labelled ``NAME(scaling=none)``, as such a run is labelled today."""
    from .runner import records_baseline_scaling

    if not run or records_baseline_scaling(run):
        return frame
    return frame.assign(detector=frame["detector"].map(_raw_label))


def _raw_label(spec: str) -> str:
    """The label a baseline fitted on raw features carries today: ``ocsvm`` -> ``ocsvm(scaling=none)``."""
    bare = is_baseline(spec) and SCALING_PARAM not in parse_detector_spec(spec)[2]
    return with_param(spec, SCALING_PARAM, "none") if bare and baseline_scaling(spec) else spec


def detector_order(specs: list[str]) -> list[str]:
    """aeguard detectors first (in run order), then baselines in the usual order."""
    ours = [s for s in specs if not is_baseline(s)]
    base = sorted((s for s in specs if is_baseline(s)),
                  key=lambda s: (BASELINES.index(s) if s in BASELINES else len(BASELINES), s))
    return ours + base


def summarize(frame: pd.DataFrame, metric: str, detectors: list[str] | None = None,
              datasets: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(mean, std, n_seeds) over seeds from the ok rows, datasets x detectors (NaN where nothing succeeded)."""
    ok = frame[frame["status"] == OK]
    grouped = ok.groupby(["dataset", "detector"])[metric]
    detectors = detectors or list(dict.fromkeys(frame["detector"]))
    datasets = datasets or sorted(frame["dataset"].unique())
    tables = (grouped.mean(), grouped.std(ddof=1), grouped.count())
    return tuple(t.unstack().reindex(index=datasets, columns=detectors) if len(t) else
                 pd.DataFrame(np.nan, index=datasets, columns=detectors) for t in tables)


def rank_table(means: pd.DataFrame) -> pd.DataFrame:
    """Per-dataset ranks (1 = best, ties share the average rank).

    Detectors without any result are left out; of the rest, only datasets where every one has a result count.
    """
    complete = means.dropna(axis=1, how="all").dropna(axis=0, how="any")
    return complete.rank(axis=1, ascending=False, method="average")


def critical_difference(k: int, n: int, alpha: float = 0.05) -> float:
    """Nemenyi critical difference of average ranks: q_alpha * sqrt(k (k + 1) / (6 N))."""
    if k < 2 or n < 1:
        return float("nan")
    if alpha != 0.05:
        raise ValueError("only alpha = 0.05 is tabulated")
    if k in _Q05:
        q = _Q05[k]
    else:
        from scipy.stats import studentized_range

        q = float(studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2))
    return q * math.sqrt(k * (k + 1) / (6.0 * n))


def wins_ties_losses(means: pd.DataFrame, ours: str, baseline: str, tol: float = TIE_TOLERANCE) -> tuple[int, int, int]:
    both = means[[ours, baseline]].dropna()
    diff = both[ours] - both[baseline]
    return int((diff > tol).sum()), int((diff.abs() <= tol).sum()), int((diff < -tol).sum())


def time_ratios(frame: pd.DataFrame, column: str, reference: str = REFERENCE) -> pd.DataFrame:
    """Per dataset: mean seconds of each detector / mean seconds of ``reference`` on the same dataset."""
    ok = frame[frame["status"] == OK]
    seconds = ok.groupby(["dataset", "detector"])[column].mean().unstack() if len(ok) else pd.DataFrame()
    if reference not in seconds:
        return pd.DataFrame()
    ref = seconds[reference].where(seconds[reference] > 0)
    return seconds.div(ref, axis=0)


def geometric_mean(values: pd.Series) -> float:
    values = values.dropna()
    values = values[values > 0]
    return float(np.exp(np.log(values).mean())) if len(values) else float("nan")


# --- composition -------------------------------------------------------------------------------------


def compose(frame: pd.DataFrame, run: dict[str, Any], fig_dir: Path, base_dir: Path,
            title: str | None = None, sources: list[Source] | None = None) -> Report:
    report = Report()
    sources = sources or []
    if "source" not in frame:
        frame = frame.assign(source=0)
    pages = [s for s in sources if s.kind == "page"]
    detectors = detector_order(list(dict.fromkeys([*frame["detector"], *(d for s in pages for d in s.detectors)])))
    ours = [d for d in detectors if not is_baseline(d)]
    baselines = [d for d in detectors if is_baseline(d)]
    datasets = sorted(frame["dataset"].unique())
    suite = run.get("suite", "")
    report.add("h1", title or ("aeguard on ODDS: offline benchmark" if suite == "odds" else "aeguard benchmark"))
    _run_section(report, frame, run, detectors, datasets, ours, baselines,
                 [_source_text(n, s) for n, s in enumerate(sources, 1)])
    _data_section(report, frame, run)
    fig_dir.mkdir(parents=True, exist_ok=True)
    stats = {m: summarize(frame, m, detectors, datasets) for m in METRICS}
    for page in pages:
        for metric in METRICS:
            stats[metric] = tuple(ours_t.fillna(theirs.reindex(index=datasets, columns=detectors)) for ours_t, theirs
                                  in zip(stats[metric], page.stats[metric]))
    _summary_section(report, frame, stats, detectors, ours)
    for metric, label in METRICS.items():
        _metric_section(report, stats[metric], detectors, datasets, label)
    if {"one_class", "held_out_class"} & {k for k, v in (run.get("protocol") or {}).items() if v is True}:
        _ood_metrics_section(report, frame, detectors, datasets)
    _wtl_section(report, stats, ours, baselines)
    _figures_section(report, stats, detectors, fig_dir, base_dir)
    _timing_section(report, frame, detectors, fig_dir, base_dir)
    _failures_section(report, frame)
    _method_section(report, sources)
    return report


def _protocol_text(run: dict[str, Any] | None) -> str:
    if (run or {}).get("protocol", {}).get("held_out_class"):
        return ("Protocol: held-out class (benchmark/images.py): per task (digit c) and seed every class is split "
                "60/40 with that seed; the fit split is the 60 % of the nine other digits, their digit labels "
                "handed as `classes` to detectors that accept them; the test split is the 40 % of every class, "
                "digit c the anomalies; no outlier label is used for any choice; all detectors see the same "
                "splits.")
    if (run or {}).get("protocol", {}).get("one_class"):
        return ("Protocol: one-class (benchmark/images.py): per task (digit c) and seed every class is split "
                "60/40 with that seed; the fit split is the 60 % of class c (clean), the test split the other 40 % "
                "of class c (normal) plus 40 % of every other class (anomalies); no outlier label is used for any "
                "choice; all detectors see the same splits.")
    return ("Protocol: stratified 60 % fit / 40 % test split per seed (the seed also sets every detector's "
            "initialisation and subsampling), fit split capped at 20,000 rows, test split kept whole; no outlier "
            "label is used for any choice; all detectors see the same splits.")


def _run_section(report: Report, frame: pd.DataFrame, run: dict[str, Any], detectors: list[str],
                 datasets: list[str], ours: list[str], baselines: list[str], merged: list[str]) -> None:
    own = frame[frame["source"] == 0]
    seeds = sorted(int(s) for s in own["seed"].unique())
    n_ok = int((own["status"] == OK).sum())
    report.add("h2", "What was run")
    items = [
        f"Datasets: {len(datasets)} ({', '.join(datasets)}).",
        f"Detectors: {len(detectors)}; aeguard: {', '.join(f'`{d}`' for d in ours) or 'none'}; "
        f"PyOD baselines (PyOD defaults): {', '.join(f'`{d}`' for d in baselines) or 'none'}.",
        f"Seeds: {', '.join(map(str, seeds))}. Cells: {len(own)} in results.csv, {n_ok} ok, "
        f"{len(own) - n_ok} failed.",
        _protocol_text(run),
    ]
    images = (run or {}).get("images")
    if images:
        items.append(f"Images: each row is a {'x'.join(map(str, images['shape']))} (C x H x W) image with pixel range "
                     f"{images['pixel_range']}; detectors whose class lists 'image' in `modalities` get (N, C, H, W) "
                     "images (pixels scaled to [0, 1], standardized per channel in their graph), the others the "
                     "same pixels flattened, on the same splits.")
    if baselines:
        items.append(_scaling_text(baselines, run))
        if any(parse_detector_spec(b)[1] == "ocsvm" for b in baselines):
            items.append("`ocsvm` is PyOD's libsvm model; its decision function is evaluated with BLAS instead of "
                         "libsvm's one-pair-at-a-time loop, which gives the same scores (to ~1e-14) in a fraction "
                         "of the time.")
    if run:
        machine = run.get("machine", {})
        invocations = [*run.get("history", []), run]
        for number, record in enumerate(invocations, 1):
            items.append(_invocation_text(record, number if len(invocations) > 1 else None))
        items.append(
            f"Machine: {machine.get('cpu_count', '?')} CPUs ({machine.get('processor', '?')}), "
            f"{machine.get('memory_gb', '?')} GB RAM, {machine.get('platform', '?')} (the machine may be shared).")
        versions = run.get("versions", {})
        items.append("Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + "."
                     + ("" if all(r.get("versions", versions) == versions for r in invocations) else
                        " Earlier invocations ran other versions (see run.json)."))
    report.add("ul", items + merged)


#: what each ``scaling`` value feeds a baseline, for the report
_SCALING_TEXT = {
    "standard": "fit-split standardized features, (x - mean) / (std + 1e-5) with the fit split's mean and "
                "unbiased std, a column constant on the fit split divided by its own magnitude max(|value|, 1) "
                "(core.validation.standard_scale: the rule every aeguard detector applies inside its graph)",
    "minmax": "fit-split min-max scaled features, (x - min) / (max - min) (ADBench's MinMaxScaler; a constant "
              "column's range is 1)",
    "none": "the raw features (no scaling)",
}


def _scaling_text(baselines: list[str], run: dict[str, Any]) -> str:
    """Which input each baseline saw; the scaling belongs to the detector (``scaling``), fitted on the fit split
    and applied in fit and scoring alike, so a spec label says it whenever it is not the default."""
    groups: dict[str, list[str]] = {}
    for spec in baselines:
        groups.setdefault(baseline_scaling(spec) or "its own preprocessing", []).append(f"`{spec}`")
    parts = [f"{_SCALING_TEXT.get(k, k)}: {', '.join(v)}" for k, v in groups.items()]
    chosen = sorted({r.get("baseline_scaling") for r in [*run.get("history", []), run] if r.get("baseline_scaling")})
    option = f" (`--baseline-scaling {' / '.join(chosen)}`, recorded in run.json)"
    return ("Baseline input: PyOD baselines run with PyOD's default hyperparameters on " + "; on ".join(parts)
            + (option if chosen else "") + ". The scaling is part of the detector, fitted on each fit split. PyOD's "
            "own benchmark script z-scores every split too (StandardScaler: population std, no 1e-5); ADBench "
            "min-max scales.")


def _invocation_text(record: dict[str, Any], number: int | None) -> str:
    """Command, timing, load and the detectors whose cells one invocation ran (all of them when not recorded)."""
    ran = record.get("detectors_run", record.get("detectors")) or []
    notes = f"; baseline scaling {record['baseline_scaling']}" if record.get("baseline_scaling") else ""
    if record.get("training_cache"):
        notes += (f"; training cache `{record['training_cache']}` (a cell whose training was already cached "
                  "has the fit time of a load, not of a training)")
    elif "training_cache" in record:
        notes += "; no training cache"
    return (f"{f'Invocation {number}' if number else 'Run'}: `{record.get('command', '?')}`; started "
            f"{record.get('start', '?')}, ended {record.get('end', '?')}; wall time "
            f"{_duration(record.get('wall_seconds'))}{_cpu_text(record.get('cpu_seconds'))} for "
            f"{record.get('cells_run', '?')} cells of {', '.join(f'`{d}`' for d in ran) or 'no detector'} "
            f"({record.get('cells_planned', 0) - record.get('cells_todo', 0)} already done were skipped); backend "
            f"{record.get('backend', '?')} with {record.get('workers', '?')} workers{notes}; load average "
            f"{_load_text(record.get('load_start'))} at start, {_load_text(record.get('load_end'))} at end.")


def _data_section(report: Report, frame: pd.DataFrame, run: dict[str, Any]) -> None:
    missing = run.get("missing_datasets") or []
    notes = _data_caveats(run)
    if not missing and not notes:
        return
    report.add("h2", "Data notes")
    items = []
    if missing:
        items.append(f"Missing from the data directory, so not in this run: {', '.join(missing)}.")
    items += notes
    report.add("ul", items)


def _data_caveats(run: dict[str, Any]) -> list[str]:
    if run.get("suite") != "odds":
        return []
    try:
        from aeguard.datasets.registry import ODDS
    except ImportError:
        return []
    notes = []
    for entry in run.get("datasets", []):
        info = ODDS.get(entry["name"])
        if info is None:
            continue
        if info.notes.startswith(("REBUILT", "DERIVED")):
            notes.append(f"`{info.name}`: {info.source}, not an ODDS file: {_caveat(info.notes)} (see "
                         "`aeguard datasets list --json`).")
        local_n = entry.get("n")
        if local_n and local_n != info.n:
            notes.append(f"`{info.name}`: the local file has {local_n:,} rows, the ODDS table lists {info.n:,} "
                         f"({local_n - info.n:+,}); the outlier count agrees ({info.n_outliers:,}).")
    return notes


def _caveat(notes: str) -> str:
    """First sentence of a REBUILT/DERIVED note (checksums and "so ..." clauses dropped), plus any "inferred"."""
    sentences = [re.sub(r"\s*\(SHA-256 [0-9a-f]+\)", "", x).split(", so ")[0].rstrip(".")
                 for x in notes.split(":", 1)[1].strip().split(". ")]
    kept = [sentences[0]] + [x[:1].lower() + x[1:] for x in sentences[1:] if "inferred" in x]
    return "; ".join(kept)


def _summary_section(report: Report, frame: pd.DataFrame, stats: dict[str, tuple], detectors: list[str],
                     ours: list[str]) -> None:
    report.add("h2", "Summary")
    fit_ratio = time_ratios(frame, "fit_seconds")
    score_ratio = time_ratios(frame, "score_seconds")
    roc_ranks = rank_table(stats["roc_auc"][0].reindex(columns=detectors))
    ap_ranks = rank_table(stats["ap"][0].reindex(columns=detectors))
    roc_means, ap_means = stats["roc_auc"][0], stats["ap"][0]
    common = roc_ranks.index  # datasets where every detector (with any result) has one
    partial = bool(len(common)) and int(roc_means.notna().sum().max()) > len(common)
    header = ["detector", "kind", "datasets", "mean ROC-AUC", "mean AP"]
    if partial:
        header += [f"mean ROC-AUC ({len(common)} common)", f"mean AP ({len(common)} common)"]
    header += ["avg rank ROC-AUC", "avg rank AP", f"fit time / {REFERENCE}", f"score time / {REFERENCE}"]
    rows = []
    for det in detectors:
        roc, ap = roc_means[det], ap_means[det]
        row = [f"`{det}`", "aeguard" if det in ours else "baseline", str(int(roc.notna().sum())),
               _num(roc.mean()), _num(ap.mean())]
        if partial:
            row += [_num(roc.loc[common].mean() if det in roc_ranks else None),
                    _num(ap.loc[common].mean() if det in roc_ranks else None)]
        row += [_num(roc_ranks[det].mean() if det in roc_ranks and len(roc_ranks) else None, 2),
                _num(ap_ranks[det].mean() if det in ap_ranks and len(ap_ranks) else None, 2),
                _ratio(geometric_mean(fit_ratio[det]) if det in fit_ratio else None),
                _ratio(geometric_mean(score_ratio[det]) if det in score_ratio else None)]
        rows.append(row)
    ranked = len(header) - 4  # the two rank columns come right before the two time columns
    best = _best_cells(rows, {**{j: max for j in range(3, ranked)}, ranked: min, ranked + 1: min})
    report.add("table", (header, rows, best))
    text = ("Means are over datasets of the per-dataset mean over seeds"
            + (", first over each detector's own datasets, then over the datasets every detector has" if partial
               else "")
            + f". Average ranks use the {len(roc_ranks)} datasets where every detector has a result (rank 1 = "
            "best; ties share the average rank). Time ratios are geometric means over datasets of (mean seconds "
            f"of the detector) / (mean seconds of `{REFERENCE}`) on the same dataset in this run.")
    if fit_ratio.empty:
        text += f" `{REFERENCE}` is not in this run, so no time ratios are given."
    report.add("p", text)


def _metric_section(report: Report, stat: tuple, detectors: list[str], datasets: list[str], label: str) -> None:
    means, stds, counts = (s.reindex(index=datasets, columns=detectors) for s in stat)
    report.add("h2", f"{label} per dataset (mean ± std over seeds)")
    rows = []
    best: set[tuple[int, int]] = set()
    for i, ds in enumerate(datasets):
        row = [ds]
        values = means.loc[ds]
        top = values.max()
        for j, det in enumerate(detectors):
            m, s = values[det], stds.loc[ds, det]
            if pd.isna(m):
                row.append("–")
                continue
            row.append(f"{m:.3f}" + (f" ± {s:.3f}" if not pd.isna(s) else ""))
            if np.isclose(m, top, rtol=0, atol=5e-4):
                best.add((i, j + 1))
        rows.append(row)
    ranks = rank_table(means)
    rows.append(["**mean**"] + [_num(means[d].mean()) for d in detectors])
    rows.append([f"**avg rank** ({len(ranks)} datasets)"]
                + [_num(ranks[d].mean() if d in ranks and len(ranks) else None, 2) for d in detectors])
    report.add("table", (["dataset"] + [f"`{d}`" for d in detectors], rows, best))
    if (counts.fillna(0).values != counts.max().max()).any():
        report.add("p", "Not every cell has the same number of seeds (failed or missing cells); see results.csv.")


#: the out-of-distribution papers' four metrics (Denouden et al. 2018 after Liang et al. 2018), results.csv columns
OOD_METRICS = {"fpr95": ("FPR at 95 % TPR", min), "roc_auc": ("AUROC", max), "aupr_in": ("AUPR-in", max),
               "ap": ("AUPR-out", max)}


def _ood_metrics_section(report: Report, frame: pd.DataFrame, detectors: list[str], datasets: list[str]) -> None:
    """Means over tasks of the per-task means over seeds, for the one-class (OOD) protocol."""
    if "fpr95" not in frame or frame["fpr95"].isna().all():
        return
    report.add("h2", "Out-of-distribution metrics (mean over tasks)")
    means = {m: summarize(frame, m, detectors, datasets)[0] for m in OOD_METRICS}
    rows = [[f"`{d}`"] + [_num(means[m][d].mean()) for m in OOD_METRICS] for d in detectors]
    best = _best_cells(rows, {j + 1: rule for j, (_, rule) in enumerate(OOD_METRICS.values())})
    report.add("table", (["detector"] + [label for label, _ in OOD_METRICS.values()], rows, best))
    report.add("p", "FPR at 95 % TPR: the fraction of anomalies accepted at the threshold that accepts 95 % of the "
               "normal test images (lower is better). AUPR-in takes the normal images as positives (scores "
               "negated), AUPR-out the anomalies (the AP of the other tables).")


def _wtl_section(report: Report, stats: dict[str, tuple], ours: list[str], baselines: list[str]) -> None:
    report.add("h2", "Wins / ties / losses of aeguard detectors against each baseline")
    if not ours or not baselines:
        report.add("p", "Needs at least one aeguard detector and one baseline in the run; this run has "
                        f"{len(ours)} aeguard detector(s) and {len(baselines)} baseline(s).")
        return
    report.add("p", f"Per dataset, on the mean over seeds; a difference within {TIE_TOLERANCE} is a tie. "
                    "Read W/T/L as the aeguard detector's wins/ties/losses.")
    for metric, label in METRICS.items():
        means = stats[metric][0].dropna(axis=1, how="all")
        cols = [b for b in baselines if b in means]
        rows = [[f"`{o}`"] + ["{}/{}/{}".format(*wins_ties_losses(means, o, b)) for b in cols]
                for o in ours if o in means]
        if not rows or not cols:
            report.add("p", f"{label}: no aeguard detector and baseline with results to compare.")
            continue
        report.add("h3", label)
        report.add("table", (["aeguard \\ baseline"] + [f"`{b}`" for b in cols], rows, set()))


def _figures_section(report: Report, stats: dict[str, tuple], detectors: list[str], fig_dir: Path,
                     base_dir: Path) -> None:
    report.add("h2", "Ranks")
    means = stats["roc_auc"][0].reindex(columns=detectors)
    ranks = rank_table(means)
    if len(ranks) == 0 or ranks.shape[1] < 2:
        report.add("p", "Ranks need at least two detectors with results on a common dataset.")
        return
    heatmap = fig_dir / "rank_heatmap.png"
    plot_rank_heatmap(ranks, means.loc[ranks.index, ranks.columns], heatmap)
    report.add("img", (_rel(heatmap, base_dir), "ROC-AUC rank of each detector on each dataset"))
    for metric, label in METRICS.items():
        metric_ranks = rank_table(stats[metric][0].reindex(columns=detectors))
        avg = metric_ranks.mean().sort_values()
        cd = critical_difference(metric_ranks.shape[1], len(metric_ranks))
        path = fig_dir / f"cd_{metric}.png"
        plot_critical_difference(avg, cd, path, f"{label}: average rank over {len(metric_ranks)} datasets")
        report.add("img", (_rel(path, base_dir), f"critical-difference diagram, {label}"))
    report.add("p", "Critical-difference diagrams (Demšar 2006): average ranks on the axis; the bar is the "
                    "Nemenyi critical difference at alpha = 0.05, CD = q_0.05 · sqrt(k (k + 1) / (6 N)) for k "
                    "detectors and N datasets; detectors joined by a thick line are not significantly different. "
                    "With few datasets or seeds this is a guide, not a test result.")


def _timing_section(report: Report, frame: pd.DataFrame, detectors: list[str], fig_dir: Path,
                    base_dir: Path) -> None:
    report.add("h2", f"Cost relative to `{REFERENCE}`")
    fit_ratio = time_ratios(frame, "fit_seconds")
    score_ratio = time_ratios(frame, "score_seconds")
    if fit_ratio.empty:
        report.add("p", f"`{REFERENCE}` is not in this run, so no time ratios can be given.")
        return
    ok = frame[frame["status"] == OK]
    secs = ok.groupby("detector")[["fit_seconds", "score_seconds", "peak_rss_mb"]]
    header = ["detector", f"fit / {REFERENCE} (geo. mean)", "min–max over datasets", f"score / {REFERENCE}",
              "median fit s", "median score s", "total s", "peak RSS MB (median / max)"]
    rows = []
    timed = [d for d in detectors if d in fit_ratio and fit_ratio[d].notna().any()]
    for det in timed:
        f, s = fit_ratio[det].dropna(), score_ratio[det].dropna()
        group = secs.get_group(det)
        rows.append([f"`{det}`", _ratio(geometric_mean(f)),
                     f"{_ratio(f.min())}–{_ratio(f.max())}" if len(f) else "–", _ratio(geometric_mean(s)),
                     _num(group["fit_seconds"].median(), 3), _num(group["score_seconds"].median(), 3),
                     _num(group["fit_seconds"].sum() + group["score_seconds"].sum(), 1),
                     f"{_num(group['peak_rss_mb'].median(), 0)} / {_num(group['peak_rss_mb'].max(), 0)}"])
    report.add("table", (header, rows, set()))
    path = fig_dir / "time_ratio.png"
    plot_time_ratios(fit_ratio.reindex(columns=timed), score_ratio.reindex(columns=timed), path)
    report.add("img", (_rel(path, base_dir), f"fit and score time as a ratio to {REFERENCE}"))
    report.add("p", "Seconds are wall-clock times inside one worker (fit includes the fit-set scores that set "
                    "the threshold; score is `decision_function` on the whole test split). Cells ran in "
                    "parallel, one thread each when more than one worker ran. Peak RSS is the worker's peak "
                    "resident memory during split + fit + score minus its resident memory at cell start.")


def _failures_section(report: Report, frame: pd.DataFrame) -> None:
    failed = frame[frame["status"] != OK]
    if failed.empty:
        return
    report.add("h2", "Failed cells")
    rows = []
    for (det, status), group in failed.groupby(["detector", "status"], sort=False):
        cells = ", ".join(f"{ds} ({', '.join(map(str, sorted(g['seed'])))})" for ds, g in group.groupby("dataset"))
        rows.append([f"`{det}`", str(len(group)), cells, status])
    report.add("table", (["detector", "cells", "dataset (seeds)", "status"], rows, set()))
    report.add("p", "Failed cells are left out of every mean and rank; a rerun with the same output folder "
                    "retries them.")


def _protocols_section(report: Report, out: Path) -> None:
    """Label-assisted protocol rows found beside results.csv, in their own section (never ranked with the rest)."""
    from .protocols import protocol_table

    tables = [(p.stem.removeprefix("protocol-"), protocol_table(p)) for p in sorted(out.glob("protocol-*.csv"))]
    tables = [(name, table) for name, table in tables if table]
    if not tables:
        return
    report.add("h2", "Label-assisted protocols (not comparable with the rows above)")
    report.add("p", "These rows choose epoch, k or seed with outlier labels, as a method's paper does; they use "
                    "their own splits and are listed apart, never ranked with the label-free rows.")
    for name, (header, rows) in tables:
        report.add("h3", f"`{name}`")
        report.add("table", (header, rows, set()))


def _method_section(report: Report, sources: list[Source]) -> None:
    report.add("h2", "Reproduce")
    merged = (" plus `--with SOURCE` for each merged source above (and `--with-detectors` with the detectors "
              "listed there)" if sources else "")
    report.add("p", "Rerunning the command above with the same `--out` skips finished cells; "
                    f"`aeguard benchmark --report-only --out OUT`{merged} rebuilds this report from "
                    "`OUT/results.csv`.")


# --- figures -----------------------------------------------------------------------------------------


def plot_rank_heatmap(ranks: pd.DataFrame, means: pd.DataFrame, path: Path) -> None:
    from matplotlib.figure import Figure

    k, n = ranks.shape[1], ranks.shape[0]
    fig = Figure(figsize=(1.0 + 0.85 * k, 1.2 + 0.32 * n), dpi=110)
    ax = fig.add_subplot()
    image = ax.imshow(ranks.values, cmap="RdYlGn_r", vmin=1, vmax=k, aspect="auto")
    ax.set_xticks(range(k), [str(c) for c in ranks.columns], rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), list(ranks.index), fontsize=8)
    for i in range(n):
        for j in range(k):
            ax.text(j, i, f"{means.values[i, j]:.2f}", ha="center", va="center", fontsize=6.5)
    fig.colorbar(image, ax=ax, label="rank (1 = best)", fraction=0.04)
    ax.set_title("ROC-AUC rank per dataset (cell text: mean ROC-AUC)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


def plot_critical_difference(avg_ranks: pd.Series, cd: float, path: Path, title: str) -> None:
    """Demšar-style CD diagram: rank axis, labelled detectors, CD bar, cliques of non-different detectors."""
    from matplotlib.figure import Figure

    names, values = list(avg_ranks.index), avg_ranks.values.astype(float)
    k = len(names)
    lo, hi = 1, max(k, int(math.ceil(values.max())))
    half = (k + 1) // 2
    fig = Figure(figsize=(7.5, 1.6 + 0.28 * half), dpi=110)
    ax = fig.add_subplot()
    ax.set_xlim(lo - 0.6, hi + 0.6)
    ax.set_ylim(-(half + 1.5), 1.8)
    ax.axis("off")
    ax.hlines(0, lo, hi, color="black", lw=1)
    for tick in range(lo, hi + 1):
        ax.vlines(tick, 0, 0.15, color="black", lw=1)
        ax.text(tick, 0.3, str(tick), ha="center", va="bottom", fontsize=8)
    for i, (name, value) in enumerate(zip(names, values)):
        left = i < half
        row = -(i if left else k - 1 - i) - 1.2
        x_text = lo - 0.5 if left else hi + 0.5
        ax.plot([value, value, x_text], [0, row, row], color="0.3", lw=0.8)
        ax.text(x_text, row + 0.1, f"{name} ({value:.2f})", ha="left" if left else "right", va="bottom",
                fontsize=7.5)
    if np.isfinite(cd):
        ax.hlines(1.2, lo, min(lo + cd, hi + 0.5), color="tab:red", lw=2)
        ax.text(lo + cd / 2, 1.35, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=8, color="tab:red")
        for n, (start, end) in enumerate(_cliques(values, cd)):
            y = -0.35 - 0.18 * (n % 4)
            ax.hlines(y, values[start] - 0.03, values[end] + 0.03, color="black", lw=3)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


def _cliques(sorted_ranks: np.ndarray, cd: float) -> list[tuple[int, int]]:
    """Maximal runs of detectors (sorted by rank) whose rank span is below the CD."""
    spans = []
    for i in range(len(sorted_ranks)):
        j = i
        while j + 1 < len(sorted_ranks) and sorted_ranks[j + 1] - sorted_ranks[i] < cd:
            j += 1
        if j > i and not any(s <= i and j <= e for s, e in spans):
            spans.append((i, j))
    return spans


def plot_time_ratios(fit: pd.DataFrame, score: pd.DataFrame, path: Path) -> None:
    from matplotlib.figure import Figure

    dets = list(fit.columns)
    fig = Figure(figsize=(max(5.0, 0.7 * len(dets) + 2), 3.2), dpi=110)
    ax = fig.add_subplot()
    x = np.arange(len(dets))
    ax.bar(x - 0.2, [geometric_mean(fit[d]) for d in dets], 0.4, label="fit")
    ax.bar(x + 0.2, [geometric_mean(score[d]) if d in score else np.nan for d in dets], 0.4, label="score")
    ax.set_yscale("log")
    ax.axhline(1.0, color="0.4", lw=0.8, ls="--")
    ax.set_xticks(x, dets, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(f"time / {REFERENCE} (geo. mean)", fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


# --- rendering ---------------------------------------------------------------------------------------


def render_markdown(report: Report) -> str:
    lines: list[str] = []
    for kind, payload in report.blocks:
        if kind in ("h1", "h2", "h3"):
            lines += ["#" * int(kind[1]) + " " + payload, ""]
        elif kind == "p":
            lines += [payload, ""]
        elif kind == "ul":
            lines += [f"- {item}" for item in payload] + [""]
        elif kind == "img":
            src, alt = payload
            lines += [f"![{alt}]({src})", ""]
        elif kind == "table":
            header, rows, bold = payload
            lines.append("| " + " | ".join(_md_cell(h) for h in header) + " |")
            lines.append("|" + "|".join("---:" if _numeric(rows, j) else "---" for j in range(len(header))) + "|")
            for i, row in enumerate(rows):
                cells = [f"**{c}**" if (i, j) in bold else c for j, c in enumerate(row)]
                lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def render_html(report: Report, html_dir: Path, md_dir: Path) -> str:
    body: list[str] = []
    for kind, payload in report.blocks:
        if kind in ("h1", "h2", "h3"):
            body.append(f"<{kind}>{_inline(payload)}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{_inline(payload)}</p>")
        elif kind == "ul":
            body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in payload) + "</ul>")
        elif kind == "img":
            src, alt = payload
            src = _rel(md_dir / src, html_dir)
            body.append(f'<figure><img src="{html.escape(src)}" alt="{html.escape(alt)}">'
                        f"<figcaption>{html.escape(alt)}</figcaption></figure>")
        elif kind == "table":
            header, rows, bold = payload
            out = ["<table><thead><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in header) + "</tr></thead><tbody>"]
            kinds = ["num" if _numeric(rows, j) else "txt" for j in range(len(header))]
            for i, row in enumerate(rows):
                cells = "".join(f"<td class='{'best ' if (i, j) in bold else ''}{kinds[j]}'>{_inline(c)}</td>"
                                for j, c in enumerate(row))
                out.append(f"<tr>{cells}</tr>")
            body.append("".join(out) + "</tbody></table>")
    title = next((p for k, p in report.blocks if k == "h1"), "aeguard benchmark")
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(body) + "\n</body></html>\n"
    )


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:1em 0;font-size:13px}"
    "th,td{border:1px solid #ccc;padding:3px 7px;white-space:nowrap}td.num{text-align:right}"
    "td.txt{text-align:left;white-space:normal}td.best{font-weight:bold;background:#eef7ee}"
    "code{background:#f3f3f3;padding:0 3px}img{max-width:100%}figcaption{font-size:12px;color:#555}"
)


def _inline(text: str) -> str:
    escaped = html.escape(text, quote=False)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", escaped)


_NUMERIC = re.compile(r"^[-+]?[\d.]+(?:e[-+]?\d+)?(?: ± [\d.]+)?[×]?(?:–[\d.]+×)?(?: / [\d.]+)?$|^–$|^\d+/\d+/\d+$")


def _numeric(rows: list[list[str]], j: int) -> bool:
    """Right-align a column whose cells are all numbers (or "–")."""
    values = [str(r[j]).strip("*") for r in rows if j < len(r)]
    return bool(values) and all(_NUMERIC.match(v) for v in values) and any(v != "–" for v in values)


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def _rel(path: Path, base: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), Path(base).resolve())).as_posix()


def _best_cells(rows: list[list[str]], columns: dict[int, Any]) -> set[tuple[int, int]]:
    best = set()
    for j, pick in columns.items():
        values = [(i, float(r[j])) for i, r in enumerate(rows) if _is_number(r[j])]
        if values:
            target = pick(v for _, v in values)
            best |= {(i, j) for i, v in values if v == target}
    return best


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)) or pd.isna(value):
        return "–"
    return f"{value:.{digits}f}"


def _ratio(value: Any) -> str:
    if value is None or pd.isna(value) or not math.isfinite(value):
        return "–"
    return f"{value:.2f}×" if value < 10 else f"{value:.0f}×"


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "?"
    minutes, secs = divmod(float(seconds), 60)
    return f"{seconds:.0f} s ({int(minutes)} min {secs:.0f} s)" if seconds >= 60 else f"{seconds:.1f} s"


def _cpu_text(cpu: Any) -> str:
    return f" (CPU time of the run and its workers: {cpu:.0f} s)" if isinstance(cpu, (int, float)) else ""


def _load_text(load: Any) -> str:
    return "/".join(f"{x:.2f}" for x in load) if isinstance(load, list) else "?"
