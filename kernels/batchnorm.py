"""Batch normalisation over the rows of a 2-d batch (statistics per column), training and inference.

    batchnorm_forward(x, gamma, beta, running_mean, running_var, momentum=0.1, eps=1e-5) -> (y, mean, rstd)
    batchnorm_inference(x, gamma, beta, running_mean, running_var, eps=1e-5) -> y
    batchnorm_backward(dy, x, gamma, mean, rstd) -> (dx, dgamma, dbeta)

x, y, dy, dx: (N, C); gamma, beta, mean, rstd, running_*, dgamma, dbeta: (C,); one dtype (float32 or
float64) for every array. Only batchnorm_forward writes in place (running_mean, running_var).

The NumPy reference (the spec) computes in float64: the statistics the stable way - a first pass for
the mean, a second for the sum of squared deviations - never as E[x^2] - E[x]^2, which cancels
catastrophically when |mean| >> std; outputs in float64 from the float64 statistics, rounded once; the
saved mean and rstd rounded to the dtype.

The Numba and C backends (which agree bit for bit) do the same for float64. For float32 (the
precisions in full in csrc/batchnorm.c's header):
  * forward: the statistics in one pass over x shifted by each column's first value K,
    sum(x - K) and sum((x - K)^2) accumulated in float64 over blocks of 1024 rows, the blocks' sums then
    added in order (a fixed order for any thread count; relative error of var below ~eps64 * N, since
    (mean - K)^2 <= N var); y in float32 arithmetic from the float64 statistics, the mean split into a
    float pair (hi + lo) so the centring stays exact: y = ((x - hi) - lo) * f32(rstd * gamma) + beta.
    A block of 1024 columns goes back to float64 arithmetic when one of its columns has statistics near
    the ends of float32's range (std outside [2^-100, 2^100], |rstd * gamma| > 2^120, ...).
  * backward: sum(dy) and sum(dy * (x - mean)) accumulated in float64 (in the statistics' row blocks),
    the latter times rstd once
    (= sum(dy * xhat)); dx in float32 arithmetic, in the
    reference's order, from N >= 16 rows on (an element whose float dx is an Inf or NaN is recomputed
    in float64); for N < 16 (above all N = 2, where dx is a near-total cancellation) in float64. The float
    dx is accurate to a few ulps of the terms N*|dy|, |sum dy|, |xhat * sum(dy xhat)|, like any float32
    backward; if dy lies almost in span(1, xhat) of its column, dx's relative error grows accordingly.
  * inference: float64 arithmetic, as for float64.

NaN/Inf propagate per column: a NaN (or Inf) in column j makes mean[j], rstd[j], y[:, j] (and the
running statistics of column j) NaN and leaves the other columns alone. A constant column has variance
0: eps keeps rstd = 1/sqrt(eps) finite and y = beta there.
"""

from __future__ import annotations

import numpy as np

from . import _c, _check
from ._numba import njit

# ---- argument checks, shared by every backend ------------------------------------------------------

def _params(x, gamma, beta):
    x = _check.array("x", x, ndim=2)
    C = x.shape[1]
    gamma = _check.array("gamma", gamma, shape=(C,), dtype=x.dtype)
    beta = _check.array("beta", beta, shape=(C,), dtype=x.dtype)
    return x, gamma, beta


def _forward_args(x, gamma, beta, running_mean, running_var, momentum, eps):
    x, gamma, beta = _params(x, gamma, beta)
    if x.shape[0] < 2:
        raise ValueError(f"x: training-mode batch statistics need at least 2 rows (N >= 2, the unbiased "
                         f"running variance divides by N - 1), got shape {x.shape}")
    C = x.shape[1]
    running_mean = _check.inplace("running_mean", running_mean, shape=(C,), dtype=x.dtype)
    running_var = _check.inplace("running_var", running_var, shape=(C,), dtype=x.dtype)
    if C and np.may_share_memory(running_mean, running_var):
        raise ValueError("running_var: must not share memory with running_mean (both are written in place)")
    momentum = _check.real("momentum", momentum, lo=0.0, hi=1.0)
    eps = _check.real("eps", eps, lo=0.0, lo_open=True)
    return x, gamma, beta, running_mean, running_var, momentum, eps


