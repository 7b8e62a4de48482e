"""The bare-metal tier: the firmware's sampling path on MicroPython's qemu port (an emulated
Cortex-M3, and a 32-bit RISC-V) against the same lot on the unix port (docs/qemu.md).

The comparison tests need the images (skipped with the reason when the source, a cross toolchain
or QEMU is missing; failed instead with SQAL_REQUIRE_QEMU=1). The tests of the comparison itself
need only the unix port: a changed grade, reading or payload on one side must fail it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from sqalfw import codec

from emulation.qemu import build, compare
from emulation.qemu.repl import QemuRepl, ReplTimeout, TargetError
from tests.fixtures.qemu import HEAP_PROPERTY

BOARDS = tuple(build.BOARDS)  # MPS2_AN385 (Cortex-M3), VIRT_RV32
MIN_FREE_AFTER_CYCLE = 30 * 1024  # the firmware's heap bar on the ESP32 profile (test_app_memory_esp32)


# ---- the lot on bare metal against the unix port --------------------------------------------


@pytest.mark.parametrize("profile", compare.PROFILES)
@pytest.mark.parametrize("board", BOARDS)
def test_lot_on_bare_metal_matches_the_unix_port(board: str, profile: str, qemu_image: Callable[[str], Path],
                                                 record_property: Callable[[str, object], None]) -> None:
    v = compare.check(board, profile, compare.SEED, compare.SAMPLES, elf=qemu_image(board))
    report = v.report()
    title = f"{board} {profile}: {compare.SAMPLES} samples in {v.target.seconds:.1f} s"
    record_property(HEAP_PROPERTY, "\n".join([title, *v.target.heap_lines()]))
    print(report)
    t = v.target
    assert t.info["platform"] == "qemu" and t.banner.startswith("MicroPython"), report
    assert int(t.info["samples"]) == compare.SAMPLES == len(t.payloads) == len(v.reference.payloads), report
    assert v.lot.ok, report
    assert v.regraded.ok, report
    # the sampling path ran in the ESP32's heap with room to spare, and its figures were printed
    assert set(t.heap) == {"boot", "import", "ready", "min_after_cycle", "end"}, report
    assert t.heap["boot"]["free"] + t.heap["boot"]["alloc"] <= build.HEAP_BYTES, report
    assert t.heap["min_after_cycle"]["free"] >= MIN_FREE_AFTER_CYCLE, report


# ---- the comparison fails when one side differs ----------------------------------------------


@pytest.fixture(scope="module")
def unix_lot() -> list[bytes]:
    """30 samples of a defective lot on the unix port (every grade occurs)."""
    return compare.run_unix("defective", compare.SEED, 30).payloads


def _edit(payload: bytes, change: Callable[[dict], None]) -> bytes:
    s = json.loads(payload)
    change(s)
    return codec.encode_sample(s)  # type: ignore[no-any-return]


def _with(payloads: list[bytes], i: int, change: Callable[[dict], None]) -> list[bytes]:
    out = list(payloads)
    out[i] = _edit(out[i], change)
    return out


def _other_grade(s: dict) -> None:
    s["q"]["grade"] = "A" if s["q"]["grade"] != "A" else "B"


def test_identical_lots_compare_equal(unix_lot: list[bytes]) -> None:
    c = compare.compare(unix_lot, list(unix_lot))
    assert c.ok and c.identical == c.samples == 30 and not c.drift and not c.score_steps, c.summary()


@pytest.mark.parametrize("what, change", [
    ("grade", _other_grade),
    ("tof.dist[5]", lambda s: s["tof"]["dist"].__setitem__(5, s["tof"]["dist"][5] + 2)),
    ("tof.st", lambda s: s["tof"]["st"].__setitem__(0, 4 if s["tof"]["st"][0] != 4 else 5)),
    ("spec.F3", lambda s: s["spec"].__setitem__("F3", s["spec"]["F3"] + 5)),
    ("spec.sat", lambda s: s["spec"].__setitem__("sat", not s["spec"]["sat"])),
    ("q.score", lambda s: s["q"].__setitem__("score", round(abs(s["q"]["score"] - 0.002), 3))),
    ("ts", lambda s: s.__setitem__("ts", s["ts"] + 1)),
    ("seq", lambda s: s.__setitem__("seq", s["seq"] + 1000)),
    ("lot_id", lambda s: s.__setitem__("lot_id", "LOT_20260101_0002")),
])
def test_a_changed_field_on_one_side_fails_the_comparison(unix_lot: list[bytes], what: str,
                                                          change: Callable[[dict], None]) -> None:
    c = compare.compare(unix_lot, _with(unix_lot, 7, change))
    assert not c.ok, c.summary()
    assert any(f": {what}" in f for f in c.failures), c.summary()


def test_what_the_contract_and_the_models_allow(unix_lot: list[bytes]) -> None:
    # q.score one step (its third decimal) apart and one reading 1 apart: allowed, and listed
    def nudge(s: dict) -> None:
        score = s["q"]["score"]
        s["q"]["score"] = round(score + 0.001 if score < 0.9 else score - 0.001, 3)
        s["tof"]["dist"][10] += 1

    target = _with(unix_lot, 3, nudge)
    c = compare.compare(unix_lot, target)
    assert c.ok and len(c.score_steps) == 1 and len(c.drift) == 1 and c.identical == 29, c.summary()
    # regrading compares equal readings: no drift allowed there
    assert not compare.compare(unix_lot, target, drift_allowed=False).ok


def test_drift_beyond_the_models_precision_fails(unix_lot: list[bytes]) -> None:
    def shift_all(s: dict) -> None:
        s["tof"]["dist"] = [d + 1 for d in s["tof"]["dist"]]

    c = compare.compare(unix_lot, _with(_with(unix_lot, 1, shift_all), 2, shift_all))
    assert not c.ok and any("float precision" in f for f in c.failures), c.summary()


def test_a_missing_sample_or_a_broken_payload_fails(unix_lot: list[bytes]) -> None:
    assert not compare.compare(unix_lot, unix_lot[:-1]).ok
    broken = list(unix_lot)
    broken[4] = broken[4].replace(b'"v":1', b'"v":2')
    c = compare.compare(unix_lot, broken)
    assert not c.ok and any("not a contract payload" in f for f in c.failures), c.summary()


def test_regrading_catches_a_grade_the_readings_do_not_give(unix_lot: list[bytes]) -> None:
    # the check that holds without any allowance: the wheel's firmware grades the target's own
    # readings; a target whose quality model went wrong (here: one grade changed) fails it
    assert compare.compare(compare.regrade(unix_lot), unix_lot, drift_allowed=False).ok
    wrong = _with(unix_lot, 9, _other_grade)
    c = compare.compare(compare.regrade(wrong), wrong, drift_allowed=False)
    assert not c.ok and any("grade" in f for f in c.failures), c.summary()


# ---- the raw REPL driver ----------------------------------------------------------------------


def test_repl_runs_code_reports_an_exception_and_a_hang(qemu_image: Callable[[str], Path]) -> None:
    b = build.board(build.DEFAULT_BOARD)
    with QemuRepl(b.qemu_argv(qemu_image(b.name))) as repl:
        assert "Cortex-M3" in repl.banner
        assert repl.exec("import sys\nprint(sys.platform, 6 * 7)", timeout=10) == "qemu 42\n"
        with pytest.raises(TargetError) as err:
            repl.exec("print('before')\nraise ValueError('on the board')", timeout=10)
        assert err.value.output == "before\n" and "ValueError: on the board" in err.value.error
        assert repl.exec("print('still there')", timeout=10) == "still there\n"
        with pytest.raises(ReplTimeout, match="the end of the code's output") as hang:
            repl.exec("print('spinning')\nwhile True:\n    pass", timeout=3)
        assert "spinning" in hang.value.output


# ---- the build ----------------------------------------------------------------------------------


def test_every_frozen_repo_file_is_in_the_build_key() -> None:
    inputs = {p.resolve() for p in build._frozen_inputs()}
    text = build.MANIFEST.read_text()
    files = re.findall(r'"((?:peripherals|qemu)/[a-z_0-9]+\.py|__init__\.py)"', text)
    assert len(files) >= 10
    for f in files:
        assert (build.REPO_ROOT / "emulation" / f).resolve() in inputs, f
    for f in (build.REPO_ROOT / "firmware" / "sqalfw").rglob("*.py"):
        assert f.resolve() in inputs, f


def test_the_heap_is_the_esp32_budget() -> None:
    from emulation.device import ESP32_FREE_HEAP

    assert f"MICROPY_HEAP_SIZE={ESP32_FREE_HEAP}" in build.make_args(build.board("MPS2_AN385"))
    assert build.HEAP_BYTES == ESP32_FREE_HEAP


def test_build_key_follows_the_board_and_the_archive(tmp_path: Path) -> None:
    a, b = tmp_path / "a.tar.xz", tmp_path / "b.tar.xz"
    a.write_bytes(b"one")
    b.write_bytes(b"two")
    m3, rv = build.board("MPS2_AN385"), build.board("VIRT_RV32")
    assert build.build_key(m3, a) == build.build_key(m3, a)
    assert len({build.build_key(m3, a), build.build_key(rv, a), build.build_key(m3, b)}) == 3


def test_missing_parts_are_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SQAL_MICROPYTHON_SRC", str(tmp_path / "nowhere"))
    with pytest.raises(build.QemuUnavailable, match="SQAL_MICROPYTHON_SRC"):
        build.source_archive()
    ghost = build.QemuBoard("GHOST", "none", "no-such-cross-", "gcc-ghost-none-eabi", "qemu-system-ghost",
                            "qemu-system-ghost", (), 0, ())
    with pytest.raises(build.QemuUnavailable) as e:
        build.check_tools(ghost)
    assert "no-such-cross-gcc (gcc-ghost-none-eabi)" in str(e.value)
    assert "qemu-system-ghost" in str(e.value)
