"""Consumer feedback simulator: `python -m emulation.consumer --api URL --feedbacks-per-hour F
--min-rating a --max-rating b --duration S --use-active-lots|--no-use-active-lots --seed K [--token T]`.

The model is domain.md section 5. Every 3600 / F seconds one consumer picks a product (only
products of lots on the market with --use-active-lots, else any product), scans its QR code
(GET /api/consumer/scan/{GS1 Digital Link URI}), and posts feedback (POST /api/consumer/feedback):
- consumer mix: enthusiastic 15 % (4-5), satisfied 45 % (3-4), neutral 25 % (3),
  disappointed 10 % (2-3), unhappy 5 % (1-2); +1 when the lot's SQAL grade is A+/A, -1 when C;
- texture, flavor, freshness = overall +/- 1; every rating clipped to [min_rating, max_rating];
- a comment matching the rating and a consumption context (home, restaurant, special_event, gift).
Slots are fixed-rate; a slot missed (slow gateway) is skipped, never made up in a burst. Stops after
--duration seconds (0 = until stopped) or on SIGTERM, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from emulation.sim_common import ActionLog, api_url, auth_headers, bounded, install_stop, paced, token

# (name, share, rating range)
CONSUMER_MIX = (("enthusiastic", 0.15, (4, 5)), ("satisfied", 0.45, (3, 4)), ("neutral", 0.25, (3, 3)),
                ("disappointed", 0.10, (2, 3)), ("unhappy", 0.05, (1, 2)))
CONTEXTS = (("home", 0.50), ("restaurant", 0.20), ("special_event", 0.20), ("gift", 0.10))
COMMENTS = {
    1: ("Texture granuleuse, tres decu.", "Gout amer, je ne rachete pas."),
    2: ("Un peu trop gras a mon gout.", "Moyen, la texture manquait de fondant."),
    3: ("Correct, sans plus.", "Bon produit, rien d'exceptionnel."),
    4: ("Tres bon, fondant et equilibre.", "Bonne qualite, je recommande."),
    5: ("Exceptionnel, texture parfaite !", "Le meilleur foie gras goute cette annee."),
}


def clip(v: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, v))


def draw_consumer(rng: random.Random) -> tuple[str, tuple[int, int]]:
    names = [c[0] for c in CONSUMER_MIX]
    i = rng.choices(range(len(names)), weights=[c[1] for c in CONSUMER_MIX])[0]
    return CONSUMER_MIX[i][0], CONSUMER_MIX[i][2]


def grade_adjustment(sqal_grade: str | None) -> int:
    return 1 if sqal_grade in ("A+", "A") else -1 if sqal_grade == "C" else 0


def draw_feedback(rng: random.Random, sqal_grade: str | None, min_rating: int, max_rating: int) -> dict[str, Any]:
    """One consumer's ratings, comment and context for a lot of the given SQAL grade."""
    kind, (lo, hi) = draw_consumer(rng)
    overall = clip(clip(rng.randint(lo, hi) + grade_adjustment(sqal_grade), 1, 5), min_rating, max_rating)
    detail = {k: clip(overall + rng.choice((-1, 0, 1)), min_rating, max_rating)
              for k in ("texture_rating", "flavor_rating", "freshness_rating")}
    context = rng.choices([c[0] for c in CONTEXTS], weights=[c[1] for c in CONTEXTS])[0]
    return {"consumer": kind, "overall_rating": overall, **detail, "comment": rng.choice(COMMENTS[overall]),
            "consumption_context": context}


@dataclass
class Config:
    api: str
    feedbacks_per_hour: float = 10.0
    min_rating: int = 1
    max_rating: int = 5
    duration: float = 0.0
    use_active_lots: bool = True
    seed: int = 0
    token: str | None = None

    @property
    def interval_s(self) -> float:
        return 3600.0 / self.feedbacks_per_hour


@dataclass
class Stats:
    feedbacks: int = 0
    scans: int = 0
    no_products: int = 0
    errors: int = 0
    lots: list[str] = field(default_factory=list)


