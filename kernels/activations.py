"""Elementwise activations and PReLU, forward and backward.

    <act>_forward(x, alpha=None)       -> y  = act(x)
    <act>_backward(dy, x, alpha=None)  -> dx = dy * act'(x)       (x is the forward INPUT)
    prelu_forward(x, a)                -> y  = x if x > 0 else a * x      (learnable slope a)
    prelu_backward(dy, x, a)           -> (dx, da)

for act in identity, sigmoid, tanh, relu, leaky_relu, elu, gelu. ``alpha`` is the slope of
leaky_relu (default 0.01, any finite real) and the alpha of elu (default 1.0, finite and >= 0); the
other activations take ``alpha=None`` only (anything else is a ValueError naming alpha).

Arrays: any shape (empty gives empty), float32 or float64, one dtype; a new array is returned and
nothing is written in place.

Numerics, identical in every backend: each element is computed in float64 with the same formula
and the same libm functions (exp, expm1, erfc via the C library) and rounded once to the dtype.
  * sigmoid uses the sign-split form with e = exp(-|x|): 1/(1+e) for x >= 0, e/(1+e) below, so
    sigmoid(-inf) = 0 and sigmoid(inf) = 1 with no overflow; sigmoid'(x) = e/(1+e)^2.
  * tanh'(x) = 4e/(1+e)^2 with e = exp(-2|x|) (= sech^2 x, accurate in the tails, where 1 - tanh^2
    would cancel to 0).
  * elu(x) = alpha*expm1(x) for x <= 0, so elu(-inf) = -alpha.
  * gelu(x) = x*Phi(x) with Phi(x) = erfc(-x/sqrt2)/2, exactly; gelu(-inf) = 0 (not -inf*0), and
    gelu'(x) = Phi(x) + x*phi(x) is 1 at +inf and 0 at -inf (x*phi(x) is taken as 0 where phi
    underflows to 0).
  * Conventions at the kinks: relu'(0) = 0, leaky_relu'(0) = slope, elu'(0) = alpha, prelu'(0) = a
    (the left derivative everywhere).
  * Special values: NaN in x or dy gives NaN out, for every activation (relu too; identity_backward
    gives NaN where x is NaN although it does not otherwise read x). A product of a
    zero and an infinity is taken as 0 instead of NaN: leaky_relu with slope 0 (and prelu with a = 0)
    maps -inf to 0, and in the backward dy = +-inf times a zero derivative gives 0. With finite dy
    and infinite x every backward is finite.
"""

from __future__ import annotations

import math

import numpy as np

from . import _c, _check
from ._numba import njit

#: activation name -> DP_ACT_* code of csrc/deepprop.h
ACT_CODES = {"identity": 0, "sigmoid": 1, "tanh": 2, "relu": 3, "leaky_relu": 4, "elu": 5, "gelu": 6}
#: the activations that take alpha, and its default
DEFAULT_ALPHA = {"leaky_relu": 0.01, "elu": 1.0}

# The same decimal literals are in csrc/activations.c: both parse to the same double.
_SQRT1_2 = 0.7071067811865476       # 1/sqrt(2)
_INV_SQRT_2PI = 0.3989422804014327  # 1/sqrt(2*pi)


def check_activation(name, alpha) -> tuple[int, float]:
    """(DP_ACT code, alpha as float) for an activation name and its alpha; ValueError/TypeError
    naming ``activation`` or ``alpha``. alpha None means the default (0.0 for activations without one)."""
    _check.choice("activation", name, tuple(ACT_CODES))
    if name not in DEFAULT_ALPHA:
        if alpha is not None:
            raise ValueError(f"alpha: activation {name!r} takes no alpha (expected None), got {alpha!r}")
        return ACT_CODES[name], 0.0
    if alpha is None:
        return ACT_CODES[name], DEFAULT_ALPHA[name]
    if name == "elu":
        return ACT_CODES[name], _check.real("alpha", alpha, lo=0.0)
    return ACT_CODES[name], _check.real("alpha", alpha)


# ---- reference: NumPy, float64 inside -------------------------------------------------------------

# erfc and exp of the C library, elementwise: the Numba and C backends call the same functions, so
# gelu is bit-identical across backends. (scipy.special.erfc differs from libm's by up to ~100 ulp
# in the tail, and gelu'(x) cancels near its zero at x = -0.75, where a relative error measure would
# see any such difference.)
_erfc = np.vectorize(math.erfc, otypes=[np.float64])
_exp = np.vectorize(math.exp, otypes=[np.float64])


