"""Wiring the supervisor into the gateway's lifespan (one call in gateway/app.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.scenarios import Orchestrator
from gateway.supervisor.core import Supervisor


async def start_supervisor(app: Any, settings: Any) -> Supervisor:
    """Create the supervisor on app.state (with its Orchestrator), after killing any simulator a
    previous gateway on the same data dir left behind (it was SIGKILLed or lost power)."""
    sup = Supervisor(settings.ensure_data_dir(), device_target=settings.device_target)
    await asyncio.to_thread(sup.open)
    app.state.supervisor = sup
    app.state.orchestrator = Orchestrator(sup)
    return sup
