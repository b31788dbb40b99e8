"""Residual connections and the weight-decay gradient terms used by the depth harness.

    residual_add(x, fx, scale=1.0) -> y = x + scale * fx
    l2_grad(grad, w, weight_decay) -> grad + weight_decay * w          (L2 / weight decay)
    l1_grad(grad, w, l1)           -> grad + l1 * sign(w)              (sign(0) = 0)

All three: arrays of any shape, one dtype (float32 or float64); return a new array; nothing is
written in place. NaN/Inf propagate as IEEE arithmetic gives them (sign(NaN) = NaN).
Every backend computes each element in float64 and rounds once, so results are bit-identical.
"""

from __future__ import annotations

import numpy as np

from . import _c, _check
from ._numba import njit


def _args(first: str, a, second: str, b, pname: str, p):
    a = _check.array(first, a)
    b = _check.array(second, b, shape=a.shape, dtype=a.dtype)
    return a, b, _check.real(pname, p)


# ---- reference: NumPy, float64 inside -------------------------------------------------------------

def residual_add(x, fx, scale=1.0):
    """y = x + scale * fx.  x, fx: same shape and dtype. Returns y (new array, dtype of x)."""
    x, fx, scale = _args("x", x, "fx", fx, "scale", scale)
    return (x.astype(np.float64) + scale * fx.astype(np.float64)).astype(x.dtype)


def l2_grad(grad, w, weight_decay):
    """grad + weight_decay * w: the gradient of loss + weight_decay/2 * ||w||^2. Returns a new array."""
    grad, w, wd = _args("grad", grad, "w", w, "weight_decay", weight_decay)
    return (grad.astype(np.float64) + wd * w.astype(np.float64)).astype(grad.dtype)


def l1_grad(grad, w, l1):
    """grad + l1 * sign(w): the (sub)gradient of loss + l1 * ||w||_1, sign(0) = 0. Returns a new array."""
    grad, w, l1 = _args("grad", grad, "w", w, "l1", l1)
    return (grad.astype(np.float64) + l1 * np.sign(w.astype(np.float64))).astype(grad.dtype)


# ---- Numba ---------------------------------------------------------------------------------------

@njit
def _residual_add_nb(y, x, fx, scale):
    for i in range(x.size):
        y[i] = np.float64(x[i]) + scale * np.float64(fx[i])


@njit
def _l2_grad_nb(out, grad, w, wd):
    for i in range(grad.size):
        out[i] = np.float64(grad[i]) + wd * np.float64(w[i])


@njit
def _l1_grad_nb(out, grad, w, l1):
    for i in range(grad.size):
        wi = np.float64(w[i])
        s = 1.0 if wi > 0 else (-1.0 if wi < 0 else wi * 0.0)  # sign: 0 -> 0, NaN -> NaN
        out[i] = np.float64(grad[i]) + l1 * s


def _numba_binary(kernel, first, a, second, b, pname, p):
    a, b, p = _args(first, a, second, b, pname, p)
    out = np.empty_like(a)
    kernel(out.reshape(-1), a.reshape(-1), b.reshape(-1), p)
    return out


def residual_add_numba(x, fx, scale=1.0):
    return _numba_binary(_residual_add_nb, "x", x, "fx", fx, "scale", scale)


def l2_grad_numba(grad, w, weight_decay):
    return _numba_binary(_l2_grad_nb, "grad", grad, "w", w, "weight_decay", weight_decay)


def l1_grad_numba(grad, w, l1):
    return _numba_binary(_l1_grad_nb, "grad", grad, "w", w, "l1", l1)


# ---- C -------------------------------------------------------------------------------------------

def _c_binary(cname, first, a, second, b, pname, p):
    a, b, p = _args(first, a, second, b, pname, p)
    out = np.empty_like(a)
    _c.fn(cname, a.dtype)(_c.ptr_out(out), _c.ptr(a), _c.ptr(b), a.size, p)
    return out


def residual_add_c(x, fx, scale=1.0):
    return _c_binary("residual_add", "x", x, "fx", fx, "scale", scale)


def l2_grad_c(grad, w, weight_decay):
    return _c_binary("l2_grad", "grad", grad, "w", w, "weight_decay", weight_decay)


def l1_grad_c(grad, w, l1):
    return _c_binary("l1_grad", "grad", grad, "w", w, "l1", l1)


KERNELS = {
    "residual_add": {"numpy": residual_add, "numba": residual_add_numba, "c": residual_add_c},
    "l2_grad": {"numpy": l2_grad, "numba": l2_grad_numba, "c": l2_grad_c},
    "l1_grad": {"numpy": l1_grad, "numba": l1_grad_numba, "c": l1_grad_c},
}


# ---- verification cases: make(rng, n, dtype) -> kwargs, shapes built from the awkward size n -------

def _pair(rng, n, dtype, a, b):
    shape = (n, n % 5 + 3)  # non-square, odd widths
    return {a: rng.standard_normal(shape).astype(dtype), b: rng.standard_normal(shape).astype(dtype)}


CASES = {
    "residual_add": lambda rng, n, dt: {**_pair(rng, n, dt, "x", "fx"), "scale": 0.37},
    "l2_grad": lambda rng, n, dt: {**_pair(rng, n, dt, "grad", "w"), "weight_decay": 1e-2},
    "l1_grad": lambda rng, n, dt: {**_pair(rng, n, dt, "grad", "w"), "l1": 3e-3},
}
