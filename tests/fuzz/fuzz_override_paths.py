"""The ``file:`` override path checks and the config path confinement.

The input (as UTF-8 with replacement) is a ``file:`` parameter's path and a
config field's relative path. Property: each is refused with INVALID_ARGUMENT
(or the over-long-name error that fails the load), or names a path inside the
override / model directory once joined and normalised; nothing else.
"""
from __future__ import annotations

import os

import _harness  # noqa: F401  (paths)

with _harness.instrumented():
    from triton_grpc_server.errors import TritonError
    from triton_grpc_server.repository.control import FILE_PREFIX, override_relative_path
    from triton_grpc_server.repository.paths import confined_path

NAME = "override_paths"
ROOT = "/nonexistent/override-root"


def _inside(path: str) -> bool:
    path = os.path.normpath(path)
    return path != ROOT and os.path.commonpath([ROOT, path]) == ROOT


def test_one_input(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    try:
        relative = override_relative_path(FILE_PREFIX + text)
    except TritonError:
        pass
    else:
        assert "\0" not in relative and _inside(os.path.join(ROOT, relative)), relative
    for base in ("", "1"):
        try:
            path = confined_path(ROOT, text, "default_model_filename", "m", base=base)
        except TritonError:
            continue
        assert _inside(str(path)), path


if __name__ == "__main__":
    _harness.main(NAME, test_one_input)
