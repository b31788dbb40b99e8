"""Mean-field theory (kernels.theory): known values, limits and the quadrature against scipy quad."""

import math
import warnings

import numpy as np
import pytest
from scipy import integrate

from kernels import theory

SMOOTH = ["sigmoid", "tanh", "elu", "gelu"]


def test_relu_he_chi_is_exactly_one():
    for q in (1e-8, 1.0, 3.0, 1e6):
        assert theory.chi("relu", q, 2.0) == 1.0
    pred = theory.predict("relu", 50, 2.0)
    assert np.all(pred.chi == 1.0) and pred.log_ratio == 0.0


def test_identity_chi_is_sigma_w2_and_length_map_linear():
    for sw in (0.5, 1.0, 3.7):
        assert theory.chi("identity", 2.3, sw) == sw
        assert theory.length_map("identity", 2.0, sw, 0.1) == pytest.approx(2.0 * sw + 0.1)
    pred = theory.predict("identity", 10, 0.81)
    assert pred.log_ratio == pytest.approx(10 * 0.5 * math.log(0.81))


def test_leaky_and_prelu_use_their_slope():
    assert theory.chi("leaky_relu", 1.0, 2.0) == pytest.approx(1 + 0.01 ** 2)
    assert theory.chi("prelu", 1.0, 2.0) == pytest.approx(1 + 0.25 ** 2)  # PyTorch's initial slope
    assert theory.chi("prelu", 1.0, 2.0, alpha=0.1) == theory.chi("leaky_relu", 1.0, 2.0, alpha=0.1)
    # He init for leaky_relu (gain^2 = 2 / (1 + a^2)) is critical
    assert theory.chi("leaky_relu", 5.0, 2 / (1 + 0.01 ** 2)) == pytest.approx(1.0, rel=1e-14)


def test_tanh_critical_line_matches_schoenholz():
    # Schoenholz et al. 2017, Fig. 1: the order-to-chaos boundary at sigma_b^2 = 0.05 is near 1.76
    sw = theory.critical_sigma_w2("tanh", 0.05)
    assert sw == pytest.approx(1.76, abs=0.01)
    q = theory.fixed_point("tanh", sw, 0.05)
    assert theory.chi("tanh", q, sw) == pytest.approx(1.0, abs=1e-9)
    # ordered below, chaotic above
    for s, sign in ((1.5, -1), (2.0, 1)):
        q = theory.fixed_point("tanh", s, 0.05)
        assert sign * (theory.chi("tanh", q, s) - 1.0) > 0
    # sigma_b^2 -> 0: the boundary tends to sigma_w^2 = 1
    assert theory.critical_sigma_w2("tanh", 1e-8) == pytest.approx(1.0, abs=1e-2)


def test_fixed_point_is_a_fixed_point():
    for act, sw, sb in (("tanh", 1.5, 0.05), ("sigmoid", 4.0, 0.1), ("relu", 1.5, 0.2)):
        q = theory.fixed_point(act, sw, sb)
        assert theory.length_map(act, q, sw, sb) == pytest.approx(q, rel=1e-10)
    assert theory.fixed_point("relu", 2.5, 0.0) == math.inf


@pytest.mark.parametrize("act", SMOOTH)
@pytest.mark.parametrize("q", [1e-6, 1.0, 1e4])
def test_quadrature_matches_scipy_quad(act, q):
    """The composite rule against scipy.integrate.quad on the same pieces, and at q = 1e4 also
    against an independent quad in z over the whole line with the bump at z = 0 marked."""
    m1, m2, d2 = theory.moments(act, q)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        ref = [theory.gauss_expect_quad(lambda h, k=k: float(theory.phi(act, h)) ** k, q) for k in (1, 2)]
        ref.append(theory.gauss_expect_quad(lambda h: float(theory.dphi(act, h)) ** 2, q))
    for got, want in zip((m1, m2, d2), ref, strict=True):
        assert got == pytest.approx(want, rel=1e-10, abs=1e-15)
    if q == 1e4:
        s = math.sqrt(q)

        def zf(z):
            return float(theory.dphi(act, s * z)) ** 2 * math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", integrate.IntegrationWarning)
            pieces = [(-40, -0.05), (-0.05, 0), (0, 0.05), (0.05, 40)]
            indep = sum(integrate.quad(zf, a, b, epsabs=0, epsrel=1e-12, limit=500)[0] for a, b in pieces)
        assert d2 == pytest.approx(indep, rel=1e-8)


def test_large_q_tanh_asymptotics():
    # E[sech^4(h)], h ~ N(0, q) -> (integral of sech^4) / sqrt(2 pi q) = (4/3) / sqrt(2 pi q)
    q = 1e8
    want = (4.0 / 3.0) / math.sqrt(2 * math.pi * q)
    assert theory.moments("tanh", q)[2] == pytest.approx(want, rel=1e-6)
    # a fixed-order Gauss-Hermite rule in z gets this badly wrong: the reason for the composite rule
    z, w = np.polynomial.hermite_e.hermegauss(40)
    gh = float(w @ theory.dphi("tanh", math.sqrt(q) * z) ** 2) / math.sqrt(2 * math.pi)
    assert abs(gh - want) / want > 0.5


