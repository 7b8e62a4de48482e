"""Helpers of the OTA tests: releases built from a patched copy of sqalfw."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from gateway.ota import release as rel

REPO = Path(__file__).resolve().parents[2]

# a release whose sensors are never brought up: no reading, no sample, its health check cannot pass
BLIND = ("        self._last_init = self.board.ticks_ms()\n",
         ("        self._last_init = self.board.ticks_ms()\n        self._fail('tof', 'blind release')\n"
          "        self._fail('spec', 'blind release')\n        return\n"))


def patched_release(keyed: dict[str, Any], version: str, patches: dict[str, tuple[str, str]]) -> rel.Release:
    """A release built from a copy of sqalfw with text replaced: {file: (old, new)}."""
    src = keyed["root"] / f"src-{version}" / "sqalfw"
    shutil.copytree(REPO / "firmware" / "sqalfw", src, ignore=shutil.ignore_patterns("__pycache__"))
    for name, (old, new) in patches.items():
        f = src / name
        text = f.read_text()
        assert old in text, f"{name}: {old!r} not found"
        f.write_text(text.replace(old, new, 1))
    return rel.build(version, keyed["key"], keyed["out"], source=src)
