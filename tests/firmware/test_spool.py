"""sqalfw.spool: FIFO order, persistence, drop policy and crash safety.

Behaviour runs on the real MicroPython interpreter; the exhaustive power-loss truncation sweep
runs the same module under CPython (thousands of reopenings would be slow as child processes).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.fixtures.micropython import REPO_ROOT, micropython_binary, micropython_path

sys.path.insert(0, str(REPO_ROOT / "firmware"))
from sqalfw.spool import HEAD_EVERY, OVERHEAD, Spool


def _payload(i: int) -> bytes:
    # varied sizes so records straddle segment boundaries differently
    return b'{"seq":%d,"pad":"%s"}' % (i, b"x" * (i * 7 % 53))


def test_fifo_order_survives_restart_and_deletes_consumed_segments(micropython_run, tmp_path: Path) -> None:
    d = tmp_path / "spool"
    writer = f"""
from sqalfw.spool import Spool
s = Spool({str(d)!r}, capacity=100000, segment_size=256)
for i in range(120):
    s.append(b'{{"seq":%d,"pad":"%s"}}' % (i, b"x" * (i * 7 % 53)))
print(len(s))
"""
    assert micropython_run(writer).stdout.split() == ["120"]
    segs_before = len(list(d.glob("*.seg")))
    assert segs_before > 5  # it did rotate

    reader = f"""
import os
from sqalfw.spool import Spool
s = Spool({str(d)!r}, capacity=100000, segment_size=256)
print(len(s))
for _ in range(100):
    k, v = s.peek()
    s.pop(k)
    print(v.decode())
s.close()  # saves the head: a clean stop replays nothing (a power cut may replay a few, see test_spool_flash)
print("SEGS", len([n for n in os.listdir({str(d)!r}) if n.endswith(".seg")]))
"""
    out = micropython_run(reader).stdout.splitlines()
    assert out[0] == "120"
    assert [json.loads(line)["seq"] for line in out[1:101]] == list(range(100))
    segs_after = int(out[101].split()[1])

    # third process: the 20 unconsumed records are still there, oldest first
    rest = f"""
from sqalfw.spool import Spool
s = Spool({str(d)!r}, capacity=100000, segment_size=256)
print(len(s))
while len(s):
    k, v = s.peek(); s.pop(k); print(v.decode())
print(s.peek())
"""
    out = micropython_run(rest).stdout.splitlines()
    assert out[0] == "20"
    assert [json.loads(line)["seq"] for line in out[1:21]] == list(range(100, 120))
    assert out[21] == "None"
    assert segs_after < segs_before - 2  # consumed segments were deleted, not kept around
    assert len(list(d.glob("*.seg"))) <= 1


def test_full_spool_drops_oldest_and_counts(micropython_run, tmp_path: Path) -> None:
    d = tmp_path / "spool"
    code = f"""
from sqalfw.spool import Spool
s = Spool({str(d)!r}, capacity=1000, max_records=30, segment_size=300)
for i in range(200):
    s.append(b"%04d" % i + b"y" * 20)
    assert s.bytes_used() <= 1000 and len(s) <= 30, (i, s.bytes_used(), len(s))
print(len(s), s.dropped, s.bytes_used())
s.close()
s = Spool({str(d)!r}, capacity=1000, max_records=30, segment_size=300)
print(len(s), s.dropped)
print(" ".join(v[:4].decode() for k, v in s.records()))
try:
    s.append(b"z" * 1000)
except ValueError as e:
    print("ERR", e)
"""
    out = micropython_run(code).stdout.splitlines()
    n, dropped, used = map(int, out[0].split())
    size = 24 + OVERHEAD
    assert n == min(30, 1000 // size) == 30
    assert dropped == 200 - n and used == n * size
    assert out[1].split() == [str(n), str(200 - n)]  # the counter is persisted
    assert out[2].split() == [f"{i:04d}" for i in range(200 - n, 200)]  # newest kept, in order
    assert out[3].startswith("ERR spool: record of 1000 bytes does not fit")


def test_spool_larger_than_heap_uses_constant_ram(micropython_run, tmp_path: Path) -> None:
    # 400 KB of records through a 64 KB heap (incl. compiling the module): peek/pop/append never load the whole spool
    d = tmp_path / "spool"
    code = f"""
