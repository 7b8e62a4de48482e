"""sqalfw.spool on the ESP32 profile: the firmware frozen into the 32-bit interpreter, the spool on a
2 MiB littlefs2 image that fills up (ENOSPC), counts every byte programmed and every block erased,
and tears at page boundaries when the process is killed (emulation/mpboard/flash.py).

- the online steady state (append, publish, pop) does not leak segments and stays within
  capacity + one segment on flash, also when the spool is full and drops the oldest;
- flash wear: bytes programmed per reading at most twice the reading (erases are printed);
- a power cut replays fewer than HEAD_EVERY records already popped, and a backlog's pops program
  next to nothing (the head file is not rewritten per pop);
- 200 SIGKILLs at random moments of spool writes on the same image: after each, the spool opens and
  holds every record appended and not popped, in order, plus fewer than HEAD_EVERY popped ones.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqalfw.spool import HEAD_EVERY

from emulation.targets import ESP32_FLASH_BYTES

RECORD = 800  # bytes: an 8x8 JSON sample is 600-900 (docs/firmware-transport.md)

# sum of the sizes of the spool's segment files, as a board would list them
DU = """
def du(path):
    n = 0
    for e in os.ilistdir(path):
        if e[0].endswith(".seg"):
            n += e[3]
    return n
"""


def _mounted(image: Path, code: str) -> str:
    """`code` run after the flash image is mounted at /flash, its block device the global FLASH
    (what the esp32_run fixture does, for the tests that kill the process themselves)."""
    return (f"from emulation.mpboard import flash as _flash\n"
            f"FLASH = _flash.mount({str(image)!r}, {ESP32_FLASH_BYTES})\n" + code)


def _spawn(binary: str, script: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([binary, "-X", "heapsize=110k", str(script), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=script.parent,
                            env=dict(os.environ, MICROPYPATH=".frozen"))


def _run_and_cut(binary: str, script: Path) -> list[str]:
    """Run `script` until it prints CUT, then SIGKILL it: a power cut, nothing closed or flushed."""
    proc = _spawn(binary, script)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("CUT"):
            break
    proc.send_signal(signal.SIGKILL)
    _out, err = proc.communicate(timeout=30)
    assert any(line.startswith("CUT") for line in lines), "".join(lines) + err
    return lines


def _fields(out: str, tag: str) -> list[str]:
    lines = [line.split()[1:] for line in out.splitlines() if line.startswith(tag + " ")]
    assert lines, f"no {tag} line in:\n{out}"
    return lines[-1]


LEAK = DU + """
import os
from sqalfw.spool import Spool
CAP = 16 * 1100  # as the app sizes it: spool_capacity samples of at most 1100 bytes
s = Spool("/flash/spool", capacity=CAP, max_records=16)
rec = bytearray(RECORD)
worst = 0
i = 0
try:
    for i in range(5000):
        rec[0:6] = b"%06d" % i
        s.append(rec)
        worst = max(worst, du("/flash/spool"))
        k, v = s.peek()
        assert v[0:6] == b"%06d" % i, (i, v[0:6])
        s.pop(k)
        worst = max(worst, du("/flash/spool"))
    print("ONLINE", worst, len([n for n in os.listdir("/flash/spool") if n.endswith(".seg")]))
    # an outage far longer than the spool holds: the oldest are dropped, the footprint stays bounded
    for i in range(2000):
        rec[0:6] = b"%06d" % i
        s.append(rec)
        worst = max(worst, du("/flash/spool"))
    print("FULL", worst, len(s), s.dropped)
except OSError as e:
    print("OSERROR", i, repr(e))
print("SEGMENT", s.segment_size, CAP)
"""


def test_online_spool_deletes_what_it_sent_and_stays_within_capacity(esp32_run: Any) -> None:
    out = esp32_run(f"RECORD = {RECORD}\n" + LEAK, flash_size=ESP32_FLASH_BYTES).stdout
    assert "OSERROR" not in out, out  # the leak filled the 2 MiB flash: ENOSPC
    seg, cap = map(int, _fields(out, "SEGMENT"))
    worst, segs = map(int, _fields(out, "ONLINE"))
    # 5,000 readings sent: nothing left but at most the segment being written
    assert segs <= 1, out
    assert worst <= cap + seg, f"spool directory held {worst} bytes > capacity {cap} + one segment {seg}"
    worst, n, dropped = map(int, _fields(out, "FULL"))
    assert n == 16 and dropped == 2000 - 16
    assert worst <= cap + seg, f"full spool: directory held {worst} bytes > capacity {cap} + one segment {seg}"


WEAR = """
from sqalfw.spool import Spool
s = Spool("/flash/spool", capacity=1000 * 1100, max_records=1000)  # the app's default spool
rec = bytearray(RECORD)
N = 500
def one(i):
    rec[0:6] = b"%06d" % i
    s.append(rec)
    k, v = s.peek()
    s.pop(k)
