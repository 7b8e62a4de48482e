"""bench/support.py: the stand-in devices' stamped samples are what the codec encodes, and the CPU
meter counts the processes of the bench's trees in their groups."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from sqalfw import codec

from bench.support import ProcessCpu, check_stamp, device_ids, per_reading_ms, sample, stamp, templates


def test_a_stamped_template_is_the_encoded_sample() -> None:
    check_stamp()
    tpl = templates("STAMPX")
    dev = device_ids("STAMPX")[3]
    got = stamp(tpl[3], 17, 1764230000999)
    decoded = codec.decode_sample(got)
    assert (decoded["device_id"], decoded["seq"], decoded["ts"]) == (dev, 17, 1764230000999)
    assert got == codec.encode_sample(dict(sample(dev, seed=3), seq=17, ts=1764230000999))


def test_the_meter_counts_a_busy_child_in_its_group(tmp_path: Path) -> None:
    burn = ("import sys, time\nend = time.process_time() + 0.4\n"
            "while time.process_time() < end: pass\nsys.stdin.read()")
    child = subprocess.Popen([sys.executable, "-c", burn], stdin=subprocess.PIPE)
    try:
        meter = ProcessCpu(tmp_path, labels={child.pid: "busy child"}, me="bench")
        before = meter.snapshot()
        time.sleep(1.0)  # the child burns 0.4 s of CPU, then waits
        used = ProcessCpu.used(before, meter.snapshot())
        assert 0.2 < used["busy child"] < 0.6, used
        assert "bench" in used  # this process, under its own label
        ms = per_reading_ms({"busy child": 0.4, "publishers": 9.0}, 100)
        assert ms == {"busy child": 4.0}  # ms per reading; the devices' side is left out
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(10)
