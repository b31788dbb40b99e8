"""The fully connected layer with a fused activation, forward and backward.

    linear_forward(x, W, b=None, activation="identity", alpha=None, keep_preactivation=False)
        -> y = act(x @ W + b)                   (or (y, z) with z = x @ W + b)
    linear_backward(dy, x, W, z=None, activation="identity", alpha=None) -> (dx, dW, db)

activation: identity, sigmoid, tanh, relu, leaky_relu, elu or gelu, with alpha as in
kernels.activations (prelu has a learnable slope and is not fused here). Arrays are float32 or
float64, one dtype; results are new arrays, nothing is written in place.

Precision: the reference multiplies in float64 (NumPy/BLAS) and rounds once. The Numba and C
backends accumulate the products in the dtype, like BLAS, each in a BLIS-style GEMM (packed panels,
a register-blocked micro-kernel): C in csrc/gemm.c (FMA kernel chosen at run time, see
kernels.backend_info()["gemm_isa"]), Numba in kernels/_nbgemm.py (compiled for the host CPU, a
multiply-add LLVM fuses where the CPU has FMA; the backward reads W.T and x.T through their strides;
large products on numba's threads, numba.set_num_threads / NUMBA_NUM_THREADS). Neither splits k over
threads, so the results are bit for bit the same for any thread count.
Both add the bias to each tile's first k block and apply the activation in float64 to each finished
tile of z, as in kernels.activations (bit for bit its result on z). The bias gradient is summed in
float64 (Numba: in the same pass that forms dz = dy * act'(z)). kernels.verify bounds the error
componentwise by 16 eps (|x|·|W| + |b|).

Special values: the products follow IEEE arithmetic like BLAS, so NaN (or inf * 0) in row i of x
gives NaN in row i of z and y only, and NaN in column j of W gives NaN in column j. Which NaN a sum
carries is left to the build by C (x86 keeps an addition's first operand's NaN, and the compiler
orders the operands), so the C backend returns a NaN column of db as np.nan itself, the same bits on
every path and optimisation level.
"""

from __future__ import annotations

import numpy as np

from . import _c, _check, _nbgemm, activations
from .activations import ACT_CODES, check_activation


def _shapes(x, W):
    x = _check.array("x", x, ndim=2)
    W = _check.array("W", W, ndim=2, dtype=x.dtype)
    if W.shape[0] != x.shape[1]:
        raise ValueError(f"W: expected shape ({x.shape[1]}, M) (W.shape[0] == x.shape[1] for x of shape "
                         f"{x.shape}), got {W.shape}")
    return x, W


def _forward_args(x, W, b, activation, alpha, keep_preactivation):
    code, alpha = check_activation(activation, alpha)
    x, W = _shapes(x, W)
    if b is not None:
        b = _check.array("b", b, shape=(W.shape[1],), dtype=x.dtype)
    if not isinstance(keep_preactivation, bool | np.bool_):
        raise TypeError(f"keep_preactivation: expected a bool, got {type(keep_preactivation).__name__}")
    return x, W, b, code, alpha, bool(keep_preactivation)


def _backward_args(dy, x, W, z, activation, alpha):
    code, alpha = check_activation(activation, alpha)
    x, W = _shapes(x, W)
    shape = (x.shape[0], W.shape[1])
    dy = _check.array("dy", dy, shape=shape, dtype=x.dtype)
    if z is None:
        if activation != "identity":
            raise ValueError(f"z: the pre-activation x @ W + b is required for activation {activation!r} "
                             "(linear_forward(..., keep_preactivation=True) returns it)")
    else:
        z = _check.array("z", z, shape=shape, dtype=x.dtype)
    return dy, x, W, z, code, alpha


# ---- reference: NumPy, float64 inside -------------------------------------------------------------

