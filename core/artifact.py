"""Artifacts: the deployable unit, an ONNX graph plus a JSON manifest, loaded without torch.

Layout of an artifact folder::

    model.onnx      raw features in; preprocessing, network and scoring head inside the graph
    manifest.json   format version, detector and parameters, features, threshold, calibration,
                    training fingerprint, library versions, sha256 of every file

Loading checks the format version and every checksum before onnxruntime sees a byte, and checks that the
graph's input width and outputs agree with the manifest. Nothing is ever pickled.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from aeguard.core import thresholds as th
from aeguard.core.chunks import chunk_rows, run_chunked
from aeguard.core.validation import check_features, feature_names_of

FORMAT = "aeguard-artifact"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
MANIFEST = "manifest.json"
GRAPH = "model.onnx"


class ArtifactError(ValueError):
    """The folder is not a usable aeguard artifact (missing, tampered, incompatible or mismatched)."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def installed_version(dist: str) -> str | None:
    """The installed version of distribution ``dist``, or None when it is not installed."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def versions(dists: Sequence[str]) -> dict[str, str]:
    """``{"python": ..., dist: version}`` for the distributions of ``dists`` that are installed (the one version
    list of manifests, benchmark run records and edge reports)."""
    found = {d: v for d in dists if (v := installed_version(d)) is not None}
    return {"python": platform.python_version(), **found}


def library_versions() -> dict[str, str]:
    return versions(["aeguard", "numpy", "torch", "pytorch-lightning", "onnx", "onnxruntime", "onnxruntime-gpu",
                     "scikit-learn"])


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return repr(value)


def registry_name_of(detector: Any) -> str:
    """The registry name whose record builds this detector's class (and fixed parameters)."""
    from aeguard.core.registry import detectors

    target = f"{type(detector).__module__}:{type(detector).__qualname__}"
    params = detector.get_params(deep=False)
    for name, rec in detectors().items():
        if rec.target == target and all(params.get(k) == v for k, v in rec.fixed_params):
            return name
    return target


QUANTILE_LEVELS = 1001


def fit_score_summary(scores: np.ndarray) -> dict[str, Any]:
    """Fit-set score quantiles (0.1 % grid) so a threshold can move per request without the scores."""
    scores = np.asarray(scores, dtype=np.float64)
    levels = np.linspace(0.0, 1.0, QUANTILE_LEVELS)
    return {"n": int(scores.size), "quantiles": np.quantile(scores, levels).tolist(),
            "auto_threshold": th.threshold_from_scores(scores, "auto")}


def build_manifest(detector: Any, graph_info: dict[str, Any], files: dict[str, dict[str, Any]]) -> dict:
    std = getattr(detector, "standardize_", None)
    preprocessing = {"type": "none"}
    if std is not None:
        preprocessing = {"type": "standardize", "in_graph": True, "formula": "(x - mean) / scale",
                         "mean": std.mean.tolist(), "scale": std.scale.tolist()}
    extra = detector.manifest_extra() if hasattr(detector, "manifest_extra") else {}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "detector": {"name": registry_name_of(detector),
                     "class": f"{type(detector).__module__}:{type(detector).__qualname__}",
                     "params": _jsonable(detector.get_params(deep=False))},
        "features": {"names": list(detector.feature_names_), "n_features": int(detector.n_features_in_),
                     "dtype": "float32", "named": hasattr(detector, "feature_names_in_")},
        "preprocessing": preprocessing,
        "graph": {"file": GRAPH, **graph_info},
        "threshold": float(detector.threshold_),
        "threshold_rule": _jsonable(detector.threshold_rule_),
        "contamination": _jsonable(detector.contamination),
        "calibration": detector.calibration_,
        "fit_scores": fit_score_summary(detector.decision_scores_),
        "training": {"fingerprint": detector.fingerprint_, "seed": int(detector.seed_),
                     "history": _jsonable(getattr(detector, "history_", {}))},
        "extra": _jsonable(extra),
        "versions": library_versions(),
        "files": files,
    }


def manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest's canonical JSON without its own digest field."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def seal_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """Add ``manifest_sha256`` so an edited manifest (threshold, features) is refused like a changed graph."""
    return {**manifest, "manifest_sha256": manifest_digest(manifest)}


