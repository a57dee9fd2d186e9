"""Ed25519 signatures for artifacts: who wrote this artifact, not only whether it is intact.

The manifest's sha256 values detect corruption, but whoever can write the folder can rewrite the graph, the
manifest and its checksums together. A signature closes that: ``aeguard sign ARTIFACT --key KEY`` writes
``signature.json`` next to the manifest, an Ed25519 signature over the exact bytes of ``manifest.json``
(which lists the sha256 of every file, so the graph is covered too). A loader given trusted public keys
(``--trusted-keys DIR`` or ``AEGUARD_TRUSTED_KEYS``) refuses an artifact that is unsigned, signed by a key not in
the folder, or whose manifest changed after signing. Without trusted keys nothing changes.

Keys are PEM files: ``aeguard keygen -o NAME`` writes ``NAME.key`` (private, mode 0600) and ``NAME.pub``; a
trusted-keys folder holds ``*.pub`` files. ``cryptography`` (the ``sign`` extra) is imported only here, only
when a signature is made or checked.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from aeguard.core.artifact import MANIFEST, ArtifactError

SIGNATURE = "signature.json"
SIGNATURE_FORMAT = "aeguard-signature-v1"
ENV_TRUSTED_KEYS = "AEGUARD_TRUSTED_KEYS"
#: the signed message is this prefix plus the manifest bytes (a signature made for anything else never verifies)
DOMAIN = b"aeguard-artifact-signature-v1\x00"
SIGNATURE_KEYS = frozenset({"format", "algorithm", "key_id", "signature"})
MAX_SIGNATURE_BYTES = 4096


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise RuntimeError("artifact signatures need the cryptography package: install aeguard[sign]") from None
    return serialization, ed25519


def key_id(public_key: Any) -> str:
    """First 16 hex digits of the sha256 of the raw 32-byte public key (names the key in errors and files)."""
    serialization, _ = _crypto()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def keygen(output: str | Path) -> tuple[Path, Path]:
    """Write a new key pair ``OUTPUT.key`` (PKCS#8 PEM, mode 0600) and ``OUTPUT.pub``; never overwrites."""
    serialization, ed25519 = _crypto()
    base = Path(output)
    private_path, public_path = base.with_name(base.name + ".key"), base.with_name(base.name + ".pub")
    for p in (private_path, public_path):
        if p.exists():
            raise FileExistsError(f"{p} exists; refusing to overwrite a key")
    base.parent.mkdir(parents=True, exist_ok=True)
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public_path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo))
    return private_path, public_path


def load_private_key(path: str | Path) -> Any:
    serialization, ed25519 = _crypto()
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"signing key not found: {path}")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise ArtifactError(f"{path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ArtifactError(f"{path} is not an Ed25519 key (aeguard keygen makes one)")
    return key


def load_public_key(path: Path) -> Any:
    serialization, ed25519 = _crypto()
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (ValueError, TypeError) as exc:
        raise ArtifactError(f"trusted key {path} is not a PEM public key: {exc}") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ArtifactError(f"trusted key {path} is not an Ed25519 public key")
    return key


def load_trusted_keys(location: str | Path) -> dict[str, Any]:
    """``{key_id: public key}`` from a folder of ``*.pub`` files (or one ``.pub`` file); empty is an error, so a
    mistyped folder never turns the check off."""
    location = Path(location).expanduser()
    if location.is_dir():
        files = sorted(location.glob("*.pub"))
    elif location.is_file():
        files = [location]
    else:
        raise ArtifactError(f"trusted keys not found: {location} is neither a folder of *.pub files nor a .pub file")
    if not files:
        raise ArtifactError(f"no trusted keys: {location} has no *.pub files")
    keys = {}
    for f in files:
        key = load_public_key(f)
        keys[key_id(key)] = key
    return keys


def trusted_keys_location(trusted_keys: str | Path | None) -> str | Path | None:
    """The argument, else ``AEGUARD_TRUSTED_KEYS``; None means signatures are not required."""
    if trusted_keys is not None and str(trusted_keys).strip():
        return trusted_keys
    env = os.environ.get(ENV_TRUSTED_KEYS, "").strip()
    return env or None


def sign_artifact(path: str | Path, key_path: str | Path) -> Path:
    """Verify the artifact, then write ``signature.json`` over its manifest bytes; returns that file."""
    from aeguard.core.artifact import read_manifest

    path = Path(path)
    key = load_private_key(key_path)
    read_manifest(path, verify=True)
    manifest_bytes = (path / MANIFEST).read_bytes()
    record = {"format": SIGNATURE_FORMAT, "algorithm": "ed25519", "key_id": key_id(key.public_key()),
              "signature": base64.b64encode(key.sign(DOMAIN + manifest_bytes)).decode()}
    out = path / SIGNATURE
    tmp = path / f".{SIGNATURE}.tmp"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, out)
    return out


