"""Send a release to boards over their command topic (docs/ota.md, "Transfer").

The board drives nothing: it answers each command with where its download stands (the file it
expects next and how many of its bytes are on flash), and the sender sends exactly that part. So
a lost command, a lost result, a reconnect, a reset or a power cut of the board cost at most one
chunk: the next answer (to the resent command, or to ota_status / ota_begin again) says where to
go on. A chunk at a stale offset is ignored by the board, never written twice.

One `Uploader` is one MQTT connection (paho, its own thread) shared by any number of concurrent
updates, each a thread-safe `update(device_id, release)` call; results are matched to commands by
their id.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

import paho.mqtt.client as paho
from sqalfw import codec

from gateway.mqtt_url import apply_tls, parse_url
from gateway.ota.release import MANIFEST, Release

CHUNK = 600  # bytes of file per ota_chunk: 800 base64 chars, the command stays under 1 KiB
FINAL_STATES = ("confirmed", "rolled_back", "failed")


@dataclass
class Progress:
    """What an update of one device reached; `on_progress` gets it after every answer."""

    device_id: str
    state: str = "queued"  # queued, downloading, verifying, pending, confirmed, failed, rolled_back, lost
    progress: int = 0
    reason: str | None = None
    chunks: int = 0
    resends: int = 0
    busy: int = 0  # transient refusals (the board short of memory), each followed by a pause
    data: dict[str, Any] = field(default_factory=dict)


class UpdateFailed(RuntimeError):
    pass


class Uploader:
    def __init__(self, broker_url: str, *, client_id: str | None = None, ca_file: str | None = None,
                 cmd_timeout: float = 5.0) -> None:
        host, port, tls, user, password = parse_url(broker_url)
        self.cmd_timeout = cmd_timeout
        self._ids = itertools.count()
        self._tag = uuid.uuid4().hex[:8]
        self._lock = threading.Lock()
        self._waiting: dict[str, tuple[threading.Event, list[dict[str, Any]]]] = {}
        self._connected = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"sqal-ota-{self._tag}", clean_session=True)
        if user:
            self.client.username_pw_set(user, password)
        apply_tls(self.client, broker_url, tls, ca_file, None, None)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        if not self._connected.wait(15):
            self.close()
            raise ConnectionError(f"OTA uploader: no connection to {host}:{port}")

    def close(self) -> None:
        self.client.loop_stop()
        with contextlib.suppress(Exception):
            self.client.disconnect()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        client.subscribe("sqal/v1/+/cmd/result", qos=1)
        self._connected.set()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        try:
            res = codec.decode_result(msg.payload)
        except codec.ContractError:
            return
        with self._lock:
            w = self._waiting.get(str(res["id"]))
        if w is not None:
            w[1].append(res)
            w[0].set()

    # ---- one command ----

    def command(self, device_id: str, cmd: str, args: dict[str, Any] | None = None, *,
                timeout: float | None = None, attempts: int = 3) -> dict[str, Any]:
        """Send a command and wait for its result; resent (same id) when none comes in time.
        Returns the decoded result (`ok`, `data` or `error`); TimeoutError after `attempts`."""
        cid = f"ota-{self._tag}-{next(self._ids)}"
        payload = codec.encode_command(cid, cmd, args)
        ev: threading.Event = threading.Event()
        box: list[dict[str, Any]] = []
        with self._lock:
            self._waiting[cid] = (ev, box)
        try:
            for _ in range(attempts):
                self.client.publish(codec.topic(device_id, "cmd"), payload, qos=1)
                if ev.wait(timeout or self.cmd_timeout):
                    return box[0]
            raise TimeoutError(f"{device_id}: no result to {cmd} after {attempts} tries")
        finally:
            with self._lock:
                self._waiting.pop(cid, None)

    # ---- one update ----

    def update(self, device_id: str, release: Release, *, probation_s: int | None = None,
               on_progress: Callable[[Progress], None] | None = None, confirm_timeout: float = 180.0,
               lost_after: float = 60.0, busy_limit: int = 10, busy_pause: float = 1.0) -> Progress:
        """Send `release` to the device and follow it to its end: confirmed, rolled back or failed
        (refused by the board, with its reason). A device that answers nothing for `lost_after`
        seconds ends as "lost" (it may still finish by itself: ota_status tells later). An answer
        marked `retry` (short of memory, nothing changed) is asked again after `busy_pause`, up to
        `busy_limit` times in a row before the update fails with it."""
        p = Progress(device_id)
        sig = release.signature.hex()
        args: dict[str, Any] = {"version": release.version, "size": len(release.manifest), "sig": sig}
        if probation_s is not None:
            args["probation_s"] = probation_s
        blobs: dict[str, bytes] = {MANIFEST: release.manifest}
        report = on_progress or (lambda _p: None)
        silent_since: float | None = None
        busy_run = 0
        # where the board stands first: this release may be confirmed or on probation already (a
        # rollout resumed after a gateway restart, a retry), and ota_begin would refuse it as running
        cmd: str = "ota_status"
        cargs: dict[str, Any] | None = None
        first = True
        while True:
            try:
                res = self.command(device_id, cmd, cargs)
                silent_since = None
            except TimeoutError:
                p.resends += 1
                now = time.monotonic()
                silent_since = silent_since or now
                if now - silent_since > lost_after:
                    p.state, p.reason = "lost", f"no answer for {lost_after:.0f} s"
                    report(p)
                    return p
                # ask where it stands: never ota_begin blindly (the switch may have happened)
                cmd, cargs = "ota_status", None
                continue
            if not res["ok"] and res.get("retry") and busy_run < busy_limit:
                busy_run += 1
                p.busy += 1
                time.sleep(busy_pause)
                cmd, cargs = "ota_status", None  # then on from where the board stands
                continue
            if not res["ok"]:
                p.state, p.reason = "failed", str(res.get("error"))
                report(p)
                return p
            if cmd != "ota_status":
                busy_run = 0  # the board did the work (the ota_status asked after a busy answer does not count)
            was_first, first = first, False
            d = res["data"]
            p.data = d
            state = str(d.get("state"))
            ours = d.get("target") == release.version
            if state == "downloading" and ours:
                p.state = "downloading"
                p.progress = int(d.get("progress") or 0)
                report(p)
                path, have = str(d["path"]), int(d["have"])
                if path not in blobs:
                    blobs[path] = release.file_bytes(path)
                chunk = blobs[path][have:have + CHUNK]
                cmd, cargs = "ota_chunk", {"path": path, "off": have, "data": base64.b64encode(chunk).decode()}
                p.chunks += 1
                continue
            if state == "verifying" and ours:
                p.state = "verifying"
                report(p)
                cmd, cargs = "ota_begin", args  # resumes: the board checks every file, then switches
                continue
            if state == "pending" and d.get("version") == release.version:
                break  # switched: the board reboots into the new slot, on probation
            if d.get("version") == release.version and d.get("confirmed") and was_first:
                p.state, p.progress, p.reason = "confirmed", 100, None  # before this call
                report(p)
                return p
            if state == "confirmed" and d.get("version") == release.version:
                p.state, p.progress, p.reason = "confirmed", 100, None
                report(p)
                return p
            if state in ("failed", "rolled_back") and ours and cmd != "ota_begin" and not was_first:
                p.state, p.reason = state, str(d.get("reason") or "")
                report(p)
                return p
            if cmd == "ota_begin":
                p.state, p.reason = "failed", f"unexpected answer to ota_begin: {json.dumps(d)[:200]}"
                report(p)
                return p
            cmd, cargs = "ota_begin", args  # nothing of ours in progress: (re)start
        p.state, p.progress = "pending", 100
        report(p)
        return self.follow(device_id, release.version, p, on_progress=report, timeout=confirm_timeout)

    def follow(self, device_id: str, version: str, p: Progress, *,
               on_progress: Callable[[Progress], None] | None = None, timeout: float = 180.0,
               poll: float = 1.0) -> Progress:
        """Poll ota_status until the probation of `version` ends (confirmed or rolled back)."""
        report = on_progress or (lambda _p: None)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                res = self.command(device_id, "ota_status", timeout=2.0, attempts=1)
            except TimeoutError:
                continue  # rebooting
            if res["ok"]:
                d = res["data"]
                p.data = d
                state = d.get("state")
                if state == "confirmed" and d.get("version") == version:
                    p.state, p.reason = "confirmed", None
                    report(p)
                    return p
                if state in ("rolled_back", "failed") and d.get("target") == version:
                    p.state, p.reason = str(state), str(d.get("reason") or "")
                    report(p)
                    return p
            time.sleep(poll)
        p.state, p.reason = "lost", f"probation not ended after {timeout:.0f} s"
        report(p)
        return p


def raise_for(p: Progress) -> None:
    if p.state != "confirmed":
        raise UpdateFailed(f"{p.device_id}: {p.state}: {p.reason}")
