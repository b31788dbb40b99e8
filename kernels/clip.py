"""Gradient clipping, in place, over a list of gradient arrays (PyTorch's clip_grad_norm_ and
clip_grad_value_).

    clip_grad_norm(grads, max_norm, norm_type=2.0, error_if_nonfinite=False) -> total_norm (float)
    clip_grad_value(grads, clip_value) -> None

``grads`` is a non-empty list or tuple of ndarrays (or one ndarray, taken as a one-element list), all
float32 or all float64, each written in place: every one must be C-contiguous, aligned and writeable
(a copy would lose the write), else a ValueError naming ``grads[i]``. Empty arrays are allowed and
left alone.

The clip decision (``_clip_grad_norm``) is one Python function shared by all backends; a backend
only supplies two primitives: the total norm of a list of arrays, and scaling a list in place.
The norm is always accumulated in float64 and survives squares that overflow or underflow the
dtype (even float64: a second, scaled pass when max|x| is beyond 1e150 or below 1e-150).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from . import _c, _check
from ._numba import njit

#: added to the total norm before dividing max_norm by it, as PyTorch does
EPS = 1e-6
#: outside [SMALL, BIG] the squares of max|x| may overflow/underflow a double: use the scaled pass
BIG = 1e150
SMALL = 1e-150


# ---- argument checks, shared by every backend ----------------------------------------------------

def _grads(grads, *, disjoint: bool) -> list[np.ndarray]:
    """The gradient arrays as a list, each checked as written in place, all of one dtype.
    With disjoint=True, arrays that overlap in memory are refused (they would be scaled twice)."""
    if isinstance(grads, np.ndarray):
        return [_check.inplace("grads", grads)]
    if not isinstance(grads, list | tuple):
        raise TypeError(f"grads: expected a list or tuple of numpy.ndarray (or one ndarray), "
                        f"got {type(grads).__name__}")
    if len(grads) == 0:
        raise ValueError("grads: expected a non-empty list of arrays, got an empty one")
    first = _check.inplace("grads[0]", grads[0])
    out = [first] + [_check.inplace(f"grads[{i}]", g, dtype=first.dtype)
                     for i, g in enumerate(grads[1:], start=1)]
    if disjoint and len(out) > 1:
        spans = sorted((g.ctypes.data, g.ctypes.data + g.nbytes, i) for i, g in enumerate(out) if g.size)
        for (_, end, i), (start, _, j) in zip(spans, spans[1:], strict=False):
            if start < end:
                i, j = sorted((i, j))
                raise ValueError(f"grads[{j}]: overlaps grads[{i}] in memory; each element would be "
                                 "scaled more than once")
    return out


def _norm_type(norm_type) -> bool:
    """True for the inf-norm, False for the 2-norm; ValueError for anything else."""
    if isinstance(norm_type, str):
        if norm_type == "inf":
            return True
    elif isinstance(norm_type, numbers.Real) and not isinstance(norm_type, bool):
        if norm_type == 2:
            return False
        if norm_type == math.inf:
            return True
    raise ValueError(f"norm_type: expected 2 or inf (math.inf or 'inf'), got {norm_type!r}")


def _clip_grad_norm(grads, max_norm, norm_type, error_if_nonfinite, total_norm, scale) -> float:
    """The clip decision, shared by every backend: total_norm(arrays, inf_norm) -> float and
    scale(arrays, factor) are the backend's primitives (arrays: the non-empty gradients)."""
    arrays = _grads(grads, disjoint=True)
    max_norm = _check.real("max_norm", max_norm, lo=0.0)
    inf_norm = _norm_type(norm_type)
    arrays = [g for g in arrays if g.size]
    total = float(total_norm(arrays, inf_norm)) if arrays else 0.0
    if not math.isfinite(total):
        if error_if_nonfinite:
            which = "NaN" if math.isnan(total) else "infinite"
            raise ValueError(f"clip_grad_norm: the total {'inf' if inf_norm else 'L2'}-norm of the "
                             f"gradients is {which} ({total}); the gradients were left unchanged "
                             "(error_if_nonfinite=False returns the total instead of raising)")
        return total
    coef = max_norm / (total + EPS)
    if coef < 1.0:
        scale(arrays, coef)
    return total


