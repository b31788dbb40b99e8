"""batchnorm family: gradients, numerical stability, running statistics, special values, bad input.

Backend-vs-reference agreement on random inputs is tests/test_registry.py's job; these tests pin
properties every backend (the reference included) must have.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import kernels

from . import forking
from .conftest import central_diff

BACKENDS = ["numpy", "numba", "c"]
DTYPES = [np.float32, np.float64]


def fwd(backend):
    return kernels.get("batchnorm_forward", backend)


def inf_(backend):
    return kernels.get("batchnorm_inference", backend)


def bwd(backend):
    return kernels.get("batchnorm_backward", backend)


def make(N=6, C=4, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((N, C)) * rng.uniform(0.5, 2.0, C) + rng.uniform(-3, 3, C)).astype(dtype)
    gamma = rng.uniform(0.5, 1.5, C).astype(dtype)
    beta = rng.standard_normal(C).astype(dtype)
    return x, gamma, beta


def running(C, dtype=np.float64):
    return np.zeros(C, dtype=dtype), np.ones(C, dtype=dtype)


# ---- gradients --------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_matches_finite_differences(backend):
    x, gamma, beta = make(N=7, C=3, seed=1)
    w = np.random.default_rng(2).standard_normal(x.shape)  # L = sum(w * y), so dL/dy = w

    def loss():
        return float(np.sum(w * fwd(backend)(x, gamma, beta, *running(3))[0]))

    _, mean, rstd = fwd(backend)(x, gamma, beta, *running(3))
    dx, dgamma, dbeta = bwd(backend)(w, x, gamma, mean, rstd)
    np.testing.assert_allclose(dx, central_diff(loss, x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dgamma, central_diff(loss, gamma), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dbeta, central_diff(loss, beta), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("backend", BACKENDS)
def test_many_columns(backend):
    # C = 130 > 2 * 64: the C backend processes the columns in three stack blocks
    N, C = 3, 130
    x, gamma, beta = make(N=N, C=C, seed=15)
    rm, rv = running(C)
    y, mean, rstd = fwd(backend)(x, gamma, beta, rm, rv, momentum=0.5, eps=1e-5)
    np.testing.assert_allclose(mean, x.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(rstd, 1 / np.sqrt(x.var(axis=0) + 1e-5), rtol=1e-13)
    np.testing.assert_allclose(y, (x - x.mean(axis=0)) * rstd * gamma + beta, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(rm, 0.5 * x.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(rv, 0.5 + 0.5 * x.var(axis=0, ddof=1), rtol=1e-13)
    w = np.random.default_rng(16).standard_normal(x.shape)

    def loss():
        return float(np.sum(w * fwd(backend)(x, gamma, beta, *running(C))[0]))

    dx, dgamma, dbeta = bwd(backend)(w, x, gamma, mean, rstd)
    np.testing.assert_allclose(dx, central_diff(loss, x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dgamma, central_diff(loss, gamma), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dbeta, w.sum(axis=0), rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_dx_is_orthogonal_to_ones_and_xhat(backend):
    # y is invariant to shifting a column of x, so dx sums to 0; with eps -> 0 it is also invariant to
    # scaling it, so dx is orthogonal to xhat (up to a relative eps / var)
    x, gamma, _ = make(N=33, C=5, seed=3)
    _, mean, rstd = fwd(backend)(x, gamma, np.zeros(5), *running(5), eps=1e-14)
    dy = np.random.default_rng(4).standard_normal(x.shape)
    dx, _, _ = bwd(backend)(dy, x, gamma, mean, rstd)
    xhat = (x - mean) * rstd
    scale = np.abs(dx).sum(axis=0)
    assert np.all(np.abs(dx.sum(axis=0)) <= 1e-12 * scale)
    assert np.all(np.abs((dx * xhat).sum(axis=0)) <= 1e-12 * scale * np.abs(xhat).max(axis=0))


# ---- numerical stability ------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_variance_is_stable_with_large_offset_float32(backend):
    rng = np.random.default_rng(5)
    N, C = 4096, 8
    x = (1e4 + rng.standard_normal((N, C))).astype(np.float32)
    xd = x.astype(np.float64)
    true_var = np.var(xd, axis=0)
    eps = 1e-5
    y, mean, rstd = fwd(backend)(x, np.ones(C, np.float32), np.zeros(C, np.float32),
                                 *running(C, np.float32), eps=eps)
    var = 1.0 / np.square(rstd.astype(np.float64)) - eps
    np.testing.assert_allclose(var, true_var, rtol=1e-3)
    np.testing.assert_allclose(mean, xd.mean(axis=0), rtol=1e-6)
    yd = y.astype(np.float64)
    assert np.all(np.abs(yd.mean(axis=0)) < 1e-3)
    np.testing.assert_allclose(yd.var(axis=0), 1.0, atol=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_variance_is_stable_with_large_offset_float64(backend):
    # at offset 1e8, E[x^2] - E[x]^2 in double is off by tens (x^2 ~ 1e16 has ulp 2); two passes are not
    rng = np.random.default_rng(6)
    N, C = 4096, 4
    x = 1e8 + rng.standard_normal((N, C))
    eps = 1e-5
    _, _, rstd = fwd(backend)(x, np.ones(C), np.zeros(C), *running(C), eps=eps)
    np.testing.assert_allclose(1.0 / rstd**2 - eps, np.var(x, axis=0), rtol=1e-6)


# ---- the float32 path of the compiled backends (float arithmetic from float64 statistics) ------------

def _within_table(kernel, outs, refs):
    """every output within kernels.verify's TOLERANCE for `kernel` (normwise k * eps32), NaN positions equal"""
    from kernels import verify
    measure, k = verify.TOLERANCE[kernel]
    for i, (o, r) in enumerate(zip(outs, refs, strict=True)):
        err, msg = verify.compare(o, r, measure)
        assert not msg and err <= k * np.finfo(np.float32).eps, (kernel, i, err / np.finfo(np.float32).eps, msg)