def test_q_zero_limit():
    assert theory.moments("relu", 0.0)[2] == 0.5
    assert theory.moments("tanh", 0.0) == (0.0, 0.0, 1.0)
    assert theory.moments("sigmoid", 0.0)[2] == pytest.approx(1 / 16)


def test_batchnorm_relu_matches_yang_et_al():
    # Yang et al. 2019: ReLU + batch norm, gradient norm^2 explodes by pi/(pi-1) per layer (B -> inf)
    pred = theory.predict("relu", 20, 2.0, norm="batch")
    assert pred.chi[1:] == pytest.approx(math.pi / (math.pi - 1), rel=1e-12)
    assert pred.approximate
    # identity + batch norm: no explosion in the limit
    assert theory.predict("identity", 5, 1.0, norm="batch").chi == pytest.approx(1.0)
    # tanh: E[phi'(z)^2] / Var[phi(z)], z ~ N(0, 1), whatever sigma_w2
    m1, m2, d2 = theory.moments("tanh", 1.0)
    assert theory.predict("tanh", 5, 3.0, norm="batch").chi[2] == pytest.approx(d2 / (m2 - m1 * m1))


def test_layernorm_is_scale_invariant():
    a = theory.predict("tanh", 10, 1.0, norm="layer")
    b = theory.predict("tanh", 10, 9.0, norm="layer")
    assert a.chi[1:] == pytest.approx(b.chi[1:])
    m1, m2, d2 = theory.moments("tanh", 1.0)
    assert a.chi[1] == pytest.approx(d2 / m2)


def test_residual_cases():
    # reduced residual net (Yang & Schoenholz 2017): chi = 1 + sigma_w2 E[phi'^2] > 1, unbounded product
    plain = theory.predict("relu", 100, 2.0, residual="plain")
    assert plain.chi == pytest.approx(2.0)
    # branches scaled by 1/sqrt(L): the ratio stays bounded as L grows (-> exp(sigma_w2 E phi'^2 / 2))
    r = [theory.predict("relu", L, 2.0, residual="scaled").log_ratio for L in (10, 100, 1000)]
    assert r[2] == pytest.approx(0.5, abs=0.01) and r[0] < r[1] < r[2]
    fix = theory.predict("tanh", 30, 1.0, residual="fixup", norm="batch")
    assert np.all(fix.chi == 1.0)


def test_dropout_multiplies_chi_by_one_over_keep():
    base = theory.predict("tanh", 5, 1.5, 0.05)
    drop = theory.predict("tanh", 5, 1.5, 0.05, dropout=0.2)
    assert drop.chi[0] == pytest.approx(base.chi[0] / 0.8)
    assert "Schoenholz" in drop.source


def test_zero_weights_and_no_theory():
    z = theory.predict("tanh", 4, 0.0)
    assert np.all(z.chi == 0.0) and z.log_ratio == -math.inf
    assert theory.predict("tanh", 4, 0.0, norm="batch") is None


def test_profile_and_log_ratio_agree():
    p = theory.predict("sigmoid", 7, 1.0, 0.1)
    prof = p.log_norms()
    assert prof[-1] == 0.0 and prof[0] == pytest.approx(p.log_ratio)
    assert np.all(np.diff(prof) > 0)  # sigmoid: chi < 1, the gradient shrinks toward the input


def test_jacobian_spectrum_pennington():
    # Pennington et al. 2017: at criticality mean 1; variance L(mu2/mu1^2 - 1 - s1)
    mean, var = theory.jacobian_spectrum("relu", 10, 2.0, 0.0, orthogonal=False)
    assert (mean, var) == (1.0, pytest.approx(20.0))
    assert theory.jacobian_spectrum("relu", 10, 2.0, 0.0, orthogonal=True)[1] == pytest.approx(10.0)
    assert theory.jacobian_spectrum("identity", 10, 1.0, 0.0, orthogonal=True)[1] == pytest.approx(0.0)
    assert theory.jacobian_spectrum("tanh", 10, 1.5, 0.05, orthogonal=True)[1] is None  # off-critical


def test_bad_input():
    with pytest.raises(ValueError, match="activation"):
        theory.chi("swish", 1.0, 1.0)
    with pytest.raises(ValueError, match="q"):
        theory.gauss_expect(np.cos, -1.0)
    with pytest.raises(ValueError, match="depth"):
        theory.predict("tanh", 0, 1.0)
    with pytest.raises(ValueError, match="norm"):
        theory.predict("tanh", 3, 1.0, norm="group")
