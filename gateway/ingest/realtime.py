"""/ws/realtime/: a live feed for dashboards (the control panel, docs/web.md).

Messages, one JSON object per text frame, told apart by `type`:
- `snapshot` `{grade_counts, total}`: the first message on connect. It comes again, with
  `"resync": true` and `"lost": n`, when the client lost messages (see below). A dashboard re-reads
  what it shows (devices, lots) on every snapshot.
- `sample`: one summary per stored sample of a committed batch (device_id, boot, seq, lot_id, score,
  grade, device_score, device_grade, weight_g, alerts, measured_at, received_at, clock_flags).
- `alert` `{level, code, device_id, boot, seq, lot_id, score, grade}`: one per alert of such a sample
  (domain.md section 4).
- `grade_counts` `{grade_counts, total}`: the counts after each batch that stored samples.
- `device` `{device}`: a device whose row a committed batch changed: its status (online/offline:
  birth, last will), telemetry, a command result, or its counters (samples stored, duplicates,
  rejects, last reading). `device` is the row as GET /api/devices/{id} answers it, read after the
  commit. Coalesced: at most one per device every POLL_S, with its newest state.
- `lot` `{lot_id, lot, events}`: a lot that changed: created, a lifecycle step (state), a feeding
  (day, weight, live ducks, mortality, maize), SQAL samples linked to it (sample count), its
  inspection closed (grades, ITM), products made, consumer feedback. `lot` is the lot as
  GET /api/lots/{id} answers it; `events` the types of its new lot events, in order, each once
  (lot_created, record_feeding, gavage_feeding, mark_ready, assign, sqal_samples, close_inspection,
  product_created, consumer_feedback, suspend, resume, close).

Where `lot` comes from: every change of a lot appends to the registry's lot event log in the
change's own transaction, whoever makes it (an API route, the ingest, the dispatcher, another
replica, a script). While at least one dashboard is connected, the hub reads that log from the last
event it saw, every POLL_S (an indexed read of the new rows only), and sends one `lot` per changed
lot. An event whose transaction commits after one with a higher id is still found: the hub reads on
from its lowest unsettled id, and gives a gap up (a rolled back transaction) after GAP_GRACE_S.
Nothing of this runs while no dashboard is connected.

A dashboard is not a reading: each subscriber has a bounded queue (`queue_size` messages); one that
cannot keep up loses its oldest messages (counted in sqal_realtime_dropped), the ingest never waits
for it. Its next message is then a `snapshot` with `resync` (grade counts read again), so that it
knows to re-read the rest. With several replicas, each one streams the samples and devices of the
batches it committed (point a dashboard at every replica, or at one when there is one); `lot`
messages come from the shared log, so every replica sends all of them.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from gateway.api.models_devices import Device
from gateway.api.models_lots import Lot
from gateway.ingest.envelope import Outcome
from gateway.ingest.metrics import IngestMetrics
from gateway.ingest.prepare import Prepared
from registry import devices, live
from registry import lots as reg_lots
from registry.sample_refs import grade_counts

log = logging.getLogger(__name__)
router = APIRouter()

POLL_S = 0.5  # device messages are coalesced over this, and the lot event log is read this often
GAP_GRACE_S = 10.0  # a gap in the lot event ids older than this is a rolled back transaction: given up
LOT_EVENTS_PER_READ = 5000
# A committed batch changed the device's row: these outcomes (not 'stale': an older status, nothing written).
_DEVICE_CHANGED = frozenset({"saved", "duplicate", "applied", "rejected", "committed"})


@dataclass(eq=False)
class Subscriber:
    """One dashboard: its bounded queue, and how many messages it lost since it was last told."""

    queue: asyncio.Queue[dict[str, Any]]
    lost: int = 0


@dataclass
class LotEventCursor:
    """Where the hub is in the lot event log: every id <= `after` is handled; `seen` holds the ids
    above it already handled. Ids are taken when a transaction inserts and become visible when it
    commits, so a lower id can appear after a higher one: the next read starts above `after` again,
    until the gap is filled or older than `grace_s` (its transaction rolled back)."""

    after: int
    grace_s: float = GAP_GRACE_S
    seen: set[int] = field(default_factory=set)
    gap_since: float | None = None

    def take(self, rows: list[tuple[int, str, str]], now: float) -> dict[str, list[str]]:
        """The lots of the events in `rows` not handled before, each with its new event types in
        order (each type once); then move the cursor on."""
        changed: dict[str, list[str]] = {}
        for event_id, lot_id, type_ in rows:
            if event_id <= self.after or event_id in self.seen:
                continue
            self.seen.add(event_id)
            types = changed.setdefault(lot_id, [])
            if type_ not in types:
                types.append(type_)
        self._advance(now)
        return changed

    def _advance(self, now: float) -> None:
        while self.after + 1 in self.seen:
            self.after += 1
            self.seen.discard(self.after)
        if not self.seen:
            self.gap_since = None
        elif self.gap_since is None:
            self.gap_since = now
        elif now - self.gap_since >= self.grace_s:
            self.after = min(self.seen) - 1  # give the gap up; the ones above it get their own time
            self.gap_since = None
            self._advance(now)


def _message(kind: str, model: type[Device | Lot], row: dict[str, Any]) -> dict[str, Any] | None:
    """`{"type": kind, kind: row}`, the row in the shape (and JSON types) of the API's answer for it;
    None (logged) for a row the API's model refuses: one bad row must not hold back the others."""
    try:
        return {"type": kind, kind: model.model_validate(row).model_dump(mode="json")}
    except ValueError:
        log.exception("realtime: %s %s does not fit the API's model", kind, row.get("id"))
        return None