def _inference_args(x, gamma, beta, running_mean, running_var, eps):
    x, gamma, beta = _params(x, gamma, beta)
    C = x.shape[1]
    running_mean = _check.array("running_mean", running_mean, shape=(C,), dtype=x.dtype)
    running_var = _check.array("running_var", running_var, shape=(C,), dtype=x.dtype)
    eps = _check.real("eps", eps, lo=0.0, lo_open=True)
    return x, gamma, beta, running_mean, running_var, eps


def _backward_args(dy, x, gamma, mean, rstd):
    x = _check.array("x", x, ndim=2)
    if x.shape[0] < 1:
        raise ValueError(f"x: expected at least 1 row (N >= 1), got shape {x.shape}")
    C = x.shape[1]
    dy = _check.array("dy", dy, shape=x.shape, dtype=x.dtype)
    gamma = _check.array("gamma", gamma, shape=(C,), dtype=x.dtype)
    mean = _check.array("mean", mean, shape=(C,), dtype=x.dtype)
    rstd = _check.array("rstd", rstd, shape=(C,), dtype=x.dtype)
    return dy, x, gamma, mean, rstd


def _momentum_update(running, stat, momentum):
    """PyTorch's rule (1 - momentum) * running + momentum * stat, in float64. A term whose weight is
    exactly 0 is dropped rather than multiplied (momentum 0 keeps running as it is, momentum 1 replaces
    it), so an Inf there never turns into NaN through inf * 0."""
    if momentum == 0.0:
        return running
    if momentum == 1.0:
        return stat
    return (1.0 - momentum) * running + momentum * stat


# ---- reference: NumPy, float64 inside -------------------------------------------------------------

def batchnorm_forward(x, gamma, beta, running_mean, running_var, momentum=0.1, eps=1e-5):
    """Training-mode batch normalisation; updates the running statistics in place.

    x: (N, C) with N >= 2 (ValueError otherwise; C = 0 gives empty outputs); gamma, beta: (C,);
    running_mean, running_var: (C,), C-contiguous, aligned, writeable (no copy is made: ValueError
    otherwise, and when the two share memory); one dtype for all (TypeError otherwise).
    momentum in [0, 1]; eps > 0 finite.

    mean = x.mean(0), var = ((x - mean)**2).mean(0) (biased; two passes in float64),
    rstd = 1 / sqrt(var + eps), y = (x - mean) * rstd * gamma + beta.
    In place: running_mean <- (1 - momentum) * running_mean + momentum * mean and
    running_var <- (1 - momentum) * running_var + momentum * var * N / (N - 1) (unbiased), PyTorch's
    rule; a term whose weight is exactly 0 is skipped (momentum=0 leaves them bit-identical).

    Returns (y (N, C), mean (C,), rstd (C,)), all of x's dtype; mean and rstd feed batchnorm_backward.
    """
    x, gamma, beta, rm, rv, momentum, eps = _forward_args(x, gamma, beta, running_mean, running_var,
                                                         momentum, eps)
    N = x.shape[0]
    xd = x.astype(np.float64)
    with np.errstate(invalid="ignore"):  # an Inf column gives inf - inf = NaN there, as documented
        mean = xd.sum(axis=0) / N
        var = np.square(xd - mean).sum(axis=0) / N
        rstd = 1.0 / np.sqrt(var + eps)
        y = (xd - mean) * rstd * gamma.astype(np.float64) + beta.astype(np.float64)
    rm[...] = _momentum_update(rm.astype(np.float64), mean, momentum)
    rv[...] = _momentum_update(rv.astype(np.float64), var * (N / (N - 1)), momentum)
    return y.astype(x.dtype), mean.astype(x.dtype), rstd.astype(x.dtype)


