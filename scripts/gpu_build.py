"""Build the Cython extensions in place without setup.py's proto generation.

Used by ``scripts/gpu_check.sh`` on the GPU host, where grpcio-tools (which
``setup.py build_ext`` needs for the protos) is missing; the generated protos
are carried instead. Builds ``triton_grpc_server._ext.cuda`` (static cudart,
see ``ext/cuda_build.py``) and, when present, ``_ext.wire`` with the same
options as setup.py, so timings include the hot-path codec. Handy during
development too: ``python scripts/gpu_build.py`` (``TGS_DEBUG=1`` as in setup.py).
"""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "ext"))


def build(names) -> None:
    import numpy
    from Cython.Build import cythonize
    from setuptools import Extension, setup

    from cuda_build import cuda_extension_kwargs

    debug = os.environ.get("TGS_DEBUG", "") not in ("", "0")
    directives = {"language_level": "3", "boundscheck": debug, "wraparound": False,
                  "cdivision": True, "embedsignature": True}
    macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
    compile_args = ["-O0", "-g"] if debug else ["-O3"]
    exts = []
    if "cuda" in names:
        exts.append(Extension("triton_grpc_server._ext.cuda", ["ext/cuda.pyx"], define_macros=macros,
                              extra_compile_args=compile_args, **cuda_extension_kwargs()))
    if "wire" in names:
        exts.append(Extension("triton_grpc_server._ext.wire", ["ext/wire.pyx"],
                              include_dirs=[numpy.get_include()], define_macros=macros,
                              extra_compile_args=compile_args))
    os.chdir(ROOT)
    setup(name="triton_grpc_server_ext", script_args=["build_ext", "--inplace", "-q", "-j", "4"],
          ext_modules=cythonize(exts, compiler_directives=directives, quiet=True,
                                include_path=[str(ROOT / "ext")]))


def main() -> None:
    names = [n for n in sys.argv[1:]] or ["cuda", "wire"]
    if "wire" in names and not (ROOT / "ext" / "wire.pyx").exists():
        names.remove("wire")
    build(names)


if __name__ == "__main__":
    main()
