"""Over-the-air updates on the board side (firmware/sqalboot), on the ESP32 profile: the boot loader
and the installer frozen into the 32-bit interpreter, the slots on a 2 MiB littlefs2 image.

- Ed25519 verification in MicroPython agrees with the host's `cryptography` (OpenSSL): valid
  signatures pass, an altered signature, message or key fails (and on CPython too);
- an update lands in the inactive slot, switches, boots on probation, is confirmed; the floor
  rises with a confirmed release's min_version;
- refusals, each with its reason and nothing installed (ota.json unchanged, the staging slot
  wiped): a tampered file, a tampered manifest, a manifest signed by another key, a downgrade
  below the board's minimum version (announced, and in the signed manifest), a board without a
  release key;
- a slot whose file was corrupted on flash is never booted: the board goes back and says why;
- 100 power cuts at every step of an update (emulation/ota_powercut.py): every board ends on a
  slot whose files match its manifest, old or new, and says which.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from emulation import ota_powercut
from emulation.targets import ESP32_FLASH_BYTES
from gateway.ota import release as rel

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """0.2.0 and 0.3.0 (min_version 0.3.0) signed by the release key; 0.4.0 by another key."""
    root = tmp_path_factory.mktemp("releases")
    key_file = root / "keys" / "release.pem"
    pub = rel.keygen(key_file)
    key = rel.load_private(key_file)
    other = Ed25519PrivateKey.generate()
    out = root / "out"
    return {
        "pub": pub,
        "0.2.0": rel.build("0.2.0", key, out),
        "0.3.0": rel.build("0.3.0", key, out, min_version="0.3.0"),
        "0.4.0-other": rel.build("0.4.0", other, root / "other"),
        "root": root,
    }


# ---- the signature ----

def _vectors(n: int = 12) -> list[dict[str, Any]]:
    key = Ed25519PrivateKey.generate()
    other = Ed25519PrivateKey.generate()
    pub = rel.public_hex(key.public_key())
    out = []
    for i in range(n):
        m = hashlib.sha256(os.urandom(40)).digest()
        sig = key.sign(m)
        bad = bytearray(sig)
        bad[i * 5 % 64] ^= 1 << (i % 8)
        out.append({"pub": pub, "m": m.hex(), "sig": sig.hex(), "ok": True})
        out.append({"pub": pub, "m": m.hex(), "sig": bytes(bad).hex(), "ok": False})
        out.append({"pub": pub, "m": hashlib.sha256(m).hexdigest(), "sig": sig.hex(), "ok": False})
        out.append({"pub": rel.public_hex(other.public_key()), "m": m.hex(), "sig": sig.hex(), "ok": False})
    # S >= L (the same signature made malleable) must fail: L added to S
    m = hashlib.sha256(b"malleable").digest()
    sig = key.sign(m)
    s = int.from_bytes(sig[32:], "little") + 2 ** 252 + 27742317777372353535851937790883648493
    out.append({"pub": pub, "m": m.hex(), "sig": (sig[:32] + s.to_bytes(32, "little")).hex(), "ok": False})
    return out


VERIFY = """
import binascii, json
from sqalboot import ed25519
vs = json.loads({vectors!r})
print(json.dumps([ed25519.verify(binascii.unhexlify(v["pub"]), binascii.unhexlify(v["m"]),
                                 binascii.unhexlify(v["sig"])) for v in vs]))
"""


def test_ed25519_agrees_with_openssl_on_the_profile(esp32_run: Any) -> None:
    vs = _vectors()
    got = json.loads(esp32_run(VERIFY.format(vectors=json.dumps(vs))).stdout.strip().splitlines()[-1])
    assert got == [v["ok"] for v in vs]


def test_ed25519_agrees_with_openssl_on_cpython() -> None:
    sys.path.insert(0, str(REPO / "firmware"))
    try:
        from sqalboot import ed25519  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(REPO / "firmware"))
    vs = _vectors(6)
    assert [ed25519.verify(bytes.fromhex(v["pub"]), bytes.fromhex(v["m"]), bytes.fromhex(v["sig"]))
            for v in vs] == [v["ok"] for v in vs]
    assert ed25519._sha512(b"abc" * 50) == hashlib.sha512(b"abc" * 50).digest()


# ---- installing ----

BOARD = """
import json, time
from emulation.mpboard import flash as _flash
FLASH = _flash.mount({image!r}, {size})
from sqalboot import install, run, slots
FD = "/flash"


class Board:
    flash_dir = FD

    def ticks_ms(self):
        return time.ticks_ms()

    def reset_cause(self):
        return "soft"

    def log(self, line):
        print(line)


def key(hex_key):
    with open(FD + "/ota_key.pub", "w") as f:
        f.write(hex_key)