for i in range(20):
    one(i)  # the directory and the head file exist; littlefs' allocator has moved on
p, e = FLASH.programmed, FLASH.erased
for i in range(N):
    one(i)
print("STEADY", (FLASH.programmed - p) / N, (FLASH.erased - e) / N)
# the app samples while the previous reading waits for its PUBACK: one record already waiting
s.append(rec)
p, e = FLASH.programmed, FLASH.erased
for i in range(N):
    one(i)
print("LAGGING", (FLASH.programmed - p) / N, (FLASH.erased - e) / N)
"""


def test_flash_wear_per_reading_is_at_most_twice_its_size(esp32_run: Any) -> None:
    out = esp32_run(f"RECORD = {RECORD}\n" + WEAR, flash_size=ESP32_FLASH_BYTES).stdout
    for tag in ("STEADY", "LAGGING"):
        programmed, erased = map(float, _fields(out, tag))
        print(f"{tag.lower()}: {programmed:.0f} bytes programmed, {erased:.2f} blocks erased per "
              f"{RECORD}-byte reading")
        assert programmed <= 2 * RECORD, (
            f"{tag}: {programmed:.0f} bytes programmed per {RECORD}-byte reading (bar: {2 * RECORD})")


CUT = """
import time
from sqalfw.spool import Spool
for size in SIZES:
    rec = bytearray(size)
    for p in POPS:
        s = Spool("/flash/r%d_%d" % (size, p))
        for i in range(60):
            rec[0:6] = b"%06d" % i
            s.append(rec)
        before = FLASH.programmed
        for i in range(p):
            k, v = s.peek()
            assert v[0:6] == b"%06d" % i
            s.pop(k)
        print("POPPED", size, p, FLASH.programmed - before)
        if p == CLOSED:
            s.close()
print("CUT")
time.sleep(60)  # the test cuts the power here: SIGKILL, no close(), nothing flushed on the way out
"""

REOPEN = """
from sqalfw.spool import Spool
for size in SIZES:
    for p in POPS:
        s = Spool("/flash/r%d_%d" % (size, p))
        print("AFTER", size, p, " ".join(str(int(v[0:6])) for k, v in s.records()))
"""


def test_power_cut_replays_fewer_than_head_every_popped_records(esp32_micropython: str,
                                                                 tmp_path: Path) -> None:
    # 60 records each time, cut after 0..60 pops: ends at, just before and just after segment
    # boundaries and head writes. 800-byte records (JSON samples) fill a 4 KiB segment with 5, so
    # deletions save the head every 5 pops; 200-byte ones (binary samples) put 19 in a segment, so
    # the head file's window shows.
    sizes = [RECORD, 200]
    pops = [0, 1, 4, 5, 6, 14, 15, 16, 17, 19, 20, 23, 31, 32, 33, 37, 47, 59, 60]
    closed = 37  # this one is closed before the cut: a clean stop replays nothing
    image = tmp_path / "flash.img"
    script = tmp_path / "cut.py"
    script.write_text(_mounted(image, f"SIZES = {sizes}\nPOPS = {pops}\nCLOSED = {closed}\n" + CUT))
    lines = _run_and_cut(esp32_micropython, script)
    programmed = sum(int(line.split()[3]) for line in lines if line.startswith("POPPED"))

    script.write_text(_mounted(image, f"SIZES = {sizes}\nPOPS = {pops}\n" + REOPEN))
    reopen = subprocess.run([esp32_micropython, "-X", "heapsize=110k", str(script)], capture_output=True,
                            text=True, cwd=tmp_path, env=dict(os.environ, MICROPYPATH=".frozen"), timeout=60,
                            check=False)
    assert reopen.returncode == 0, reopen.stdout + reopen.stderr
    replayed: dict[tuple[int, int], int] = {}
    for line in reopen.stdout.splitlines():
        if line.startswith("AFTER"):
            parts = line.split()
            size, p, seqs = int(parts[1]), int(parts[2]), [int(x) for x in parts[3:]]
            # nothing unacknowledged lost, in order, no gaps
            assert seqs == list(range(seqs[0] if seqs else p, 60)), (size, p, seqs)
            replayed[size, p] = p - (seqs[0] if seqs else 60)
    assert sorted(replayed) == [(size, p) for size in sorted(sizes) for p in pops]
    for (size, p), n in replayed.items():
        assert 0 <= n <= HEAD_EVERY - 1, f"{n} {size}-byte records popped before the cut came back after {p} pops"
        if p == closed:
            assert n == 0, "close() must save the head"
    for size in sizes:
        print(f"{size}-byte records, replayed after a cut per pops done:",
              {p: n for (sz, p), n in replayed.items() if sz == size})
    # the head file is written every HEAD_EVERY pops, not per pop (the old spool: ~250 bytes a pop)
    per_pop = programmed / (len(sizes) * sum(pops))
    print(f"{per_pop:.1f} bytes programmed per pop of a backlog")
    assert per_pop < 64, f"a pop programs {per_pop:.0f} bytes on average"


EMPTIED = """
import time
from sqalfw.spool import Spool
s = Spool("/flash/spool")
if STEP == 0:
    # a backlog of 200-byte records: the head file is written inside a segment (16th pop), then
    # the spool empties, which deletes every segment and writes no head file
    for i in range(40):
        s.append(b"%06d" % i + b"x" * 194)
    for i in range(40):
        k, v = s.peek()
        s.pop(k)
    print("HEAD", open("/flash/spool/head").read())