def linear_forward(x, W, b=None, activation="identity", alpha=None, keep_preactivation=False):
    """y = act(z), z = x @ W + b: a fully connected layer with a fused activation.

    x: (N, K); W: (K, M); b: (M,) or None (no bias); one dtype, float32 or float64.
    activation: "identity", "sigmoid", "tanh", "relu", "leaky_relu", "elu" or "gelu" (as in
    kernels.activations; "prelu" is not fusable: ValueError); alpha: leaky_relu's slope / elu's alpha,
    None for the default (and for the activations without one).
    Returns y (N, M), or (y, z) when keep_preactivation is True (linear_backward needs z for every
    activation but identity). New arrays; nothing is written in place.
    Empty dimensions are legal: N = 0 or M = 0 give empty results, K = 0 gives z = b (broadcast over
    the rows; 0 without a bias). NaN in a row of x gives NaN in that row of y and z only.
    """
    x, W, b, code, alpha, keep = _forward_args(x, W, b, activation, alpha, keep_preactivation)
    z = x.astype(np.float64) @ W.astype(np.float64)
    if b is not None:
        z = z + b.astype(np.float64)
    with np.errstate(over="ignore"):
        y = activations._REF_FORWARD[activation](z, alpha)
        return (y.astype(x.dtype), z.astype(x.dtype)) if keep else y.astype(x.dtype)


def linear_backward(dy, x, W, z=None, activation="identity", alpha=None):
    """Gradients of linear_forward: (dx, dW, db).

    dy: (N, M) the gradient of y; x: (N, K) and W: (K, M) the forward inputs; z: (N, M) the
    pre-activation x @ W + b from linear_forward(..., keep_preactivation=True) - required unless
    activation is "identity" (ValueError naming z), ignored (but checked) for identity.
    activation, alpha: as given to linear_forward. One dtype, float32 or float64.
    With dz = dy * act'(z) (as kernels.activations' backward: 0 * inf taken as 0):
    dx = dz @ W.T (N, K), dW = x.T @ dz (K, M), db = dz summed over the rows (M,).
    Returns new arrays. Empty dimensions give empty or zero results (N = 0: dW = 0, db = 0).
    """
    dy, x, W, z, code, alpha = _backward_args(dy, x, W, z, activation, alpha)
    dy64 = dy.astype(np.float64)
    if activation == "identity":   # z is not needed (nor read)
        dz = dy64
    else:
        dz = activations.REFERENCE_BACKWARD[activation](dy64, z.astype(np.float64), alpha)
    dx = dz @ W.astype(np.float64).T
    dW = x.astype(np.float64).T @ dz
    db = dz.sum(axis=0)
    return dx.astype(x.dtype), dW.astype(x.dtype), db.astype(x.dtype)


# ---- Numba ---------------------------------------------------------------------------------------

def linear_forward_numba(x, W, b=None, activation="identity", alpha=None, keep_preactivation=False):
    x, W, b, code, alpha, keep = _forward_args(x, W, b, activation, alpha, keep_preactivation)
    N, M = x.shape[0], W.shape[1]
    y = np.empty((N, M), dtype=x.dtype)
    z = np.empty_like(y) if keep else y
    bias = np.empty(0, x.dtype) if b is None else b
    # z = x @ W + b, then y = act(z) on each finished tile (in place when z is not kept)
    _nbgemm.gemm(z, x, W, bias, y, code, alpha, keep or code != ACT_CODES["identity"])
    return (y, z) if keep else y


def linear_backward_numba(dy, x, W, z=None, activation="identity", alpha=None):
    dy, x, W, z, code, alpha = _backward_args(dy, x, W, z, activation, alpha)
    N, K = x.shape
    M = W.shape[1]
    db = np.empty(M, dtype=x.dtype)
    if code == ACT_CODES["identity"]:   # dz is dy (z is not read)
        dz = dy
        _nbgemm.column_sums(db, dy)
    else:                               # dz = dy * act'(z) and db in one pass
        dz = np.empty_like(dy)
        _nbgemm.dz_db(dz, db, dy, z, code, alpha)
    dx = np.empty((N, K), dtype=x.dtype)
    dW = np.empty((K, M), dtype=x.dtype)
    none = np.empty(0, x.dtype)
    _nbgemm.gemm(dx, dz, W.T, none, dx, 0, 0.0, False)    # dz @ W^T: W read through its transpose
    _nbgemm.gemm(dW, x.T, dz, none, dW, 0, 0.0, False)    # x^T @ dz
    return dx, dW, db


