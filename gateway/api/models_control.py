"""Response models of the control panel (/api/control-panel), so /docs documents every answer.

Each answer carries the fields and JSON types of control-panel API v1, which existing clients rely on
(docs/control-panel.md), plus this gateway's own fields. v1 named Docker containers; here each simulator is a supervised child process, so:
`container_name` is the simulator's name (its device id, or `gavage` / `consumer`),
`container_id` its `run_id` (one 12-hex id per start), `docker_available` whether the supervisor
can start simulators. docs/control-panel.md lists every route with its fields.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from gateway.api.models_lots import Stats as LotStats

ProcessState = Literal["running", "stopping", "restarting", "stopped", "exited", "failed"]
StatusValue = Literal["running", "stopping", "restarting", "stopped", "exited", "failed", "not_found"]
StartOutcome = Literal["started", "already_running"]
StepOutcome = Literal["started", "already_running", "error"]
Overall = Literal["running", "partial", "error"]


# ---- one simulator's process -------------------------------------------------------------------

class ProcessInfo(BaseModel):
    """What the supervisor knows of one simulator process (every status and start/stop answer)."""

    device_id: str = Field(description="The simulator's name: the SQAL device id, or 'gavage' / 'consumer'")
    container_name: str = Field(description="v1 field (the Docker container's name): here the simulator's "
                                            "name, the same as device_id")
    name: str = Field(description="The simulator's name (= device_id)")
    kind: str = Field(description="Catalogue entry: sqal_device, gavage or consumer")
    run_id: str | None = Field(default=None, description="One id per start (12 hex digits); null if never started")
    pid: int | None = Field(default=None, description="Process id while running, else null")
    last_pid: int | None = Field(default=None, description="Process id of the last run, kept after it ended")
    created_at: datetime | None = Field(default=None, description="v1 field (container creation): when the "
                                                                   "current run started")
    started_at: datetime | None = Field(default=None, description="When the current run started")
    uptime_seconds: int | None = Field(default=None, description="Whole seconds since started_at while running, "
                                                                 "else null")
    ended_at: datetime | None = Field(default=None, description="When the last run ended; null while running")
    exit_code: int | None = Field(default=None, description="Exit code of the last run; null while running")
    restarts: int = Field(default=0, description="Restarts after failures in this run (SQAL devices: at most 5)")
    restart_policy: str | None = Field(default=None, description="on-failure (SQAL devices) or no")
    location: str | None = Field(default=None, description="v1 field: the SQAL device's location (null for "
                                                           "gavage and consumer)")
    interval: float | None = Field(default=None, description="v1 field: the SQAL device's sample interval (s); "
                                                             "a number here (0.2-3600), an integer in v1")
    config_profile: str | None = Field(default=None, description="v1 field: the SQAL device's quality profile "
                                                                 "(default, premium, good, acceptable, low, defective)")
    config: dict[str, Any] = Field(default_factory=dict, description="The validated options of the current run, "
                                                                     "seed included")
    argv: list[str] = Field(default_factory=list, description="The command line the supervisor ran")
    log_file: str | None = Field(default=None, description="The simulator's log file on the gateway")
    log_lines: int = Field(default=0, description="Log lines printed since the gateway started")


class SimulatorStatus(ProcessInfo):
    """A simulator's status (v1: SimulatorStatus)."""

    status: StatusValue = Field(description="Process state: running, stopping, restarting, stopped (on request), "
                                            "exited (ended by itself, code 0), failed (non-zero); not_found when "
                                            "never started (gavage and consumer status only)")


class StartAnswer(ProcessInfo):
    """Answer of a start: the request's outcome and the process status."""

    status: StartOutcome = Field(description="What this request did: started, or already_running (nothing changed)")
    state: ProcessState = Field(description="The process state after the request")
    container_id: str | None = Field(description="v1 field (the container's id): the run_id of this run")
    message: str = Field(description="v1 field: what happened, in words")


class GavageStartAnswer(StartAnswer):
    nb_lots: int = Field(description="v1 field: lots the simulator creates and feeds")
    acceleration: float = Field(description="v1 field: simulated time factor (an integer in v1)")


class ConsumerStartAnswer(StartAnswer):
    feedbacks_per_hour: int = Field(description="v1 field: feedback rate of the simulator")
    active_lots_count: int = Field(description="v1 field: lots in progress now (0 when use_active_lots is "
                                               "false)")
    interval_seconds: float = Field(description="Seconds between two feedbacks (3600 / feedbacks_per_hour)")


class StopAnswer(ProcessInfo):
    """Answer of a stop (SIGTERM, then SIGKILL after the timeout)."""

    status: Literal["stopped", "not_running"] = Field(description="stopped by this request, or not_running "
                                                                  "(it had already ended)")
    state: ProcessState = Field(description="The process state after the request")
    stopped: bool = Field(description="True when this request stopped a running process")
    message: str = Field(description="v1 field: what happened, in words")