def _row_block_column(N=2100):
    # a column whose float64 sum tells the summation order apart: 64 ones in rows 1..64, then 2^60 and
    # -2^60 in rows 1100 and 2000. Blocks of 1024 rows: (64) + (2^60 - 2^60) + (0) = 64; one sequential
    # sum (or blocks of 512 or 2048) loses the ones in 64 + 2^60 and ends at 0
    col = np.zeros(N)
    col[1:65] = 1.0
    col[1100], col[2000] = 2.0 ** 60, -(2.0 ** 60)
    return col


@pytest.mark.parametrize("backend", ["numba", "c"])
def test_float32_sums_run_in_blocks_of_1024_rows(backend):
    x = np.stack([_row_block_column(), np.arange(2100.0)], axis=1).astype(np.float32)
    C = x.shape[1]
    y, mean, rstd = kernels.get("batchnorm_forward", backend)(x, np.ones(C, np.float32), np.zeros(C, np.float32),
                                                              np.zeros(C, np.float32), np.ones(C, np.float32))
    assert mean[0] == np.float32(64 / 2100)    # x[0, 0] = 0 is the shift: mean = 64 / N
    assert mean[1] == np.float32(2099 / 2)
    dy = x[:, ::-1].copy()                       # the backward's sum(dy) of column 1: the same blocks
    dx, dgamma, dbeta = kernels.get("batchnorm_backward", backend)(dy, x, np.ones(C, np.float32), mean, rstd)
    assert dbeta[1] == 64.0 and dbeta[0] == np.float32(2099 * 2100 / 2)


