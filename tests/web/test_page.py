"""The control panel page end to end: Debian's Chromium (Playwright) against the real gateway
(child process, real PostgreSQL, embedded MQTT broker, emulated devices running the firmware on
MicroPython). Start complete_demo from the page, watch devices come online and the grade chart
move; the gavage lots and feedings; a lot and a device changing on the page with the safety refresh
pushed out and no read of /api/devices or /api/lots meanwhile (the realtime stream's `lot` and
`device` messages); follow a lot's timeline, its SQAL samples (grade filter, pages, refresh) and its
consumer feedback until the lot is inspected (about 2 minutes at acceleration 10000); the Consumer
tab's feedback from the API; stop everything. The feedback and feedings tables are checked against
the API, with rows the simulators never logged (written by the test through the API). Screenshots
at 1280x800 and 390x844 go to test-artifacts/web/, each checked to show the tab its name says.
Any browser console error or page error fails the test, except the two refusals the test provokes
on purpose (to check that refusals are shown in words)."""

from __future__ import annotations

import json
import re
import time
import urllib.parse
import urllib.request
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.web.conftest import ARTIFACTS, ConsoleLog, WebGateway

DEMO_DEVICES = ["ESP32_DEMO_LL_01", "ESP32_DEMO_LL_02"]
GRADES = ["A+", "A", "B", "C", "REJECT"]
# markup in a consumer comment must stay text: a script that ran would set this global
XSS_COMMENT = '<script>window.__sqalXss = 1</script><b>bold?</b> & "quotes"'


def api_get(gw: WebGateway, path: str) -> Any:
    with urllib.request.urlopen(gw.base + path, timeout=10) as r:
        return json.loads(r.read())


