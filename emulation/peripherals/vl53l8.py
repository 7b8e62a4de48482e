# Register model of the VL53L8CX/CH as the ST ULD driver sees it (reduced; docs/emulation.md
# lists what is faithful and what is simplified). 16-bit register addresses, page select 0x7FFF.
#
#   page 0     identity 0x0000/0x0001, GO2 status 0x06/0x07, reboot (0x0A), MCU reset (0x0B),
#              MCU stop (0x14/0x15)
#   page 1     firmware access (0x06 -> 0x21)
#   pages 9-11 firmware download (0x8000 + 0x8000 + 0x5000 bytes, in order)
#   page 2     UI command area 0x2C00-0x2FFF (status at 0x2C00; a write that reaches 0x2FFF is a
#              command: DCI read/write, NVM read, offset/xtalk, start ranging) and, below 0x2C00,
#              the results stream (data-ready bytes at 0x0000, block-structured frame)
import binascii
import struct

from emulation.peripherals import fwblob

UI_BASE = 0x2C00
UI_END = 0x2FFF
NVM_DATA_SIZE = 492
IDX_METADATA = 0x54B4
IDX_NB_TARGET = 0xDB84
IDX_DISTANCE = 0xDF44
IDX_STATUS = 0xE084
MAX_HZ = {16: 60, 64: 15}   # part limits: 4x4 up to 60 Hz, 8x8 up to 15 Hz
OK_STATUS = b"\x02\x03\x00\x00"
MCU_ERROR = b"\x00\x00\x7f\x00"  # byte2 >= 0x7F: the ULD reports an MCU error