class SqalStopAllAnswer(BaseModel):
    status: Literal["stopped"] = Field(description="Always stopped")
    stopped_count: int = Field(description="v1 field: SQAL devices this request stopped")
    results: list[StopAnswer] = Field(description="v1 field: the stop answer of each device that was running")
    stopped: list[str] = Field(description="Ids of the devices this request stopped")
    total_stopped: int = Field(description="= stopped_count")


class LogEntry(BaseModel):
    n: int = Field(description="Line number since the gateway started (the simulator's, across its runs)")
    at: datetime = Field(description="When the gateway read the line")
    run_id: str | None = Field(description="The run that printed it")
    line: str = Field(description="The line as printed")


class LogsAnswer(BaseModel):
    device_id: str = Field(description="v1 field: the simulator's name")
    logs: str = Field(description="v1 field: the last `tail` lines as one text, one line each")
    kind: str = Field(description="sqal_device, gavage or consumer")
    lines: list[str] = Field(description="The same lines, as a list")
    entries: list[LogEntry] = Field(description="The same lines with their number, time and run")
    total_lines: int = Field(description="Lines printed since the gateway started")
    log_file: str = Field(description="The log file on the gateway (5 MB, then one .1 kept)")


# ---- scenarios ---------------------------------------------------------------------------------

class StepBase(BaseModel):
    status: StepOutcome = Field(description="started, already_running, or error (see error)")
    run_id: str | None = Field(default=None, description="The run's id; null on error")
    pid: int | None = Field(default=None, description="The process id; null on error")
    started_at: datetime | None = Field(default=None, description="When the run started")
    error: str | None = Field(default=None, description="Why the step failed (status error), else null")
    container_name: str = Field(description="v1 field: the simulator's name")
    container_id: str | None = Field(default=None, description="v1 field: the run_id")
    message: str = Field(description="v1 field: what happened, in words")


class ScenarioDevice(StepBase):
    """One SQAL device of a scenario."""

    device_id: str = Field(description="v1 field: the device id")
    location: str = Field(description="The device's location")
    interval: float = Field(description="Its sample interval (s)")


class GavageStep(StepBase):
    nb_lots: int | None = Field(default=None, description="v1 field: lots the gavage simulator creates")
    acceleration: float | None = Field(default=None, description="v1 field: simulated time factor")


class ConsumerStep(StepBase):
    feedbacks_per_hour: int | None = Field(default=None, description="v1 field: the consumer's effective "
                                                                      "rate (quality_focus: twice the request's)")
    active_lots_count: int | None = Field(default=None, description="v1 field: lots in progress at its start")


class ShippingStep(StepBase):
    shipments_per_hour: float | None = Field(default=None, description="Dispatches of products to customers per "
                                                                        "hour (docs/traceability.md)")


class SqalScenarioAnswer(BaseModel):
    scenario: str = Field(description="v1 field: multi_site, stress_test or production_demo")
    status: Overall = Field(description="running (no error), partial (errors, something running), error")
    started_count: int = Field(description="v1 field: devices started or already running")
    results: list[ScenarioDevice] = Field(description="v1 field: one entry per device, in start order")
    devices: list[ScenarioDevice] = Field(description="The same entries as results")
    errors: list[str] = Field(description="One message per failed device, naming it")
    running_count: int = Field(description="= started_count")
    started_at: datetime = Field(description="When the scenario was started")


class OrchestrateAnswer(BaseModel):
    scenario: str = Field(description="v1 field: the scenario's name")
    status: Overall = Field(description="v1 field: running (no error), partial (errors, something running), "
                                        "error (nothing running)")
    gavage: GavageStep | None = Field(description="v1 field: the gavage step; null when the scenario has none")
    sqal_devices: list[ScenarioDevice] = Field(description="v1 field: the SQAL devices, in start order")
    shipping: ShippingStep | None = Field(default=None, description="The shipping step (complete_demo): products "
                                         "of inspected lots dispatched to customers; null when the scenario has none")
    consumer: ConsumerStep | None = Field(description="v1 field: the consumer step; null when the scenario "
                                                       "has none")
    errors: list[str] = Field(description="v1 field: one message per failed step, naming it")
    running_count: int = Field(description="v1 field: simulators running once every step has started")
    started_at: datetime = Field(description="v1 field: when the scenario was started")


