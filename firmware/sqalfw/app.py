# The firmware application: wires board, sensors, spool and MQTT together as asyncio tasks.
#
#   sampler  -> spool (flash) -> drain -> MQTT QoS 1 -> pop after PUBACK
#   commands (cmd topic) -> outbox -> cmd/result;  telemetry on an interval (QoS 0)
#   net: WiFi (re)connect + NTP;  supervisor: watchdog, healthy mark, offline reboot, stop request
#
# The watchdog is fed only while every critical task keeps beating (see _supervisor): a stuck
# sensor read, a dead drain loop or a crashed task stops the feeding and the board resets.
#
# Boot order: config, identity (boot counted), then the WiFi connect is started, and only then the
# large allocations (spool, transports and their TLS context, the sampler and its drivers, which
# are imported here, after it): on an ESP32, WiFi and TLS need internal RAM that the MicroPython
# heap, which grows on demand, would otherwise have taken (docs/firmware.md, "Boot order").
import asyncio
import sys
import time

from sqalfw import VERSION, codec, config, identity

try:
    # the boot loader frozen in the image (firmware/sqalboot): slots, probation, reset cause
    from sqalboot import slots as ota_slots
except ImportError:  # an interpreter without it (some tools and tests): no updates, nothing to confirm
    ota_slots = None

SAMPLE_BYTES = 1100     # the spool's byte budget per sample of spool_capacity (8x8 JSON is ~600-900)
CONFIG_ERROR = 78       # exit code when config.json is invalid (the emulator must not restart)
OUTBOX_MAX = 8          # pending command results / status messages (bounded memory)
# A reset a command asked for (reboot, update, rollback) waits for its result to be acknowledged,
# at most this long: a slot switched on flash must be booted even when the broker is gone.
RESET_WAIT_MS = 30000
NTP_RETRY_S = 60        # after a failed round, once the clock is set (a re-sync failed)
NTP_RETRY_UNSET_S = 15  # after a failed round while the clock is unset: TLS waits for it
NTP_RESYNC_S = 6 * 3600
WIFI_RETRY_S = 10
# The supervisor wakes every feed period; when it wakes later than that by more than this, the
# event loop itself was blocked (a DNS lookup, an NTP wait) and no task could beat meanwhile.
LATE_MS = 250
# what a reset the firmware makes itself is reported as at the next boot (telemetry "reset")
RESET_CAUSES = {"reboot": "command", "update": "update", "rollback": "rollback"}


