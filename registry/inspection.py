"""Closing a lot's SQAL inspection: grade distribution, mean liver weight and ITM.

ITM (indice de transformation du mais) = maize eaten per duck over the whole gavage (g) divided
by the mean liver weight (g) of the lot's SQAL samples. Lower is better; the trade grades it
A+ < 15, A < 17, B < 20, else C.
"""

from __future__ import annotations

import json
from typing import Any

from registry.assignments import end_assignments
from registry.base import Executor, _conn, _d
from registry.lifecycle import check, lock_lot, transition
from registry.sample_hours import lot_summary

ITM_GRADES = ((15.0, "A+"), (17.0, "A"), (20.0, "B"))


def itm_grade(itm: float) -> str:
    for limit, grade in ITM_GRADES:
        if itm < limit:
            return grade
    return "C"


def compute_itm(maize_per_duck_g: float, mean_liver_weight_g: float | None) -> float | None:
    if not mean_liver_weight_g or mean_liver_weight_g <= 0 or maize_per_duck_g <= 0:
        return None
    return round(maize_per_duck_g / mean_liver_weight_g, 3)


async def close_inspection(db: Executor, lot_id: str) -> dict[str, Any]:
    """inspecting -> inspected. Results come from the lot's stored samples; with no weighed sample
    ITM stays null (and the event says so) rather than inventing a number."""
    async with _conn(db) as conn, conn.transaction():
        lot = await lock_lot(conn, lot_id)
        check(lot, "close_inspection")  # refuse before computing anything
        summary = await lot_summary(conn, lot_id)  # the lot's hour rows (registry/sample_hours.py)
        n = summary["samples"]
        mean_w = round(float(summary["weight_mean"]), 1) if summary["weight_mean"] is not None else None
        dist = summary["grades"]
        maize = float(lot["maize_total_per_duck_g"])
        itm = compute_itm(maize, mean_w)
        grade = itm_grade(itm) if itm is not None else None
        row = await transition(
            conn, lot_id, "close_inspection",
            data={"sample_count": n, "grade_distribution": dist, "mean_liver_weight_g": mean_w,
                  "maize_total_per_duck_g": maize, "itm": itm, "itm_grade": grade},
            description=(f"inspection closed: {n} samples, ITM {itm} ({grade})" if itm is not None
                         else f"inspection closed: {n} samples, no weighed sample so no ITM"),
            set_sql="inspected_at = now(), sample_count = $3, grade_distribution = $4::text::jsonb, "
                    "mean_liver_weight_g = $5, itm = $6, itm_grade = $7",
            set_args=(n, json.dumps(dist), mean_w, itm, grade))
        await end_assignments(conn, lot_id)
    return _d(row)
