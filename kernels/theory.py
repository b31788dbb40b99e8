"""Mean-field theory of signal and gradient propagation in deep MLPs at initialization.

Pure functions (NumPy/SciPy, float64), used by ``kernels.depth`` to put a prediction next to every
measurement. Notation (Poole et al. 2016; Schoenholz et al. 2017):

    h^l = x^{l-1} W_l + b_l,   W_ij ~ (0, sigma_w2 / fan_in),   b_j ~ (0, sigma_b2),   x^l = phi(h^l)
    q^l  = sigma_w2 * E[phi(sqrt(q^{l-1}) z)^2] + sigma_b2          (the length map, z ~ N(0, 1))
    chi_l = sigma_w2 * E[phi'(sqrt(q^l) z)^2]                      (squared gradient-norm factor)

so that, with the gradient-independence assumption, ||dl/dx^{l-1}||^2 ~= chi_l ||dl/dx^l||^2 and the
predicted input/output gradient ratio is sqrt(prod_l chi_l). ``predict`` covers the architectures
of ``kernels.depth`` (plain, batch norm, layer norm, residual, dropout) and returns None where no
theory applies. docs/depth.md derives every case and gives the sources.

Gaussian expectations E[f(sqrt(q) z)] are closed forms where they exist (identity, relu,
leaky_relu/prelu) and otherwise composite Gauss-Legendre quadrature in h = sqrt(q) z on pieces cut at
the scales of both the activation (|h| ~ 1) and the Gaussian (|h| ~ sqrt(q)), checked against
scipy.integrate.quad in tests/test_theory.py:
fixed-order Gauss-Hermite in z misses the O(1)-wide bump of tanh'^2 once sqrt(q) exceeds its node
spacing (q of a few hundred), and then gives chi wrong by orders of magnitude.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np
from scipy import integrate, optimize, special

ACTIVATIONS = ("identity", "sigmoid", "tanh", "relu", "leaky_relu", "prelu", "elu", "gelu")
#: default alpha per activation: leaky_relu slope, PyTorch's PReLU initial slope, ELU alpha
DEFAULT_ALPHA = {"leaky_relu": 0.01, "prelu": 0.25, "elu": 1.0}

_SQRT2PI = math.sqrt(2.0 * math.pi)


def _alpha(act: str, alpha):
    if act not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {', '.join(ACTIVATIONS)}, got {act!r}")
    return DEFAULT_ALPHA.get(act) if alpha is None else float(alpha)


# ---- the activations and their derivatives, float64, vectorised --------------------------------

def phi(act: str, h, alpha=None):
    """phi(h) for ``act`` (prelu = leaky_relu with slope alpha, default 0.25)."""
    a = _alpha(act, alpha)
    h = np.asarray(h, dtype=np.float64)
    if act == "identity":
        return h.copy()
    if act == "sigmoid":
        return special.expit(h)
    if act == "tanh":
        return np.tanh(h)
    if act == "relu":
        return np.maximum(h, 0.0)
    if act in ("leaky_relu", "prelu"):
        return np.where(h >= 0, h, a * h)
    if act == "elu":
        return np.where(h > 0, h, a * np.expm1(np.minimum(h, 0.0)))
    return h * special.ndtr(h)  # gelu, exact (erf) form


def dphi(act: str, h, alpha=None):
    """phi'(h) (relu'(0) = 0, leaky'(0) = 1: the value at the kink has measure zero)."""
    a = _alpha(act, alpha)
    h = np.asarray(h, dtype=np.float64)
    if act == "identity":
        return np.ones_like(h)
    if act == "sigmoid":
        s = special.expit(h)
        return s * (1.0 - s)
    if act == "tanh":
        return 1.0 / np.cosh(np.minimum(np.abs(h), 350.0)) ** 2
    if act == "relu":
        return (h > 0).astype(np.float64)
    if act in ("leaky_relu", "prelu"):
        return np.where(h >= 0, 1.0, a)
    if act == "elu":
        return np.where(h > 0, 1.0, a * np.exp(np.minimum(h, 0.0)))
    return special.ndtr(h) + h * np.exp(-0.5 * h * h) / _SQRT2PI  # gelu