class ConsumerSimulator:
    def __init__(self, cfg: Config, log: ActionLog | None = None) -> None:
        self.cfg = cfg
        self.log = log or ActionLog("consumer")
        self.rng = random.Random(cfg.seed)
        self.stats = Stats()

    async def run(self, stop: asyncio.Event) -> int:
        c = self.cfg
        self.log("start", api=c.api, feedbacks_per_hour=c.feedbacks_per_hour, interval=f"{c.interval_s:.3f}s",
                 min_rating=c.min_rating, max_rating=c.max_rating, duration=c.duration,
                 use_active_lots=c.use_active_lots, seed=c.seed)
        async with httpx.AsyncClient(base_url=c.api, headers=auth_headers(c.token), timeout=10.0) as http:
            await paced(stop, c.interval_s, c.duration, self.log, lambda: self.one_feedback(http))
        self.log("stopped", **{k: v for k, v in asdict(self.stats).items() if k != "lots"})
        return 0

    async def one_feedback(self, http: httpx.AsyncClient) -> bool:
        c = self.cfg
        try:
            params: dict[str, str | int] = {"limit": 1000}
            if c.use_active_lots:
                params["active"] = "true"
            r = await http.get("/api/consumer/products", params=params)
            if r.status_code != 200:
                return self._error("products", f"HTTP {r.status_code}: {r.text[:200]}")
            items = r.json()
            if not items:
                self.stats.no_products += 1
                self.log("no_products", active_only=c.use_active_lots)
                return False
            product = self.rng.choice(items)
            r = await http.get("/api/consumer/scan/" + quote(product["qr_uri"], safe=""))
            if r.status_code != 200:
                return self._error("scan", f"HTTP {r.status_code}: {r.text[:200]}")
            self.stats.scans += 1
            lot = r.json()["lot"]
            fb = draw_feedback(self.rng, lot.get("sqal_grade"), c.min_rating, c.max_rating)
            kind = fb.pop("consumer")
            r = await http.post("/api/consumer/feedback",
                                json={"product_id": product["id"], "qr_code": product["qr_uri"], **fb})
            if r.status_code != 201:
                return self._error("feedback", f"HTTP {r.status_code}: {r.text[:200]}")
        except httpx.HTTPError as exc:
            return self._error("api_unreachable", type(exc).__name__)
        self.stats.feedbacks += 1
        self.stats.lots.append(lot["id"])
        self.log("feedback", lot=lot["id"], product=product["id"], grade=lot.get("sqal_grade"), consumer=kind,
                 rating=fb["overall_rating"], texture=fb["texture_rating"], flavor=fb["flavor_rating"],
                 freshness=fb["freshness_rating"], context=fb["consumption_context"])
        return True

    def _error(self, step: str, detail: str) -> bool:
        self.stats.errors += 1
        self.log("error", step=step, detail=detail)
        return False


def parse_args(argv: list[str] | None = None) -> Config:
    p = argparse.ArgumentParser(prog="python -m emulation.consumer", description=__doc__.split("\n\n")[0])
    p.add_argument("--api", type=api_url, required=True, help="gateway base URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--feedbacks-per-hour", type=bounded(float, 0.001, 3.6e6, "--feedbacks-per-hour"), default=10.0)
    p.add_argument("--min-rating", type=bounded(int, 1, 5, "--min-rating"), default=1)
    p.add_argument("--max-rating", type=bounded(int, 1, 5, "--max-rating"), default=5)
    p.add_argument("--duration", type=bounded(float, 0, 1e9, "--duration"), default=0.0,
                   help="wall seconds to run; 0 = until stopped")
    p.add_argument("--use-active-lots", action=argparse.BooleanOptionalAction, default=True,
                   help="only products of lots on the market (default) / any product")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--token", default=None, help="API bearer token (default: $SQAL_API_TOKEN)")
    a = p.parse_args(argv)
    if a.min_rating > a.max_rating:
        p.error(f"--min-rating ({a.min_rating}) must not exceed --max-rating ({a.max_rating})")
    return Config(api=a.api, feedbacks_per_hour=a.feedbacks_per_hour, min_rating=a.min_rating,
                  max_rating=a.max_rating, duration=a.duration, use_active_lots=a.use_active_lots, seed=a.seed,
                  token=token(a.token))


async def _main(cfg: Config) -> int:
    stop = asyncio.Event()
    install_stop(stop)
    return await ConsumerSimulator(cfg).run(stop)


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(_main(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
