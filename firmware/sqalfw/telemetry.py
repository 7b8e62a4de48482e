# Telemetry payload (docs/contract.md section 6): health figures on an interval, QoS 0.
from sqalfw import VERSION, codec


class Telemetry:
    def __init__(self, app):
        self.app = app
        self.published = 0

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
        return t

    def encode(self):
        t = self.build()
        # beyond the contract's required fields (decoders ignore unknown ones)
        out = codec.encode_telemetry(t)
        return out
