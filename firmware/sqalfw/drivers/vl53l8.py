# VL53L8CX/CH multizone time-of-flight driver: the ST ULD protocol, reduced to what SQAL uses
# (distance + target status per zone, 4x4 or 8x8). Written from the ULD's documented behaviour:
# SW reboot, firmware download into pages 9-11, MCU boot, firmware checksum, NVM offsets, Xtalk,
# default configuration, then DCI reads/writes through the UI command area (0x2C00-0x2FFF).
#
# The firmware (86,016 bytes) and the ULD tables (<firmware>.tables: GET_NVM command 40 B,
# default configuration 972 B, default Xtalk 776 B) are files on flash from ST's ULD package;
# the firmware is streamed in 4 KiB chunks and never held in RAM.
#
# The upload is 86 KB over I2C: 2-3 s at 400 kHz, far more than the event loop may stall. So the
# bring-up is a generator (init_steps) that yields after every chunk and between the phases; the
# app drives it with init_async(), which lets the event loop (and the watchdog's feeding) run at
# every yield. init() runs the same steps without yielding, for tools and tests.
import struct
import time

from sqalfw.drivers import SensorError
from sqalfw.drivers.i2cbus import RetryingI2C

FW_SIZE = 86016
PAGES = ((9, 0x8000), (10, 0x8000), (11, 0x5000))
CHUNK = 4096
NVM_CMD_SIZE = 40
CONFIG_SIZE = 972
XTALK_SIZE = 776
TABLES_SIZE = NVM_CMD_SIZE + CONFIG_SIZE + XTALK_SIZE
NVM_DATA_SIZE = 492
OFFSET_SIZE = 488
FW_CHECKSUM = 0x0C0B6C9E  # reported at 0x2FFC by the ULD 2.0 firmware once booted

UI_STATUS = 0x2C00
UI_START = 0x2C04
UI_END = 0x2FFF

DCI_ZONE_CONFIG = 0x5450
DCI_FREQ_HZ = 0x5458
DCI_DSS_CONFIG = 0xAD38
DCI_SINGLE_RANGE = 0xD964
DCI_OUTPUT_CONFIG = 0xD968
DCI_OUTPUT_ENABLES = 0xD970
DCI_OUTPUT_LIST = 0xD980
DCI_PIPE_CONTROL = 0xDB80
DCI_UI_RANGE_DATA = 0x5440
DCI_LASER_SAFETY = 0xE0C4

# Result blocks the ULD knows (one target per zone); header = idx<<16 | size<<4 | type
OUTPUT_LIST = (0x0000000D, 0x54B400C0, 0x54C00040, 0x54D00104, 0x55D00404, 0xDB840401,
               0xDBC40404, 0xDEC40402, 0xDF440402, 0xE0440401, 0xE0840401, 0xD85808C0)
# enabled: start, metadata, common (mandatory) + nb targets (5), distance (8), status (10)
OUTPUT_ENABLE = 0x7 | (1 << 5) | (1 << 8) | (1 << 10)
IDX_NB_TARGET = 0xDB84
IDX_DISTANCE = 0xDF44
IDX_STATUS = 0xE084
MAX_HZ = {4: 60, 8: 15}

# ULD patches applied to offset/xtalk data before sending them for 4x4 (ST's values)
_OFF_DSS_4X4 = b"\x0f\x04\x04\x00\x08\x10\x10\x07"
_OFF_FOOTER = b"\x00\x00\x00\x0f\x03\x01\x01\xe4"
_XT_RES_4X4 = b"\x0f\x04\x04\x17\x08\x10\x10\x07"
_XT_DSS_4X4 = b"\x00\x78\x00\x08\x00\x00\x00\x08"
_XT_PROFILE_4X4 = b"\xa0\xfc\x01\x00"

# register write sequences of the ULD bring-up: (reg hi, reg lo, value) triplets
_REBOOT_A = b"\x00\x09\x04\x00\x0f\x40\x00\x0a\x03"
_REBOOT_B = b"\x00\x0c\x01\x01\x01\x00\x01\x02\x00\x01\x0a\x01\x40\x02\x01\x40\x02\x00\x01\x0a\x03\x01\x03\x01\x00\x0c\x00\x00\x0f\x43"
_POWER_ON = b"\x01\x01\x00\x01\x02\x00\x01\x0a\x01\x40\x02\x01\x40\x02\x00\x01\x0a\x03\x01\x03\x01\x40\x0f\x00\x02\x1a\x43\x02\x1a\x03\x02\x1a\x01\x02\x1a\x00\x02\x19\x00\x02\x1b\x00"
_MCU_RESET = b"\x01\x14\x00\x01\x15\x00\x01\x16\x42\x01\x17\x00\x00\x0b\x00"