def _clip_value_args(grads, clip_value):
    return _grads(grads, disjoint=False), _check.real("clip_value", clip_value, lo=0.0, lo_open=True)


# ---- reference: NumPy, float64 inside -------------------------------------------------------------

def _total_norm_numpy(arrays, inf_norm: bool) -> float:
    a = np.abs(np.concatenate([g.reshape(-1) for g in arrays]).astype(np.float64))
    amax = float(np.max(a))  # np.max propagates NaN
    if inf_norm or not math.isfinite(amax) or amax == 0.0:
        return amax
    return amax * math.sqrt(float(np.sum((a / amax) ** 2)))  # scaled: no overflow, no underflow


def _scale_numpy(arrays, factor: float) -> None:
    for g in arrays:
        g[...] = (g.astype(np.float64) * factor).astype(g.dtype)


def clip_grad_norm(grads, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale the gradients in place so that their total norm is at most max_norm (PyTorch's
    torch.nn.utils.clip_grad_norm_); returns the total norm before clipping, as a Python float.

    grads: a non-empty list/tuple of ndarrays (or one ndarray), all float32 or all float64, any shapes;
        each is WRITTEN IN PLACE, so each must be C-contiguous, aligned and writeable (ValueError
        naming grads[i] otherwise; arrays overlapping in memory are refused too). Empty arrays are
        allowed and ignored (all empty: total 0.0).
    max_norm: finite, >= 0.
    norm_type: 2 (default) or inf (math.inf, float('inf') or 'inf'); anything else is a ValueError.

    total = the norm of all elements of all arrays together (2-norm, or max|x| for inf), accumulated
    in float64 and exact to rounding even when squares overflow or underflow the dtype (1e200 and
    1e-200 in float64 give the right total). If clip_coef = max_norm / (total + 1e-6) < 1, every
    element is multiplied by clip_coef (in float64, rounded once to the dtype); otherwise nothing is
    written.

    Non-finite total (a NaN anywhere gives NaN, in the inf-norm too; else an inf gives inf): the arrays
    are left UNCHANGED and the total (nan or inf) is returned; with error_if_nonfinite=True a
    ValueError saying which (NaN or infinite) is raised instead, again with the arrays unchanged.
    (PyTorch would instead fill the gradients with NaN or zero them.)
    """
    return _clip_grad_norm(grads, max_norm, norm_type, error_if_nonfinite, _total_norm_numpy, _scale_numpy)


def clip_grad_value(grads, clip_value):
    """Clamp every element of every gradient array to [-clip_value, clip_value], in place (PyTorch's
    torch.nn.utils.clip_grad_value_). Returns None.

    grads: as for clip_grad_norm (a non-empty list/tuple of ndarrays or one ndarray, one dtype, each
        C-contiguous, aligned and writeable; empty arrays allowed). Overlapping arrays are allowed:
        clamping twice changes nothing.
    clip_value: finite and > 0 (ValueError otherwise).

    NaN stays NaN; +inf becomes clip_value and -inf becomes -clip_value (rounded to the dtype);
    elements inside the range are left bitwise unchanged.
    """
    arrays, c = _clip_value_args(grads, clip_value)
    for g in arrays:
        if g.size:
            g[...] = np.clip(g.astype(np.float64), -c, c).astype(g.dtype)


# ---- Numba: per-array jitted partials, combined in Python exactly as csrc/clip.c combines them ------
# (so C and Numba totals are bitwise equal; tests/test_clip.py checks it)

#: lanes of the one-pass partials: element i goes to lane i % LANES (as csrc/clip.c)
LANES = 16


@njit
def _lane_sum_nb(s):
    """The 16 lane sums combined in csrc/clip.c's tree (lane_sum)."""
    t0 = (s[0] + s[4]) + (s[8] + s[12])
    t1 = (s[1] + s[5]) + (s[9] + s[13])
    t2 = (s[2] + s[6]) + (s[10] + s[14])
    t3 = (s[3] + s[7]) + (s[11] + s[15])
    return (t0 + t2) + (t1 + t3)


@njit
def _partial_nb(x, want_max):
    """x (n,) -> (max|x| NaN-sticky (0 unless want_max), sum x^2) in float64, 16 lanes: a square then
    an add per element, max ignoring NaN, a NaN from the (then NaN) sum of squares; as csrc/clip.c."""
    s = np.zeros(LANES)
    m = np.zeros(LANES)
    n = x.size
    body = n - n % LANES
    if want_max:
        for i in range(0, body, LANES):
            for k in range(LANES):
                d = np.float64(x[i + k])
                s[k] += d * d
                a = abs(d)
                m[k] = a if a > m[k] else m[k]
    else:
        for i in range(0, body, LANES):
            for k in range(LANES):
                d = np.float64(x[i + k])
                s[k] += d * d
    for i in range(body, n):  # the tail: lane i % 16, as the body
        d = np.float64(x[i])
        s[i - body] += d * d
        a = abs(d)
        m[i - body] = a if a > m[i - body] else m[i - body]
    ssq = _lane_sum_nb(s)
    if ssq != ssq:
        return np.nan, ssq
    return (m.max() if want_max else 0.0), ssq


@njit
def _scaled_ssq_nb(x, scale):
    s0 = s1 = s2 = s3 = 0.0
    n = x.size
    i = 0
    while i + 4 <= n:
        a0 = np.float64(x[i]) / scale
        a1 = np.float64(x[i + 1]) / scale
        a2 = np.float64(x[i + 2]) / scale
        a3 = np.float64(x[i + 3]) / scale
        s0 += a0 * a0
        s1 += a1 * a1
        s2 += a2 * a2
        s3 += a3 * a3
        i += 4
    while i < n:
        a = np.float64(x[i]) / scale
        s0 += a * a
        i += 1
    return (s0 + s1) + (s2 + s3)


@njit
def _scale_nb(x, factor):
    for i in range(x.size):
        x[i] = np.float64(x[i]) * factor


@njit
def _clip_value_nb(x, clip):
    hi = x.dtype.type(clip)
    lo = x.dtype.type(-clip)
    for i in range(x.size):
        v = np.float64(x[i])
        if v > clip:
            x[i] = hi
        elif v < -clip:
            x[i] = lo


def _nanmax(m: float, a: float) -> float:
    return a if (a > m or a != a) else m


def _total_norm_numba(arrays, inf_norm: bool) -> float:
    flats = [g.reshape(-1) for g in arrays]
    want_max = inf_norm or arrays[0].dtype != np.float32  # float32 squares always fit a double
    amax = ssq = 0.0
    for x in flats:
        m, s = _partial_nb(x, want_max)
        amax = _nanmax(amax, m)
        ssq += s
    if not want_max:
        return math.sqrt(ssq)
    if inf_norm:
        return amax
    if amax != amax or ssq != ssq:
        return math.nan
    if math.isinf(amax):
        return math.inf
    if amax == 0.0 or (SMALL <= amax <= BIG and ssq <= np.finfo(np.float64).max):
        return math.sqrt(ssq)
    s = 0.0
    for x in flats:
        s += _scaled_ssq_nb(x, amax)
    return amax * math.sqrt(s)


def _scale_numba(arrays, factor: float) -> None:
    for g in arrays:
        _scale_nb(g.reshape(-1), factor)


def clip_grad_norm_numba(grads, max_norm, norm_type=2.0, error_if_nonfinite=False):
    return _clip_grad_norm(grads, max_norm, norm_type, error_if_nonfinite, _total_norm_numba, _scale_numba)


def clip_grad_value_numba(grads, clip_value):
    arrays, c = _clip_value_args(grads, clip_value)
    for g in arrays:
        if g.size:
            _clip_value_nb(g.reshape(-1), c)


# ---- C -------------------------------------------------------------------------------------------

def _pointer_list(arrays, ptr):
    """A C array of pointers to the arrays (float *[] or double *[]) and one of their sizes.
    The caller keeps `arrays` referenced until C returns."""
    ctype = "float" if arrays[0].dtype == np.float32 else "double"
    ptrs = _c.ffi.new(f"{ctype} *[]", [ptr(g) for g in arrays])
    sizes = _c.ffi.new("int64_t[]", [g.size for g in arrays])
    return ptrs, sizes


def _total_norm_c(arrays, inf_norm: bool) -> float:
    _c.require()
    ptrs, sizes = _pointer_list(arrays, _c.ptr)
    total = _c.ffi.new("double *")
    _c.fn("grad_norm", arrays[0].dtype)(total, ptrs, sizes, len(arrays), 1 if inf_norm else 0)
    return total[0]


def _scale_c(arrays, factor: float) -> None:
    _c.require()
    ptrs, sizes = _pointer_list(arrays, _c.ptr_out)
    _c.fn("scale_arrays", arrays[0].dtype)(ptrs, sizes, len(arrays), factor)


def clip_grad_norm_c(grads, max_norm, norm_type=2.0, error_if_nonfinite=False):
    return _clip_grad_norm(grads, max_norm, norm_type, error_if_nonfinite, _total_norm_c, _scale_c)


def clip_grad_value_c(grads, clip_value):
    arrays, c = _clip_value_args(grads, clip_value)
    for g in arrays:
        if g.size:
            _c.fn("clip_value", g.dtype)(_c.ptr_out(g), g.size, c)


KERNELS = {
    "clip_grad_norm": {"numpy": clip_grad_norm, "numba": clip_grad_norm_numba, "c": clip_grad_norm_c},
    "clip_grad_value": {"numpy": clip_grad_value, "numba": clip_grad_value_numba, "c": clip_grad_value_c},
}


# ---- verification cases: make(rng, n, dtype) -> kwargs, shapes built from the awkward size n -------

def _grad_list(rng, n, dtype):
    """1-4 arrays (n % 4 + 1 of them), shapes from n; an empty one when n % 5 == 0."""
    shapes = [(n, 3), (n % 5 + 1,), (2, n % 7 + 1), (n % 3 + 1, 2, n % 5)]
    return [rng.standard_normal(s).astype(dtype) for s in shapes[: n % 4 + 1]]


def _norm_case(rng, n, dtype):
    grads = _grad_list(rng, n, dtype)
    # magnitudes whose squares overflow (or underflow) the dtype, so the scaled paths are verified too
    magnitude = {np.dtype(np.float32): {7: 1e20, 17: 1e-20},
                 np.dtype(np.float64): {7: 1e200, 17: 1e-200, 65: 1e160}}[np.dtype(dtype)].get(n, 1.0)
    grads = [(g.astype(np.float64) * magnitude).astype(dtype) for g in grads]
    norm_type = math.inf if n % 3 == 0 else 2.0
    total = _total_norm_numpy(grads, norm_type == math.inf)  # np.linalg.norm would overflow at 1e200
    clip = n % 4 in (1, 2)  # clipping for some sizes, not for others
    return {"grads": grads, "max_norm": total * (0.37 if clip else 1.9), "norm_type": norm_type}


def _value_case(rng, n, dtype):
    grads = _grad_list(rng, n, dtype)
    return {"grads": grads, "clip_value": 0.25 + (n % 5) * 0.3}


CASES = {"clip_grad_norm": _norm_case, "clip_grad_value": _value_case}
