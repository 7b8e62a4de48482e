# Store-and-forward spool on flash: a bounded FIFO of byte records that survives reset and power
# loss. Format and policy are documented in docs/firmware-transport.md; in short:
#
#   <dir>/NNNNNNNN.seg   append-only segment files of records:
#                        A5 | len (2 LE) | crc32(len bytes + payload) (4 LE) | payload | 5A
#   <dir>/head           "segment offset dropped": the oldest unconsumed record, replaced
#                        atomically (write head.tmp, then os.rename over head)
#
# A record is valid only if magic, CRC and commit byte all check, so a record torn by a reset
# mid-write is never returned; the segment holding a torn tail is never appended to again (new
# records go to the next segment), so nothing valid ever sits behind garbage.
# Consumed segments are deleted. When full, the OLDEST records are dropped (counted in .dropped).
# RAM: one record at a time plus a 64-byte scratch buffer; the spool is never loaded whole.

import os
from binascii import crc32

_MAGIC = 0xA5
_COMMIT = b"\x5a"
OVERHEAD = 8  # bytes of framing per record
MAX_RECORD = 65535


class Spool:
    def __init__(self, path, capacity=65536, max_records=None, segment_size=8192):
        if capacity < 64 or segment_size < 64:
            raise ValueError("spool: capacity and segment_size must be >= 64 bytes")
        if max_records is not None and max_records < 1:
            raise ValueError("spool: max_records must be >= 1 or None")
        self.path = path
        self.capacity = capacity
        self.max_records = max_records
        self.segment_size = segment_size
        self.dropped = 0  # records dropped because the spool was full (persisted)
        self.torn = 0  # torn tails found at start-up (this boot)
        self._count = 0
        self._bytes = 0
        self._head = (1, 0)
        self._tail_seg = 1
        self._tail_end = 0
        self._wf = None
        self._peeked = None  # (key, size) of the last peek, so pop needn't re-read
        # (key, bytes) of a record appended to an empty spool: the usual case (sample, publish,
        # pop) peeks it from RAM instead of reopening the segment. One record at most.
        self._fresh = None
        self._buf = bytearray(64)
        try:
            os.mkdir(path)
        except OSError:
            pass  # exists
        self._load()

    # ---- public API ----

    def __len__(self):
        return self._count

    def bytes_used(self):
        return self._bytes

    def append(self, rec):
        # Durable when it returns (flushed). Drops the oldest records if needed to fit.
        n = len(rec)
        size = n + OVERHEAD
        if n > MAX_RECORD or size > self.capacity:
            raise ValueError("spool: record of %d bytes does not fit (capacity %d, max %d)"
                             % (n, self.capacity, MAX_RECORD))
        dropped = 0
        while self._count and (self._bytes + size > self.capacity
                               or (self.max_records and self._count >= self.max_records)):
            self._advance(self._rec_size(self._head[0], self._head[1]))
            dropped += 1
        if dropped:
            self.dropped += dropped
            self._write_head()
        if self._tail_end and self._tail_end + size > self.segment_size:
            self._roll()
        hdr = bytearray(7)
        hdr[0] = _MAGIC
        hdr[1] = n & 0xFF
        hdr[2] = n >> 8
        c = crc32(rec, crc32(hdr[1:3])) & 0xFFFFFFFF
        hdr[3] = c & 0xFF
        hdr[4] = (c >> 8) & 0xFF
        hdr[5] = (c >> 16) & 0xFF
        hdr[6] = c >> 24
        try:
            if self._wf is None:
                self._wf = open(self._seg_path(self._tail_seg), "ab")
            self._wf.write(hdr)
            self._wf.write(rec)
            self._wf.write(_COMMIT)
            self._wf.flush()
        except OSError as ex:
            # part of the record may be on flash: never append behind it
            self._roll()
            raise OSError("spool: append failed (%r); record not stored" % (ex,))
        if self._count == 0:
            self._head = (self._tail_seg, self._tail_end)
            self._fresh = (self._head, rec if isinstance(rec, bytes) else bytes(rec))
        self._tail_end += size
        self._count += 1
        self._bytes += size

    def peek(self):
        # (key, bytes) of the oldest record, or None when empty
        if not self._count:
            return None
        fresh = self._fresh
        if fresh is not None and fresh[0] == self._head:
            self._peeked = (fresh[0], len(fresh[1]) + OVERHEAD)
            return fresh
        seg, off = self._head
        with open(self._seg_path(seg), "rb") as f:
            f.seek(off + 1)
            h = f.read(2)
            n = h[0] | (h[1] << 8)
            f.seek(off + 7)
            data = f.read(n)
        self._peeked = ((seg, off), n + OVERHEAD)
        return (seg, off), data

    def pop(self, key):
        # remove the oldest record; key must come from peek()
        if not self._count or tuple(key) != self._head:
            raise ValueError("spool: pop(%r) is not the oldest record %r" % (key, self._head))
        if self._peeked is not None and self._peeked[0] == self._head:
            size = self._peeked[1]
        else:
            size = self._rec_size(self._head[0], self._head[1])
        self._advance(size)
        self._write_head()

    def records(self):
        # iterate (key, bytes) oldest first without consuming (diagnostics, tests)
        seg, off = self._head
        left = self._count
        while left and seg is not None:
            with open(self._seg_path(seg), "rb") as f:
                while left:
                    size = self._check(f, off)
                    if not size:
                        break
                    f.seek(off + 7)
                    yield (seg, off), f.read(size - OVERHEAD)
                    off += size
                    left -= 1
            seg, off = self._next_seg(seg, self._tail_seg), 0

    def close(self):
        if self._wf is not None:
            self._wf.close()
            self._wf = None

    # ---- internals ----

    def _seg_path(self, seg):
        return "%s/%08d.seg" % (self.path, seg)

    def _seg_nums(self):
        # segment numbers in directory order, without building a list (os.ilistdir on the board)
        lister = getattr(os, "ilistdir", None)
        names = lister(self.path) if lister is not None else os.listdir(self.path)
        for e in names:
            name = e if isinstance(e, str) else e[0]
            if name.endswith(".seg") and len(name) == 12:
                try:
                    yield int(name[:8])
                except ValueError:
                    pass

    def _exists(self, seg):
        try:
            os.stat(self._seg_path(seg))
            return True
        except OSError:
            return False

    def _next_seg(self, after, limit=None):
        # smallest existing segment > after (usually after + 1), or None; O(1) RAM
        if self._exists(after + 1):
            return after + 1
        best = None
        for n in self._seg_nums():
            if n > after and (best is None or n < best):
                best = n
        if best is not None and limit is not None and best > limit:
            return None
        return best

    def _check(self, f, off):
        # size of the valid record at off, 0 if none (EOF, torn or corrupt)
        f.seek(off)
        h = f.read(7)
        if len(h) < 7 or h[0] != _MAGIC:
            return 0
        n = h[1] | (h[2] << 8)
        c = crc32(h[1:3])
        buf = self._buf
        mv = memoryview(buf)
        left = n
        while left:
            k = left if left < len(buf) else len(buf)
            if f.readinto(mv[:k]) != k:
                return 0
            c = crc32(mv[:k], c)
            left -= k
        if f.read(1) != _COMMIT:
            return 0
        want = h[3] | (h[4] << 8) | (h[5] << 16) | (h[6] << 24)
        return n + OVERHEAD if (c & 0xFFFFFFFF) == want else 0

    def _rec_size(self, seg, off):
        try:
            with open(self._seg_path(seg), "rb") as f:
                return self._check(f, off)
        except OSError:
            return 0

    def _roll(self):
        if self._wf is not None:
            try:
                self._wf.close()
            except OSError:
                pass
            self._wf = None
        self._tail_seg += 1
        self._tail_end = 0
        if self._count == 0:
            self._head = (self._tail_seg, 0)

    def _remove(self, seg):
        try:
            os.remove(self._seg_path(seg))
        except OSError:
            pass

    def _advance(self, size):
        # consume the head record, then skip/delete fully consumed segments
        if not size:
            raise OSError("spool: head record %r unreadable" % (self._head,))
        self._peeked = None
        self._fresh = None
        seg, off = self._head[0], self._head[1] + size
        self._count -= 1
        self._bytes -= size
        while seg != self._tail_seg:
            if self._count and self._rec_size(seg, off):
                break
            self._remove(seg)
            nxt = self._next_seg(seg, self._tail_seg)
            seg, off = (nxt if nxt is not None else self._tail_seg), 0
        if not self._count:
            seg, off = self._tail_seg, self._tail_end
        self._head = (seg, off)

    def _write_head(self):
        tmp = self.path + "/head.tmp"
        with open(tmp, "w") as f:
            f.write("%d %d %d\n" % (self._head[0], self._head[1], self.dropped))
        os.rename(tmp, self.path + "/head")

    def _read_head(self):
        try:
            with open(self.path + "/head") as f:
                parts = f.read().split()
            seg, off, dropped = int(parts[0]), int(parts[1]), int(parts[2])
            if seg < 0 or off < 0 or dropped < 0:
                return None
            self.dropped = dropped
            return seg, off
        except (OSError, ValueError, IndexError):
            return None  # missing or damaged: replay from the oldest segment (duplicates, no loss)

    def _load(self):
        head = self._read_head()
        first = None
        last = None
        for n in self._seg_nums():
            if first is None or n < first:
                first = n
            if last is None or n > last:
                last = n
        if head is not None and first is not None:
            for n in range(first, min(head[0], last + 1)):
                self._remove(n)  # consumed; its deletion was interrupted
            first = head[0] if self._exists(head[0]) else self._next_seg(head[0])
        if first is None:
            seg = head[0] if head is not None else 1
            self._head = (seg, 0)
            self._tail_seg, self._tail_end = seg, 0
            return
        if head is None or head[0] != first:
            head = (first, 0)
        self._head = None
        count = used = end = fsize = 0
        s = first
        while s is not None:
            off = head[1] if s == head[0] else 0
            with open(self._seg_path(s), "rb") as f:
                while True:
                    size = self._check(f, off)
                    if not size:
                        break
                    if self._head is None:
                        self._head = (s, off)
                    off += size
                    count += 1
                    used += size
                f.seek(0, 2)
                fsize = f.tell()
            end = off
            last = s
            s = self._next_seg(s)
        self._count, self._bytes = count, used
        self._tail_seg, self._tail_end = last, end
        if end != fsize:
            if end < fsize:
                self.torn += 1
            self._tail_seg, self._tail_end = last + 1, 0
        if self._head is None:
            self._head = (self._tail_seg, self._tail_end)
        else:
            for n in range(first, self._head[0]):
                self._remove(n)  # nothing valid left in it
