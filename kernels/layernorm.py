"""Layer normalisation: statistics per row of a 2-d array, with a per-feature affine transform.

    layernorm_forward(x, gamma, beta, eps=1e-5) -> (y, mean, rstd)
    layernorm_backward(dy, x, gamma, mean, rstd) -> (dx, dgamma, dbeta)

x, y, dy, dx: (N, D); gamma, beta, dgamma, dbeta: (D,); mean, rstd: (N,); one dtype (float32 or
float64) for every array. Nothing is written in place. D >= 1 (ValueError naming x otherwise); N = 0
is allowed and gives empty y, mean, rstd, dx and zero dgamma, dbeta.

Every backend computes each row's statistics the stable way - a first pass for the mean, a second for
the sum of squared deviations, both in float64 - never as E[x^2] - E[x]^2. Outputs are computed in
float64 from the float64 statistics and rounded once; the saved mean and rstd are rounded to the dtype.

NaN/Inf propagate per row: a NaN (or Inf) in row i makes mean[i], rstd[i] and y[i] NaN and leaves the
other rows alone. A constant row has variance 0: eps keeps rstd = 1/sqrt(eps) finite and y = beta.
"""

from __future__ import annotations

import numpy as np

from . import _c, _check
from ._numba import njit

# ---- argument checks, shared by every backend ------------------------------------------------------

def _x(x):
    x = _check.array("x", x, ndim=2)
    if x.shape[1] < 1:
        raise ValueError(f"x: expected at least 1 feature per row (D >= 1), got shape {x.shape}")
    return x


def _forward_args(x, gamma, beta, eps):
    x = _x(x)
    D = x.shape[1]
    gamma = _check.array("gamma", gamma, shape=(D,), dtype=x.dtype)
    beta = _check.array("beta", beta, shape=(D,), dtype=x.dtype)
    eps = _check.real("eps", eps, lo=0.0, lo_open=True)
    return x, gamma, beta, eps


def _backward_args(dy, x, gamma, mean, rstd):
    x = _x(x)
    N, D = x.shape
    dy = _check.array("dy", dy, shape=x.shape, dtype=x.dtype)
    gamma = _check.array("gamma", gamma, shape=(D,), dtype=x.dtype)
    mean = _check.array("mean", mean, shape=(N,), dtype=x.dtype)
    rstd = _check.array("rstd", rstd, shape=(N,), dtype=x.dtype)
    return dy, x, gamma, mean, rstd


# ---- reference: NumPy, float64 inside -------------------------------------------------------------

def layernorm_forward(x, gamma, beta, eps=1e-5):
    """Layer normalisation over the last axis.

    x: (N, D), D >= 1, N >= 0 (N = 0: empty outputs); gamma, beta: (D,); one dtype; eps > 0 finite.
    mean = x.mean(1), var = ((x - mean)**2).mean(1) (biased; two passes in float64),
    rstd = 1 / sqrt(var + eps), y = (x - mean) * rstd * gamma + beta.
    Returns (y (N, D), mean (N,), rstd (N,)) of x's dtype; mean and rstd feed layernorm_backward.
    Nothing is written in place.
    """
    x, gamma, beta, eps = _forward_args(x, gamma, beta, eps)
    D = x.shape[1]
    xd = x.astype(np.float64)
    with np.errstate(invalid="ignore"):  # an Inf row gives inf - inf = NaN there, as documented
        mean = xd.sum(axis=1) / D
        xc = xd - mean[:, None]
        var = np.square(xc).sum(axis=1) / D
        rstd = 1.0 / np.sqrt(var + eps)
        y = xc * rstd[:, None] * gamma.astype(np.float64) + beta.astype(np.float64)
    return y.astype(x.dtype), mean.astype(x.dtype), rstd.astype(x.dtype)


def layernorm_backward(dy, x, gamma, mean, rstd):
    """Gradients of layernorm_forward given dL/dy.

    dy, x: (N, D); gamma: (D,); mean, rstd: (N,) (as layernorm_forward returned them); one dtype.
    With xhat = (x - mean) * rstd and g = dy * gamma, per row in float64:
      dx = rstd / D * (D * g - sum(g) - xhat * sum(g * xhat)),
    and over the rows: dgamma = sum(dy * xhat), dbeta = sum(dy) (zeros when N = 0).
    Returns (dx (N, D), dgamma (D,), dbeta (D,)) of x's dtype; nothing is written in place.
    """
    dy, x, gamma, mean, rstd = _backward_args(dy, x, gamma, mean, rstd)
    D = x.shape[1]
    dyd = dy.astype(np.float64)
    r = rstd.astype(np.float64)[:, None]
    with np.errstate(invalid="ignore"):  # NaN/Inf propagate as IEEE arithmetic gives them
        xhat = (x.astype(np.float64) - mean.astype(np.float64)[:, None]) * r
        g = dyd * gamma.astype(np.float64)
        sg = g.sum(axis=1, keepdims=True)
        sgx = (g * xhat).sum(axis=1, keepdims=True)
        dx = (r / D) * (D * g - sg - xhat * sgx)
        dgamma = (dyd * xhat).sum(axis=0)
        dbeta = dyd.sum(axis=0)
    return dx.astype(x.dtype), dgamma.astype(x.dtype), dbeta.astype(x.dtype)


# ---- Numba: the same algorithms, float64 accumulators --------------------------------------------

