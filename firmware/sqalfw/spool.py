# Store-and-forward spool on flash: a bounded FIFO of byte records that survives reset and power
# loss. Format and policy are documented in docs/firmware-transport.md; in short:
#
#   <dir>/NNNNNNNN.seg   append-only segment files of records (8 or more digits):
#                        A5 | len (2 LE) | crc32(len bytes + payload) (4 LE) | payload | 5A
#   <dir>/head           "segment offset dropped": where the oldest unconsumed record was when it
#                        was last saved, replaced atomically (write head.tmp, then os.rename)
#
# A record is valid only if magic, CRC and commit byte all check, so a record torn by a reset
# mid-write is never returned; the segment holding a torn tail is never appended to again (new
# records go to the next segment), so nothing valid ever sits behind garbage.
#
# Where the head really is, after a power cut: the first segment that still exists, at the saved
# offset if the head file names that segment, else at offset 0. Consumed segments are deleted as
# soon as the head leaves them, so a deletion saves the head by itself; within a segment the head
# file is written only every `head_every` pops (and on a drop, on close()), so a power cut replays
# fewer than `head_every` records already popped (the gateway drops duplicates by device, boot, seq).
#
# Flash wear on littlefs: a synced append to a file whose last block is partly used copies that
# part into a freshly erased block (littlefs never programs a committed block twice). So while
# fewer than FRESH records wait (online: the one in flight and the next), each record starts a
# segment of its own and costs about its own size; a backlog (outage) is packed into segments of
# `segment_size` bytes so that it does not take a 4 KiB block per record.
#
# When full, the OLDEST records are dropped (counted in .dropped, saved with the head).
# RAM: one record at a time plus a 64-byte scratch buffer; the spool is never loaded whole.

import os
from binascii import crc32

_MAGIC = 0xA5
_COMMIT = b"\x5a"
OVERHEAD = 8  # bytes of framing per record
MAX_RECORD = 65535
HEAD_EVERY = 16  # pops between two writes of the head file; a power cut replays fewer popped records
FRESH = 4  # an append to a spool holding fewer records than this starts a new segment
SEGMENT_SIZE = 4096  # one littlefs block: a full segment wastes no block space, a pop frees it