# ---- Gaussian expectations --------------------------------------------------------------------

_GL_X, _GL_W = np.polynomial.legendre.leggauss(32)
_TINY = 1e-300


def breakpoints(q: float) -> np.ndarray:
    """Piece boundaries on [0, 14 sqrt(q)] for integrating against N(0, q): 0, a geometric ladder
    2^k from 1/8 (the activations' own scale, where tanh'^2 and sigmoid' live) up to 14 sqrt(q), and
    steps of sqrt(q)/2 (the Gaussian's scale). Beyond 14 sqrt(q) the weight is < 1e-44."""
    s = math.sqrt(q)
    top = 14.0 * s
    ladder = 2.0 ** np.arange(-3, max(-3, math.ceil(math.log2(top))) + 1) if top > 0.125 else np.empty(0)
    pts = np.concatenate(([0.0, top], ladder[ladder < top], 0.5 * s * np.arange(1, 28)))
    return np.unique(pts)


def _nodes(q: float) -> tuple[np.ndarray, np.ndarray]:
    """Nodes h and weights w with sum(w * f(h)) = E[f(sqrt(q) z)] (32-point Gauss-Legendre on each
    piece of ``breakpoints`` and its mirror image, times the N(0, q) density)."""
    b = breakpoints(q)
    lo, hi = b[:-1, None], b[1:, None]
    half = 0.5 * (hi - lo)
    h = (lo + half * (1.0 + _GL_X)).ravel()
    w = (half * _GL_W).ravel()
    s = math.sqrt(q)
    w = w * np.exp(-0.5 * (h / s) ** 2) / (s * _SQRT2PI)
    return np.concatenate((-h[::-1], h)), np.concatenate((w[::-1], w))


def gauss_expect(f, q: float) -> float:
    """E[f(sqrt(q) z)], z ~ N(0, 1), accurate for any q >= 0: f is vectorised over a float64 array
    of h = sqrt(q) z. Composite Gauss-Legendre on the pieces of ``breakpoints`` (so that neither the
    activation's scale nor the Gaussian's is skipped, however large or small q); q = 0 gives the
    limit q -> 0+, the mean of the one-sided values at 0 (f may jump there, like relu')."""
    q = float(q)
    if not q >= 0.0 or math.isinf(q):
        raise ValueError(f"q: expected a finite variance >= 0, got {q}")
    if q == 0.0:
        return float(0.5 * (np.sum(f(np.array([-_TINY, _TINY])))))
    h, w = _nodes(q)
    return float(np.dot(w, f(h)))


def gauss_expect_quad(f, q: float) -> float:
    """The same expectation by scipy.integrate.quad on every piece (slow; the test reference).
    f: a scalar function of h."""
    q = float(q)
    s = math.sqrt(q)
    b = breakpoints(q)
    total = 0.0
    for sign in (-1.0, 1.0):
        for lo, hi in zip(b[:-1], b[1:], strict=True):
            val, _ = integrate.quad(lambda h, sg=sign: f(sg * h) * math.exp(-0.5 * (h / s) ** 2) / (s * _SQRT2PI),
                                    lo, hi, epsabs=0.0, epsrel=1e-13, limit=200)
            total += val
    return total


