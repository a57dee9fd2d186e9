"""``aeguard explain ARTIFACT DATA -o DIR``: anomaly maps and contribution charts people can look at."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import typer


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:60]


def explain(
    artifact: Path = typer.Argument(..., help="Artifact folder."),
    data: Path = typer.Argument(..., help="A table (CSV/Parquet/NPZ), an image .npz or a folder of PNGs."),
    output: Path = typer.Option(..., "-o", "--output", help="Folder to write the pictures and the CSV to."),
    top: int = typer.Option(10, "--top", min=1, help="Pictures for the N highest-scoring rows."),
    flagged: bool = typer.Option(False, "--flagged", help="Pictures for every flagged row instead of the top N."),
    threshold: float = typer.Option(None, "--threshold", help="Override the artifact's threshold."),
) -> None:
    """Write one PNG per top (or flagged) row: for images the per-pixel contribution map beside and over the
    input, for tables a bar chart of the largest feature contributions; plus contributions.csv for every row."""
    import pandas as pd

    from aeguard.core.artifact import load_artifact
    from aeguard.core.cli import console, read_data
    from aeguard.core.images import is_image_source, read_images, save_bar_png, save_map_png

    model = load_artifact(artifact)
    if is_image_source(data):
        X, _, names = read_images(data)
    else:
        X, _ = read_data(data)
        names = [f"row{i}" for i in range(len(X))]
    scored = model.score(X, threshold=threshold)
    output.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(scored.contrib, columns=model.feature_names)
    frame.insert(0, "probability", scored.probability)
    frame.insert(0, "label", scored.label)
    frame.insert(0, "score", scored.score)
    frame.insert(0, "name", names)
    frame.to_csv(output / "contributions.csv", index=False, float_format="%.6g")
    if not np.isfinite(scored.contrib).any():
        console.print(f"wrote contributions.csv for {len(X)} rows to {output} ({int(scored.label.sum())} flagged); "
                      f"no pictures: this {model.detector_name} artifact has no per-feature contributions "
                      "(its score has no natural split over the features; the CSV holds NaN there)")
        return
    order = np.argsort(-scored.score, kind="stable")
    chosen = [i for i in order if scored.label[i]] if flagged else list(order[:top])
    images = np.asarray(model.validate(X)) if model.image_shape is not None else None
    for rank, i in enumerate(chosen, start=1):
        title = f"{names[i]}: score {scored.score[i]:.4g} (threshold {scored.threshold:.4g})"
        stem = names[i][:-4] if names[i].lower().endswith(".png") else names[i]
        target = output / f"{rank:03d}_{_safe(stem)}.png"
        if images is not None:
            save_map_png(images[i], scored.contrib[i].reshape(model.image_shape), target, model.pixel_range, title)
        else:
            save_bar_png(model.feature_names, scored.contrib[i], target, title)
    console.print(f"wrote {len(chosen)} picture(s) and contributions.csv for {len(X)} rows to {output} "
                  f"({int(scored.label.sum())} flagged)")