def batchnorm_inference(x, gamma, beta, running_mean, running_var, eps=1e-5):
    """Inference-mode batch normalisation with the running statistics; nothing is written.

    x: (N, C), any N >= 0 (N = 0 gives an empty y); gamma, beta, running_mean, running_var: (C,);
    one dtype. eps > 0 finite.
    y = (x - running_mean) / sqrt(running_var + eps) * gamma + beta, computed in float64.
    Returns y (N, C) of x's dtype. A negative running_var + eps gives NaN (not checked).
    """
    x, gamma, beta, rm, rv, eps = _inference_args(x, gamma, beta, running_mean, running_var, eps)
    with np.errstate(invalid="ignore"):  # NaN/Inf propagate as IEEE arithmetic gives them
        rstd = 1.0 / np.sqrt(rv.astype(np.float64) + eps)
        y = (x.astype(np.float64) - rm.astype(np.float64)) * rstd * gamma.astype(np.float64) \
            + beta.astype(np.float64)
    return y.astype(x.dtype)


def batchnorm_backward(dy, x, gamma, mean, rstd):
    """Gradients of batchnorm_forward (training mode) given dL/dy.

    dy, x: (N, C) with N >= 1; gamma, mean, rstd: (C,) (mean and rstd as batchnorm_forward returned
    them); one dtype. With xhat = (x - mean) * rstd, sums over the batch in float64:
      dgamma = sum(dy * xhat), dbeta = sum(dy),
      dx = gamma * rstd / N * (N * dy - sum(dy) - xhat * sum(dy * xhat)).
    Returns (dx (N, C), dgamma (C,), dbeta (C,)) of x's dtype; nothing is written in place.
    """
    dy, x, gamma, mean, rstd = _backward_args(dy, x, gamma, mean, rstd)
    N = x.shape[0]
    dyd = dy.astype(np.float64)
    r = rstd.astype(np.float64)
    with np.errstate(invalid="ignore"):  # NaN/Inf propagate as IEEE arithmetic gives them
        xhat = (x.astype(np.float64) - mean.astype(np.float64)) * r
        sdy = dyd.sum(axis=0)
        sdyx = (dyd * xhat).sum(axis=0)
        dx = (gamma.astype(np.float64) * r / N) * (N * dyd - sdy - xhat * sdyx)
    return dx.astype(x.dtype), sdyx.astype(x.dtype), sdy.astype(x.dtype)


# ---- Numba: the same algorithms, float64 accumulators, in csrc/batchnorm.c's order (bitwise equal) ---
# (float64 here; float32 training below)

@njit
def _update_nb(running, stat, momentum):
    if momentum == 0.0:
        return running
    if momentum == 1.0:
        return stat
    return (1.0 - momentum) * running + momentum * stat


@njit
def _forward_nb(y, mean, rstd, rm, rv, x, gamma, beta, momentum, eps):
    # x, y: (N, C); the rest (C,). Rows are swept in order (row-major friendly), accumulating per column.
    N, C = x.shape
    mu = np.zeros(C)
    m2 = np.zeros(C)
    for i in range(N):
        for j in range(C):
            mu[j] += np.float64(x[i, j])
    for j in range(C):
        mu[j] /= N
    for i in range(N):
        for j in range(C):
            d = np.float64(x[i, j]) - mu[j]
            m2[j] += d * d
    unbiased = N / (N - 1.0)
    for j in range(C):
        var = m2[j] / N
        r = 1.0 / np.sqrt(var + eps)
        mean[j] = mu[j]
        rstd[j] = r
        rm[j] = _update_nb(np.float64(rm[j]), mu[j], momentum)
        rv[j] = _update_nb(np.float64(rv[j]), var * unbiased, momentum)
        m2[j] = r * np.float64(gamma[j])  # m2 now holds rstd * gamma in float64
    for i in range(N):
        for j in range(C):
            y[i, j] = (np.float64(x[i, j]) - mu[j]) * m2[j] + np.float64(beta[j])


