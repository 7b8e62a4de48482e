"""GS1 keys and links: the mod-10 check digit of GTINs and GLNs, GTIN-14 construction, and the
Digital Link URI a product's QR code carries (https://id.gs1.org/01/{GTIN-14}/10/{lot})."""

from __future__ import annotations

import re
from urllib.parse import quote

RESOLVER = "https://id.gs1.org"
GTIN_RE = re.compile(r"^\d{14}$")
GLN_RE = re.compile(r"^\d{13}$")
# Digital Link path /01/{GTIN-14}/10/{batch} on any resolver host (id.gs1.org or a brand's own).
DIGITAL_LINK_RE = re.compile(r"^https?://[^/\s]+(?:/[^\s]*)?/01/(\d{14})/10/([^/?#\s]+)/?(?:[?#].*)?$")


def check_digit(body: str) -> str:
    """The mod-10 check digit of a key's digits without it: weights 3,1,3,... from the right."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return str((10 - total % 10) % 10)


def check_digit_ok(key: str) -> bool:
    """A string of digits whose last one is the check digit of the others."""
    return len(key) >= 2 and key.isascii() and key.isdigit() and check_digit(key[:-1]) == key[-1]


def is_gtin(value: str) -> bool:
    return bool(GTIN_RE.match(value)) and check_digit_ok(value)


def is_gln(value: str) -> bool:
    return bool(GLN_RE.match(value)) and check_digit_ok(value)


def make_gtin(company_prefix: str, item_ref: int) -> str:
    """GTIN-14: indicator 0 + company prefix + item reference (zero-padded) + check digit."""
    width = 12 - len(company_prefix)
    if not 0 <= item_ref < 10 ** width:
        raise ValueError(f"item reference {item_ref} does not fit in {width} digits")
    body = "0" + company_prefix + str(item_ref).zfill(width)
    return body + check_digit(body)


def digital_link(gtin: str, lot_id: str) -> str:
    """The GS1 Digital Link URI of a GTIN and a batch/lot (AI 10)."""
    return f"{RESOLVER}/01/{gtin}/10/{quote(lot_id, safe='')}"


def parse_digital_link(uri: str) -> tuple[str, str] | None:
    """(gtin, lot) from a GS1 Digital Link URI, or None when it is not one."""
    m = DIGITAL_LINK_RE.match(uri.strip())
    return (m.group(1), m.group(2)) if m else None
