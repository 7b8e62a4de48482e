"""ITM arithmetic and inspection results against hand-computed values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from registry import assignments, gavage, inspection, lots, samples
from tests.registry.helpers import new_lot


@pytest.mark.parametrize("itm,grade", [(10.0, "A+"), (14.999, "A+"), (15.0, "A"), (16.99, "A"), (17.0, "B"),
                                       (19.99, "B"), (20.0, "C"), (31.0, "C")])
def test_itm_grade_thresholds(itm: float, grade: str) -> None:
    assert inspection.itm_grade(itm) == grade


def test_compute_itm() -> None:
    assert inspection.compute_itm(9600.0, 600.0) == 16.0
    assert inspection.compute_itm(9600.0, None) is None
    assert inspection.compute_itm(0.0, 600.0) is None


async def test_close_inspection_results(db_pool: asyncpg.Pool) -> None:
    lot_id = await new_lot(db_pool)
    # maize per duck: 300 + 320 + 340 = 960 g
    for day, moment, dose in ((1, "morning", 300), (1, "evening", 320), (2, "morning", 340)):
        await gavage.record_feeding(db_pool, lot_id, day=day, moment=moment, planned_dose_g=dose, actual_dose_g=dose)
    await lots.mark_ready(db_pool, lot_id)
    t0 = datetime.now(UTC) - timedelta(minutes=10)
    await assignments.assign_device(db_pool, lot_id, "ESP32_QF_BS_01", valid_from=t0)
    weights = [50.0, 70.0, 60.0, None]  # mean of weighed samples = 60 g -> ITM 16.0 -> A
    grades = ["A+", "A", "A", "REJECT"]
    await samples.store_samples(db_pool, [
        {"device_id": "ESP32_QF_BS_01", "boot": 1, "seq": i, "measured_at": t0 + timedelta(seconds=i),
         "weight_g": w, "grade": g} for i, (w, g) in enumerate(zip(weights, grades, strict=True))])
    lot = await inspection.close_inspection(db_pool, lot_id)
    assert lot["sample_count"] == 4
    assert lot["grade_distribution"] == {"A+": 1, "A": 2, "REJECT": 1}
    assert lot["mean_liver_weight_g"] == 60.0
    assert lot["itm"] == 16.0 and lot["itm_grade"] == "A"
    assert lot["state"] == "inspected" and lot["inspected_at"] is not None


async def test_close_without_weighed_samples_leaves_itm_null(db_pool: asyncpg.Pool) -> None:
    lot_id = await new_lot(db_pool)
    await gavage.record_feeding(db_pool, lot_id, day=1, moment="morning", planned_dose_g=300, actual_dose_g=300)
    await lots.mark_ready(db_pool, lot_id)
    await assignments.assign_device(db_pool, lot_id, "ESP32_QF_BS_01")
    lot = await inspection.close_inspection(db_pool, lot_id)
    assert (lot["sample_count"], lot["itm"], lot["itm_grade"], lot["grade_distribution"]) == (0, None, None, {})