@njit
def _inference_nb(y, x, gamma, beta, rm, rv, eps):
    # x, y: (N, C); the rest (C,)
    N, C = x.shape
    sc = np.empty(C)
    for j in range(C):
        sc[j] = 1.0 / np.sqrt(np.float64(rv[j]) + eps) * np.float64(gamma[j])
    for i in range(N):
        for j in range(C):
            y[i, j] = (np.float64(x[i, j]) - np.float64(rm[j])) * sc[j] + np.float64(beta[j])


@njit
def _backward_nb(dx, dgamma, dbeta, dy, x, gamma, mean, rstd):
    # dy, x, dx: (N, C); the rest (C,)
    N, C = x.shape
    sdy = np.zeros(C)
    sdyx = np.zeros(C)
    for i in range(N):
        for j in range(C):
            g = np.float64(dy[i, j])
            xh = (np.float64(x[i, j]) - np.float64(mean[j])) * np.float64(rstd[j])
            sdy[j] += g
            sdyx[j] += g * xh
    coef = np.empty(C)
    for j in range(C):
        dgamma[j] = sdyx[j]
        dbeta[j] = sdy[j]
        coef[j] = np.float64(gamma[j]) * np.float64(rstd[j]) / N
    for i in range(N):
        for j in range(C):
            xh = (np.float64(x[i, j]) - np.float64(mean[j])) * np.float64(rstd[j])
            dx[i, j] = coef[j] * ((N * np.float64(dy[i, j]) - sdy[j]) - xh * sdyx[j])


# ---- Numba, float32: the float path of csrc/batchnorm.c (module docstring), the same operations -----

_BLOCK = 1024               # csrc/batchnorm.c's MAXW: the path is chosen per block of this many columns
_FLOAT_DX_MIN_N = 16        # csrc/batchnorm.c's BN_FLOAT_DX_MIN_N


@njit
def _fwd_float_ok(mu, var, sc, beta):
    if np.isnan(mu) or np.isnan(sc):
        return True
    big = 2.0 ** 100
    return (abs(mu) <= 2.0 ** 120 and (var == 0.0 or (var >= 2.0 ** -200 and var <= 2.0 ** 200))
            and abs(sc) <= 2.0 ** 120 and var * sc * sc <= big * big and abs(beta) <= 2.0 ** 120)


_STAT_ROWS = 1024  # csrc/batchnorm.c's BN_STAT_ROWS


@njit
def _row_block_sums_nb(s1, s2, a, b, c, forward):
    # per-column float64 sums s1 += sum f, s2 += sum g in blocks of _STAT_ROWS rows, each block summed
    # from zero in row order, the blocks' sums then added in order (csrc/batchnorm.c: threads take row
    # blocks). forward: the shifted statistics of x = a, f = x - K, g = f^2 (K = c; b unused); else the
    # backward's, f = dy, g = dy (x - mean) (dy = a, x = b, mean = c)
    N, C = a.shape
    t1 = np.empty(C)
    t2 = np.empty(C)
    for r0 in range(0, N, _STAT_ROWS):
        t1[:] = 0.0
        t2[:] = 0.0
        for i in range(r0, min(N, r0 + _STAT_ROWS)):
            if forward:
                for j in range(C):
                    d = np.float64(a[i, j]) - np.float64(c[j])
                    t1[j] += d
                    t2[j] += d * d
            else:
                for j in range(C):
                    g = np.float64(a[i, j])
                    t1[j] += g
                    t2[j] += g * (np.float64(b[i, j]) - np.float64(c[j]))
        for j in range(C):
            s1[j] += t1[j]
            s2[j] += t2[j]


