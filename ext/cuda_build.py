"""Where the CUDA runtime's headers and static library come from at build time.

The extension links ``libcudart_static.a`` from PyPI's ``nvidia-cuda-runtime``
(headers there; the ``crt/`` headers come from ``nvidia-cuda-crt``), so it
builds with no CUDA toolkit installed and imports with no driver present
(``cudaGetDeviceCount`` then returns ``cudaErrorInsufficientDriver``). Both
wheel layouts are understood: CUDA 13 (``nvidia/cu13/{include,lib}``) and
CUDA 12 (``nvidia/cuda_runtime/{include,lib}``). ``TGS_CUDA_HOME`` points at a
toolkit instead, for builds that want one; ``/usr/local/cuda`` is never guessed.
"""
from __future__ import annotations

import os
from pathlib import Path

_STATIC = "libcudart_static.a"


def _nvidia_roots() -> list[Path]:
    """Every directory of the ``nvidia`` namespace package, without importing CUDA."""
    import importlib.util

    spec = importlib.util.find_spec("nvidia")
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(p) for p in spec.submodule_search_locations]


def _candidates() -> list[tuple[Path, Path]]:
    """(include dir, lib dir) pairs, in order of preference."""
    pairs = []
    home = os.environ.get("TGS_CUDA_HOME")
    if home:
        pairs.append((Path(home) / "include", Path(home) / "lib64"))
        pairs.append((Path(home) / "include", Path(home) / "lib"))
    for root in _nvidia_roots():
        pairs.append((root / "cu13" / "include", root / "cu13" / "lib"))
        pairs.append((root / "cuda_runtime" / "include", root / "cuda_runtime" / "lib"))
    return pairs


def find_cudart() -> tuple[Path, Path]:
    """The include directory holding ``cuda_runtime_api.h`` and the path of the static cudart."""
    for include, lib in _candidates():
        if (include / "cuda_runtime_api.h").exists() and (lib / _STATIC).exists():
            return include, lib / _STATIC
    raise RuntimeError(
        "CUDA runtime headers and libcudart_static.a not found: install the build "
        "requirements (pip install 'nvidia-cuda-runtime==13.0.*' 'nvidia-cuda-crt==13.0.*') "
        "or set TGS_CUDA_HOME to a CUDA toolkit")


def cuda_extension_kwargs() -> dict:
    """Keyword arguments for ``setuptools.Extension`` of ``triton_grpc_server._ext.cuda``."""
    include, static_lib = find_cudart()
    include_dirs = [str(include)]
    # crt/host_defines.h and friends: in the same tree for CUDA 13 wheels
    # (nvidia-cuda-crt installs into nvidia/cu13/include/crt), elsewhere for 12.
    if not (include / "crt" / "host_defines.h").exists():
        for root in _nvidia_roots():
            for sub in ("cuda_crt/include", "cuda_nvcc/include"):
                if (root / sub / "crt" / "host_defines.h").exists():
                    include_dirs.append(str(root / sub))
    return {
        "include_dirs": include_dirs,
        "extra_objects": [str(static_lib)],
        "libraries": ["rt", "dl", "pthread"],
    }


if __name__ == "__main__":
    print(cuda_extension_kwargs())