# ---- C -------------------------------------------------------------------------------------------

def linear_forward_c(x, W, b=None, activation="identity", alpha=None, keep_preactivation=False):
    x, W, b, code, alpha, keep = _forward_args(x, W, b, activation, alpha, keep_preactivation)
    (N, K), M = x.shape, W.shape[1]
    y = np.empty((N, M), dtype=x.dtype)
    z = np.empty_like(y) if keep else None
    _c.fn("linear_forward", x.dtype)(_c.ptr_out(y), _c.ptr_out(z), _c.ptr(x), _c.ptr(W), _c.ptr(b),
                                     N, K, M, code, alpha)
    return (y, z) if keep else y


def linear_backward_c(dy, x, W, z=None, activation="identity", alpha=None):
    dy, x, W, z, code, alpha = _backward_args(dy, x, W, z, activation, alpha)
    (N, K), M = x.shape, W.shape[1]
    dx = np.empty((N, K), dtype=x.dtype)
    dW = np.empty((K, M), dtype=x.dtype)
    db = np.empty(M, dtype=x.dtype)
    work = np.empty((N, M), dtype=x.dtype)  # scratch for dz
    _c.fn("linear_backward", x.dtype)(_c.ptr_out(dx), _c.ptr_out(dW), _c.ptr_out(db), _c.ptr_out(work),
                                      _c.ptr(dy), _c.ptr(x), _c.ptr(W), _c.ptr(z), N, K, M, code, alpha)
    return dx, dW, db


KERNELS = {
    "linear_forward": {"numpy": linear_forward, "numba": linear_forward_numba, "c": linear_forward_c},
    "linear_backward": {"numpy": linear_backward, "numba": linear_backward_numba, "c": linear_backward_c},
}


# ---- verification cases: make(rng, n, dtype) -> kwargs, shapes built from the awkward size n -------

_ACTS = tuple(ACT_CODES)


def _dims(n):
    """(N, K, M) = (n, n // 2 + 3, 3n % 17 + 5): non-square, K and M unrelated to n's parity, and
    M <= 21 so the n = 1025 case stays at ~10 M multiply-adds per GEMM."""
    return n, n // 2 + 3, (n * 3) % 17 + 5


def _activation(n):
    # (n % 11) % 7 walks through all 7 activations over verify.SIZES
    act = _ACTS[(n % 11) % 7]
    return act, {"leaky_relu": (0.1, -0.2)[n % 2], "elu": (1.0, 0.7)[n % 2]}.get(act)


def _forward_case(rng, n, dt):
    N, K, M = _dims(n)
    act, alpha = _activation(n)
    kw = {"x": rng.standard_normal((N, K)).astype(dt),
          "W": (rng.standard_normal((K, M)) / np.sqrt(K)).astype(dt),
          "b": None if n % 3 == 0 else rng.standard_normal(M).astype(dt),
          "activation": act, "alpha": alpha}
    if n % 2:
        kw["keep_preactivation"] = True
    return kw


def _backward_case(rng, n, dt):
    N, K, M = _dims(n)
    act, alpha = _activation(n)
    x = rng.standard_normal((N, K))
    W = rng.standard_normal((K, M)) / np.sqrt(K)
    z = x @ W + rng.standard_normal(M)
    return {"dy": rng.standard_normal((N, M)).astype(dt), "x": x.astype(dt), "W": W.astype(dt),
            "z": None if act == "identity" and n % 2 else z.astype(dt), "activation": act, "alpha": alpha}


CASES = {"linear_forward": _forward_case, "linear_backward": _backward_case}
