# A deterministic synthetic stand-in for ST's VL53L8CX ULD firmware and its tables, for the
# emulation and the tests ONLY. The real blob is the user's to get from ST; it is never committed.
#
# Firmware file (86,016 bytes, exactly the real size): a magic header, pseudo-random filler and a
# big-endian CRC32 of everything before it in the last 4 bytes. The model recomputes that CRC
# while the driver streams the blob, so a truncated, reordered or corrupted upload is caught.
#
# Tables file (<firmware>.tables, 1,788 bytes) holds the three ULD constant buffers the driver
# sends after boot, in the order: GET_NVM command (40), default configuration (972), default
# Xtalk (776). For real hardware, extract them from ST's vl53l8cx_buffers.h into that file.
import binascii
import struct

FW_SIZE = 86016
PAGES = ((9, 0x8000), (10, 0x8000), (11, 0x5000))
NVM_CMD_SIZE = 40
CONFIG_SIZE = 972
XTALK_SIZE = 776
TABLES_SIZE = NVM_CMD_SIZE + CONFIG_SIZE + XTALK_SIZE
# What ULD 2.0 firmware reports at 0x2FFC once booted; the model reports it for a good upload.
FW_CHECKSUM = 0x0C0B6C9E
MAGIC = b"SQAL synthetic VL53L8 ULD stand-in, not ST firmware\x00"


def swap32(buf):
    """Reverse every 4-byte word in place: host (little-endian) <-> the sensor's wire order.

    The driver has its own copy on purpose: the chip side must not borrow the driver's byte-order
    code, or a driver bug would be mirrored here and pass unnoticed."""
    n = len(buf) // 4
    if n:  # one unpack and one pack (a frame's ~80 words), not a loop over bytes
        struct.pack_into(">%dI" % n, buf, 0, *struct.unpack_from("<%dI" % n, buf, 0))
    return buf


def block(idx, host_data):
    """One DCI block in wire order: header (idx, size in bytes, type 0) then the swapped data."""
    data = swap32(bytearray(host_data))
    return struct.pack(">I", (idx << 16) | ((len(data) & 0xFFF) << 4)) + bytes(data)


def footer(op, kind, total):
    # size field = bytes written - 4, as the ULD's own footers do
    n = total - 4
    return bytes((0, 0, 0, 0x0F, op, kind, (n >> 8) & 0xFF, n & 0xFF))


def fw_chunks(chunk=4096, seed=0x51A1):
    """Yield the synthetic firmware in chunks (never all of it in RAM: it also runs on a board)."""
    x = seed
    crc = 0
    pos = 0
    body = FW_SIZE - 4
    while pos < FW_SIZE:
        n = min(chunk, FW_SIZE - pos)
        buf = bytearray(n)
        for i in range(n):
            p = pos + i
            if p < len(MAGIC):
                buf[i] = MAGIC[p]
            elif p < body:
                x = (x * 1103515245 + 12345) & 0x7FFFFFFF
                buf[i] = (x >> 16) & 0xFF
        end = min(n, body - pos) if pos < body else 0
        if end > 0:
            crc = binascii.crc32(buf[:end], crc)
        if pos + n > body:  # the trailer lives in this chunk
            t = struct.pack(">I", crc & 0xFFFFFFFF)
            for i in range(4):
                buf[body - pos + i] = t[i]
        yield buf
        pos += n


def tables():
    """The 1,788-byte tables file content (synthetic; real ones come from ST's ULD)."""
    nvm = bytearray(NVM_CMD_SIZE - 8)
    for i in range(0, len(nvm), 4):  # a list of NVM regions to read (opaque to the driver)
        nvm[i:i + 4] = struct.pack(">I", 0x9E140000 + (i << 12) + 0x40)
    nvm = bytes(nvm) + footer(0x02, 0x02, NVM_CMD_SIZE)

    blocks = [
        block(0x5450, bytes((4, 4, 0, 0, 8, 8, 0, 0))),           # zone config: 4x4 at power-up
        block(0x5458, bytes((0, 1, 0, 0))),                       # ranging frequency 1 Hz
        block(0x545C, struct.pack("<I", 5000) + bytes(16)),       # integration 5 ms (us)
        block(0xAD30, bytes((0, 3, 0, 2, 0, 0, 0, 0))),           # ranging mode: autonomous
        block(0xAD38, bytes((0, 0, 0, 0, 64, 0, 64, 0, 0, 4, 0, 0, 0, 0, 0, 0))),  # DSS
        block(0xAE64, bytes((1, 0, 0, 0))),                       # target order: closest
        block(0xE0C4, bytes(8)),                                  # laser safety: no fault
    ]
    used = sum(len(b) for b in blocks) + 8
    filler = CONFIG_SIZE - used - 4  # one opaque block pads to the real table size
    blocks.append(block(0xB39C, bytes(filler)))
    config = b"".join(blocks) + footer(0x05, 0x01, CONFIG_SIZE)

    xt = bytearray(XTALK_SIZE - 8)
    for i in range(len(xt)):
        xt[i] = (i * 7 + 3) & 0xFF
    xtalk = bytes(xt) + footer(0x03, 0x01, XTALK_SIZE)
    return nvm + config + xtalk


def write_blob(path, seed=0x51A1):
    """Write the synthetic firmware to `path` and its tables to `path + '.tables'`."""
    with open(path, "wb") as f:
        for c in fw_chunks(seed=seed):
            f.write(c)
    with open(path + ".tables", "wb") as f:
        f.write(tables())
    return path
