"""Thin QR with the sign fix, and the orthogonal (Haar) initializer built on it.

    qr(a)                                                   -> (q, r)      (a may be a stack)
    orthogonal_init(shape, gain=1.0, seed=0, dtype="float32") -> W (rows, cols)

qr: a (m, n), m >= n >= 1, float32 or float64. q (m, n) has orthonormal columns, r (n, n) is upper
triangular with diag(r) >= 0, a = q r. diag(r) >= 0 makes the factorization unique (for full rank
a) and is what makes orthogonal_init Haar-distributed: plain Householder QR returns r_jj = -sign(a_jj)
||.|| (so q[0, 0] < 0 always, and det q is fixed for square a).
Like numpy.linalg.qr, a may also be a stack (..., m, n) of such matrices (any number of leading
dimensions, 0 matrices too): q (..., m, n) and r (..., n, n) are the QRs of the matrices one by one
-- in C in a single call, which saves the per-call cost when there are many small ones.
The reference is numpy.linalg.qr (LAPACK, float64) + the sign fix, cast to a's dtype. The Numba
backend is an unblocked Householder QR written out (LAPACK's dgeqr2 + dorg2r), storing in a's dtype
but accumulating every reduction in float64. The C backend is LAPACK's blocked algorithm (dgeqrf +
dorgqr, see csrc/orthogonal.c): panels of 32 columns in the compact WY form, each factored in
float64; the trailing-matrix updates (in the factorization and in forming Q), ~90% of the flops of
a large QR, are the library's GEMM in a's dtype -- for float32 they accumulate in float32 (as
LAPACK's sgeqrf/sorgqr do; the LAPACK accuracy ratios of the tests hold either way). A matrix with
n <= 64 is one panel, factored and formed entirely in float64.

orthogonal_init: draws a standard normal matrix of shape (max(rows, cols), min(rows, cols)) with
this backend's ``normal_init`` (kernels.init) and the given seed, takes q of its QR, transposes it
back when rows < cols, and multiplies by gain. So W has orthonormal columns (rows >= cols) or
orthonormal rows (rows < cols), times gain, and a square W is Haar-distributed on O(n), times gain.
The same seed gives the same matrix on every backend (within rounding), because normal_init does.

Both return new arrays; nothing is written in place.

Special values and bad input (every backend alike):
  * a with NaN/Inf: no error is raised; the non-finite values propagate through the arithmetic into
    r (the column holding one, and later entries) and, unless every reflector before it is trivial,
    into q (Inf meets Inf/Inf in the reflector and becomes NaN). The exact NaN pattern differs
    between LAPACK and the hand-written backends. The sign fix treats sign(NaN) like sign(0): +1.
  * a with fewer than 2 dimensions, m < n, n == 0: ValueError naming a; a not float32/float64:
    TypeError.
  * shape not 2-d or with a zero dimension: ValueError naming shape; gain must be a finite real
    (0 or negative allowed: it only scales); seed an integer in [0, 2**64); dtype float32/float64.
"""

from __future__ import annotations

import math

import numpy as np

from . import _c, _check
from ._numba import njit

# ---- argument checks shared by every backend -----------------------------------------------------


def _qr_args(a) -> np.ndarray:
    a = _check.array("a", a)
    if a.ndim < 2 or a.shape[-1] < 1 or a.shape[-2] < a.shape[-1]:
        raise ValueError(f"a: expected an (m, n) array or a stack (..., m, n) of them with m >= n >= 1 "
                         f"(a thin QR), got shape {a.shape}")
    return a


def _init_args(shape, gain, seed, dtype):
    shape = _check.shape("shape", shape)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"shape: expected (rows, cols) with rows, cols >= 1, got {shape}")
    return shape, _check.real("gain", gain), _check.seed("seed", seed), _check.dtype("dtype", dtype)


# ---- reference: NumPy/LAPACK, float64 inside -----------------------------------------------------