class OrchestrateStopAnswer(BaseModel):
    status: Literal["stopped"] = Field(description="Always stopped")
    scenario: str | None = Field(description="The last scenario started, if any")
    gavage: StopAnswer | None = Field(description="v1 field: the gavage simulator's stop answer; null if it "
                                                  "was never started")
    sqal_devices: list[StopAnswer] = Field(description="v1 field: the stop answer of each SQAL device that "
                                                       "was running")
    consumer: StopAnswer | None = Field(description="v1 field: the consumer simulator's stop answer; null if "
                                                    "it was never started")
    shipping: StopAnswer | None = Field(default=None, description="The shipping simulator's stop answer; null if it "
                                                                  "was never started")
    total_stopped: int = Field(description="v1 field: simulators this request stopped")
    stopped: list[str] = Field(description="Names of the simulators this request stopped")
    stopped_at: datetime = Field(description="When the last one had stopped")


class DeviceState(BaseModel):
    device_id: str = Field(description="The device id")
    status: StatusValue = Field(description="Its process state")


class SqalSummary(BaseModel):
    total_devices: int = Field(description="v1 field: SQAL devices started since the gateway started")
    running_devices: int = Field(description="v1 field: those running now")
    devices: list[DeviceState] = Field(description="v1 field: each device's id and state")


class LotCounts(BaseModel):
    total_lots: int = Field(description="Lots in the registry")
    active_lots: int = Field(description="Lots in progress (created, gavage, ready, inspecting)")
    completed_lots: int = Field(description="Lots whose inspection is closed")
    avg_itm: float | None = Field(description="Mean ITM of the lots that have one; null until one has ("
                                              "v1 showed a made-up 0.0)")


class OverallStatus(BaseModel):
    total_simulators: int = Field(description="v1 field: the gavage, consumer and shipping simulators plus "
                                              "every SQAL device started since the gateway started")
    running_simulators: int = Field(description="v1 field: simulators whose process is alive (running, "
                                                "stopping)")


class OrchestrateStatus(BaseModel):
    gavage: SimulatorStatus = Field(description="v1 field: the gavage simulator's status (not_found if never "
                                                "started)")
    sqal: SqalSummary = Field(description="v1 field: the SQAL devices in short")
    consumer: SimulatorStatus = Field(description="v1 field: the consumer simulator's status")
    shipping: SimulatorStatus = Field(description="The shipping simulator's status (not_found if never started)")
    lots: LotCounts = Field(description="v1 field: the lot registry's counts")
    overall_status: OverallStatus = Field(description="v1 field: simulators in total and running")
    scenario: str | None = Field(description="The last scenario started through /orchestrate/start")
    options: dict[str, Any] | None = Field(description="Its options, defaults included")
    started_at: datetime | None = Field(description="When it was started")
    sqal_devices: list[SimulatorStatus] = Field(description="Every SQAL device's full status")
    running_count: int = Field(description="Simulators running now (= overall_status.running_simulators)")


# ---- health and stats --------------------------------------------------------------------------

class ControlHealth(BaseModel):
    status: Literal["healthy", "degraded"] = Field(description="v1 field: healthy when the supervisor and "
                                                               "the database are")
    docker_available: bool = Field(description="v1 field (Docker reachable): here, whether the supervisor can "
                                               "start simulators; no Docker is used")
    timestamp: datetime = Field(description="v1 field: the time of the answer (UTC)")
    supervisor: Literal["ok", "unavailable"] = Field(description="The simulator supervisor")
    database: str = Field(description="ok, or error: <why>")
    broker_url: str | None = Field(description="The MQTT broker the SQAL devices are given (no login in it)")
    api_url: str = Field(description="This gateway's URL as the simulators reach it")
    running: int = Field(description="Simulators running now")
    catalogue: list[str] = Field(description="Simulator kinds the supervisor can start")


class SimulatorCounts(BaseModel):
    total: int = Field(description="Simulators of every kind started since the gateway started")
    running: int = Field(description="Those running now")
    by_status: dict[str, int] = Field(description="Count per process state")
    sqal_devices_running: int = Field(description="SQAL devices running now")


class DeviceCounts(BaseModel):
    total: int = Field(description="Devices the ingest knows (real boards and emulated ones)")
    online: int = Field(description="Those whose last status is online")
    samples_stored: int = Field(description="Samples stored from all of them")


class ControlStats(BaseModel):
    total_simulators: int = Field(description="v1 field: SQAL devices started since the gateway started")
    running_simulators: int = Field(description="v1 field: SQAL devices whose process is alive (running, "
                                                "stopping)")
    stopped_simulators: int = Field(description="v1 field: SQAL devices stopped or exited")
    error_simulators: int = Field(description="v1 field: SQAL devices whose process failed (restarting ones "
                                              "count in none of these three)")
    docker_available: bool = Field(description="v1 field: whether the supervisor can start simulators")
    backend_healthy: bool = Field(description="v1 field: the gateway answered and its database did")
    simulators: SimulatorCounts = Field(description="Simulators of every kind")
    devices: DeviceCounts = Field(description="Devices as the ingest sees them")
    lots: LotStats = Field(description="The lot registry's statistics")