import gc
from sqalfw.spool import Spool
s = Spool({str(d)!r}, capacity=1000000, segment_size=16384)
rec = bytearray(400)
for i in range(1000):
    rec[0:4] = b"%04d" % i
    s.append(rec)
s.close()
gc.collect()
s = Spool({str(d)!r}, capacity=1000000, segment_size=16384)
n = 0
while len(s):
    k, v = s.peek()
    assert v[0:4] == b"%04d" % n, (n, v[0:4])
    s.pop(k)
    n += 1
print(n)
"""
    assert micropython_run(code, heap="64k").stdout.split() == ["1000"]


def test_damaged_head_file_replays_without_loss(micropython_run, tmp_path: Path) -> None:
    d = tmp_path / "spool"
    s = Spool(str(d), capacity=10000, segment_size=128)
    for i in range(20):
        s.append(_payload(i))
    for _ in range(5):
        k, _v = s.peek()  # type: ignore[misc]
        s.pop(k)
    s.close()
    (d / "head").write_text("garbage")
    code = f"""
from sqalfw.spool import Spool
s = Spool({str(d)!r}, capacity=10000, segment_size=128)
print(" ".join(v.decode().split(",")[0][7:] for k, v in s.records()))
"""
    seqs = [int(x) for x in micropython_run(code).stdout.split()]
    # duplicates of already-popped records are allowed (the gateway dedupes), loss is not
    assert seqs == sorted(seqs) and seqs[-15:] == list(range(5, 20))


def _records(path: Path) -> list[bytes]:
    s = Spool(str(path), capacity=100000, segment_size=4096)
    try:
        return [v for _k, v in s.records()]
    finally:
        s.close()


def test_power_loss_at_every_byte_of_the_last_record(tmp_path: Path) -> None:
    base = tmp_path / "base"
    s = Spool(str(base), capacity=100000, segment_size=4096)
    for i in range(10):
        s.append(_payload(i))
    s.close()
    seg = max(base.glob("*.seg"))
    full = seg.read_bytes()
    last = _payload(10)
    s = Spool(str(base), capacity=100000, segment_size=4096)
    s.append(last)
    s.close()
    after = max(base.glob("*.seg"))
    assert after == seg, "test needs the last record in the same segment"
    torn_record = bytearray(after.read_bytes()[len(full):])
    assert len(torn_record) == len(last) + OVERHEAD

    expect = [_payload(i) for i in range(10)]
    work = tmp_path / "work"
    cases: list[bytes] = [bytes(torn_record[:cut]) for cut in range(len(torn_record))]
    for pos in range(len(torn_record)):  # a flipped byte anywhere (garbage written by a dying flash)
        bad = bytearray(torn_record)
        bad[pos] ^= 0x5A
        cases.append(bytes(bad))
    for tail in cases:
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(base, work)
        (work / seg.name).write_bytes(full + tail)
        sp = Spool(str(work), capacity=100000, segment_size=4096)
        assert [v for _k, v in sp.records()] == expect, tail
        assert len(sp) == 10 and (sp.torn == 1 if tail else sp.torn == 0)
        sp.append(b"after-crash")
        sp.close()
        assert _records(work) == expect + [b"after-crash"]


CHILD = r"""
import sys
from sqalfw.spool import Spool
path, start, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = Spool(path, capacity=200000, segment_size=700)
# stream the replay (a list of every record would not fit the heap)
i = start
sys.stdout.write("REPLAY")
for k, v in s.records():
    seq = v.split(b"|")[0].decode()
    sys.stdout.write(" " + seq)
    # continue after the newest record (a killed append may or may not have landed)
    i = int(seq) + 1
