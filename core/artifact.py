"""Artifacts: the deployable unit, an ONNX graph plus a JSON manifest, loaded without torch.

Layout of an artifact folder::

    model.onnx      raw features in; preprocessing, network and scoring head inside the graph
    manifest.json   format version, detector and parameters, features, threshold, calibration,
                    training fingerprint, library versions, sha256 of every file

Loading checks the format version and every checksum before onnxruntime sees a byte, and checks that the
graph's input shape and outputs agree with the manifest. Nothing is ever pickled. The folder is untrusted
input (docs/security.md): plain file names that stay inside it (symlinks included), size caps, a strict schema
for the fields the loader reads (unknown keys refused in ``features``, ``input`` and ``files`` entries), the
graph checks of :mod:`aeguard.core.graphcheck`, optional Ed25519 signatures (:mod:`aeguard.core.signing`), and
onnxruntime gets the very bytes that were hashed and checked.

Format version 2 added the ``input`` block (``modality`` "tabular" or "image", the shape of one row: ``[d]``
or ``[C, H, W]``, and the pixel range of images); image graphs take ``(batch, C, H, W)`` raw pixels and
scale and standardize them per channel inside the graph (``preprocessing`` records the statistics).
Version 1 manifests (tables only, no ``input`` block) still load, as tables.
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
from aeguard.core.validation import check_layout

FORMAT = "aeguard-artifact"
FORMAT_VERSION = 2
SUPPORTED_VERSIONS = (1, 2)
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
    if hasattr(std, "manifest"):
        preprocessing = std.manifest()
    elif std is not None:
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
        "input": input_block(detector),
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


def input_block(detector: Any) -> dict[str, Any]:
    """What one input row is: a table row of d features, or a (C, H, W) image with its pixel range."""
    if hasattr(detector, "image_shape_"):
        return {"modality": "image", "shape": [int(v) for v in detector.image_shape_],
                "pixel_range": [float(v) for v in detector.pixel_range_]}
    return {"modality": "tabular", "shape": [int(detector.n_features_in_)]}


def read_input_block(manifest: dict[str, Any]) -> tuple[str, tuple[int, ...], tuple[float, float] | None]:
    """(modality, row shape, pixel range) from a manifest; format 1 has no block and means a table."""
    n_features = int(manifest["features"]["n_features"])
    block = manifest.get("input") or {"modality": "tabular", "shape": [n_features]}
    try:
        modality = block["modality"]
        shape = tuple(int(v) for v in block["shape"])
        if modality == "image":
            from aeguard.core.validation import check_pixel_range

            if len(shape) != 3 or min(shape) < 1:
                raise ValueError(f"image shape {list(shape)} is not [C, H, W]")
            return modality, shape, check_pixel_range(block["pixel_range"])
        if modality != "tabular" or len(shape) != 1:
            raise ValueError(f"modality {modality!r} with shape {list(shape)}")
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"manifest input block is malformed: {exc}") from None
    return modality, shape, None


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
        old = None
        if path.exists():  # two renames, then the delete: a kill leaves the old or the new artifact, whole
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, old / path.name)
        os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
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


#: the most bytes a manifest may have (a real one is tens of KiB) and any one listed file (env in MiB)
MAX_MANIFEST_BYTES = 16 << 20
ENV_MAX_FILE_MB = "AEGUARD_MAX_ARTIFACT_MB"
DEFAULT_MAX_FILE_MB = 2048
#: manifest blocks the loader trusts for what it opens and how it shapes input: unknown keys there are refused
#: (a newer writer's field the loader would silently ignore). Other blocks (graph tool info, training, extra
#: written by plugins' ``manifest_extra``) stay open for exporters and plugins.
STRICT_BLOCKS = {"features": frozenset({"names", "n_features", "dtype", "named"}),
                 "input": frozenset({"modality", "shape", "pixel_range"})}
#: strict blocks a manifest may leave out (format 1 has no ``input`` block)
OPTIONAL_BLOCKS = ("input",)
FILE_KEYS = frozenset({"sha256", "bytes"})


def max_file_bytes() -> int:
    """The size cap of each listed artifact file (``AEGUARD_MAX_ARTIFACT_MB``, default 2048 MiB)."""
    raw = os.environ.get(ENV_MAX_FILE_MB, "").strip()
    try:
        return int(float(raw) * (1 << 20)) if raw else DEFAULT_MAX_FILE_MB << 20
    except ValueError:
        raise ValueError(f"{ENV_MAX_FILE_MB} must be a number of MiB, got {raw!r}") from None


def _inside(path: Path, name: str) -> Path:
    """``path / name`` for a plain relative name whose real location (symlinks resolved) is inside ``path``."""
    if not isinstance(name, str) or not name or "\\" in name or "\x00" in name or Path(name).is_absolute() \
            or ".." in Path(name).parts:
        raise ArtifactError(f"manifest names a file outside the artifact: {name!r}")
    fpath = path / name
    if fpath.is_symlink() or fpath.exists():
        try:
            fpath.resolve().relative_to(path.resolve())
        except ValueError:
            raise ArtifactError(f"{name} is a symlink pointing out of the artifact folder "
                                f"(to {os.path.realpath(fpath)}); refusing to follow it") from None
    return fpath


def _read_capped(fpath: Path, cap: int, what: str) -> bytes:
    size = fpath.stat().st_size
    if size > cap:
        raise ArtifactError(f"{what} has {size} bytes, over the cap of {cap} bytes ({ENV_MAX_FILE_MB} for graphs); "
                            "refusing to read it")
    with open(fpath, "rb") as fh:
        data = fh.read(cap + 1)
    if len(data) > cap:
        raise ArtifactError(f"{what} grew past the cap of {cap} bytes while being read")
    return data


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        dupe = next(k for k in keys if keys.count(k) > 1)
        raise ArtifactError(f"duplicate key {dupe!r} in the manifest (two readers could see different values)")
    return dict(pairs)


def _no_constant(text: str) -> Any:
    raise ArtifactError(f"non-finite number {text} in the manifest")


def parse_manifest(data: bytes, where: str = MANIFEST) -> dict[str, Any]:
    """Manifest bytes -> dict; any malformed input raises :class:`ArtifactError` (never another exception)."""
    try:
        manifest = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        if isinstance(exc, ArtifactError):
            raise
        raise ArtifactError(f"{where} is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{where} is not an aeguard manifest")
    version = manifest.get("format_version")
    if version not in SUPPORTED_VERSIONS or type(version) is not int:
        raise ArtifactError(f"artifact format version {version!r} is not supported by this aeguard "
                            f"(supports {list(SUPPORTED_VERSIONS)}); re-export it or upgrade aeguard")
    _check_schema(manifest, where)
    return manifest


def _is_num(v: Any) -> bool:
    return type(v) in (int, float) and np.isfinite(v)


def _check_schema(m: dict[str, Any], where: str) -> None:
    """The types of every field the loader reads, and no unknown keys in :data:`STRICT_BLOCKS`."""
    def bad(field: str, want: str) -> ArtifactError:
        return ArtifactError(f"{where}: {field} must be {want}")

    for block, allowed in STRICT_BLOCKS.items():
        value = m.get(block)
        if value is None and block in OPTIONAL_BLOCKS:
            continue
        if not isinstance(value, dict):
            raise bad(block, "an object")
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise ArtifactError(f"{where}: unknown key(s) {unknown} in the security-relevant block {block!r} "
                                f"(known: {sorted(allowed)}); refusing a manifest this aeguard cannot fully check")
    feats = m["features"]
    names = feats.get("names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise bad("features.names", "a non-empty list of strings")
    if len(set(names)) != len(names):
        raise bad("features.names", "unique")
    n = feats.get("n_features")
    if type(n) is not int or n != len(names):
        raise ArtifactError(f"mismatched artifact: feature names and n_features disagree in {where}")
    if feats.get("dtype", "float32") != "float32":
        raise bad("features.dtype", "'float32'")
    files = m.get("files")
    if not isinstance(files, dict) or not files:
        raise ArtifactError(f"{where} lists no checksum for its graph file")
    for name, meta in files.items():
        if not isinstance(meta, dict) or set(meta) - FILE_KEYS or not isinstance(meta.get("sha256"), str):
            raise ArtifactError(f"{where}: files[{name!r}] must be {{'sha256': hex, 'bytes': int}} with no other "
                                f"keys, got {meta!r}"[:300])
        if "bytes" in meta and (type(meta["bytes"]) is not int or meta["bytes"] < 0):
            raise bad(f"files[{name!r}].bytes", "a non-negative integer")
    graph = m.get("graph")
    if not isinstance(graph, dict) or not isinstance(graph.get("file"), str) or graph["file"] not in files:
        raise ArtifactError(f"{where} lists no checksum for its graph file")
    outputs = graph.get("outputs")
    if outputs is not None and (not isinstance(outputs, list) or not all(isinstance(o, str) for o in outputs)):
        raise bad("graph.outputs", "a list of strings")
    bpr = graph.get("bytes_per_row")
    if bpr is not None and (type(bpr) is not int or bpr < 1):
        raise bad("graph.bytes_per_row", "a positive integer")
    if not _is_num(m.get("threshold")):
        raise bad("threshold", "a finite number")
    cal = m.get("calibration")
    if not isinstance(cal, dict) or not _is_num(cal.get("min")) or not _is_num(cal.get("max")):
        raise bad("calibration", "an object with finite 'min' and 'max'")
    fit = m.get("fit_scores")
    if fit is not None:
        q = fit.get("quantiles") if isinstance(fit, dict) else None
        if not isinstance(q, list) or len(q) < 2 or not all(_is_num(v) for v in q) \
                or not _is_num(fit.get("auto_threshold")):
            raise bad("fit_scores", "an object with a list of finite 'quantiles' and a finite 'auto_threshold'")
    if not isinstance(m.get("versions", {}), dict):
        raise bad("versions", "an object")
    det = m.get("detector")
    if not isinstance(det, dict) or not isinstance(det.get("name"), str):
        raise bad("detector.name", "a string")


def _verified(path: str | Path, verify: bool, trusted_keys: str | Path | None,
              keep_graph: bool = False) -> tuple[dict[str, Any], bytes | None]:
    """The manifest and, with ``keep_graph``, the graph file's bytes exactly as hashed (what is checked is what
    runs)."""
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"artifact not found: {path} is not a folder")
    mpath = _inside(path, MANIFEST)
    if not mpath.is_file():
        raise ArtifactError(f"{path} is not an aeguard artifact: {MANIFEST} is missing")
    data = _read_capped(mpath, MAX_MANIFEST_BYTES, str(mpath))
    from aeguard.core.signing import trusted_keys_location

    trusted = trusted_keys_location(trusted_keys)
    if trusted is not None:
        from aeguard.core.signing import verify_signature

        verify_signature(path, data, trusted)  # before the JSON parser sees a byte of an unsigned manifest
    manifest = parse_manifest(data, str(mpath))
    if verify and manifest.get("manifest_sha256") != manifest_digest(manifest):
        raise ArtifactError(f"{mpath} was modified after export (manifest checksum mismatch); refusing to load it")
    kept = None
    keep = manifest["graph"]["file"] if keep_graph else None
    if verify:
        cap = max_file_bytes()
        for name, meta in manifest["files"].items():
            fpath = _inside(path, name)
            if not fpath.is_file():
                raise ArtifactError(f"artifact file missing: {name}")
            if fpath.stat().st_size > cap:
                raise ArtifactError(f"{name} has {fpath.stat().st_size} bytes, over the cap of {cap} bytes per "
                                    f"artifact file ({ENV_MAX_FILE_MB}); refusing to load it")
            if name == keep:
                kept = _read_capped(fpath, cap, name)
                digest = hashlib.sha256(kept).hexdigest()
            else:
                digest = sha256_file(fpath)
            if digest != meta["sha256"]:
                raise ArtifactError(f"checksum mismatch for {name}: the artifact was modified or corrupted; "
                                    "refusing to load it")
    return manifest, kept


def read_manifest(path: str | Path, verify: bool = True, trusted_keys: str | Path | None = None) -> dict[str, Any]:
    """Read and check an artifact's manifest; with ``verify``, check every file's sha256, size and location too.

    With ``trusted_keys`` (a folder of ``*.pub`` files; default ``$AEGUARD_TRUSTED_KEYS``) the manifest must
    carry a valid signature by one of them (:mod:`aeguard.core.signing`)."""
    return _verified(path, verify, trusted_keys)[0]


def check_graph(data: bytes, manifest: dict[str, Any]) -> None:
    """The untrusted-graph checks of :mod:`aeguard.core.graphcheck`, and the graph's inputs and outputs
    against the manifest, before onnxruntime parses the bytes."""
    from aeguard.core.graphcheck import FLOAT, GraphError, inspect_graph

    name = manifest["graph"]["file"]
    try:
        facts = inspect_graph(data)
    except GraphError as exc:
        raise ArtifactError(f"refusing {name}: {exc}") from None
    if len(facts.inputs) != 1:
        raise ArtifactError(f"mismatched artifact: graph has {len(facts.inputs)} inputs {facts.inputs}, expected 1")
    declared_in = manifest["graph"].get("input")
    if declared_in is not None and facts.inputs != [declared_in]:
        raise ArtifactError(f"mismatched artifact: graph input {facts.inputs[0]!r}, manifest says {declared_in!r}")
    if facts.input_types != [FLOAT]:
        raise ArtifactError(f"mismatched artifact: graph input is not float32 (ONNX type {facts.input_types[0]})")
    declared_out = manifest["graph"].get("outputs")
    if declared_out is not None and facts.outputs != declared_out:
        raise ArtifactError(f"mismatched artifact: graph outputs {facts.outputs}, manifest lists {declared_out}")


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

    def __init__(self, path: str | Path, device: str = "auto", threads: int | None = None,
                 trusted_keys: str | Path | None = None, session_options: dict[str, Any] | None = None) -> None:
        from aeguard.core.runtime import make_session, session_device

        self.path = Path(path)
        self.manifest, graph_bytes = _verified(self.path, True, trusted_keys, keep_graph=True)
        graph_bytes = graph_bytes if graph_bytes is not None else b""
        check_graph(graph_bytes, self.manifest)
        try:  # from the bytes that were hashed and checked: nothing is read again from the folder
            self.session = make_session(graph_bytes, device=device, threads=threads, **(session_options or {}))
        except RuntimeError:
            raise
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable graphs
            raise ArtifactError(f"onnxruntime cannot load {self.path / GRAPH}: {str(exc)[:300]}") from None
        self.device = session_device(self.session)
        self.feature_names: list[str] = list(self.manifest["features"]["names"])
        self.n_features_in_ = int(self.manifest["features"]["n_features"])
        #: "tabular" or "image"; the shape of one row ((d,) or (C, H, W)); for images the pixel range of the fit
        self.modality, self.input_shape, self.pixel_range = read_input_block(self.manifest)
        self.image_shape: tuple[int, ...] | None = self.input_shape if self.modality == "image" else None
        self.threshold_ = float(self.manifest["threshold"])
        self.calibration_ = dict(self.manifest["calibration"])
        self.output_names = [o.name for o in self.session.get_outputs()]
        #: rank of each graph output (None: not declared): 1 for one value per row (score, most components), 2+
        #: for per-row vectors (``contrib``; a code or embedding output such as ``code``, B x n_latents)
        self.output_ranks = {o.name: len(o.shape) if isinstance(o.shape, (list, tuple)) else None
                             for o in self.session.get_outputs()}
        #: rows per onnxruntime call, from the graph's recorded memory per row and the scoring budget
        self.chunk_rows = chunk_rows(self.manifest["graph"].get("bytes_per_row"))
        self._check_graph()

    def _check_graph(self) -> None:
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ArtifactError(f"graph has {len(inputs)} inputs, expected 1")
        dims = list(inputs[0].shape[1:])
        if self.modality == "tabular":
            width = dims[-1] if dims else None
            if len(dims) != 1 or (isinstance(width, int) and width != self.n_features_in_):
                raise ArtifactError(f"mismatched artifact: graph takes {width} features, manifest lists "
                                    f"{self.n_features_in_}")
        elif len(dims) != len(self.input_shape) or any(isinstance(g, int) and g != m
                                                       for g, m in zip(dims, self.input_shape)):
            raise ArtifactError(f"mismatched artifact: graph takes images of shape {dims}, manifest says "
                                f"{list(self.input_shape)}")
        if int(np.prod(self.input_shape)) != self.n_features_in_:
            raise ArtifactError("mismatched artifact: input shape and n_features disagree")
        if len(self.feature_names) != self.n_features_in_:
            raise ArtifactError("mismatched artifact: feature names and n_features disagree")
        missing = {"score", "contrib"} - set(self.output_names)
        if missing:
            raise ArtifactError(f"mismatched artifact: graph lacks outputs {sorted(missing)}")
        self.input_name = inputs[0].name

    @property
    def component_names(self) -> list[str]:
        """Named outputs besides score and contrib with one value per row (:func:`core.outputs.component_names`)."""
        from aeguard.core.outputs import component_names

        return component_names(self)

    @property
    def vector_output_names(self) -> list[str]:
        """Named outputs with several values per row (``code``): in ``score().components`` and HTTP responses,
        not in CSV columns."""
        from aeguard.core.outputs import vector_output_names

        return vector_output_names(self)

    @property
    def detector_name(self) -> str:
        return self.manifest["detector"]["name"]

    def validate(self, X: Any) -> np.ndarray:
        """``X`` checked against the artifact's input: a table (by name or width) or images of its shape."""
        return check_layout(X, owner=f"artifact {self.detector_name!r}", n_features=self.n_features_in_,
                            feature_names=self.feature_names, image_shape=self.image_shape,
                            pixel_range=self.pixel_range)

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

    def explain_maps(self, X: Any) -> np.ndarray:
        """Per-pixel contribution maps (N, C, H, W) of an image artifact."""
        if self.image_shape is None:
            raise ValueError(f"artifact {self.detector_name!r} takes tables; use explain(X)")
        return self.score(X).contrib.reshape(-1, *self.image_shape)


def load_artifact(path: str | Path, device: str = "auto", threads: int | None = None,
                  trusted_keys: str | Path | None = None) -> Artifact:
    """Load and verify an artifact for scoring (torch-free); ``trusted_keys`` (default ``$AEGUARD_TRUSTED_KEYS``)
    requires a valid signature by one of those keys."""
    return Artifact(path, device=device, threads=threads, trusted_keys=trusted_keys)