@njit
def _forward_nb(y, mean, rstd, x, gamma, beta, eps):
    # x, y: (N, D); gamma, beta: (D,); mean, rstd: (N,)
    N, D = x.shape
    for i in range(N):
        s = 0.0
        for j in range(D):
            s += np.float64(x[i, j])
        mu = s / D
        m2 = 0.0
        for j in range(D):
            d = np.float64(x[i, j]) - mu
            m2 += d * d
        r = 1.0 / np.sqrt(m2 / D + eps)
        mean[i] = mu
        rstd[i] = r
        for j in range(D):
            y[i, j] = (np.float64(x[i, j]) - mu) * r * np.float64(gamma[j]) + np.float64(beta[j])


@njit
def _backward_nb(dx, dgamma, dbeta, dy, x, gamma, mean, rstd):
    # dx, dy, x: (N, D); dgamma, dbeta, gamma: (D,); mean, rstd: (N,)
    N, D = x.shape
    sdyx = np.zeros(D)
    sdy = np.zeros(D)
    for i in range(N):
        mu = np.float64(mean[i])
        r = np.float64(rstd[i])
        sg = 0.0
        sgx = 0.0
        for j in range(D):
            d = np.float64(dy[i, j])
            xh = (np.float64(x[i, j]) - mu) * r
            g = d * np.float64(gamma[j])
            sg += g
            sgx += g * xh
            sdyx[j] += d * xh
            sdy[j] += d
        for j in range(D):
            xh = (np.float64(x[i, j]) - mu) * r
            g = np.float64(dy[i, j]) * np.float64(gamma[j])
            dx[i, j] = (r / D) * (D * g - sg - xh * sgx)
    for j in range(D):
        dgamma[j] = sdyx[j]
        dbeta[j] = sdy[j]


def layernorm_forward_numba(x, gamma, beta, eps=1e-5):
    x, gamma, beta, eps = _forward_args(x, gamma, beta, eps)
    y = np.empty_like(x)
    mean = np.empty(x.shape[0], dtype=x.dtype)
    rstd = np.empty_like(mean)
    _forward_nb(y, mean, rstd, x, gamma, beta, eps)
    return y, mean, rstd


def layernorm_backward_numba(dy, x, gamma, mean, rstd):
    dy, x, gamma, mean, rstd = _backward_args(dy, x, gamma, mean, rstd)
    dx = np.empty_like(x)
    dgamma = np.empty_like(gamma)
    dbeta = np.empty_like(gamma)
    _backward_nb(dx, dgamma, dbeta, dy, x, gamma, mean, rstd)
    return dx, dgamma, dbeta


# ---- C -------------------------------------------------------------------------------------------

def layernorm_forward_c(x, gamma, beta, eps=1e-5):
    x, gamma, beta, eps = _forward_args(x, gamma, beta, eps)
    N, D = x.shape
    y = np.empty_like(x)
    mean = np.empty(N, dtype=x.dtype)
    rstd = np.empty_like(mean)
    _c.fn("layernorm_forward", x.dtype)(_c.ptr_out(y), _c.ptr_out(mean), _c.ptr_out(rstd), _c.ptr(x),
                                        _c.ptr(gamma), _c.ptr(beta), N, D, eps)
    return y, mean, rstd


def layernorm_backward_c(dy, x, gamma, mean, rstd):
    dy, x, gamma, mean, rstd = _backward_args(dy, x, gamma, mean, rstd)
    N, D = x.shape
    dx = np.empty_like(x)
    dgamma = np.empty_like(gamma)
    dbeta = np.empty_like(gamma)
    _c.fn("layernorm_backward", x.dtype)(_c.ptr_out(dx), _c.ptr_out(dgamma), _c.ptr_out(dbeta), _c.ptr(dy),
                                         _c.ptr(x), _c.ptr(gamma), _c.ptr(mean), _c.ptr(rstd), N, D)
    return dx, dgamma, dbeta


KERNELS = {
    "layernorm_forward": {"numpy": layernorm_forward, "numba": layernorm_forward_numba,
                          "c": layernorm_forward_c},
    "layernorm_backward": {"numpy": layernorm_backward, "numba": layernorm_backward_numba,
                           "c": layernorm_backward_c},
}


# ---- verification cases: make(rng, n, dtype) -> kwargs, shapes built from the awkward size n -------

def _rows(rng, n, dtype):
    """x (n % 11 + 2, n + 4): D >= 5, rows with distinct offsets and scales (none near constant)."""
    N, D = n % 11 + 2, n + 4
    x = rng.standard_normal((N, D)) * rng.uniform(0.5, 2.0, (N, 1)) + rng.uniform(-2.0, 2.0, (N, 1))
    gamma = rng.uniform(0.5, 1.5, D) * rng.choice([-1.0, 1.0], D)
    beta = rng.standard_normal(D)
    return x.astype(dtype), gamma.astype(dtype), beta.astype(dtype)


def _forward_case(rng, n, dtype):
    x, gamma, beta = _rows(rng, n, dtype)
    return {"x": x, "gamma": gamma, "beta": beta, "eps": 1e-5}


def _backward_case(rng, n, dtype):
    x, gamma, _ = _rows(rng, n, dtype)
    xd = x.astype(np.float64)
    mean = xd.mean(axis=1)
    rstd = 1.0 / np.sqrt(np.square(xd - mean[:, None]).mean(axis=1) + 1e-5)
    return {"dy": rng.standard_normal(x.shape).astype(dtype), "x": x, "gamma": gamma,
            "mean": mean.astype(dtype), "rstd": rstd.astype(dtype)}


CASES = {
    "layernorm_forward": _forward_case,
    "layernorm_backward": _backward_case,
}
