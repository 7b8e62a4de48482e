# Commands from the gateway (docs/contract.md section 7). Each gets exactly one result. Validation
# is all-or-nothing: the codec rejects a malformed or unknown command before anything changes, and
# a setting is persisted to flash before it takes effect, so a failed write also changes nothing.
from sqalfw import codec


class Commands:
    def __init__(self, app):
        self.app = app
        self.handled = 0
        self.rejected = 0

    def handle(self, payload):
        """bytes -> (result bytes, action). action is None or a reset to make once the result is
        acknowledged: "reboot", or "update"/"rollback" when the slot to boot changed on flash
        (by this command or an earlier one whose result was lost)."""
        try:
            c = codec.decode_command(payload)
        except codec.ContractError as e:
            self.rejected += 1
            return codec.encode_result(getattr(e, "cmd_id", None), None, False, error=str(e)), None
        name, args, cid = c["cmd"], c["args"], c["id"]
        try:
            data, action = self._run(name, args)
        except (ValueError, OSError) as e:
            self.rejected += 1
            return codec.encode_result(cid, name, False, error="%s: %s" % (name, e)), self.app.reset_owed()
        except MemoryError as e:
            # short of heap for now (fragmented, a burst of messages): transient, the sender tries
            # again; a switch already made stays owed
            self.rejected += 1
            return (codec.encode_result(cid, name, False, error="%s: out of memory, try again (%r)" % (name, e),
                                        retry=True), self.app.reset_owed())
        except Exception as e:  # a bug: answered all the same, the link goes on
            self.rejected += 1
            return codec.encode_result(cid, name, False, error="%s: %r" % (name, e)), self.app.reset_owed()
        self.handled += 1
        return codec.encode_result(cid, name, True, data=data), self.app.reset_owed() or action

    def _run(self, name, args):
        app = self.app
        ident = app.ident
        if name == "set_interval":
            sample_s = args.get("sample_s", app.sample_interval())
            tele_s = args.get("telemetry_s", app.telemetry_interval())
            ident.set_intervals(sample_s, tele_s)
            return {"sample_s": sample_s, "telemetry_s": tele_s}, None
        if name == "assign_lot":
            ident.set_lot(args["lot_id"])
            return {"lot_id": args["lot_id"]}, None
        if name == "clear_lot":
            ident.set_lot(None)
            return {}, None
        if name == "status":
            t = app.telemetry.build()
            # the app's own view beyond the telemetry contract (unknown fields are allowed)
            t["degraded"] = list(app.degraded())
            t["safe_mode"] = ident.safe_mode
            return t, None
        if name == "reboot":
            return {}, "reboot"
        if name == "log_tail":
            from sqalboot import slots  # the boot loader keeps the log's last lines on flash
            return {"lines": slots.log_tail(app.board.flash_dir, args.get("lines", 20))}, None
        # updates (docs/ota.md): the installer is frozen in the image (sqalboot.install); a refusal
        # is a ValueError whose message is the reason, answered as the command's error
        if name.startswith("ota_"):
            app.telemetry.ota_stale = True
        if name == "ota_status":
            return app.installer().status(), None
        if name == "ota_begin":
            return app.installer().begin(args["version"], args["size"], args["sig"], args.get("probation_s")), None
        if name == "ota_chunk":
            import binascii
            try:
                data = binascii.a2b_base64(args["data"])
            except ValueError:
                raise ValueError("data: not base64")
            return app.installer().chunk(args["path"], args["off"], data), None
        if name == "ota_rollback":
            return app.installer().rollback(), None
        raise ValueError("not implemented")  # unreachable: the codec knows the command list
