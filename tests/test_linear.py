"""Properties of linear_forward / linear_backward: gradients against central differences for every
activation, b=None, empty dimensions, shape/dtype errors, strided inputs, NaN confined to its row,
and the componentwise GEMM bound across the C code's block edges."""

import numpy as np
import pytest

import kernels
from kernels import activations

BACKENDS = [b for b, why in kernels.backends().items() if why is None]
DTYPES = [np.float32, np.float64]
ACTS = list(activations.ACT_CODES)
ALPHA = {"leaky_relu": -0.3, "elu": 1.7}


def fwd(backend):
    return kernels.get("linear_forward", backend)


def bwd(backend):
    return kernels.get("linear_backward", backend)


def _inputs(rng, N, K, M, dtype=np.float64):
    x = rng.standard_normal((N, K)).astype(dtype)
    W = rng.standard_normal((K, M)).astype(dtype)
    b = rng.standard_normal(M).astype(dtype)
    return x, W, b


# ---- gradients ------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("act", ACTS)
def test_gradients_match_central_differences(act, backend):
    rng = np.random.default_rng(11)
    N, K, M = 4, 5, 3
    x, W, b = _inputs(rng, N, K, M)
    alpha = ALPHA.get(act)
    f = fwd(backend)
    y, z = f(x, W, b, act, alpha, keep_preactivation=True)
    assert np.min(np.abs(z)) > 1e-3          # away from the kinks, so differences are smooth
    dy = rng.standard_normal((N, M))
    dx, dW, db = bwd(backend)(dy, x, W, z, act, alpha)

    def loss(x_, W_, b_):
        return float(np.sum(dy * f(x_, W_, b_, act, alpha)))

    h = 1e-6
    for name, arr, got in (("x", x, dx), ("W", W, dW), ("b", b, db)):
        fd = np.empty_like(arr)
        for idx in np.ndindex(arr.shape):
            args = {"x_": x, "W_": W, "b_": b}
            plus, minus = arr.copy(), arr.copy()
            plus[idx] += h
            minus[idx] -= h
            lp = loss(**{**args, f"{name}_": plus})
            lm = loss(**{**args, f"{name}_": minus})
            fd[idx] = (lp - lm) / (2 * h)
        np.testing.assert_allclose(got, fd, rtol=1e-6, atol=1e-7, err_msg=f"d{name}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_identity_backward_needs_no_z_and_matches_the_plain_products(backend):
    rng = np.random.default_rng(12)
    x, W, _ = _inputs(rng, 6, 7, 5)
    dy = rng.standard_normal((6, 5))
    dx, dW, db = bwd(backend)(dy, x, W)
    np.testing.assert_allclose(dx, dy @ W.T, rtol=1e-13)
    np.testing.assert_allclose(dW, x.T @ dy, rtol=1e-13)
    np.testing.assert_allclose(db, dy.sum(0), rtol=1e-13)
    z = rng.standard_normal((6, 5))        # given z is ignored for identity
    for got, want in zip(bwd(backend)(dy, x, W, z), (dx, dW, db), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_is_the_activation_of_the_preactivation(backend, dtype):
    rng = np.random.default_rng(13)
    x, W, b = _inputs(rng, 9, 11, 6, dtype)
    for act in ACTS:
        y, z = fwd(backend)(x, W, b, act, ALPHA.get(act), keep_preactivation=True)
        assert y.dtype == z.dtype == dtype and y.shape == z.shape == (9, 6)
        y_elem = kernels.get(f"{act}_forward", backend)(z, alpha=ALPHA.get(act))
        if backend == "numpy" and dtype == np.float32:
            # the reference applies the activation to the unrounded float64 z
            eps = np.finfo(dtype).eps
            assert np.all(np.abs(y - y_elem) <= 2 * eps * (np.abs(z) + np.abs(y)))
        else:   # the fused activation is the elementwise kernel's, bit for bit
            np.testing.assert_array_equal(y, y_elem)
        y_only = fwd(backend)(x, W, b, act, ALPHA.get(act))
        np.testing.assert_array_equal(y_only, y)


# ---- bias, empty dimensions ------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_no_bias_is_a_zero_bias(backend, dtype):
    rng = np.random.default_rng(14)
    x, W, _ = _inputs(rng, 5, 7, 3, dtype)
    y0, z0 = fwd(backend)(x, W, None, "tanh", keep_preactivation=True)
    y1, z1 = fwd(backend)(x, W, np.zeros(3, dtype), "tanh", keep_preactivation=True)
    np.testing.assert_array_equal(y0, y1)
    np.testing.assert_array_equal(z0, z1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_dimensions(backend, dtype):
    rng = np.random.default_rng(15)
    f, g = fwd(backend), bwd(backend)
    # K = 0: z is b broadcast over the rows (0 without a bias), y = act(b)
    x = np.empty((4, 0), dtype)
    W = np.empty((0, 3), dtype)
    b = np.array([-1.0, 0.5, 2.0], dtype)
    y, z = f(x, W, b, "relu", keep_preactivation=True)
    np.testing.assert_array_equal(z, np.tile(b, (4, 1)))
    np.testing.assert_array_equal(y, np.tile(np.array([0.0, 0.5, 2.0], dtype), (4, 1)))
    np.testing.assert_array_equal(f(x, W, None, "sigmoid"), np.full((4, 3), 0.5, dtype))
    dy = rng.standard_normal((4, 3)).astype(dtype)
    dx, dW, db = g(dy, x, W, z, "relu")
    assert dx.shape == (4, 0) and dW.shape == (0, 3)
    np.testing.assert_allclose(db, np.array([0.0, 1.0, 1.0]) * dy.astype(float).sum(0), rtol=1e-6)
    # N = 0: empty outputs, zero weight and bias gradients
    x, W, b = _inputs(rng, 0, 5, 3, dtype)
    y, z = f(x, W, b, "gelu", keep_preactivation=True)
    assert y.shape == z.shape == (0, 3) and y.dtype == dtype
    dx, dW, db = g(np.empty((0, 3), dtype), x, W, z, "gelu")
    assert dx.shape == (0, 5)
    np.testing.assert_array_equal(dW, np.zeros((5, 3), dtype))
    np.testing.assert_array_equal(db, np.zeros(3, dtype))
    # M = 0: empty outputs, zero input gradient
    x, W, b = _inputs(rng, 4, 5, 0, dtype)
    y = f(x, W, b, "elu")
    assert y.shape == (4, 0)
    dx, dW, db = g(np.empty((4, 0), dtype), x, W, np.empty((4, 0), dtype), "elu")
    np.testing.assert_array_equal(dx, np.zeros((4, 5), dtype))
    assert dW.shape == (5, 0) and db.shape == (0,)


# ---- special values --------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
def test_nan_in_x_stays_in_its_row(act, backend, dtype):
    rng = np.random.default_rng(16)
    x, W, b = _inputs(rng, 6, 9, 4, dtype)
    x[2, 5] = np.nan
    y, z = fwd(backend)(x, W, b, act, ALPHA.get(act), keep_preactivation=True)
    rows = np.isnan(y).any(axis=1)
    assert np.isnan(y[2]).all() and np.isnan(z[2]).all(), "NaN in x must reach its whole row (relu too)"
    assert rows.tolist() == [False, False, True, False, False, False]
    assert not np.isnan(z[rows == False]).any()  # noqa: E712
    if act == "identity":
        return  # z is not read: the backward is test_nan_in_x_with_a_clean_dz_only_touches_its_weight_row
    dy = rng.standard_normal((6, 4)).astype(dtype)
    dx, dW, db = bwd(backend)(dy, x, W, z, act, ALPHA.get(act))
    # dz is NaN in row 2 (z is), so dx row 2, every dW row (x^T dz) and db are NaN; other dx rows are not
    assert np.isnan(dx[2]).all() and not np.isnan(np.delete(dx, 2, axis=0)).any()
    assert np.isnan(dW).all() and np.isnan(db).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_in_x_with_a_clean_dz_only_touches_its_weight_row(backend):
    rng = np.random.default_rng(17)
    x, W, _ = _inputs(rng, 6, 9, 4)
    x[2, 5] = np.nan
    dx, dW, db = bwd(backend)(rng.standard_normal((6, 4)), x, W)   # identity: dz = dy
    assert not np.isnan(dx).any() and not np.isnan(db).any()
    assert [bool(np.isnan(r).any()) for r in dW] == [k == 5 for k in range(9)]


@pytest.mark.skipif(kernels.backends()["c"] is not None, reason="C backend not built")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["identity", "relu", "leaky_relu", "tanh"])
def test_c_bias_gradient_of_nan_columns_is_the_canonical_nan(act, dtype):
    """db's column sums in C: a column with NaN terms of both signs, in either order, sums to the one
    quiet NaN np.nan (0x7ff8...), not to whichever NaN the compiled addition order carries -- which
    differed between the AVX2 and portable loops at -O1 (the sanitizer build)."""
    x = np.ones((4, 3), dtype)
    W = np.ones((3, 4), dtype)
    dy = np.ones((4, 4), dtype)
    z = np.ones((4, 4), dtype)                  # > 0: act'(z) finite, so dz keeps dy's NaN
    with np.errstate(invalid="ignore"):
        dy[1, 0], dy[2, 0] = -np.nan, np.nan    # column 0: negative NaN first
        dy[1, 1], dy[2, 1] = np.nan, -np.nan    # column 1: positive NaN first
    dy[0, 2] = np.inf                           # column 2: +inf, no NaN; column 3: finite
    _, _, db = bwd("c")(dy, x, W, None if act == "identity" else z, act, ALPHA.get(act))
    canonical = np.array([np.nan], dtype).view(np.uint32 if dtype == np.float32 else np.uint64)[0]
    bits = db.view(np.uint32 if dtype == np.float32 else np.uint64)
    assert bits[0] == canonical and bits[1] == canonical, [hex(b) for b in bits]
    ref = bwd("numpy")(dy, x, W, None if act == "identity" else z, act, ALPHA.get(act))[2]
    np.testing.assert_allclose(db[2:], ref[2:], rtol=1e-6)   # +inf, and the finite column


# ---- layouts --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_fortran_and_negative_stride_inputs_give_the_contiguous_result(backend):
    rng = np.random.default_rng(18)
    x, W, b = _inputs(rng, 7, 5, 6, np.float32)
    dy = rng.standard_normal((7, 6)).astype(np.float32)
    y, z = fwd(backend)(x, W, b, "gelu", keep_preactivation=True)
    grads = bwd(backend)(dy, x, W, z, "gelu")

    def variants(a):
        return [np.asfortranarray(a), np.flip(np.flip(a).copy()), np.flip(np.flip(a, 0).copy(), 0)] \
            if a.ndim == 2 else [np.flip(np.flip(a).copy())]

    for name, a in (("x", x), ("W", W), ("b", b)):
        for v in variants(a):
            assert not v.flags.c_contiguous or v.ndim == 1
            kw = {"x": x, "W": W, "b": b, name: v}
            y2, z2 = fwd(backend)(kw["x"], kw["W"], kw["b"], "gelu", keep_preactivation=True)
            np.testing.assert_array_equal(y2, y)
            np.testing.assert_array_equal(z2, z)
    for name, a in (("dy", dy), ("x", x), ("W", W), ("z", z)):
        for v in variants(a):
            kw = {"dy": dy, "x": x, "W": W, "z": z, name: v}
            got = bwd(backend)(kw["dy"], kw["x"], kw["W"], kw["z"], "gelu")
            for g, want in zip(got, grads, strict=True):
                np.testing.assert_array_equal(g, want)


# ---- accuracy across the C code's block edges (K > 64, M > 256) ------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_componentwise_gemm_bound_across_block_edges(backend, dtype):
    rng = np.random.default_rng(19)
    x, W, b = _inputs(rng, 3, 131, 301, dtype)
    y, z = fwd(backend)(x, W, b, "elu", keep_preactivation=True)
    x64, W64, b64 = (a.astype(np.float64) for a in (x, W, b))
    eps = np.finfo(dtype).eps
    assert np.all(np.abs(z - (x64 @ W64 + b64)) <= 16 * eps * (np.abs(x64) @ np.abs(W64) + np.abs(b64)))
    dy = rng.standard_normal((3, 301)).astype(dtype)
    dx, dW, db = bwd(backend)(dy, x, W, z, "elu")
    dz = activations.REFERENCE_BACKWARD["elu"](dy.astype(np.float64), z.astype(np.float64), None)
    adz = np.abs(dz)
    assert np.all(np.abs(dx - dz @ W64.T) <= 16 * eps * (adz @ np.abs(W64.T) + 1e-300))
    assert np.all(np.abs(dW - x64.T @ dz) <= 16 * eps * (np.abs(x64.T) @ adz + 1e-300))
    assert np.all(np.abs(db - dz.sum(0)) <= 16 * eps * (adz.sum(0) + 1e-300))


# ---- bad input --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_shape_mismatches_name_the_argument(backend):
    rng = np.random.default_rng(20)
    x, W, b = _inputs(rng, 4, 5, 3)
    z = x @ W + b
    dy = np.ones((4, 3))
    f, g = fwd(backend), bwd(backend)
    with pytest.raises(ValueError, match="^W"):
        f(x, W[:4])
    with pytest.raises(ValueError, match="^W"):
        f(x, W.T)
    with pytest.raises(ValueError, match="^b"):
        f(x, W, b[:2])
    with pytest.raises(ValueError, match="^b"):
        f(x, W, b[None, :])
    with pytest.raises(ValueError, match="^x"):
        f(x[0], W)
    with pytest.raises(ValueError, match="^W"):
        f(x, W[0])
    with pytest.raises(ValueError, match="^dy"):
        g(np.ones((4, 4)), x, W, z, "relu")
    with pytest.raises(ValueError, match="^dy"):
        g(np.ones((3, 3)), x, W, z, "relu")
    with pytest.raises(ValueError, match="^z"):
        g(dy, x, W, z[:, :2], "relu")
    with pytest.raises(ValueError, match="^z"):
        g(dy, x, W, z.T.copy(), "identity")
    with pytest.raises(ValueError, match="^W"):
        g(dy, x, W[:4], z, "relu")
    for act in ACTS[1:]:
        with pytest.raises(ValueError, match="^z"):
            g(dy, x, W, None, act)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dtypes_and_types_name_the_argument(backend):
    rng = np.random.default_rng(21)
    x, W, b = _inputs(rng, 4, 5, 3)
    z = x @ W + b
    dy = np.ones((4, 3))
    f, g = fwd(backend), bwd(backend)
    f32 = np.float32
    with pytest.raises(TypeError, match="^W"):
        f(x, W.astype(f32), b)
    with pytest.raises(TypeError, match="^b"):
        f(x, W, b.astype(f32))
    with pytest.raises(TypeError, match="^W"):
        f(x.astype(f32), W, b)
    with pytest.raises(TypeError, match="^dy"):
        g(dy.astype(f32), x, W, z, "tanh")
    with pytest.raises(TypeError, match="^z"):
        g(dy, x, W, z.astype(f32), "tanh")
    for name in ("x", "W", "b"):
        kw = {"x": x, "W": W, "b": b, name: {"x": x, "W": W, "b": b}[name].astype(np.int64)}
        with pytest.raises(TypeError, match=f"^{name}"):
            f(**kw)
    with pytest.raises(TypeError, match="^x"):
        f(x.tolist(), W)
    with pytest.raises(TypeError, match="^dy"):
        g(dy.astype(np.int32), x, W, z, "tanh")
    with pytest.raises(TypeError, match="^keep_preactivation"):
        f(x, W, b, keep_preactivation="yes")


@pytest.mark.parametrize("backend", BACKENDS)
def test_activation_and_alpha_are_checked(backend):
    rng = np.random.default_rng(22)
    x, W, b = _inputs(rng, 4, 5, 3)
    z = x @ W + b
    f, g = fwd(backend), bwd(backend)
    for bad in ("prelu", "softmax", "ReLU", None):
        with pytest.raises(ValueError, match="^activation"):
            f(x, W, b, bad)
        with pytest.raises(ValueError, match="^activation"):
            g(np.ones((4, 3)), x, W, z, bad)
    with pytest.raises(ValueError, match="^alpha"):
        f(x, W, b, "relu", alpha=0.1)
    with pytest.raises(ValueError, match="^alpha"):
        f(x, W, b, "elu", alpha=-1.0)
    with pytest.raises(ValueError, match="^alpha"):
        g(np.ones((4, 3)), x, W, z, "leaky_relu", alpha=np.nan)
    # alpha reaches the activation: leaky slope -1 is |z| on the negative side
    y = f(x, W, b, "leaky_relu", alpha=-1.0)
    np.testing.assert_allclose(y, np.abs(x @ W + b), rtol=1e-13)


# ---- the Numba backend's GEMM (kernels._nbgemm) across its tile and block edges --------------------------

needs_numba = pytest.mark.skipif("numba" not in BACKENDS, reason="numba backend unavailable")


def _nbgemm_blocks(dtype):
    from kernels import _nbgemm
    f32 = dtype == np.float32
    return _nbgemm, _nbgemm.MR, (_nbgemm.NR32 if f32 else _nbgemm.NR64), (_nbgemm.MC32 if f32 else _nbgemm.MC64), \
        _nbgemm.KC, (_nbgemm.NC32 if f32 else _nbgemm.NC64)


def _gemm_shapes(dtype):
    _, MR, NR, MC, KC, NC = _nbgemm_blocks(dtype)
    # every tail of the MR x NR tile, two m blocks (MC + 1), two k blocks (KC + 1, balanced), two n blocks;
    # last micro-panels of 1 .. MR - 1 rows over whole NR columns (the row kernels, straight into C)
    return [(1, 1, 1), (MR - 1, 2, NR - 1), (MR, 3, NR), (MR + 1, 5, NR + 1), (2 * MR + 5, KC + 1, 3 * NR + 7),
            (MC + 1, 9, 2 * NR), (MR + 3, 2 * KC + 3, NR + 2), (3, 4, NC + 1), (MC + MR + 1, KC - 1, NR + 5),
            (MR + 2, 7, NR), (2 * MR + 4, 11, 2 * NR), (MR - 1, KC + 2, NR)]


@needs_numba
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["NN", "TN", "NT"])
def test_numba_gemm_tails_and_blocks_against_float64(dtype, layout):
    nbg = _nbgemm_blocks(dtype)[0]
    rng = np.random.default_rng(23)
    eps = np.finfo(dtype).eps
    for m, k, n in _gemm_shapes(dtype):
        A = rng.standard_normal((m, k)).astype(dtype)
        B = rng.standard_normal((k, n)).astype(dtype)
        bias = rng.standard_normal(n).astype(dtype)
        # the backward's operands are transposed views: x.T (F order) and W.T
        a = np.ascontiguousarray(A.T).T if layout[0] == "T" else A
        b_ = np.ascontiguousarray(B.T).T if layout[1] == "T" else B
        for bb in (bias, np.empty(0, dtype)):
            C = np.full((m, n), np.nan, dtype)       # every element must be written
            nbg.gemm(C, a, b_, bb, C, 0, 0.0, False)
            want = A.astype(np.float64) @ B.astype(np.float64) + (bb.astype(np.float64) if bb.size else 0)
            bound = 16 * eps * (np.abs(A.astype(np.float64)) @ np.abs(B.astype(np.float64))
                                + (np.abs(bb.astype(np.float64)) if bb.size else 0))
            assert np.all(np.abs(C - want) <= bound), (m, k, n, bb.size)


@needs_numba
@pytest.mark.parametrize("dtype", DTYPES)
def test_numba_gemm_epilogue_writes_act_of_every_element(dtype):
    nbg, MR, NR, MC, KC, NC = _nbgemm_blocks(dtype)
    rng = np.random.default_rng(24)
    m, k, n = MC + MR + 1, KC + 2, 3 * NR + 1
    A = rng.standard_normal((m, k)).astype(dtype)
    B = rng.standard_normal((k, n)).astype(dtype)
    b = rng.standard_normal(n).astype(dtype)
    z = np.full((m, n), np.nan, dtype)
    y = np.full((m, n), np.nan, dtype)
    nbg.gemm(z, A, B, b, y, activations.ACT_CODES["elu"], 0.7, True)
    np.testing.assert_array_equal(y, kernels.get("elu_forward", "numba")(z, alpha=0.7))
    z_kept = z.copy()
    nbg.gemm(z, A, B, b, z, activations.ACT_CODES["relu"], 0.0, True)    # in place: y is z itself
    np.testing.assert_array_equal(z, kernels.get("relu_forward", "numba")(z_kept))


@needs_numba
@pytest.mark.parametrize("dtype", DTYPES)
def test_numba_gemm_nan_and_inf_follow_ieee_like_blas(dtype):
    # fmuladd may fuse into an FMA, but it is not fastmath: NaN, inf and inf * 0 must propagate
    nbg, MR, NR, MC, KC, NC = _nbgemm_blocks(dtype)
    rng = np.random.default_rng(25)
    m, k, n = 2 * MR + 1, KC + 5, 2 * NR + 3
    A = rng.uniform(0.5, 1, (m, k)).astype(dtype)
    B = rng.uniform(0.5, 1, (k, n)).astype(dtype)
    A[1, 7] = np.nan                   # row 1: NaN
    A[MR, KC + 2] = np.inf             # row MR: +inf (in the second k block)
    A[2 * MR, 3] = np.inf              # last (partial) row: inf * 0 = NaN in column n - 1 only
    B[3, n - 1] = 0
    B[9, NR + 1] = -np.inf             # column NR + 1: -inf, and NaN in rows with +inf (inf - inf)
    C = np.empty((m, n), dtype)
    nbg.gemm(C, A, B, np.empty(0, dtype), C, 0, 0.0, False)
    with np.errstate(invalid="ignore"):
        want = A.astype(np.float64) @ B.astype(np.float64)
    np.testing.assert_array_equal(np.isnan(C), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(C), np.isinf(want))
    np.testing.assert_array_equal(np.sign(C[np.isinf(C)]), np.sign(want[np.isinf(want)]))
    assert np.isnan(C[1]).all() and np.isnan(C[2 * MR, n - 1]) and np.isnan(C[MR, NR + 1])
    assert np.isposinf(C[MR, 0]) and np.isneginf(C[0, NR + 1])


@needs_numba
@pytest.mark.parametrize("dtype", DTYPES)
def test_numba_linear_across_blocks_matches_the_reference(dtype):
    # forward and both backward products (dz @ W.T, x.T @ dz) past the m, k and n block edges
    _, MR, NR, MC, KC, NC = _nbgemm_blocks(dtype)
    rng = np.random.default_rng(26)
    N, K, M = MC + 5, KC + 3, 2 * NR + 5
    x, W, b = _inputs(rng, N, K, M, dtype)
    dy = rng.standard_normal((N, M)).astype(dtype)
    y, z = fwd("numba")(x, W, b, "tanh", keep_preactivation=True)
    yr, zr = fwd("numpy")(x, W, b, "tanh", keep_preactivation=True)
    eps = np.finfo(dtype).eps
    x64, W64 = x.astype(np.float64), W.astype(np.float64)
    assert np.all(np.abs(z - zr.astype(np.float64)) <= 16 * eps * (np.abs(x64) @ np.abs(W64) + np.abs(b) + 1e-300))
    got = bwd("numba")(dy, x, W, z, "tanh")
    dz = activations.REFERENCE_BACKWARD["tanh"](dy.astype(np.float64), z.astype(np.float64), None)
    for g, want, bound in zip(got, (dz @ W64.T, x64.T @ dz, dz.sum(0)),
                              (np.abs(dz) @ np.abs(W64.T), np.abs(x64.T) @ np.abs(dz), np.abs(dz).sum(0)),
                              strict=True):
        assert np.all(np.abs(g - want) <= 16 * eps * bound + 1e-300)


@needs_numba
@pytest.mark.parametrize("dtype", DTYPES)
def test_numba_gemm_keeps_its_workspace_and_never_reads_stale_panels(dtype):
    # the packed panels live in a per-thread workspace kept between calls (a fresh one per call was
    # page-faulted in inside the timed product): the same buffer serves the next product, and what an
    # earlier product left there (here NaN) never reaches a result, whatever the tails and padding
    nbg, MR, NR, MC, KC, NC = _nbgemm_blocks(dtype)
    rng = np.random.default_rng(27)
    A = rng.standard_normal((MC + 7, KC + 3)).astype(dtype)
    B = rng.standard_normal((KC + 3, 2 * NR + 1)).astype(dtype)
    C = np.empty((A.shape[0], B.shape[1]), dtype)
    nbg.gemm(C, A, B, np.empty(0, dtype), C, 0, 0.0, False)
    work = nbg._workspace(dtype, 1)
    work.fill(np.nan)
    for m, k, n in ((MR + 1, 5, NR + 3), (1, 1, 1), (MC + 7, KC + 3, 2 * NR + 1)):
        a, b = A[:m, :k].copy(), B[:k, :n].copy()
        c = np.full((m, n), np.nan, dtype)
        nbg.gemm(c, a, b, np.empty(0, dtype), c, 0, 0.0, False)
        want = a.astype(np.float64) @ b.astype(np.float64)
        bound = 16 * np.finfo(dtype).eps * (np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64)))
        assert np.all(np.abs(c - want) <= bound), (m, k, n)
    assert nbg._workspace(dtype, 1) is work