class RealtimeHub:
    def __init__(self, metrics: IngestMetrics, queue_size: int = 1000, poll_s: float = POLL_S) -> None:
        self.metrics = metrics
        self.queue_size = queue_size
        self.poll_s = poll_s
        self.batch_seq = 0  # number of the last grade-count delta published
        self._subs: set[Subscriber] = set()
        self._dirty_devices: set[str] = set()
        self._pool: asyncpg.Pool | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def subscribe(self, pool: asyncpg.Pool | None = None) -> Subscriber:
        """A new dashboard. With the database pool, device and lot messages flow too (the watcher
        runs while anyone is subscribed)."""
        sub = Subscriber(asyncio.Queue(self.queue_size))
        self._subs.add(sub)
        if pool is not None:
            self._pool = pool
            if self._watcher is None or self._watcher.done():
                self._watcher = asyncio.get_running_loop().create_task(self._watch(pool), name="realtime-watch")
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subs.discard(sub)
        if not self._subs:
            self._wake.set()  # the watcher stops now rather than at its next poll

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    @property
    def watching(self) -> bool:
        """Whether devices and lots are being read for the subscribers (only while there are some)."""
        return self._watcher is not None and not self._watcher.done()

    def _publish(self, msg: dict[str, Any]) -> None:
        for sub in self._subs:
            q = sub.queue
            if q.full():
                q.get_nowait()
                sub.lost += 1
                self.metrics.realtime_dropped.inc()
            q.put_nowait(msg)

    def on_batch(self, items: list[Prepared], outcomes: dict[int, Outcome]) -> None:
        """Pipeline listener (event loop, after commit)."""
        delta: dict[str, int] = {}
        for it in items:
            o = outcomes.get(id(it))
            if o is None:
                continue
            if self._subs and it.device_id and o.status in _DEVICE_CHANGED:
                self._dirty_devices.add(it.device_id)  # read and sent by the watcher (coalesced)
            if o.kind != "sample" or o.status != "saved" or it.row is None:
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
        if delta:
            self.batch_seq += 1
            if self._subs:  # turned into grade_counts per subscriber
                self._publish({"type": "_delta", "delta": delta, "seq": self.batch_seq})

    # ---- devices and lots: read after the fact, while someone listens ----

    async def _watch(self, pool: asyncpg.Pool) -> None:
        cursor: LotEventCursor | None = None
        failures = 0
        try:
            while self._subs:
                try:
                    if cursor is None:
                        cursor = LotEventCursor(await live.last_lot_event_id(pool))
                    await self.flush_devices(pool)
                    await self.flush_lots(pool, cursor)
                    failures = 0
                except Exception as exc:  # noqa: BLE001 -- the database went away, the pool closes...: try again
                    failures += 1
                    (log.warning if failures == 1 else log.debug)(
                        "realtime: reading devices/lots failed (%s: %s); retrying", type(exc).__name__, exc)
                self._wake.clear()
                if not self._subs:
                    break
                try:
                    await asyncio.wait_for(self._wake.wait(), self.poll_s * min(20, 2 ** failures))
                except TimeoutError:
                    pass
        finally:
            self._dirty_devices.clear()

    async def flush_devices(self, pool: asyncpg.Pool) -> int:
        """One `device` message per device changed since the last flush; returns how many."""
        if not self._dirty_devices:
            return 0
        ids, self._dirty_devices = sorted(self._dirty_devices), set()
        sent = 0
        for row in await devices.devices_by_id(pool, ids):
            msg = _message("device", Device, row)
            if msg is not None:
                self._publish(msg)
                sent += 1
        return sent

    async def flush_lots(self, pool: asyncpg.Pool, cursor: LotEventCursor) -> int:
        """One `lot` message per lot with new events since the cursor; returns how many."""
        loop = asyncio.get_running_loop()
        changed: dict[str, list[str]] = {}
        for _ in range(4):  # a backlog is read in a few slices per poll, the rest at the next one
            rows = await live.lot_events_after(pool, cursor.after, LOT_EVENTS_PER_READ)
            for lot_id, types in cursor.take(rows, loop.time()).items():
                have = changed.setdefault(lot_id, [])
                have.extend(t for t in types if t not in have)
            if len(rows) < LOT_EVENTS_PER_READ:
                break
        if not changed:
            return 0
        rows_by_id = {r["id"]: r for r in await reg_lots.get_lots(pool, list(changed))}
        sent = 0
        for lot_id, types in changed.items():
            row = rows_by_id.get(lot_id)
            msg = None if row is None else _message("lot", Lot, row)
            if msg is not None:
                self._publish({**msg, "lot_id": lot_id, "events": types})
                sent += 1
        return sent


