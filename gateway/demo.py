"""`sqal demo`: complete_demo on the embedded defaults, with a live summary in the terminal.

The gateway starts (embedded PostgreSQL + embedded message engine), then the complete_demo scenario:
gavage simulator -> 2 s -> emulated SQAL devices -> 5 s -> consumer simulator. The defaults are
chosen so a first lot goes the whole way (gavage days, ready, SQAL samples, inspection with grades
and ITM, products, consumer feedback) within a few minutes: see docs/control-panel.md for the
measured time. The summary reads the registry in-process every few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from gateway.api.control_common import context_for
from gateway.config import Settings
from gateway.scenarios import ScenarioOptions
from registry import devices as reg_devices
from registry import lots as reg_lots
from registry import stats as reg_stats
from registry.products import majority_grade

STATES = ("created", "gavage", "ready", "inspecting", "inspected", "suspended", "closed")
GRADES = ("A+", "A", "B", "C", "REJECT")


@dataclass
class DemoOptions:
    """Defaults (*choice*): 10000x (the API's maximum; a simulated day lasts 8.6 s, a lot 95-121 s),
    devices sampling every 2 s, inspection closed after 10 samples, one feedback every 10 s."""

    nb_lots: int = 3
    acceleration: float = 10000
    nb_sqal_devices: int = 4
    interval: float = 2.0
    feedbacks_per_hour: float = 360
    inspection_samples: int = 10
    profile: str = "default"
    seed: int = 1
    duration: float = 0


def apply_options(settings: Settings, opts: DemoOptions) -> None:
    """The demo's inspection target, unless SQAL_INSPECTION_SAMPLES sets one."""
    if "inspection_samples" not in settings.model_fields_set:
        settings.inspection_samples = opts.inspection_samples


async def start(app: Any, opts: DemoOptions, echo: Callable[[str], Any]) -> dict[str, Any]:
    o = ScenarioOptions(scenario_name="complete_demo", nb_lots=opts.nb_lots, acceleration=opts.acceleration,
                        nb_sqal_devices=opts.nb_sqal_devices, interval=opts.interval,
                        feedbacks_per_hour=opts.feedbacks_per_hour, profile=opts.profile, seed=opts.seed,
                        duration=opts.duration)
    echo(f"Starting complete_demo: {opts.nb_lots} lots at {opts.acceleration:g}x (a day lasts "
         f"{86400 / opts.acceleration:.1f} s), {opts.nb_sqal_devices} SQAL devices every {opts.interval:g} s, "
         f"inspection after {app.state.settings.inspection_samples} samples, "
         f"{opts.feedbacks_per_hour:g} feedbacks/h ...")
    out: dict[str, Any] = await app.state.orchestrator.start(o, context_for(app.state))
    echo(f"complete_demo {out['status']}: {out['running_count']} simulators running"
         + (f"; errors: {'; '.join(out['errors'])}" if out["errors"] else ""))
    echo("  logs: GET /api/control-panel/simulators/logs/{gavage|consumer|ESP32_DEMO_LL_01...}")
    return out


async def snapshot(app: Any) -> dict[str, Any]:
    """What the summary shows, read from the registry and the supervisor."""
    pool = app.state.pool
    lots = await reg_lots.list_lots(pool, limit=1000)
    by_state = {s: 0 for s in STATES}
    grades = {g: 0 for g in GRADES}
    for lot in lots:
        by_state[lot["state"]] = by_state.get(lot["state"], 0) + 1
        for g, n in (lot.get("grade_distribution") or {}).items():
            grades[g] = grades.get(g, 0) + int(n)
    devices = await reg_devices.list_devices(pool, limit=5000)
    feedback_rows = await pool.fetch("SELECT lot_id, count(*) AS n FROM consumer_feedback GROUP BY lot_id")
    feedback = {r["lot_id"]: int(r["n"]) for r in feedback_rows}
    sup = app.state.supervisor
    return {"lots": lots, "by_state": by_state, "grades_inspected": grades,
            "devices_online": sum(1 for d in devices if d.get("state") == "online"), "devices": len(devices),
            "samples": sum(int(d.get("samples_stored") or 0) for d in devices),
            "feedback": feedback, "stats": await reg_stats.global_stats(pool),
            "simulators": sup.list_status(), "at": time.monotonic()}


def render(s: dict[str, Any], started: float) -> Group:
    st = s["stats"]
    head = Text.assemble(
        ("SQAL complete_demo ", "bold"), f"({s['at'] - started:.0f} s)   ",
        "lots: ", ", ".join(f"{k} {v}" for k, v in s["by_state"].items() if v) or "none yet",
        f"   devices online {s['devices_online']}/{s['devices']}   samples {s['samples']}",
        f"   feedback {sum(s['feedback'].values())}",
        f" (avg {st['average_consumer_rating']})" if st["average_consumer_rating"] is not None else "",
        f"   avg ITM {st['avg_itm']}" if st["avg_itm"] is not None else "")
    grades = Text("grades of inspected lots: " + "  ".join(f"{g} {n}" for g, n in s["grades_inspected"].items()))
    t = Table(expand=False, show_edge=False, pad_edge=False)
    for col in ("lot", "state", "site", "genetics", "day", "weight g", "samples", "grade", "ITM", "feedback"):
        t.add_column(col)
    for lot in s["lots"][:12]:  # newest first
        t.add_row(lot["id"], lot["state"], lot["site_code"], lot["genetics"], str(lot["current_day"]),
                  f"{lot['mean_weight_g']:.0f}" if lot.get("mean_weight_g") else "-", str(lot["sample_count"] or "-"),
                  majority_grade(lot.get("grade_distribution")) or "-",
                  f"{lot['itm']:.2f}" if lot.get("itm") is not None else "-", str(s["feedback"].get(lot["id"], 0)))
    sims = Text("simulators: " + ", ".join(f"{x['name']} {x['status']}" for x in s["simulators"]))
    return Group(head, grades, t, sims)


def plain(s: dict[str, Any], started: float) -> str:
    st = s["stats"]
    states = ", ".join(f"{k} {v}" for k, v in s["by_state"].items() if v) or "none yet"
    return (f"[{s['at'] - started:.0f}s] lots: {states} | devices online {s['devices_online']} | samples "
            f"{s['samples']} | feedback {sum(s['feedback'].values())} | avg ITM {st['avg_itm']}")


async def live_summary(app: Any, console: Console | None = None, every_s: float = 2.0) -> None:
    """Runs until cancelled: a rich Live panel on a terminal, one plain line every 10 s otherwise."""
    from rich.live import Live

    console = console or Console()
    started = time.monotonic()
    if not console.is_terminal:
        while True:
            with contextlib.suppress(Exception):  # a summary must never take the gateway down
                console.print(plain(await snapshot(app), started), soft_wrap=True)
            await asyncio.sleep(max(every_s, 10.0))
    with Live(console=console, auto_refresh=False, transient=False) as live:
        while True:
            try:
                live.update(render(await snapshot(app), started), refresh=True)
            except Exception as exc:  # noqa: BLE001  (keep the panel alive through a transient database error)
                live.update(Text(f"summary unavailable: {exc}"), refresh=True)
            await asyncio.sleep(every_s)