def _mul(u, v):
    """u * v, but 0 where one factor is 0 and the other infinite; NaN propagates."""
    with np.errstate(invalid="ignore", over="ignore"):
        p = u * v
    zero_inf = ((u == 0) & np.isinf(v)) | (np.isinf(u) & (v == 0))
    return np.where(zero_inf, 0.0, p)


def _sigmoid(x, alpha):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _gelu(x, alpha):
    p = 0.5 * _erfc(x * -_SQRT1_2)
    with np.errstate(invalid="ignore"):
        return np.where(p == 0.0, 0.0, x * p)


_REF_FORWARD = {
    "identity": lambda x, alpha: x.copy(),
    "sigmoid": _sigmoid,
    "tanh": lambda x, alpha: np.tanh(x),
    "relu": lambda x, alpha: np.where(x < 0, 0.0, x),
    "leaky_relu": lambda x, alpha: np.where(x < 0, _mul(alpha, x), x),
    "elu": lambda x, alpha: np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0))),
    "gelu": _gelu,
}


def _d_sigmoid(x, alpha):
    e = np.exp(-np.abs(x))
    return e / ((1.0 + e) * (1.0 + e))


def _d_tanh(x, alpha):
    e = np.exp(-2.0 * np.abs(x))
    return 4.0 * e / ((1.0 + e) * (1.0 + e))


def _d_gelu(x, alpha):
    phi = _INV_SQRT_2PI * _exp(-0.5 * (x * x))
    with np.errstate(invalid="ignore", over="ignore"):
        return 0.5 * _erfc(x * -_SQRT1_2) + np.where(phi == 0.0, 0.0, x * phi)


_REF_DERIVATIVE = {
    "identity": lambda x, alpha: np.where(np.isnan(x), x, 1.0),  # 1, but NaN at NaN like the others
    "sigmoid": _d_sigmoid,
    "tanh": _d_tanh,
    "relu": lambda x, alpha: np.where(x > 0, 1.0, np.where(x <= 0, 0.0, x)),
    "leaky_relu": lambda x, alpha: np.where(x > 0, 1.0, np.where(x <= 0, alpha, x)),
    "elu": lambda x, alpha: np.where(x > 0, 1.0, alpha * np.exp(np.minimum(x, 0.0))),
    "gelu": _d_gelu,
}


def _ref_backward(act):
    def back(dy, z, alpha=None):
        if act in DEFAULT_ALPHA and alpha is None:
            alpha = DEFAULT_ALPHA[act]
        return _mul(dy, _REF_DERIVATIVE[act](z, alpha))
    back.__name__ = f"{act}_reference_backward"
    back.__doc__ = f"dy * {act}'(z) in float64, no checks (alpha None = the default)."
    return back


#: act -> f(dy64, z64, alpha) -> dy * act'(z) in float64, no argument checks (alpha None = default).
#: kernels.verify uses these to bound the errors of linear_backward.
REFERENCE_BACKWARD = {act: _ref_backward(act) for act in ACT_CODES}


def _forward_args(name, x, alpha):
    code, alpha = check_activation(name, alpha)
    return _check.array("x", x), code, alpha


def _backward_args(name, dy, x, alpha):
    code, alpha = check_activation(name, alpha)
    dy = _check.array("dy", dy)
    x = _check.array("x", x, shape=dy.shape, dtype=dy.dtype)
    return dy, x, code, alpha


_FORMULA = {
    "identity": ("x", "1"),
    "sigmoid": ("1 / (1 + exp(-x))", "sigmoid(x) * (1 - sigmoid(x))"),
    "tanh": ("tanh(x)", "1 - tanh(x)^2"),
    "relu": ("max(x, 0)", "1 if x > 0 else 0 (0 at x = 0)"),
    "leaky_relu": ("x if x > 0 else alpha * x", "1 if x > 0 else alpha (alpha at x = 0)"),
    "elu": ("x if x > 0 else alpha * (exp(x) - 1)", "1 if x > 0 else alpha * exp(x) (alpha at x = 0)"),
    "gelu": ("x * Phi(x), Phi the standard normal CDF (erf form)", "Phi(x) + x * phi(x)"),
}


def _alpha_doc(act):
    if act == "leaky_relu":
        return "alpha: the negative slope, any finite real; None means 0.01."
    if act == "elu":
        return "alpha: finite, >= 0; None means 1.0 (elu(-inf) = -alpha)."
    return "alpha: must be None (this activation has no parameter)."


