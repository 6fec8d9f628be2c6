"""Build of softxent's native kernels (the metadata lives in pyproject.toml).

The extension is optional: where no C compiler is found the build goes on without it and
softxent runs its NumPy kernels. With SOFTXENT_REQUIRE_NATIVE=1 in the environment (the
Makefile sets it) a failed build is an error instead, so that a development tree never runs
on a stale or missing extension without noticing. Flags: -O3 with `#pragma omp simd` honoured
(-fopenmp-simd, no OpenMP runtime), and -ffp-contract=off so that no multiply-add is
fused differently in a vector loop and in its scalar remainder (a row's result must not
depend on where it falls in a block). Never -ffast-math (NaN and inf are part of the
semantics) and never -march=native (the wheel runs on other CPUs; the kernels are compiled
for several instruction sets and the widest one the CPU has is picked at import).
"""

import os

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

SOURCES = ["src/csrc/core.c"]
HEADERS = [
    "src/csrc/buffers.h",
    "src/csrc/elementwise.h",
    "src/csrc/exp_row.h",
    "src/csrc/isa.h",
    "src/csrc/job.h",
    "src/csrc/mathfuncs.h",
    "src/csrc/rows.h",
    "src/csrc/targets.h",
    "src/csrc/tile_avx512.h",
    "src/csrc/tile_io.h",
]


class BuildExt(build_ext):
    def build_extensions(self) -> None:
        if self.compiler.compiler_type == "msvc":
            flags = ["/O2", "/fp:precise", "/openmp:experimental"]
        else:
            flags = ["-O3", "-std=gnu11", "-fopenmp-simd", "-ffp-contract=off"]
        for ext in self.extensions:
            ext.extra_compile_args = flags
        super().build_extensions()


setup(
    ext_modules=[
        Extension(
            "softxent._core",
            SOURCES,
            depends=HEADERS,
            optional=os.environ.get("SOFTXENT_REQUIRE_NATIVE", "") != "1",
        ),
    ],
    cmdclass={"build_ext": BuildExt},
)