def files():
    out = {{}}
    for slot in ("a", "b"):
        try:
            out[slot] = sorted(e[0] for e in __import__("os").ilistdir(FD + "/ota/" + slot))
        except OSError:
            out[slot] = None
    return out


def push(d, version=None, size=None):
    raw = open(d + "/manifest.json", "rb").read()
    sig = open(d + "/manifest.sig").read().strip()
    v = version or json.loads(raw)["version"]
    inst = install.Installer(FD, slots.BOOT["version"] or "0.1.0")
    try:
        st = inst.begin(v, size or len(raw), sig)
        while st["state"] in ("downloading", "verifying"):
            if st["state"] == "verifying":
                st = inst.begin(v, size or len(raw), sig)
                continue
            with open(d + "/" + st["path"], "rb") as f:
                f.seek(st["have"])
                data = f.read(600)
            st = inst.chunk(st["path"], st["have"], data)
    except install.Refused as e:
        return {{"refused": str(e), "status": install.Installer(FD).status(), "ota": slots.load(FD), "files": files()}}
    return {{"status": st, "ota": slots.load(FD), "files": files()}}


def boot_and_confirm():
    d = slots.select(Board(), print)
    if slots.BOOT["probation"]:
        for k in ("wifi", "broker", "tof", "spec", "acked"):
            slots.mark(k)
        slots.confirm(FD)
    return {{"slot": slots.BOOT["slot"], "cause": slots.BOOT["cause"], "status": install.Installer(FD).status()}}


def out(name, value):
    print("OUT " + json.dumps([name, value]))
"""


def _outputs(stdout: str) -> dict[str, Any]:
    got = {}
    for line in stdout.splitlines():
        if line.startswith("OUT "):
            name, value = json.loads(line[4:])
            got[name] = value
    return got


def _board(esp32_run: Any, tmp_path: Path, code: str) -> dict[str, Any]:
    image = tmp_path / "flash.img"
    res = esp32_run(BOARD.format(image=str(image), size=ESP32_FLASH_BYTES) + code, heap="110k")
    return _outputs(res.stdout)


def _copy(r: rel.Release, dest: Path) -> Path:
    shutil.copytree(r.directory, dest)
    return dest


def test_update_switches_and_is_confirmed_after_probation(esp32_run: Any, tmp_path: Path,
                                                          releases: dict[str, Any]) -> None:
    r2, r3 = releases["0.2.0"].directory, releases["0.3.0"].directory
    got = _board(esp32_run, tmp_path, f"""
key({releases["pub"]!r})
out("before", install.Installer(FD, "0.1.0").status())
out("push2", push({str(r2)!r}))
out("boot2", boot_and_confirm())
out("push3", push({str(r3)!r}))
out("boot3", boot_and_confirm())
out("again", push({str(r2)!r}))
""")
    assert got["before"]["state"] == "idle" and got["before"]["slot"] == "factory"
    # installed in slot a, switched, not yet confirmed: the next boot is on probation
    assert got["push2"]["status"]["state"] == "pending"
    assert got["push2"]["ota"]["active"] == "a" and got["push2"]["ota"]["confirmed"] is False
    assert got["push2"]["ota"]["previous"] == "factory"
    assert "manifest.json" in got["push2"]["files"]["a"] and "sqalfw" in got["push2"]["files"]["a"]
    assert got["boot2"]["slot"] == "a" and got["boot2"]["status"]["state"] == "confirmed"
    assert got["boot2"]["status"]["version"] == "0.2.0"
    # the next update goes to the other slot; the one running stays the way back
    assert got["push3"]["ota"]["active"] == "b" and got["push3"]["ota"]["previous"] == "a"
    assert got["boot3"]["status"] == {**got["boot3"]["status"], "state": "confirmed", "version": "0.3.0",
                                      "floor": "0.3.0"}
    # 0.3.0 said min_version 0.3.0: the board's floor rose, 0.2.0 is refused from now on
    assert "downgrade: 0.2.0 is below this board's minimum version 0.3.0" in got["again"]["refused"]
    assert got["again"]["ota"]["active"] == "b"


COMMANDS = """
import binascii
from sqalfw import codec
from sqalfw.commands import Commands


class Telemetry:
    ota_stale = False


class App:
    # what Commands reads of the application: the installer on this flash, the telemetry flag,
    # the reset the installer says is owed (sqalfw.app.App.reset_owed)
    ident = None
    telemetry = Telemetry()

    def __init__(self):
        self.inst = install.Installer(FD, "0.1.0")

    def installer(self):
        return self.inst

    def reset_owed(self):
        return self.inst.reset_owed