# ---- the Numba GEMM's threads (numba.prange): a fresh process each, so this one's thread pool is untouched ----

_NB_THREADS_CHILD = r"""
import hashlib, json, sys
import numpy as np, numba
import kernels
from kernels import _nbgemm
from kernels.linear import linear_backward_numba, linear_forward_numba

def products(shapes, threads):
    # a digest of every output of forward (bias, tanh, z kept) and backward on each shape, and the
    # team sizes _nbgemm chose
    numba.set_num_threads(threads)
    h, teams = hashlib.sha256(), set()
    rng = np.random.default_rng(5)
    for dt in (np.float32, np.float64):
        for N, K, M in shapes:
            x = rng.standard_normal((N, K)).astype(dt)
            W = rng.standard_normal((K, M)).astype(dt)
            b = rng.standard_normal(M).astype(dt)
            dy = rng.standard_normal((N, M)).astype(dt)
            y, z = linear_forward_numba(x, W, b, "tanh", keep_preactivation=True)
            for a in (y, z, linear_forward_numba(x, W), *linear_backward_numba(dy, x, W, z, "tanh")):
                h.update(np.ascontiguousarray(a).tobytes())
            teams |= {_nbgemm._team(N, M, K), _nbgemm._team(N, K, M), _nbgemm._team(K, M, N)}
    return h.hexdigest(), sorted(teams)

def child(q):
    a = np.full((300, 300), 0.5, np.float32)
    q.put((float(linear_forward_numba(a, a)[7, 7]), _nbgemm._team(300, 300, 300)))

if __name__ == "__main__":
    if sys.argv[1] == "threads":
        _nbgemm.THREAD_MIN_WORK = 0     # every shape on the team
        shapes = json.loads(sys.argv[2])
        runs = {t: products(shapes, t) for t in (1, 2, 3)}
        _nbgemm._BP_GROUP_BYTES = 1     # the threaded GEMM's B packed one k block at a time
        runs["2, B by k block"] = products(shapes, 2)
        print(json.dumps(runs))
    else:                               # a threaded GEMM in this process, then a spawn and a fork child
        a = np.full((300, 300), 0.5, np.float32)
        print("parent", float(linear_forward_numba(a, a)[7, 7]), _nbgemm._team(300, 300, 300), flush=True)
        from tests.forking import spawn_and_fork
        spawn_and_fork(child, timeout=120)
"""


