"""The supervisor with tiny test-only catalogue entries (real child processes, checked by pid)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from gateway.supervisor import (
    Catalogue,
    CommandSpec,
    ConsumerParams,
    DeviceParams,
    GavageParams,
    RunContext,
    StartError,
    Supervisor,
    UnknownSimulator,
)

ROOT = Path(__file__).resolve().parents[2]

TICKER = """
import signal, sys, time
def bye(*a):
    print("ticker: got SIGTERM, bye", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
i = 0
while True:
    print("tick %d %s" % (i, sys.argv[1:]), flush=True)
    i += 1
    time.sleep(0.05)
"""
STUBBORN = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("stubborn: ignoring SIGTERM", flush=True)
while True:
    time.sleep(0.1)
"""
SPAWNER = """
import signal, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
print("grandchild %d" % child.pid, flush=True)
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))  # leaves its grandchild behind on purpose
while True:
    time.sleep(0.1)
"""
QUIET = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
print("quiet: ready", flush=True)
while True:
    time.sleep(0.1)  # prints nothing more: a closed pipe cannot be what ends it
"""
LEAVER = """
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # inherits our stdout
print("grandchild %d" % child.pid, flush=True)
"""
CRASHER = """
import sys
print("crasher: failing", flush=True)
sys.exit(3)
"""
SCRIPTS = {"ticker": TICKER, "quiet": QUIET, "leaver": LEAVER, "stubborn": STUBBORN, "spawner": SPAWNER, "crasher": CRASHER}


def tiny_catalogue() -> Catalogue:
    cat = Catalogue()
    for kind, code in SCRIPTS.items():
        def build(params: Any, ctx: RunContext, code: str = code) -> CommandSpec:
            return CommandSpec([sys.executable, "-c", code, *params.get("args", [])])
        cat.register(kind, build)
    return cat


def ctx(tmp_path: Path) -> RunContext:
    return RunContext(api_url="http://127.0.0.1:9", broker_url="mqtt://127.0.0.1:9", data_dir=tmp_path,
                      api_token="s3cret")


@pytest.fixture
async def sup(tmp_path: Path) -> AsyncIterator[Supervisor]:
    s = Supervisor(tmp_path, tiny_catalogue(), stop_timeout=5, restart_backoff_s=0.05)
    s.open()
    yield s
    await s.close()


async def wait_for(pred: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        await asyncio.sleep(0.02)
    return pred()


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def test_start_is_idempotent_and_status_complete(sup: Supervisor, tmp_path: Path) -> None:
    status, info = await sup.start("t1", "ticker", {"args": ["--x", "1"]}, ctx(tmp_path))
    assert status == "started" and info["status"] == "running" and alive(info["pid"])
    assert info["argv"][-2:] == ["--x", "1"] and info["config"] == {"args": ["--x", "1"]}
    status2, info2 = await sup.start("t1", "ticker", {"args": []}, ctx(tmp_path))
    assert status2 == "already_running" and info2["pid"] == info["pid"] and info2["run_id"] == info["run_id"]
    # own process group, marked with its run id
    assert os.getpgid(info["pid"]) == info["pid"]
    assert psutil.Process(info["pid"]).environ()["SQAL_SUPERVISOR_RUN"] == info["run_id"]
    assert await wait_for(lambda: sup.children["t1"].logs.total >= 5)
    st = sup.status("t1")
    assert st["uptime_seconds"] is not None and st["started_at"] and st["exit_code"] is None and st["restarts"] == 0
    lines = [e["line"] for e in sup.children["t1"].logs.tail(100)]
    assert lines[0].startswith("supervisor: started ticker t1") and any(x.startswith("tick 0 ['--x', '1']") for x in lines)
    assert "tick 0" in Path(st["log_file"]).read_text()


async def test_graceful_stop_then_restart_gets_a_new_run(sup: Supervisor, tmp_path: Path) -> None:
    _, info = await sup.start("t2", "ticker", {}, ctx(tmp_path))
    await wait_for(lambda: sup.children["t2"].logs.total >= 3)
    final = await sup.stop("t2")
    assert final["stopped"] is True and final["exit_code"] == 0 and final["status"] == "stopped"
    assert not alive(info["pid"])
    assert any("got SIGTERM, bye" in e["line"] for e in sup.children["t2"].logs.tail(50))
    again = await sup.stop("t2")  # stopping a stopped one is harmless
    assert again["stopped"] is False
    status, info2 = await sup.start("t2", "ticker", {}, ctx(tmp_path))
    assert status == "started" and info2["run_id"] != info["run_id"] and info2["pid"] != info["pid"]


async def test_sigterm_ignored_gets_sigkill_after_timeout(sup: Supervisor, tmp_path: Path) -> None:
    _, info = await sup.start("s1", "stubborn", {}, ctx(tmp_path))
    await wait_for(lambda: any("ignoring" in e["line"] for e in sup.children["s1"].logs.tail(5)))
    t0 = time.monotonic()
    final = await sup.stop("s1", timeout=0.5)
    assert time.monotonic() - t0 < 5
    assert final["exit_code"] == -signal.SIGKILL and not alive(info["pid"])


async def test_no_grandchild_survives(sup: Supervisor, tmp_path: Path) -> None:
    await sup.start("g1", "spawner", {}, ctx(tmp_path))
    line = await wait_for(lambda: next((e["line"] for e in sup.children["g1"].logs.tail(10)
                                        if e["line"].startswith("grandchild")), None))
    grandchild = int(line.split()[1])
    assert alive(grandchild)
    await sup.stop("g1")
    assert await wait_for(lambda: not alive(grandchild), 5), "grandchild left running after its parent stopped"
    # the child itself obeyed SIGTERM: no kill after the timeout was needed, although its grandchild
    # still held the output pipe
    assert not any("ignored SIGTERM" in e["line"] for e in sup.children["g1"].logs.tail(10))


async def test_child_exiting_by_itself_takes_its_group_along(sup: Supervisor, tmp_path: Path) -> None:
    await sup.start("l1", "leaver", {}, ctx(tmp_path))
    await asyncio.wait_for(sup.children["l1"].done.wait(), 15)  # not held open by the grandchild's pipe
    line = next(e["line"] for e in sup.children["l1"].logs.tail(10) if e["line"].startswith("grandchild"))
    assert sup.status("l1")["status"] == "exited" and sup.status("l1")["exit_code"] == 0
    assert await wait_for(lambda: not alive(int(line.split()[1])), 5)


async def test_restart_on_failure_is_bounded(sup: Supervisor, tmp_path: Path) -> None:
    await sup.start("c1", "crasher", {}, ctx(tmp_path), restart="on-failure", max_restarts=2)
    await asyncio.wait_for(sup.children["c1"].done.wait(), 15)
    st = sup.status("c1")
    assert st["restarts"] == 2 and st["exit_code"] == 3 and st["status"] == "failed"
    assert sum("crasher: failing" in e["line"] for e in sup.children["c1"].logs.tail(100)) == 3


async def test_no_restart_policy_keeps_exit_code(sup: Supervisor, tmp_path: Path) -> None:
    await sup.start("c2", "crasher", {}, ctx(tmp_path))
    await asyncio.wait_for(sup.children["c2"].done.wait(), 15)
    assert sup.status("c2")["status"] == "failed" and sup.status("c2")["restarts"] == 0


async def test_unknown_and_bad_requests(sup: Supervisor, tmp_path: Path) -> None:
    with pytest.raises(UnknownSimulator, match="nope"):
        await sup.stop("nope")
    with pytest.raises(UnknownSimulator):
        sup.status("nope")
    with pytest.raises(StartError, match="no simulator kind 'rm -rf'"):
        await sup.start("x1", "rm -rf", {}, ctx(tmp_path))


async def test_live_log_subscription(sup: Supervisor, tmp_path: Path) -> None:
    await sup.start("t3", "ticker", {}, ctx(tmp_path))
    q = sup.children["t3"].logs.subscribe()
    got = [await asyncio.wait_for(q.get(), 10) for _ in range(3)]
    assert [g["n"] for g in got] == sorted(g["n"] for g in got) and all(g["line"].startswith("tick") for g in got)


async def test_stop_all_leaves_no_process(sup: Supervisor, tmp_path: Path) -> None:
    pids = []
    for i in range(3):
        _, info = await sup.start(f"m{i}", "ticker", {}, ctx(tmp_path))
        pids.append(info["pid"])
    _, info = await sup.start("m-stub", "stubborn", {}, ctx(tmp_path))
    pids.append(info["pid"])
    sup.stop_timeout = 0.5
    results = await sup.stop_all()
    assert sorted(r["name"] for r in results if r["stopped"]) == ["m-stub", "m0", "m1", "m2"]
    assert not any(alive(p) for p in pids) and sup.running() == []


def test_real_catalogue_argv_from_typed_params(tmp_path: Path) -> None:
    cat, c = Catalogue(), ctx(tmp_path)
    dev = cat.build("sqal_device", DeviceParams("ESP32_DEMO_LL_01", "Ligne A - Landes", 1.5, "premium", 7, 60), c)
    assert dev.argv[1:] == ["-m", "emulation.run_device", "--device-id", "ESP32_DEMO_LL_01", "--location",
                            "Ligne A - Landes", "--broker", "mqtt://127.0.0.1:9", "--interval", "1.5", "--profile",
                            "premium", "--seed", "7", "--flash-dir", str(tmp_path / "devices" / "ESP32_DEMO_LL_01"),
                            "--duration", "60"]
    gav = cat.build("gavage", GavageParams(nb_lots=2, acceleration=86400 / 10, duration=0, seed=5), c)
    assert gav.argv[1:] == ["-m", "emulation.gavage", "--api", "http://127.0.0.1:9", "--nb-lots", "2",
                            "--acceleration", "8640", "--duration", "0", "--seed", "5"]
    assert gav.env == {"SQAL_API_TOKEN": "s3cret"} and "s3cret" not in " ".join(gav.argv)
    con = cat.build("consumer", ConsumerParams(20, 2, 4, 30, False, 9), c)
    assert con.argv[1:] == ["-m", "emulation.consumer", "--api", "http://127.0.0.1:9", "--feedbacks-per-hour", "20",
                            "--min-rating", "2", "--max-rating", "4", "--duration", "30", "--no-use-active-lots",
                            "--seed", "9"]
    for bad, msg in ((lambda: DeviceParams("x"), "device_id 'x' must match"),
                     (lambda: DeviceParams("gavage"), "reserved"),
                     (lambda: DeviceParams("ESP32_A_01", location="a\nb"), "location must be printable"),
                     (lambda: DeviceParams("ESP32_A_01", profile="gold"), "profile 'gold' unknown"),
                     (lambda: GavageParams(nb_lots=11), "nb_lots must be between 1 and 10"),
                     (lambda: ConsumerParams(min_rating=5, max_rating=4), "min_rating")):
        with pytest.raises(ValueError, match=msg):
            bad()
    nobroker = RunContext(api_url="http://h", broker_url=None, data_dir=tmp_path)
    with pytest.raises(ValueError, match="no MQTT broker"):
        cat.build("sqal_device", DeviceParams("ESP32_A_01"), nobroker)


GATEWAY_STANDIN = """
import asyncio, sys
from pathlib import Path
sys.path.insert(0, {root!r})
from tests.gateway.test_supervisor import tiny_catalogue
from gateway.supervisor import RunContext, Supervisor

async def main():
    sup = Supervisor(Path(sys.argv[1]), tiny_catalogue())
    sup.open()
    ctx = RunContext(api_url="http://127.0.0.1:9", broker_url=None, data_dir=Path(sys.argv[1]))
    pids = {{}}
    for name, kind in (("polite", "quiet"), ("stubborn", "stubborn"), ("spawner", "spawner")):
        _, info = await sup.start(name, kind, {{}}, ctx)
        pids[name] = info["pid"]
    # the stubborn child must have set SIGTERM to ignored before the gateway dies: until then the
    # kernel's parent-death SIGTERM would still end it (a loaded box can take a second to get there)
    while not (any(e["line"].startswith("grandchild") for e in sup.children["spawner"].logs.tail(10))
               and any("ignoring" in e["line"] for e in sup.children["stubborn"].logs.tail(10))):
        await asyncio.sleep(0.02)
    line = next(e["line"] for e in sup.children["spawner"].logs.tail(10) if e["line"].startswith("grandchild"))
    pids["grandchild"] = int(line.split()[1])
    print("PIDS " + __import__("json").dumps(pids), flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_gateway_sigkill_leaves_no_orphan_after_restart(tmp_path: Path) -> None:
    script = tmp_path / "standin.py"
    script.write_text(textwrap.dedent(GATEWAY_STANDIN.format(root=str(ROOT))))
    data = tmp_path / "data"
    proc = await asyncio.to_thread(subprocess.Popen, [sys.executable, str(script), str(data)], stdout=subprocess.PIPE,
                                   text=True)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
        assert line.startswith("PIDS "), line
        pids: dict[str, int] = json.loads(line[5:])
        assert all(alive(p) for p in pids.values())
        proc.kill()  # the gateway dies without any cleanup
        proc.wait(10)
        # the polite child got SIGTERM from the kernel (PR_SET_PDEATHSIG) and left by itself
        assert await wait_for(lambda: not alive(pids["polite"]), 10), "polite child outlived the gateway"
        # a child that ignores SIGTERM and a grandchild survive that, until a gateway starts again
        assert alive(pids["stubborn"]) and alive(pids["grandchild"])
        # a gateway starting again on the same data dir reaps them
        restarted = Supervisor(data, tiny_catalogue())
        reaped = await asyncio.to_thread(restarted.open)
        assert {pids["stubborn"], pids["grandchild"]} <= set(reaped)
        assert not alive(pids["stubborn"]) and not alive(pids["grandchild"])
        assert await asyncio.to_thread(Supervisor(data, tiny_catalogue()).open) == []  # nothing left to reap
        await restarted.close()
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in locals().get("pids", {}).values():
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()


async def test_live_owner_children_are_not_reaped(sup: Supervisor, tmp_path: Path) -> None:
    _, info = await sup.start("keep", "ticker", {}, ctx(tmp_path))
    # another gateway process starting on the same data dir while this one lives
    code = ("import sys; from pathlib import Path; from gateway.supervisor import Supervisor; "
            "s = Supervisor(Path(sys.argv[1])); print(s.open()); s._owner.close()")
    out = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                                  text=True, timeout=60, cwd=ROOT, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr
    assert alive(info["pid"])


# ---- the board the SQAL devices emulate (SQAL_DEVICE_TARGET) ----


async def test_device_target_from_the_setting_reaches_the_device_argv(tmp_path: Path) -> None:
    from typing import get_args

    from emulation import run_device, targets
    from gateway.config import Settings

    # the setting offers exactly the emulator's targets, and the device runner takes each of them
    assert set(get_args(Settings.model_fields["device_target"].annotation)) == set(targets.TARGETS)
    assert Settings(data_dir=tmp_path).device_target == targets.DEFAULT
    for name in targets.TARGETS:
        args = run_device.parser().parse_args(["--device-id", "ESP32_A_01", "--broker", "mqtt://h:1883",
                                               "--flash-dir", str(tmp_path), "--target", name])
        assert args.target == name
    with pytest.raises(SystemExit):
        run_device.parser().parse_args(["--device-id", "ESP32_A_01", "--broker", "mqtt://h:1883",
                                        "--flash-dir", str(tmp_path), "--target", "esp64"])
    # the profile has no TLS: an mqtts:// broker is refused before anything starts
    with pytest.raises(SystemExit) as refused:
        run_device.main(["--device-id", "ESP32_A_01", "--broker", "mqtts://h:8883", "--flash-dir", str(tmp_path),
                         "--target", "esp32"])
    assert refused.value.code == 2 and not (tmp_path / "emulation.json").exists()
    # the catalogue: the RunContext's target as --target; none given, none passed (run_device's default)
    cat, c = Catalogue(), ctx(tmp_path)
    assert "--target" not in cat.build("sqal_device", DeviceParams("ESP32_A_01"), c).argv
    from dataclasses import replace
    assert cat.build("sqal_device", DeviceParams("ESP32_A_01"), replace(c, device_target="esp32")).argv[-2:] == \
        ["--target", "esp32"]
    with pytest.raises(ValueError, match="unknown target 'esp64'"):
        cat.build("sqal_device", DeviceParams("ESP32_A_01"), replace(c, device_target="esp64"))
    # the supervisor fills in its own target (the gateway's setting) where the context has none
    cat.register("probe", lambda p, ctx: CommandSpec([sys.executable, "-c", "pass", str(ctx.device_target)]))
    s = Supervisor(tmp_path, cat, device_target="esp32")
    s.open()
    try:
        _, info = await s.start("p1", "probe", {}, c)
        assert info["argv"][-1] == "esp32"
        _, info = await s.start("p2", "probe", {}, replace(c, device_target="unix64"))
        assert info["argv"][-1] == "unix64"  # a context that says wins
    finally:
        await s.close()


async def stored_by_boot(pool: Any, device_id: str) -> dict[int, int]:
    rows = await pool.fetch("SELECT boot, count(*) AS n FROM sqal_samples WHERE device_id = $1 GROUP BY boot",
                            device_id)
    return {int(r["boot"]): int(r["n"]) for r in rows}


async def test_a_scenarios_devices_run_on_the_esp32_profile(database_url: str, esp32_micropython: str,
                                                           tmp_path: Path) -> None:
    """SQAL_DEVICE_TARGET=esp32: a scenario started through the orchestrator runs its devices on the
    ESP32 profile (the profile's interpreter, the firmware frozen, the flash a littlefs2 image) and
    their samples are stored. A device that ran on unix64 before keeps counting its boots."""
    from emulation.device import EmulatedDevice
    from emulation.run_device import carry_boot_counter
    from gateway.api.control_common import context_for
    from gateway.app import create_app
    from gateway.config import Settings

    settings = Settings(database_url=database_url, data_dir=tmp_path, mqtt_embedded_port=0, ingest_flush_ms=10,
                        device_target="esp32")
    # ESP32_DEMO_01 ran on the 64-bit wheel before: its flash dir holds boot 41
    flash = tmp_path / "devices" / "ESP32_DEMO_01"
    flash.mkdir(parents=True)
    (flash / "state.json").write_text(json.dumps({"boot": 41, "failed_boots": 0}))
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        sup = app.state.supervisor
        sup.stop_timeout = 15
        out = await app.state.orchestrator.start_sqal_scenario("production_demo", context_for(app.state),
                                                                interval=0.5)
        assert out["status"] == "running", out
        names = [d["device_id"] for d in out["devices"]]
        assert names == ["ESP32_DEMO_01", "ESP32_DEMO_02"]
        try:
            for name in names:
                info = sup.status(name)
                assert info["argv"][-2:] == ["--target", "esp32"]

                def profile_pids(pid: int = info["pid"]) -> list[int]:
                    try:
                        kids = psutil.Process(pid).children(recursive=True)
                    except psutil.NoSuchProcess:
                        return []
                    out = []
                    for k in kids:
                        with contextlib.suppress(psutil.Error):
                            if k.cmdline()[:1] == [esp32_micropython] and "emulation.device_main" in k.cmdline():
                                out.append(k.pid)
                    return out
                assert await wait_for(profile_pids, 60), \
                    "no ESP32-profile interpreter under " + name + ":\n" + \
                    "\n".join(e["line"] for e in sup.children[name].logs.tail(40))
            pool = app.state.pool
            deadline = time.monotonic() + 120
            stored: dict[str, dict[int, int]] = {}
            while time.monotonic() < deadline:
                stored = {n: await stored_by_boot(pool, n) for n in names}
                if all(sum(v.values()) >= 3 for v in stored.values()):
                    break
                await asyncio.sleep(0.5)
            logs = {n: "\n".join(e["line"] for e in sup.children[n].logs.tail(60)) for n in names}
            for n in names:
                assert sum(stored[n].values()) >= 3, f"{n}: samples stored {stored[n]}\n{logs[n]}"
            # the boot counter of the earlier unix64 flash went onto the image: boot 42, not 1
            assert set(stored["ESP32_DEMO_01"]) == {42}, logs["ESP32_DEMO_01"]
            assert set(stored["ESP32_DEMO_02"]) == {1}
            assert "boot counter 41 of the unix64 flash carried onto the image" in logs["ESP32_DEMO_01"]
            assert "target=esp32" in logs["ESP32_DEMO_01"]
            assert (flash / "flash.img").stat().st_size == 2 * 1024 * 1024
            assert not (flash / "state.json").exists() and not (flash / "spool").exists()
        finally:
            await app.state.orchestrator.stop_all()
    # and back to unix64: the image's boot counter (42) comes along onto the directory
    back = EmulatedDevice("ESP32_DEMO_01", flash, "mqtt://127.0.0.1:1", target="unix64")
    assert carry_boot_counter(back) == "boot counter 42 of the ESP32 image carried onto the unix64 flash"
    assert json.loads((flash / "state.json").read_text())["boot"] == 42
