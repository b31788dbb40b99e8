"""Properties of the activation kernels: gradients against central differences, limits at +-1e30 and
+-inf, NaN propagation, the conventions at the kinks, alpha validation, PReLU per-channel and shared,
and bad input. (Backend-vs-reference agreement on random inputs is the generic registry test's job.)"""

import math
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.special

import kernels
from kernels import activations as A

BACKENDS = [b for b, why in kernels.backends().items() if why is None]
DTYPES = [np.float32, np.float64]
ACTS = list(A.ACT_CODES)
# alphas exercised per activation (None = the default)
ALPHAS = {"leaky_relu": [None, 0.3, -0.5, 0.0, 2.0], "elu": [None, 0.0, 2.5]}


def fwd(act, backend):
    return kernels.get(f"{act}_forward", backend)


def bwd(act, backend):
    return kernels.get(f"{act}_backward", backend)


def act_alpha_params():
    return [(a, al) for a in ACTS for al in ALPHAS.get(a, [None])]


# ---- gradients ------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("act,alpha", act_alpha_params())
def test_backward_matches_central_differences(act, alpha, backend):
    rng = np.random.default_rng(1)
    x = rng.uniform(-4, 4, 200)
    x = x[np.abs(x) > 0.05]                      # away from the kinks at 0
    dy = rng.standard_normal(x.shape)
    h = 1e-6
    f = fwd(act, backend)
    fd = dy * (f(x + h, alpha=alpha) - f(x - h, alpha=alpha)) / (2 * h)
    got = bwd(act, backend)(dy, x, alpha=alpha)
    np.testing.assert_allclose(got, fd, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shared", [False, True])
def test_prelu_backward_matches_central_differences(backend, shared):
    rng = np.random.default_rng(2)
    N, C = 6, 5
    x = rng.uniform(-3, 3, (N, C))
    x[np.abs(x) < 0.05] = 0.5
    a = rng.uniform(-0.5, 0.5, (1,) if shared else (C,))
    dy = rng.standard_normal((N, C))
    f, b = kernels.get("prelu_forward", backend), kernels.get("prelu_backward", backend)
    h = 1e-6
    dx, da = b(dy, x, a)
    assert da.shape == a.shape
    fd_x = dy * (f(x + h, a) - f(x - h, a)) / (2 * h)
    np.testing.assert_allclose(dx, fd_x, rtol=1e-7, atol=1e-8)
    fd_a = np.empty_like(a)
    for c in range(a.size):
        e = np.zeros_like(a)
        e[c] = h
        fd_a[c] = np.sum(dy * (f(x, a + e) - f(x, a - e))) / (2 * h)
    np.testing.assert_allclose(da, fd_a, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_derivative_convention_at_zero(backend, dtype):
    z = np.zeros(2, dtype)
    one = np.ones(2, dtype)
    assert np.all(bwd("relu", backend)(one, z) == 0)
    assert np.all(bwd("leaky_relu", backend)(one, z, alpha=0.25) == np.float32(0.25))
    assert np.all(bwd("elu", backend)(one, z, alpha=1.5) == 1.5)
    assert np.all(bwd("gelu", backend)(one, z) == 0.5)
    assert np.all(bwd("sigmoid", backend)(one, z) == 0.25)
    assert np.all(bwd("tanh", backend)(one, z) == 1)
    dx, da = kernels.get("prelu_backward", backend)(one[None, :], z[None, :], np.full(2, 0.25, dtype))
    assert np.all(dx == 0.25) and np.all(da == 0)


# ---- accuracy in the tails (a formula like 1 - tanh^2 or s * (1 - s) would give 0 there) ----------

@pytest.mark.parametrize("backend", BACKENDS)
def test_tails_are_relatively_accurate(backend):
    one = np.ones(1)
    np.testing.assert_allclose(fwd("sigmoid", backend)(np.array([-50.0])), math.exp(-50), rtol=1e-14)
    np.testing.assert_allclose(bwd("sigmoid", backend)(one, np.array([50.0])), math.exp(-50), rtol=1e-14)
    np.testing.assert_allclose(bwd("tanh", backend)(one, np.array([20.0])), 4 * math.exp(-40), rtol=1e-14)
    np.testing.assert_allclose(bwd("tanh", backend)(one, np.array([-20.0])), 4 * math.exp(-40), rtol=1e-14)
    # expm1, not exp - 1
    np.testing.assert_allclose(fwd("elu", backend)(np.array([-1e-10])), -1e-10 + 0.5e-20, rtol=1e-14)
    x = np.linspace(-8, 8, 161)
    np.testing.assert_allclose(fwd("gelu", backend)(x), x * scipy.special.ndtr(x), rtol=1e-13, atol=1e-300)
    d = scipy.special.ndtr(x) + x * np.exp(-x * x / 2) / math.sqrt(2 * math.pi)
    np.testing.assert_allclose(bwd("gelu", backend)(np.ones_like(x), x), d, rtol=1e-12, atol=1e-300)


# ---- limits at +-1e30 and +-inf ------------------------------------------------------------------

X_LIMITS = [np.inf, 1e30, -1e30, -np.inf]
# act, alpha -> (forward at X_LIMITS, derivative at X_LIMITS)
LIMITS = {
    ("identity", None): ([np.inf, 1e30, -1e30, -np.inf], [1, 1, 1, 1]),
    ("sigmoid", None): ([1, 1, 0, 0], [0, 0, 0, 0]),
    ("tanh", None): ([1, 1, -1, -1], [0, 0, 0, 0]),
    ("relu", None): ([np.inf, 1e30, 0, 0], [1, 1, 0, 0]),
    ("leaky_relu", 0.1): ([np.inf, 1e30, -1e29, -np.inf], [1, 1, 0.1, 0.1]),
    ("leaky_relu", -2.0): ([np.inf, 1e30, 2e30, np.inf], [1, 1, -2, -2]),
    ("leaky_relu", 0.0): ([np.inf, 1e30, 0, 0], [1, 1, 0, 0]),
    ("elu", 0.5): ([np.inf, 1e30, -0.5, -0.5], [1, 1, 0, 0]),
    ("elu", 0.0): ([np.inf, 1e30, 0, 0], [1, 1, 0, 0]),
    ("gelu", None): ([np.inf, 1e30, 0, 0], [1, 1, 0, 0]),
}


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act,alpha", list(LIMITS))
def test_limits_at_large_and_infinite_x(act, alpha, backend, dtype):
    want_y, want_d = LIMITS[(act, alpha)]
    x = np.array(X_LIMITS, dtype)
    y = fwd(act, backend)(x, alpha=alpha)
    np.testing.assert_allclose(y, np.array(want_y, dtype), rtol=4 * np.finfo(dtype).eps, atol=0)
    dy = np.array([1.5, -2.0, 3.0, -0.5], dtype)
    dx = bwd(act, backend)(dy, x, alpha=alpha)
    assert np.all(np.isfinite(dx)), f"finite dy and infinite x must give a finite dx, got {dx}"
    np.testing.assert_allclose(dx, dy * np.array(want_d, dtype), rtol=4 * np.finfo(dtype).eps, atol=0)


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("act,alpha", act_alpha_params())
def test_infinite_dy_times_a_zero_derivative_is_zero(act, alpha, backend):
    dy = np.array([np.inf, -np.inf, np.inf])
    x = np.array([-np.inf, np.inf, 1.0])
    dx = bwd(act, backend)(dy, x, alpha=alpha)
    assert not np.any(np.isnan(dx)), dx
    zero_at_minus_inf = (act in ("sigmoid", "tanh", "relu", "elu", "gelu")
                         or (act == "leaky_relu" and alpha == 0))
    assert (dx[0] == 0) == zero_at_minus_inf, dx   # the path is blocked even for an infinite dy
    assert (dx[1] == 0) == (act in ("sigmoid", "tanh")), dx
    assert dx[2] == np.inf  # every derivative is > 0 at x = 1


# ---- NaN ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act,alpha", act_alpha_params())
def test_nan_propagates(act, alpha, backend, dtype):
    x = np.array([np.nan, -np.nan, 1.0, -1.0, 0.0, -np.inf, np.inf], dtype)
    y = fwd(act, backend)(x, alpha=alpha)
    assert np.isnan(y[:2]).all() and not np.isnan(y[2:]).any(), y
    dx = bwd(act, backend)(np.ones_like(x), x, alpha=alpha)
    assert np.isnan(dx[:2]).all() and not np.isnan(dx[2:]).any(), dx
    # NaN in dy gives NaN whatever x is, the zero-derivative regions (relu at x < 0, sigmoid at inf) too
    dx = bwd(act, backend)(np.full_like(x, np.nan), x, alpha=alpha)
    assert np.isnan(dx).all(), dx


@pytest.mark.parametrize("backend", BACKENDS)
def test_prelu_special_values(backend):
    x = np.array([[np.nan, -np.inf, np.inf, 0.0], [-2.0, -np.inf, 1.0, -1.0]])
    a = np.array([0.5, 0.0, 0.5, np.nan])
    y = kernels.get("prelu_forward", backend)(x, a)
    want = np.array([[np.nan, 0.0, np.inf, 0.0], [-1.0, 0.0, 1.0, np.nan]])
    np.testing.assert_array_equal(y, want)   # a = 0 maps -inf to 0; NaN slope only where x < 0
    dx, da = kernels.get("prelu_backward", backend)(np.ones_like(x), x, a)
    np.testing.assert_array_equal(dx, [[np.nan, 0.0, 1.0, np.nan], [0.5, 0.0, 1.0, np.nan]])
    np.testing.assert_array_equal(da, [np.nan, -np.inf, 0.0, -1.0])


# ---- values, shapes, PReLU -------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_known_values(backend, dtype):
    x = np.array([-1.0, 0.5, 2.0], dtype)
    tol = {"rtol": 4 * np.finfo(dtype).eps}
    np.testing.assert_allclose(fwd("relu", backend)(x), [0, 0.5, 2], **tol)
    np.testing.assert_allclose(fwd("leaky_relu", backend)(x), [-0.01, 0.5, 2], **tol)
    np.testing.assert_allclose(fwd("leaky_relu", backend)(x, alpha=-3), [3, 0.5, 2], **tol)
    np.testing.assert_allclose(fwd("elu", backend)(x), [math.expm1(-1), 0.5, 2], **tol)
    np.testing.assert_allclose(fwd("elu", backend)(x, alpha=2), [2 * math.expm1(-1), 0.5, 2], **tol)
    np.testing.assert_allclose(fwd("sigmoid", backend)(x), 1 / (1 + np.exp(-x.astype(float))), **tol)
    np.testing.assert_allclose(fwd("tanh", backend)(x), np.tanh(x.astype(float)), **tol)
    np.testing.assert_allclose(fwd("gelu", backend)(x), x * scipy.special.ndtr(x.astype(float)), **tol)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("act", ACTS)
def test_any_shape_and_empty(act, backend):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 4, 5))
    dy = rng.standard_normal((3, 4, 5))
    y = fwd(act, backend)(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    np.testing.assert_array_equal(y.reshape(-1), fwd(act, backend)(x.reshape(-1)))
    np.testing.assert_array_equal(bwd(act, backend)(dy, x).reshape(-1),
                                  bwd(act, backend)(dy.reshape(-1), x.reshape(-1)))
    s = np.array(0.7)
    assert fwd(act, backend)(s).shape == ()
    for shape in [(0,), (4, 0), (0, 3, 2)]:
        e = np.empty(shape, np.float32)
        assert fwd(act, backend)(e).shape == shape and fwd(act, backend)(e).dtype == np.float32
        assert bwd(act, backend)(e, e).shape == shape


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_prelu_per_channel_and_shared(backend, dtype):
    f, b = kernels.get("prelu_forward", backend), kernels.get("prelu_backward", backend)
    x = np.array([[-2.0, 3.0, -1.0], [4.0, -5.0, -0.5]], dtype)
    a = np.array([0.5, -0.25, 2.0], dtype)
    np.testing.assert_array_equal(f(x, a), np.array([[-1.0, 3.0, -2.0], [4.0, 1.25, -1.0]], dtype))
    dy = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype)
    dx, da = b(dy, x, a)
    np.testing.assert_array_equal(dx, np.array([[0.5, 2.0, 6.0], [4.0, -1.25, 12.0]], dtype))
    np.testing.assert_array_equal(da, np.array([-2.0, -25.0, -6.0], dtype))   # sum dy * min(x, 0)
    # a shared slope is a per-channel one repeated, and its gradient is the sum over channels
    s = np.array([0.3], dtype)
    rep = np.repeat(s, 3)
    np.testing.assert_array_equal(f(x, s), f(x, rep))
    dx_s, da_s = b(dy, x, s)
    dx_r, da_r = b(dy, x, rep)
    np.testing.assert_array_equal(dx_s, dx_r)
    assert da_s.shape == (1,) and da_s.dtype == dtype
    np.testing.assert_allclose(da_s, [da_r.astype(float).sum()], rtol=4 * np.finfo(dtype).eps)
    # empty rows: empty y, zero slope gradient
    e = np.empty((0, 3), dtype)
    assert f(e, a).shape == (0, 3)
    dx, da = b(e, e, a)
    assert dx.shape == (0, 3) and np.array_equal(da, np.zeros(3, dtype))
    dx, da = b(e, e, s)
    assert np.array_equal(da, np.zeros(1, dtype))


