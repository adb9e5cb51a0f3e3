"""What every harness shares: paths, the atheris entry point, and replay without atheris.

A harness module defines ``test_one_input(data: bytes)`` (raises only on a real
failure) and calls :func:`main` under ``__main__``. ``python harness.py [libFuzzer
flags]`` fuzzes with atheris, starting from ``seeds/<name>`` and
``regressions/<name>``, writing new inputs under ``build/fuzz/<name>`` and crash
inputs under ``build/fuzz/crashes``. The pytest suite replays both folders
through ``test_one_input`` without atheris (tests/test_fuzz_regressions.py).
"""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
for path in (str(ROOT), str(ROOT / "tests")):
    if path not in sys.path:
        sys.path.insert(0, path)

SEEDS = HERE / "seeds"
REGRESSIONS = HERE / "regressions"
WORK = ROOT / "build" / "fuzz"


def instrumented():
    """Around a harness's imports of the package: atheris instruments those modules (and
    only those) for coverage when the harness runs as the fuzzer; a no-op on replay."""
    import contextlib

    main_file = getattr(sys.modules.get("__main__"), "__file__", "") or ""
    if not Path(main_file).name.startswith("fuzz_"):
        return contextlib.nullcontext()
    import atheris

    return atheris.instrument_imports(include=["triton_grpc_server"])


def inputs_of(name: str):
    """Every kept input of harness ``name``: its seeds, then its regression cases."""
    for folder in (SEEDS / name, REGRESSIONS / name):
        if folder.is_dir():
            yield from sorted(p for p in folder.iterdir() if p.is_file())


def main(name: str, test_one_input) -> None:
    import atheris

    corpus = WORK / name
    corpus.mkdir(parents=True, exist_ok=True)
    (WORK / "crashes").mkdir(parents=True, exist_ok=True)
    folders = [str(f) for f in (SEEDS / name, REGRESSIONS / name) if f.is_dir()]
    argv = [sys.argv[0], f"-artifact_prefix={WORK / 'crashes'}/{name}-", *sys.argv[1:],
            str(corpus), *folders]
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()
