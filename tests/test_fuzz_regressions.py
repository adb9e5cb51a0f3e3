"""Replay every fuzz harness's seeds and kept crash inputs (tests/fuzz/) without atheris.

The fuzzers themselves run under ``make fuzz``; this keeps their properties,
and every input that once broke one, checked on each test run.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parent / "fuzz"
sys.path.insert(0, str(FUZZ))
HARNESSES = sorted(p.stem for p in FUZZ.glob("fuzz_*.py"))


@pytest.mark.parametrize("module_name", HARNESSES)
def test_kept_inputs_hold_the_property(module_name):
    import _harness

    module = importlib.import_module(module_name)
    if module_name == "fuzz_wire_encode":
        pytest.importorskip("atheris")  # builds its responses with FuzzedDataProvider
    cases = list(_harness.inputs_of(module.NAME))
    assert cases, f"no seeds for {module.NAME}: run tests/fuzz/make_seeds.py"
    for case in cases:
        try:
            module.test_one_input(case.read_bytes())
        except Exception as exc:
            raise AssertionError(f"{case.relative_to(FUZZ)}: {exc!r}") from exc
