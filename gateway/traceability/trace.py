"""One step back, one step forward (Regulation (EU) 178/2002 art. 18) with the record fields of
Regulation (EU) 931/2011 art. 3: description of the food, volume or quantity, name and address of
the sender (where it came from) and of the recipient (where it went), lot reference, dispatch date.

- one step back of a lot or product: the lot's hand-off from its farm (the supplier) to the
  processor (the configured sender) at the end of gavage, `quantity` = live ducks handed over;
- one step forward: every dispatch line of the product (of the lot's products, for a lot), one
  record per line, to the recipient of that dispatch.

Each record lists in `missing` the 931/2011 fields it cannot fill (e.g. a farm whose address was
never registered, a lot still in gavage); `complete` is true when no record misses anything.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Any

from gateway.traceability import ids
from gateway.traceability.settings import TraceConfig
from gateway.traceability.story import LotStory

REGULATION = "Regulation (EU) 178/2002 art. 18; Regulation (EU) 931/2011 art. 3"
REQUIRED = ("description_of_food", "quantity", "unit", "sender_name", "sender_address", "recipient_name",
            "recipient_address", "lot_reference", "dispatch_date")
CSV_COLUMNS = ("direction", "description_of_food", "quantity", "unit", "lot_reference", "gtin", "digital_link",
               "dispatch_date", "dispatch_reference", "sender_name", "sender_address", "sender_gln",
               "recipient_name", "recipient_address", "recipient_gln", "product_id", "missing")


def _record(direction: str, **fields: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {"direction": direction, **fields}
    rec["missing"] = [k for k in REQUIRED if rec.get(k) in (None, "")]
    return rec


def back_record(story: LotStory, cfg: TraceConfig) -> dict[str, Any]:
    """The lot from its farm to the processor."""
    lot, farm = story.lot, story.farm or {}
    gtin = ids.lot_gtin(cfg.company_prefix)
    return _record(
        "back",
        description_of_food=f"{ids.LOT_DESCRIPTION} ({lot['genetics']})",
        quantity=lot["live_ducks"] if lot["live_ducks"] is not None else lot["nb_ducks"], unit="live ducks",
        lot_reference=story.lot_id, gtin=gtin, digital_link=ids.class_uri(gtin, story.lot_id),
        dispatch_date=lot["gavage_ended_at"], dispatch_reference=f"end of gavage of {story.lot_id}",
        sender_name=farm.get("name") or lot["farmer_name"], sender_address=farm.get("address"),
        sender_gln=farm.get("gln"), farmer_id=lot["farmer_id"],
        recipient_name=cfg.sender_name, recipient_address=cfg.sender_address, recipient_gln=cfg.sender_gln,
        product_id=None)


def forward_records(story: LotStory, cfg: TraceConfig, product_id: int | None = None) -> list[dict[str, Any]]:
    """Dispatch lines of the lot's products (of one product when given), oldest dispatch first."""
    out = []
    genetics = story.lot["genetics"]
    for d in story.dispatches:
        for line in d["lines"]:
            if line["lot_id"] != story.lot_id or (product_id is not None and line["product_id"] != product_id):
                continue
            out.append(_record(
                "forward",
                description_of_food=ids.product_description(line["gtin"], cfg.company_prefix, genetics),
                quantity=line["quantity"], unit="units", lot_reference=line["lot_id"], gtin=line["gtin"],
                digital_link=ids.class_uri(line["gtin"], line["lot_id"]), dispatch_date=d["dispatched_at"],
                dispatch_reference=d["reference"], dispatch_id=d["id"],
                sender_name=d["sender_name"], sender_address=d["sender_address"], sender_gln=d["sender_gln"],
                recipient_name=d["recipient_name"], recipient_address=d["recipient_address"],
                recipient_gln=d["recipient_gln"], product_id=line["product_id"]))
    return out


def trace(story: LotStory, cfg: TraceConfig, product_id: int | None = None) -> dict[str, Any]:
    """The one-step-back / one-step-forward answer for the lot, or for one of its products."""
    lot, farm = story.lot, story.farm or {}
    subject: dict[str, Any] = {
        "kind": "product" if product_id is not None else "lot", "lot_id": story.lot_id, "lot_state": lot["state"],
        "genetics": lot["genetics"], "site_code": lot["site_code"],
        "farm": {"farmer_id": lot["farmer_id"], "name": farm.get("name") or lot["farmer_name"],
                 "address": farm.get("address"), "gln": farm.get("gln"), "registered": bool(farm)},
    }
    if product_id is not None:
        p = next(p for p in story.products if p["id"] == product_id)
        subject.update(product_id=product_id, gtin=p["gtin"], digital_link=p["qr_uri"],
                       description=ids.product_description(p["gtin"], cfg.company_prefix, lot["genetics"]))
    else:
        subject["products"] = [{"product_id": p["id"], "gtin": p["gtin"], "digital_link": p["qr_uri"],
                                "description": ids.product_description(p["gtin"], cfg.company_prefix,
                                                                       lot["genetics"])}
                               for p in story.products]
    back = [back_record(story, cfg)]
    forward = forward_records(story, cfg, product_id)
    return {"regulation": REGULATION, "generated_at": datetime.now(UTC), "subject": subject,
            "one_step_back": back, "one_step_forward": forward,
            "complete": not any(r["missing"] for r in back + forward)}


def to_csv(answer: dict[str, Any]) -> str:
    """One row per record, with a header; UTF-8 BOM so that a spreadsheet opens accents right."""
    buf = io.StringIO()
    buf.write("\ufeff")
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(CSV_COLUMNS)
    for rec in answer["one_step_back"] + answer["one_step_forward"]:
        row = []
        for col in CSV_COLUMNS:
            v = rec.get(col)
            if isinstance(v, datetime):
                v = v.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
            elif isinstance(v, list):
                v = " ".join(v)
            row.append("" if v is None else v)
        w.writerow(row)
    return buf.getvalue()