print()
print("TORN", s.torn, s.dropped)
x = seed or 1
while True:
    x = (x * 1103515245 + 12345) & 0x7FFFFFFF
    # mostly appends, but the depth stays far below capacity: no drop-oldest in this test
    if len(s) and (x % 3 == 0 or len(s) > 300):
        k, v = s.peek()
        s.pop(k)
        print("P", v.split(b"|")[0].decode())
    else:
        s.append(b"%d|" % i + b"r" * (x % 90))
        print("A", i)
        i += 1
"""


def test_sigkill_mid_write_never_loses_or_tears(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    rng = random.Random(20240705)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    # on tmpfs fsync is free, so kills land inside the write calls far more often than on disk
    shm = Path("/dev/shm")
    spool = Path(tempfile.mkdtemp(dir=shm if shm.is_dir() else tmp_path)) / "spool"
    request.addfinalizer(lambda: shutil.rmtree(spool.parent, ignore_errors=True))
    env = dict(os.environ, MICROPYPATH=micropython_path())
    acked_append = -1  # last seq whose append() returned
    acked_pop = -1  # last seq whose pop() returned
    next_seq = 0
    kills = 30
    total_ops = 0
    torn_runs = 0
    for run in range(kills + 1):
        proc = subprocess.Popen(
            [micropython_binary(), "-X", "heapsize=64k", str(script), str(spool), str(next_seq), str(run + 1)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )
        assert proc.stdout is not None
        replay_line = proc.stdout.readline().decode()
        torn_line = proc.stdout.readline().decode()
        if not replay_line.startswith("REPLAY"):
            rest, err = proc.communicate(timeout=10)
            pytest.fail(f"run {run}: child failed at start-up:\n{replay_line}{rest.decode()}{err.decode()}")
        assert torn_line.startswith("TORN")
        replay = [int(x) for x in replay_line.split()[1:]]
        torn_runs += int(torn_line.split()[1])
        assert torn_line.split()[2] == "0", "this test must not hit the drop policy"
        ctx = f"run {run}: acked_append={acked_append} acked_pop={acked_pop} replay={replay[:5]}..{replay[-5:]}"
        # oldest first, no duplicates, no gaps
        assert replay == list(range(replay[0], replay[0] + len(replay))) if replay else True, ctx
        # Popped (acknowledged) records come back only from the head's persistence window: fewer
        # than HEAD_EVERY of them; the one unacknowledged pop may come back too.
        if replay:
            assert acked_pop + 1 - (HEAD_EVERY - 1) <= replay[0] <= acked_pop + 2, ctx
            # every acknowledged append is there; at most one unacknowledged append extra
            assert replay[-1] in (acked_append, acked_append + 1), ctx
        else:
            assert acked_pop >= acked_append - 1, ctx
        if replay:
            acked_pop = replay[0] - 1
            acked_append = replay[-1]
        else:
            acked_pop = acked_append
        if run == kills:
            proc.kill()
            proc.wait()
            break
        time.sleep(rng.uniform(0.005, 0.08))
        proc.send_signal(signal.SIGKILL)
        # Read the rest through the same buffered reader readline() used: communicate() reads the raw
        # fd and would miss the lines readline() already pulled into the buffer.
        out = proc.stdout.read()
        proc.wait(timeout=10)
        assert proc.stderr is not None
        proc.stderr.close()
        for line in out.decode().splitlines():
            parts = line.split()
            if len(parts) != 2:
                continue  # the line being printed when killed
            total_ops += 1
            if parts[0] == "A":
                acked_append = int(parts[1])
            elif parts[0] == "P":
                acked_pop = int(parts[1])
        next_seq = acked_append + 1
    print(f"{kills} kills, {total_ops} acknowledged operations, {torn_runs} torn tails recovered")
    assert total_ops > kills * 5, "the child did too little work between kills to test anything"