def _counts_message(counts: dict[str, int], **extra: Any) -> dict[str, Any]:
    return {"grade_counts": dict(counts), "total": sum(counts.values()), **extra}


@router.websocket("/ws/realtime")
@router.websocket("/ws/realtime/")
async def realtime(ws: WebSocket) -> None:
    svc = getattr(ws.app.state, "ingest", None)
    if svc is None:  # SQAL_INGEST_ENABLED=false: nothing to stream
        await ws.close(code=1013, reason="the ingest is disabled on this gateway")
        return
    hub: RealtimeHub = svc.hub
    pool = ws.app.state.pool
    await ws.accept()
    sub = hub.subscribe(pool)
    # Clients send nothing; reading still matters: it is how a departed client is noticed while the
    # hub is quiet (otherwise the handler waits on its queue forever and blocks server shutdown).
    receiver = asyncio.create_task(ws.receive_text())
    try:
        # Subscribed before the snapshot: the deltas of batches committed before the read are skipped
        # (the read has them); one committed during the read may be counted twice, none is missed.
        counted = hub.batch_seq
        counts = await grade_counts(pool)
        await ws.send_json({"type": "snapshot", **_counts_message(counts)})
        while True:
            getter = asyncio.create_task(sub.queue.get())
            done, _ = await asyncio.wait({getter, receiver}, return_when=asyncio.FIRST_COMPLETED)
            if receiver in done:
                getter.cancel()
                break
            msg = getter.result()
            if sub.lost:  # messages were dropped: start again from the database's counts
                lost, sub.lost = sub.lost, 0
                counted = hub.batch_seq
                counts = await grade_counts(pool)
                await ws.send_json({"type": "snapshot", **_counts_message(counts, resync=True, lost=lost)})
            if msg["type"] == "_delta":
                if msg["seq"] <= counted:
                    continue
                for g, n in msg["delta"].items():
                    counts[g] = counts.get(g, 0) + n
                msg = {"type": "grade_counts", **_counts_message(counts)}
            await ws.send_json(msg)
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        receiver.cancel()
        hub.unsubscribe(sub)
