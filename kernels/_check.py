"""Argument checks shared by every backend, so all three refuse the same bad input the same way.

The contract (documented in the README's API section):
  * array inputs are numpy.ndarray of float32 or float64, all of one dtype (no silent casting:
    TypeError naming the argument); a non-contiguous, Fortran-ordered or negative-stride input is
    copied to C order, which gives the same result as a contiguous one;
  * arrays a kernel writes in place must already be C-contiguous, aligned, writeable and of the
    right dtype and shape (ValueError/TypeError naming the argument) - a copy would drop the write;
  * shapes must agree (ValueError naming the argument, the shape expected and the shape given);
  * scalar parameters are finite and in range (ValueError naming the parameter and the range).
"""

from __future__ import annotations

import math
import numbers
import operator

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def dtype(name: str, value) -> np.dtype:
    """A dtype argument: float32 or float64 (as a string, numpy type or dtype)."""
    try:
        dt = np.dtype(value)
    except TypeError:
        raise TypeError(f"{name}: expected 'float32' or 'float64', got {value!r}") from None
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected 'float32' or 'float64', got {dt.name}")
    return dt


def array(name: str, a, *, ndim: int | None = None, shape: tuple | None = None,
          dtype: np.dtype | None = None, nonempty: bool = False) -> np.ndarray:
    """An input array: float32/float64 ndarray, returned C-contiguous (copied only if it is not)."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name}: expected a numpy.ndarray of float32 or float64, got {type(a).__name__}")
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected dtype float32 or float64, got {a.dtype}")
    if dtype is not None and a.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {np.dtype(dtype).name} like the other arrays, got {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-d array, got shape {a.shape}")
    if shape is not None and a.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {a.shape}")
    if nonempty and a.size == 0:
        raise ValueError(f"{name}: expected a non-empty array, got shape {a.shape}")
    flags = a.flags   # a new object on every access: read once
    if not (flags.c_contiguous and flags.aligned):
        a = np.ascontiguousarray(a)
    return a


def inplace(name: str, a, *, shape: tuple | None = None, dtype: np.dtype | None = None) -> np.ndarray:
    """An array the kernel writes: must be usable as it is (no copy, or the write would be lost)."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name}: expected a numpy.ndarray (written in place), got {type(a).__name__}")
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected dtype float32 or float64, got {a.dtype}")
    if dtype is not None and a.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {np.dtype(dtype).name} like the other arrays, got {a.dtype}")
    if shape is not None and a.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name}: is written in place and must be C-contiguous (got strides {a.strides})")
    if not a.flags.aligned:
        raise ValueError(f"{name}: is written in place and must be aligned to its dtype")
    if not a.flags.writeable:
        raise ValueError(f"{name}: is written in place but is read-only")
    return a


def same_dtype(**arrays) -> np.dtype:
    """The one dtype shared by all the given arrays (None entries skipped); TypeError otherwise."""
    items = [(k, v) for k, v in arrays.items() if v is not None]
    first_name, first = items[0]
    for k, v in items[1:]:
        if v.dtype != first.dtype:
            raise TypeError(f"{k}: expected dtype {first.dtype} like {first_name}, got {v.dtype}")
    return first.dtype


def real(name: str, value, *, lo: float = -math.inf, hi: float = math.inf,
         lo_open: bool = False, hi_open: bool = False) -> float:
    """A finite real scalar in [lo, hi] (or open at either end)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__}")
    v = float(value)
    below = v <= lo if lo_open else v < lo
    above = v >= hi if hi_open else v > hi
    if not math.isfinite(v) or below or above:
        rng = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
        raise ValueError(f"{name}: expected a finite number in {rng}, got {value!r}")
    return v


def integer(name: str, value, *, lo: int | None = None, hi: int | None = None) -> int:
    """An integer (numpy integers too) in [lo, hi]."""
    if isinstance(value, bool):
        raise TypeError(f"{name}: expected an integer, got bool")
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name}: expected an integer, got {type(value).__name__}") from None
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ValueError(f"{name}: expected an integer in [{lo}, {hi}], got {v}")
    return v


def seed(name: str, value) -> int:
    """A seed: an integer in [0, 2**64)."""
    return integer(name, value, lo=0, hi=2**64 - 1)


def shape(name: str, value) -> tuple[int, ...]:
    """A shape: an int or a tuple of non-negative ints."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value,)
    if not isinstance(value, tuple | list):
        raise TypeError(f"{name}: expected an int or a tuple of ints, got {type(value).__name__}")
    return tuple(integer(f"{name}[{i}]", v, lo=0) for i, v in enumerate(value))


def choice(name: str, value, options) -> str:
    if value not in options:
        raise ValueError(f"{name}: expected one of {', '.join(map(str, options))}; got {value!r}")
    return value
