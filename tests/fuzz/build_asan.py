"""Build the Cython wire codec in place with AddressSanitizer (``make fuzz-asan``).

What ``TGS_DEBUG=1`` builds (bounds checks on, -O0 -g) plus ``-fsanitize=address``;
only the wire extension (the CUDA one needs the CUDA build requirements and is not
fuzzed). ``make fuzz-asan`` keeps the optimized build aside and puts it back after.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

ROOT = Path(__file__).resolve().parent.parent.parent
os.chdir(ROOT)
sanitize = ["-fsanitize=address", "-fno-omit-frame-pointer"]
extension = Extension("triton_grpc_server._ext.wire", ["ext/wire.pyx"],
                      include_dirs=[numpy.get_include()],
                      define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
                      extra_compile_args=["-O0", "-g", *sanitize], extra_link_args=sanitize)
setup(name="triton-grpc-server-wire-asan", script_args=["-q", "build_ext", "--inplace", "--force"],
      ext_modules=cythonize([extension], build_dir="build/asan", quiet=True, compiler_directives={
          "language_level": "3", "boundscheck": True, "wraparound": False, "cdivision": True}))
sys.exit(0)
