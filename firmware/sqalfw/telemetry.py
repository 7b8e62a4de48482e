# Telemetry payload (docs/contract.md section 6): health figures on an interval, QoS 0.
from sqalfw import VERSION, codec

try:
    from sqalboot import slots as ota_slots  # the boot loader frozen in the image (docs/ota.md)
except ImportError:
    ota_slots = None


class Telemetry:
    def __init__(self, app):
        self.app = app
        self.published = 0
        self.ota = None         # the update state last read (telemetry "ota")
        self.ota_stale = True   # read it again: set by the update commands and the health check

    def ota_report(self):
        """The update state for telemetry, or None when there is nothing to say. Read from flash
        once per boot and after a change (an update command, the confirmation), at every report
        while a download runs: no garbage for nothing."""
        r = self.ota
        if ota_slots is None or not (self.ota_stale or r is not None and r["state"] in ("downloading", "verifying")):
            return r
        self.ota_stale = False
        self.ota = None
        app = self.app
        if app._installer is None and not ota_slots.updated(app.board.flash_dir):
            return None  # never updated: the installer is not even imported (its heap)
        try:
            st = app.installer().status()
        except (OSError, ValueError):
            return None
        if st.get("state") == "idle" and st.get("slot") == "factory":
            return None
        out = {"state": st["state"], "slot": st["slot"], "version": VERSION}
        for k in ("target", "progress", "reason"):
            v = st.get(k)
            if v is not None:
                out[k] = v.replace('"', "'").replace("\\", "/") if isinstance(v, str) else v
        self.ota = out
        return out

    def build(self):
        app = self.app
        b = app.board
        c = app.client
        ident = app.ident
        rssi = b.wlan.rssi() if b.wlan.isconnected() else None
        if rssi is not None and not -127 <= rssi <= 0:
            rssi = None
        t = {
            "v": 1, "device_id": ident.device_id, "boot": ident.boot, "ts": b.time_ms(),
            "synced": b.clock_synced(), "uptime_s": app.uptime_s(),
            "mem_free": b.mem_free(), "mem_min_free": b.mem_min_free(),
            "spool_depth": len(app.spool),
            "counters": {
                "sampled": app.sampler.sampled if app.sampler else 0,
                "sent": c.sent, "acked": c.acked, "retransmitted": c.retransmitted,
                "reconnects": c.reconnects,
                "i2c_errors": app.sampler.i2c_errors() if app.sampler else 0,
                "dropped": app.spool.dropped,
            },
            "fw": VERSION, "rssi": rssi, "sample_s": app.sample_interval(),
        }
        if ident.lot_id:
            t["lot_id"] = ident.lot_id
        # why the board last reset, and the update state (docs/ota.md), from the boot loader
        if ota_slots is not None:
            t["reset"] = ota_slots.BOOT["cause"]
        ota = self.ota_report()
        if ota is not None:
            t["ota"] = ota
        return t

    def encode(self):
        t = self.build()
        # beyond the contract's required fields (decoders ignore unknown ones)
        out = codec.encode_telemetry(t)
        return out