class App:
    def __init__(self, board, cfg, ident):
        self.board = board
        self.cfg = cfg
        self.ident = ident
        self._blog = board.log  # the boot loader keeps its last lines on flash (log_tail command)
        self.samples_acked = 0  # spooled samples acknowledged in this boot (the update's health check)
        self._installer = None
        # WiFi first: the connect starts now and runs while the rest is allocated
        board.wlan.connect(cfg.wifi_ssid, cfg.wifi_password)
        self._wifi_at = board.ticks_ms()
        from sqalfw.backoff import Backoff
        from sqalfw.commands import Commands
        from sqalfw.spool import Spool
        from sqalfw.telemetry import Telemetry
        did = cfg.device_id
        self.t_sample = codec.topic(did, "sample")
        self.t_status = codec.topic(did, "status")
        self.t_tele = codec.topic(did, "telemetry")
        self.t_cmd = codec.topic(did, "cmd")
        self.t_result = codec.topic(did, "cmd/result")
        # spool_capacity counts samples; bytes bound it too (an 8x8 JSON sample is ~600-900 bytes),
        # and so does the flash: a spool that filled it would leave no room for state.json
        path = config.join(board.flash_dir, "spool")
        self.spool = Spool(path, capacity=cfg.spool_capacity * SAMPLE_BYTES, max_records=cfg.spool_capacity)
        room = flash_room(board.flash_dir, self.spool.bytes_used())
        if room is not None and room < self.spool.capacity:
            self.log("spool: %d samples do not fit on this flash: capped at %d bytes (%d samples)"
                     % (cfg.spool_capacity, room, room // SAMPLE_BYTES))
            self.spool.capacity = room
        # records spooled by earlier boots: the drain sends oldest first, so this boot's first
        # sample is acknowledged once these are gone (sent, or dropped by a full spool)
        self._backlog = len(self.spool)
        self._dropped0 = self.spool.dropped
        self.sampler = None
        self.sampler_error = None
        if not ident.safe_mode:
            try:
                from sqalfw.sampler import Sampler  # sensor code not even loaded in safe mode
                self.sampler = Sampler(board, cfg, ident, self.spool)
            except ImportError as e:  # a partial firmware upload: run degraded, don't boot-loop
                self.sampler_error = "sampler: %r" % e
                self.log(self.sampler_error)
        # Status identity: birth and will of one broker connection share (conn, ts), so the gateway can
        # tell a connection's will from an older one's (docs/contract.md, status ordering).
        self.conn = 0
        self.conn_ts = board.time_ms()
        # TLS: the context, or the reason no TLS connection may be made (logged by the transport)
        self.tls = cfg.ws_url.startswith("wss://") if cfg.transport == "websocket" else cfg.broker["tls"]
        self.tls_refused = None
        ctx = None
        if self.tls:
            ctx, self.tls_refused = self._tls()
        net = {"open_connection": board.open_connection, "resolver": board.resolver, "log": self.log,
               "hold": self._hold, "is_link_up": board.wlan.isconnected,
               "backoff": Backoff(cfg.reconnect_base_s, cfg.reconnect_cap_s), "ssl": ctx}
        if cfg.transport == "websocket":
            self.client = self._ws_transport(net)
        else:
            from sqalfw.mqtt import MQTTClient
            b = cfg.broker
            self.client = MQTTClient(
                did, b["host"], b["port"], user=b["user"], password=b["password"],
                keepalive=cfg.keepalive_s, will=(self.t_status, self._status("offline"), True, 1),
                birth=(self.t_status, self._status("online"), True, 1), max_packet=2048,
                alternates=[(x["host"], x["port"]) for x in cfg.brokers[1:]], **net)
            self.client.on_connecting = self._on_connecting
        self.client.set_callback(self._on_message)
        self.client.subscribe(self.t_cmd, 1)
        self.commands = Commands(self)
        self.telemetry = Telemetry(self)
        self._wake = asyncio.Event()     # a record was appended to the spool
        self._outev = asyncio.Event()
        self._outbox = []                # [topic, payload, action]
        self.outbox_dropped = 0
        self._reset_by = None            # ticks by which a queued reset is made, acked or not
        self.beats = {}                  # task name -> ticks of its last loop iteration
        self.crashed = None
        self._up_ms = 0
        self._degraded_seen = None
        self.stopping = False
        self._ntp_failing = False
        # A QoS 1 publish not acked within this is withdrawn and retried (the record stays in the
        # spool). Kept well under the stall limit (watchdog_s / 2) so that waiting for a broker
        # during an outage never looks like a hung task to the supervisor.
        self.pub_timeout = max(1.0, cfg.watchdog_s / 4)
        # A task is stalled when it has not looped for stall_ms (half the watchdog) of the time the
        # event loop could run; idle loops wake to beat every idle_ms, a quarter of that (2.5 s at
        # the smallest watchdog, 20 s; 3.75 s at the default 30 s; at most 5 s). Each wake-up costs
        # CPU on the board and in every emulated device of a fleet: an idle loop waits on its event
        # (or the connection) and wakes only to beat.
        self.stall_ms = max(3000, int(cfg.watchdog_s * 500))
        self.idle_ms = max(1000, min(5000, self.stall_ms // 4))
        # The watchdog is fed every tenth of its timeout, at most every second (1 s from 10 s up:
        # always, with the 20 s minimum).
        self.feed_ms = max(200, min(1000, int(cfg.watchdog_s * 100)))

    # ---- small helpers used by commands/telemetry ----

    def installer(self):
        """The update installer (frozen in the image), or ValueError on an image without it."""
        if self._installer is None:
            try:
                from sqalboot.install import Installer
            except ImportError:
                raise ValueError("this image cannot be updated over the air (no sqalboot)")
            self._installer = Installer(self.board.flash_dir, VERSION)
        return self._installer

    def log(self, msg):
        self._blog("sqal: " + msg)

    def log_exception(self, e):
        # the traceback as serial log lines, through the board like every other line
        try:
            import io
            buf = io.StringIO()
            sys.print_exception(e, buf)  # type: ignore[attr-defined]  # MicroPython's sys
            # getvalue() is MicroPython's too; the stubs' io.StringIO lacks it
            for line in buf.getvalue().split("\n"):  # pyright: ignore[reportAttributeAccessIssue]
                if line:
                    self._blog(line)
        except Exception:
            pass

    def degraded(self):
        if self.sampler is not None:
            return self.sampler.degraded
        return ("tof", "spec") if self.sampler_error else ()

    def sample_interval(self):
        return self.ident.interval_s or self.cfg.sample_interval_s

    def telemetry_interval(self):
        return self.ident.telemetry_s or self.cfg.telemetry_interval_s

    def uptime_s(self):
        return self._up_ms // 1000

    def beat(self, name):
        self.beats[name] = self.board.ticks_ms()

    def _beat_sampler(self):
        self.beats["sampler"] = self.board.ticks_ms()

    def _status(self, state):
        s = {"v": 1, "device_id": self.cfg.device_id, "state": state, "boot": self.ident.boot,
             "fw": VERSION, "ts": self.conn_ts, "safe_mode": self.ident.safe_mode}
        if self.conn:
            s["conn"] = self.conn
        if self.cfg.location:
            s["location"] = self.cfg.location
        if self.degraded():
            s["degraded"] = list(self.degraded())
        return codec.encode_status(s)

    def _ws_transport(self, net):
        # The alternative transport: samples and heartbeats straight to the gateway. It offers the
        # MQTTClient methods the app uses (commands are MQTT-only, see docs/firmware-transport.md).
        # Credentials: in ws_url, else those of a provisioned broker_url (the same device password).
        from sqalfw.ws_transport import WSTransport
        cfg = self.cfg
        b = cfg.broker or {}
        return WSTransport(cfg.ws_url, cfg.device_id, self.ident.boot, VERSION, keepalive=cfg.keepalive_s,
                           user=b.get("user"), password=b.get("password"), **net)

    def _tls(self):
        """(SSL context, None), or (None, why no TLS connection may be made). The server is
        authenticated against ca.pem on flash; without ca.pem the connection is refused unless
        config.json says "tls_insecure": true; an unusable ca.pem refuses it (fail closed)."""
        try:
            import ssl
        except ImportError:
            return None, "TLS refused: this firmware image has no ssl module"
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            with open(config.join(self.board.flash_dir, "ca.pem"), "rb") as f:
                ctx.load_verify_locations(cadata=pem_to_der(f.read()))
        except OSError:
            if not self.cfg.tls_insecure:
                return None, ("TLS refused: no ca.pem on flash to verify the server with (put the CA "
                              "certificate there, or set \"tls_insecure\": true in config.json to "
                              "connect without verifying it)")
            self.log("TLS without ca.pem (\"tls_insecure\": true in config.json): the server "
                     "certificate is NOT verified")
            ctx.verify_mode = ssl.CERT_NONE  # type: ignore[attr-defined]
            return ctx, None
        except ValueError as e:
            return None, "TLS refused: ca.pem unusable (%s); fix it on flash" % e
        ctx.verify_mode = ssl.CERT_REQUIRED  # type: ignore[attr-defined]  # exists, stubs lack it
        self.log("TLS: the server certificate is verified against ca.pem")
        return ctx, None

    def _hold(self):
        """Why the transport must not try to connect now, or None. mbedTLS checks certificate dates
        against the board clock, which reads 2000-01-01 until it is set: no TLS before that."""
        if not self.tls:
            return None
        if self.tls_refused is not None:
            return self.tls_refused
        if not self.board.clock_synced():
            return "TLS: waiting for the clock to be set (NTP) before connecting"
        return None

    def queue(self, topic, payload, action=None):
        if len(self._outbox) >= OUTBOX_MAX:
            self.outbox_dropped += 1
            plain = [i for i, item in enumerate(self._outbox) if item[2] is None]
            if action is None or not plain:
                return False
            # a result that resets the board is never the one dropped: the oldest plain one is
            self._outbox.pop(plain[0])
        self._outbox.append([topic, payload, action])
        if action in RESET_CAUSES and self._reset_by is None:
            self._reset_by = time.ticks_add(self.board.ticks_ms(), RESET_WAIT_MS)
        self._outev.set()
        return True

    def _on_connecting(self):
        self.conn += 1
        self.conn_ts = self.board.time_ms()
        self.client.birth = (self.t_status, self._status("online"), True, 1)
        self.client.will = (self.t_status, self._status("offline"), True, 1)

    def _status_changed(self):
        # refresh what the broker keeps (birth on the next connect, retained status now)
        online = self._status("online")
        self.client.birth = (self.t_status, online, True, 1)
        self.client.will = (self.t_status, self._status("offline"), True, 1)
        if self.conn:  # before the first connection the birth will carry this state
            self.queue(self.t_status, online)

    # ---- incoming ----

    def _on_message(self, topic, payload):
        # runs inside the MQTT read loop: never await a publish here (its PUBACK needs that loop)
        if topic != self.t_cmd:
            return
        result, action = self.commands.handle(payload)
        self.queue(self.t_result, result, action)

    # ---- tasks ----

    async def _guard(self, name, coro):
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.crashed = "%s: %r" % (name, e)
            self.log("task crashed, watchdog will reset: " + self.crashed)
            self.log_exception(e)

    async def _sleep_or(self, ev, seconds):
        try:
            await asyncio.wait_for(ev.wait(), seconds)
        except asyncio.TimeoutError:
            pass
        ev.clear()

    async def _sampling(self, s):
        board = self.board
        beat = self._beat_sampler
        beat()
        await s.init_sensors_async(beat)
        self._check_degraded(s)
        due = board.ticks_ms()
        while True:
            beat()
            if s.retry_due():
                await s.init_sensors_async(beat)
                self._check_degraded(s)
            now = board.ticks_ms()
            wait = time.ticks_diff(due, now)
            if wait > 0:
                await asyncio.sleep_ms(wait if wait < self.idle_ms else self.idle_ms)
                continue
            step = int(self.sample_interval() * 1000)
            due = time.ticks_add(due, step)
            if time.ticks_diff(now, due) > 0:
                due = time.ticks_add(now, step)  # fell behind (slow cycle): don't burst to catch up
            try:
                if await s.cycle() is not None:
                    self._wake.set()
            except Exception as e:
                # (e.g. a value the codec rejects, a MemoryError); counted and logged, next cycle runs
                s.cycle_errors += 1
                self.log("cycle failed: %r" % e)
            self._check_degraded(s)
            board.mem_free()  # records the low-water mark before collecting
            board.collect()  # gc.collect() on a board; a host of several emulated boards coalesces
            await asyncio.sleep_ms(0)

    def _check_degraded(self, s):
        d = tuple(s.degraded)
        if d != self._degraded_seen:
            self._degraded_seen = d
            self._status_changed()

    async def _drain(self):
        # oldest first, one in flight: a record leaves the spool only after its PUBACK
        c = self.client
        idle = self.idle_ms / 1000
        while True:
            self.beat("drain")
            if not c.isconnected():
                await c.wait_connected(idle)
                continue
            item = self.spool.peek()
            if item is None:
                await self._sleep_or(self._wake, idle)
                continue
            key, rec = item
            if await c.publish(self.t_sample, rec, 1, False, self.pub_timeout):
                self.spool.pop(key)
                self.samples_acked += 1

    async def _outbox_loop(self):
        c = self.client
        idle = self.idle_ms / 1000
        while True:
            self.beat("outbox")
            self._reset_if_overdue()
            if not c.isconnected():
                await c.wait_connected(idle)
                continue
            if not self._outbox:
                await self._sleep_or(self._outev, idle)
                continue
            topic, payload, action = self._outbox[0]
            retain = topic == self.t_status
            if not await c.publish(topic, payload, 1, retain, self.pub_timeout):
                continue
            self._outbox.pop(0)
            if action in RESET_CAUSES:
                self.log("%s: resetting" % _reset_reason(action))
                await c.disconnect()
                self._reset(RESET_CAUSES[action])

    def reset_owed(self):
        """"update" or "rollback" once this boot changed the slot to boot on flash, else None."""
        return self._installer.reset_owed if self._installer is not None else None

    def _reset_if_overdue(self):
        # a reset asked for (queued with its result) is made at the latest RESET_WAIT_MS after it
        # was queued; one owed (the slot switched, its command unanswered) after this task saw it
        action = None
        for item in self._outbox:  # no list built: this runs at every turn of the task
            if item[2] in RESET_CAUSES:
                action = item[2]
                break
        if action is None:
            action = self.reset_owed()
        if action is None:
            return
        now = self.board.ticks_ms()
        if self._reset_by is None:
            self._reset_by = time.ticks_add(now, RESET_WAIT_MS)
        elif time.ticks_diff(now, self._reset_by) >= 0:
            self.log("%s: resetting, its result not acknowledged within %d s"
                     % (_reset_reason(action), RESET_WAIT_MS // 1000))
            self._reset(RESET_CAUSES[action])

    async def _telemetry_loop(self):
        due = self.board.ticks_ms()
        while True:
            self.beat("telemetry")
            now = self.board.ticks_ms()
            if time.ticks_diff(now, due) >= 0:
                due = time.ticks_add(now, int(self.telemetry_interval() * 1000))
                if self.client.isconnected():
                    await self.client.publish(self.t_tele, self.telemetry.encode(), 0)
            # until due (a changed interval takes effect from the next report), at most idle_ms
            wait = time.ticks_diff(due, self.board.ticks_ms())
            await asyncio.sleep_ms(min(max(wait, 0), self.idle_ms))

    async def _net(self):
        board, cfg = self.board, self.cfg
        last_wifi = self._wifi_at  # the connect App() started
        last_ntp = None
        ntp_ok_at = None
        was_up = False
        while True:
            self.beat("net")
            now = board.ticks_ms()
            up = board.wlan.isconnected()
            if not up:
                if time.ticks_diff(now, last_wifi) >= WIFI_RETRY_S * 1000:
                    last_wifi = now
                    board.wlan.connect(cfg.wifi_ssid, cfg.wifi_password)
            else:
                if not was_up:
                    self.log("link up")
                # NTP once per boot (a clock kept through a reset has drifted), then every 6 h
                due = ntp_ok_at is None or time.ticks_diff(now, ntp_ok_at) >= NTP_RESYNC_S * 1000
                retry_ms = (NTP_RETRY_S if board.clock_synced() else NTP_RETRY_UNSET_S) * 1000
                if due and (last_ntp is None or time.ticks_diff(now, last_ntp) >= retry_ms):
                    if await self._ntp():
                        ntp_ok_at = board.ticks_ms()
                    last_ntp = board.ticks_ms()
            was_up = up
            # down: look every second; up: the transports watch the link themselves
            await asyncio.sleep_ms(self.idle_ms if up else 1000)

    async def _ntp(self):
        # the servers in turn until one answers; each try can block the loop for its timeout (1 s
        # on the ESP32) and an uncached DNS lookup, so the loop gets a turn between them
        failed = []
        for host in self.cfg.ntp_hosts:
            self.beat("net")
            ok = self.board.ntp_sync(host)
            await asyncio.sleep_ms(0)
            if ok:
                self._ntp_failing = False
                self.log("clock set by NTP from %s%s" % (host, " (no answer from %s)" % ", ".join(failed)
                                                         if failed else ""))
                return True
            failed.append(host)
        if not self._ntp_failing:  # once per run of failed rounds (every 15 s while unset)
            self._ntp_failing = True
            self.log("NTP: no answer from %s; clock %s" % (", ".join(failed), "kept" if self.board.clock_synced()
                                                             else "not set, TLS waits for it"))
        return False

    async def _supervisor(self, wdt):
        board, cfg, c = self.board, self.cfg, self.client
        # a task is stalled when it has not looped for stall_ms; idle loops beat at least every
        # idle_ms (a quarter of it), never less than every second (a loaded CPU must not look
        # like a hang)
        stall_ms = self.stall_ms
        last = board.ticks_ms()
        offline_ms = 0
        connects = 0
        beats = self.beats
        while True:
            now = board.ticks_ms()
            dt = time.ticks_diff(now, last)
            last = now
            self._up_ms += dt  # accumulated: ticks wrap after ~6 days on the ESP32
            late = dt - self.feed_ms
            if late > LATE_MS:
                # the loop itself was blocked (a call shorter than the watchdog, e.g. a DNS
                # lookup): no task could beat meanwhile, so that time is not held against them
                for name in beats:
                    beats[name] = time.ticks_add(beats[name], late)
            healthy = self.crashed is None
            for name in beats:
                if time.ticks_diff(now, beats[name]) > stall_ms:
                    if healthy:
                        self.log("task %s stalled: not feeding the watchdog" % name)
                    healthy = False
            if healthy:
                wdt.feed()
            if c.isconnected():
                offline_ms = 0
                if c.connects != connects:
                    connects = c.connects
                    # `sqal board deploy` follows the serial log until it sees this line.
                    self.log("online (broker %s:%d)" % (c.server, c.port))
                if not self.ident.healthy and c.acked:
                    self.ident.mark_healthy()
            else:
                offline_ms += dt
                if cfg.max_offline_s and offline_ms >= cfg.max_offline_s * 1000:
                    self.log("offline for %d s: rebooting" % (offline_ms // 1000))
                    self._reset("offline")
            self._health()
            if not self.ident.healthy and self._up_ms >= cfg.healthy_after_s * 1000:
                self.ident.mark_healthy()
            if getattr(board, "stop_requested", False) and not self.stopping:
                self.stopping = True
                self.log("stop requested")
                await c.disconnect()
                return
            await asyncio.sleep_ms(self.feed_ms)

    async def run(self):
        board, cfg = self.board, self.cfg
        self.log("device %s boot %d fw %s%s" % (cfg.device_id, self.ident.boot, VERSION,
                                                 " SAFE MODE" if self.ident.safe_mode else ""))
        wdt = board.watchdog(int(cfg.watchdog_s * 1000))
        tasks = [
            self._guard("net", self._net()),
            self._guard("mqtt", self.client.run()),
            self._guard("drain", self._drain()),
            self._guard("outbox", self._outbox_loop()),
            self._guard("telemetry", self._telemetry_loop()),
        ]
        if self.sampler is not None:
            tasks.append(self._guard("sampler", self._sampling(self.sampler)))
        tasks.extend(board.background())
        started = [asyncio.create_task(t) for t in tasks]
        await self._supervisor(wdt)  # returns only on a stop request
        for t in started:
            t.cancel()
        self._close_spool()

    def _close_spool(self):
        # saves the spool's head: a planned stop or reboot sends nothing acknowledged again
        try:
            self.spool.close()
        except OSError as e:
            self.log("spool: close failed (%r): up to 15 acknowledged samples may be sent again" % (e,))

    def _reset(self, cause=None):
        self._close_spool()
        if cause is not None and ota_slots is not None:
            ota_slots.set_intent(self.board.flash_dir, cause)
        self.board.reset()

    def _health(self):
        """A probation boot (a new release on trial): mark what the health check has seen, and
        confirm the slot once WiFi, the broker, a reading of each sensor (a sample holds both) and
        an acknowledged sample have all been seen. The deadline is the boot loader's (sqalboot)."""
        s = ota_slots
        if s is None or not s.BOOT["probation"]:
            return
        if self.board.wlan.isconnected():
            s.mark("wifi")
        if self.client.isconnected():
            s.mark("broker")
        if self.sampler is not None and self.sampler.sampled:
            s.mark("tof")
            s.mark("spec")
        if self.samples_acked + self.spool.dropped - self._dropped0 > self._backlog:
            s.mark("acked")  # a sample of this boot, not one an earlier release left in the spool
        if not s.missing() and s.confirm(self.board.flash_dir):
            self.telemetry.ota_stale = True
            self.log("ota: version %s confirmed (slot %s)" % (VERSION, s.BOOT["slot"]))


def _reset_reason(action):
    return ("reboot requested by command" if action == "reboot" else
            "update installed" if action == "update" else "rollback requested")


def flash_room(flash_dir, spool_bytes):
    """Bytes the spool may take on this flash: 3/4 of what is free at boot plus what it holds
    already; the rest is for state.json, littlefs's copy-on-write and the filesystem's own
    metadata. None where the filesystem cannot say (statvfs missing)."""
    import os
    statvfs = getattr(os, "statvfs", None)
    if statvfs is None:
        return None
    try:
        st = statvfs(flash_dir or "/")
    except OSError:
        return None
    return (st[0] * st[4] + spool_bytes) * 3 // 4


def pem_to_der(data):
    """The first certificate of a PEM file as DER (DER input is returned as it is).

    MicroPython's mbedtls builds (the unix port at least) refuse PEM in load_verify_locations
    ("invalid cert") but all take DER, so ca.pem is converted here: one CA certificate."""
    import binascii
    begin = data.find(b"-----BEGIN CERTIFICATE-----")
    if begin < 0:
        return data
    start = data.find(b"\n", begin) + 1
    end = data.find(b"-----END CERTIFICATE-----", start)
    if start <= 0 or end < 0:
        raise ValueError("ca.pem: unterminated CERTIFICATE block")
    return binascii.a2b_base64(data[start:end].replace(b"\r", b"").replace(b"\n", b""))


def boot(board):
    """Config and identity (boot counter + 1): the App to run, or None when config.json is invalid.
    Split from main() so that an emulation host can run several boards' Apps on one event loop."""
    try:
        cfg = config.load(board.flash_dir)
    except config.ConfigError as e:
        board.log("sqal: " + str(e))
        return None
    ident = identity.Identity(board.flash_dir, cfg.device_id)
    ident.start(cfg.safe_mode_after)
    return App(board, cfg, ident)


def main(board):
    """Boot, then run. Returns an exit code (emulation)."""
    app = boot(board)
    if app is None:
        return CONFIG_ERROR
    asyncio.run(app.run())
    return 0