else:
    print("REOPENED", len(s), " ".join(str(int(v[0:6])) for k, v in s.records()))
    for i in range(100, 103):
        s.append(b"%06d" % i + b"y" * 194)
print("CUT")
time.sleep(60)
"""


def test_restart_of_an_emptied_spool_never_writes_where_the_head_file_points(esp32_micropython: str,
                                                                            tmp_path: Path) -> None:
    # The head file still names a deleted segment at an offset inside it. New segments must be
    # numbered above it: records written at offset 0 of a segment it names would be skipped.
    image = tmp_path / "flash.img"
    script = tmp_path / "emptied.py"
    outs = []
    for step in range(3):
        script.write_text(_mounted(image, f"STEP = {step}\n" + EMPTIED))
        outs.append("".join(_run_and_cut(esp32_micropython, script)))
    _seg, off, _dropped = map(int, _fields(outs[0], "HEAD"))
    assert off > 0, f"the test needs a head file saved inside a segment: {outs[0]}"
    assert _fields(outs[1], "REOPENED") == ["0"], outs[1]
    assert _fields(outs[2], "REOPENED") == ["3", "100", "101", "102"], outs[2]


WRITER = DU + """
import os, sys
from sqalfw.spool import Spool

def rec(i):
    # mostly binary-sample sizes (~17 to a segment, so drains write the head file inside
    # segments), every 9th one a JSON-sample size
    return b"%d|" % i + b"r" * (850 if i % 9 == 0 else i * 37 % 250 + 20)

nxt, seed = int(sys.argv[1]), int(sys.argv[2])
s = Spool("/flash/spool", capacity=400000)
# the replay, streamed (one record in RAM at a time)
sys.stdout.write("REPLAY")
for k, v in s.records():
    i = int(v.split(b"|")[0])
    if v != rec(i):
        sys.stdout.write(" BAD%d" % i)
    sys.stdout.write(" %d" % i)
    nxt = max(nxt, i + 1)  # a killed append may have landed
sys.stdout.write("\\n")
print("STATE", len(s), s.bytes_used(), s.torn, s.dropped, du("/flash/spool"), s.segment_size)
# online (append, pop, sometimes one waiting), outage (appends up to a backlog), drain (pops)
x = seed or 1
mode = seed % 3
target = 0
ops = 0
while True:
    ops += 1
    if ops % 16 == 0:
        print("D", du("/flash/spool"), s.bytes_used())  # footprint while running
    x = (x * 1103515245 + 12345) & 0x7FFFFFFF
    r = (x >> 8) % 100
    n = len(s)
    if mode == 0 and r < 3:
        mode, target = 1, n + 5 + r * 15
    if mode == 1 and n >= target:
        mode = 2
    if mode == 2 and not n:
        mode = 0
    if mode == 1 or not n or (mode == 0 and n < 2 and r < 30):
        s.append(rec(nxt))
        print("A", nxt)
        nxt += 1
    else:
        k, v = s.peek()
        s.pop(k)
        print("P", int(v.split(b"|")[0]))