def _make_reference(act):
    def forward(x, alpha=None):
        x, _, a = _forward_args(act, x, alpha)
        with np.errstate(over="ignore"):
            return _REF_FORWARD[act](x.astype(np.float64), a).astype(x.dtype)

    def backward(dy, x, alpha=None):
        dy, x, _, a = _backward_args(act, dy, x, alpha)
        with np.errstate(over="ignore"):
            return REFERENCE_BACKWARD[act](dy.astype(np.float64), x.astype(np.float64), a).astype(dy.dtype)

    f, d = _FORMULA[act]
    forward.__name__ = forward.__qualname__ = f"{act}_forward"
    forward.__doc__ = (
        f"y = {act}(x) = {f}.\n\n"
        f"x: any shape, float32 or float64. {_alpha_doc(act)}\n"
        "Returns y, a new array of x's shape and dtype (nothing is written in place).\n"
        "Computed in float64 and rounded once; NaN in x gives NaN out; see the module docstring for\n"
        "the limits at +-inf.")
    backward.__name__ = backward.__qualname__ = f"{act}_backward"
    backward.__doc__ = (
        f"dx = dy * {act}'(x), {act}'(x) = {d}.\n\n"
        "dy: upstream gradient; x: the forward INPUT; same shape (any) and dtype (float32 or float64).\n"
        f"{_alpha_doc(act)}\n"
        "Returns dx, a new array (nothing is written in place). NaN in dy or x gives NaN; a zero\n"
        "derivative times an infinite dy gives 0; finite dy with infinite x gives a finite dx.")
    return forward, backward


# ---- PReLU reference --------------------------------------------------------------------------------

def _prelu_args(x, a, dy=None):
    if dy is not None:
        dy = _check.array("dy", dy, ndim=2)
        x = _check.array("x", x, shape=dy.shape, dtype=dy.dtype)
    else:
        x = _check.array("x", x, ndim=2)
    a = _check.array("a", a, ndim=1, dtype=x.dtype)
    if a.shape not in ((x.shape[1],), (1,)):
        raise ValueError(f"a: expected shape ({x.shape[1]},) (one slope per channel of x {x.shape}) "
                         f"or (1,) (one shared slope), got {a.shape}")
    return dy, x, a


def prelu_forward(x, a):
    """y = x if x > 0 else a * x, with a learnable slope a.

    x: (N, C); a: (C,) one slope per channel (column), or (1,) one slope shared by all; one dtype,
    float32 or float64. Returns y (N, C), a new array. a may hold any value (NaN in a gives NaN for
    the x <= 0 entries); a = 0 maps -inf to 0 (0 * inf is taken as 0). N = 0 or C = 0 gives an empty y.
    """
    _, x, a = _prelu_args(x, a)
    x64, a64 = x.astype(np.float64), a.astype(np.float64)[None, :]
    return np.where(x < 0, _mul(a64, x64), x64).astype(x.dtype)


def prelu_backward(dy, x, a):
    """Gradients of prelu_forward: (dx, da).

    dy, x: (N, C); a: (C,) or (1,) as in prelu_forward; one dtype. dx = dy * (1 if x > 0 else a)
    (slope a at x = 0); da = sum of dy * min(x, 0) over the rows (and over the channels too when a
    is (1,)), accumulated in float64. Returns (dx (N, C), da of a's shape), new arrays. NaN in dy or
    x gives NaN; 0 * inf is taken as 0. N = 0 gives da = 0.
    """
    dy, x, a = _prelu_args(x, a, dy)
    dy64, x64, a64 = dy.astype(np.float64), x.astype(np.float64), a.astype(np.float64)[None, :]
    d = np.where(x64 > 0, 1.0, np.where(x64 <= 0, a64, x64))
    dx = _mul(dy64, d)
    terms = _mul(dy64, np.minimum(x64, 0.0))
    da = np.array([terms.sum()]) if a.shape == (1,) else terms.sum(axis=0)
    return dx.astype(dy.dtype), da.astype(dy.dtype)


# ---- Numba ---------------------------------------------------------------------------------------

@njit
def _mul1(u, v):
    if (u == 0.0 and math.isinf(v)) or (math.isinf(u) and v == 0.0):
        return 0.0
    return u * v


@njit
def forward1(x, code, alpha):
    """act(x) for one float64 x (the DP_ACT code), as in the reference; used by linear too."""
    if code == 0:
        return x
    if code == 1:
        e = math.exp(-abs(x))
        if x >= 0.0:
            return 1.0 / (1.0 + e)
        return e / (1.0 + e)
    if code == 2:
        return math.tanh(x)
    if code == 3:
        return 0.0 if x < 0.0 else x
    if code == 4:
        return _mul1(alpha, x) if x < 0.0 else x
    if code == 5:
        return x if x > 0.0 else alpha * math.expm1(x)
    if code == 6:
        p = 0.5 * math.erfc(x * -_SQRT1_2)
        return 0.0 if p == 0.0 else x * p
    return math.nan


