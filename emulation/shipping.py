"""Shipping simulator (the packing house's dispatch office): `python -m emulation.shipping --api URL
--shipments-per-hour F --duration S --seed K [--token T]`.

Every 3600 / F seconds it ships one consignment of a lot on the market:
- it lists the products of active lots (GET /api/consumer/products?active=true) and picks a lot,
  preferring lots it has not shipped yet (every lot ships once before any ships again);
- the first time it meets a lot's farmer it makes sure the farm is registered with an address
  (GET, else PUT /api/traceability/farms/{farmer_id}): one step back needs the supplier's address;
- it records the consignment (POST /api/traceability/dispatches): 1 to 3 of the lot's products,
  6 to 48 units each, to a customer drawn from a fixed list of retailers, restaurants and
  wholesalers of the south-west (names and addresses made up; the wholesalers' GLNs use GS1's
  prefix 952, reserved for examples). Each shipment carries a reference drawn from the seed, so a
  retry after a lost answer is recorded once (the registry answers `new: false`).

Slots are fixed-rate; a slot missed (slow gateway) is skipped, never made up in a burst. Stops after
--duration seconds (0 = until stopped) or on SIGTERM, exit 0. A plain client of the gateway API.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from emulation.sim_common import ActionLog, api_url, auth_headers, bounded, install_stop, paced, token

# (name, address, GLN or None); made up
CUSTOMERS = (
    ("Epicerie fine Lafitte", "12 rue des Arceaux, 33000 Bordeaux, France", None),
    ("Restaurant Le Relais Landais", "3 place de la Mairie, 40800 Aire-sur-l'Adour, France", None),
    ("Maison Darrigade, Halles de Dax", "Place Roger Ducos, 40100 Dax, France", None),
    ("Grossiste Sud-Ouest Frais", "MIN de Brienne, quai de Paludate, 33800 Bordeaux, France", "9520123450014"),
    ("Les Delices du Pays Basque", "5 rue Port Neuf, 64100 Bayonne, France", None),
    ("Hotel-Restaurant Les Pins", "210 avenue de l'Ocean, 40150 Hossegor, France", None),
    ("Centrale d'achats Gourmet Atlantique", "ZA de Jalday, 64500 Saint-Jean-de-Luz, France", "9520123450021"),
    ("Cave et Conserves Garonne", "18 cours Victor Hugo, 47000 Agen, France", None),
)
# farm addresses by site code (the place; the farm's lieu-dit is drawn from its id)
SITE_PLACES = {"LL": "40500 Saint-Sever", "LS": "40800 Aire-sur-l'Adour", "MT": "40090 Saint-Avit",
               "BS": "64100 Bayonne", "PX": "64250 Cambo-les-Bains"}
LIEUX_DITS = ("Bordenave", "Lamothe", "Peyrehorade", "Barrouilhet", "Caplane", "Lasserre", "Pouy", "Larrieu")


def farm_record(farmer_id: str, farmer_name: str, site_code: str) -> dict[str, Any]:
    """The simulated farm of a farmer: the same address every time for the same farmer."""
    h = zlib.crc32(farmer_id.encode())
    place = SITE_PLACES.get(site_code, "40000 Mont-de-Marsan")
    return {"name": f"Elevage {farmer_name}",
            "address": f"Lieu-dit {LIEUX_DITS[h % len(LIEUX_DITS)]}, {place}, France"}


@dataclass
class Config:
    api: str
    shipments_per_hour: float = 60.0
    duration: float = 0.0
    seed: int = 0
    token: str | None = None

    @property
    def interval_s(self) -> float:
        return 3600.0 / self.shipments_per_hour


@dataclass
class Stats:
    shipments: int = 0
    units: int = 0
    farms_registered: int = 0
    no_products: int = 0
    errors: int = 0
    lots: list[str] = field(default_factory=list)


class ShippingSimulator:
    def __init__(self, cfg: Config, log: ActionLog | None = None) -> None:
        self.cfg = cfg
        self.log = log or ActionLog("shipping")
        self.rng = random.Random(cfg.seed)
        self.stats = Stats()
        self.shipped: set[str] = set()
        self.farms_known: set[str] = set()

    async def run(self, stop: asyncio.Event) -> int:
        c = self.cfg
        self.log("start", api=c.api, shipments_per_hour=c.shipments_per_hour, interval=f"{c.interval_s:.3f}s",
                 duration=c.duration, seed=c.seed)
        async with httpx.AsyncClient(base_url=c.api, headers=auth_headers(c.token), timeout=10.0) as http:
            await paced(stop, c.interval_s, c.duration, self.log, lambda: self.one_shipment(http))
        self.log("stopped", **{k: v for k, v in asdict(self.stats).items() if k != "lots"})
        return 0

    async def one_shipment(self, http: httpx.AsyncClient) -> bool:
        try:
            r = await http.get("/api/consumer/products", params={"active": "true", "limit": 1000})
            if r.status_code != 200:
                return self._error("products", f"HTTP {r.status_code}: {r.text[:200]}")
            items: list[dict[str, Any]] = r.json()
            if not items:
                self.stats.no_products += 1
                self.log("no_products")
                return False
            by_lot: dict[str, list[dict[str, Any]]] = {}
            for p in items:
                by_lot.setdefault(p["lot_id"], []).append(p)
            fresh = sorted(lot for lot in by_lot if lot not in self.shipped)
            lot_id = self.rng.choice(fresh or sorted(by_lot))
            if not await self._farm(http, lot_id):
                return False
            products = sorted(by_lot[lot_id], key=lambda p: p["id"])
            chosen = self.rng.sample(products, k=min(len(products), self.rng.randint(1, 3)))
            name, address, gln = self.rng.choice(CUSTOMERS)
            body: dict[str, Any] = {
                "reference": f"SIM-{self.cfg.seed}-{self.rng.getrandbits(40):010x}",
                "recipient_name": name, "recipient_address": address,
                "lines": [{"product_id": p["id"], "quantity": self.rng.randint(6, 48)}
                          for p in sorted(chosen, key=lambda p: p["id"])],
            }
            if gln:
                body["recipient_gln"] = gln
            r = await http.post("/api/traceability/dispatches", json=body)
            if r.status_code not in (200, 201):
                return self._error("dispatch", f"HTTP {r.status_code}: {r.text[:200]}")
            out = r.json()
        except httpx.HTTPError as exc:
            return self._error("api_unreachable", type(exc).__name__)
        units = sum(x["quantity"] for x in body["lines"])
        self.shipped.add(lot_id)
        self.stats.shipments += 1
        self.stats.units += units
        self.stats.lots.append(lot_id)
        self.log("shipped", lot=lot_id, reference=out["reference"], recipient=name.replace(" ", "_"),
                 products=len(body["lines"]), units=units)
        return True

    async def _farm(self, http: httpx.AsyncClient, lot_id: str) -> bool:
        r = await http.get(f"/api/lots/{lot_id}")
        if r.status_code != 200:
            return self._error("lot", f"HTTP {r.status_code}: {r.text[:200]}")
        lot = r.json()
        fid = lot["farmer_id"]
        if fid in self.farms_known:
            return True
        r = await http.get(f"/api/traceability/farms/{fid}")
        if r.status_code == 404:
            r = await http.put(f"/api/traceability/farms/{fid}",
                               json=farm_record(fid, lot["farmer_name"], lot["site_code"]))
            if r.status_code != 200:
                return self._error("farm", f"HTTP {r.status_code}: {r.text[:200]}")
            self.stats.farms_registered += 1
            self.log("farm_registered", farmer=fid)
        elif r.status_code != 200:
            return self._error("farm", f"HTTP {r.status_code}: {r.text[:200]}")
        self.farms_known.add(fid)
        return True

    def _error(self, step: str, detail: str) -> bool:
        self.stats.errors += 1
        self.log("error", step=step, detail=detail)
        return False


def parse_args(argv: list[str] | None = None) -> Config:
    p = argparse.ArgumentParser(prog="python -m emulation.shipping", description=__doc__.split("\n\n")[0])
    p.add_argument("--api", type=api_url, required=True, help="gateway base URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--shipments-per-hour", type=bounded(float, 0.001, 3.6e6, "--shipments-per-hour"), default=60.0)
    p.add_argument("--duration", type=bounded(float, 0, 1e9, "--duration"), default=0.0,
                   help="wall seconds to run; 0 = until stopped")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--token", default=None, help="API bearer token (default: $SQAL_API_TOKEN)")
    a = p.parse_args(argv)
    return Config(api=a.api, shipments_per_hour=a.shipments_per_hour, duration=a.duration, seed=a.seed,
                  token=token(a.token))


async def _main(cfg: Config) -> int:
    stop = asyncio.Event()
    install_stop(stop)
    return await ShippingSimulator(cfg).run(stop)


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(_main(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
