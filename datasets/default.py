"""The embedded default dataset: Wisconsin diagnostic breast cancer, built the way ODDS built ``wbc``.

Shipping it as a CSV inside the package gives every install (including the torch-free edge runtime) a real,
labelled dataset without network access or scikit-learn. ``build_default_frame`` documents and reproduces
exactly how the CSV was made: all benign rows as inliers plus 21 seeded malignant rows as outliers.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .loaders import csv_float_kwargs

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

DEFAULT_CSV = "breast_cancer_wbc.csv"
LABEL_COLUMN = "label"
N_OUTLIERS = 21
SEED = 0


def build_default_frame() -> pd.DataFrame:
    """Rebuild the default dataset from scikit-learn's bundled copy (sklearn is needed only here)."""
    try:
        from sklearn.datasets import load_breast_cancer
    except ImportError as exc:
        message = "rebuilding the default dataset needs scikit-learn: pip install scikit-learn"
        raise ImportError(message) from exc
    bunch = load_breast_cancer()
    malignant = np.flatnonzero(bunch.target == 0)  # sklearn: 0 = malignant, 1 = benign
    picked = np.random.default_rng(SEED).choice(malignant, size=N_OUTLIERS, replace=False)
    keep = bunch.target == 1
    keep[picked] = True  # rows stay in sklearn's order
    frame = pd.DataFrame(bunch.data[keep], columns=[str(c) for c in bunch.feature_names])
    frame[LABEL_COLUMN] = (bunch.target[keep] == 0).astype(np.int64)
    return frame


def render_default_csv(frame: pd.DataFrame) -> str:
    """CSV text with shortest round-trip float reprs, so the shipped file reloads bit-for-bit."""
    return frame.to_csv(index=False, lineterminator="\n", float_format=lambda v: repr(float(v)))


def write_default_csv(path: str | Path | None = None) -> Path:
    """Regenerate the shipped CSV (``python -m aeguard.datasets.default``) after changing the recipe."""
    target = Path(path) if path is not None else Path(__file__).with_name("data") / DEFAULT_CSV
    target.write_text(render_default_csv(build_default_frame()), encoding="utf-8")
    return target


def default_csv_path() -> Traversable:
    """Location of the shipped CSV inside the installed package."""
    return resources.files(__package__).joinpath("data", DEFAULT_CSV)


def load_default(as_frame: bool = True) -> tuple[pd.DataFrame | np.ndarray, np.ndarray]:
    """Load the shipped default dataset: features (30 named columns) and labels (1 = outlier/malignant)."""
    with default_csv_path().open("r", encoding="utf-8") as fh:
        frame = pd.read_csv(fh, **csv_float_kwargs())
    y = frame.pop(LABEL_COLUMN).to_numpy(dtype=np.int64)
    X = frame.astype(np.float64)
    return (X if as_frame else X.to_numpy()), y


if __name__ == "__main__":
    print(write_default_csv())