def verify_signature(path: Path, manifest_bytes: bytes, trusted_keys: str | Path) -> str:
    """Check ``signature.json`` of the artifact at ``path`` against the manifest bytes that will be used;
    returns the key id that signed it, or raises :class:`ArtifactError`."""
    from cryptography.exceptions import InvalidSignature

    keys = load_trusted_keys(trusted_keys)
    spath = path / SIGNATURE
    if spath.is_symlink() or not spath.is_file():
        raise ArtifactError(f"{path} is not signed ({SIGNATURE} is missing) and trusted keys are required "
                            f"(--trusted-keys / {ENV_TRUSTED_KEYS}); sign it with `aeguard sign`")
    if spath.stat().st_size > MAX_SIGNATURE_BYTES:
        raise ArtifactError(f"{spath} is over {MAX_SIGNATURE_BYTES} bytes: not a signature")
    try:
        record = json.loads(spath.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{spath} is not valid JSON: {exc}") from None
    if not isinstance(record, dict) or set(record) != SIGNATURE_KEYS or record["format"] != SIGNATURE_FORMAT \
            or record["algorithm"] != "ed25519":
        raise ArtifactError(f"{spath} is not an aeguard Ed25519 signature (expected exactly the keys "
                            f"{sorted(SIGNATURE_KEYS)}, format {SIGNATURE_FORMAT!r})")
    kid = record["key_id"]
    if not isinstance(kid, str) or kid not in keys:
        raise ArtifactError(f"{path} is signed by key {str(kid)[:16]!r}, which is not among the trusted keys "
                            f"{sorted(keys)}; refusing to load it")
    try:
        signature = base64.b64decode(str(record["signature"]), validate=True)
        keys[kid].verify(signature, DOMAIN + manifest_bytes)
    except (InvalidSignature, ValueError):
        raise ArtifactError(f"bad signature on {path}: {MANIFEST} was changed after it was signed by key {kid} "
                            "(or the signature was forged); refusing to load it") from None
    return kid


# --- commands -------------------------------------------------------------------------------------------


def register(app: Any) -> None:
    """``aeguard keygen`` and ``aeguard sign`` (the ``aeguard.commands`` entry point ``signing``)."""
    import typer

    def keygen_cmd(output: Path = typer.Option(..., "-o", "--output",
                                               help="Key name: writes NAME.key (private, 0600) and NAME.pub.")) -> None:
        """Make an Ed25519 key pair for signing artifacts; put NAME.pub into the trusted-keys folder."""
        private, public = keygen(output)
        print(f"wrote {private} (private: keep it secret) and {public} (copy it into the --trusted-keys folder)")

    def sign_cmd(artifact: Path = typer.Argument(..., help="Artifact folder to sign."),
                 key: Path = typer.Option(..., "--key", help="Private key file from `aeguard keygen` (NAME.key).")) \
            -> None:
        """Sign ARTIFACT's manifest (which lists every file's sha256) with an Ed25519 key: writes signature.json."""
        out = sign_artifact(artifact, key)
        print(f"signed {artifact} with key {json.loads(out.read_text())['key_id']} ({out})")

    app.command("keygen")(keygen_cmd)
    app.command("sign")(sign_cmd)