def command(cmds, name, args):
    res, action = cmds.handle(codec.encode_command("c1", name, args))
    return codec.decode_result(res), action


def send_release(d, cut_at_switch):
    raw = open(d + "/manifest.json", "rb").read()
    sig = open(d + "/manifest.sig").read().strip()
    begin = {"version": json.loads(raw)["version"], "size": len(raw), "sig": sig}
    cmds = Commands(App())
    orig = install.Installer.switch
    if cut_at_switch:
        def cut(self, dl):
            raise KeyboardInterrupt("power cut")
        install.Installer.switch = cut
    res, action = command(cmds, "ota_begin", begin)
    actions = [action]
    try:
        while res["data"]["state"] == "downloading":
            st = res["data"]
            with open(d + "/" + st["path"], "rb") as f:
                f.seek(st["have"])
                data = f.read(600)
            res, action = command(cmds, "ota_chunk", {"path": st["path"], "off": st["have"],
                                                       "data": binascii.b2a_base64(data).decode().strip()})
            actions.append(action)
    except KeyboardInterrupt:
        actions.append("cut")
    install.Installer.switch = orig
    return res, actions
"""


def test_the_command_that_switches_resets_the_board_last_chunk_or_resumed_begin(
        esp32_run: Any, tmp_path: Path, releases: dict[str, Any]) -> None:
    """A download completed by its last chunk resets the board into the new slot; so does one whose
    files were all written before a power cut at the switch, completed by the next ota_begin (a
    board that switched without resetting would run the old release with the new one pending)."""
    r2 = releases["0.2.0"].directory
    (tmp_path / "chunk").mkdir()
    (tmp_path / "begin").mkdir()
    got = _board(esp32_run, tmp_path / "chunk", f"""
key({releases["pub"]!r})
{COMMANDS}
res, actions = send_release({str(r2)!r}, False)
out("chunk", [res, actions])
""")
    res, actions = got["chunk"]
    assert res["ok"] and res["data"]["state"] == "pending", res
    assert actions[-1] == "update" and set(actions[:-1]) == {None}, actions
    got = _board(esp32_run, tmp_path / "begin", f"""
key({releases["pub"]!r})
{COMMANDS}
res, actions = send_release({str(r2)!r}, True)
out("cut", [res, actions, install.Installer(FD, "0.1.0").status()])
res, actions = send_release({str(r2)!r}, False)
out("resumed", [res, actions])
""")
    _res, actions, status = got["cut"]
    assert actions[-1] == "cut" and status["state"] == "verifying", status
    res, actions = got["resumed"]
    # the resumed ota_begin checked every file and switched: its result carries the reset
    assert res["ok"] and res["data"]["state"] == "pending" and actions == ["update"], (res, actions)
    assert res["data"]["version"] == "0.2.0"


def _tamper_file(r: rel.Release, dest: Path) -> Path:
    d = _copy(r, dest)
    f = d / "sqalfw" / "mqtt.mpy"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))
    return d


def _tamper_manifest(r: rel.Release, dest: Path) -> Path:
    d = _copy(r, dest)
    m = json.loads((d / "manifest.json").read_bytes())
    m["min_version"] = "0.0.1"  # any change: the signature covers every byte
    (d / "manifest.json").write_bytes(json.dumps(m, separators=(",", ":"), sort_keys=True).encode())
    return d


def test_refusals_install_nothing(esp32_run: Any, tmp_path: Path, releases: dict[str, Any]) -> None:
    r2, r3 = releases["0.2.0"], releases["0.3.0"]
    file_bad = _tamper_file(r3, tmp_path / "file_bad")
    manifest_bad = _tamper_manifest(r3, tmp_path / "manifest_bad")
    got = _board(esp32_run, tmp_path, f"""
