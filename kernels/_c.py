"""The C backend: the cffi module built from csrc/ at install time, and the pointer helpers.

Every pointer handed to C comes from ``ptr``/``ptr_out``, which re-assert the contract the
argument checks in ``kernels._check`` established (dtype, C order, alignment, writability), so a
wrapper that forgot a check raises instead of passing C a bad pointer.
"""

from __future__ import annotations

import pathlib
import warnings

import numpy as np

try:
    from kernels import _deepprop_c
    from kernels._deepprop_c import ffi, lib
    UNAVAILABLE: str | None = None
except ImportError as exc:  # no compiler at install time, or an in-tree run without a build
    _deepprop_c = ffi = lib = None
    UNAVAILABLE = (f"C extension kernels._deepprop_c not built ({exc}); install with a C compiler "
                   "present: pip install -e .")


def newer_build(loaded: str | pathlib.Path) -> pathlib.Path | None:
    """Another build of the module beside ``loaded`` (the file Python imported) that is newer than it,
    or None. Why: ``pip install -e .`` writes _deepprop_c.abi3.so, running csrc/build.py by hand writes
    _deepprop_c.cpython-311-...so, and Python imports the version-tagged name first whatever their
    ages -- so after a hand build every later install's C code is silently shadowed by the old one."""
    loaded = pathlib.Path(loaded)
    age = loaded.stat().st_mtime
    newer = {p: t for p in loaded.parent.glob("_deepprop_c*.so")
             if p.name != loaded.name and (t := p.stat().st_mtime) > age}
    return max(newer, key=newer.get) if newer else None


if _deepprop_c is not None and (_newer := newer_build(_deepprop_c.__file__)) is not None:
    warnings.warn(f"kernels._deepprop_c was imported from {pathlib.Path(_deepprop_c.__file__).name}, but "
                  f"{_newer.name} beside it is newer; Python imports a version-tagged name first, so the newer "
                  f"build is not the one running: delete {_deepprop_c.__file__}", RuntimeWarning, stacklevel=1)

_CTYPE = {np.dtype(np.float32): "float", np.dtype(np.float64): "double", np.dtype(np.uint8): "uint8_t",
          np.dtype(np.uint32): "uint32_t", np.dtype(np.int64): "int64_t"}
NULL = None if ffi is None else ffi.NULL
# the cffi array type per dtype, looked up once: ffi.from_buffer(type, a) makes a pointer in ~0.25 us,
# where ffi.cast of a.ctypes.data took ~2.4 us (a.ctypes builds a ctypes object on every call)
_ARRAY_TYPE = {} if ffi is None else {dt: ffi.typeof(f"{c}[]") for dt, c in _CTYPE.items()}


class BackendUnavailable(RuntimeError):
    """Raised when a kernel is called on a backend this machine does not have."""


def require() -> None:
    if lib is None:
        raise BackendUnavailable(f"backend 'c' is unavailable: {UNAVAILABLE}")


def suffix(dtype) -> str:
    """'f32' or 'f64': the C function suffix for a dtype."""
    return "f32" if np.dtype(dtype) == np.float32 else "f64"


# (name, dtype) -> the C function, looked up once: the getattr of a built name cost ~0.7 us a call, a
# sizeable part of a small kernel's wrapper (relu on 16 x 1024 float32: ~6 us of Python around ~5 us of C)
_FNS: dict = {}


def fn(name: str, dtype):
    """The C function <name>_<f32|f64>."""
    f = _FNS.get((name, dtype))
    if f is None:
        require()
        f = _FNS[(name, dtype)] = getattr(lib, f"{name}_{suffix(dtype)}")
    return f


def _pointer(a: np.ndarray, writable: bool):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"internal: expected ndarray for a C pointer, got {type(a).__name__}")
    flags = a.flags   # a new object on every access: read once
    if not (flags.c_contiguous and flags.aligned):
        raise ValueError("internal: array for a C pointer must be C-contiguous and aligned")
    if writable and not flags.writeable:
        raise ValueError("internal: array written by C is read-only")
    atype = _ARRAY_TYPE.get(a.dtype)
    if atype is None:
        raise TypeError(f"internal: no C type for dtype {a.dtype}")
    if a.size == 0:  # from_buffer of an empty array is fine, but keep C away from it entirely
        return ffi.NULL
    return ffi.from_buffer(atype, a)   # keeps a alive while the pointer is


def ptr(a: np.ndarray | None):
    """A const pointer to an input array (NULL for None)."""
    return ffi.NULL if a is None else _pointer(a, False)


def ptr_out(a: np.ndarray | None):
    """A pointer to an array C writes (NULL for None)."""
    return ffi.NULL if a is None else _pointer(a, True)


def build_info() -> str | None:
    return None if lib is None else ffi.string(lib.deepprop_build_info()).decode()