def _nb_child(tmp_path, *args):
    from tests import forking

    return forking.run_script_lines(tmp_path, _NB_THREADS_CHILD, *args, timeout=600, NUMBA_NUM_THREADS="3")


@needs_numba
def test_numba_gemm_thread_count_never_changes_a_result(tmp_path):
    # every tail and block edge of both dtypes' blockings, in all three products of forward and backward,
    # on 1, 2 and 3 threads (3: unequal shares, more threads than this machine's cores): bit for bit equal
    import json

    f32, f64 = _nbgemm_blocks(np.float32), _nbgemm_blocks(np.float64)
    _, MR, NR, MC, KC, NC = f32
    shapes = {(1, 1, 1), (MR - 1, 2, NR - 1), (2 * MR + 5, KC + 1, 3 * NR + 7), (MC + 1, 9, 2 * NR + 3),
              (MC + MR + 1, KC - 1, NR + 5), (5 * MC + 7, 33, 3), (3, 2 * KC + 9, 2 * NR + 1), (7, 5, NC + 1),
              (f64[3] * 3 + 1, 17, f64[2] + 1)}
    runs = json.loads(_nb_child(tmp_path, "threads", json.dumps(sorted(shapes)))[-1])
    assert runs["1"][1] == [1] and runs["2"][1] == [2] and runs["3"][1] == [3], runs   # all on the team
    assert runs["1"][0] == runs["2"][0] == runs["3"][0] == runs["2, B by k block"][0]


@needs_numba
def test_numba_threaded_gemm_then_spawn_and_fork_children(tmp_path):
    """Numba's OpenMP layer kills a forked child that starts a parallel region once its parent ran one:
    a fork of a process that ran a threaded GEMM must run its GEMMs on one thread (and live); a
    spawned child starts fresh with its own team."""
    lines = dict(line.split(" ", 1) for line in _nb_child(tmp_path, "fork"))
    assert lines["parent"] == "75.0 3", lines
    assert lines["spawn"] == "0 75.0 3", lines
    assert lines["fork"] == "0 75.0 1", lines
