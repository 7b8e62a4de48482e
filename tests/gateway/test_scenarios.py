"""Scenario definitions (domain.md section 6) and option checks, without starting processes."""

from __future__ import annotations

import pytest

from gateway.scenarios import (
    DELAY_AFTER_GAVAGE,
    DELAY_AFTER_SQAL,
    DEVICE_SETS,
    ScenarioError,
    ScenarioOptions,
    check_options,
    device_seed,
)
from registry.devices import site_of


def test_device_sets_and_delays_are_the_originals() -> None:
    def ids(name: str) -> list[tuple[str, float]]:
        return [(s.device_id, s.interval) for s in DEVICE_SETS[name]]

    assert ids("complete_demo") == [("ESP32_DEMO_LL_01", 30), ("ESP32_DEMO_LL_02", 35), ("ESP32_DEMO_LS_01", 40),
                                    ("ESP32_DEMO_MT_01", 45)]
    assert [s.location for s in DEVICE_SETS["complete_demo"]] == ["Ligne A - Landes", "Ligne B - Landes",
                                                                  "Landes Sud", "Mont-de-Marsan"]
    assert ids("quality_focus") == [("ESP32_QF_LL_01", 20), ("ESP32_QF_LL_02", 25), ("ESP32_QF_LS_01", 30),
                                    ("ESP32_QF_MT_01", 35), ("ESP32_QF_BS_01", 40), ("ESP32_QF_PX_01", 45)]
    assert ids("multi_site") == [("ESP32_LL_01", 30), ("ESP32_LL_02", 45), ("ESP32_LS_01", 35), ("ESP32_MT_01", 40)]
    assert ids("stress_test") == [(f"ESP32_STRESS_{i:02d}", 10) for i in range(1, 11)]
    assert ids("production_demo") == [("ESP32_DEMO_01", 20), ("ESP32_DEMO_02", 25)]
    assert DELAY_AFTER_GAVAGE == {"complete_demo": 2.0}
    assert DELAY_AFTER_SQAL == {"complete_demo": 5.0, "quality_focus": 3.0}
    # the site a device's samples are filed under matches its location
    assert [site_of(s.device_id) for s in DEVICE_SETS["quality_focus"]] == ["LL", "LL", "LS", "MT", "BS", "PX"]


def test_options_that_a_scenario_does_not_use_are_refused() -> None:
    check_options(ScenarioOptions("complete_demo", nb_lots=2, explicit={"nb_lots", "interval", "min_rating"}))
    check_options(ScenarioOptions("gavage_realtime", nb_lots=5, explicit={"nb_lots", "duration", "seed"}))
    for name, option in (("consumer_analysis", "nb_lots"), ("gavage_realtime", "feedbacks_per_hour"),
                         ("quality_focus", "acceleration"), ("gavage_realtime", "nb_sqal_devices")):
        with pytest.raises(ScenarioError, match=f"{option} do\\(es\\) not apply to scenario '{name}'"):
            check_options(ScenarioOptions(name, explicit={option}))
    with pytest.raises(ScenarioError, match="between 1 and 4 for complete_demo"):
        check_options(ScenarioOptions("complete_demo", nb_sqal_devices=6))
    check_options(ScenarioOptions("quality_focus", nb_sqal_devices=6))
    with pytest.raises(ScenarioError, match="at most 50 for quality_focus"):
        check_options(ScenarioOptions("quality_focus", feedbacks_per_hour=51, max_feedbacks_per_hour=100))
    with pytest.raises(ScenarioError, match="min_rating"):
        check_options(ScenarioOptions("consumer_analysis", min_rating=4, max_rating=2))
    with pytest.raises(ScenarioError, match="scenario_name 'x' unknown"):
        check_options(ScenarioOptions("x"))


def test_device_seeds_differ_and_are_stable() -> None:
    seeds = {device_seed(s.device_id, 1) for s in DEVICE_SETS["stress_test"]}
    assert len(seeds) == 10
    assert device_seed("ESP32_DEMO_LL_01", 1) == device_seed("ESP32_DEMO_LL_01", 1) != device_seed("ESP32_DEMO_LL_01", 2)
