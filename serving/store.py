"""Artifacts for serving: resolve folder paths or BentoML model-store tags, and import artifacts into the store.

A model-store entry is an artifact folder copied verbatim (``manifest.json`` + ``model.onnx``) with the
manifest as metadata, so loading it goes through the same checksum-verified, torch-free
:func:`aeguard.core.artifact.load_artifact` as a plain folder. bentoml is imported only for store look-ups.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aeguard.core.artifact import MANIFEST, Artifact, ArtifactError, read_manifest
from aeguard.core.signing import SIGNATURE
from aeguard.serving.runtime import load_for_serving, session_settings

#: label that marks a model-store entry as an aeguard artifact
STORE_LABEL = {"framework": "aeguard"}
_NAME_OK = re.compile(r"[^a-z0-9_.-]+")


@dataclass
class ModelRef:
    """One entry of AEGUARD_ARTIFACTS: ``[alias=]path-or-tag``."""

    alias: str | None
    ref: str

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        alias, sep, ref = text.partition("=")
        if not sep:
            return cls(None, text.strip())
        alias, ref = alias.strip(), ref.strip()
        if not alias or not ref:
            raise ValueError(f"artifact entry {text!r} must be PATH, TAG or ALIAS=PATH/TAG")
        return cls(alias, ref)


@dataclass
class ResolvedModel:
    """Where an artifact lives, under which name and version it is served."""

    name: str
    path: Path
    version: str
    source: str  # "path" or "store"
    tag: str | None = None


@dataclass
class LoadedModel:
    name: str
    version: str
    source: str
    tag: str | None
    artifact: Artifact

    @property
    def n_features(self) -> int:
        return self.artifact.n_features_in_

    def describe(self) -> dict[str, Any]:
        """The ``/models`` entry: the manifest plus where and how this worker serves it."""
        manifest = self.artifact.manifest
        return {
            "name": self.name,
            "version": self.version,
            "source": self.source,
            "tag": self.tag,
            "device": self.artifact.device,
            "detector": manifest["detector"]["name"],
            "features": list(self.artifact.feature_names),
            "n_features": self.n_features,
            "threshold": self.artifact.threshold_,
            "versions": manifest.get("versions", {}),
            "session": session_settings(self.artifact),
            "manifest": manifest,
        }


def store_name(text: str) -> str:
    """A valid model-store name from a folder name (lower case, ``[a-z0-9_.-]``)."""
    name = _NAME_OK.sub("-", text.lower()).strip("-.")
    return name or "aeguard-model"


def _graph_version(path: Path, manifest: dict[str, Any]) -> str:
    """Folders have no version of their own: use the graph's checksum, which names the exact artifact."""
    return manifest["files"][manifest["graph"]["file"]]["sha256"][:12]


def resolve(ref: ModelRef) -> ResolvedModel:
    """A folder when ``ref`` is an existing path, else a model-store tag (``name`` or ``name:version``)."""
    path = Path(ref.ref).expanduser()
    if path.exists():
        manifest = read_manifest(path, verify=False)
        return ResolvedModel(name=ref.alias or store_name(path.resolve().name), path=path.resolve(),
                             version=_graph_version(path, manifest), source="path")
    if "/" in ref.ref or ref.ref.startswith("."):
        raise ArtifactError(f"artifact not found: {ref.ref} is not a folder")
    model = get_store_model(ref.ref)
    return ResolvedModel(name=ref.alias or model.tag.name, path=Path(model.path), version=str(model.tag.version),
                         source="store", tag=str(model.tag))


def get_store_model(tag: str) -> Any:
    import bentoml
    from bentoml.exceptions import BentoMLException, NotFound

    try:
        model = bentoml.models.get(tag)
    except NotFound:
        raise ArtifactError(f"artifact not found: {tag!r} is neither a folder nor a tag in the BentoML model "
                            "store (add it with `aeguard models import`)") from None
    except (BentoMLException, ValueError) as exc:
        raise ArtifactError(f"invalid artifact reference {tag!r}: {exc}") from None
    if not (Path(model.path) / MANIFEST).is_file():
        raise ArtifactError(f"model-store entry {model.tag} is not an aeguard artifact (no {MANIFEST})")
    return model


def resolve_all(refs: list[str] | tuple[str, ...]) -> list[ResolvedModel]:
    """Resolve every entry; names must be unique (use ``alias=`` to serve two versions side by side)."""
    if not refs:
        raise ValueError("no artifacts configured: set AEGUARD_ARTIFACTS (or pass them to `aeguard serve`, or "
                         "build a bento that lists them under `models:`)")
    resolved = [resolve(ModelRef.parse(r)) for r in refs]
    names = [r.name for r in resolved]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"two artifacts are served under the same name {dupes}; give them aliases (ALIAS=PATH)")
    return resolved


def load_models(refs: list[str] | tuple[str, ...], device: str = "auto", threads: int = 1,
                spinning: bool = False, trusted_keys: str | None = None) -> list[LoadedModel]:
    """Resolve and load every artifact (checksums verified, one onnxruntime session each, with the serving
    thread settings of :mod:`aeguard.serving.runtime`)."""
    return [LoadedModel(name=r.name, version=r.version, source=r.source, tag=r.tag,
                        artifact=load_for_serving(r.path, device=device, threads=threads, spinning=spinning,
                                                  trusted_keys=trusted_keys))
            for r in resolve_all(refs)]


def _metadata(manifest: dict[str, Any]) -> dict[str, Any]:
    """Model-store metadata: a readable summary plus the whole manifest as JSON (metadata cannot hold null)."""
    graph = manifest["graph"]["file"]
    return {
        "format": manifest["format"],
        "format_version": manifest["format_version"],
        "detector": manifest["detector"]["name"],
        "features": manifest["features"]["names"],
        "n_features": manifest["features"]["n_features"],
        "threshold": manifest["threshold"],
        "graph_sha256": manifest["files"][graph]["sha256"],
        "versions": {k: str(v) for k, v in manifest.get("versions", {}).items()},
        "manifest": json.dumps(manifest, allow_nan=False),
    }


def import_artifact(path: str | Path, name: str | None = None) -> Any:
    """Copy a verified artifact folder into the BentoML model store; returns the new ``bentoml.Model``."""
    import bentoml

    path = Path(path)
    manifest = read_manifest(path, verify=True)
    name = store_name(name) if name else store_name(path.resolve().name)
    labels = {**STORE_LABEL, "detector": store_name(manifest["detector"]["name"])}
    with bentoml.models.create(name, labels=labels, metadata=_metadata(manifest)) as model:
        signature = [SIGNATURE] if (path / SIGNATURE).is_file() else []
        for fname in [MANIFEST, *signature, *manifest["files"]]:
            shutil.copy2(path / fname, Path(model.path) / fname)
    read_manifest(model.path, verify=True)  # the copy is complete and intact
    return model


def list_store_models() -> list[Any]:
    """aeguard artifacts in the model store, newest first."""
    import bentoml

    models = [m for m in bentoml.models.list() if m.info.labels.get("framework") == STORE_LABEL["framework"]]
    return sorted(models, key=lambda m: m.info.creation_time, reverse=True)