def _sign_fix(q: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """q[..., :, j] *= s_j, r[..., j, :] *= s_j with s_j = -1 if r_jj < 0 else +1 (0, NaN give +1)."""
    s = np.where(np.diagonal(r, axis1=-2, axis2=-1) < 0, -1.0, 1.0)
    return q * s[..., None, :], r * s[..., :, None]


def qr(a):
    """Thin QR with a nonnegative diagonal: a (m, n), m >= n >= 1 -> (q (m, n), r (n, n)).

    q has orthonormal columns, r is upper triangular with diag(r) >= 0, a = q @ r; both in a's dtype
    (float32 or float64), new arrays. A stack a (..., m, n) gives q (..., m, n), r (..., n, n), the
    QR of each matrix. NaN/Inf in a propagate into r and q without an error. ValueError (naming a)
    for a with fewer than 2 dimensions or m < n or n == 0; TypeError for a non-float dtype.
    """
    a = _qr_args(a)
    q, r = np.linalg.qr(a.astype(np.float64), mode="reduced")
    q, r = _sign_fix(q, r)
    return q.astype(a.dtype), r.astype(a.dtype)


def _normal(backend, shape, seed, dtype):
    """A standard normal (rows, cols) matrix from kernels.init's normal_init on this backend.
    Looked up at call time, so the init family can be (re)registered independently."""
    from . import init

    if "normal_init" not in init.KERNELS:
        raise RuntimeError("orthogonal_init draws from kernels.init's normal_init, which is not registered")
    return init.KERNELS["normal_init"][backend](shape, 0.0, 1.0, seed, dtype.name)


def _orthogonal(backend, qr_fn, shape, gain, seed, dtype):
    """normal_init on backend -> qr_fn -> q * gain (in float64, rounded once) -> transposed back."""
    rows, cols = shape
    g = _normal(backend, (max(rows, cols), min(rows, cols)), seed, dtype)
    q, _ = qr_fn(g)
    w = (q.astype(np.float64) * gain).astype(dtype)
    return w if rows >= cols else np.ascontiguousarray(w.T)


def orthogonal_init(shape, gain=1.0, seed=0, dtype="float32"):
    """A (rows, cols) matrix with orthonormal columns (rows >= cols) or rows (rows < cols), times gain.

    The q of the sign-fixed QR of a standard normal (max, min) matrix drawn by normal_init(seed) on
    the same backend, transposed back when rows < cols: for square shapes Haar-distributed on O(n).
    shape: (rows, cols), both >= 1 (ValueError otherwise); gain: finite real; seed: int in [0, 2**64);
    dtype: 'float32' or 'float64'. Returns a new array of that dtype. Reference: the QR in float64.
    """
    shape, gain, seed, dtype = _init_args(shape, gain, seed, dtype)
    # the reference QR runs on the float64 copy of the draw and keeps q in float64 until the end
    return _orthogonal("numpy", lambda g: qr(g.astype(np.float64)), shape, gain, seed, dtype)


# ---- Numba: the unblocked algorithm (dgeqr2 + dorg2r); csrc/orthogonal.c's panel factorization is --
# ---- the same loops (QR_NB there), its blocked updates and its Q are GEMMs --------------------------

_NB = 8  # reflectors per sub-panel, as QR_NB in csrc/orthogonal.c

@njit
def _nrm2_nb(x, lo, hi):
    """||x[lo:hi]||_2 in float64, scaled when the plain sum of squares could over/underflow."""
    s0 = 0.0
    s1 = 0.0
    i = lo
    while i + 1 < hi:
        x0 = np.float64(x[i])
        x1 = np.float64(x[i + 1])
        s0 += x0 * x0
        s1 += x1 * x1
        i += 2
    if i < hi:
        s0 += np.float64(x[i]) * np.float64(x[i])
    s = s0 + s1
    if s != s:
        return s
    if 1e-280 < s < 1e280:
        return np.sqrt(s)
    amax = 0.0
    for i in range(lo, hi):
        ax = abs(np.float64(x[i]))
        if ax > amax:
            amax = ax
    if amax == 0.0 or np.isinf(amax):
        return amax
    s = 0.0
    for i in range(lo, hi):
        t = np.float64(x[i]) / amax
        s += t * t
    return amax * np.sqrt(s)


@njit
def _reflect_nb(c, v, j, m, tau):
    """c[j:m] = (I - tau w w^T) c[j:m] with w = (1, v[j+1:m]): dlarf on one row of at.
    The dot product in eight partial sums combined pairwise, in the C code's order."""
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    i = j + 1
    while i + 7 < m:
        s0 += np.float64(v[i]) * np.float64(c[i])
        s1 += np.float64(v[i + 1]) * np.float64(c[i + 1])
        s2 += np.float64(v[i + 2]) * np.float64(c[i + 2])
        s3 += np.float64(v[i + 3]) * np.float64(c[i + 3])
        s4 += np.float64(v[i + 4]) * np.float64(c[i + 4])
        s5 += np.float64(v[i + 5]) * np.float64(c[i + 5])
        s6 += np.float64(v[i + 6]) * np.float64(c[i + 6])
        s7 += np.float64(v[i + 7]) * np.float64(c[i + 7])
        i += 8
    while i < m:
        s0 += np.float64(v[i]) * np.float64(c[i])
        i += 1
    dot = ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
    w = tau * (np.float64(c[j]) + dot)
    c[j] = np.float64(c[j]) - w
    for i in range(j + 1, m):
        c[i] = np.float64(c[i]) - w * np.float64(v[i])


@njit
def _householder_qr_nb(q, r, work, a):
    """q (m, n), r (n, n), work (m*n + n,) scratch of a's dtype, a (m, n) with m >= n >= 1."""
    m, n = a.shape
    at = work[: m * n].reshape((n, m))  # a transposed: columns of a are contiguous rows of at
    tau = work[m * n:]
    for i in range(m):
        for j in range(n):
            at[j, i] = a[i, j]
    # dgeqr2 in panels of _NB reflectors, like the C code (same operations per row, same order)
    for j0 in range(0, n, _NB):
        j1 = min(j0 + _NB, n)
        for j in range(j0, j1):
            x = at[j]
            alpha = np.float64(x[j])
            xnorm = _nrm2_nb(x, j + 1, m)
            t = 0.0
            if xnorm != 0.0:
                beta = -math.copysign(math.hypot(alpha, xnorm), alpha)
                t = (beta - alpha) / beta
                d = alpha - beta
                for i in range(j + 1, m):
                    x[i] = np.float64(x[i]) / d
                x[j] = beta
            tau[j] = t
            if tau[j] != 0:
                for k in range(j + 1, j1):
                    _reflect_nb(at[k], x, j, m, np.float64(tau[j]))
        for k in range(j1, n):
            for j in range(j0, j1):
                if tau[j] != 0:
                    _reflect_nb(at[k], at[j], j, m, np.float64(tau[j]))
    for i in range(n):
        for k in range(n):
            r[i, k] = at[k, i] if k >= i else 0
    # dorg2r, backwards in place, in the same panels walked backwards
    j1 = n
    while j1 > 0:
        j0 = max(j1 - _NB, 0)
        for k in range(j1, n):
            for j in range(j1 - 1, j0 - 1, -1):
                if tau[j] != 0:
                    _reflect_nb(at[k], at[j], j, m, np.float64(tau[j]))
        for j in range(j1 - 1, j0 - 1, -1):
            x = at[j]
            tj = np.float64(tau[j])
            if tj != 0.0:
                for k in range(j + 1, j1):
                    _reflect_nb(at[k], x, j, m, tj)
            for i in range(j + 1, m):
                x[i] = -tj * np.float64(x[i])
            x[j] = 1.0 - tj
            for l in range(j):
                x[l] = 0
        j1 = j0
    # sign fix (tau reused for the signs)
    s = tau
    for j in range(n):
        s[j] = -1 if r[j, j] < 0 else 1
        for k in range(j, n):
            r[j, k] *= s[j]
    for i in range(m):
        for j in range(n):
            q[i, j] = s[j] * at[j, i]


def qr_numba(a):
    a = _qr_args(a)
    m, n = a.shape[-2:]
    q, r = np.empty(a.shape, dtype=a.dtype), np.empty(a.shape[:-2] + (n, n), dtype=a.dtype)
    work = np.empty(m * n + n, dtype=a.dtype)
    for qi, ri, ai in zip(q.reshape(-1, m, n), r.reshape(-1, n, n), a.reshape(-1, m, n), strict=True):
        _householder_qr_nb(qi, ri, work, ai)
    return q, r


def orthogonal_init_numba(shape, gain=1.0, seed=0, dtype="float32"):
    shape, gain, seed, dtype = _init_args(shape, gain, seed, dtype)
    return _orthogonal("numba", qr_numba, shape, gain, seed, dtype)


# ---- C -------------------------------------------------------------------------------------------

def qr_c(a):
    a = _qr_args(a)
    m, n = a.shape[-2:]
    q, r = np.empty(a.shape, dtype=a.dtype), np.empty(a.shape[:-2] + (n, n), dtype=a.dtype)
    _c.require()
    work = np.empty(_c.lib.householder_qr_work(m, n), dtype=np.float64)
    batch = a.size // (m * n)
    rc = _c.fn("householder_qr", a.dtype)(_c.ptr_out(q), _c.ptr_out(r), _c.ptr_out(work), _c.ptr(a),
                                          batch, m, n)
    if rc != 0:
        raise RuntimeError(f"householder_qr_{_c.suffix(a.dtype)} returned {rc} for a of shape {a.shape}")
    return q, r


def orthogonal_init_c(shape, gain=1.0, seed=0, dtype="float32"):
    shape, gain, seed, dtype = _init_args(shape, gain, seed, dtype)
    return _orthogonal("c", qr_c, shape, gain, seed, dtype)


KERNELS = {
    "qr": {"numpy": qr, "numba": qr_numba, "c": qr_c},
    "orthogonal_init": {"numpy": orthogonal_init, "numba": orthogonal_init_numba, "c": orthogonal_init_c},
}


# ---- verification cases: make(rng, n, dtype) -> kwargs, shapes built from the awkward size n -------
# Tall Gaussian a (n + n//2 + 1, n): aspect ratio ~1.5, so cond(a) stays below ~10 and every backend
# agrees with LAPACK normwise within verify's 32*max(m, n) ulps. At n = 1025 that is a 1538 x 1025
# QR (~5 GFLOP with Q formed): the largest case, still about a second per backend.

CASES = {
    "qr": lambda rng, n, dt: {"a": rng.standard_normal((n + n // 2 + 1, n)).astype(dt)},
    "orthogonal_init": lambda rng, n, dt: {
        "shape": (n, n % 9 + 1) if n % 2 else (n % 9 + 1, n),
        "gain": 1.7, "seed": int(rng.integers(2**63)), "dtype": np.dtype(dt).name},
}
