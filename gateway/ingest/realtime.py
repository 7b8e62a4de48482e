"""/ws/realtime/: a live feed for dashboards.

On connect: `{"type":"snapshot","grade_counts":{...},"total":n}` (from the database). Then, after
each committed batch: one `{"type":"sample",...}` summary per stored sample, one `{"type":"alert",...}`
per alert (domain.md section 4), and one `{"type":"grade_counts",...}` with the updated counts.

A dashboard is not a reading: a subscriber that cannot keep up loses its oldest messages (counted
in sqal_realtime_dropped), the ingest never waits for it. With several replicas each one streams
the samples it committed; point a dashboard at every replica, or at one when there is one.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from gateway.ingest.envelope import Outcome
from gateway.ingest.metrics import IngestMetrics
from gateway.ingest.prepare import Prepared
from registry.sample_refs import grade_counts

log = logging.getLogger(__name__)
router = APIRouter()


class RealtimeHub:
    def __init__(self, metrics: IngestMetrics, queue_size: int = 1000) -> None:
        self.metrics = metrics
        self.queue_size = queue_size
        self._subs: set[asyncio.Queue[dict[str, Any]]] = set()

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(self.queue_size)
        self._subs.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[dict[str, Any]]) -> None:
        self._subs.discard(q)

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def _publish(self, msg: dict[str, Any]) -> None:
        for q in self._subs:
            if q.full():
                q.get_nowait()
                self.metrics.realtime_dropped.inc()
            q.put_nowait(msg)

    def on_batch(self, items: list[Prepared], outcomes: dict[int, Outcome]) -> None:
        """Pipeline listener (event loop, after commit)."""
        delta: dict[str, int] = {}
        for it in items:
            o = outcomes.get(id(it))
            if o is None or o.kind != "sample" or o.status != "saved" or it.row is None:
                continue
            row = it.row
            delta[o.grade or "none"] = delta.get(o.grade or "none", 0) + 1
            if not self._subs:
                continue
            summary = {
                "type": "sample", "device_id": row["device_id"], "boot": row["boot"], "seq": row["seq"],
                "lot_id": row.get("linked_lot_id"), "score": row["score"], "grade": row["grade"],
                "device_score": row["device_score"], "device_grade": row["device_grade"],
                "weight_g": row["weight_g"], "alerts": row["alerts"],
                "measured_at": row["measured_at"].isoformat() if row["measured_at"] else None,
                "received_at": row["received_at"].isoformat(), "clock_flags": list(it.clock_flags),
            }
            self._publish(summary)
            for a in row["alerts"]:
                level, _, code = a.partition(":")
                self._publish({"type": "alert", "level": level, "code": code or a, "device_id": row["device_id"],
                               "boot": row["boot"], "seq": row["seq"], "lot_id": row.get("linked_lot_id"),
                               "score": row["score"], "grade": row["grade"]})
        if delta and self._subs:
            self._publish({"type": "_delta", "delta": delta})  # turned into grade_counts per subscriber


@router.websocket("/ws/realtime")
@router.websocket("/ws/realtime/")
async def realtime(ws: WebSocket) -> None:
    svc = getattr(ws.app.state, "ingest", None)
    if svc is None:  # SQAL_INGEST_ENABLED=false: nothing to stream
        await ws.close(code=1013, reason="the ingest is disabled on this gateway")
        return
    hub: RealtimeHub = svc.hub
    await ws.accept()
    q = hub.subscribe()
    # Clients send nothing; reading still matters: it is how a departed client is noticed while the
    # hub is quiet (otherwise the handler waits on its queue forever and blocks server shutdown).
    receiver = asyncio.create_task(ws.receive_text())
    try:
        # Subscribed before the snapshot: a batch committed in between may be counted twice, never missed.
        counts = await grade_counts(ws.app.state.pool)
        await ws.send_json({"type": "snapshot", "grade_counts": counts, "total": sum(counts.values())})
        while True:
            getter = asyncio.create_task(q.get())
            done, _ = await asyncio.wait({getter, receiver}, return_when=asyncio.FIRST_COMPLETED)
            if receiver in done:
                getter.cancel()
                break
            msg = getter.result()
            if msg["type"] == "_delta":
                for g, n in msg["delta"].items():
                    counts[g] = counts.get(g, 0) + n
                msg = {"type": "grade_counts", "grade_counts": dict(counts), "total": sum(counts.values())}
            await ws.send_json(msg)
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        receiver.cancel()
        hub.unsubscribe(q)
