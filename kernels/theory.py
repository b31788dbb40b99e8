"""Mean-field theory of signal and gradient propagation through deep random networks.

For a layer h^l = x^{l-1} W_l + b_l, x^l = φ(h^l) with W entries of variance σ_w²/fan_in and b
entries of variance σ_b², in the infinite-width limit (Poole et al. 2016; Schoenholz et al. 2017):

    length map     q^l = σ_w² · E_z[φ(√q^{l-1} z)²] + σ_b²       (q^1 = σ_w² · q_in + σ_b²)
    gradient map   χ^l = σ_w² · E_z[φ'(√q^l z)²]                ‖∂ℓ/∂x^{l-1}‖² ≈ χ^l ‖∂ℓ/∂x^l‖²

with z ~ N(0, 1). The gradient norm (not squared) therefore grows by √χ^l per layer from output to
input, and ‖∂ℓ/∂x⁰‖ / ‖∂ℓ/∂x^L‖ ≈ Π_l √χ^l. χ < 1 at the fixed point q* is the ordered (vanishing)
phase, χ > 1 the chaotic (exploding) one, χ = 1 the edge of chaos.

Every Gaussian expectation is integrated adaptively (scipy.integrate.quad on a grid that scales
with 1/√q), not by fixed-order Gauss–Hermite, which goes wrong when q is large: φ'(√q z)² of a
saturating φ is then a spike of width 1/√q that a fixed set of nodes misses. ReLU, leaky ReLU and the
identity use their closed forms. docs/depth.md cites the sources of each case.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import integrate, optimize, special

ACTIVATIONS = ("identity", "sigmoid", "tanh", "relu", "leaky_relu", "prelu", "elu", "gelu")
_SQRT2 = math.sqrt(2.0)
_INV_SQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _phi(name: str, alpha: float):
    """(φ, φ') as float64 scalar functions, finite at every finite input."""
    if name == "identity":
        return (lambda u: u), (lambda u: 1.0)
    if name == "sigmoid":
        return special.expit, (lambda u: special.expit(u) * special.expit(-u))
    if name == "tanh":
        return math.tanh, (lambda u: 1.0 / math.cosh(u) ** 2 if abs(u) < 350 else 0.0)
    if name == "relu":
        return (lambda u: max(u, 0.0)), (lambda u: 1.0 if u > 0 else 0.0)
    if name in ("leaky_relu", "prelu"):
        return (lambda u: u if u > 0 else alpha * u), (lambda u: 1.0 if u > 0 else alpha)
    if name == "elu":
        return (lambda u: u if u > 0 else alpha * math.expm1(u)), (lambda u: 1.0 if u > 0 else alpha * math.exp(u))
    if name == "gelu":
        return ((lambda u: 0.5 * u * special.erfc(-u / _SQRT2)),
                (lambda u: 0.5 * special.erfc(-u / _SQRT2) + u * _INV_SQRT2PI * math.exp(-0.5 * u * u)))
    raise ValueError(f"activation: expected one of {', '.join(ACTIVATIONS)}; got {name!r}")


def default_alpha(name: str) -> float:
    return {"leaky_relu": 0.01, "prelu": 0.25, "elu": 1.0}.get(name, 0.0)


def gaussian_expectation(f, q: float) -> float:
    """E_z[f(√q·z)], z ~ N(0, 1), accurate for any q >= 0 (adaptive quadrature)."""
    if q < 0 or not math.isfinite(q):
        raise ValueError(f"q: expected a finite variance >= 0, got {q!r}")
    if q == 0:
        return float(f(0.0))
    s = math.sqrt(q)

    def integrand(z):
        return f(s * z) * math.exp(-0.5 * z * z) * _INV_SQRT2PI

    # φ changes on the scale |u| ~ 1, i.e. |z| ~ 1/s: put break points there so quad resolves it.
    pts = sorted({p for k in (0.0, 0.5, 1.0, 3.0, 10.0) for p in (k / s, -k / s) if abs(p) < 12.0})
    total = 0.0
    edges = [-12.0, *pts, 12.0]
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        if b > a:
            total += integrate.quad(integrand, a, b, epsabs=0.0, epsrel=1e-11, limit=200)[0]
    return total


@lru_cache(maxsize=65536)
def _moments(name: str, alpha: float, q: float) -> tuple[float, float]:
    """(E[φ(√q z)²], E[φ'(√q z)²])."""
    if name == "identity":
        return q, 1.0
    if name == "relu":
        return q / 2.0, (0.5 if q > 0 else 0.0)
    if name in ("leaky_relu", "prelu"):
        return q * (1.0 + alpha * alpha) / 2.0, ((1.0 + alpha * alpha) / 2.0 if q > 0 else alpha * alpha)
    phi, dphi = _phi(name, alpha)
    return (gaussian_expectation(lambda u: phi(u) ** 2, q), gaussian_expectation(lambda u: dphi(u) ** 2, q))


def moments(name: str, q: float, alpha: float | None = None) -> tuple[float, float]:
    """(E[φ(√q z)²], E[φ'(√q z)²]) for an activation at pre-activation variance q."""
    _phi(name, 0.0)  # validates the name
    return _moments(name, float(default_alpha(name) if alpha is None else alpha), float(q))


def length_map(q_prev: float, sigma_w2: float, sigma_b2: float, name: str, alpha: float | None = None,
               keep: float = 1.0) -> float:
    """q^l from q^{l-1}. With dropout of keep probability ρ on the layer input (inverted scaling),
    the second moment of the input is E[φ²]/ρ (Schoenholz et al. 2017, §5)."""
    return sigma_w2 * moments(name, q_prev, alpha)[0] / keep + sigma_b2


def chi(q: float, sigma_w2: float, name: str, alpha: float | None = None, keep: float = 1.0) -> float:
    """Squared gradient-norm factor of one layer at pre-activation variance q. Inverted dropout
    multiplies it by 1/ρ (E[(m/ρ)²] = 1/ρ)."""
    return sigma_w2 * moments(name, q, alpha)[1] / keep


def fixed_point(sigma_w2: float, sigma_b2: float, name: str, alpha: float | None = None,
                q0: float = 1.0, iters: int = 2000, tol: float = 1e-13) -> float:
    """q* of the length map (inf when it diverges, e.g. unbounded φ with σ_w²·slope² > 2).

    Bounded φ (sigmoid, tanh) with σ_b² > 0: q* is the root of q ↦ map(q) − q in [σ_b², σ_w² + σ_b²]
    (Brent's method: fast and exact even near σ_b² → 0, where iteration converges slowly).
    Otherwise the map is iterated from q0."""
    if name in ("sigmoid", "tanh") and sigma_b2 > 0:
        def g(q):
            return length_map(q, sigma_w2, sigma_b2, name, alpha) - q
        hi = sigma_w2 + sigma_b2
        if g(hi) >= 0:
            return hi
        return optimize.brentq(g, sigma_b2, hi, xtol=1e-300, rtol=1e-13)
    q = q0
    for _ in range(iters):
        nq = length_map(q, sigma_w2, sigma_b2, name, alpha)
        if not math.isfinite(nq) or nq > 1e300:
            return math.inf
        if abs(nq - q) <= tol * max(1.0, q):
            return nq
        q = nq
    return q


def critical_sigma_w2(sigma_b2: float, name: str = "tanh", alpha: float | None = None,
                      lo: float = 0.5, hi: float = 8.0) -> float:
    """σ_w² on the order-to-chaos boundary χ(q*) = 1 for a given σ_b² (bisection)."""
    def excess(sw2):
        return chi(fixed_point(sw2, sigma_b2, name, alpha), sw2, name, alpha) - 1.0

    flo, fhi = excess(lo), excess(hi)
    if flo * fhi > 0:
        raise ValueError(f"no order-to-chaos transition for {name} with sigma_b2={sigma_b2} in [{lo}, {hi}]")
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        fm = excess(mid)
        if (fm < 0) == (flo < 0):
            lo, flo = mid, fm
        else:
            hi = mid
        if hi - lo < 1e-9:
            break
    return 0.5 * (lo + hi)


def layer_factors(depth: int, sigma_w2: float, sigma_b2: float, name: str, alpha: float | None = None,
                  q_in: float = 1.0, norm: str = "none", residual: str = "none", dropout: float = 0.0,
                  batch: int | None = None) -> np.ndarray | None:
    """Predicted per-layer gradient-norm factors √χ^l, l = 1..depth (output-to-input growth), or
    None where no theory applies.

    norm="layer" (before φ): the layer-norm output has unit variance, so q = 1 every layer and the
    backward divides by the pre-norm std: χ = σ_w²·E[φ'(z)²] / (σ_w²·E[φ(z)²]·(1/ρ) + σ_b²)
    (the mean-field argument of the docs; projection terms of order 1/width dropped).
    norm="batch": Yang et al. (2019): with ReLU, large batches, gradients explode at a squared
    rate of π/(π−1) per layer whatever σ_w²; other activations: no closed form here -> None.
    residual="plain"/"scaled": x^l = x^{l-1} + s·φ(h^l) with s = 1 or 1/√L: the squared factor
    is 1 + s²·χ_branch (the cross term averages out), with q tracking the growing residual stream.
    residual="fixup": the branch's last layer is zero at initialization, so every block is the
    identity and the factor is exactly 1 (Zhang et al. 2019).
    """
    if depth < 1:
        raise ValueError(f"depth: expected >= 1, got {depth}")
    keep = 1.0 - dropout
    if keep <= 0:
        return None
    if residual == "fixup":
        return np.ones(depth)
    if norm == "batch":
        if name == "relu" and residual == "none":
            return np.full(depth, math.sqrt(math.pi / (math.pi - 1.0)))
        return None
    if norm == "layer":
        if residual != "none":
            return None
        m2, d2 = moments(name, 1.0, alpha)
        c = sigma_w2 * d2 / (sigma_w2 * m2 / keep + sigma_b2) / keep if sigma_w2 > 0 else 0.0
        return np.full(depth, math.sqrt(c))
    if norm != "none":
        raise ValueError(f"norm: expected none, batch or layer, got {norm!r}")
    out = np.empty(depth)
    if residual == "none":
        q = sigma_w2 * q_in / keep + sigma_b2
        for layer in range(depth):
            out[layer] = math.sqrt(chi(q, sigma_w2, name, alpha, keep))
            q = length_map(q, sigma_w2, sigma_b2, name, alpha, keep)
            if not math.isfinite(q):
                out[layer + 1:] = math.nan
                return out
        return out
    if residual in ("plain", "scaled"):
        s2 = 1.0 if residual == "plain" else 1.0 / depth
        v = q_in  # variance of the residual stream x^{l-1}
        for layer in range(depth):
            q = sigma_w2 * v / keep + sigma_b2
            m2, d2 = moments(name, q, alpha)
            out[layer] = math.sqrt(1.0 + s2 * sigma_w2 * d2 / keep)
            v = v + s2 * m2
            if not math.isfinite(v):
                out[layer + 1:] = math.nan
                return out
        return out
    raise ValueError(f"residual: expected none, plain, scaled or fixup, got {residual!r}")


def log10_ratio(factors: np.ndarray | None) -> float | None:
    """log10 of Π factors, the predicted ‖∂ℓ/∂x⁰‖ / ‖∂ℓ/∂x^L‖ (exact even when it underflows)."""
    if factors is None:
        return None
    with np.errstate(divide="ignore"):
        return float(np.sum(np.log10(factors)))


def rate(factors: np.ndarray | None) -> float | None:
    """The geometric-mean per-layer factor, so that ratio = rate**depth."""
    lr = log10_ratio(factors)
    return None if lr is None else float(10.0 ** (lr / len(factors)))