class Spool:
    def __init__(self, path, capacity=65536, max_records=None, segment_size=SEGMENT_SIZE,
                 head_every=HEAD_EVERY):
        if capacity < 64 or segment_size < 64:
            raise ValueError("spool: capacity and segment_size must be >= 64 bytes")
        if max_records is not None and max_records < 1:
            raise ValueError("spool: max_records must be >= 1 or None")
        if head_every < 1:
            raise ValueError("spool: head_every must be >= 1")
        self.path = path
        self.capacity = capacity
        self.max_records = max_records
        self.segment_size = segment_size
        self.head_every = head_every
        self.dropped = 0  # records dropped because the spool was full (persisted)
        self.torn = 0  # torn tails found at start-up (this boot)
        self._count = 0
        self._bytes = 0
        self._head = (1, 0)
        self._tail_seg = 1
        self._tail_end = 0
        self._unsaved = 0  # pops since the head was last made durable (file write or deletion)
        self._wf = None
        self._peeked = None  # (key, size) of the last peek, so pop needn't re-read
        # (key, bytes) of a record appended to an empty spool: the usual case (sample, publish,
        # pop) peeks it from RAM instead of reopening the segment. One record at most.
        self._fresh = None
        self._buf = bytearray(64)
        self._hdr = bytearray(7)
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
            self._write_head()  # the counter is kept across reboots, and dropped records stay dropped
        if self._tail_end and (self._count < FRESH or self._tail_end + size > self.segment_size):
            self._roll()
        hdr = self._hdr
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
        if self._advance(size):
            # The head left a segment, which was deleted: the flash now shows where the head is
            # (the first segment, offset 0), whatever the head file says.
            self._unsaved = 0
        else:
            self._unsaved += 1
            if self._unsaved >= self.head_every:
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
        self._close_wf()
        if self._unsaved:
            self._write_head()  # a clean stop replays nothing

    # ---- internals ----

    def _seg_path(self, seg):
        return "%s/%08d.seg" % (self.path, seg)

    def _seg_nums(self):
        # segment numbers in directory order, without building a list (os.ilistdir on the board)
        lister = getattr(os, "ilistdir", None)
        names = lister(self.path) if lister is not None else os.listdir(self.path)
        for e in names:
            name = e if isinstance(e, str) else e[0]
            # 8 digits, more once the numbers pass 10**8 (a segment per reading when online)
            if name.endswith(".seg") and len(name) >= 12:
                try:
                    yield int(name[:-4])
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

    def _close_wf(self):
        if self._wf is not None:
            try:
                self._wf.close()
            except OSError:
                pass
            self._wf = None

    def _roll(self):
        # the next record goes to a new segment
        self._close_wf()
        old = self._tail_seg
        self._tail_seg += 1
        self._tail_end = 0
        if self._count == 0:
            # nothing live in the old tail (consumed, or only a torn record): the head leaves it
            self._remove(old)
            self._head = (self._tail_seg, 0)

    def _remove(self, seg):
        try:
            os.remove(self._seg_path(seg))
        except OSError:
            pass

    def _advance(self, size):
        # Consume the head record and delete every segment the head leaves. True if a segment was
        # deleted and the head now starts the first remaining one (or the spool is empty).
        if not size:
            raise OSError("spool: head record %r unreadable" % (self._head,))
        self._peeked = None
        self._fresh = None
        seg, off = self._head[0], self._head[1] + size
        self._count -= 1
        self._bytes -= size
        if not self._count:
            # Empty: every segment from the head's to the tail's is consumed. A fresh segment
            # number follows, above any the head file can name.
            self._close_wf()
            s = seg
            while s is not None:
                self._remove(s)
                s = self._next_seg(s, self._tail_seg) if s < self._tail_seg else None
            self._tail_seg += 1
            self._tail_end = 0
            self._head = (self._tail_seg, 0)
            return True
        left = False
        while seg != self._tail_seg:
            if self._rec_size(seg, off):
                break
            self._remove(seg)
            left = True
            nxt = self._next_seg(seg, self._tail_seg)
            seg, off = (nxt if nxt is not None else self._tail_seg), 0
        self._head = (seg, off)
        return left

    def _write_head(self):
        tmp = self.path + "/head.tmp"
        with open(tmp, "w") as f:
            f.write("%d %d %d\n" % (self._head[0], self._head[1], self.dropped))
        os.rename(tmp, self.path + "/head")
        self._unsaved = 0

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
        saved = self._read_head()
        hseg = saved[0] if saved is not None else 0
        # Segments before the saved head are consumed; their deletion was cut short.
        first = self._next_seg(-1)
        while first is not None and first < hseg:
            self._remove(first)
            first = self._next_seg(first)
        if first is None:
            self._empty_after(hseg)
            return
        head = None
        count = used = end = fsize = 0
        last = s = first
        off = saved[1] if saved is not None and saved[0] == first else 0
        while s is not None:
            with open(self._seg_path(s), "rb") as f:
                while True:
                    size = self._check(f, off)
                    if not size:
                        break
                    if head is None:
                        head = (s, off)
                    off += size
                    count += 1
                    used += size
                f.seek(0, 2)
                fsize = f.tell()
            end = off
            last = s
            s = self._next_seg(s)
            off = 0
        if end < fsize:
            self.torn += 1
        if head is None:
            # nothing valid left (all consumed, or only a torn record): no segment is kept
            s = first
            while s is not None:
                self._remove(s)
                s = self._next_seg(s)
            self._empty_after(last if last > hseg else hseg)
            return
        self._count, self._bytes = count, used
        self._head = head
        self._tail_seg, self._tail_end = last, end
        if end != fsize:
            self._tail_seg, self._tail_end = last + 1, 0  # never append behind garbage
        s = first
        while s is not None and s < head[0]:
            self._remove(s)  # nothing valid left in it
            s = self._next_seg(s)

    def _empty_after(self, seg):
        # an empty spool whose next segment is numbered above `seg` (and so above the saved head)
        self._count = self._bytes = 0
        self._tail_seg, self._tail_end = seg + 1, 0
        self._head = (seg + 1, 0)