@njit
def derivative1(x, code, alpha):
    """act'(x) for one float64 x, as in the reference."""
    if code == 0:
        return x if x != x else 1.0
    if code == 1:
        e = math.exp(-abs(x))
        return e / ((1.0 + e) * (1.0 + e))
    if code == 2:
        e = math.exp(-2.0 * abs(x))
        return 4.0 * e / ((1.0 + e) * (1.0 + e))
    if code == 3:
        return 1.0 if x > 0.0 else (0.0 if x <= 0.0 else x)
    if code == 4:
        return 1.0 if x > 0.0 else (alpha if x <= 0.0 else x)
    if code == 5:
        return 1.0 if x > 0.0 else alpha * math.exp(x)
    if code == 6:
        phi = _INV_SQRT_2PI * math.exp(-0.5 * (x * x))
        return 0.5 * math.erfc(x * -_SQRT1_2) + (0.0 if phi == 0.0 else x * phi)
    return math.nan


@njit
def backward1(dy, x, code, alpha):
    """dy * act'(x) for float64 dy, x (0 * inf taken as 0)."""
    return _mul1(dy, derivative1(x, code, alpha))


@njit
def _act_forward_nb(y, x, code, alpha):
    for i in range(x.size):
        y[i] = forward1(np.float64(x[i]), code, alpha)


@njit
def act_backward_nb(dx, dy, x, code, alpha):
    """dx = dy * act'(x) over flat arrays; used by linear's backward too."""
    for i in range(dy.size):
        dx[i] = backward1(np.float64(dy[i]), np.float64(x[i]), code, alpha)


@njit
def _prelu_forward_nb(y, x, a):
    N, C = x.shape
    shared = a.size == 1
    for i in range(N):
        for c in range(C):
            xv = np.float64(x[i, c])
            av = np.float64(a[0] if shared else a[c])
            y[i, c] = _mul1(av, xv) if xv < 0.0 else xv


@njit
def _prelu_backward_nb(dx, acc, dy, x, a):
    # acc: float64 (C,) accumulators of da, zeroed by the caller
    N, C = x.shape
    shared = a.size == 1
    for i in range(N):
        for c in range(C):
            xv = np.float64(x[i, c])
            dyv = np.float64(dy[i, c])
            av = np.float64(a[0] if shared else a[c])
            d = 1.0 if xv > 0.0 else (av if xv <= 0.0 else xv)
            dx[i, c] = _mul1(dyv, d)
            acc[c] += _mul1(dyv, min(xv, 0.0) if xv == xv else xv)


def _make_numba(act):
    code = ACT_CODES[act]

    def forward(x, alpha=None):
        x, _, a = _forward_args(act, x, alpha)
        y = np.empty_like(x)
        _act_forward_nb(y.reshape(-1), x.reshape(-1), code, a)
        return y

    def backward(dy, x, alpha=None):
        dy, x, _, a = _backward_args(act, dy, x, alpha)
        dx = np.empty_like(dy)
        act_backward_nb(dx.reshape(-1), dy.reshape(-1), x.reshape(-1), code, a)
        return dx

    forward.__name__ = forward.__qualname__ = f"{act}_forward_numba"
    backward.__name__ = backward.__qualname__ = f"{act}_backward_numba"
    return forward, backward


def _da_from_acc(acc, a, dtype):
    return np.array([acc.sum()], dtype=dtype) if a.shape == (1,) else acc.astype(dtype)


def prelu_forward_numba(x, a):
    _, x, a = _prelu_args(x, a)
    y = np.empty_like(x)
    _prelu_forward_nb(y, x, a)
    return y


def prelu_backward_numba(dy, x, a):
    dy, x, a = _prelu_args(x, a, dy)
    dx = np.empty_like(dy)
    acc = np.zeros(x.shape[1], dtype=np.float64)
    _prelu_backward_nb(dx, acc, dy, x, a)
    return dx, _da_from_acc(acc, a, dy.dtype)


# ---- C -------------------------------------------------------------------------------------------

