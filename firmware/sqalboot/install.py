# An update on the board: the signed manifest, then each file into the inactive slot, then the
# switch. Driven by the gateway's commands (ota_begin, ota_chunk: sqalfw/commands.py), one chunk at
# a time, so a download survives a reconnect, a reset or a power cut and resumes where the flash
# says it stopped: the offset of a file is its size on flash, and every chunk is appended and
# closed (littlefs commits a file's data at close: a cut loses at most the chunk being written).
#
# ota_dl.json (flash root, atomic like ota.json): {"version", "size" (manifest bytes), "sig" (hex),
# "slot", "probation_s", "state": "downloading" | "failed", "reason", "manifest_ok"}.
#
# Checks, each refusing the update with its reason and installing nothing (the slot is wiped):
# - the manifest's Ed25519 signature, by the release public key provisioned on the board
#   (ota_key.pub, 64 hex chars), over the SHA-256 of manifest.json: a tampered manifest or one
#   signed by another key is refused before any file is downloaded;
# - the manifest says the version ota_begin announced, and it is not below the board's floor
#   (ota.json "floor"): no downgrade below the minimum version;
# - the release was built for this interpreter's .mpy format;
# - every path is a .mpy file of the sqalfw package (no "..", nothing outside the slot);
# - every file's size (a chunk past it is refused) and SHA-256 (checked when the file is complete,
#   and all files again just before the switch).
# The switch is one rename of ota.json (slots.py); the reboot that follows is the probation boot.
import binascii
import hashlib
import json
import os
import sys

from sqalboot import slots

DL = "ota_dl.json"
KEY = "ota_key.pub"
MANIFEST = "manifest.json"
SIG = "manifest.sig"
MAX_MANIFEST = 16384
MAX_FILES = 64


class Refused(ValueError):
    """The update was refused (its reason is the message); nothing was installed."""