@pytest.mark.parametrize("backend", ["numba", "c"])
def test_float32_path_accurate_at_large_offset(backend):
    # mean 1e4, std 1: ulp(1e4) = 2^-10, so centring on the float mean alone (without its lo part)
    # would be off by ~2.4e-4 std, 30x the forward's tolerance; one-pass statistics without the shift
    # would lose the variance entirely
    rng = np.random.default_rng(21)
    N, C = 4096, 8
    x = (1e4 + rng.standard_normal((N, C))).astype(np.float32)
    gamma = rng.uniform(0.5, 1.5, C).astype(np.float32)
    beta = rng.standard_normal(C).astype(np.float32)
    run_ref, run_out = running(C, np.float32), running(C, np.float32)
    ref = fwd("numpy")(x, gamma, beta, *run_ref)
    out = fwd(backend)(x, gamma, beta, *run_out)
    _within_table("batchnorm_forward", list(out) + list(run_out), list(ref) + list(run_ref))
    dy = rng.standard_normal((N, C)).astype(np.float32)
    _within_table("batchnorm_backward", bwd(backend)(dy, x, gamma, ref[1], ref[2]),
                  bwd("numpy")(dy, x, gamma, ref[1], ref[2]))


@pytest.mark.parametrize("N", [2, 3, 4, 15, 16, 17, 64])
@pytest.mark.parametrize("backend", ["numba", "c"])
def test_float32_backward_small_batches(backend, N):
    # below 16 rows dx is computed in double: at N = 2 it is a near-total cancellation (xhat = +-1), and
    # float arithmetic leaves ~1e6 eps32 of noise in it; 16 rows and more take the float path
    from kernels import batchnorm as bn
    for seed in range(20):
        kw = bn._backward_case(np.random.default_rng(seed), N - 1, np.float32)
        _within_table("batchnorm_backward", bwd(backend)(**kw), bwd("numpy")(**kw))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_nonfinite_poisons_only_its_column(backend, bad):
    # float32 with 40 rows: the one-pass statistics, y and dx in float (the other columns keep their bits)
    x, gamma, beta = make(N=40, C=5, dtype=np.float32, seed=22)
    dy = np.random.default_rng(23).standard_normal(x.shape).astype(np.float32)
    clean = fwd(backend)(x, gamma, beta, *running(5, np.float32))
    cdx = bwd(backend)(dy, x, gamma, clean[1], clean[2])
    xb = x.copy()
    xb[7, 1] = bad
    y, mean, rstd = fwd(backend)(xb, gamma, beta, *running(5, np.float32))
    assert np.all(np.isnan(y[:, 1])) and np.isnan(rstd[1]) and not np.isfinite(mean[1])
    others = [0, 2, 3, 4]
    np.testing.assert_array_equal(y[:, others], clean[0][:, others])
    dyb = dy.copy()
    dyb[5, 3] = bad
    dx, dg, db = bwd(backend)(dyb, x, gamma, clean[1], clean[2])
    ref = bwd("numpy")(dyb, x, gamma, clean[1], clean[2])
    np.testing.assert_array_equal(np.isnan(dx), np.isnan(ref[0]))   # the float64 rule's NaN/Inf pattern
    np.testing.assert_array_equal(np.isinf(dx), np.isinf(ref[0]))
    assert not np.any(np.isfinite(dx[:, 3]))
    others = [0, 1, 2, 4]
    np.testing.assert_array_equal(dx[:, others], cdx[0][:, others])


