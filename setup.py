"""Build for triton_grpc_server.

Two build-time steps besides packaging the Python code:

* the gRPC/protobuf modules are generated from ``protos/`` with grpcio-tools
  into ``triton_grpc_server/_proto/`` (never committed), rewritten to use a
  private descriptor pool so they coexist with tritonclient's own copy of the
  ``inference`` package in one process;
* the Cython extensions in ``ext/`` are compiled (``TGS_DEBUG=1`` builds them
  with bounds checks, line tracing and annotation, as asyncpg does).
"""
import os
import re
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
PROTO_DIR = ROOT / "protos"
PROTO_OUT = ROOT / "triton_grpc_server" / "_proto"
PROTO_FILES = ["model_config.proto", "grpc_service.proto"]
DEBUG = os.environ.get("TGS_DEBUG", "") not in ("", "0")


def generate_protos() -> None:
    """Run protoc (from grpcio-tools) and point the output at a private pool."""
    from grpc_tools import protoc
    import grpc_tools

    include = str(Path(grpc_tools.__file__).parent / "_proto")
    PROTO_OUT.mkdir(parents=True, exist_ok=True)
    args = ["protoc", f"-I{PROTO_DIR}", f"-I{include}",
            f"--python_out={PROTO_OUT}", f"--grpc_python_out={PROTO_OUT}",
            *[str(PROTO_DIR / name) for name in PROTO_FILES]]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed on " + ", ".join(PROTO_FILES))
    for generated in PROTO_OUT.glob("*_pb2*.py"):
        text = generated.read_text()
        # Sibling imports become package-relative imports.
        text = re.sub(r"^import (\w+_pb2) as (\w+)$", r"from . import \1 as \2", text, flags=re.M)
        # A pool of our own: tritonclient registers the same file names and
        # symbols in the default pool, and both must import in one process.
        text = text.replace("_descriptor_pool.Default()", "_private_pool.POOL")
        text = text.replace("from google.protobuf import descriptor_pool as _descriptor_pool",
                            "from google.protobuf import descriptor_pool as _descriptor_pool\n"
                            "from . import _pool as _private_pool")
        generated.write_text(text)


def extensions() -> list:
    """The Cython extension modules, one per layer of the hot path."""
    import numpy

    directives = {"language_level": "3", "boundscheck": DEBUG, "wraparound": False,
                  "cdivision": True, "embedsignature": True}
    macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
    if DEBUG:
        directives["linetrace"] = True
        macros.append(("CYTHON_TRACE_NOGIL", "1"))
    compile_args = ["-O0", "-g"] if DEBUG else ["-O3"]
    exts = []
    if (ROOT / "ext" / "wire.pyx").exists():
        exts.append(Extension("triton_grpc_server._ext.wire", ["ext/wire.pyx"],
                              include_dirs=[numpy.get_include()],
                              define_macros=macros, extra_compile_args=compile_args))
    if (ROOT / "ext" / "cuda.pyx").exists():
        sys.path.insert(0, str(ROOT / "ext"))
        from cuda_build import cuda_extension_kwargs  # static cudart from PyPI

        exts.append(Extension("triton_grpc_server._ext.cuda", ["ext/cuda.pyx"],
                              define_macros=macros, extra_compile_args=compile_args,
                              **cuda_extension_kwargs()))
    if not exts:
        return []
    from Cython.Build import cythonize

    return cythonize(exts, compiler_directives=directives, annotate=DEBUG,
                     include_path=[str(ROOT / "ext")])


class BuildPy(build_py):
    def run(self):
        generate_protos()
        super().run()


class BuildExt(build_ext):
    def run(self):
        generate_protos()  # editable installs run build_ext in place, not build_py
        super().run()


setup(
    ext_modules=extensions(),
    cmdclass={"build_py": BuildPy, "build_ext": BuildExt},
)