"""


@dataclass
class Ledger:
    """What the writer acknowledged: an append or a pop is acknowledged once its line is printed."""
    acked_append: int = -1
    acked_pop: int = -1
    ops: int = 0
    replays: list[int] = field(default_factory=list)
    worst: int = 0  # largest footprint beyond the live records, in bytes

    def read(self, run: int, out: str, seg: int) -> None:
        for line in out.split("\n")[:-1]:  # whole lines: the kill may cut the last one short
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "D":
                du, used = int(parts[1]), int(parts[2])
                self.worst = max(self.worst, du - used)
                assert du <= used + seg, f"run {run}: {du} bytes of segments for {used} bytes of records"
                continue
            self.ops += 1
            if parts[0] == "A":
                self.acked_append = int(parts[1])
            else:
                assert parts[0] == "P", line
                self.acked_pop = int(parts[1])


def _check_restart(run: int, replay: list[int], state: list[int], led: Ledger) -> None:
    count, used, _torn, dropped, du, seg = state
    ctx = (f"run {run}: acked_append={led.acked_append} acked_pop={led.acked_pop} "
           f"replay={replay[:5]}..{replay[-5:]}")
    assert dropped == 0, "this test must not hit the drop policy"
    assert count == len(replay), ctx
    if replay:
        # oldest first, no gaps, no duplicates
        assert replay == list(range(replay[0], replay[0] + len(replay))), ctx
        # every acknowledged append is there; the one being appended at the kill may be too
        assert replay[-1] in (led.acked_append, led.acked_append + 1), ctx
        # popped records come back only from the head's persistence window; the one being popped
        # at the kill may come back too
        assert led.acked_pop + 1 - (HEAD_EVERY - 1) <= replay[0] <= led.acked_pop + 2, ctx
        led.replays.append(led.acked_pop + 1 - replay[0])
        led.acked_pop, led.acked_append = replay[0] - 1, replay[-1]
    else:
        assert led.acked_pop >= led.acked_append - 1, ctx  # all popped, bar the one being popped
        led.acked_pop = led.acked_append
    # consumed segments are gone: live records plus the consumed part of the head segment
    assert du <= used + seg, f"{ctx}: {du} bytes of segments for {used} bytes of records"


def test_sigkill_at_random_moments_on_littlefs_loses_nothing(esp32_micropython: str, tmp_path: Path) -> None:
    rng = random.Random(20250611)
    image = tmp_path / "flash.img"  # kept between the runs, as a board's flash across power cuts
    script = tmp_path / "writer.py"
    script.write_text(_mounted(image, WRITER))
    led = Ledger()
    kills = 200
    started = time.monotonic()
    for run in range(kills + 1):
        proc = _spawn(esp32_micropython, script, str(led.acked_append + 1), str(run + 1))
        assert proc.stdout is not None and proc.stderr is not None
        head: list[str] = []
        for line in proc.stdout:
            head.append(line)
            if line.startswith("STATE"):
                break
        if not head or not head[-1].startswith("STATE"):
            proc.kill()
            _rest, err = proc.communicate(timeout=30)
            pytest.fail(f"run {run}: the spool did not open after the power cut:\n{''.join(head)}{err}")
        replay_line = next(line for line in head if line.startswith("REPLAY"))
        assert "BAD" not in replay_line, f"run {run}: a record came back altered: {replay_line}"
        replay = [int(x) for x in replay_line.split()[1:]]
        state = [int(x) for x in head[-1].split()[1:]]
        _check_restart(run, replay, state, led)
        if run == kills:
            proc.kill()
            proc.communicate(timeout=30)
            break
        time.sleep(rng.uniform(0.002, 0.12))
        proc.send_signal(signal.SIGKILL)
        # the rest through the same buffered reader the lines above came from
        out = proc.stdout.read()
        err = proc.stderr.read()
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL, f"run {run}: the writer died by itself:\n{out[-2000:]}{err}"
        led.read(run, out, state[-1])
    print(f"{kills} kills in {time.monotonic() - started:.0f} s, {led.ops} acknowledged operations, "
          f"popped records replayed per restart: max {max(led.replays)}, total {sum(led.replays)}; "
          f"segments held at most {led.worst} bytes beyond the live records")
    assert led.ops > kills * 20, "the writer did too little between kills to test anything"