class VL53L8Model:
    addrsize = 16

    def __init__(self, clock_ms, scene=None, revision=0x0C):
        self.clock_ms = clock_ms
        self.scene = scene
        self.revision = revision      # 0x0C VL53L8; 0x02 would be a VL53L5
        self.stuck_data_ready = False  # fault knob: the stream count stops changing
        self.page = 0
        self.p0 = {0x06: 0x01}        # ROM booted at power-up
        self.p1 = {}
        self.ui = bytearray(0x400)
        self.dci = {}
        self.frames = 0               # frames produced (for tests and the fleet)
        self._power_reset()

    # ---- state -------------------------------------------------------------------------------
    def _power_reset(self):
        self.booted = False
        self.fw_access = False
        self.ranging = False
        self.dci = {}
        self._dl_pos = 0
        self._dl_ok = True
        self._crc = 0
        self._trailer = bytearray(4)
        self._ui_low = UI_END + 1
        self._frame = None
        self._k = 0
        self._iv = None               # frame interval (ms) derived from the DCI, see _results
        for i in range(len(self.ui)):
            self.ui[i] = 0

    def _host(self, idx, n):
        d = bytearray(self.dci.get(idx, b""))
        if len(d) < n:
            d.extend(bytes(n - len(d)))
        return fwblob.swap32(d)

    def resolution(self):
        z = self._host(0x5450, 8)
        return z[0] * z[1]

    def frequency_hz(self):
        return self._host(0x5458, 4)[1]

    def frame_interval_ms(self):
        res = self.resolution()
        f = min(max(1, self.frequency_hz()), MAX_HZ.get(res, 15))
        return 1000.0 / f

    # ---- bus interface -----------------------------------------------------------------------
    def read(self, reg, n):
        if reg == 0x7FFF:
            return bytes((self.page,)) + bytes(n - 1)
        if self.page == 0:
            out = bytearray(n)
            for i in range(n):
                r = reg + i
                if r == 0:
                    out[i] = 0xF0
                elif r == 1:
                    out[i] = self.revision
                else:
                    out[i] = self.p0.get(r, 0)
            return out
        if self.page == 1:
            return bytes(self.p1.get(reg + i, 0) for i in range(n))
        if self.page == 2:
            if reg >= UI_BASE:
                o = reg - UI_BASE
                return bytes(self.ui[o:o + n]) + bytes(max(0, o + n - 0x400))
            return self._results(reg, n)
        return bytes(n)

    def write(self, reg, data):
        if reg == 0x7FFF:
            self.page = data[0]
            return
        p = self.page
        if p == 0:
            for i in range(len(data)):
                self._w0(reg + i, data[i])
        elif p == 1:
            for i in range(len(data)):
                self._w1(reg + i, data[i])
        elif p == 2:
            self._w2(reg, data)
        elif p in (9, 10, 11):
            self._download(p, reg, data)

    # ---- page 0 / 1 side effects ---------------------------------------------------------------
    def _w0(self, r, v):
        prev = self.p0.get(r, 0)
        self.p0[r] = v
        if r == 0x0A:
            if v == 0x03:          # SW reboot starts: MCU and its RAM are lost
                self._power_reset()
                self.p0[0x06] = 0x00
            elif v == 0x01:        # reboot released: ROM up again
                self.p0[0x06] = 0x01
        elif r == 0x0B and v == 0x01 and prev == 0x00:
            self._mcu_boot()
        elif r == 0x14 and v == 0x01 and self.p0.get(0x15) == 0x16:
            self.ranging = False    # MCU stop requested: acknowledge with GO2 status
            self.p0[0x06] = 0x80
            self.p0[0x07] = 0x84

    def _w1(self, r, v):
        self.p1[r] = v
        if r == 0x06 and v == 0x01 and self.p0.get(0x06) == 0x01:
            self.fw_access = True  # GO1 accessible: the download pages now listen
            self.p1[0x21] = 0x04

    def _download(self, page, reg, data):
        if not self.fw_access:
            return  # nobody listening: the bytes are lost, boot will never complete
        base = 0
        for pg, size in fwblob.PAGES:
            if pg == page:
                if reg + len(data) > size:
                    self._dl_ok = False
                break
            base += size
        pos = base + reg
        if pos != self._dl_pos:
            self._dl_ok = False  # out of order or gap: the image in RAM is not the blob
        body = fwblob.FW_SIZE - 4
        n = len(data)
        if pos < body:
            k = min(n, body - pos)
            # a view, not a slice: a chip checks the bytes as they arrive, it holds no second copy
            # of a 4 KiB chunk (a copy here cost the emulated board's heap what the board never pays)
            self._crc = binascii.crc32(memoryview(data)[:k], self._crc)
        for i in range(n):
            q = pos + i - body
            if 0 <= q < 4:
                self._trailer[q] = data[i]
        self._dl_pos = max(self._dl_pos, pos + n)

    def _mcu_boot(self):
        if not self.fw_access or self._dl_pos != fwblob.FW_SIZE:
            self.p0[0x06] = 0x00  # no complete image: boot never completes
            return
        good = self._dl_ok and struct.unpack(">I", self._trailer)[0] == (self._crc & 0xFFFFFFFF)
        self.booted = True
        self.p0[0x06] = 0x80
        self.p0[0x07] = 0x01
        cs = fwblob.FW_CHECKSUM if good else (self._crc ^ 0xA5A5A5A5) & 0xFFFFFFFF
        self.ui[0x3FC:0x400] = struct.pack(">I", cs)

    # ---- page 2: UI commands ------------------------------------------------------------------
    def _w2(self, reg, data):
        if reg >= UI_BASE:
            o = reg - UI_BASE
            end = min(0x400, o + len(data))
            self.ui[o:end] = data[:end - o]
            self._ui_low = min(self._ui_low, reg)
            if reg + len(data) - 1 >= UI_END:
                start = self._ui_low
                self._ui_low = UI_END + 1
                if self.booted:
                    self.ui[0:4] = OK_STATUS if self._command(start) else MCU_ERROR

    def _command(self, start):
        total = UI_END + 1 - start
        ui = self.ui
        if total == 4 and ui[0x3FC:0x400] == b"\x00\x03\x00\x00":
            return self._start_ranging()
        tail = ui[0x3F8:0x400]
        if tail[0:4] != b"\x00\x00\x00\x0f":
            return False
        op, kind, size = tail[4], tail[5], (tail[6] << 8) | tail[7]
        if kind == 0x02 and total == 12:        # DCI read
            c = ui[0x3F4:0x3F8]
            idx = (c[0] << 8) | c[1]
            n = (c[2] << 4) | (c[3] >> 4)
            if n + 12 > 0x3FC:
                return False
            d = bytearray(self.dci.get(idx, b""))
            d.extend(bytes(max(0, n - len(d))))
            ui[4:8] = struct.pack(">I", (idx << 16) | (n << 4))
            ui[8:8 + n] = d[:n]
            ui[8 + n:16 + n] = bytes(8)
            return True
        if kind == 0x02 and start == 0x2FD8:     # GET_NVM
            ui[4:4 + NVM_DATA_SIZE] = self._nvm()
            return True
        if kind != 0x01 or size != total - 4:   # malformed write: the MCU refuses it
            return False
        if op == 0x05:                          # DCI write: a chain of blocks
            pos = start - UI_BASE
            end = 0x3F8
            while pos < end:
                h = struct.unpack(">I", ui[pos:pos + 4])[0]
                t = h & 0xF
                n = (h >> 4) & 0xFFF
                if 1 <= t < 13:
                    n *= t
                if pos + 4 + n > end:
                    return False
                self.dci[h >> 16] = bytes(ui[pos + 4:pos + 4 + n])
                self._iv = None
                pos += 4 + n
            return True
        return op == 0x03                       # offset / xtalk calibration: accepted as is

    def _nvm(self):
        d = bytearray(NVM_DATA_SIZE)
        for i in range(NVM_DATA_SIZE):
            d[i] = (i * 13 + 5) & 0xFF
        return d

    def _output_size(self):
        res = self.resolution()
        out = self._host(0xD980, 48)
        en = self._host(0xD970, 16)
        size = 0
        blocks = []
        for i in range(12):
            bh = struct.unpack("<I", out[4 * i:4 * i + 4])[0]
            if bh == 0 or not (en[i // 8] >> (i % 8)) & 1:
                continue
            t = bh & 0xF
            n = (bh >> 4) & 0xFFF
            size += (t * n if 1 <= t < 13 else n) + 4
            if i:
                blocks.append(bh)
        return res, size + 24, blocks

    def _start_ranging(self):
        res, size, blocks = self._output_size()
        cfg = self._host(0xD968, 8)
        if res not in MAX_HZ or struct.unpack("<I", cfg[0:4])[0] != size or not blocks:
            return False
        self.dci[0x5440] = bytes(fwblob.swap32(bytearray(8) + struct.pack("<I", size)))
        self._size = size
        self._blocks = blocks
        self._res = res
        self.ranging = True
        self._t0 = self.clock_ms()
        self._k = 0
        self._sc = 255
        self._frame = None
        return True

    # ---- results stream ------------------------------------------------------------------------
    def _results(self, reg, n):
        if not self.ranging:
            return bytes(n)
        iv = self._iv
        if iv is None:  # cached: the host polls data-ready every few ms and the DCI rarely changes
            iv = self._iv = self.frame_interval_ms()
        k = int((self.clock_ms() - self._t0) / iv)
        if k != self._k and not self.stuck_data_ready:
            self._k = k
            self._sc = k % 255
            self._frame = None
        if self._frame is None:
            self._frame = self._build()
        f = self._frame
        return bytes(f[reg:reg + n]) + bytes(max(0, reg + n - len(f)))

    def _build(self):
        size = self._size
        res = self._res
        f = bytearray(size)
        if self._sc == 255:  # nothing measured yet
            f[0] = 255
            return f
        self.frames += 1
        side = 4 if res == 16 else 8
        if self.scene is not None:
            dist, st = self.scene.tof_zone(side)
        else:
            dist, st = [100] * res, [5] * res
        f[0:4] = bytes((self._sc, 0x05, 0x05, 0x10))
        fid = self._k & 0xFFFF
        f[10] = fid & 0xFF        # after the host's word swap: header id at bytes 8..9
        f[11] = fid >> 8
        pos = 16
        for bh in self._blocks:
            t = bh & 0xF
            n = (bh >> 4) & 0xFFF
            m = t * n if 1 <= t < 13 else n
            f[pos:pos + 4] = struct.pack(">I", bh)
            host = bytearray(m)
            idx = bh >> 16
            if idx == IDX_DISTANCE:
                struct.pack_into("<%dh" % res, host, 0, *[int(v) * 4 for v in dist])
            elif idx == IDX_STATUS:
                host[0:res] = bytes(st) if 255 not in st else bytes([x if x != 255 else 0 for x in st])
            elif idx == IDX_NB_TARGET:
                host[0:res] = b"\x01" * res if 255 not in st else bytes([0 if x == 255 else 1 for x in st])
            elif idx == IDX_METADATA and m >= 12:
                host[8] = 31  # silicon temperature, degC
            f[pos + 4:pos + 4 + m] = fwblob.swap32(host)
            pos += 4 + m
        f[size - 2] = fid & 0xFF  # footer id, matched by the host against the header id
        f[size - 1] = fid >> 8
        return f
