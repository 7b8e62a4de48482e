"""The compact form of a reading's `features` and `raw` payload on disk (bytea), decoded on demand.

A blob is one format byte, then its data:

- 0: the data as it is (JSON text, or a contract binary sample when deflating did not make it
  smaller). Rows migrated from the 005 schema keep their JSON this way.
- 1: raw deflate (zlib, wbits -15) of JSON text with the preset dictionary FEATURES_V1.
- 2: raw deflate of a sample in the contract's compact binary encoding (docs/contract.md 3.2) with
  the preset dictionary RAW_V1.

Why: PostgreSQL compresses a value only when its row passes ~2 KB, and a reading's row does not,
so `features` (~800 bytes of JSON, mostly the same keys every time) and `raw` (~640 bytes of JSON)
were stored whole. With a dictionary of typical readings deflate takes them to ~110 and ~120 bytes
for ~7 us of CPU in the ingest's grading workers (off the event loop); decoding is ~1 us.
A raw payload decodes to the sample the contract's decoder gives (JSON -> binary -> JSON is
lossless, docs/contract.md). The dictionaries are data: they never change (registry/blob_dictionaries.py).
"""

from __future__ import annotations

import json
import zlib
from typing import Any

from sqalfw import codec

from registry.blob_dictionaries import FEATURES_V1, RAW_V1

PLAIN, FEATURES_DEFLATE, RAW_DEFLATE = 0, 1, 2
_DICTS = {FEATURES_DEFLATE: FEATURES_V1, RAW_DEFLATE: RAW_V1}
_LEVEL = 6  # 9 gains nothing measurable on ~1 KB inputs


class BlobError(ValueError):
    """A stored blob that does not decode (unknown format byte, corrupt deflate stream)."""


def _deflate(data: bytes, fmt: int) -> bytes:
    c = zlib.compressobj(_LEVEL, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, _DICTS[fmt])
    z = c.compress(data) + c.flush()
    if len(z) >= len(data):  # not smaller: stored as it is
        return bytes((PLAIN,)) + data
    return bytes((fmt,)) + z


def pack_features(json_text: bytes | str) -> bytes:
    """Features as JSON text -> blob."""
    data = json_text.encode() if isinstance(json_text, str) else bytes(json_text)
    return _deflate(data, FEATURES_DEFLATE)


def pack_raw(payload: bytes) -> bytes:
    """A sample as the contract's binary encoding (or JSON text, for a sample that has no binary
    form) -> blob."""
    data = bytes(payload)
    if data[:1] == bytes((codec.MAGIC,)):
        return _deflate(data, RAW_DEFLATE)
    return bytes((PLAIN,)) + data


def unpack(blob: bytes) -> bytes:
    """The data a blob holds (JSON text or a binary sample)."""
    if not blob:
        raise BlobError("empty blob")
    fmt = blob[0]
    if fmt == PLAIN:
        return bytes(blob[1:])
    zdict = _DICTS.get(fmt)
    if zdict is None:
        raise BlobError(f"unknown blob format {fmt}")
    try:
        d = zlib.decompressobj(-15, zdict)
        return d.decompress(bytes(blob[1:])) + d.flush()
    except zlib.error as exc:
        raise BlobError(f"corrupt blob (format {fmt}): {exc}") from exc


def features_of(blob: bytes | None) -> Any:
    """The features object a blob holds (None for None)."""
    return None if blob is None else json.loads(unpack(blob))


def raw_of(blob: bytes | None) -> dict[str, Any] | None:
    """The whole sample a raw blob holds, as the contract's decoder gives it (None for None)."""
    if blob is None:
        return None
    data = unpack(blob)
    if data[:1] == bytes((codec.MAGIC,)):
        return codec.decode_sample(data)  # type: ignore[no-any-return]
    return json.loads(data)  # type: ignore[no-any-return]