def _prepare_target(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise ArtifactError(f"{path} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not (path / MANIFEST).exists():
        raise ArtifactError(f"{path} is a non-empty folder that is not an aeguard artifact; refusing to overwrite")


def _normal_permissions(folder: Path) -> None:
    """mkdtemp makes the folder 0700; give it (and its files) what a plain mkdir/open would: 0777/0666 minus the
    umask (0755/0644 by default), so a service user can read the artifact."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(folder, 0o777 & ~mask)
    for item in folder.iterdir():
        os.chmod(item, 0o666 & ~mask)


def write_artifact(path: str | Path, graph_file: Path, manifest_fn: Any) -> Path:
    """Move ``graph_file`` into a fresh artifact at ``path`` and write the manifest built by
    ``manifest_fn(files)``; the folder appears complete or not at all."""
    path = Path(path)
    _prepare_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        shutil.move(str(graph_file), staging / GRAPH)
        files = {GRAPH: {"sha256": sha256_file(staging / GRAPH), "bytes": (staging / GRAPH).stat().st_size}}
        manifest = seal_manifest(manifest_fn(files))
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, allow_nan=False) + "\n")
        _normal_permissions(staging)
        if path.exists():
            shutil.rmtree(path)
        os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return path


def save_artifact(detector: Any, path: str | Path, variant: str = "fp32") -> Path:
    """Export a fitted detector's scoring graph and write the artifact folder."""
    if not getattr(detector, "exportable", False):
        raise ArtifactError(f"{type(detector).__name__} does not export to ONNX; it cannot be saved as an artifact")
    detector._check_fitted()
    _prepare_target(Path(path))  # fail before the (slow) export, not after
    with tempfile.TemporaryDirectory() as tmp:
        graph_file = Path(tmp) / GRAPH
        graph_info = detector.export_onnx(graph_file, variant=variant)
        return write_artifact(path, graph_file, lambda files: build_manifest(detector, graph_info, files))


# --- loading (torch-free) -------------------------------------------------------------------------


def read_manifest(path: str | Path, verify: bool = True) -> dict[str, Any]:
    """Read and check an artifact's manifest; with ``verify``, check every file's sha256 too."""
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"artifact not found: {path} is not a folder")
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise ArtifactError(f"{path} is not an aeguard artifact: {MANIFEST} is missing")
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{mpath} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{mpath} is not an aeguard manifest")
    version = manifest.get("format_version")
    if version not in SUPPORTED_VERSIONS:
        raise ArtifactError(f"artifact format version {version!r} is not supported by this aeguard "
                            f"(supports {list(SUPPORTED_VERSIONS)}); re-export it or upgrade aeguard")
    if verify and manifest.get("manifest_sha256") != manifest_digest(manifest):
        raise ArtifactError(f"{mpath} was modified after export (manifest checksum mismatch); refusing to load it")
    files = manifest.get("files")
    graph = manifest.get("graph", {}).get("file")
    if not isinstance(files, dict) or graph not in files:
        raise ArtifactError(f"{mpath} lists no checksum for its graph file")
    if verify:
        for name, meta in files.items():
            fpath = path / name
            if Path(name).is_absolute() or ".." in Path(name).parts:
                raise ArtifactError(f"manifest names a file outside the artifact: {name!r}")
            if not fpath.is_file():
                raise ArtifactError(f"artifact file missing: {name}")
            if sha256_file(fpath) != meta.get("sha256"):
                raise ArtifactError(f"checksum mismatch for {name}: the artifact was modified or corrupted; "
                                    "refusing to load it")
    return manifest


@dataclass
class ScoredBatch:
    """Scores for one batch, in input order."""

    score: np.ndarray
    label: np.ndarray
    probability: np.ndarray
    threshold: float
    contrib: np.ndarray | None = None
    components: dict[str, np.ndarray] = field(default_factory=dict)

    def to_frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame({"score": self.score, "label": self.label, "probability": self.probability})


class Artifact:
    """A verified artifact with an onnxruntime session; the estimator API without training."""

    def __init__(self, path: str | Path, device: str = "auto", threads: int | None = None) -> None:
        from aeguard.core.runtime import make_session, session_device

        self.path = Path(path)
        self.manifest = read_manifest(self.path, verify=True)
        try:
            self.session = make_session(self.path / self.manifest["graph"]["file"], device=device,
                                        threads=threads)
        except RuntimeError:
            raise
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable graphs
            raise ArtifactError(f"onnxruntime cannot load {self.path / GRAPH}: {exc}") from None
        self.device = session_device(self.session)
        self.feature_names: list[str] = list(self.manifest["features"]["names"])
        self.n_features_in_ = int(self.manifest["features"]["n_features"])
        self.threshold_ = float(self.manifest["threshold"])
        self.calibration_ = dict(self.manifest["calibration"])
        self.output_names = [o.name for o in self.session.get_outputs()]
        #: rows per onnxruntime call, from the graph's recorded memory per row and the scoring budget
        self.chunk_rows = chunk_rows(self.manifest["graph"].get("bytes_per_row"))
        self._check_graph()

    def _check_graph(self) -> None:
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ArtifactError(f"graph has {len(inputs)} inputs, expected 1")
        width = inputs[0].shape[-1]
        if isinstance(width, int) and width != self.n_features_in_:
            raise ArtifactError(f"mismatched artifact: graph takes {width} features, manifest lists "
                                f"{self.n_features_in_}")
        if len(self.feature_names) != self.n_features_in_:
            raise ArtifactError("mismatched artifact: feature names and n_features disagree")
        missing = {"score", "contrib"} - set(self.output_names)
        if missing:
            raise ArtifactError(f"mismatched artifact: graph lacks outputs {sorted(missing)}")
        self.input_name = inputs[0].name

    @property
    def detector_name(self) -> str:
        return self.manifest["detector"]["name"]

    def validate(self, X: Any) -> np.ndarray:
        names = self.feature_names if feature_names_of(X) is not None else None
        return check_features(X, feature_names=names, n_features=self.n_features_in_)

    def run(self, X: np.ndarray, batch_rows: int | None = None) -> dict[str, np.ndarray]:
        """Raw graph outputs for a validated float matrix, in chunks of ``batch_rows`` (default: the largest
        chunk within the scoring memory budget, :attr:`chunk_rows`)."""
        x32 = np.ascontiguousarray(X, dtype=np.float32)

        def one(xb: np.ndarray) -> dict[str, np.ndarray]:
            return dict(zip(self.output_names, self.session.run(None, {self.input_name: xb})))

        return run_chunked(one, x32, batch_rows or self.chunk_rows, self.output_names)

    def threshold_for(self, threshold: float | None = None, contamination: Any = None) -> float:
        """The manifest threshold, or a per-call override by value or by contamination."""
        if threshold is not None and contamination is not None:
            raise ValueError("give either threshold or contamination, not both")
        if threshold is not None:
            if not np.isfinite(threshold):
                raise ValueError("threshold must be a finite number")
            return float(threshold)
        if contamination is not None:
            summary = self.manifest["fit_scores"]
            rate = th.check_contamination(contamination)
            if rate == "auto":
                return float(summary["auto_threshold"])
            quantiles = np.asarray(summary["quantiles"], dtype=np.float64)
            return float(np.interp(1.0 - float(rate), np.linspace(0.0, 1.0, len(quantiles)), quantiles))
        return self.threshold_

    def score(self, X: Any, threshold: float | None = None, contamination: Any = None) -> ScoredBatch:
        """Validate ``X`` (array or DataFrame), score it, label it and calibrate it."""
        arr = self.validate(X)
        cut = self.threshold_for(threshold, contamination)
        outs = self.run(arr)
        score = outs["score"].astype(np.float64)
        comps = {k: v for k, v in outs.items() if k not in ("score", "contrib")}
        return ScoredBatch(score=score, label=th.labels(score, cut),
                           probability=th.probability(score, self.calibration_), threshold=cut,
                           contrib=outs["contrib"].astype(np.float64), components=comps)

    # estimator-style aliases -------------------------------------------------------------------------
    def decision_function(self, X: Any) -> np.ndarray:
        return self.score(X).score

    def predict(self, X: Any) -> np.ndarray:
        return self.score(X).label

    def predict_proba(self, X: Any) -> np.ndarray:
        p = self.score(X).probability
        return np.column_stack([1.0 - p, p])

    def explain(self, X: Any) -> Any:
        import pandas as pd

        return pd.DataFrame(self.score(X).contrib, columns=self.feature_names)


def load_artifact(path: str | Path, device: str = "auto", threads: int | None = None) -> Artifact:
    """Load and verify an artifact for scoring (torch-free)."""
    return Artifact(path, device=device, threads=threads)