def _dl_path(fd):
    return slots.join(fd, DL)


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _size(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return 0


def _rmtree(path):
    try:
        entries = list(os.ilistdir(path))
    except OSError:
        return
    for e in entries:
        p = path + "/" + e[0]
        if e[1] == 0x4000:
            _rmtree(p)
        else:
            os.remove(p)
    os.rmdir(path)


def _mkdirs(path):
    cur = ""
    for part in path.split("/"):
        if not part:
            cur = "/" if not cur else cur
            continue
        cur = cur + part if cur.endswith("/") or not cur else cur + "/" + part
        if not _exists(cur):
            os.mkdir(cur)


def _mpy_version():
    mpy = getattr(sys.implementation, "_mpy", None)
    return None if mpy is None else mpy & 0xFF


def _sha256_file(path):
    h = hashlib.sha256()
    buf = bytearray(1024)
    with open(path, "rb") as f:
        while True:
            k = f.readinto(buf)
            if not k:
                break
            h.update(buf if k == len(buf) else buf[:k])
    return binascii.hexlify(h.digest()).decode()


def public_key(fd):
    try:
        with open(slots.join(fd, KEY)) as f:
            k = binascii.unhexlify(f.read().strip())
    except (OSError, ValueError):
        return None
    return k if len(k) == 32 else None


def _valid_path(p):
    if type(p) is not str or not 8 <= len(p) <= 64 or not p.startswith("sqalfw/") or not p.endswith(".mpy"):
        return False
    for part in p.split("/"):
        if part in ("", ".", ".."):
            return False
    for c in p:
        if not ("a" <= c <= "z" or "0" <= c <= "9" or c in "_./"):
            return False
    return True


class Installer:
    """One board's update state: the download in progress (ota_dl.json) and the slots (ota.json)."""

    def __init__(self, flash_dir, running_version=""):
        self.fd = flash_dir
        self.running_version = running_version
        self.manifest = None  # parsed, once its signature checked (kept for the download's length)
        # in-process copies of ota_dl.json and of the staged files' sizes: the flash is read once
        # per boot, then kept in step by every write made here (a chunk costs one append, not a
        # stat of every file of the release)
        self._dlc = None
        self._sizes = {}
        # set once this boot changed the slot to boot ("update" or "rollback"): the board must
        # reset into it, whatever becomes of the command that did it (docs/ota.md)
        self.reset_owed = None

    # ---- state ----

    def _dl(self):
        if self._dlc is None:
            self._dlc = slots.read_json(_dl_path(self.fd)) or {}
        return self._dlc or None

    def _save_dl(self, dl):
        slots.atomic_write(_dl_path(self.fd), json.dumps(dl))
        self._dlc = dl

    def _size(self, path):
        n = self._sizes.get(path)
        if n is None:
            n = self._sizes[path] = _size(path)
        return n

    def status(self):
        """{"state", "version", "progress", "reason", "slot", ...}: what the gateway shows."""
        st = slots.load(self.fd)
        dl = self._dl()
        out = {"slot": st["active"], "version": st["version"] or self.running_version,
               "confirmed": st["confirmed"], "floor": st["floor"]}
        if dl is not None and dl.get("slot") != st["active"]:
            out["state"] = dl.get("state", "downloading")
            out["target"] = dl.get("version")
            if dl.get("reason"):
                out["reason"] = dl["reason"]
            if out["state"] == "downloading":
                path, have, total, done = self._position(dl)
                out["progress"] = done * 100 // total if total else 0
                if path is None:
                    # every file is here, the check and the switch are to come (ota_begin again)
                    out["state"] = "verifying"
                else:
                    out["path"] = path
                    out["have"] = have
            return out
        if not st["confirmed"]:
            out["state"] = "pending"
            return out
        last = st.get("last")
        if isinstance(last, dict) and last.get("event") in ("confirmed", "rolled_back", "failed"):
            out["state"] = last["event"]
            out["target"] = last.get("version")
            if last.get("reason"):
                out["reason"] = last["reason"]
        else:
            out["state"] = "idle"
        return out

    # ---- the download ----

    def begin(self, version, size, sig_hex, probation_s=None):
        """Start (or resume, when the same release is already downloading) an update. Returns the
        status; raises Refused with the reason when the update cannot even start."""
        if public_key(self.fd) is None:
            raise Refused("no release key on this board (%s): updates are refused" % KEY)
        if not 1 <= size <= MAX_MANIFEST:
            raise Refused("manifest size %d out of range 1..%d" % (size, MAX_MANIFEST))
        try:
            sig = binascii.unhexlify(sig_hex)
        except ValueError:
            sig = b""
        if len(sig) != 64:
            raise Refused("signature: expected 128 hex chars")
        st = slots.load(self.fd)
        if slots.version_tuple(version) < slots.version_tuple(st["floor"]):
            raise Refused("downgrade: %s is below this board's minimum version %s" % (version, st["floor"]))
        if not st["confirmed"]:
            raise Refused("an update is pending confirmation (slot %s): wait for it" % st["active"])
        if version == (st["version"] or self.running_version):
            raise Refused("version %s is the one running" % version)
        dl = self._dl()
        if dl is not None and dl.get("slot") == st["active"]:
            dl = None  # the switch was made (a cut came before ota_dl.json was removed)
        if (dl is not None and dl.get("state") == "downloading" and dl.get("version") == version
                and dl.get("sig") == sig_hex and dl.get("size") == size):
            return self._advance(dl)  # resume
        slot = "b" if st["active"] == "a" else "a"
        if st["previous"] == slot:
            # the slot we go back to is about to be overwritten: back is the image from now on
            st["previous"] = slots.FACTORY
            st["previous_version"] = ""
            slots.save(self.fd, st)
        d = slots.slot_dir(self.fd, slot)
        _rmtree(d)
        _mkdirs(d)
        self._sizes = {}
        dl = {"version": version, "size": size, "sig": sig_hex, "slot": slot, "state": "downloading",
              "manifest_ok": False, "probation_s": probation_s or slots.PROBATION_S}
        self._save_dl(dl)
        self.manifest = None
        return self.status()

    def _slot(self, dl):
        return slots.slot_dir(self.fd, dl["slot"])

    def _load_manifest(self, dl):
        if self.manifest is None and dl.get("manifest_ok"):
            self.manifest = slots.read_json(self._slot(dl) + "/" + MANIFEST)
        return self.manifest

    def _files(self, dl):
        """The verified manifest's files. A manifest checked once and unreadable now (the flash
        lost it) fails the download: an empty list would look like a complete one."""
        m = self._load_manifest(dl)
        if m is None:
            self._fail(dl, "manifest: unreadable on flash after its check")
            return []
        return m["files"]

    def _position(self, dl):
        """(path expected next, its size on flash, total bytes, bytes done)."""
        d = self._slot(dl)
        have = self._size(d + "/" + MANIFEST)
        if not dl.get("manifest_ok"):
            return MANIFEST, have, dl["size"], have
        total = done = 0
        nxt = None
        for e in self._files(dl):
            n = self._size(d + "/" + e["path"])
            total += e["size"]
            done += n if n < e["size"] else e["size"]
            if nxt is None and n < e["size"]:
                nxt = (e["path"], n)
        if nxt is None:
            return None, 0, total, done
        return nxt[0], nxt[1], total, done

    def chunk(self, path, off, data):
        """Append `data` at `off` of `path` when that is where the download stands (a chunk at any
        other offset is ignored: the answer's path and have say where to resume). Returns the
        status; a chunk that completed the update switched the slot and set `reset_owed` (the
        board must reboot into it)."""
        dl = self._dl()
        if dl is None or dl.get("state") != "downloading":
            raise Refused("no download in progress (ota_begin first)")
        want, have, _, _ = self._position(dl)
        if path != want or off != have:
            return self.status()
        d = self._slot(dl)
        limit = dl["size"] if want == MANIFEST else self._file_size(dl, want)
        if have + len(data) > limit:
            self._fail(dl, "%s: more than its %d bytes" % (want, limit))
        target = d + "/" + want
        if want != MANIFEST:
            _mkdirs(target[:target.rfind("/")])
        self._sizes.pop(target, None)  # re-read from flash after the write, whatever happens
        try:
            with open(target, "ab") as f:
                f.write(data)
        except OSError as e:
            self._fail(dl, "%s: flash write failed (%r)" % (want, e))
        if have + len(data) == limit:
            if want == MANIFEST:
                self._check_manifest(dl)
            elif _sha256_file(target) != self._file_hash(dl, want):
                self._fail(dl, "%s: SHA-256 does not match the manifest" % want)
        return self._advance(dl)

    def _file_size(self, dl, path):
        for e in self._files(dl):
            if e["path"] == path:
                return e["size"]
        return 0

    def _file_hash(self, dl, path):
        for e in self._files(dl):
            if e["path"] == path:
                return e["sha256"]
        return ""

    def _fail(self, dl, reason):
        """Refuse the update: wipe the slot, keep the reason (ota_status shows it), raise."""
        _rmtree(self._slot(dl))
        self._sizes = {}
        dl["state"] = "failed"
        dl["reason"] = reason[:120]
        self._save_dl(dl)
        self.manifest = None
        raise Refused(reason)

    def _check_manifest(self, dl):
        from sqalboot import ed25519
        d = self._slot(dl)
        with open(d + "/" + MANIFEST, "rb") as f:
            raw = f.read()
        key = public_key(self.fd)
        if key is None or not ed25519.verify(key, hashlib.sha256(raw).digest(), binascii.unhexlify(dl["sig"])):
            self._fail(dl, "manifest: signature does not verify with this board's release key")
        try:
            m = json.loads(raw)
        except ValueError:
            m = None
        if not isinstance(m, dict) or not isinstance(m.get("files"), list):
            self._fail(dl, "manifest: malformed")
        if m.get("version") != dl["version"]:
            self._fail(dl, "manifest: version %r, ota_begin said %r" % (m.get("version"), dl["version"]))
        st = slots.load(self.fd)
        if slots.version_tuple(m["version"]) < slots.version_tuple(st["floor"]):
            self._fail(dl, "downgrade: %s is below this board's minimum version %s" % (m["version"], st["floor"]))
        mpy = _mpy_version()
        if mpy is not None and m.get("mpy") != mpy:
            self._fail(dl, "manifest: built for .mpy version %r, this board runs %d" % (m.get("mpy"), mpy))
        files = m["files"]
        if not 1 <= len(files) <= MAX_FILES:
            self._fail(dl, "manifest: %d files" % len(files))
        seen = {}
        for e in files:
            ok = isinstance(e, dict) and _valid_path(e.get("path")) and type(e.get("size")) is int
            ok = ok and 0 < e["size"] <= 262144 and type(e.get("sha256")) is str and len(e["sha256"]) == 64
            if not ok or e["path"] in seen:
                self._fail(dl, "manifest: bad file entry %r" % (e,))
            seen[e["path"]] = True
        if "sqalfw/__init__.mpy" not in seen or "sqalfw/app.mpy" not in seen:
            self._fail(dl, "manifest: not an sqalfw package")
        with open(d + "/" + SIG, "w") as f:
            f.write(dl["sig"])
        dl["manifest_ok"] = True
        self._save_dl(dl)
        self.manifest = m

    def _advance(self, dl):
        """All files complete: verify them all once more, then switch. Else the status."""
        if not dl.get("manifest_ok"):
            if self._size(self._slot(dl) + "/" + MANIFEST) != dl["size"]:
                return self.status()
            self._check_manifest(dl)  # complete, not yet checked: a cut came in between
        want, _, _, _ = self._position(dl)
        if want is not None:
            return self.status()
        d = self._slot(dl)
        for e in self._files(dl):
            if _sha256_file(d + "/" + e["path"]) != e["sha256"]:
                self._fail(dl, "%s: SHA-256 does not match the manifest" % e["path"])
        self.switch(dl)
        return self.status()

    def switch(self, dl):
        """The one atomic step: ota.json names the new slot, unconfirmed. The download's file goes
        after (a cut in between leaves a stale ota_dl.json, which begin() and status() ignore)."""
        st = slots.load(self.fd)
        st["previous"] = st["active"]
        st["previous_version"] = st["version"]
        st["active"] = dl["slot"]
        st["version"] = dl["version"]
        st["confirmed"] = False
        st["tries"] = 0
        st["probation_s"] = dl.get("probation_s") or slots.PROBATION_S
        st["last"] = None
        slots.save(self.fd, st)
        self.reset_owed = "update"
        try:
            os.remove(_dl_path(self.fd))
        except OSError:
            pass
        self._dlc = {}
        self._sizes = {}
        self.manifest = None

    def rollback(self):
        """The operator's rollback: boot the previous slot (confirmed before) at the next reset.
        Raises Refused when there is nothing to go back to."""
        st = slots.load(self.fd)
        if st["active"] == slots.FACTORY and st["previous"] == slots.FACTORY:
            raise Refused("nothing to roll back to: the board runs the image's application")
        slots.rollback(self.fd, st, "rollback requested by the operator")
        self.reset_owed = "rollback"
        return self.status()