@njit
def _normn_nb(y, x, mh, ml, sf, bf, j0, j1):
    # y = ((x - mh) - ml) * sf + bf in float32, columns j0 .. j1 (unsigned: Numba then emits no
    # negative-index wraparound, and the loop vectorises)
    N = x.shape[0]
    for i in range(N):
        for j in range(j0, j1):
            y[i, j] = ((x[i, j] - mh[j]) - ml[j]) * sf[j] + bf[j]


@njit
def _normalise_nb(y, x, mu, sc, b, j0, j1):
    # y = (x - mu) * sc + b in float64, columns j0 .. j1 (unsigned)
    N = x.shape[0]
    for i in range(N):
        for j in range(j0, j1):
            y[i, j] = (np.float64(x[i, j]) - mu[j]) * sc[j] + np.float64(b[j])


@njit
def _forward_f32_nb(y, mean, rstd, rm, rv, x, gamma, beta, momentum, eps):
    # x, y: (N, C) float32; statistics in one shifted pass, y in float where fwd_float_ok allows
    N, C = x.shape
    K = np.empty(C)
    s1 = np.zeros(C)
    s2 = np.zeros(C)
    for j in range(C):
        v = np.float64(x[0, j])
        K[j] = v if np.isfinite(v) else 0.0
    _row_block_sums_nb(s1, s2, x, x, K, True)
    unbiased = N / (N - 1.0)
    mu = np.empty(C)
    sc = np.empty(C)
    mh = np.empty(C, np.float32)
    ml = np.empty(C, np.float32)
    sf = np.empty(C, np.float32)
    ok = np.empty(C, np.bool_)
    for j in range(C):
        d = s1[j] / N
        var = (s2[j] - s1[j] * d) / N
        if var < 0.0:
            var = 0.0
        mu[j] = K[j] + d
        r = 1.0 / np.sqrt(var + eps)
        sc[j] = r * np.float64(gamma[j])
        mean[j] = mu[j]
        rstd[j] = r
        rm[j] = _update_nb(np.float64(rm[j]), mu[j], momentum)
        rv[j] = _update_nb(np.float64(rv[j]), var * unbiased, momentum)
        mh[j] = np.float32(mu[j])
        ml[j] = np.float32(mu[j] - np.float64(mh[j]))
        sf[j] = np.float32(sc[j])
        ok[j] = _fwd_float_ok(mu[j], var, sc[j], np.float64(beta[j]))
    for j0 in range(0, C, _BLOCK):
        j1 = min(C, j0 + _BLOCK)
        if ok[j0:j1].all():
            _normn_nb(y, x, mh, ml, sf, beta, np.uint64(j0), np.uint64(j1))
        else:
            _normalise_nb(y, x, mu, sc, beta, np.uint64(j0), np.uint64(j1))


@njit
def _dxn_row_nb(d, g, xr, mean, rstd, cf, sdyf, sdyxf, nf, j0, j1):
    # one row of dx in float32 (csrc/batchnorm.c's bwddxn), columns j0 .. j1 (unsigned); whether a
    # result is Inf/NaN
    bad = 0
    for j in range(j0, j1):
        h = (xr[j] - mean[j]) * rstd[j]
        v = cf[j] * ((nf * g[j] - sdyf[j]) - h * sdyxf[j])
        d[j] = v
        bad |= (v - v) != 0
    return bad != 0


