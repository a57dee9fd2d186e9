"""Download registered datasets into the data dir, accepting only bytes whose SHA-256 matches the registry.

A download streams into a hidden temp file next to its destination and is renamed into place only after the
checksum matches, so an interrupted or corrupted download never leaves a file that looks like a dataset.
Each dataset gets its own ``FetchResult``; one failure does not stop the others.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .paths import resolve_data_dir
from .registry import ODDS, DatasetInfo, unknown_names_message

#: Base URL of a mirror serving ``<name>.<file_format>`` files; overrides the registry URLs.
MIRROR_ENV_VAR = "AEGUARD_ODDS_MIRROR"

DOWNLOADED = "downloaded"
PRESENT = "present"
CHECKSUM_MISMATCH = "checksum mismatch"
NO_SOURCE = "no public source"
NO_CHECKSUM = "no checksum"
ERROR = "error"

_CHUNK = 1 << 20
_TIMEOUT_S = 60


class ChecksumError(ValueError):
    """Downloaded bytes do not match the registry's SHA-256."""


@dataclass(frozen=True)
class FetchResult:
    """Outcome for one dataset: ``status`` is one of the module's status constants."""

    name: str
    status: str
    path: Path | None = None
    url: str | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        """True when a verified file is in place (freshly downloaded or already present)."""
        return self.status in (DOWNLOADED, PRESENT)


def fetch_datasets(
    names: list[str] | None = None,
    data_dir: str | Path | None = None,
    *,
    base_urls: Mapping[str, str] | None = None,
    progress: bool = True,
    registry: Mapping[str, DatasetInfo] | None = None,
) -> list[FetchResult]:
    """Fetch ``names`` (default: every registered dataset) into the resolved data dir.

    URL precedence per dataset: ``base_urls[name]`` (a base URL, like the mirror), then
    ``$AEGUARD_ODDS_MIRROR``, then the registry URL; a base URL serves ``f"{base}/{name}.{file_format}"``.
    ``registry`` replaces the ODDS table (tests, private collections). Unknown names raise ValueError before
    anything is downloaded.
    """
    table = ODDS if registry is None else registry
    selected = _select(names, table)
    folder = resolve_data_dir(data_dir)
    return [
        fetch_one(table[name], folder, url=source_url(table[name], base_urls), progress=progress)
        for name in selected
    ]


def fetch_one(info: DatasetInfo, data_dir: Path, *, url: str | None, progress: bool = True) -> FetchResult:
    """Fetch one dataset from ``url`` into ``data_dir``, skipping the download if a verified copy exists."""
    target = data_dir / info.filename
    if target.is_file() and info.sha256 and sha256_file(target) == info.sha256:
        return FetchResult(info.name, PRESENT, target, url, "already present, checksum verified")
    if target.is_file() and not info.sha256:
        return FetchResult(info.name, PRESENT, target, url, "already present (no reference checksum)")
    if url is None:
        return FetchResult(info.name, NO_SOURCE, None, None, _no_source_message(info))
    if not info.sha256:
        message = f"no reference SHA-256 is known, so {url} cannot be verified; place {info.filename} by hand"
        return FetchResult(info.name, NO_CHECKSUM, None, url, message)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        download_verified(url, target, info.sha256, progress=progress)
    except ChecksumError as exc:
        return FetchResult(info.name, CHECKSUM_MISMATCH, None, url, str(exc))
    except (OSError, ValueError, http.client.HTTPException) as exc:  # URLError and HTTPError are OSErrors
        return FetchResult(info.name, ERROR, None, url, f"download from {url} failed: {_describe(exc)}")
    return FetchResult(info.name, DOWNLOADED, target, url, "downloaded, checksum verified")


def download_verified(url: str, target: Path, sha256: str, *, progress: bool = True) -> Path:
    """Stream ``url`` into a temp file beside ``target``; rename it into place only if the SHA-256 matches."""
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
    try:
        with tmp.open("xb") as out, urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
            total = _content_length(response)
            digest = _stream(response, out, label=target.name, total=total, progress=progress)
            out.flush()
            os.fsync(out.fileno())
        if digest != sha256.lower():
            raise ChecksumError(f"checksum mismatch for {url}: got sha256 {digest}, expected {sha256}")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in chunks so large datasets do not need to fit in memory."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def source_url(info: DatasetInfo, base_urls: Mapping[str, str] | None = None) -> str | None:
    """Where to download ``info`` from: per-name base URL, then the mirror env var, then the registry."""
    base = (base_urls or {}).get(info.name) or os.environ.get(MIRROR_ENV_VAR, "").strip()
    if base:
        return f"{base.rstrip('/')}/{info.filename}"
    return info.url


def _select(names: list[str] | None, table: Mapping[str, DatasetInfo]) -> list[str]:
    if not names:
        return list(table)
    selected = list(dict.fromkeys(name.lower() for name in names))
    unknown = [name for name in selected if name not in table]
    if unknown:
        raise ValueError(unknown_names_message(unknown, table))
    return selected


def _no_source_message(info: DatasetInfo) -> str:
    return (
        f"no public download is registered for {info.name}; set {MIRROR_ENV_VAR} to a mirror serving "
        f"{info.filename} or place it in the data dir by hand"
    )


def _content_length(response) -> int | None:
    value = response.headers.get("Content-Length")
    return int(value) if value and value.isdigit() else None


def _stream(response, out, *, label: str, total: int | None, progress: bool) -> str:
    digest = hashlib.sha256()
    with _progress_bar(label, total, progress) as advance:
        while chunk := response.read(_CHUNK):
            out.write(chunk)
            digest.update(chunk)
            advance(len(chunk))
    return digest.hexdigest()


@contextmanager
def _progress_bar(label: str, total: int | None, enabled: bool) -> Iterator[Callable[[int], None]]:
    """Rich download bar on stderr (stdout stays clean for ``--json``); a no-op when disabled."""
    if not enabled:
        yield lambda _n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__
