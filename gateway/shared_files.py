"""Where the project's shared reference files are (GS1's EPCIS schema, MicroPython's source): in
`../shared/<name>/` beside the repository, or beside the repository this one was cloned from when
that is a local path, so that a clean clone made elsewhere (a CI work directory) still finds them."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _origin_root() -> Path | None:
    """The directory of the local repository this one was cloned from, if it was."""
    try:
        url = subprocess.run(["git", "-C", str(REPO_ROOT), "config", "--get", "remote.origin.url"],
                             capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(url).resolve() if url.startswith("/") else None


def shared_places(name: str) -> list[Path]:
    """The places `../shared/<name>` may be, in order: beside this repository, then beside its origin."""
    places = [REPO_ROOT.parent / "shared" / name]
    origin = _origin_root()
    if origin is not None and origin.parent / "shared" / name not in places:
        places.append(origin.parent / "shared" / name)
    return places


def shared_dir(name: str) -> Path:
    """The first of shared_places(name) that exists, else the first (so that an error names it)."""
    places = shared_places(name)
    return next((p for p in places if p.is_dir()), places[0])