@njit
def _backward_f32_nb(dx, dgamma, dbeta, dy, x, gamma, mean, rstd):
    # dy, x, dx: (N, C) float32; sums in double, dx in float where bwd_float_ok allows, an Inf/NaN
    # float result again in double
    N, C = x.shape
    sdy = np.zeros(C)
    sdyx = np.zeros(C)
    _row_block_sums_nb(sdy, sdyx, dy, x, mean, False)
    for j in range(C):
        sdyx[j] *= np.float64(rstd[j])   # sum dy (x - mean), times rstd once
    coef = np.empty(C)
    cf = np.empty(C, np.float32)
    sdyf = np.empty(C, np.float32)
    sdyxf = np.empty(C, np.float32)
    ok = np.empty(C, np.bool_)
    for j in range(C):
        dgamma[j] = sdyx[j]
        dbeta[j] = sdy[j]
        coef[j] = np.float64(gamma[j]) * np.float64(rstd[j]) / N
        cf[j] = np.float32(coef[j])
        sdyf[j] = np.float32(sdy[j])
        sdyxf[j] = np.float32(sdyx[j])
        ok[j] = N >= _FLOAT_DX_MIN_N and (np.isnan(coef[j]) or abs(coef[j]) <= 2.0 ** 64)
    nf = np.float32(N)
    for j0 in range(0, C, _BLOCK):
        j1 = min(C, j0 + _BLOCK)
        native = ok[j0:j1].all()
        u0, u1 = np.uint64(j0), np.uint64(j1)
        for i in range(N):
            if native and not _dxn_row_nb(dx[i], dy[i], x[i], mean, rstd, cf, sdyf, sdyxf, nf, u0, u1):
                continue
            for j in range(j0, j1):
                if native and dx[i, j] - dx[i, j] == 0:
                    continue
                xh = (np.float64(x[i, j]) - np.float64(mean[j])) * np.float64(rstd[j])
                dx[i, j] = coef[j] * ((N * np.float64(dy[i, j]) - sdy[j]) - xh * sdyx[j])


def batchnorm_forward_numba(x, gamma, beta, running_mean, running_var, momentum=0.1, eps=1e-5):
    x, gamma, beta, rm, rv, momentum, eps = _forward_args(x, gamma, beta, running_mean, running_var,
                                                         momentum, eps)
    y = np.empty_like(x)
    mean = np.empty(x.shape[1], dtype=x.dtype)
    rstd = np.empty_like(mean)
    (_forward_f32_nb if x.dtype == np.float32 else _forward_nb)(y, mean, rstd, rm, rv, x, gamma, beta, momentum, eps)
    return y, mean, rstd


def batchnorm_inference_numba(x, gamma, beta, running_mean, running_var, eps=1e-5):
    x, gamma, beta, rm, rv, eps = _inference_args(x, gamma, beta, running_mean, running_var, eps)
    y = np.empty_like(x)
    _inference_nb(y, x, gamma, beta, rm, rv, eps)
    return y


def batchnorm_backward_numba(dy, x, gamma, mean, rstd):
    dy, x, gamma, mean, rstd = _backward_args(dy, x, gamma, mean, rstd)
    dx = np.empty_like(x)
    dgamma = np.empty_like(gamma)
    dbeta = np.empty_like(gamma)
    (_backward_f32_nb if x.dtype == np.float32 else _backward_nb)(dx, dgamma, dbeta, dy, x, gamma, mean, rstd)
    return dx, dgamma, dbeta


# ---- C -------------------------------------------------------------------------------------------

def batchnorm_forward_c(x, gamma, beta, running_mean, running_var, momentum=0.1, eps=1e-5):
    x, gamma, beta, rm, rv, momentum, eps = _forward_args(x, gamma, beta, running_mean, running_var,
                                                         momentum, eps)
    N, C = x.shape
    y = np.empty_like(x)
    mean = np.empty(C, dtype=x.dtype)
    rstd = np.empty_like(mean)
    _c.fn("batchnorm_forward", x.dtype)(_c.ptr_out(y), _c.ptr_out(mean), _c.ptr_out(rstd), _c.ptr_out(rm),
                                        _c.ptr_out(rv), _c.ptr(x), _c.ptr(gamma), _c.ptr(beta), N, C,
                                        momentum, eps)
    return y, mean, rstd