@pytest.mark.parametrize("backend", ["numba", "c"])
def test_float32_extreme_range_falls_back_to_double(backend):
    # gamma 1e30 with std 1e-20: rstd * gamma = 1e50 overflows float, so that column block runs in double
    # (y finite and accurate); dy near float's max: N * dy overflows in float, those elements in double
    rng = np.random.default_rng(24)
    N, C = 64, 6
    x = rng.standard_normal((N, C)).astype(np.float32)
    x[:, 2] = (1e-20 * rng.standard_normal(N)).astype(np.float32)
    gamma = np.ones(C, np.float32)
    gamma[2] = 1e30
    beta = np.zeros(C, np.float32)
    ref = fwd("numpy")(x, gamma, beta, *running(C, np.float32), eps=1e-45)
    out = fwd(backend)(x, gamma, beta, *running(C, np.float32), eps=1e-45)
    assert np.all(np.isfinite(out[0]))
    _within_table("batchnorm_forward", out, ref)
    x, gamma, _ = make(N=N, C=C, dtype=np.float32, seed=25)
    dy = rng.standard_normal((N, C)).astype(np.float32)
    dy[3, 4] = 3e38
    _, mean, rstd = fwd("numpy")(x, gamma, beta, *running(C, np.float32))
    out = bwd(backend)(dy, x, gamma, mean, rstd)
    assert np.all(np.isfinite(out[0][:, :4]))
    ref = bwd("numpy")(dy, x, gamma, mean, rstd)
    _within_table("batchnorm_backward", [o[..., :4] for o in out], [r[..., :4] for r in ref])


# ---- running statistics and inference ------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_running_stats_update_by_hand(backend, dtype):
    x = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 2.0], [4.0, -2.0]], dtype=dtype)
    # column 0: mean 2.5, biased var 1.25, unbiased 5/3; column 1: mean 0, biased var 2, unbiased 8/3
    rm = np.array([1.0, -1.0], dtype=dtype)
    rv = np.array([2.0, 0.5], dtype=dtype)
    eps = 1e-3
    y, mean, rstd = fwd(backend)(x, np.ones(2, dtype), np.zeros(2, dtype), rm, rv, momentum=0.25, eps=eps)
    rtol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(rm, [0.75 * 1.0 + 0.25 * 2.5, 0.75 * -1.0 + 0.25 * 0.0], rtol=rtol)
    np.testing.assert_allclose(rv, [0.75 * 2.0 + 0.25 * 5 / 3, 0.75 * 0.5 + 0.25 * 8 / 3], rtol=rtol)
    np.testing.assert_allclose(mean, [2.5, 0.0], rtol=rtol, atol=0)
    np.testing.assert_allclose(rstd, 1 / np.sqrt(np.array([1.25, 2.0]) + eps), rtol=rtol)  # biased
    assert rm.dtype == rv.dtype == y.dtype == mean.dtype == rstd.dtype == dtype


