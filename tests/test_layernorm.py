"""layernorm family: gradients, numerical stability, special values, empty batches, bad input.

Backend-vs-reference agreement on random inputs is tests/test_registry.py's job; these tests pin
properties every backend (the reference included) must have.
"""

import numpy as np
import pytest

import kernels

from .conftest import central_diff

BACKENDS = ["numpy", "numba", "c"]
DTYPES = [np.float32, np.float64]


def fwd(backend):
    return kernels.get("layernorm_forward", backend)


def bwd(backend):
    return kernels.get("layernorm_backward", backend)


def make(N=4, D=6, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, D)) * rng.uniform(0.5, 2.0, (N, 1)) + rng.uniform(-3, 3, (N, 1))
    gamma = rng.uniform(0.5, 1.5, D) * rng.choice([-1.0, 1.0], D)
    beta = rng.standard_normal(D)
    return x.astype(dtype), gamma.astype(dtype), beta.astype(dtype)


# ---- gradients --------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_matches_finite_differences(backend):
    x, gamma, beta = make(N=3, D=7, seed=1)
    w = np.random.default_rng(2).standard_normal(x.shape)  # L = sum(w * y), so dL/dy = w

    def loss():
        return float(np.sum(w * fwd(backend)(x, gamma, beta)[0]))

    _, mean, rstd = fwd(backend)(x, gamma, beta)
    dx, dgamma, dbeta = bwd(backend)(w, x, gamma, mean, rstd)
    np.testing.assert_allclose(dx, central_diff(loss, x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dgamma, central_diff(loss, gamma), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dbeta, central_diff(loss, beta), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_with_many_columns_matches_finite_differences(backend):
    # D = 70 > 64: the C backend's dgamma/dbeta run over two column blocks
    x, gamma, beta = make(N=2, D=70, seed=3)
    w = np.random.default_rng(4).standard_normal(x.shape)

    def loss():
        return float(np.sum(w * fwd(backend)(x, gamma, beta)[0]))

    _, mean, rstd = fwd(backend)(x, gamma, beta)
    dx, dgamma, dbeta = bwd(backend)(w, x, gamma, mean, rstd)
    np.testing.assert_allclose(dx[:, 60:], central_diff(loss, x)[:, 60:], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dgamma, central_diff(loss, gamma), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dbeta, w.sum(axis=0), rtol=1e-13, atol=1e-14)


# ---- numerical stability ------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_variance_is_stable_with_large_offset_float32(backend):
    rng = np.random.default_rng(5)
    N, D = 8, 4096
    x = (1e4 + rng.standard_normal((N, D))).astype(np.float32)
    xd = x.astype(np.float64)
    eps = 1e-5
    y, mean, rstd = fwd(backend)(x, np.ones(D, np.float32), np.zeros(D, np.float32), eps=eps)
    var = 1.0 / np.square(rstd.astype(np.float64)) - eps
    np.testing.assert_allclose(var, np.var(xd, axis=1), rtol=1e-3)
    np.testing.assert_allclose(mean, xd.mean(axis=1), rtol=1e-6)
    yd = y.astype(np.float64)
    assert np.all(np.abs(yd.mean(axis=1)) < 1e-3)
    np.testing.assert_allclose(yd.var(axis=1), 1.0, atol=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_variance_is_stable_with_large_offset_float64(backend):
    # at offset 1e8, E[x^2] - E[x]^2 in double is off by tens (x^2 ~ 1e16 has ulp 2); two passes are not
    rng = np.random.default_rng(6)
    N, D = 4, 4096
    x = 1e8 + rng.standard_normal((N, D))
    eps = 1e-5
    _, _, rstd = fwd(backend)(x, np.ones(D), np.zeros(D), eps=eps)
    np.testing.assert_allclose(1.0 / rstd**2 - eps, np.var(x, axis=1), rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_invariant_to_shift_and_positive_scale_of_a_row(backend):
    x, gamma, beta = make(N=5, D=9, seed=7)
    y, _, _ = fwd(backend)(x, gamma, beta, eps=1e-14)
    y2, _, _ = fwd(backend)(3.0 * x + 100.0, gamma, beta, eps=1e-14)
    np.testing.assert_allclose(y2, y, rtol=1e-10, atol=1e-10)


# ---- special values --------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("backend", BACKENDS)
def test_nonfinite_poisons_only_its_row(backend, bad):
    x, gamma, beta = make(N=5, D=6, seed=8)
    clean = fwd(backend)(x, gamma, beta)
    x[2, 4] = bad
    y, mean, rstd = fwd(backend)(x, gamma, beta)
    assert np.all(np.isnan(y[2])) and np.isnan(rstd[2]) and not np.isfinite(mean[2])
    others = [0, 1, 3, 4]
    np.testing.assert_array_equal(y[others], clean[0][others])
    np.testing.assert_array_equal(mean[others], clean[1][others])
    np.testing.assert_array_equal(rstd[others], clean[2][others])


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_in_dy_poisons_its_row_of_dx_and_its_column_of_dgamma(backend):
    x, gamma, beta = make(N=5, D=6, seed=9)
    _, mean, rstd = fwd(backend)(x, gamma, beta)
    dy = np.random.default_rng(10).standard_normal(x.shape)
    dx, dg, db = bwd(backend)(dy, x, gamma, mean, rstd)
    dy[3, 1] = np.nan
    dx2, dg2, db2 = bwd(backend)(dy, x, gamma, mean, rstd)
    assert np.all(np.isnan(dx2[3])) and np.isnan(dg2[1]) and np.isnan(db2[1])
    rows, cols = [0, 1, 2, 4], [0, 2, 3, 4, 5]
    np.testing.assert_array_equal(dx2[rows], dx[rows])
    np.testing.assert_array_equal(dg2[cols], dg[cols])
    np.testing.assert_array_equal(db2[cols], db[cols])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_constant_row_gives_finite_output(backend, dtype):
    x, gamma, beta = make(N=4, D=10, dtype=dtype, seed=11)
    x[1] = dtype(0.1)
    eps = 1e-5
    y, mean, rstd = fwd(backend)(x, gamma, beta, eps=eps)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(rstd))
    np.testing.assert_allclose(rstd[1], 1 / np.sqrt(eps), rtol=1e-6)
    np.testing.assert_allclose(y[1], beta, atol=1e-6)
    dy = np.random.default_rng(12).standard_normal(x.shape).astype(dtype)
    dx, dg, db = bwd(backend)(dy, x, gamma, mean, rstd)
    assert np.all(np.isfinite(dx)) and np.all(np.isfinite(dg)) and np.all(np.isfinite(db))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch_gives_empty_outputs(backend, dtype):
    _, gamma, beta = make(N=1, D=5, dtype=dtype)
    x = np.zeros((0, 5), dtype=dtype)
    y, mean, rstd = fwd(backend)(x, gamma, beta)
    assert y.shape == (0, 5) and mean.shape == (0,) and rstd.shape == (0,)
    assert y.dtype == mean.dtype == rstd.dtype == dtype
    dx, dgamma, dbeta = bwd(backend)(x, x, gamma, mean, rstd)
    assert dx.shape == (0, 5)
    np.testing.assert_array_equal(dgamma, np.zeros(5))
    np.testing.assert_array_equal(dbeta, np.zeros(5))


@pytest.mark.parametrize("backend", BACKENDS)
def test_single_feature_rows_normalise_to_beta(backend):
    x, gamma, beta = make(N=3, D=1, seed=13)
    y, mean, rstd = fwd(backend)(x, gamma, beta)
    np.testing.assert_array_equal(mean, x[:, 0])
    np.testing.assert_array_equal(y, np.broadcast_to(beta, y.shape))


@pytest.mark.parametrize("backend", BACKENDS)
def test_noncontiguous_input_gives_same_result(backend):
    x, gamma, beta = make(N=6, D=5, seed=14)
    a = fwd(backend)(x, gamma, beta)
    b = fwd(backend)(np.asfortranarray(x), gamma[::-1].copy()[::-1], beta)
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(u, v)


# ---- bad input -------------------------------------------------------------------------------------

def _fwd_kwargs(dtype=np.float64):
    x, gamma, beta = make(N=4, D=3, dtype=dtype)
    return {"x": x, "gamma": gamma, "beta": beta}


FWD_BAD = [
    ("gamma", lambda k: {**k, "gamma": np.ones(4)}, ValueError),
    ("beta", lambda k: {**k, "beta": np.ones((3, 1))}, ValueError),
    ("gamma", lambda k: {**k, "gamma": k["gamma"].astype(np.float32)}, TypeError),
    ("beta", lambda k: {**k, "beta": list(k["beta"])}, TypeError),
    ("x", lambda k: {**k, "x": np.zeros((4, 0)), "gamma": np.zeros(0), "beta": np.zeros(0)}, ValueError),
    ("x", lambda k: {**k, "x": k["x"][0]}, ValueError),
    ("x", lambda k: {**k, "x": k["x"].astype(np.float16)}, TypeError),
    ("eps", lambda k: {**k, "eps": 0.0}, ValueError),
    ("eps", lambda k: {**k, "eps": -1.0}, ValueError),
    ("eps", lambda k: {**k, "eps": np.nan}, ValueError),
    ("eps", lambda k: {**k, "eps": "1e-5"}, TypeError),
]


@pytest.mark.parametrize("name,change,exc", FWD_BAD, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(FWD_BAD)])
@pytest.mark.parametrize("backend", BACKENDS)
def test_forward_bad_input(backend, name, change, exc):
    with pytest.raises(exc, match=name):
        fwd(backend)(**change(_fwd_kwargs()))


@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_bad_input(backend):
    x, gamma, beta = make(N=4, D=3)
    _, mean, rstd = fwd(backend)(x, gamma, beta)
    dy = np.ones_like(x)
    with pytest.raises(ValueError, match="dy"):
        bwd(backend)(dy.T, x, gamma, mean, rstd)
    with pytest.raises(TypeError, match="dy"):
        bwd(backend)(dy.astype(np.float32), x, gamma, mean, rstd)
    with pytest.raises(ValueError, match="gamma"):
        bwd(backend)(dy, x, gamma[:2], mean, rstd)
    with pytest.raises(ValueError, match="mean"):
        bwd(backend)(dy, x, gamma, np.zeros(3), rstd)  # (D,) instead of (N,)
    with pytest.raises(TypeError, match="rstd"):
        bwd(backend)(dy, x, gamma, mean, rstd.astype(np.float32))
    with pytest.raises(ValueError, match="x"):
        bwd(backend)(dy[:, :0], x[:, :0], gamma[:0], mean, rstd)
