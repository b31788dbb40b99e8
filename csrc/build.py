"""cffi build script: compiles every csrc/*.c into the extension module kernels._deepprop_c.

Out-of-line API mode: setup.py names this file in ``cffi_modules``, so ``pip install`` compiles the
C kernels once, at install time. ``deepprop.h`` is both the C header and the cffi cdef.

Compile flags live here and nowhere else. They are baked into the module and reported by
``deepprop_build_info()`` (``kernels.backend_info()`` and ``deepprop info`` show them).

Environment:
    DEEPPROP_SANITIZE=address   build with AddressSanitizer + UBSan (tox -e sanitize)
    DEEPPROP_CFLAGS="..."       extra flags appended (for experiments; recorded too)
"""

import json
import os
import pathlib
import shlex
import sysconfig

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent

# Why each flag: -O3 for vectorised loops; -std=c11 for restrict and stdint; no -ffast-math, because
# the kernels must propagate NaN/Inf and keep reduction order (the tolerance table assumes IEEE
# arithmetic); -fno-math-errno only lets libm calls be inlined, it changes no result.
# No -march: the module must run on any x86-64; ISA-specific paths are chosen at run time.
# -fopenmp: large calls of the GEMM, clip, dropout and batchnorm kernels run on OMP_NUM_THREADS threads
# (csrc/team.c).
CFLAGS = ["-O3", "-std=c11", "-fno-math-errno", "-fopenmp", "-Wall", "-Wextra", "-Wno-unused-parameter"]
LDFLAGS = ["-lm", "-fopenmp"]

if os.environ.get("DEEPPROP_SANITIZE") == "address":
    CFLAGS += ["-O1", "-g", "-fsanitize=address,undefined", "-fno-omit-frame-pointer",
               "-fno-sanitize-recover=undefined"]
    LDFLAGS += ["-fsanitize=address,undefined"]
CFLAGS += shlex.split(os.environ.get("DEEPPROP_CFLAGS", ""))

SOURCES = sorted(str(p.relative_to(HERE.parent)) for p in HERE.glob("*.c"))


def cdef_text() -> str:
    """deepprop.h without preprocessor lines (cffi's cdef parser takes declarations only)."""
    text = (HERE / "deepprop.h").read_text()
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def build_info() -> str:
    cc = sysconfig.get_config_var("CC") or "cc"
    return f"cc={cc}; cflags={' '.join(CFLAGS)}; ldflags={' '.join(LDFLAGS)}"


ffibuilder = FFI()
ffibuilder.cdef(cdef_text())
ffibuilder.set_source(
    "kernels._deepprop_c",
    '#include "deepprop.h"\n'
    f"const char *deepprop_build_info(void) {{ return {json.dumps(build_info())}; }}\n",
    sources=SOURCES,
    include_dirs=[str(HERE)],
    extra_compile_args=CFLAGS,
    extra_link_args=LDFLAGS,
)

def drop_stale_objects() -> None:
    """setuptools rebuilds an object only when its .c changed, not a header it includes: drop the objects
    (and the generated module source) older than the newest header, so an in-place build recompiles them."""
    newest = max(p.stat().st_mtime for p in HERE.glob("*.h"))
    for obj in [*HERE.glob("*.o"), *HERE.parent.glob("kernels/_deepprop_c.[co]")]:
        if obj.stat().st_mtime < newest:
            obj.unlink()


if __name__ == "__main__":  # python csrc/build.py: build in place, for working on the C code
    os.chdir(HERE.parent)
    drop_stale_objects()
    ffibuilder.compile(tmpdir=".", verbose=True)
