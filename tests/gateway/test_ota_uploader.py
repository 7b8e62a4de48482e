"""The uploader's handling of a board short of memory (gateway/ota/uploader.py), through a real
broker, against a scripted board: an answer marked `retry` (docs/contract.md section 7) is asked
again from `ota_status` after a pause, and the update goes on; a board that stays short of memory
fails the update after `busy_limit` such answers in a row, with the board's own error. The board is
a script (answers by command name): the real firmware's answers are tested on the ESP32 profile
(tests/emulation/test_ota_device.py, tests/firmware/test_app_outbox.py)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from sqalfw import codec

from gateway.ota.release import Release
from gateway.ota.uploader import Uploader

DID = "ESP32_BUSY_01"
IDLE = {"state": "idle", "slot": "factory", "version": "0.1.0", "confirmed": True, "floor": "0"}
BUSY = "ota_begin: out of memory, try again (MemoryError('memory allocation failed, allocating 1024 bytes',))"


class ScriptedBoard:
    """Answers each command with `script(cmd, args)` -> (ok, data or error, retry)."""

    def __init__(self, broker_url: str, script: Callable[[str, dict[str, Any]], tuple[bool, Any, bool]]) -> None:
        self.seen: list[str] = []
        self.script = script
        host, port = broker_url.removeprefix("mqtt://").split(":")
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2)
        subscribed = threading.Event()

        def on_connect(client: paho.Client, *_a: Any) -> None:
            client.subscribe(codec.topic(DID, "cmd"), 1)

        def on_subscribe(*_a: Any) -> None:
            subscribed.set()

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = self._on_message
        self.client.connect(host, int(port))
        self.client.loop_start()
        assert subscribed.wait(10)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        c = codec.decode_command(msg.payload)
        self.seen.append(c["cmd"])
        ok, body, retry = self.script(c["cmd"], c["args"])
        res = codec.encode_result(c["id"], c["cmd"], ok, data=body if ok else None,
                                  error=None if ok else body, retry=retry)
        client.publish(codec.topic(DID, "cmd/result"), bytes(res), qos=1)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _release(tmp_path: Path) -> Release:
    manifest = json.dumps({"version": "0.2.0", "files": [{"path": "sqalfw/app.mpy", "size": 4,
                                                          "sha256": "0" * 64}]}).encode()
    return Release(tmp_path, "0.2.0", manifest, b"\x01" * 64)


def test_a_board_short_of_memory_is_asked_again_and_the_update_goes_on(mosquitto_broker: Any,
                                                                       tmp_path: Path) -> None:
    busy_left = [2]

    def script(cmd: str, args: dict[str, Any]) -> tuple[bool, Any, bool]:
        if cmd == "ota_status":
            return True, IDLE, False
        if cmd == "ota_begin" and busy_left[0] > 0:
            busy_left[0] -= 1
            return False, BUSY, True
        return False, "ota_begin: downgrade: 0.2.0 is below this board's minimum version 0.3.0", False

    board = ScriptedBoard(mosquitto_broker.url, script)
    try:
        with Uploader(mosquitto_broker.url, cmd_timeout=3) as up:
            p = up.update(DID, _release(tmp_path), busy_pause=0.1)
    finally:
        board.close()
    # two busy answers, each followed by ota_status, then the board's real answer ends it
    assert board.seen == ["ota_status", "ota_begin", "ota_status", "ota_begin", "ota_status", "ota_begin"]
    assert p.busy == 2 and p.state == "failed"
    assert p.reason == "ota_begin: downgrade: 0.2.0 is below this board's minimum version 0.3.0"


def test_a_board_that_stays_short_of_memory_fails_the_update_with_its_error(mosquitto_broker: Any,
                                                                            tmp_path: Path) -> None:
    def script(cmd: str, args: dict[str, Any]) -> tuple[bool, Any, bool]:
        return (True, IDLE, False) if cmd == "ota_status" else (False, BUSY, True)

    board = ScriptedBoard(mosquitto_broker.url, script)
    try:
        with Uploader(mosquitto_broker.url, cmd_timeout=3) as up:
            p = up.update(DID, _release(tmp_path), busy_pause=0.05, busy_limit=4)
    finally:
        board.close()
    assert p.busy == 4 and p.state == "failed" and p.reason == BUSY
    assert board.seen.count("ota_begin") == 5