@functools.lru_cache(maxsize=200_000)
def _moments(act: str, q: float, alpha) -> tuple[float, float, float]:
    """(E[phi], E[phi^2], E[phi'^2]) at variance q; closed forms where they exist."""
    a = _alpha(act, alpha)
    if act == "identity":
        return 0.0, q, 1.0
    if act == "relu":
        return math.sqrt(q / (2 * math.pi)), q / 2.0, 0.5
    if act in ("leaky_relu", "prelu"):
        return (1.0 - a) * math.sqrt(q / (2 * math.pi)), q * (1 + a * a) / 2.0, (1 + a * a) / 2.0
    if q == 0.0:
        h, w = np.array([-_TINY, _TINY]), np.array([0.5, 0.5])
    else:
        h, w = _nodes(q)
    y, d = phi(act, h, alpha), dphi(act, h, alpha)
    return float(w @ y), float(w @ (y * y)), float(w @ (d * d))


def moments(act: str, q: float, alpha=None) -> tuple[float, float, float]:
    """(E[phi(sqrt(q) z)], E[phi(sqrt(q) z)^2], E[phi'(sqrt(q) z)^2]) for z ~ N(0, 1)."""
    return _moments(act, float(q), None if alpha is None else float(alpha))


def length_map(act: str, q: float, sigma_w2: float, sigma_b2: float = 0.0, alpha=None) -> float:
    """q^l = sigma_w2 * E[phi(sqrt(q^{l-1}) z)^2] + sigma_b2 (Poole et al. 2016)."""
    return sigma_w2 * moments(act, q, alpha)[1] + sigma_b2


def chi(act: str, q: float, sigma_w2: float, alpha=None) -> float:
    """chi = sigma_w2 * E[phi'(sqrt(q) z)^2]: the factor of the squared gradient norm per layer
    (Schoenholz et al. 2017). ReLU with sigma_w2 = 2 gives exactly 1."""
    return sigma_w2 * moments(act, q, alpha)[2]


def fixed_point(act: str, sigma_w2: float, sigma_b2: float, alpha=None) -> float:
    """q* with q* = length_map(q*): closed form for the piecewise-linear activations (inf when the
    map diverges), else a bracketed root; 0 when it is the only fixed point (sigma_b2 = 0)."""
    a = _alpha(act, alpha)
    if act in ("identity", "relu", "leaky_relu", "prelu"):
        slope = {"identity": 1.0, "relu": 0.5}.get(act, (1 + (a or 0) ** 2) / 2.0) * sigma_w2
        if slope >= 1.0:
            return 0.0 if (sigma_b2 == 0.0 and slope == 1.0) else math.inf
        return sigma_b2 / (1.0 - slope)

    def g(q):
        return length_map(act, q, sigma_w2, sigma_b2, alpha) - q

    lo = 1e-12
    if g(lo) <= 0:
        return 0.0
    hi = 1.0
    while g(hi) > 0:
        hi *= 4.0
        if hi > 1e12:
            return math.inf
    return optimize.brentq(g, lo, hi, xtol=1e-14, rtol=1e-12)


def critical_sigma_w2(act: str, sigma_b2: float, alpha=None, lo: float = 0.5, hi: float = 20.0) -> float:
    """The order-to-chaos boundary: sigma_w2 where chi at the fixed point q* equals 1
    (Schoenholz et al. 2017, Fig. 1: about 1.76 for tanh at sigma_b2 = 0.05)."""
    def g(sw):
        q = fixed_point(act, sw, sigma_b2, alpha)
        return chi(act, q, sw, alpha) - 1.0

    return optimize.brentq(g, lo, hi, xtol=1e-12)


# ---- per-layer predictions for the harness's architectures ---------------------------------------

SOURCES = {
    "plain": "Poole et al. 2016; Schoenholz et al. 2017 (length map and chi)",
    "dropout": "Schoenholz et al. 2017, dropout section (sigma_w2 -> sigma_w2/(1-p))",
    "batch": "Yang et al. 2019 (batch norm: large-batch limit, E[phi'^2]/Var[phi]; ReLU pi/(pi-1))",
    "layer": "docs/depth.md (layer norm, derived with the assumptions of Schoenholz et al. 2017)",
    "residual": "Yang & Schoenholz 2017 (reduced residual net); scaled branches: Hanin & Rolnick 2018",
    "residual_norm": "De & Smith 2020 (normalised residual branches ~ 1/sqrt(variance of the stream))",
    "fixup": "Zhang et al. 2019 (Fixup: zero-initialised branch output, block = identity at init)",
    "zero": "all weights zero: every layer's Jacobian is 0",
}


