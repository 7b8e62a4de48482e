"""Dispatches: consignments of products to a recipient (one step forward).

A dispatch is one consignment: a reference (the despatch advice number), the date, the sender's and
the recipient's name, address and optional GLN, and lines of (product, quantity in units). With the
product's GTIN (its description) and lot, that is the record Regulation (EU) 931/2011 art. 3 asks
for. Only products of lots on the market (state `inspected`) can be dispatched.

Records are append-only (triggers refuse UPDATE/DELETE). Posting a reference again with the same
content returns the recorded dispatch (`new` false); with other content it is refused. Each lot in
a dispatch gets a `dispatched` event (stage `consumer`, like the products) in the same transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from registry.base import Executor, _conn, _d
from registry.errors import IllegalTransition, InvalidInput, ProductNotFound
from registry.farms import check_gln, check_text
from registry.lifecycle import append_event

MAX_LINES = 100
MAX_QUANTITY = 1_000_000
FUTURE_TOLERANCE = timedelta(minutes=5)  # a dispatch is a record of what left, not a plan


class DuplicateReference(InvalidInput):
    """The reference already records a different consignment."""


def _normalise_lines(lines: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    seen: set[int] = set()
    for i, (product_id, quantity) in enumerate(lines):
        if product_id in seen:
            raise InvalidInput(f"lines[{i}]: product {product_id} appears twice; put its whole quantity on one line")
        if not 1 <= quantity <= MAX_QUANTITY:
            raise InvalidInput(f"lines[{i}]: quantity must be between 1 and {MAX_QUANTITY}, got {quantity}")
        seen.add(product_id)
        out.append((product_id, quantity))
    if not 1 <= len(out) <= MAX_LINES:
        raise InvalidInput(f"a dispatch needs 1 to {MAX_LINES} lines, got {len(out)}")
    return sorted(out)


async def create_dispatch(db: Executor, *, lines: Iterable[tuple[int, int]], sender_name: str, sender_address: str,
                          recipient_name: str, recipient_address: str, sender_gln: str | None = None,
                          recipient_gln: str | None = None, dispatched_at: datetime | None = None,
                          reference: str | None = None) -> dict[str, Any]:
    """Record a consignment; `lines` are (product_id, quantity in units). Returns the dispatch with
    its `lines` and `new` (false when the same reference and content were already recorded)."""
    items = _normalise_lines(lines)
    fields = {
        "sender_name": check_text(sender_name, "sender_name", 200),
        "sender_address": check_text(sender_address, "sender_address", 500),
        "sender_gln": check_gln(sender_gln, "sender_gln"),
        "recipient_name": check_text(recipient_name, "recipient_name", 200),
        "recipient_address": check_text(recipient_address, "recipient_address", 500),
        "recipient_gln": check_gln(recipient_gln, "recipient_gln"),
    }
    now = datetime.now(UTC)
    when = dispatched_at or now
    if when.tzinfo is None:
        raise InvalidInput("dispatched_at needs a time zone (e.g. 2026-01-05T10:00:00Z)")
    if when > now + FUTURE_TOLERANCE:
        raise InvalidInput(f"dispatched_at {when.isoformat()} is in the future: record a dispatch once it has left")
    if reference is not None:
        reference = reference.strip()
        if not reference:
            raise InvalidInput("reference must not be blank (leave it out to get one generated)")
    async with _conn(db) as conn, conn.transaction():
        if reference is not None:
            # serialise concurrent posts of one reference (a client retrying)
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('sqal-dispatch:' || $1))", reference)
            existing = await conn.fetchval("SELECT id FROM dispatches WHERE reference = $1", reference)
            if existing is not None:
                return await _same_or_refuse(conn, int(existing), reference, dispatched_at, fields, items)
        ids = [p for p, _ in items]
        products = {r["id"]: r for r in await conn.fetch(
            """SELECT p.id, p.gtin, p.lot_id, p.created_at, l.state FROM products p JOIN lots l ON l.id = p.lot_id
               WHERE p.id = ANY($1::bigint[]) ORDER BY l.id FOR SHARE OF l""", ids)}
        for product_id, _ in items:
            prod = products.get(product_id)
            if prod is None:
                raise ProductNotFound(product_id)
            if prod["state"] != "inspected":
                raise IllegalTransition(prod["lot_id"], prod["state"], f"dispatch product {product_id}", ("inspected",))
            if when < prod["created_at"]:
                raise InvalidInput(f"dispatched_at {when.isoformat()} is before product {product_id} was created "
                                   f"({prod['created_at'].isoformat()})")
        new_id = int(await conn.fetchval("SELECT nextval(pg_get_serial_sequence('dispatches', 'id'))"))
        ref = reference or f"DSP-{when.astimezone(UTC):%Y%m%d}-{new_id:06d}"
        row = await conn.fetchrow(
            """INSERT INTO dispatches (id, reference, dispatched_at, sender_name, sender_address, sender_gln,
                   recipient_name, recipient_address, recipient_gln)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING *""",
            new_id, ref, when, fields["sender_name"], fields["sender_address"], fields["sender_gln"],
            fields["recipient_name"], fields["recipient_address"], fields["recipient_gln"])
        await conn.executemany(
            "INSERT INTO dispatch_lines (dispatch_id, product_id, lot_id, quantity) VALUES ($1, $2, $3, $4)",
            [(new_id, p, products[p]["lot_id"], q) for p, q in items])
        by_lot: dict[str, list[dict[str, Any]]] = {}
        for p, q in items:
            by_lot.setdefault(products[p]["lot_id"], []).append(
                {"product_id": p, "gtin": products[p]["gtin"], "quantity": q})
        for lot_id, lot_lines in sorted(by_lot.items()):
            units = sum(x["quantity"] for x in lot_lines)
            await append_event(conn, lot_id, "consumer", "dispatched",
                               {"dispatch_id": new_id, "reference": ref, "dispatched_at": when.isoformat(),
                                "recipient_name": fields["recipient_name"], "lines": lot_lines},
                               f"dispatch {ref}: {units} units to {fields['recipient_name']}")
        out = _d(row)
        out["lines"] = await _lines(conn, [new_id])
        out["new"] = True
    return out


async def _same_or_refuse(conn: Any, dispatch_id: int, reference: str, when: datetime | None,
                          fields: dict[str, Any], items: list[tuple[int, int]]) -> dict[str, Any]:
    """A retried post (same reference): the recorded dispatch if the content is the same (a retry that
    left dispatched_at out matches any date), else DuplicateReference."""
    row = _d(await conn.fetchrow("SELECT * FROM dispatches WHERE id = $1", dispatch_id))
    lines = await _lines(conn, [dispatch_id])
    same = ((when is None or row["dispatched_at"] == when) and all(row[k] == v for k, v in fields.items())
            and sorted((x["product_id"], x["quantity"]) for x in lines) == items)
    if not same:
        raise DuplicateReference(f"reference {reference} already records another consignment (dispatch "
                                 f"{dispatch_id} of {row['dispatched_at'].isoformat()} to {row['recipient_name']}); "
                                 "use a new reference")
    row["lines"] = lines
    row["new"] = False
    return row


async def _lines(conn: Any, dispatch_ids: list[int]) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """SELECT dl.dispatch_id, dl.product_id, dl.lot_id, dl.quantity, p.gtin
           FROM dispatch_lines dl JOIN products p ON p.id = dl.product_id
           WHERE dl.dispatch_id = ANY($1::bigint[]) ORDER BY dl.dispatch_id, dl.product_id""", dispatch_ids)
    return [_d(r) for r in rows]


async def get_dispatch(db: Executor, dispatch_id: int) -> dict[str, Any] | None:
    async with _conn(db) as conn:
        row = await conn.fetchrow("SELECT * FROM dispatches WHERE id = $1", dispatch_id)
        if row is None:
            return None
        out = _d(row)
        out["lines"] = await _lines(conn, [dispatch_id])
    return out


async def list_dispatches(db: Executor, *, lot_id: str | None = None, product_id: int | None = None,
                          since: datetime | None = None, until: datetime | None = None, limit: int = 100,
                          offset: int = 0) -> tuple[int, list[dict[str, Any]]]:
    """(total, page): dispatches oldest first (dispatched_at, id), each with all its lines. `lot_id` /
    `product_id` keep the dispatches with a line of that lot / product; since <= dispatched_at < until."""
    where = """($1::text IS NULL OR EXISTS (SELECT 1 FROM dispatch_lines x WHERE x.dispatch_id = d.id AND x.lot_id = $1))
               AND ($2::bigint IS NULL OR EXISTS (SELECT 1 FROM dispatch_lines x
                                                  WHERE x.dispatch_id = d.id AND x.product_id = $2))
               AND ($3::timestamptz IS NULL OR d.dispatched_at >= $3)
               AND ($4::timestamptz IS NULL OR d.dispatched_at < $4)"""
    args = (lot_id, product_id, since, until)
    async with _conn(db) as conn:
        total = int(await conn.fetchval(f"SELECT count(*) FROM dispatches d WHERE {where}", *args))
        rows = await conn.fetch(f"SELECT * FROM dispatches d WHERE {where} ORDER BY d.dispatched_at, d.id "
                                "LIMIT $5 OFFSET $6", *args, limit, offset)
        out = [_d(r) for r in rows]
        lines = await _lines(conn, [d["id"] for d in out])
    by_id: dict[int, list[dict[str, Any]]] = {}
    for line in lines:
        by_id.setdefault(line["dispatch_id"], []).append(line)
    for d in out:
        d["lines"] = by_id.get(d["id"], [])
    return total, out