def batchnorm_inference_c(x, gamma, beta, running_mean, running_var, eps=1e-5):
    x, gamma, beta, rm, rv, eps = _inference_args(x, gamma, beta, running_mean, running_var, eps)
    N, C = x.shape
    y = np.empty_like(x)
    _c.fn("batchnorm_inference", x.dtype)(_c.ptr_out(y), _c.ptr(x), _c.ptr(gamma), _c.ptr(beta),
                                          _c.ptr(rm), _c.ptr(rv), N, C, eps)
    return y


def batchnorm_backward_c(dy, x, gamma, mean, rstd):
    dy, x, gamma, mean, rstd = _backward_args(dy, x, gamma, mean, rstd)
    N, C = x.shape
    dx = np.empty_like(x)
    dgamma = np.empty_like(gamma)
    dbeta = np.empty_like(gamma)
    _c.fn("batchnorm_backward", x.dtype)(_c.ptr_out(dx), _c.ptr_out(dgamma), _c.ptr_out(dbeta), _c.ptr(dy),
                                         _c.ptr(x), _c.ptr(gamma), _c.ptr(mean), _c.ptr(rstd), N, C)
    return dx, dgamma, dbeta


KERNELS = {
    "batchnorm_forward": {"numpy": batchnorm_forward, "numba": batchnorm_forward_numba,
                          "c": batchnorm_forward_c},
    "batchnorm_inference": {"numpy": batchnorm_inference, "numba": batchnorm_inference_numba,
                            "c": batchnorm_inference_c},
    "batchnorm_backward": {"numpy": batchnorm_backward, "numba": batchnorm_backward_numba,
                           "c": batchnorm_backward_c},
}


# ---- verification cases: make(rng, n, dtype) -> kwargs, shapes built from the awkward size n -------

def _batch(rng, n, dtype):
    """x (n + 1, n % 13 + 3): N >= 2 always, columns with distinct offsets and scales and a spread
    ramp in random order, so no column is (nearly) constant even at N = 2."""
    N, C = n + 1, n % 13 + 3
    ramp = np.tile(np.linspace(-1.5, 1.5, N)[:, None], (1, C))
    x = rng.permuted(ramp, axis=0) + 0.3 * rng.standard_normal((N, C))
    x = x * rng.uniform(0.5, 2.0, C) + rng.uniform(-2.0, 2.0, C)
    gamma = rng.uniform(0.5, 1.5, C) * rng.choice([-1.0, 1.0], C)
    beta = rng.standard_normal(C)
    return x.astype(dtype), gamma.astype(dtype), beta.astype(dtype)


def _forward_case(rng, n, dtype):
    x, gamma, beta = _batch(rng, n, dtype)
    C = x.shape[1]
    return {"x": x, "gamma": gamma, "beta": beta,
            "running_mean": rng.standard_normal(C).astype(dtype),
            "running_var": rng.uniform(0.5, 2.0, C).astype(dtype), "momentum": 0.1, "eps": 1e-5}


def _inference_case(rng, n, dtype):
    x, gamma, beta = _batch(rng, n, dtype)
    C = x.shape[1]
    return {"x": x, "gamma": gamma, "beta": beta,
            "running_mean": rng.standard_normal(C).astype(dtype),
            "running_var": rng.uniform(0.5, 2.0, C).astype(dtype), "eps": 1e-5}


def _backward_case(rng, n, dtype):
    x, gamma, _ = _batch(rng, n, dtype)
    xd = x.astype(np.float64)
    mean = xd.mean(axis=0)
    rstd = 1.0 / np.sqrt(np.square(xd - mean).mean(axis=0) + 1e-5)
    return {"dy": rng.standard_normal(x.shape).astype(dtype), "x": x, "gamma": gamma,
            "mean": mean.astype(dtype), "rstd": rstd.astype(dtype)}


CASES = {
    "batchnorm_forward": _forward_case,
    "batchnorm_inference": _inference_case,
    "batchnorm_backward": _backward_case,
}