@dataclass
class Prediction:
    """Per-layer mean-field prediction for a depth-L net.

    chi[l-1] is the predicted ||dl/dx^{l-1}||^2 / ||dl/dx^l||^2 for layer l = 1..L, q[l] the predicted
    second moment of the layer-l pre-activation (plain nets) or of the stream x^l (residual nets),
    log_ratio = ln(||dl/dx^0|| / ||dl/dx^L||) = 0.5 * sum(ln chi). approximate = True where the
    prediction is a large-batch or large-width limit rather than the mean-field value itself.
    """

    chi: np.ndarray
    q: np.ndarray
    source: str
    approximate: bool = False
    notes: list = field(default_factory=list)

    @property
    def log_ratio(self) -> float:
        with np.errstate(divide="ignore"):
            return float(0.5 * np.sum(np.log(self.chi)))

    def log_norms(self) -> np.ndarray:
        """ln ||dl/dx^l|| - ln ||dl/dx^L|| for l = 0..L (the predicted profile)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            half = 0.5 * np.log(self.chi)
        out = np.zeros(len(self.chi) + 1)
        out[:-1] = np.cumsum(half[::-1])[::-1]
        return out


def _per_layer(value, depth, name):
    arr = np.broadcast_to(np.asarray(value, dtype=np.float64), (depth,)).copy()
    if np.any(~np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{name}: expected finite values >= 0, got {value!r}")
    return arr


def predict(act: str, depth: int, sigma_w2, sigma_b2: float = 0.0, *, alpha=None, norm: str = "none",
            residual: str = "none", dropout: float = 0.0, q0: float = 1.0) -> Prediction | None:
    """Mean-field prediction for the architecture built by ``kernels.depth`` (None: no theory).

    act, alpha: activation (prelu uses its initial slope, default 0.25). sigma_w2: scalar or one
    value per layer (fan_in * Var(W_l)); sigma_b2: bias variance. norm: none | batch | layer (before
    the activation). residual: none | plain | scaled | fixup (pre-activation blocks
    x^l = x^{l-1} + s (drop(phi(norm(x^{l-1}))) W_l + b_l), s = 1, 1/sqrt(L), 1; fixup has W_l = 0).
    dropout: drop probability p after the activation. q0: mean square of the input entries.
    Normalised nets: the large-width (layer) / large-batch (batch) limit; finite batches explode
    somewhat faster (Yang et al. 2019), see docs/depth.md.
    """
    _alpha(act, alpha)
    depth = int(depth)
    if depth < 1:
        raise ValueError(f"depth: expected >= 1, got {depth}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout: expected 0 <= p < 1, got {dropout}")
    sw = _per_layer(sigma_w2, depth, "sigma_w2")
    sb = float(sigma_b2)
    rho = 1.0 - float(dropout)
    m = functools.partial(moments, act, alpha=alpha)
    chis = np.empty(depth)
    qs = np.empty(depth + 1)
    notes = []
    approximate = False

    if residual == "fixup":
        # zero-initialised branch output: the block is the identity, whatever the norm
        chis[:] = 1.0
        qs[0] = q0
        qs[1:] = q0 + sb * np.arange(1, depth + 1)
        return Prediction(chis, qs, SOURCES["fixup"])

    if residual in ("plain", "scaled"):
        s2 = 1.0 / depth if residual == "scaled" else 1.0
        qs[0] = q0  # second moment of the stream x^l (norm none, layer) or its batch variance (batch)
        for i in range(depth):
            qprev = qs[i]
            if norm == "none":
                mean, m2, d2 = m(qprev)
                chis[i] = 1.0 + s2 * sw[i] * d2 / rho
                qs[i + 1] = qprev + s2 * (sw[i] * m2 / rho + sb)
            else:
                if qprev <= 0:
                    return None
                mean, m2, d2 = m(1.0)
                chis[i] = 1.0 + s2 * sw[i] * d2 / rho / qprev
                if norm == "layer":
                    qs[i + 1] = qprev + s2 * (sw[i] * m2 / rho + sb)
                else:  # the bias is constant over the batch: it adds no batch variance
                    qs[i + 1] = qprev + s2 * sw[i] * (m2 / rho - mean * mean)
        if norm == "none":
            src = SOURCES["residual"]
        else:
            src = SOURCES["residual_norm"]
            approximate = True
            notes.append("normalised residual: large-width/large-batch limit")
        if dropout:
            src += "; " + SOURCES["dropout"]
        return Prediction(chis, qs, src, approximate, notes)

    if residual != "none":
        raise ValueError(f"residual: expected none, plain, scaled or fixup, got {residual!r}")

    if norm == "none":
        qs[0] = q0
        q = sw[0] * q0 + sb  # pre-activation variance of layer 1
        for i in range(depth):
            qs[i + 1] = q
            mean, m2, d2 = m(q)
            chis[i] = sw[i] * d2 / rho
            if i + 1 < depth:
                q = sw[i + 1] * m2 / rho + sb
        if np.all(sw == 0):
            src = SOURCES["zero"]
        else:
            src = SOURCES["plain"] + ("; " + SOURCES["dropout"] if dropout else "")
        return Prediction(chis, qs, src)

    if norm not in ("batch", "layer"):
        raise ValueError(f"norm: expected none, batch or layer, got {norm!r}")
    if np.any(sw == 0):
        return None  # a normalised constant: degenerate, eps decides
    mean, m2, d2 = m(1.0)  # the normalised pre-activation is ~ N(0, 1)
    qs[0] = q0
    approximate = True
    for i in range(depth):
        if norm == "layer":
            prev = q0 if i == 0 else m2 / rho  # second moment of x^{l-1}
            denom = sw[i] * prev + sb            # row variance of h^l
        else:
            prev = q0 if i == 0 else m2 / rho - mean * mean  # batch variance of x^{l-1}
            denom = sw[i] * prev
        if denom <= 0:
            return None
        chis[i] = sw[i] * d2 / rho / denom
        qs[i + 1] = 1.0
    src = SOURCES[norm] + ("; " + SOURCES["dropout"] if dropout else "")
    notes.append(f"{norm} norm: large-{'batch' if norm == 'batch' else 'width'} limit")
    return Prediction(chis, qs, src, approximate, notes)


def jacobian_spectrum(act: str, depth: int, sigma_w2: float, sigma_b2: float, *, orthogonal: bool,
                      alpha=None) -> tuple[float, float | None]:
    """(mean, variance) of the squared singular values of the input-output Jacobian of a plain net
    started at its fixed point q* (Pennington, Schoenholz & Ganguli 2017):
    mean = chi^L; variance = L (mu2/mu1^2 - 1 - s1) at criticality (chi = 1), s1 = -1 for Gaussian
    and 0 for orthogonal weights, mu_k = E[phi'(h)^(2k)]. The variance is None off criticality."""
    q = fixed_point(act, sigma_w2, sigma_b2, alpha)
    if not math.isfinite(q):
        return math.inf, None
    c = chi(act, q, sigma_w2, alpha)
    mean = c ** depth
    if abs(c - 1.0) > 1e-3:
        return mean, None
    mu1 = moments(act, q, alpha)[2]
    mu2 = gauss_expect(lambda h: dphi(act, h, alpha) ** 4, q)
    s1 = 0.0 if orthogonal else -1.0
    return mean, depth * (mu2 / mu1 ** 2 - 1.0 - s1)
