"""Mean-field theory: known values and the accuracy of the Gaussian integrals. These are the
loose theory tests; kernel equality lives in test_registry.py."""

import math

import numpy as np
import pytest
from scipy import integrate

from kernels import theory


def test_relu_he_is_exactly_critical():
    for q in (1e-3, 1.0, 1e6):
        assert theory.chi(q, 2.0, "relu") == 1.0
    assert np.all(theory.layer_factors(500, 2.0, 0.0, "relu") == 1.0)


def test_identity_chi_is_sigma_w2():
    assert theory.chi(7.0, 1.3, "identity") == pytest.approx(1.3, rel=1e-15)


def test_leaky_relu_he_gain():
    a = 0.2
    assert theory.chi(1.0, 2.0 / (1 + a * a), "leaky_relu", a) == pytest.approx(1.0, rel=1e-14)


def test_tanh_order_to_chaos_boundary_matches_schoenholz():
    # Schoenholz et al. 2017, Fig. 1: sigma_b^2 = 0.05 crosses at sigma_w^2 ~ 1.76; sigma_b^2 = 0 at 1.
    assert theory.critical_sigma_w2(0.05) == pytest.approx(1.76, abs=0.01)
    assert theory.critical_sigma_w2(1e-12) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "elu", "gelu"])
@pytest.mark.parametrize("q", [1e-4, 1.0, 1e4])
def test_quadrature_agrees_with_quad_on_the_whole_line(name, q):
    phi, dphi = theory._phi(name, theory.default_alpha(name))
    s = math.sqrt(q)
    for f in (lambda u: phi(u) ** 2, lambda u: dphi(u) ** 2):
        # reference: substitute u = s z and integrate in u with breakpoints at the activation's scale
        ref = sum(integrate.quad(lambda u, f=f: f(u) * math.exp(-u * u / (2 * q)) / math.sqrt(2 * math.pi * q),
                                 a, b, epsabs=0, epsrel=1e-12, limit=400)[0]
                  for a, b in [(-40 * s, -1), (-1, 0), (0, 1), (1, 40 * s)])
        assert theory.gaussian_expectation(f, q) == pytest.approx(ref, rel=1e-8, abs=1e-300)


def test_large_q_tanh_derivative_moment_has_its_asymptote():
    # E[sech^4(sqrt(q) z)] -> (4/3) / sqrt(2 pi q) as q -> inf; fixed Gauss-Hermite gets ~0 here
    q = 1e6
    assert theory.moments("tanh", q)[1] == pytest.approx(4 / 3 / math.sqrt(2 * math.pi * q), rel=1e-3)


def test_sigmoid_vanishes_and_the_log_ratio_survives_underflow():
    f = theory.layer_factors(10_000, 1.0, 0.0, "sigmoid")
    lr = theory.log10_ratio(f)
    assert math.isfinite(lr) and lr < -5000  # 10^-6000: far below float64's range, still a number
    assert theory.rate(f) == pytest.approx(10 ** (lr / 10_000))


def test_fixup_is_identity_and_scaled_residual_stays_bounded():
    assert np.all(theory.layer_factors(100, 2.0, 0.0, "relu", residual="fixup") == 1.0)
    plain = theory.log10_ratio(theory.layer_factors(1000, 2.0, 0.0, "relu", residual="plain"))
    scaled = theory.log10_ratio(theory.layer_factors(1000, 2.0, 0.0, "relu", residual="scaled"))
    assert plain > 100 and 0 < scaled < 1  # (1 + 1/L)^(L/2) -> e^(1/2)


def test_dropout_raises_chi_by_one_over_keep():
    assert theory.chi(1.0, 2.0, "relu", keep=0.5) == pytest.approx(2.0)


def test_no_theory_is_none():
    assert theory.layer_factors(10, 1.0, 0.0, "tanh", norm="batch") is None
    assert theory.rate(None) is None


def test_bad_arguments():
    with pytest.raises(ValueError, match="activation"):
        theory.moments("swish", 1.0)
    with pytest.raises(ValueError, match="q"):
        theory.gaussian_expectation(lambda u: u, -1.0)
    with pytest.raises(ValueError, match="depth"):
        theory.layer_factors(0, 1.0, 0.0, "tanh")