def api_post(gw: WebGateway, path: str, body: dict[str, Any]) -> Any:
    req = urllib.request.Request(gw.base + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {gw.token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


# What the lot page's samples and feedback panels show, read from the DOM in one go.
PANELS_JS = """() => {
  const text = (el) => (el ? el.textContent.trim() : null);
  const sp = document.querySelector('#lot-samples');
  const srows = [...sp.querySelectorAll('tbody tr')];
  const first = sp.querySelector('tbody tr[data-sample]');
  const fp = document.querySelector('#lot-feedback');
  const frows = [...fp.querySelectorAll('tbody tr')];
  return {
    samples: {
      total: sp.dataset.total ?? null, grade: sp.dataset.grade ?? null, offset: sp.dataset.offset ?? null,
      renders: Number(sp.dataset.renders || 0), select: document.querySelector('#lot-samples-grade').value,
      ids: srows.filter((r) => r.dataset.sample).map((r) => Number(r.dataset.sample)),
      grades: srows.filter((r) => r.dataset.sample).map((r) => r.dataset.grade),
      first: first ? [...first.cells].map((c) => c.textContent.trim()) : null,
      empty: srows.length === 1 && srows[0].classList.contains('empty') ? text(srows[0]) : null,
      range: text(document.querySelector('#lot-samples-range')),
      prev: document.querySelector('#lot-samples-prev').disabled,
      next: document.querySelector('#lot-samples-next').disabled,
    },
    feedback: {
      total: fp.dataset.total ?? null, renders: Number(fp.dataset.renders || 0),
      summary: text(document.querySelector('#lot-feedback-summary')),
      ids: frows.filter((r) => r.dataset.feedback).map((r) => Number(r.dataset.feedback)),
      empty: frows.length === 1 && frows[0].classList.contains('empty') ? text(frows[0]) : null,
    },
  };
}"""


def panels(page: Page) -> dict[str, Any]:
    return page.evaluate(PANELS_JS)  # type: ignore[no-any-return]


def samples_mismatch(page: Page, gw: WebGateway, lot_id: str, grade: str = "", offset: int = 0,
                     limit: int = 50) -> str:
    """'' when the samples panel shows exactly the API's page for (grade, offset, limit), else the difference."""
    q = f"limit={limit}&offset={offset}" + (f"&grade={urllib.parse.quote(grade)}" if grade else "")
    api = api_get(gw, f"/api/lots/{lot_id}/samples?{q}")
    shown = panels(page)["samples"]
    want_ids = [x["id"] for x in api["samples"]]
    problems = []
    if shown["total"] != str(api["total"]) or shown["grade"] != grade or shown["offset"] != str(offset):
        problems.append(f"total/grade/offset {shown['total']}/{shown['grade']}/{shown['offset']} "
                        f"!= API {api['total']}/{grade}/{offset}")
    if shown["select"] != grade:
        problems.append(f"grade select shows {shown['select']!r}, not {grade!r}")
    if shown["ids"] != want_ids:
        problems.append(f"rows {shown['ids']} != API {want_ids}")
    if grade and any(g != grade for g in shown["grades"]):
        problems.append(f"rows of other grades than {grade}: {shown['grades']}")
    if api["samples"]:
        s0 = api["samples"][0]
        cells = shown["first"] or []
        score_ok = cells[4:5] == ["—"] if s0["score"] is None else \
            len(cells) > 4 and abs(float(cells[4]) - s0["score"]) < 6e-4  # shown with 3 decimals
        # the device's provisional grade only where it differs from the gateway's
        differs = s0["device_grade"] and s0["device_grade"] != s0["grade"]
        device_ok = len(cells) > 5 and (cells[5].startswith(s0["device_grade"] + " ") if differs else cells[5] == "")
        weight_ok = len(cells) > 6 and (cells[6] == "—" if s0["weight_g"] is None else
                                        cells[6].endswith(" g") and abs(float(cells[6][:-2]) - s0["weight_g"]) <= 0.5)
        alerts_ok = cells[7:8] == [", ".join(s0["alerts"]) or "—"]
        if cells[1:4] != [s0["device_id"], f"{s0['boot']}/{s0['seq']}", s0["grade"] or "—"] or not (
                score_ok and device_ok and weight_ok and alerts_ok):
            problems.append(f"first row {cells} does not show API sample {s0}")
        if s0["measured_at"] is None and "clock not trusted" not in cells[0]:
            problems.append(f"first row {cells[0]!r} lacks the 'clock not trusted' mark")
        rng = f"{offset + 1}–{offset + len(api['samples'])} of {api['total']}"
        if shown["range"] != rng:
            problems.append(f"range {shown['range']!r} != {rng!r}")
        if shown["prev"] != (offset == 0) or shown["next"] != (offset + len(api["samples"]) >= api["total"]):
            problems.append(f"prev/next disabled {shown['prev']}/{shown['next']} wrong at {offset} of {api['total']}")
    else:
        want = f"No sample graded {grade}." if grade else "No SQAL samples yet"
        if not (shown["empty"] or "").startswith(want):
            problems.append(f"empty state {shown['empty']!r}, expected {want!r}")
    return "; ".join(problems)


def feedback_mismatch(page: Page, gw: WebGateway, lot_id: str) -> str:
    api = api_get(gw, f"/api/lots/{lot_id}/feedback")
    shown = panels(page)["feedback"]
    want_ids = [f["id"] for f in reversed(api["feedback"])][:200]  # newest first
    problems = []
    if shown["total"] != str(api["total"]) or shown["ids"] != want_ids:
        problems.append(f"feedback {shown['total']} {shown['ids']} != API {api['total']} {want_ids}")
    if api["total"]:
        if f"{api['total']} · mean rating {api['mean_rating']:.2f} / 5" not in (shown["summary"] or ""):
            problems.append(f"summary {shown['summary']!r} != API {api['total']} / {api['mean_rating']}")
    elif not (shown["empty"] or "").startswith("No consumer feedback") or shown["summary"] != "(none)":
        problems.append(f"empty state {shown['empty']!r} / {shown['summary']!r}")
    return "; ".join(problems)


def feedings_mismatch(page: Page, gw: WebGateway) -> str:
    """'' when the Gavage tab's feedings table shows the API's latest page, row for row."""
    api = api_get(gw, "/api/gavage/feedings?limit=50")
    want = [f"{f['lot_id']}/{f['day']}/{f['moment']}" for f in api["feedings"]]
    table = page.locator("#feedings-table")
    shown = table.evaluate("t => [...t.querySelectorAll('tbody tr[data-feeding]')].map((r) => r.dataset.feeding)")
    if shown != want or table.get_attribute("data-total") != str(api["total"]):
        return f"rows {shown[:6]}... (total {table.get_attribute('data-total')}) != API {want[:6]}... ({api['total']})"
    if api["feedings"]:
        f = api["feedings"][0]
        cells = [c.strip() for c in table.locator("tbody tr").first.locator("td").all_inner_texts()]
        expected = [f["lot_id"], f"{f['day']}/{f['planned_duration_days']}", f["moment"],
                    f"{f['actual_dose_g']:.1f} / {f['planned_dose_g']:.1f} g"]
        if cells[1:5] != expected:
            return f"first row {cells} does not show {f}"
    return ""


def consumer_mismatch(page: Page, gw: WebGateway) -> str:
    """'' when the Consumer tab's feedback table shows the API's latest page, row for row."""
    api = api_get(gw, "/api/consumer/feedback?limit=50")
    want = [f["id"] for f in api["feedback"]]
    table = page.locator("#feedback-table")
    shown = table.evaluate("t => [...t.querySelectorAll('tbody tr[data-feedback]')].map((r) => Number(r.dataset.feedback))")
    if shown != want or table.get_attribute("data-total") != str(api["total"]):
        return f"rows {shown[:6]}... (total {table.get_attribute('data-total')}) != API {want[:6]}... ({api['total']})"
    return ""


def agree(check: Any, timeout: float, what: str, gw: WebGateway) -> None:
    """Wait until the page agrees with the API (both move while the demo runs; each poll reads both)."""
    last = ["never checked"]

    def ok() -> bool:
        last[0] = check()
        return not last[0]

    try:
        wait_until(ok, timeout, what, gw)
    except AssertionError as exc:
        raise AssertionError(f"{what}: {last[0]}\n{exc}") from None


SHOWN_JS = """() => {
  const views = [...document.querySelectorAll('section.view')].filter((s) => !s.hidden).map((s) => s.dataset.view);
  const tab = document.querySelector('.tabs a[aria-current=page]');
  const strip = document.querySelector('.tabs').getBoundingClientRect();
  const box = tab ? tab.getBoundingClientRect() : null;
  return { views, tab: tab ? tab.dataset.tab : null, active: [...document.querySelectorAll('.tabs a.active')].length,
           tabInSight: box ? box.left >= strip.left - 1 && box.right <= strip.right + 1 : false };
}"""


def shot(page: Page, view: str, size: str) -> None:
    """A screenshot named `{view}-{size}.png`, taken only once the page shows that view alone, with its
    tab (the lot page: Orchestration's) marked current and in sight in the tab strip."""
    expect(page.locator(f"section.view[data-view={view}]")).to_be_visible()
    shown = page.evaluate(SHOWN_JS)
    want_tab = "orchestration" if view == "lot" else view
    assert shown == {"views": [view], "tab": want_tab, "active": 1, "tabInSight": True}, (view, size, shown)
    page.evaluate("window.scrollTo(0, 0)")  # the test's clicks scrolled it: the whole page, from its top
    page.screenshot(path=str(ARTIFACTS / f"{view}-{size}.png"), full_page=True)


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


def post_feedback(gw: WebGateway, product: dict[str, Any], comment: str, rating: int = 4) -> Any:
    return api_post(gw, "/api/consumer/feedback", {"product_id": product["id"], "qr_code": product["qr_uri"],
                                                   "overall_rating": rating, "comment": comment})


# Every HTTP request of the page: (monotonic time, method, path with query)
REQUESTS: list[tuple[float, str, str]] = []


def push_without_polling(page: Page, gw: WebGateway) -> None:
    """On the Gavage tab: a lot created, fed and closed through the API by the test, and the demo
    devices' counters moving, all show on the page while it reads neither /api/devices nor /api/lots
    (its safety refresh pushed out to an hour): they came as `lot` and `device` messages. The feeding
    shows in the feedings table, read from /api/gavage/feedings (no simulator ever logged that lot)."""
    page.evaluate("document.body.dataset.safetyRefreshS = '3600'")
    page.wait_for_timeout(1500)  # a read of the lists already on its way lands first
    start = time.monotonic()
    pushes = page.locator("#live-state")
    lots_before, devices_before = int(pushes.get_attribute("data-lots") or 0), int(pushes.get_attribute("data-devices") or 0)

    lot = api_post(gw, "/api/lots", {"farmer_id": "W001", "farmer_name": "Web Test", "site_code": "PX",
                                      "nb_ducks": 42, "planned_duration_days": 12})
    row = page.locator(f"#gavage-lots tr[data-lot={lot['id']}]")
    expect(row).to_have_attribute("data-state", "created", timeout=10000)
    api_post(gw, f"/api/lots/{lot['id']}/feedings", {"day": 1, "moment": "morning", "planned_dose_g": 190,
                                                     "actual_dose_g": 187.5, "mean_weight_g": 4321,
                                                     "live_ducks": 41, "mortality_pct": 2.4})
    expect(row).to_have_attribute("data-state", "gavage", timeout=10000)
    assert [c.strip() for c in row.locator("td").all_inner_texts()[5:9]] == ["1/12", "4321 g", "41 / 42", "2.4 %"]
    feeding = page.locator(f"#feedings-table tr[data-feeding='{lot['id']}/1/morning']")
    expect(feeding).to_have_count(1, timeout=10000)
    assert [c.strip() for c in feeding.locator("td").all_inner_texts()[1:8]] == \
        [lot["id"], "1/12", "morning", "187.5 / 190.0 g", "4321 g", "41 / 42", "2.4 %"]
    agree(lambda: feedings_mismatch(page, gw), 20, "the feedings table to show the API's feedings", gw)
    api_post(gw, f"/api/lots/{lot['id']}/close", {"reason": "web test"})
    expect(row).to_have_count(0, timeout=10000)  # no longer in progress

    # a device's counters move with its `device` messages (the SQAL tab reads nothing when shown)
    page.click("a[data-tab=sqal]")
    stored = page.locator("#devices-table tr[data-device=ESP32_DEMO_LL_01] td").nth(9)
    first = int(stored.inner_text())
    wait_until(lambda: int(stored.inner_text()) >= first + 2, 20, "ESP32_DEMO_LL_01's stored count to move", gw)
    page.click("a[data-tab=gavage]")

    window = [r for r in REQUESTS if r[0] >= start]
    polled = [f"{m} {u}" for _, m, u in window if u.startswith(("/api/devices", "/api/lots"))]
    assert not polled, f"the page read devices or lots during the window: {polled}"
    assert any(u.startswith("/api/gavage/feedings") for _, _, u in window), window
    assert int(pushes.get_attribute("data-lots") or 0) >= lots_before + 3  # created, fed, closed
    assert int(pushes.get_attribute("data-devices") or 0) >= devices_before + 2
    print(f"\nweb: {len(window)} HTTP requests in the {time.monotonic() - start:.0f} s window, none to "
          "/api/devices or /api/lots: " + ", ".join(sorted({u.split("?")[0] for _, _, u in window})))
    page.evaluate("document.body.dataset.safetyRefreshS = '60'")


@pytest.mark.slow
def test_complete_demo_from_the_page(web_gateway: WebGateway, chromium: Any) -> None:
    gw = web_gateway
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    console = ConsoleLog()
    console.attach(page)
    REQUESTS.clear()
    page.on("request", lambda r: REQUESTS.append((time.monotonic(), r.method, r.url.removeprefix(gw.base))))
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
    # gavage, consumer, the 2 devices (and whatever else the scenario runs): what the API counts
    status = wait_until(lambda: (st := api_get(gw, "/api/control-panel/orchestrate/status"))["running_count"] >= 4
                        and st, 20, "the scenario's simulators to run", gw)
    expect(page.locator("#orch-status")).to_have_attribute("data-running", str(status["running_count"]),
                                                           timeout=20000)
    assert status["gavage"]["status"] == status["consumer"]["status"] == "running", status
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
    shot(page, "sqal", "1280x800")

    # Gavage tab: lots in progress with their day, weight, mortality; the feedings from the API; the
    # gavage log streams (as a log)
    page.click("a[data-tab=gavage]")
    expect(page.locator("#gavage-lots tbody tr[data-lot]")).to_have_count(2, timeout=20000)
    expect(page.locator("#gavage-log")).to_contain_text("gavage feeding lot=LOT_", timeout=20000)
    day = page.locator("#gavage-lots tbody tr[data-lot] td").nth(5).inner_text()
    assert re.fullmatch(r"\d+/\d+", day), day
    agree(lambda: feedings_mismatch(page, gw), 30, "the feedings table to show the API's feedings", gw)
    demo_lots = sorted(x["id"] for x in api_get(gw, "/api/lots"))
    assert len(demo_lots) == 2, demo_lots
    push_without_polling(page, gw)
    shot(page, "gavage", "1280x800")

    # Orchestration: lots listed (the gavage simulator created them, the test one closed); open one
    # of the demo's lots
    page.click("a[data-tab=orchestration]")
    lots_shown = "() => [...document.querySelectorAll('#lots-table tbody tr[data-lot]')].map((r) => r.dataset.lot)"
    wait_until(lambda: sorted(page.evaluate(lots_shown)) == sorted(x["id"] for x in api_get(gw, "/api/lots")), 20,
               "the lots table to list every lot", gw)
    page.reload()  # reloading keeps the token and the tab
    expect(page.locator("#token-state")).to_have_text("token set")
    expect(page.locator("a[data-tab=orchestration]")).to_have_class(re.compile(r"active"))
    link = page.locator(f"#lots-table tr[data-lot={demo_lots[0]}] a.lot-link")
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

    # its SQAL samples and consumer feedback: what the API says now (in gavage: the empty states)
    expect(page.locator("#lot-samples")).to_have_attribute("data-renders", re.compile(r"^[1-9]"))
    agree(lambda: samples_mismatch(page, gw, lot_id), 20, "the samples panel to match the API", gw)
    agree(lambda: feedback_mismatch(page, gw, lot_id), 20, "the feedback panel to match the API", gw)

    # wait for a lot to be inspected and to get products (the dispatcher does it once a lot is ready
    # and 3 samples are in); the page is left open: its slow refresh must bring the samples in by itself
    lot_ids = [lot_id] + [x for x in demo_lots if x != lot_id]

    def lot_with_product() -> tuple[str, dict[str, Any]] | None:
        for lid in lot_ids:
            prods = api_get(gw, f"/api/consumer/products?lot_id={lid}")
            if prods:
                return lid, prods[0]
        return None

    lot_id, product = wait_until(lot_with_product, 300, "an inspected lot with products", gw)
    if not page.url.endswith(f"#/lots/{lot_id}"):
        page.evaluate(f"location.hash = '#/lots/{lot_id}'")
        expect(page.locator("#lot-title")).to_contain_text(lot_id)
    agree(lambda: samples_mismatch(page, gw, lot_id), 40, "the samples panel to show the inspected lot's samples", gw)
    total = api_get(gw, f"/api/lots/{lot_id}/samples?limit=1")["total"]
    assert total >= 3, total

    # the grade filter: each grade shows what the API answers for it (rows and total)
    per_grade = {}
    for grade in GRADES:
        page.select_option("#lot-samples-grade", grade)
        agree(lambda g=grade: samples_mismatch(page, gw, lot_id, g), 10, f"the samples panel filtered on {grade}", gw)
        per_grade[grade] = int(panels(page)["samples"]["total"])
    assert sum(per_grade.values()) <= total and any(n != total for n in per_grade.values()), per_grade
    page.select_option("#lot-samples-grade", label="all")
    agree(lambda: samples_mismatch(page, gw, lot_id), 10, "the samples panel unfiltered again", gw)

    # pages: 2 rows a page here (the page size is read from the markup) so that 3+ samples page
    page.evaluate("document.querySelector('#lot-samples').dataset.pageSize = '2'")
    page.select_option("#lot-samples-grade", "A")
    page.select_option("#lot-samples-grade", label="all")  # a change re-reads the page size, back at offset 0
    agree(lambda: samples_mismatch(page, gw, lot_id, limit=2), 10, "the first page of 2", gw)
    page.click("#lot-samples-next")
    agree(lambda: samples_mismatch(page, gw, lot_id, offset=2, limit=2), 10, "the second page of 2", gw)
    # a change of the lot (pushed: here a feedback on its product) reads the page again, keeping the
    # page, then the filter, the user chose
    renders = panels(page)["samples"]["renders"]
    post_feedback(gw, product, "refresh 1")
    wait_until(lambda: panels(page)["samples"]["renders"] > renders, 20, "a refresh of the lot page", gw)
    agree(lambda: samples_mismatch(page, gw, lot_id, offset=2, limit=2), 5, "the second page after a refresh", gw)
    page.click("#lot-samples-prev")
    agree(lambda: samples_mismatch(page, gw, lot_id, limit=2), 10, "back on the first page", gw)
    kept = max(per_grade, key=lambda g: per_grade[g])
    page.select_option("#lot-samples-grade", kept)
    agree(lambda: samples_mismatch(page, gw, lot_id, kept, limit=2), 10, f"the filter {kept}", gw)
    renders = panels(page)["samples"]["renders"]
    post_feedback(gw, product, "refresh 2")
    wait_until(lambda: panels(page)["samples"]["renders"] > renders, 20, "a refresh of the lot page", gw)
    agree(lambda: samples_mismatch(page, gw, lot_id, kept, limit=2), 5, f"the filter {kept} after a refresh", gw)
    page.evaluate("document.querySelector('#lot-samples').dataset.pageSize = '50'")
    page.select_option("#lot-samples-grade", label="all")
    agree(lambda: samples_mismatch(page, gw, lot_id), 10, "the samples panel back to all, 50 a page", gw)

    # consumer feedback, including a comment with markup: it must show as text, never run
    agree(lambda: feedback_mismatch(page, gw, lot_id), 40, "the feedback panel to match the API", gw)
    posted = api_post(gw, "/api/consumer/feedback", {
        "product_id": product["id"], "qr_code": product["qr_uri"], "overall_rating": 4, "texture_rating": 5,
        "flavor_rating": 3, "consumption_context": "gift", "comment": XSS_COMMENT})
    row = page.locator(f"#lot-feedback-table tr[data-feedback='{posted['id']}']")
    expect(row).to_have_count(1, timeout=20000)  # brought by the lot's `lot` message
    agree(lambda: feedback_mismatch(page, gw, lot_id), 40, "the feedback panel to include the new feedback", gw)
    assert row.locator("td.comment").inner_text() == XSS_COMMENT
    assert row.locator("td.comment *").count() == 0  # no element parsed out of the comment
    assert page.evaluate("window.__sqalXss") is None
    assert [c.strip() for c in row.locator("td").all_inner_texts()[1:7]] == \
        ["★★★★☆ 4/5", "5/5", "3/5", "—", "gift", f"#{product['id']}"]
    shot(page, "lot", "1280x800")

    # Consumer tab: the recent feedback is the registry's (the API's page), the test's own feedback
    # included (posted through the API, never in the consumer simulator's log): shown as text
    page.click("a[data-tab=consumer]")
    crow = page.locator(f"#feedback-table tr[data-feedback='{posted['id']}']")
    expect(crow).to_have_count(1, timeout=20000)
    agree(lambda: consumer_mismatch(page, gw), 30, "the feedback table to show the API's feedback", gw)
    assert crow.locator("td.comment").inner_text() == XSS_COMMENT and crow.locator("td.comment *").count() == 0
    assert page.evaluate("window.__sqalXss") is None
    api_row = next(f for f in api_get(gw, f"/api/consumer/feedback?lot_id={lot_id}&limit=1000")["feedback"]
                   if f["id"] == posted["id"])
    assert [c.strip() for c in crow.locator("td").all_inner_texts()[1:9]] == \
        [lot_id, f"#{product['id']}", api_row["sqal_grade"] or "—", "★★★★☆ 4/5", "5/5", "3/5", "—", "gift"]
    expect(page.locator("#consumer-log")).to_contain_text("consumer feedback lot=LOT_", timeout=60000)
    agree(lambda: consumer_mismatch(page, gw), 20, "the feedback table to show the simulator's feedback too", gw)
    shot(page, "consumer", "1280x800")

    # phone width: the same pages, one column, no horizontal page scroll
    page.set_viewport_size({"width": 390, "height": 844})
    page.evaluate(f"location.hash = '#/lots/{lot_id}'")
    expect(page.locator("#lot-title")).to_contain_text(lot_id)
    page.wait_for_timeout(300)
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 1, f"lot: the page is {overflow}px wider than a 390px screen"
    shot(page, "lot", "390x844")
    for tab in ("sqal", "gavage", "orchestration", "consumer"):
        page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
        page.click(f"a[data-tab={tab}]")
        page.wait_for_timeout(300)
        assert page.evaluate("window.scrollY") == 0, f"{tab}: another tab does not start at its top"
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 1, f"{tab}: the page is {overflow}px wider than a 390px screen"
        shot(page, tab, "390x844")
    page.set_viewport_size({"width": 1280, "height": 800})
    page.click("a[data-tab=orchestration]")
    expect(page.locator("a[data-tab=orchestration]")).to_have_attribute("aria-current", "page")
    shot(page, "orchestration", "1280x800")

    # stop everything from the page
    running = api_get(gw, "/api/control-panel/orchestrate/status")["running_count"]
    assert running >= 4, running
    page.click("#orch-stop-all")
    expect(page.locator(".notice-ok", has_text="Stopped")).to_contain_text(f"Stopped {running} simulator(s)",
                                                                          timeout=30000)
    expect(page.locator("#orch-status")).to_have_attribute("data-running", "0", timeout=20000)
    after = api_get(gw, "/api/control-panel/orchestrate/status")
    assert after["running_count"] == 0, after
    print(f"\nweb: complete_demo started, devices online, lot {lot_id} timeline opened "
          f"and stopped in {time.monotonic() - t0:.0f} s")

    context.close()
    errors = console.errors()
    assert not errors, "browser console errors:\n" + "\n".join(f"{m['type']}: {m['text']} ({m['url']})" for m in errors)