# ---- the codes, the shared helper and the reference dict ---------------------------------------------

def test_act_codes_match_the_c_header():
    header = (Path(__file__).resolve().parents[1] / "csrc" / "deepprop.h").read_text()
    codes = {m[0].lower(): int(m[1]) for m in re.findall(r"DP_ACT_(\w+)\s*=\s*(\d+)", header)}
    assert codes == A.ACT_CODES
    assert set(A.REFERENCE_BACKWARD) == set(A.ACT_CODES)


def test_reference_backward_dict_is_plain_float64():
    z = np.array([-1.0, 0.5, 2.0])
    dy = np.array([1.0, -2.0, 3.0])
    for act, f in A.REFERENCE_BACKWARD.items():
        got = f(dy, z, None)
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got, A.KERNELS[f"{act}_backward"]["numpy"](dy, z))
    np.testing.assert_array_equal(A.REFERENCE_BACKWARD["leaky_relu"](dy, z, 0.5), [0.5, -2.0, 3.0])


def test_check_activation():
    assert A.check_activation("relu", None) == (3, 0.0)
    assert A.check_activation("leaky_relu", None) == (4, 0.01)
    assert A.check_activation("elu", None) == (5, 1.0)
    assert A.check_activation("leaky_relu", -2) == (4, -2.0)
    for bad in ("prelu", "softmax", None, 3):
        with pytest.raises(ValueError, match="^activation"):
            A.check_activation(bad, None)


