"""Gavage (force-feeding) simulator: `python -m emulation.gavage --api URL --nb-lots N
--acceleration A --duration S --seed K [--max-lots M] [--token T]`.

The model is domain.md section 2: two feedings a day with linear dose ramps, actual dose =
planned x U(0.95, 1.05), initial weight per genetics, weight gain per feeding, mortality, barn
climate, and the end-of-gavage quality profile (premium / standard / low) from final weight and
mortality. A lot's whole trajectory is drawn when it is created (same seed -> same lots), so the
profile it will end with is known then and stored on the lot (POST /api/lots quality_profile).

The runner keeps `nb_lots` lots in gavage at once: it creates each through POST /api/lots and sends
every feeding when it falls due over ONE persistent WebSocket to /ws/gavage, reading each ack
before the next feeding. A lost connection is re-opened with backoff and jitter and the unacked
feeding re-sent (the registry is idempotent on lot/day/moment: it answers `duplicate`). The last
evening carries `ready_for_slaughter`, which moves the lot to `ready` for SQAL. A finished lot is
replaced by a new one (continuous production) until `--max-lots` lots were created (0 = no limit)
or `--duration` seconds passed (0 = until stopped). SIGTERM: finish the current step, close, exit 0.

Time: one simulated day lasts 86400 / acceleration seconds; feedings are 12 simulated hours apart
(the first one when the lot is created, labelled morning) and carry their simulated timestamp.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from emulation.sim_common import (
    ActionLog,
    Backoff,
    api_url,
    auth_headers,
    bounded,
    install_stop,
    sleep_or_stop,
    token,
    ws_url,
)

# ---- the model (domain.md section 2) ----

GENETICS_MIX = (("Mulard", 0.60), ("Barbarie", 0.20), ("Pekin", 0.20))
INITIAL_WEIGHT_G = {"Mulard": (4400.0, 4600.0), "Barbarie": (3800.0, 4000.0), "Pekin": (4000.0, 4200.0)}
GAIN_BASE_G = {"Mulard": (60.0, 90.0), "Barbarie": (50.0, 70.0), "Pekin": (55.0, 75.0)}
# (optimal, minimum) final live weight, g
TARGET_WEIGHT_G = {"Mulard": (6500.0, 5800.0), "Barbarie": (6000.0, 5500.0), "Pekin": (6200.0, 5600.0)}
DOSE_RAMP_G = {"morning": (200.0, 460.0), "evening": (210.0, 490.0)}
MOMENTS = ("morning", "evening")
DUCKS = (45, 55)
DURATION_DAYS = (11, 14)
# Farmers and their site (LL Landes, LS Landes Sud, MT Mont-de-Marsan, BS Bayonne Sud, PX Pays Basque).
FARMERS = (("G001", "Jean Dupont", "LL"), ("G002", "Marie Lafitte", "LL"), ("G003", "Pierre Duboscq", "LS"),
           ("G004", "Sophie Larrieu", "LS"), ("G005", "Michel Labat", "MT"), ("G006", "Anne Darrigrand", "MT"),
           ("G007", "Bernard Etcheverry", "BS"), ("G008", "Claire Hourcade", "BS"),
           ("G009", "Xavier Irigoyen", "PX"), ("G010", "Maite Elissalde", "PX"))
FEEDING_INTERVAL_S = 12 * 3600  # simulated seconds between two feedings


def planned_dose(moment: str, day: int, duration_days: int) -> float:
    """Linear ramp from the first to the last day: morning 200 -> 460 g, evening 210 -> 490 g."""
    start, end = DOSE_RAMP_G[moment]
    if duration_days <= 1:
        return end
    return start + (end - start) * (day - 1) / (duration_days - 1)


def mortality_probability(day: int) -> float:
    """Per duck and per feeding: 0.0005 + 0.0001 x day (about 3 % over a lot)."""
    return 0.0005 + 0.0001 * day


def weight_gain(base_g: float, day: int, duration_days: int, rng: random.Random) -> float:
    """Gain of one feeding: base x (1.5 - 0.5 x day/duration) x U(0.9, 1.1)."""
    return base_g * (1.5 - 0.5 * day / duration_days) * rng.uniform(0.9, 1.1)


def quality_profile(genetics: str, final_weight_g: float, mortality_pct: float) -> str:
    """premium: optimal weight and mortality <= 3 %; standard: minimum weight and <= 5 %; else low."""
    optimal, minimum = TARGET_WEIGHT_G[genetics]
    if final_weight_g >= optimal and mortality_pct <= 3.0:
        return "premium"
    if final_weight_g >= minimum and mortality_pct <= 5.0:
        return "standard"
    return "low"


@dataclass(frozen=True)
class LotSpec:
    farmer_id: str
    farmer_name: str
    site_code: str
    genetics: str
    nb_ducks: int
    planned_duration_days: int


@dataclass(frozen=True)
class Feeding:
    index: int  # 0 .. 2 x duration - 1
    day: int
    moment: str
    planned_dose_g: float
    actual_dose_g: float
    mean_weight_g: float
    live_ducks: int
    mortality_pct: float
    temperature_c: float
    humidity_pct: float
    ready_for_slaughter: bool


def draw_genetics(rng: random.Random) -> str:
    return rng.choices([n for n, _ in GENETICS_MIX], weights=[w for _, w in GENETICS_MIX])[0]


def draw_lot(rng: random.Random) -> LotSpec:
    farmer_id, farmer_name, site = rng.choice(FARMERS)
    return LotSpec(farmer_id, farmer_name, site, draw_genetics(rng), rng.randint(*DUCKS), rng.randint(*DURATION_DAYS))


def simulate_lot(spec: LotSpec, rng: random.Random) -> list[Feeding]:
    """The whole gavage of a lot: 2 feedings a day for planned_duration_days days.

    The gain base is drawn once per lot (*choice*): a lot of heavy or light gainers is what makes
    some lots premium and others standard or low; drawn per feeding it would average out."""
    d = spec.planned_duration_days
    weight = rng.uniform(*INITIAL_WEIGHT_G[spec.genetics])
    base = rng.uniform(*GAIN_BASE_G[spec.genetics])
    live = spec.nb_ducks
    out: list[Feeding] = []
    for day in range(1, d + 1):
        for moment in MOMENTS:
            planned = planned_dose(moment, day, d)
            actual = planned * rng.uniform(0.95, 1.05)
            p = mortality_probability(day)
            live -= sum(1 for _ in range(live) if rng.random() < p)
            weight += weight_gain(base, day, d, rng)
            out.append(Feeding(
                index=len(out), day=day, moment=moment, planned_dose_g=round(planned, 1),
                actual_dose_g=round(actual, 1), mean_weight_g=round(weight, 1), live_ducks=live,
                mortality_pct=round(100.0 * (spec.nb_ducks - live) / spec.nb_ducks, 3),
                temperature_c=round(rng.uniform(19.0, 23.0), 2), humidity_pct=round(rng.uniform(55.0, 75.0), 2),
                ready_for_slaughter=(day == d and moment == "evening")))
    return out


def lot_profile(spec: LotSpec, feedings: list[Feeding]) -> str:
    last = feedings[-1]
    return quality_profile(spec.genetics, last.mean_weight_g, last.mortality_pct)


# ---- the runner ----

class SimulatorError(Exception):
    """A refusal retrying cannot fix (bad token, API refusing the lot): the process exits 1."""


@dataclass
class Config:
    api: str
    nb_lots: int = 3
    acceleration: float = 1440.0
    duration: float = 0.0  # wall seconds; 0 = until stopped (or max_lots done)
    seed: int = 0
    max_lots: int = 0  # lots created in total; 0 = no limit (a finished lot is replaced)
    token: str | None = None
    ack_timeout_s: float = 10.0


@dataclass
class RunningLot:
    lot_id: str
    spec: LotSpec
    feedings: list[Feeding]
    profile: str
    real_start: float  # monotonic
    sim_start: datetime
    next: int = 0

    def due(self, acceleration: float) -> float:
        return self.real_start + self.next * FEEDING_INTERVAL_S / acceleration

    def message(self, f: Feeding) -> dict[str, Any]:
        at = self.sim_start + timedelta(seconds=f.index * FEEDING_INTERVAL_S)
        return {"type": "feeding", "msg_id": f"{self.lot_id}:{f.day}:{f.moment}", "lot_id": self.lot_id,
                "farmer_id": self.spec.farmer_id, "farmer_name": self.spec.farmer_name,
                "site_code": self.spec.site_code, "genetics": self.spec.genetics, "day": f.day, "moment": f.moment,
                "planned_dose_g": f.planned_dose_g, "actual_dose_g": f.actual_dose_g,
                "mean_weight_g": f.mean_weight_g, "live_ducks": f.live_ducks, "mortality_pct": f.mortality_pct,
                "temperature_c": f.temperature_c, "humidity_pct": f.humidity_pct,
                "timestamp": at.isoformat(), "ready_for_slaughter": f.ready_for_slaughter}


@dataclass
class Stats:
    lots_created: int = 0
    lots_ready: int = 0
    lots_abandoned: int = 0
    feedings_acked: int = 0
    saved: int = 0
    duplicates: int = 0
    refused: int = 0
    connections: int = 0
    reconnects: int = 0
    resent: int = 0
    lot_ids: list[str] = field(default_factory=list)


class GavageSimulator:
    def __init__(self, cfg: Config, log: ActionLog | None = None) -> None:
        self.cfg = cfg
        self.log = log or ActionLog("gavage")
        self.rng = random.Random(cfg.seed)
        self._net_rng = random.Random(cfg.seed ^ 0x5EED)  # jitter must not shift the model's draws
        self.stats = Stats()
        self.lots: list[RunningLot] = []
        self._ws: ClientConnection | None = None
        self._headers = auth_headers(cfg.token)
        self._real_epoch = time.monotonic()
        self._sim_epoch = datetime.now(UTC)

    def sim_now(self) -> datetime:
        return self._sim_epoch + timedelta(seconds=(time.monotonic() - self._real_epoch) * self.cfg.acceleration)

    async def run(self, stop: asyncio.Event) -> int:
        c = self.cfg
        self.log("start", api=c.api, nb_lots=c.nb_lots, acceleration=c.acceleration, duration=c.duration,
                 seed=c.seed, max_lots=c.max_lots)
        deadline = time.monotonic() + c.duration if c.duration > 0 else None
        async with httpx.AsyncClient(base_url=c.api, headers=self._headers, timeout=10.0) as http:
            try:
                while not stop.is_set():
                    if deadline is not None and time.monotonic() >= deadline:
                        self.log("duration_reached", seconds=c.duration)
                        break
                    await self._top_up(http, stop, deadline)
                    if not self.lots:
                        if c.max_lots and self.stats.lots_created >= c.max_lots:
                            self.log("all_lots_done", lots=self.stats.lots_created)
                            break
                        continue  # creation was interrupted (stop or deadline): the loop head decides
                    lot = min(self.lots, key=lambda x: x.due(c.acceleration))
                    wait = lot.due(c.acceleration) - time.monotonic()
                    if deadline is not None:
                        wait = min(wait, deadline - time.monotonic())
                    if await sleep_or_stop(stop, wait):
                        break
                    if time.monotonic() < lot.due(c.acceleration):
                        continue
                    await self._feed(lot, stop)
            finally:
                await self._close_ws()
        self.log("stopped", **{k: v for k, v in asdict(self.stats).items() if k != "lot_ids"})
        return 0

    # ---- lots over HTTP ----

    async def _top_up(self, http: httpx.AsyncClient, stop: asyncio.Event, deadline: float | None) -> None:
        c = self.cfg
        backoff = Backoff(self._net_rng)
        while len(self.lots) < c.nb_lots and not (c.max_lots and self.stats.lots_created >= c.max_lots):
            spec = draw_lot(self.rng)
            feedings = simulate_lot(spec, self.rng)
            profile = lot_profile(spec, feedings)
            body = {**asdict(spec), "quality_profile": profile}
            while True:
                if stop.is_set() or (deadline is not None and time.monotonic() >= deadline):
                    return
                try:
                    r = await http.post("/api/lots", json=body)
                except httpx.HTTPError as exc:
                    delay = backoff.next()
                    self.log("api_unreachable", error=type(exc).__name__, retry_in=f"{delay:.2f}s")
                    await sleep_or_stop(stop, delay)
                    continue
                if r.status_code == 201:
                    break
                if r.status_code >= 500:
                    delay = backoff.next()
                    self.log("api_error", status=r.status_code, retry_in=f"{delay:.2f}s")
                    await sleep_or_stop(stop, delay)
                    continue
                raise SimulatorError(f"POST /api/lots refused with {r.status_code}: {r.text[:300]}")
            lot_id = r.json()["id"]
            now = time.monotonic()
            self.lots.append(RunningLot(lot_id, spec, feedings, profile, now, self.sim_now()))
            self.stats.lots_created += 1
            self.stats.lot_ids.append(lot_id)
            self.log("lot_created", lot=lot_id, farmer=spec.farmer_id, site=spec.site_code, genetics=spec.genetics,
                     ducks=spec.nb_ducks, days=spec.planned_duration_days, profile=profile)

    # ---- feedings over the WebSocket ----

    async def _connect(self, stop: asyncio.Event) -> ClientConnection | None:
        backoff = Backoff(self._net_rng)
        url = ws_url(self.cfg.api, "/ws/gavage")
        while not stop.is_set():
            try:
                self._ws = await websockets.connect(url, additional_headers=self._headers, open_timeout=5,
                                                    max_size=2 ** 20)
            except InvalidStatus as exc:
                if exc.response.status_code in (401, 403):
                    raise SimulatorError(f"/ws/gavage refused: HTTP {exc.response.status_code}") from exc
                delay = backoff.next()
                self.log("ws_connect_failed", error=f"HTTP_{exc.response.status_code}", retry_in=f"{delay:.2f}s")
                await sleep_or_stop(stop, delay)
                continue
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                delay = backoff.next()
                self.log("ws_connect_failed", error=type(exc).__name__, retry_in=f"{delay:.2f}s")
                await sleep_or_stop(stop, delay)
                continue
            self.stats.connections += 1
            self.log("ws_connected", url=url, connection=self.stats.connections)
            return self._ws
        return None

    async def _close_ws(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()

    async def _exchange(self, ws: ClientConnection, msg: dict[str, Any], stop: asyncio.Event) -> dict[str, Any] | None:
        """Send one message and read its answer; None when stopped meanwhile. Raises on a lost
        connection or an ack timeout."""
        await ws.send(json.dumps(msg))
        recv = asyncio.ensure_future(ws.recv())
        stopped = asyncio.ensure_future(stop.wait())
        try:
            done, _ = await asyncio.wait({recv, stopped}, timeout=self.cfg.ack_timeout_s,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        if recv not in done:
            recv.cancel()
            if stop.is_set():
                return None
            raise TimeoutError(f"no answer within {self.cfg.ack_timeout_s}s")
        answer = json.loads(recv.result())
        return answer if isinstance(answer, dict) else {"type": "error", "reason": "answer is not an object"}

    async def _feed(self, lot: RunningLot, stop: asyncio.Event) -> None:
        f = lot.feedings[lot.next]
        msg = lot.message(f)
        backoff = Backoff(self._net_rng)
        tries = 0
        while not stop.is_set():
            ws = self._ws or await self._connect(stop)
            if ws is None:
                return
            tries += 1
            if tries > 1:
                self.stats.resent += 1
                self.log("resend", lot=lot.lot_id, day=f.day, moment=f.moment, attempt=tries)
            try:
                answer = await self._exchange(ws, msg, stop)
            except (ConnectionClosed, OSError, TimeoutError, ValueError) as exc:
                await self._close_ws()
                self.stats.reconnects += 1
                delay = backoff.next()
                self.log("ws_lost", error=type(exc).__name__, unacked=f"{lot.lot_id}/{f.day}/{f.moment}",
                         retry_in=f"{delay:.2f}s")
                await sleep_or_stop(stop, delay)
                continue
            if answer is None:
                return
            if answer.get("type") == "ack" and answer.get("lot_id") == lot.lot_id and answer.get("day") == f.day \
                    and answer.get("moment") == f.moment:
                self._acked(lot, f, answer)
                return
            if answer.get("type") == "error" and answer.get("retryable"):
                delay = backoff.next()
                self.log("gateway_busy", reason=answer.get("reason"), retry_in=f"{delay:.2f}s")
                await sleep_or_stop(stop, delay)
                continue
            # refused for good (lot closed or suspended by an operator...): stop feeding this lot
            self.stats.refused += 1
            self.stats.lots_abandoned += 1
            self.lots.remove(lot)
            self.log("feeding_refused", lot=lot.lot_id, day=f.day, moment=f.moment,
                     reason=json.dumps(answer.get("reason", answer))[:200])
            return

    def _acked(self, lot: RunningLot, f: Feeding, answer: dict[str, Any]) -> None:
        st = self.stats
        st.feedings_acked += 1
        if answer.get("status") == "duplicate":
            st.duplicates += 1
        else:
            st.saved += 1
        self.log("feeding", lot=lot.lot_id, day=f"{f.day}/{lot.spec.planned_duration_days}", moment=f.moment,
                 planned=f"{f.planned_dose_g}g", actual=f"{f.actual_dose_g}g", weight=f"{f.mean_weight_g}g",
                 live=f.live_ducks, mortality=f"{f.mortality_pct}%", temp=f"{f.temperature_c}C",
                 humidity=f"{f.humidity_pct}%", status=answer.get("status"))
        lot.next += 1
        if f.ready_for_slaughter or lot.next >= len(lot.feedings):
            st.lots_ready += 1
            self.lots.remove(lot)
            self.log("lot_ready", lot=lot.lot_id, final_weight=f"{f.mean_weight_g}g", live=f.live_ducks,
                     mortality=f"{f.mortality_pct}%", profile=lot.profile, state=answer.get("state"))


# ---- CLI ----

def parse_args(argv: list[str] | None = None) -> Config:
    p = argparse.ArgumentParser(prog="python -m emulation.gavage", description=__doc__.split("\n\n")[0])
    p.add_argument("--api", type=api_url, required=True, help="gateway base URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--nb-lots", type=bounded(int, 1, 1000, "--nb-lots"), default=3, help="lots in gavage at once")
    p.add_argument("--acceleration", type=bounded(float, 0.01, 1e8, "--acceleration"), default=1440.0,
                   help="simulated seconds per wall second (1440: one day a minute)")
    p.add_argument("--duration", type=bounded(float, 0, 1e9, "--duration"), default=0.0,
                   help="wall seconds to run; 0 = until stopped")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same lots)")
    p.add_argument("--max-lots", type=bounded(int, 0, 10 ** 6, "--max-lots"), default=0,
                   help="lots to create in total, then exit when they are done; 0 = no limit")
    p.add_argument("--token", default=None, help="API bearer token (default: $SQAL_API_TOKEN)")
    a = p.parse_args(argv)
    return Config(api=a.api, nb_lots=a.nb_lots, acceleration=a.acceleration, duration=a.duration, seed=a.seed,
                  max_lots=a.max_lots, token=token(a.token))


async def _main(cfg: Config) -> int:
    stop = asyncio.Event()
    install_stop(stop)
    return await GavageSimulator(cfg).run(stop)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    try:
        return asyncio.run(_main(cfg))
    except SimulatorError as exc:
        print(f"gavage simulator: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