def _make_c(act):
    code = ACT_CODES[act]

    def forward(x, alpha=None):
        x, _, a = _forward_args(act, x, alpha)
        y = np.empty_like(x)
        _c.fn("activation_forward", x.dtype)(_c.ptr_out(y), _c.ptr(x), x.size, code, a)
        return y

    def backward(dy, x, alpha=None):
        dy, x, _, a = _backward_args(act, dy, x, alpha)
        dx = np.empty_like(dy)
        _c.fn("activation_backward", dy.dtype)(_c.ptr_out(dx), _c.ptr(dy), _c.ptr(x), dy.size, code, a)
        return dx

    forward.__name__ = forward.__qualname__ = f"{act}_forward_c"
    backward.__name__ = backward.__qualname__ = f"{act}_backward_c"
    return forward, backward


def prelu_forward_c(x, a):
    _, x, a = _prelu_args(x, a)
    y = np.empty_like(x)
    N, C = x.shape
    _c.fn("prelu_forward", x.dtype)(_c.ptr_out(y), _c.ptr(x), _c.ptr(a), N, C, a.shape[0])
    return y


def prelu_backward_c(dy, x, a):
    dy, x, a = _prelu_args(x, a, dy)
    dx = np.empty_like(dy)
    da = np.empty_like(a)
    N, C = x.shape
    _c.fn("prelu_backward", x.dtype)(_c.ptr_out(dx), _c.ptr_out(da), _c.ptr(dy), _c.ptr(x), _c.ptr(a),
                                     N, C, a.shape[0])
    return dx, da


# ---- registry -------------------------------------------------------------------------------------

KERNELS: dict[str, dict] = {}
for _act in ACT_CODES:
    _ref_f, _ref_b = _make_reference(_act)
    _nb_f, _nb_b = _make_numba(_act)
    _c_f, _c_b = _make_c(_act)
    globals()[f"{_act}_forward"], globals()[f"{_act}_backward"] = _ref_f, _ref_b
    KERNELS[f"{_act}_forward"] = {"numpy": _ref_f, "numba": _nb_f, "c": _c_f}
    KERNELS[f"{_act}_backward"] = {"numpy": _ref_b, "numba": _nb_b, "c": _c_b}
KERNELS["prelu_forward"] = {"numpy": prelu_forward, "numba": prelu_forward_numba, "c": prelu_forward_c}
KERNELS["prelu_backward"] = {"numpy": prelu_backward, "numba": prelu_backward_numba, "c": prelu_backward_c}


# ---- verification cases: make(rng, n, dtype) -> kwargs, shapes built from the awkward size n -------

_SPECIAL = (np.inf, -np.inf, np.nan, 0.0, -0.0, 1e30, -1e30, 40.0, -40.0)


def _input(rng, n, dtype):
    """(n, n % 4 + 2, 3): a 3-d, non-square input, mostly N(0, 3^2), with the special values first."""
    x = 3.0 * rng.standard_normal((n, n % 4 + 2, 3))
    flat = x.reshape(-1)
    k = min(len(_SPECIAL), flat.size // 2)
    flat[:k] = _SPECIAL[:k]
    return x.astype(dtype)


def _alpha_for(act, n):
    return {"leaky_relu": (0.2, -0.3, 0.0, 1.0)[n % 4], "elu": (1.0, 0.7, 0.0, 1.2)[n % 4]}.get(act)


def _fwd_case(act):
    return lambda rng, n, dt: {"x": _input(rng, n, dt), "alpha": _alpha_for(act, n)}


def _bwd_case(act):
    return lambda rng, n, dt: {"dy": rng.standard_normal((n, n % 4 + 2, 3)).astype(dt),
                               "x": _input(rng, n, dt), "alpha": _alpha_for(act, n)}


def _prelu_case(rng, n, dt, backward):
    C = n % 5 + 3
    x = 3.0 * rng.standard_normal((n, C))
    x.reshape(-1)[: min(3, x.size // 2)] = (-np.inf, np.inf, 0.0)[: min(3, x.size // 2)]
    a = rng.uniform(-0.5, 0.5, (C,) if n % 2 else (1,))
    kw = {"x": x.astype(dt), "a": a.astype(dt)}
    if backward:
        kw = {"dy": rng.standard_normal((n, C)).astype(dt), **kw}
    return kw


CASES = {}
for _act in ACT_CODES:
    CASES[f"{_act}_forward"] = _fwd_case(_act)
    CASES[f"{_act}_backward"] = _bwd_case(_act)
CASES["prelu_forward"] = lambda rng, n, dt: _prelu_case(rng, n, dt, False)
CASES["prelu_backward"] = lambda rng, n, dt: _prelu_case(rng, n, dt, True)
