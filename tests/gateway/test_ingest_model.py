"""The gateway's compiled copy of the quality model (setup.py, gateway/ingest/quality_c.pxd,
gateway/ingest/model.py): identical results to the pure model, used only when built from the
current quality.py, and reported. With SQAL_REQUIRE_COMPILED_MODEL=1 (the test suite's CI setting)
a missing or stale compiled model fails here instead of quietly grading with the pure one."""

from __future__ import annotations

import random
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from sqalfw import quality as pure

from gateway.ingest import model
from gateway.ingest.grading import Grader
from tests.firmware.quality_cases import REF, block, cross_cases, scene
from tests.gateway.compiled_support import REQUIRED, import_compiled


def compiled_module() -> ModuleType:
    return import_compiled("_quality_c", "model")


def test_the_compiled_model_is_what_runs_when_required() -> None:
    if not REQUIRED:
        impl, why = model.describe()
        pytest.skip(f"SQAL_REQUIRE_COMPILED_MODEL is not 1: running the {impl} model ({why})")
    assert model.describe()[0] == "compiled", model.describe()
    assert model.quality is compiled_module() and model.quality is not pure
    assert not hasattr(model.quality.analyze, "__code__")  # a C function, not Python bytecode


def corpus() -> list[tuple[Any, ...]]:
    """analyze() arguments: the cross-interpreter cases, scenes with bumps, dents, noise, invalid
    zones, both resolutions, float distances, odd spectra, and the degenerate frames."""
    rng = random.Random(5)
    cases: list[tuple[Any, ...]] = [tuple(c) for c in cross_cases()]
    for k in range(1500):
        res = 4 if k % 7 == 0 else 8
        d: list[Any] = scene(rng, res, bump=rng.choice([0, 0, 15, 25, -25]), size=rng.uniform(0.8, 1.2))
        if k % 3 == 0:
            d = [x + rng.randint(-15, 15) for x in d]
        if k % 11 == 0:
            d = [rng.randint(0, 120) for _ in d]
        if k % 17 == 0:
            d = [x + rng.random() for x in d]  # floats: the board never sends them, the API allows them
        st = [5 if rng.random() > 0.08 else rng.choice([0, 4, 9, 255]) for _ in range(res * res)]
        ch: dict[str, Any] = {key: max(0, int(v * rng.uniform(0.5, 1.5))) for key, v in REF.items()}
        if k % 13 == 0:
            ch = {key: rng.choice([0, 5, 65535, rng.randint(0, 70000)]) for key in REF}
        ch["saturated"] = rng.random() < 0.05
        cases.append((d, st, res, ch))
    cases += [(block(), [5] * 64, 8, REF), ([95] * 64, [5] * 64, 8, REF), ([0] * 64, [5] * 64, 8, REF),
              ([95] * 16, [0] * 16, 4, REF), ([4000] * 64, [9] * 64, 8, REF)]
    return cases


def outcome(fn: Callable[..., Any], *args: Any) -> str:
    try:
        return repr(fn(*args))  # repr: floats to the last bit, key order, types (int vs float)
    except Exception as exc:  # noqa: BLE001 -- the error itself is the outcome compared
        return f"{type(exc).__name__}: {exc}"


def test_compiled_and_pure_give_identical_results() -> None:
    c = compiled_module()
    cases = corpus()
    grades = set()
    defects = 0
    for args in cases:
        want = outcome(pure.analyze, *args)
        assert outcome(c.analyze, *args) == want, args
        r = pure.analyze(*args)
        grades.add(r["grade"])
        defects += len(r["tof"]["defects"])
    assert grades == {"A+", "A", "B", "C", "REJECT"} and defects > 500  # the corpus covers the model
    # the typed functions on their own, on random floats (both kinds of defect, many of them)
    rng = random.Random(9)
    for res in (4, 8):
        for _ in range(300):
            n = res * res
            valid = [rng.random() > 0.1 for _ in range(n)]
            h = [max(0.0, rng.gauss(40, 25)) if v else 0.0 for v in valid]
            occ = [x > 3 for x in h]
            args = (h, valid, occ, res, rng.uniform(1, 60), pure.DEFECT_MM[res])
            assert outcome(c._defects, *args) == outcome(pure._defects, *args)
            assert outcome(c._uniformity, h, occ, res, 300 / res, 180 / res) == \
                outcome(pure._uniformity, h, occ, res, 300 / res, 180 / res)
    # bad input: the same errors
    for args in [([95] * 64, [5] * 64, 6, REF), ([95] * 63, [5] * 64, 8, REF), ([95] * 64, [5] * 64, 8, {"F1": 1})]:
        assert outcome(c.analyze, *args) == outcome(pure.analyze, *args)


def test_a_stale_or_missing_build_falls_back_to_the_pure_model(monkeypatch: pytest.MonkeyPatch) -> None:
    c = compiled_module()
    monkeypatch.delenv("SQAL_INGEST_MODEL", raising=False)
    assert model._select()[:2] == (c, "compiled")  # built from the quality.py on disk
    monkeypatch.setattr(c, "_SOURCE_SHA256", "0" * 64)  # as if quality.py changed after the build
    mod, impl, why = model._select()
    assert (mod, impl) == (pure, "pure") and "stale" in why
    monkeypatch.undo()
    monkeypatch.setenv("SQAL_INGEST_MODEL", "pure")
    assert model._select()[:2] == (pure, "pure")


async def test_grading_workers_report_the_model_they_run() -> None:
    g = Grader(1)
    try:
        await g.start()
        assert g.model == model.describe()  # the worker's own answer (it imported the model itself)
    finally:
        await g.close()
