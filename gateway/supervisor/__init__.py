"""Runs the project's simulators (emulated SQAL devices, gavage, consumer, shipping) as child processes.

`Supervisor` (core.py) owns the processes; `Catalogue` (catalogue.py) is the fixed list of commands
it may run; `LogBuffer` (logs.py) captures their output; orphans.py makes sure none outlives the
gateway.
"""

from gateway.supervisor.catalogue import (
    Catalogue,
    CommandSpec,
    ConsumerParams,
    DeviceParams,
    GavageParams,
    RunContext,
    ShippingParams,
)
from gateway.supervisor.core import StartError, Supervisor, UnknownSimulator

__all__ = ["Catalogue", "CommandSpec", "ConsumerParams", "DeviceParams", "GavageParams", "RunContext",
           "ShippingParams", "StartError", "Supervisor", "UnknownSimulator"]