def swap32(buf, n=None):
    """Reverse each 4-byte word in place: the sensor streams 32-bit words big-endian."""
    n = len(buf) if n is None else n
    for i in range(0, n - 3, 4):
        a = buf[i]
        b = buf[i + 1]
        buf[i] = buf[i + 3]
        buf[i + 1] = buf[i + 2]
        buf[i + 2] = b
        buf[i + 3] = a
    return buf


def _div4(v):
    # C integer division (truncates toward zero), as the ULD averages signed grids
    return -((-v) // 4) if v < 0 else v // 4


def _file_size(path):
    import os
    try:
        return os.stat(path)[6]
    except OSError:
        return -1


class VL53L8:
    def __init__(self, i2c, firmware_path, addr=0x29, tables_path=None, timeout_ms=2000,
                 expected_checksum=FW_CHECKSUM):
        self.i2c = i2c if isinstance(i2c, RetryingI2C) else RetryingI2C(i2c)
        self.addr = addr
        self.firmware_path = firmware_path
        self.tables_path = tables_path or firmware_path + ".tables"
        self.timeout_ms = timeout_ms
        self.expected_checksum = expected_checksum
        self.resolution = 0        # zones per side once ranging (4 or 8)
        self.frequency_hz = 0
        self.streamcount = 255
        self.frames = 0
        self._step = "idle"
        self._offset = None
        self._xtalk = None
        self._frame = None
        self._dfmt = None
        self._b1 = bytearray(1)
        self._b4 = bytearray(4)

    # ---- low level -----------------------------------------------------------------------------
    def _err(self, e):
        return SensorError("vl53l8 at 0x%02x: I2C error during %s: %r" % (self.addr, self._step, e))

    def _wr(self, reg, val):
        self._b1[0] = val
        self.i2c.writeto_mem(self.addr, reg, self._b1, addrsize=16)

    def _rd(self, reg):
        self.i2c.readfrom_mem_into(self.addr, reg, self._b1, addrsize=16)
        return self._b1[0]

    def _wrm(self, reg, buf):
        self.i2c.writeto_mem(self.addr, reg, buf, addrsize=16)

    def _rdm(self, reg, n):
        buf = bytearray(n)
        self.i2c.readfrom_mem_into(self.addr, reg, buf, addrsize=16)
        return buf

    def _seq(self, triplets):
        for i in range(0, len(triplets), 3):
            self._wr((triplets[i] << 8) | triplets[i + 1], triplets[i + 2])

    def _page(self, p):
        self._wr(0x7FFF, p)

    def _poll(self, reg, size, pos, mask, expected, what):
        start = time.ticks_ms()
        while True:
            buf = self._rdm(reg, size)
            if (buf[pos] & mask) == expected:
                return buf
            if size >= 4 and buf[2] >= 0x7F:
                raise SensorError("vl53l8: sensor MCU error 0x%02x during %s" % (buf[2], what))
            if time.ticks_diff(time.ticks_ms(), start) > self.timeout_ms:
                raise SensorError("vl53l8: timeout after %d ms during %s" % (self.timeout_ms, what))
            time.sleep_ms(1)

    def _answer(self, what):
        self._poll(UI_STATUS, 4, 1, 0xFF, 0x03, what)

    def _dci_write(self, idx, host, what):
        n = len(host)
        buf = bytearray(n + 12)
        buf[0] = idx >> 8
        buf[1] = idx & 0xFF
        buf[2] = (n & 0xFF0) >> 4
        buf[3] = (n & 0xF) << 4
        buf[4:4 + n] = host
        self._swap_range(buf, 4, n)
        m = n + 8
        buf[n + 4:n + 12] = bytes((0, 0, 0, 0x0F, 0x05, 0x01, m >> 8, m & 0xFF))
        self._wrm(UI_END - (n + 12) + 1, buf)
        self._answer(what)

    @staticmethod
    def _swap_range(buf, off, n):
        for i in range(off, off + n - 3, 4):
            a = buf[i]
            b = buf[i + 1]
            buf[i] = buf[i + 3]
            buf[i + 1] = buf[i + 2]
            buf[i + 2] = b
            buf[i + 3] = a

    def _dci_read(self, idx, n, what):
        cmd = bytes((idx >> 8, idx & 0xFF, (n & 0xFF0) >> 4, (n & 0xF) << 4,
                     0, 0, 0, 0x0F, 0x00, 0x02, 0x00, 0x08))
        self._wrm(UI_END - 11, cmd)
        self._answer(what)
        buf = self._rdm(UI_START, n + 12)
        swap32(buf)
        return buf[4:4 + n]

    # ---- bring-up ------------------------------------------------------------------------------
    def init(self):
        """Identity, SW reboot, firmware upload, boot, checksum, NVM/offsets, xtalk, default config,
        without yielding (it blocks for the whole upload: use init_async() in the app)."""
        for _ in self.init_steps():
            pass

    async def init_async(self):
        """init(), giving the event loop a turn after each upload chunk and each phase."""
        import asyncio
        for _ in self.init_steps():
            await asyncio.sleep_ms(0)

    def init_steps(self):
        """The bring-up as a generator: one step per upload chunk (21) and per phase."""
        self._check_files()
        try:
            self._identity()
            self._reboot()
            yield
            for _ in self._upload():
                yield
            self._boot()
            yield
            self._calibrate()
        except OSError as e:
            raise self._err(e)
        self._step = "ready"

    def _check_files(self):
        # before touching the chip: a wrong blob would leave it half-loaded
        n = _file_size(self.firmware_path)
        if n < 0:
            raise SensorError("vl53l8: firmware file %s not found" % self.firmware_path)
        if n != FW_SIZE:
            raise SensorError("vl53l8: firmware file %s is %d bytes, expected %d (ST ULD blob)"
                              % (self.firmware_path, n, FW_SIZE))
        n = _file_size(self.tables_path)
        if n != TABLES_SIZE:
            raise SensorError("vl53l8: ULD tables file %s is %s, expected %d bytes"
                              % (self.tables_path, "missing" if n < 0 else "%d bytes" % n,
                                 TABLES_SIZE))

    def _identity(self):
        self._step = "identity"
        try:
            self._page(0)
            dev = self._rd(0x0000)
            rev = self._rd(0x0001)
            self._page(2)
        except OSError as e:
            raise SensorError("vl53l8: no answer at I2C address 0x%02x (%r)" % (self.addr, e))
        if dev == 0xF0 and rev == 0x02:
            raise SensorError("vl53l8: found a VL53L5CX (rev 0x02); this driver needs a VL53L8CX/CH")
        if dev != 0xF0 or rev != 0x0C:
            raise SensorError("vl53l8: unexpected identity device 0x%02x revision 0x%02x" % (dev, rev))

    def _reboot(self):
        self._step = "reboot"
        self._page(0)
        self._seq(_REBOOT_A)
        self._rd(0x7FFF)
        self._seq(_REBOOT_B)
        time.sleep_ms(1)
        self._wr(0x000F, 0x40)
        self._wr(0x000A, 0x01)
        for _ in range(10):  # the ULD waits 100 ms here; in short steps
            time.sleep_ms(10)
        self._page(0)
        self._poll(0x06, 1, 0, 0xFF, 0x01, "reboot (ROM boot)")
        self._wr(0x000E, 0x01)
        self._page(2)
        self._step = "firmware access"
        self._page(1)
        self._wr(0x06, 0x01)
        self._poll(0x21, 1, 0, 0xFF, 0x04, "enable firmware access")
        self._page(0)
        self._rd(0x7FFF)
        self._wr(0x0C, 0x01)
        self._step = "power on"
        self._page(0)
        self._seq(_POWER_ON)
        self._page(0)
        self._rd(0x7FFF)
        self._page(1)

    def _upload(self):
        # a generator: yields after each chunk written
        self._step = "firmware upload"
        buf = bytearray(CHUNK)
        mv = memoryview(buf)
        with open(self.firmware_path, "rb") as f:
            for page, size in PAGES:
                self._page(page)
                off = 0
                while off < size:
                    want = min(CHUNK, size - off)
                    got = f.readinto(mv[:want])
                    if got != want:
                        raise SensorError("vl53l8: firmware file %s ended early (page %d +%d)"
                                          % (self.firmware_path, page, off))
                    self._wrm(off, mv[:want])
                    off += want
                    yield
        buf = mv = None
        self._page(1)
        self._wr(0x06, 0x03)   # ask the sensor to check the download
        time.sleep_ms(5)
        self._page(0)
        self._rd(0x7FFF)
        self._wr(0x0C, 0x01)

    def _boot(self):
        self._step = "MCU boot"
        self._page(0)
        self._seq(_MCU_RESET)
        self._rd(0x7FFF)
        self._wr(0x0C, 0x00)
        self._wr(0x0B, 0x01)
        start = time.ticks_ms()
        while True:
            s0 = self._rd(0x06)
            if s0 & 0x80 and self._rd(0x07) & 0x01:
                break
            if s0 & 0x01:
                break  # back in ROM: the checksum below tells why
            if time.ticks_diff(time.ticks_ms(), start) > 500:
                raise SensorError("vl53l8: MCU did not boot the uploaded firmware within 500 ms")
            time.sleep_ms(1)
        self._page(2)
        self._step = "firmware checksum"
        cs = struct.unpack(">I", self._rdm(0x2FFC, 4))[0]
        if cs != self.expected_checksum:
            raise SensorError("vl53l8: firmware checksum 0x%08x, expected 0x%08x (wrong or corrupted"
                              " ULD blob %s)" % (cs, self.expected_checksum, self.firmware_path))

    def _calibrate(self):
        with open(self.tables_path, "rb") as f:
            nvm_cmd = f.read(NVM_CMD_SIZE)
            config = f.read(CONFIG_SIZE)
            self._xtalk = bytearray(f.read(XTALK_SIZE))
        self._step = "NVM offsets"
        self._wrm(0x2FD8, nvm_cmd)
        self._poll(UI_STATUS, 4, 0, 0xFF, 0x02, "NVM read")
        self._offset = self._rdm(UI_START, NVM_DATA_SIZE)[:OFFSET_SIZE]
        self._send_offset(16)
        self._step = "xtalk"
        self._send_xtalk(16)
        self._step = "default configuration"
        self._wrm(0x2C34, config)
        config = None
        self._answer("default configuration")
        self._step = "pipe control"
        self._dci_write(DCI_PIPE_CONTROL, bytes((1, 0, 1, 0)), "pipe control")
        self._dci_write(DCI_SINGLE_RANGE, struct.pack("<I", 1), "single range")

    @staticmethod
    def _average_grid(buf, off, fmt, width):
        # 8x8 grid -> 4x4 (mean of each 2x2), the rest zeroed, as the ULD does for 4x4
        vals = [struct.unpack_from(fmt, buf, off + width * i)[0] for i in range(64)]
        for j in range(4):
            for i in range(4):
                b = 2 * i + 16 * j
                vals[i + 4 * j] = _div4(vals[b] + vals[b + 1] + vals[b + 8] + vals[b + 9])
        for i in range(64):
            struct.pack_into(fmt, buf, off + width * i, vals[i] if i < 16 else 0)

    def _send_offset(self, zones):
        if self._offset is None:
            raise SensorError("vl53l8: offset data sent before the calibration read it")
        tmp = bytearray(self._offset)
        if zones == 16:
            tmp[0x10:0x18] = _OFF_DSS_4X4
            swap32(tmp)
            self._average_grid(tmp, 0x3C, "<I", 4)
            self._average_grid(tmp, 0x140, "<h", 2)
            swap32(tmp)
        out = bytearray(OFFSET_SIZE)
        out[0:0x1E0] = tmp[8:8 + 0x1E0]
        out[0x1E0:] = _OFF_FOOTER
        self._wrm(0x2E18, out)
        self._answer("offset data")

    def _send_xtalk(self, zones):
        if self._xtalk is None:
            raise SensorError("vl53l8: Xtalk data sent before the calibration read it")
        tmp = bytearray(self._xtalk)
        if zones == 16:
            tmp[0x08:0x10] = _XT_RES_4X4
            tmp[0x20:0x28] = _XT_DSS_4X4
            swap32(tmp)
            self._average_grid(tmp, 0x34, "<I", 4)
            swap32(tmp)
            tmp[0x134:0x138] = _XT_PROFILE_4X4
            tmp[0x78:0x7C] = b"\x00\x00\x00\x00"
        self._wrm(0x2CF8, tmp)
        self._answer("xtalk data")

    # ---- ranging -------------------------------------------------------------------------------
    def start(self, resolution=8, frequency_hz=10):
        """Set 4x4 or 8x8, a frequency (clamped to the part: 60 Hz 4x4, 15 Hz 8x8), start ranging."""
        if resolution not in MAX_HZ:
            raise SensorError("vl53l8: resolution must be 4 or 8 (zones per side), got %r" % (resolution,))
        if self._offset is None:
            raise SensorError("vl53l8: start() before init()")
        freq = max(1, min(int(frequency_hz), MAX_HZ[resolution]))
        try:
            self._configure(resolution, freq)
            self._start_ranging(resolution)
        except OSError as e:
            raise self._err(e)
        self.resolution = resolution
        self.frequency_hz = freq

    def _configure(self, res, freq):
        self._step = "set resolution"
        dss = self._dci_read(DCI_DSS_CONFIG, 16, "read DSS config")
        dss[4] = dss[6] = 64 if res == 4 else 16
        dss[9] = 4 if res == 4 else 1
        self._dci_write(DCI_DSS_CONFIG, dss, "write DSS config")
        z = self._dci_read(DCI_ZONE_CONFIG, 8, "read zone config")
        z[0] = z[1] = res
        z[4] = z[5] = 8 if res == 4 else 4
        self._dci_write(DCI_ZONE_CONFIG, z, "write zone config")
        self._send_offset(res * res)
        self._send_xtalk(res * res)
        self._step = "set frequency"
        fz = self._dci_read(DCI_FREQ_HZ, 4, "read frequency")
        fz[1] = freq
        self._dci_write(DCI_FREQ_HZ, fz, "write frequency")

    def _start_ranging(self, res):
        self._step = "start ranging"
        zones = res * res
        out = bytearray(48)
        size = 0
        for i in range(len(OUTPUT_LIST)):
            bh = OUTPUT_LIST[i]
            if OUTPUT_ENABLE & (1 << i):
                t = bh & 0xF
                if 1 <= t < 13:
                    n = zones  # one target per zone
                    bh = (bh & 0xFFFF000F) | (n << 4)
                    size += t * n
                else:
                    size += (bh >> 4) & 0xFFF
                size += 4
            struct.pack_into("<I", out, 4 * i, bh)
        size += 24
        self._dci_write(DCI_OUTPUT_LIST, out, "output list")
        self._dci_write(DCI_OUTPUT_CONFIG, struct.pack("<II", size, len(OUTPUT_LIST) + 1), "output config")
        self._dci_write(DCI_OUTPUT_ENABLES, struct.pack("<IIII", OUTPUT_ENABLE, 0, 0, 0xC0000000),
                        "output enables")
        self._page(0)
        self._wr(0x09, 0x05)  # xshut bypass (interrupt mode)
        self._page(2)
        self._wrm(UI_END - 3, b"\x00\x03\x00\x00")
        self._answer("start ranging")
        got = struct.unpack_from("<H", self._dci_read(DCI_UI_RANGE_DATA, 12, "range data size"), 8)[0]
        if got != size:
            raise SensorError("vl53l8: sensor streams %d bytes a frame, driver expects %d" % (got, size))
        if self._dci_read(DCI_LASER_SAFETY, 8, "laser safety")[6]:
            raise SensorError("vl53l8: laser safety fault")
        self._frame = bytearray(size)
        self._dfmt = "<%dh" % zones  # the distance block of a frame (read_frame)
        self.streamcount = 255

    def data_ready(self):
        """Non-blocking: True once a new frame is in the sensor (one 4-byte read)."""
        b = self._b4
        try:
            self.i2c.readfrom_mem_into(self.addr, 0x0000, b, addrsize=16)
        except OSError as e:
            self._step = "data ready"
            raise self._err(e)
        if b[0] != self.streamcount and b[0] != 255 and b[1] == 0x05 and (b[2] & 0x05) == 0x05 \
                and (b[3] & 0x10) == 0x10:
            self.streamcount = b[0]
            return True
        if b[3] & 0x80:
            raise SensorError("vl53l8: sensor reports error status 0x%02x while ranging" % b[2])
        return False

    def read_frame(self):
        """The frame just signalled: (distances_mm, statuses), res*res each, row-major.
        Status 5 and 9 are valid; 255 means no target; anything else is not trustworthy."""
        buf = self._frame
        dfmt = self._dfmt
        if buf is None or dfmt is None:
            raise SensorError("vl53l8: read_frame() before start()")
        try:
            self.i2c.readfrom_mem_into(self.addr, 0x0000, buf, addrsize=16)
        except OSError as e:
            self._step = "read frame"
            raise self._err(e)
        self.streamcount = buf[0]
        swap32(buf)
        n = len(buf)
        zones = self.resolution * self.resolution
        dist = None
        status = None
        nbt = None
        i = 16
        while i < n - 3:
            bh = struct.unpack_from("<I", buf, i)[0]
            t = bh & 0xF
            size = ((bh >> 4) & 0xFFF) * (t if 1 < t < 13 else 1)
            idx = bh >> 16
            if idx == IDX_DISTANCE:
                # one unpack for the block, _div4 inlined (C truncation toward zero): a frame a
                # second per device, 64 zones
                vals = struct.unpack_from(dfmt, buf, i + 4)
                dist = [v >> 2 if v >= 0 else -((-v) >> 2) for v in vals]
            elif idx == IDX_STATUS:
                status = [buf[i + 4 + z] for z in range(zones)]
            elif idx == IDX_NB_TARGET:
                nbt = [buf[i + 4 + z] for z in range(zones)]
            i += 4 + size
        head = (buf[8] << 8) | buf[9]
        foot = (buf[n - 4] << 8) | buf[n - 3]
        if head != foot:
            raise SensorError("vl53l8: corrupted frame (header id %d, footer id %d)" % (head, foot))
        if dist is None or status is None:
            raise SensorError("vl53l8: frame without distance/status blocks")
        if nbt is not None:
            for z in range(zones):
                if nbt[z] == 0:
                    status[z] = 255
        self.frames += 1
        return dist, status

    async def measure(self, timeout_ms=None):
        """Wait (non-blocking, asyncio) for the next frame and return it; SensorError on timeout."""
        import asyncio
        if timeout_ms is None:
            timeout_ms = 3 * 1000 // max(1, self.frequency_hz) + 200
        # poll about 8 times a frame period (12 ms at 10 Hz, 2 ms at 60 Hz), not every 2 ms: each
        # poll is an I2C read and an event-loop wake-up, and a frame can be at most 1/8 period stale
        step = max(2, 1000 // (8 * max(1, self.frequency_hz)))
        start = time.ticks_ms()
        while not self.data_ready():
            if time.ticks_diff(time.ticks_ms(), start) > timeout_ms:
                raise SensorError("vl53l8: no new frame within %d ms (data-ready stuck?)" % timeout_ms)
            await asyncio.sleep_ms(step)
        return self.read_frame()

    def stop(self):
        self._step = "stop ranging"
        try:
            flag = struct.unpack("<I", self._rdm(0x2FFC, 4))[0]
            if flag != 0x4FF:
                self._page(0)
                self._wr(0x15, 0x16)
                self._wr(0x14, 0x01)
                start = time.ticks_ms()
                while not self._rd(0x06) & 0x80:
                    if time.ticks_diff(time.ticks_ms(), start) > self.timeout_ms:
                        raise SensorError("vl53l8: MCU did not stop within %d ms" % self.timeout_ms)
                    time.sleep_ms(2)
            self._page(0)
            if self._rd(0x06) & 0x80:
                s1 = self._rd(0x07)
                if s1 not in (0x84, 0x85):
                    raise SensorError("vl53l8: stop reported GO2 status 0x%02x" % s1)
            self._page(0)
            self._wr(0x14, 0x00)
            self._wr(0x15, 0x00)
            self._wr(0x09, 0x04)
            self._page(2)
        except OSError as e:
            raise self._err(e)
        self._frame = None
