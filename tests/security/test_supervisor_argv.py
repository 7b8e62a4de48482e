"""No request field reaches a simulator's argv unchecked: for every catalogue kind, injection strings
in device_id / location / profile are refused with 422 by the control panel, and the supervisor's own
typed parameters refuse them too (the Python API's last line of defence)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from starlette.testclient import TestClient

from gateway.supervisor.catalogue import Catalogue, DeviceParams
from tests.security.conftest import TOKEN

AUTH = {"Authorization": f"Bearer {TOKEN}"}
INJECTIONS = ["ESP32; rm -rf /", "$(reboot)", "`id`", "ESP32_01 --broker mqtt://evil", "../../etc/passwd",
              "ESP32\n--seed", "-h", "--help", "ESP32_01\x00", "E" * 49, "a|b", "x" * 2000, "\u202eLL_01", ""]
BAD_LOCATIONS = ["Ligne\nA", "A\x00B", "x" * 65, "\x1b[31mred", "\u202e"]
BAD_PROFILES = ["default; id", "../premium", "premium --seed 1", "", "x" * 100]


def test_catalogue_kinds_are_the_known_ones() -> None:
    assert Catalogue().kinds() == ["consumer", "gavage", "shipping", "sqal_device"]  # a new kind must be added here


@pytest.mark.parametrize("bad", INJECTIONS)
def test_device_params_refuse_injection(bad: str) -> None:
    with pytest.raises(ValueError):
        DeviceParams(device_id=bad)


def test_control_panel_refuses_injection_with_422(client: TestClient) -> None:
    sup = client.app.state.supervisor  # type: ignore[attr-defined]
    before = set(sup.children)
    calls: list[tuple[str, dict[str, Any]]] = []
    calls += [("/api/control-panel/simulators/start", {"device_id": b}) for b in INJECTIONS]
    calls += [("/api/control-panel/simulators/start", {"device_id": "ESP32_SEC_01", "location": b})
              for b in BAD_LOCATIONS]
    calls += [("/api/control-panel/simulators/start", {"device_id": "ESP32_SEC_01", "profile": b})
              for b in BAD_PROFILES]
    calls += [("/api/control-panel/simulators/stop", {"device_id": b}) for b in INJECTIONS]
    calls += [("/api/control-panel/scenarios/start", {"scenario_name": "multi_site", "profile": b})
              for b in BAD_PROFILES]
    calls += [("/api/control-panel/scenarios/start", {"scenario_name": "multi_site; id"})]
    for path, body in calls:
        r = client.post(path, json=body, headers=AUTH)
        assert r.status_code == 422, (path, body, r.status_code, r.text[:300])
    for b in INJECTIONS[:6]:  # path parameters too
        r = client.get("/api/control-panel/simulators/status/" + quote(b, safe=""), headers=AUTH)
        assert r.status_code in (404, 422), (b, r.status_code)
    assert set(sup.children) == before  # nothing was started
