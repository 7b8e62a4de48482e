"""The control panel page end to end: Debian's Chromium (Playwright) against the real gateway
(child process, real PostgreSQL, embedded MQTT broker, emulated devices running the firmware on
MicroPython). Start complete_demo from the page, watch devices come online and the grade chart
move, follow a lot's timeline, stop everything; screenshots at 1280x800 and 390x844 go to
test-artifacts/web/. Any browser console error or page error fails the test, except the one 401
the test provokes on purpose (to check that refusals are shown in words)."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from typing import Any

from playwright.sync_api import Page, expect

from tests.web.conftest import ARTIFACTS, ConsoleLog, WebGateway

DEMO_DEVICES = ["ESP32_DEMO_LL_01", "ESP32_DEMO_LL_02"]


def api_get(gw: WebGateway, path: str) -> Any:
    with urllib.request.urlopen(gw.base + path, timeout=10) as r:
        return json.loads(r.read())


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def svg_number(page: Page, selector: str, attr: str) -> float:
    value = page.get_attribute(selector, f"data-{attr}")
    return float(value) if value else 0.0


def wait_until(fn: Any, timeout: float, what: str, gw: WebGateway) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\ngateway log:\n{gw.log()}")


def test_complete_demo_from_the_page(web_gateway: WebGateway, chromium: Any) -> None:
    gw = web_gateway
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    console = ConsoleLog()
    console.attach(page)
    page.set_default_timeout(20000)
    expect.set_options(timeout=10000)

    # / redirects to the page; the realtime stream connects without the token (reads are open)
    page.goto(gw.base + "/")
    assert page.url.startswith(gw.base + "/ui/"), page.url
    expect(page.locator("#live-state")).to_have_attribute("data-state", "open")
    expect(page.locator("#token-state")).to_have_text("no token")

    # a refusal is shown in words: stopping the gavage without the token -> the API's 401 detail
    console.allow("/api/control-panel/gavage/stop", "status of 401")
    page.click("a[data-tab=gavage]")
    page.click("#gavage-stop")
    expect(page.locator(".notice-error").first).to_contain_text("401")
    expect(page.locator(".notice-error").first).to_contain_text("authentication required")
    page.click(".notice-error .close")

    # the token, kept in localStorage
    page.fill("#token-input", gw.token)
    page.click("#token-save")
    expect(page.locator("#token-state")).to_have_text("token set")
    assert page.evaluate("localStorage.getItem('sqal.apiToken')") == gw.token

    # and a 404 in words once authenticated: that simulator was never started
    console.allow("/api/control-panel/consumer/stop", "status of 404")
    page.click("a[data-tab=consumer]")
    page.click("#consumer-stop")
    expect(page.locator(".notice-error").first).to_contain_text("the consumer simulator was never started")
    page.click(".notice-error .close")

    # start complete_demo from the Orchestration tab, fast settings (the API's own ranges)
    page.click("a[data-tab=orchestration]")
    page.select_option("#orch-scenario", "complete_demo")
    form = page.locator("#form-orch")
    for name, value in {"nb_lots": "2", "acceleration": "10000", "nb_sqal_devices": "2", "interval": "1",
                        "feedbacks_per_hour": "100"}.items():
        form.locator(f"[name={name}]").fill(value)
    page.select_option("#orch-scenario", "gavage_realtime")  # settings a scenario does not take are hidden
    expect(form.locator("[name=feedbacks_per_hour]")).to_be_hidden()
    page.select_option("#orch-scenario", "complete_demo")
    expect(form.locator("[name=feedbacks_per_hour]")).to_be_visible()
    t0 = time.monotonic()
    page.click("#orch-start")
    # the start answers after the scenario's own delays (2 s after gavage, 5 s after the devices)
    expect(page.locator(".notice-ok", has_text="complete_demo:")).to_contain_text("complete_demo: running",
                                                                                 timeout=30000)
    expect(page.locator("#orch-last")).to_contain_text("gavage started, 2 SQAL device(s), consumer started")
    expect(page.locator("#orch-status")).to_have_attribute("data-running", "4", timeout=20000)
    status = api_get(gw, "/api/control-panel/orchestrate/status")
    assert status["scenario"] == "complete_demo" and status["options"]["acceleration"] == 10000
    assert [d["device_id"] for d in status["sqal_devices"]] == DEMO_DEVICES

    # SQAL tab: both emulated devices come online; readings and grades move with the stream
    page.click("a[data-tab=sqal]")
    for dev in DEMO_DEVICES:
        expect(page.locator(f"#devices-table tr[data-device={dev}]")).to_have_attribute("data-state", "online",
                                                                                         timeout=60000)
    wait_until(lambda: svg_number(page, "#chart-grades", "total") > 0, 60, "a first graded sample", gw)
    before = svg_number(page, "#chart-grades", "total")
    wait_until(lambda: svg_number(page, "#chart-grades", "total") >= before + 4, 60, "the grade chart to update", gw)
    bars = page.locator("#chart-grades rect.bar")
    assert sum(int(bars.nth(i).get_attribute("data-value") or 0) for i in range(bars.count())) == \
        svg_number(page, "#chart-grades", "total")
    assert svg_number(page, "#chart-rpm", "total") > 0
    expect(page.locator("#devices-table tr[data-device=ESP32_DEMO_LL_01] .grade")).not_to_have_text("—")

    # the device's live log over the logs WebSocket
    page.select_option("#log-device", "ESP32_DEMO_LL_01")
    expect(page.locator("#log-pane")).to_contain_text("sqal: online", timeout=20000)
    expect(page.locator("#log-state")).to_have_text("live")
    shot(page, "sqal-1280x800")

    # Gavage tab: lots in progress with their day, weight, mortality; the gavage log streams
    page.click("a[data-tab=gavage]")
    expect(page.locator("#gavage-lots tbody tr[data-lot]")).to_have_count(2, timeout=20000)
    expect(page.locator("#gavage-log")).to_contain_text("gavage feeding lot=LOT_", timeout=20000)
    day = page.locator("#gavage-lots tbody tr[data-lot] td").nth(5).inner_text()
    assert re.fullmatch(r"\d+/\d+", day), day
    shot(page, "gavage-1280x800")

    # Orchestration: lots listed (the gavage simulator created them); open one lot's timeline
    page.click("a[data-tab=orchestration]")
    expect(page.locator("#lots-table tbody tr[data-lot]")).to_have_count(2, timeout=20000)
    page.reload()  # reloading keeps the token and the tab
    expect(page.locator("#token-state")).to_have_text("token set")
    expect(page.locator("a[data-tab=orchestration]")).to_have_class(re.compile(r"active"))
    link = page.locator("#lots-table a.lot-link").first
    lot_id = link.inner_text()
    link.click()
    assert page.url.endswith(f"#/lots/{lot_id}")
    expect(page.locator("#lot-title")).to_contain_text(lot_id)
    timeline = page.locator("#lot-timeline")
    expect(timeline).to_have_attribute("data-stages", re.compile(r"^registry,gavage"), timeout=30000)
    expect(timeline).to_have_attribute("data-milestones", re.compile(r"lot_created"))
    expect(timeline.locator("path.line")).to_have_count(1)  # the mean weight over the feedings
    n_events = int(timeline.get_attribute("data-events") or 0)
    api_total = api_get(gw, f"/api/lots/{lot_id}/timeline?limit=1")["total"]
    assert 0 < n_events <= api_total
    assert page.locator("#lot-events tbody tr").count() == min(n_events, 300)
    shot(page, "lot-1280x800")

    # phone width: the same page, one column, no horizontal page scroll
    page.set_viewport_size({"width": 390, "height": 844})
    shot(page, "lot-390x844")
    for tab in ("sqal", "orchestration", "consumer"):
        page.click(f"a[data-tab={tab}]")
        page.wait_for_timeout(300)
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 1, f"{tab}: the page is {overflow}px wider than a 390px screen"
        shot(page, f"{tab}-390x844")
    page.set_viewport_size({"width": 1280, "height": 800})
    page.click("a[data-tab=orchestration]")
    expect(page.locator("a[data-tab=orchestration]")).to_have_attribute("aria-current", "page")
    shot(page, "orchestration-1280x800")

    # stop everything from the page
    page.click("#orch-stop-all")
    expect(page.locator(".notice-ok", has_text="Stopped")).to_contain_text("Stopped 4 simulator(s)", timeout=30000)
    expect(page.locator("#orch-status")).to_have_attribute("data-running", "0", timeout=20000)
    after = api_get(gw, "/api/control-panel/orchestrate/status")
    assert after["running_count"] == 0, after
    print(f"\nweb: complete_demo started, devices online, lot {lot_id} timeline opened "
          f"and stopped in {time.monotonic() - t0:.0f} s")

    context.close()
    errors = console.errors()
    assert not errors, "browser console errors:\n" + "\n".join(f"{m['type']}: {m['text']} ({m['url']})" for m in errors)