out("nokey", push({str(r3.directory)!r}))
key({releases["pub"]!r})
out("push2", push({str(r2.directory)!r}))
out("boot2", boot_and_confirm())
out("file", push({str(file_bad)!r}))
out("manifest", push({str(manifest_bad)!r}))
out("other", push({str(releases["0.4.0-other"].directory)!r}))
out("push3", push({str(r3.directory)!r}))
out("boot3", boot_and_confirm())
out("down_announced", push({str(r2.directory)!r}))
out("down_signed", push({str(r2.directory)!r}, version="0.3.5"))
""")
    assert got["nokey"]["refused"].startswith("no release key on this board")
    assert got["nokey"]["files"] == {"a": None, "b": None}
    base = got["boot2"]["status"]
    assert base["slot"] == "a" and base["state"] == "confirmed"

    def unchanged(name: str, reason: str) -> None:
        r = got[name]
        assert reason in r["refused"], r
        assert r["ota"]["active"] == "a" and r["ota"]["confirmed"] is True and r["ota"]["version"] == "0.2.0"
        assert r["files"]["b"] is None, "the refused update's staging slot must be wiped"
        assert r["status"]["state"] == "failed" and reason in r["status"]["reason"], r["status"]
        assert r["status"]["slot"] == "a"

    unchanged("file", "sqalfw/mqtt.mpy: SHA-256 does not match the manifest")
    unchanged("manifest", "manifest: signature does not verify with this board's release key")
    unchanged("other", "manifest: signature does not verify with this board's release key")
    assert got["boot3"]["status"]["version"] == "0.3.0" and got["boot3"]["status"]["floor"] == "0.3.0"
    assert "downgrade: 0.2.0 is below this board's minimum version 0.3.0" in got["down_announced"]["refused"]
    # announced as 0.3.5 to pass the first look: the signed manifest says 0.2.0 and is refused
    assert "manifest: version '0.2.0', ota_begin said '0.3.5'" in got["down_signed"]["refused"]
    for name in ("down_announced", "down_signed"):
        assert got[name]["ota"]["active"] == "b" and got[name]["ota"]["version"] == "0.3.0"
        assert got[name]["ota"]["confirmed"] is True
    # refused before the download started: the way back (slot a, 0.2.0) is untouched
    assert got["down_announced"]["ota"]["previous"] == "a" and "sqalfw" in got["down_announced"]["files"]["a"]
    # refused once the signed manifest was in: slot a, the download's target, was wiped (with two
    # slots a download overwrites the way back; the image's application stays it)
    assert got["down_signed"]["ota"]["previous"] == "factory" and got["down_signed"]["files"]["a"] is None


def test_a_corrupted_slot_is_not_booted(esp32_run: Any, tmp_path: Path, releases: dict[str, Any]) -> None:
    r2 = releases["0.2.0"].directory
    got = _board(esp32_run, tmp_path, f"""
key({releases["pub"]!r})
push({str(r2)!r})
out("boot", boot_and_confirm())
f = open(FD + "/ota/a/sqalfw/app.mpy", "r+b")
f.seek(100)
f.write(b"X")
f.close()
slots.BOOT["probation"] = False
out("next", boot_and_confirm())
""")
    assert got["boot"]["slot"] == "a"
    nxt = got["next"]
    assert nxt["slot"] == "factory" and nxt["cause"] == "rollback"
    assert nxt["status"]["state"] == "rolled_back"
    assert nxt["status"]["reason"] == "slot a: sqalfw/app.mpy does not match its manifest"


# ---- power cuts ----

RUNS = int(os.environ.get("SQAL_OTA_POWERCUT_RUNS", "100"))


def test_power_cut_at_every_step_ends_on_a_working_slot(esp32_micropython: str, tmp_path: Path,
                                                        releases: dict[str, Any]) -> None:
    base = tmp_path / "base.img"
    ota_powercut.prepare_base(esp32_micropython, base, releases["pub"], releases["0.2.0"].directory, "0.2.0")
    new = releases["0.3.0"].directory
    phases = ota_powercut.calibrate(esp32_micropython, base, tmp_path, new, "0.3.0")
    names = [p[1] for p in phases]
    # every step of an update writes to flash, so every one of them is cut somewhere
    assert "begin" in names and "write manifest.json" in names and "switch" in names
    assert "boot" in names and "confirm" in names
    assert sum(1 for n in names if n.startswith("write sqalfw/")) == len(releases["0.3.0"].files)
    outcomes: Counter[tuple[str, str]] = Counter()
    for step, page in ota_powercut.cut_points(phases, RUNS):
        o = ota_powercut.cut_run(esp32_micropython, base, tmp_path, new, "0.3.0", step, page)
        st = o.final["status"]
        where = f"cut in {o.phase} at page {page}: {o.steps} -> {st}"
        assert o.phase != "none", where  # the cut did happen
        # a working slot: the boot loader checked its files against its manifest and its
        # application imported (step C would have raised otherwise) ...
        assert o.final["boot"]["slot"] in ("a", "b"), where
        # ... old or new, and the board says which
        if o.version == "0.3.0":
            assert st["state"] == "confirmed" and st["slot"] == "b" and st["version"] == "0.3.0", where
        else:
            assert o.version == "0.2.0" and st["slot"] == "a" and st["version"] == "0.2.0", where
            assert st["state"] == "rolled_back" and st["reason"].startswith("probation boot of 0.3.0 ended by"), where
        outcomes[(o.phase.split(" ", 2)[1] if o.phase.startswith("A: write") else o.phase, o.version)] += 1
    print(f"\n{RUNS} power cuts:", dict(outcomes))
    assert sum(outcomes.values()) == RUNS
