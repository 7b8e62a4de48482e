"""Products and consumer feedback."""

from __future__ import annotations

import asyncpg
import pytest

from registry import feedback, timeline
from registry.errors import InvalidInput, LotNotFound, ProductNotFound
from tests.registry.helpers import lot_in_state


async def test_products_only_for_inspected_lots(db_pool: asyncpg.Pool) -> None:
    ready = await lot_in_state(db_pool, "ready")
    with pytest.raises(InvalidInput, match=f"{ready} is 'ready'"):
        await feedback.create_product(db_pool, ready, "03760123456784")
    with pytest.raises(InvalidInput, match="gtin"):
        await feedback.create_product(db_pool, ready, "123")
    lot_id = await lot_in_state(db_pool, "inspected")
    p1 = await feedback.create_product(db_pool, lot_id, "03760123456784")
    p2 = await feedback.create_product(db_pool, lot_id, "03760123456784")
    assert p1["id"] == p2["id"], "idempotent on (gtin, lot)"


async def test_feedback_links_to_lot_and_timeline(db_pool: asyncpg.Pool) -> None:
    lot_id = await lot_in_state(db_pool, "inspected")
    product = await feedback.create_product(db_pool, lot_id, "03760123456784")
    fb = await feedback.add_feedback(db_pool, product_id=product["id"], rating=5, texture=4, flavor=5,
                                     freshness=5, comment="excellent", context="gift")
    assert fb["lot_id"] == lot_id
    tl = await timeline.timeline(db_pool, lot_id)
    assert tl["feedbacks"] == 1 and tl["events_by_stage"]["consumer"] == 2
    assert tl["events"][-1]["type"] == "consumer_feedback" and tl["events"][-1]["data"]["rating"] == 5
    with pytest.raises(InvalidInput, match="rating"):
        await feedback.add_feedback(db_pool, lot_id=lot_id, rating=6)
    with pytest.raises(InvalidInput, match="context"):
        await feedback.add_feedback(db_pool, lot_id=lot_id, rating=3, context="picnic")
    with pytest.raises(ProductNotFound, match="999"):
        await feedback.add_feedback(db_pool, product_id=999, rating=3)
    with pytest.raises(LotNotFound, match="LOT_20990101_0009"):
        await feedback.add_feedback(db_pool, lot_id="LOT_20990101_0009", rating=3)
