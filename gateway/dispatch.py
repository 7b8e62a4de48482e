"""The dispatcher: hands ready lots to online SQAL devices and closes their inspection.

Each poll (every SQAL_DISPATCH_POLL_S, default 1 s):
1. an inspecting lot with >= SQAL_INSPECTION_SAMPLES linked samples is closed
   (`registry.inspection.close_inspection`: grade distribution, liver weight, ITM), which ends its
   assignment; its device is sent `clear_lot`;
2. a device assigned to a lot that has been offline longer than SQAL_DISPATCH_REASSIGN_S is released,
   so the lot goes to another device;
3. ready lots (oldest first) are assigned to free online devices (`registry.inspection_queue.
   assign_next`) and each device is sent `assign_lot` on `sqal/v1/{device}/cmd` (QoS 1);
4. commands not confirmed by the device's result (the ingest stores the last one per device)
   within SQAL_DISPATCH_CMD_TIMEOUT_S are sent again, with the same command id; a device whose
   latest telemetry or sample still names a lot whose assignment ended gets its clear_lot (again),
   so a clear pending in a gateway that restarted, or a lot released while its device was offline,
   does not leave the device tagging samples with a finished lot;
5. compliant inspected lots (more than half of the samples graded and not REJECT) get
   SQAL_PRODUCTS_PER_LOT products, each with a GTIN-14 and a GS1 Digital Link QR payload.

Nothing here assumes it is the only replica: claims use SKIP LOCKED and the per-device advisory
lock (see registry/inspection_queue.py); command ids are derived from the assignment id, so any
replica can tell whether a device confirmed a command another replica sent.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import paho.mqtt.client as paho
from fastapi import APIRouter, FastAPI, Request
from sqalfw import codec

from gateway.api.models_status import DispatchStatus
from gateway.config import Settings, get_settings
from gateway.mqtt_url import apply_tls, parse_url, tls_files
from registry import devices, feedback, inspection_queue
from registry.errors import RegistryError
from registry.gs1 import make_gtin

log = logging.getLogger(__name__)

@dataclass
class Pending:
    cmd_id: str
    device_id: str
    cmd: str
    args: dict[str, Any]
    assignment_id: int
    lot_id: str
    sent_at: float
    since: datetime  # assignment start: a sample carrying the lot after it confirms assign_lot
    attempts: int = 1


@dataclass
class DispatchCounters:
    assigned: int = 0
    closed: int = 0
    released: int = 0
    products: int = 0
    commands_sent: int = 0
    commands_resent: int = 0
    commands_confirmed: int = 0
    commands_failed: int = 0
    errors: int = 0
    polls: int = 0
    last_error: str | None = None
    events: list[str] = field(default_factory=list)


class Dispatcher:
    def __init__(self, pool: asyncpg.Pool, broker_url: str, settings: Settings | None = None,
                 client_id: str | None = None, *, ca_file: str | None = None, cert_file: str | None = None,
                 key_file: str | None = None) -> None:
        self.pool = pool
        self.settings = settings or get_settings()
        self.counters = DispatchCounters()
        self.pending: dict[str, Pending] = {}
        self._confirmed: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        host, port, tls, user, password = parse_url(broker_url)
        self._host, self._port = host, port
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"sqal-dispatch-{uuid.uuid4().hex[:8]}")
        if user is not None:
            self.client.username_pw_set(user, password)
        apply_tls(self.client, broker_url, tls, ca_file, cert_file, key_file)
        self.client.reconnect_delay_set(1, 5)

    # ---- lifecycle ----

    async def start(self) -> None:
        self.client.connect_async(self._host, self._port, keepalive=30)
        self.client.loop_start()
        self._stop.clear()
        self._task = asyncio.create_task(self._run(), name="sqal-dispatcher")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None
        self.client.disconnect()
        await asyncio.to_thread(self.client.loop_stop)

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.run_once()
            except Exception as exc:  # noqa: BLE001 -- a failed poll (database restart...) must not kill the loop
                self.counters.errors += 1
                self.counters.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("dispatcher poll failed: %s", self.counters.last_error)
            try:
                await asyncio.wait_for(self._stop.wait(), self.settings.dispatch_poll_s)
            except TimeoutError:
                pass

    def status(self) -> dict[str, Any]:
        c = self.counters
        return {"inspection_samples": self.settings.inspection_samples, "poll_s": self.settings.dispatch_poll_s,
                "mqtt_connected": self.client.is_connected(), "pending_commands": len(self.pending),
                "assigned": c.assigned, "closed": c.closed, "released": c.released, "products": c.products,
                "commands_sent": c.commands_sent, "commands_resent": c.commands_resent,
                "commands_confirmed": c.commands_confirmed, "commands_failed": c.commands_failed,
                "errors": c.errors, "last_error": c.last_error, "polls": c.polls}

    # ---- one poll ----

    async def run_once(self) -> None:
        self.counters.polls += 1
        s = self.settings
        now = time.monotonic()
        for insp in await inspection_queue.open_inspections(self.pool):
            if insp["lot_state"] == "inspecting" and insp["lot_samples"] >= s.inspection_samples:
                await self._close(insp["lot_id"])
            elif insp["device_state"] == "offline" and insp["device_state_at"] is not None and \
                    (datetime.now(UTC) - insp["device_state_at"]).total_seconds() > s.dispatch_reassign_s:
                if await inspection_queue.release_assignment(self.pool, insp["assignment_id"], "device offline"):
                    self.counters.released += 1
                    self._note(f"released {insp['lot_id']} from offline device {insp['device_id']}")
            else:
                self._track_assign(insp, now)
        for held in await inspection_queue.devices_holding_ended_lots(self.pool):
            self._track_clear(held, now)
        for _ in range(100):  # bounded: one poll never loops forever
            a = await inspection_queue.assign_next(self.pool)
            if a is None:
                break
            self.counters.assigned += 1
            self._note(f"assigned {a['lot_id']} to {a['device_id']}")
            self._send(Pending(f"assign-{a['id']}", a["device_id"], "assign_lot", {"lot_id": a["lot_id"]},
                               a["id"], a["lot_id"], now, a["valid_from"]))
        await self._check_pending(now)
        await self._make_products()

    def _track_assign(self, insp: dict[str, Any], now: float) -> None:
        """An open assignment this replica has not seen yet (made by another replica, or before a
        restart): wait for its confirmation as if just sent at valid_from, re-send after the timeout."""
        cmd_id = f"assign-{insp['assignment_id']}"
        if cmd_id in self.pending or cmd_id in self._confirmed:
            return
        age = (datetime.now(UTC) - insp["valid_from"]).total_seconds()
        self.pending[cmd_id] = Pending(cmd_id, insp["device_id"], "assign_lot", {"lot_id": insp["lot_id"]},
                                       insp["assignment_id"], insp["lot_id"], now - max(0.0, age),
                                       insp["valid_from"], attempts=0)

    def _track_clear(self, held: dict[str, Any], now: float) -> None:
        """A device still naming a lot whose assignment ended, with no clear_lot pending here (sent by a
        replica that restarted, or never sent: released while offline): send it now."""
        cmd_id = f"clear-{held['assignment_id']}"
        if cmd_id in self.pending or cmd_id in self._confirmed:
            return
        self._note(f"{held['device_id']} still holds {held['lot_id']}: sending clear_lot")
        self._send(Pending(cmd_id, held["device_id"], "clear_lot", {}, held["assignment_id"], held["lot_id"], now,
                           held["valid_from"]))

    async def _close(self, lot_id: str) -> None:
        res = await inspection_queue.close_if_complete(self.pool, lot_id, self.settings.inspection_samples)
        if res is None:
            return
        lot = res["lot"]
        self.counters.closed += 1
        self._note(f"inspection closed {lot_id}: {lot['sample_count']} samples, grades {lot['grade_distribution']}, "
                   f"ITM {lot['itm']}")
        now = time.monotonic()
        for a in res["assignments"]:
            self.pending.pop(f"assign-{a['id']}", None)
            self._send(Pending(f"clear-{a['id']}", a["device_id"], "clear_lot", {}, a["id"], lot_id, now,
                               a["valid_from"]))

    async def _make_products(self) -> None:
        s = self.settings
        if s.products_per_lot == 0:
            return
        for lot in await inspection_queue.lots_needing_products(self.pool):
            for ref in range(1, s.products_per_lot + 1):
                try:
                    await feedback.create_product(self.pool, lot["id"], make_gtin(s.gtin_company_prefix, ref))
                except RegistryError as exc:  # e.g. the lot was closed meanwhile
                    log.warning("products for %s: %s", lot["id"], exc)
                    break
                self.counters.products += 1
            self._note(f"{s.products_per_lot} products created for {lot['id']}")

    # ---- commands ----

    def _send(self, p: Pending, resend: bool = False) -> None:
        payload = codec.encode_command(p.cmd_id, p.cmd, p.args)
        self.client.publish(codec.topic(p.device_id, "cmd"), bytes(payload), qos=1)
        p.sent_at = time.monotonic()
        if resend:
            self.counters.commands_resent += 1
        else:
            self.counters.commands_sent += 1
        self.pending[p.cmd_id] = p

    async def _check_pending(self, now: float) -> None:
        for cmd_id, p in list(self.pending.items()):
            if p.cmd == "assign_lot":
                if not await inspection_queue.assignment_open(self.pool, p.assignment_id):
                    self.pending.pop(cmd_id, None)
                    continue
            elif await inspection_queue.device_has_open_assignment(self.pool, p.device_id):
                # A newer assign_lot supersedes this clear_lot: re-sending it now would undo that.
                self.pending.pop(cmd_id, None)
                continue
            dev = await devices.get_device(self.pool, p.device_id)
            result = (dev or {}).get("last_result") or {}
            if result.get("id") == cmd_id:
                self.pending.pop(cmd_id, None)
                if result.get("ok"):
                    self.counters.commands_confirmed += 1
                    self._confirmed.add(cmd_id)
                else:
                    self.counters.commands_failed += 1
                    log.warning("device %s refused %s: %s", p.device_id, cmd_id, result.get("error"))
                continue
            if p.cmd == "assign_lot" and await inspection_queue.device_sent_lot(
                    self.pool, p.device_id, p.lot_id, p.since):
                self.pending.pop(cmd_id, None)
                self._confirmed.add(cmd_id)
                continue
            if now - p.sent_at >= self.settings.dispatch_cmd_timeout_s and (dev or {}).get("state") == "online":
                p.attempts += 1
                self._note(f"re-sending {cmd_id} to {p.device_id} (attempt {p.attempts})")
                self._send(p, resend=True)

    def _note(self, msg: str) -> None:
        log.info("dispatch: %s", msg)
        ev = self.counters.events
        ev.append(msg)
        del ev[:-100]  # keep the last 100 for status pages


# ---- wiring into the gateway app (lifespan and a status route) ----

router = APIRouter(tags=["dispatch"])


async def start_dispatcher(app: FastAPI, pool: asyncpg.Pool, broker_url: str | None, settings: Settings) -> None:
    """Start the dispatcher for this app when enabled and a broker is there (called after the
    ingest started); `app.state.dispatcher` is None otherwise."""
    app.state.dispatcher = None
    if not settings.dispatch_enabled or broker_url is None:
        return
    # one MQTT client id per replica: two replicas sharing one would take each other's connection
    d = Dispatcher(pool, broker_url, settings, client_id=f"sqal-dispatch-{uuid.uuid4().hex[:8]}", **tls_files(settings))
    await d.start()
    app.state.dispatcher = d


async def stop_dispatcher(app: FastAPI) -> None:
    d = getattr(app.state, "dispatcher", None)
    if d is None:
        return
    app.state.dispatcher = None
    try:
        await d.stop()
    except Exception as exc:  # noqa: BLE001 -- shutdown goes on: the ingest and the database must still close
        log.warning("dispatcher stop: %s", exc)


@router.get("/api/dispatch/status", response_model=DispatchStatus, summary="Dispatcher: inspection target, counters, pending commands, last events")
async def dispatch_status(request: Request) -> dict[str, Any]:
    d: Dispatcher | None = getattr(request.app.state, "dispatcher", None)
    if d is None:
        return {"enabled": False}
    return {"enabled": True, **d.status(), "events": d.counters.events[-20:]}