# ---- bad input -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_alpha_validation(backend):
    x = np.ones(3)
    for act in ("identity", "sigmoid", "tanh", "relu", "gelu"):
        with pytest.raises(ValueError, match="^alpha"):
            fwd(act, backend)(x, alpha=0.1)
        with pytest.raises(ValueError, match="^alpha"):
            bwd(act, backend)(x, x, alpha=0.0)
    for act in ("leaky_relu", "elu"):
        for bad in (np.inf, -np.inf, np.nan):
            with pytest.raises(ValueError, match="^alpha"):
                fwd(act, backend)(x, alpha=bad)
            with pytest.raises(ValueError, match="^alpha"):
                bwd(act, backend)(x, x, alpha=bad)
        with pytest.raises(TypeError, match="^alpha"):
            fwd(act, backend)(x, alpha="0.1")
    with pytest.raises(ValueError, match="^alpha"):
        fwd("elu", backend)(x, alpha=-0.1)
    fwd("leaky_relu", backend)(x, alpha=-0.1)   # any finite slope


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("act", ACTS)
def test_bad_arrays(act, backend):
    x64, x32 = np.ones((2, 3)), np.ones((2, 3), np.float32)
    with pytest.raises(TypeError, match="^x"):
        bwd(act, backend)(x64, x32)
    with pytest.raises(TypeError, match="^x"):
        bwd(act, backend)(x32, x64)
    with pytest.raises(ValueError, match="^x"):
        bwd(act, backend)(x64, np.ones((3, 2)))
    with pytest.raises(TypeError, match="^x"):
        fwd(act, backend)(np.ones(3, np.int64))
    with pytest.raises(TypeError, match="^x"):
        fwd(act, backend)(np.ones(3, np.float16))
    with pytest.raises(TypeError, match="^dy"):
        bwd(act, backend)(np.ones(3, np.int32), np.ones(3))
    with pytest.raises(TypeError, match="^x"):
        fwd(act, backend)([1.0, 2.0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_prelu_bad_input(backend):
    f, b = kernels.get("prelu_forward", backend), kernels.get("prelu_backward", backend)
    x = np.ones((4, 3))
    with pytest.raises(TypeError, match="^a"):
        f(x, np.ones(3, np.float32))
    with pytest.raises(ValueError, match="^a"):
        f(x, np.ones(4))
    with pytest.raises(ValueError, match="^a"):
        f(x, np.ones((1, 3)))
    with pytest.raises(ValueError, match="^x"):
        f(np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match="^x"):
        b(x, np.ones((4, 2)), np.ones(3))
    with pytest.raises(TypeError, match="^x"):
        b(x, x.astype(np.float32), np.ones(3))
    with pytest.raises(ValueError, match="^dy"):
        b(np.ones(12), x, np.ones(3))


# ---- the AVX2 derivative (csrc/act_scalar.h) against the portable loop ----------------------------

PATH_WORKER = r"""
import json
import numpy as np
import kernels
from kernels import _c

rng = np.random.default_rng(11)
special = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45, 1e-310, 3e38, -3e38, 1e300, 2.0, -2.0])

def sprinkle(a):
    m = rng.random(a.shape) < 0.35
    with np.errstate(all="ignore"):
        a[m] = special[rng.integers(0, special.size, m.sum())].astype(a.dtype)
    if a.size > 2:   # a signalling NaN (the C code computes in double: quieted on the way)
        flat = a.reshape(-1).view(np.uint32 if a.dtype == np.float32 else np.uint64)
        flat[rng.integers(0, a.size, 2)] = 0x7F800001 if a.dtype == np.float32 else 0x7FF0000000000001
    return a

out = []
with np.errstate(all="ignore"):
    for dt in (np.float32, np.float64):
        # vector bodies of 8 (float) / 4 (double) and every tail length
        for n in (1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 33, 1025):
            x, dy = sprinkle(rng.standard_normal(n).astype(dt)), sprinkle(rng.standard_normal(n).astype(dt))
            for act, alpha in (("identity", None), ("relu", None), ("leaky_relu", None), ("leaky_relu", -0.5),
                               ("leaky_relu", 0.0), ("leaky_relu", 2.0), ("tanh", None)):
                kw = {} if alpha is None else {"alpha": alpha}
                res = [kernels.get(f"{act}_backward", "c")(dy, x, **kw)]
                res.append(kernels.get(f"{act}_backward", "c")(dy.copy(), x, **kw))
                out.append([a.tobytes().hex() for a in res])
        # linear: column tails and more than one 256-column block of db
        for N, K, M in ((1, 2, 1), (3, 5, 7), (7, 3, 9), (6, 4, 17), (5, 3, 300), (9, 2, 513)):
            x, W = rng.standard_normal((N, K)).astype(dt), rng.standard_normal((K, M)).astype(dt)
            z, dy = sprinkle(rng.standard_normal((N, M)).astype(dt)), sprinkle(rng.standard_normal((N, M)).astype(dt))
            b = rng.standard_normal(M).astype(dt)
            for act, alpha in (("relu", None), ("leaky_relu", 0.2), ("leaky_relu", -1.5), ("leaky_relu", 0.0),
                               ("identity", None)):
                kw = {} if alpha is None else {"alpha": alpha}
                res = list(kernels.get("linear_backward", "c")(dy, x, W, z, activation=act, **kw))
                res += list(kernels.get("linear_forward", "c")(sprinkle(x.copy()), W, b, activation=act,
                                                              keep_preactivation=True, **kw))
                res.append(kernels.get("linear_forward", "c")(x, W, b, activation=act, **kw))
                out.append([a.tobytes().hex() for a in res])
print(json.dumps({"isa": _c.ffi.string(_c.lib.activation_isa()).decode(), "out": out}))
"""


def _run_path(path):
    import json
    import os
    import subprocess
    import sys

    root = Path(kernels.__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    env.pop("DEEPPROP_ACTIVATION_ISA", None)
    if path is not None:
        env["DEEPPROP_ACTIVATION_ISA"] = path
    proc = subprocess.run([sys.executable, "-c", PATH_WORKER], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(kernels.backends()["c"] is not None, reason="C backend not built")
def test_c_derivative_paths_agree_bitwise():
    """relu and leaky_relu backward (and linear_backward's dz, db, linear_forward's fused relu
    and leaky_relu) on the AVX2 path are bit for bit the portable loop's, special values (NaN of both
    signs, a signalling NaN, +-inf, +-0, subnormals) and tails included; the override is honoured and
    reported, an unknown value ignored."""
    runs = {p: _run_path(p) for p in ("portable", "avx2", "sse9", None)}
    assert runs["portable"]["isa"] == "portable (forced by DEEPPROP_ACTIVATION_ISA)"
    widest = runs[None]["isa"]
    assert widest in ("avx2", "portable")
    assert runs["sse9"]["isa"].split()[0] == widest and "ignored" in runs["sse9"]["isa"]
    if widest == "avx2":
        assert runs["avx2"]["isa"] == "avx2 (forced by DEEPPROP_ACTIVATION_ISA)"
    for p in ("avx2", "sse9", None):
        assert runs[p]["out"] == runs["portable"]["out"], p


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b == "c"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_derivative_of_a_nan_takes_the_nan_of_x(backend, dtype):
    """dy * act'(x) with both NaN: the NaN of x (mul0 fixes the choice IEEE leaves open; both C paths)."""
    with np.errstate(invalid="ignore"):
        x = np.array([np.nan, -np.nan, np.nan, -np.nan], dtype)
        dy = np.array([-np.nan, np.nan, np.nan, -np.nan], dtype)
    for act in ("identity", "relu", "leaky_relu"):
        got = bwd(act, backend)(dy, x)
        assert np.all(np.signbit(got) == np.signbit(x)), act
