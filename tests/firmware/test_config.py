"""config.json validation: every bad field named in the message, same result on both interpreters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqalfw import config

OK = {"device_id": "ESP32_DEMO_LL_01", "broker_url": "mqtt://127.0.0.1:1883"}

BAD: list[tuple[dict[str, object], str]] = [
    ({"sample_interval_s": "abc"},
     "config.json: sample_interval_s must be a number between 0.1 and 86400, got \"abc\""),
    ({"sample_interval_s": 0}, "config.json: sample_interval_s must be a number between 0.1 and 86400, got 0"),
    ({"resolution": 6}, "config.json: resolution must be one of 4, 8, got 6"),
    ({"resolution": True}, "config.json: resolution must be one of 4, 8, got true"),
    ({"keepalive_s": 2.5}, "config.json: keepalive_s must be an integer between 2 and 600, got 2.5"),
    ({"device_id": "ab"}, "config.json: device_id must be 3-48 characters"),
    ({"device_id": "_ESP32"}, "config.json: device_id must be 3-48 characters"),
    ({"broker_url": "http://h:1883"}, ("config.json: broker_url must be mqtt://[user:pass@]host[:port] or "
                                       "mqtts://..., or a list of them (scheme must be mqtt:// or mqtts://)")),
    ({"broker_url": []}, "(a URL or a list of 1 to 5 URLs)"),
    ({"broker_url": ["mqtt://a"] * 6}, "(a URL or a list of 1 to 5 URLs)"),
    ({"broker_url": ["mqtt://a", "mqtt://:1"]}, "(URL 2: missing host)"),
    ({"broker_url": ["mqtt://d:pw@a", "mqtt://d:other@b"]},
     "(URL 2: every URL must have the same scheme and credentials as the first)"),
    ({"broker_url": ["mqtt://a", "mqtts://b"]}, "(URL 2: every URL must have the same scheme"),
    ({"broker_url": "mqtt://h:99999"}, "(port must be 1..65535)"),
    ({"broker_url": "mqtt://:1883"}, "(missing host)"),
    ({"transport": "carrier-pigeon"}, "config.json: transport must be one of \"mqtt\", \"websocket\""),
    ({"transport": "websocket"}, "config.json: ws_url must be a ws:// or wss:// URL"),
    ({"transport": "websocket", "ws_url": "ws://:8000/ws/sensors/"},
     "config.json: ws_url must be ws://[user:pass@]host[:port][/path] or wss://... (missing host), got \"ws://:8000/ws/sensors/\""),
    ({"reconnect_base_s": 5, "reconnect_cap_s": 1}, "config.json: reconnect_cap_s must be at least reconnect_base_s"),
    ({"sampel_interval_s": 3}, "config.json: unknown field \"sampel_interval_s\""),
    ({"wifi_ssid": "x" * 33}, "config.json: wifi_ssid must be a string of at most 32 characters"),
    ({"spool_capacity": 1e300}, "config.json: spool_capacity must be an integer"),
    # the watchdog must outlast an uncached DNS lookup that gets no answer (14 s on an ESP32)
    ({"watchdog_s": 2}, "config.json: watchdog_s must be a number between 20 and 3600, got 2"),
    ({"ntp_hosts": []}, ("config.json: ntp_hosts must be a list of 1 to 4 host names (1-64 characters each, "
                         "no spaces), got []")),
    ({"ntp_hosts": "pool.ntp.org"}, "config.json: ntp_hosts must be a list of 1 to 4 host names"),
    ({"ntp_hosts": ["a", "b", "c", "d", "e"]}, "config.json: ntp_hosts must be a list of 1 to 4 host names"),
    ({"ntp_hosts": ["pool ntp org"]}, "config.json: ntp_hosts must be a list of 1 to 4 host names"),
    ({"ntp_host": "a.example", "ntp_hosts": ["b.example"]},
     "config.json: ntp_host and ntp_hosts are both given: keep ntp_hosts only"),
    ({"ntp_host": 5}, "config.json: ntp_host must be a host name (better: ntp_hosts, a list of host names), got 5"),
    ({"tls_insecure": "yes"}, "config.json: tls_insecure must be true or false, got \"yes\""),
]


def _bad(change: dict[str, object]) -> dict[str, object]:
    d: dict[str, object] = dict(OK)
    d.update(change)
    return d


def test_a_list_of_brokers_is_the_nodes_of_one_cluster() -> None:
    c = config.validate({"device_id": "ESP32_DEMO_LL_01",
                         "broker_url": ["mqtt://dev:pw@n1", "mqtt://dev:pw@n2:1884", "mqtt://dev:pw@n3"]})
    assert [(b["host"], b["port"]) for b in c.brokers] == [("n1", 1883), ("n2", 1884), ("n3", 1883)]
    assert c.broker == c.brokers[0]
    assert config.redacted(c)["broker_url"] == ["mqtt://n1:1883", "mqtt://n2:1884", "mqtt://n3:1883"]
    one = config.validate({"device_id": "ESP32_DEMO_LL_01", "broker_url": "mqtt://n1"})
    assert len(one.brokers) == 1 and config.redacted(one)["broker_url"] == "mqtt://n1:1883"


def test_defaults_and_parsed_broker() -> None:
    c = config.validate({"device_id": "ESP32_DEMO_LL_01", "broker_url": "mqtts://dev:s3cret@broker.local"})
    assert c.broker == {"host": "broker.local", "port": 8883, "user": "dev", "password": "s3cret", "tls": True}
    assert c.sample_interval_s == 30 and c.resolution == 8 and c.transport == "mqtt"
    assert c.spool_capacity == 1000 and c.safe_mode_after == 5
    assert "wifi_password" not in config.redacted(c)
    assert "s3cret" not in json.dumps(config.redacted(c))


@pytest.mark.parametrize("change,message", BAD)
def test_bad_field_is_named(change: dict, message: str) -> None:
    with pytest.raises(config.ConfigError) as e:
        config.validate(_bad(change))
    assert message in str(e.value)


def test_ntp_hosts_default_and_the_older_ntp_host() -> None:
    c = config.validate(OK)
    assert c.ntp_hosts == ["0.pool.ntp.org", "1.pool.ntp.org", "2.pool.ntp.org"] and c.tls_insecure is False
    # config files written before ntp_hosts keep working: one server
    assert config.validate(_bad({"ntp_host": "ntp.lan"})).ntp_hosts == ["ntp.lan"]
    assert config.validate(_bad({"ntp_hosts": ["ntp.lan", "10.0.0.1"]})).ntp_hosts == ["ntp.lan", "10.0.0.1"]
    assert config.validate(_bad({"tls_insecure": True, "watchdog_s": 20})).tls_insecure is True


def test_missing_required_field() -> None:
    with pytest.raises(config.ConfigError, match="config.json: broker_url is required"):
        config.validate({"device_id": "ESP32_A1"})


def test_password_never_echoed() -> None:
    with pytest.raises(config.ConfigError) as e:
        config.validate(_bad({"broker_url": "mqtt://dev:hunter2@h:0"}))
    assert "hunter2" not in str(e.value) and "dev:***@h:0" in str(e.value)


def test_load_missing_and_invalid_json(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="config.json: not found"):
        config.load(str(tmp_path))
    (tmp_path / "config.json").write_text("{\"device_id\": ")
    with pytest.raises(config.ConfigError, match="config.json: not valid JSON"):
        config.load(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps(OK))
    assert config.load(str(tmp_path)).device_id == "ESP32_DEMO_LL_01"


def test_same_messages_on_micropython(micropython_run) -> None:
    """The board validates with MicroPython: its messages must be the CPython ones, byte for byte."""
    cases = [_bad(c) for c, _ in BAD] + [OK, _bad({"ntp_host": "ntp.lan", "tls_insecure": True})]
    code = (
        "import json\nfrom sqalfw import config\n"
        f"cases = json.loads({json.dumps(json.dumps(cases))})\n"
        "for c in cases:\n"
        "    try:\n"
        "        v = config.validate(c)\n"
        "        print(json.dumps(config.redacted(v)))\n"
        "    except config.ConfigError as e:\n"
        "        print(str(e))\n"
    )
    out = micropython_run(code).stdout.splitlines()
    expected = []
    for c in cases:
        try:
            expected.append(json.dumps(config.redacted(config.validate(c))))
        except config.ConfigError as e:
            expected.append(str(e))
    assert len(out) == len(expected)
    for got, want in zip(out, expected):
        if got.startswith("{"):
            assert json.loads(got) == json.loads(want)
        else:
            assert got == want
