"""Global stats against hand-computed values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from registry import assignments, feedback, gavage, inspection, lots, samples, stats
from tests.registry.helpers import new_lot


async def _inspected(pool: asyncpg.Pool, nb: int, doses: list[tuple[int, str, float]], weights: list[float],
                     device: str) -> str:
    lot_id = await new_lot(pool, nb_ducks=nb)
    for day, moment, dose in doses:
        await gavage.record_feeding(pool, lot_id, day=day, moment=moment, planned_dose_g=dose, actual_dose_g=dose)
    await lots.mark_ready(pool, lot_id)
    t0 = datetime.now(UTC) - timedelta(minutes=1)
    await assignments.assign_device(pool, lot_id, device, valid_from=t0)
    await samples.store_samples(pool, [{"device_id": device, "boot": 1, "seq": i, "weight_g": w, "grade": "A",
                                        "measured_at": t0 + timedelta(seconds=i)} for i, w in enumerate(weights)])
    await inspection.close_inspection(pool, lot_id)
    return lot_id


async def test_empty_registry(db_pool: asyncpg.Pool) -> None:
    assert await stats.global_stats(db_pool) == {
        "total_lots": 0, "active_lots": 0, "completed_lots": 0, "total_ducks": 0,
        "average_gavage_days": None, "avg_itm": None, "average_consumer_rating": None}


async def test_stats_hand_computed(db_pool: asyncpg.Pool) -> None:
    # L1: 50 ducks, maize 300+300+400 = 1000 g, last day 2, livers 60 and 65 -> 62.5 g -> ITM 16.0
    l1 = await _inspected(db_pool, 50, [(1, "morning", 300), (1, "evening", 300), (2, "morning", 400)],
                          [60.0, 65.0], "ESP32_LL_01")
    # L2: 40 ducks, maize 400+1000 = 1400 g, last day 3, liver 100 g -> ITM 14.0
    await _inspected(db_pool, 40, [(1, "morning", 400), (3, "evening", 1000)], [100.0], "ESP32_LL_02")
    await new_lot(db_pool, nb_ducks=30)                     # active
    await lots.close(db_pool, await new_lot(db_pool, nb_ducks=20))  # closed, never inspected
    product = await feedback.create_product(db_pool, l1, "03760123456784")
    assert product["qr_uri"] == f"https://id.gs1.org/01/03760123456784/10/{l1}"
    for rating in (4, 5, 2):
        await feedback.add_feedback(db_pool, product_id=product["id"], rating=rating, context="home")
    assert await stats.global_stats(db_pool) == {
        "total_lots": 4, "active_lots": 1, "completed_lots": 2, "total_ducks": 140,
        "average_gavage_days": 2.5, "avg_itm": 15.0, "average_consumer_rating": 3.67}