@pytest.mark.parametrize("backend", BACKENDS)
def test_momentum_zero_and_one(backend):
    x, gamma, beta = make(N=5, C=3, seed=7)
    rm = np.array([0.5, np.inf, -1.0])
    rv = np.array([np.inf, 2.0, 3.0])
    before = (rm.copy(), rv.copy())
    fwd(backend)(x, gamma, beta, rm, rv, momentum=0.0)
    np.testing.assert_array_equal(rm, before[0])          # untouched, and inf stays inf (no inf*0)
    np.testing.assert_array_equal(rv, before[1])
    fwd(backend)(x, gamma, beta, rm, rv, momentum=1.0)     # replaced by the batch statistics, no NaN
    np.testing.assert_allclose(rm, x.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(rv, x.var(axis=0, ddof=1), rtol=1e-13)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_inference_equals_training_with_batch_statistics(backend, dtype):
    x, gamma, beta = make(N=9, C=5, dtype=dtype, seed=8)
    eps = 1e-5
    y, _, _ = fwd(backend)(x, gamma, beta, *running(5, dtype), eps=eps)
    xd = x.astype(np.float64)
    rm, rv = xd.mean(axis=0).astype(dtype), xd.var(axis=0).astype(dtype)  # the biased batch variance
    rm0, rv0 = rm.copy(), rv.copy()
    yi = inf_(backend)(x, gamma, beta, rm, rv, eps=eps)
    tol = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(yi, y, rtol=tol, atol=tol)
    np.testing.assert_array_equal(rm, rm0)  # inference writes nothing
    np.testing.assert_array_equal(rv, rv0)


# ---- special values --------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("backend", BACKENDS)
def test_nonfinite_poisons_only_its_column(backend, bad):
    x, gamma, beta = make(N=8, C=4, seed=9)
    clean = fwd(backend)(x, gamma, beta, *running(4))
    x[3, 1] = bad
    rm, rv = running(4)
    y, mean, rstd = fwd(backend)(x, gamma, beta, rm, rv)
    assert np.all(np.isnan(y[:, 1])) and np.isnan(rstd[1]) and np.isnan(rv[1])
    assert not np.isfinite(mean[1]) and not np.isfinite(rm[1])  # NaN, or +inf for an +inf input
    others = [0, 2, 3]
    np.testing.assert_array_equal(y[:, others], clean[0][:, others])
    np.testing.assert_array_equal(mean[others], clean[1][others])
    np.testing.assert_array_equal(rstd[others], clean[2][others])
    assert np.all(np.isfinite(rm[others])) and np.all(np.isfinite(rv[others]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_in_dy_poisons_only_its_column(backend):
    x, gamma, beta = make(N=8, C=4, seed=10)
    _, mean, rstd = fwd(backend)(x, gamma, beta, *running(4))
    dy = np.random.default_rng(11).standard_normal(x.shape)
    dx, dg, db = bwd(backend)(dy, x, gamma, mean, rstd)
    dy[5, 2] = np.nan
    dx2, dg2, db2 = bwd(backend)(dy, x, gamma, mean, rstd)
    assert np.all(np.isnan(dx2[:, 2])) and np.isnan(dg2[2]) and np.isnan(db2[2])
    others = [0, 1, 3]
    np.testing.assert_array_equal(dx2[:, others], dx[:, others])
    np.testing.assert_array_equal(dg2[others], dg[others])
    np.testing.assert_array_equal(db2[others], db[others])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_constant_column_gives_finite_output(backend, dtype):
    x, gamma, beta = make(N=10, C=3, dtype=dtype, seed=12)
    x[:, 1] = dtype(0.1)
    eps = 1e-5
    y, mean, rstd = fwd(backend)(x, gamma, beta, *running(3, dtype), eps=eps)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(rstd))
    np.testing.assert_allclose(rstd[1], 1 / np.sqrt(eps), rtol=1e-6)
    np.testing.assert_allclose(y[:, 1], beta[1], atol=1e-6)
    dy = np.random.default_rng(13).standard_normal(x.shape).astype(dtype)
    dx, dg, db = bwd(backend)(dy, x, gamma, mean, rstd)
    assert np.all(np.isfinite(dx)) and np.all(np.isfinite(dg)) and np.all(np.isfinite(db))


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_columns_and_empty_inference_batch(backend):
    x = np.zeros((4, 0))
    e = np.zeros(0)
    y, mean, rstd = fwd(backend)(x, e, e, np.zeros(0), np.zeros(0))
    assert y.shape == (4, 0) and mean.shape == (0,) and rstd.shape == (0,)
    _, gamma, beta = make(N=2, C=3)
    yi = inf_(backend)(np.zeros((0, 3)), gamma, beta, *running(3))
    assert yi.shape == (0, 3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_noncontiguous_input_gives_same_result(backend):
    x, gamma, beta = make(N=6, C=5, seed=14)
    a = fwd(backend)(x, gamma, beta, *running(5))
    b = fwd(backend)(np.asfortranarray(x), gamma[::-1].copy()[::-1], beta, *running(5))
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(u, v)


# ---- bad input -------------------------------------------------------------------------------------

def _fwd_kwargs(dtype=np.float64):
    x, gamma, beta = make(N=5, C=3, dtype=dtype)
    rm, rv = running(3, dtype)
    return {"x": x, "gamma": gamma, "beta": beta, "running_mean": rm, "running_var": rv}


def _readonly(a):
    a.flags.writeable = False
    return a


FWD_BAD = [
    ("gamma", lambda k: {**k, "gamma": np.ones(4)}, ValueError),
    ("beta", lambda k: {**k, "beta": np.ones(2)}, ValueError),
    ("running_mean", lambda k: {**k, "running_mean": _readonly(np.zeros(3))}, ValueError),
    ("running_mean", lambda k: {**k, "running_mean": np.zeros(6)[::2]}, ValueError),
    ("running_mean", lambda k: {**k, "running_mean": np.zeros(3, np.float32)}, TypeError),
    ("running_mean", lambda k: {**k, "running_mean": [0.0, 0.0, 0.0]}, TypeError),
    ("running_var", lambda k: {**k, "running_var": np.ones(4)}, ValueError),
    ("running_var", lambda k: {**k, "running_var": k["running_mean"]}, ValueError),
    ("x", lambda k: {**k, "x": k["x"][:1]}, ValueError),
    ("x", lambda k: {**k, "x": k["x"][:, 0]}, ValueError),
    ("x", lambda k: {**k, "x": k["x"].astype(np.int64)}, TypeError),
    ("gamma", lambda k: {**k, "gamma": k["gamma"].astype(np.float32)}, TypeError),
    ("momentum", lambda k: {**k, "momentum": -0.1}, ValueError),
    ("momentum", lambda k: {**k, "momentum": 1.5}, ValueError),
    ("momentum", lambda k: {**k, "momentum": np.nan}, ValueError),
    ("eps", lambda k: {**k, "eps": 0.0}, ValueError),
    ("eps", lambda k: {**k, "eps": -1e-5}, ValueError),
    ("eps", lambda k: {**k, "eps": np.inf}, ValueError),
]


@pytest.mark.parametrize("name,change,exc", FWD_BAD, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(FWD_BAD)])
@pytest.mark.parametrize("backend", BACKENDS)
def test_forward_bad_input(backend, name, change, exc):
    kw = change(_fwd_kwargs())
    snapshot = {k: v.copy() for k, v in kw.items() if isinstance(v, np.ndarray)}
    with pytest.raises(exc, match=name):
        fwd(backend)(**kw)
    for k, v in snapshot.items():  # refused before anything was written
        np.testing.assert_array_equal(kw[k], v)


def test_forward_mixed_dtypes_name_the_argument():
    kw = _fwd_kwargs(np.float32)
    for arg in ("gamma", "beta", "running_mean", "running_var"):
        bad = {**kw, arg: kw[arg].astype(np.float64)}
        for backend in BACKENDS:
            with pytest.raises(TypeError, match=arg):
                fwd(backend)(**bad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_inference_and_backward_bad_input(backend):
    x, gamma, beta = make(N=5, C=3)
    rm, rv = running(3)
    with pytest.raises(ValueError, match="running_var"):
        inf_(backend)(x, gamma, beta, rm, np.ones(2))
    with pytest.raises(TypeError, match="running_mean"):
        inf_(backend)(x, gamma, beta, rm.astype(np.float32), rv)
    with pytest.raises(ValueError, match="eps"):
        inf_(backend)(x, gamma, beta, rm, rv, eps=0.0)
    mean, rstd = x.mean(axis=0), 1 / x.std(axis=0)
    dy = np.ones_like(x)
    with pytest.raises(ValueError, match="dy"):
        bwd(backend)(dy[:4], x, gamma, mean, rstd)
    with pytest.raises(TypeError, match="dy"):
        bwd(backend)(dy.astype(np.float32), x, gamma, mean, rstd)
    with pytest.raises(ValueError, match="mean"):
        bwd(backend)(dy, x, gamma, mean[:2], rstd)
    with pytest.raises(ValueError, match="gamma"):
        bwd(backend)(dy, x, np.ones(4), mean, rstd)
    with pytest.raises(TypeError, match="rstd"):
        bwd(backend)(dy, x, gamma, mean, rstd.astype(np.float32))
    with pytest.raises(ValueError, match="x"):
        bwd(backend)(dy[:0], x[:0], gamma, mean, rstd)


# ---- the C paths (avx2, portable) and Numba agree bit for bit --------------------------------------

PATH_WORKER = """
import json, numpy as np, kernels
from kernels import batchnorm as bn
rng = np.random.default_rng(5)
out = []
for dt in ("float32", "float64"):
    # rows: the 4- and 2-row groups and their tails; columns: vector tails and a 1024-column block + tail
    # float32 from 16 rows: the float path (40 x 9, 17 x 1030: two blocks; 600 x 1024); "big": one column
    # of gamma 1e30 (its block's y in double) and dy near float's max in one element (that dx in double);
    # 2100 x 9 and 1030 x 1030: the float32 statistics' row blocks of 1024 (three; two, the last of 6 rows)
    for N, C, big in ((2, 1, 0), (3, 7, 0), (5, 16, 0), (6, 17, 0), (9, 33, 0), (130, 5, 0), (4, 1025, 0),
                      (7, 2050, 0), (40, 9, 0), (17, 1030, 0), (600, 1024, 0), (40, 9, 1), (19, 1030, 1),
                      (2100, 9, 0), (1030, 1030, 0)):
        x = (rng.standard_normal((N, C)) * 3 + 40).astype(dt)
        x[N // 2, C // 2] = np.nan if C > 3 else x[N // 2, C // 2]
        dy = rng.standard_normal((N, C)).astype(dt)
        g, b = rng.standard_normal(C).astype(dt), rng.standard_normal(C).astype(dt)
        if big:
            g[1] = 1e30 / 2 ** (16 * (dt == "float64"))
            x[:, 1] = x[:, 1] * 1e-20 + 40
            dy[3, C - 2] = np.finfo(dt).max / 2
        elif C == 1030 and dt == "float32":  # an overflowing float dx near a row's start (the loops' head)
            dy[5, 2] = -np.finfo(dt).max / 2
        if N == 2100:  # a column whose mean shows the row blocks' order (test_float32_sums_run_in_blocks_of_1024_rows)
            x[:, 0] = np.r_[0.0, np.ones(64), np.zeros(1035), 2.0 ** 60, np.zeros(899), -(2.0 ** 60), np.zeros(99)]
            dy[:, 1] = x[:, 0]
        for be in (["c", "numba"] if BOTH else ["c"]):
            rm, rv = np.zeros(C, dt), np.ones(C, dt)
            y, m, r = kernels.get("batchnorm_forward", be)(x, g, b, rm, rv, momentum=0.3, eps=1e-30 if big else 1e-5)
            res = [y, m, r, rm, rv, kernels.get("batchnorm_inference", be)(x, g, b, rm, rv)]
            res += list(kernels.get("batchnorm_backward", be)(dy, x, g, m, r))
            out.append([be] + [a.tobytes().hex() for a in res])
print(json.dumps({"isa": kernels._c.ffi.string(kernels._c.lib.batchnorm_isa()).decode(), "out": out}))
"""


def _run_path(path, both=False, threads=None, stream=False):
    root = pathlib.Path(kernels.__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    env.pop("DEEPPROP_BATCHNORM_ISA", None)
    env.pop("DEEPPROP_BATCHNORM_THREAD_MIN_WORK", None)
    env.pop("DEEPPROP_BATCHNORM_NT_MIN_BYTES", None)
    if stream:  # the AVX2 float32 output loops with non-temporal stores (and the statistics' prefetch) on every shape
        env["DEEPPROP_BATCHNORM_NT_MIN_BYTES"] = "0"
    if path is not None:
        env["DEEPPROP_BATCHNORM_ISA"] = path
    if threads is not None:  # a team on every shape (threshold 0), of this many threads
        env.update(OMP_NUM_THREADS=str(threads), DEEPPROP_BATCHNORM_THREAD_MIN_WORK="0")
    proc = subprocess.run([sys.executable, "-c", f"BOTH = {both}\n" + PATH_WORKER], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(kernels.backends()["c"] is not None, reason="C backend not built")
def test_c_paths_and_numba_agree_bitwise():
    runs = {p: _run_path(p) for p in ("portable", "avx2", "sse9")}
    auto = _run_path(None, both=kernels.backends()["numba"] is None)
    assert _run_path("avx2", stream=True)["out"] == runs["portable"]["out"]
    assert runs["portable"]["isa"] == "portable (forced by DEEPPROP_BATCHNORM_ISA)"
    widest = auto["isa"]
    assert widest in ("avx2", "portable")  # what this CPU runs, chosen automatically
    assert runs["sse9"]["isa"].split()[0] == widest and "ignored" in runs["sse9"]["isa"]
    if widest == "avx2":
        assert runs["avx2"]["isa"] == "avx2 (forced by DEEPPROP_BATCHNORM_ISA)"
    assert runs["avx2"]["out"] == runs["portable"]["out"]
    c_out = [o for o in auto["out"] if o[0] == "c"]
    assert c_out == runs["portable"]["out"]
    nb_out = [["c"] + o[1:] for o in auto["out"] if o[0] == "numba"]
    if kernels.backends()["numba"] is None:
        assert nb_out == c_out


@pytest.mark.skipif(kernels.backends()["c"] is not None, reason="C backend not built")
def test_c_thread_count_does_not_change_a_bit():
    # statistics split by columns (float32: by claimed blocks of 1024 rows, whose sums are added in one
    # order), outputs by rows: no reduction depends on the split, so 1, 2 and 3 threads
    # (each shape threaded: threshold 0; teams capped at one 8-column group per thread) give the same
    # bits, on both paths, and the same as the default (small shapes: one thread)
    one = _run_path("portable", threads=1)
    assert _run_path("portable", threads=2)["out"] == one["out"]
    assert _run_path(None, threads=3)["out"] == one["out"]
    assert _run_path(None, threads=2)["out"] == _run_path(None)["out"] == one["out"]
    assert _run_path(None, threads=3, stream=True)["out"] == one["out"]


_FORK_CHILD = """
import numpy as np
from kernels.batchnorm import batchnorm_forward_c, batchnorm_backward_c
from kernels.linear import linear_forward_c
from tests.forking import spawn_and_fork

def run():
    x = np.arange(64 * 40, dtype=np.float32).reshape(64, 40) % 7
    g, b = np.ones(40, np.float32), np.zeros(40, np.float32)
    y, m, r = batchnorm_forward_c(x, g, b, np.zeros(40, np.float32), np.ones(40, np.float32))
    dx = batchnorm_backward_c(x, x, g, m, r)[0]
    return (y.tobytes() + dx.tobytes()).hex()[:64] + str(float(dx.sum()))

def child(q):
    a = np.full((300, 300), 0.5, np.float32)
    q.put((float(linear_forward_c(a, a)[7, 7]), run()))

if __name__ == "__main__":
    print("parent", run(), flush=True)
    spawn_and_fork(child)
"""


@pytest.mark.skipif(kernels.backends()["c"] is not None, reason="C backend not built")
def test_threaded_batchnorm_then_spawn_and_fork_children(tmp_path):
    # a parent that ran batchnorm on several threads, then a spawned and a forked child that run a
    # threaded GEMM (libgomp) and threaded batchnorm: neither may hang, both give the parent's bits
    lines = forking.run_script(tmp_path, _FORK_CHILD, OMP_NUM_THREADS="2", DEEPPROP_BATCHNORM_THREAD_MIN_WORK="0")
    parent = lines["parent"]
    assert lines["spawn"] == f"0 75.0 {parent}", lines
    assert lines["fork"] == f"0 75.0 {parent}", lines
