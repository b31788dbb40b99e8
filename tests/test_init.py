"""The initializers (kernels/init.py): known answers from an independent scalar Philox, distribution
tests (moments, Kolmogorov-Smirnov) at fixed seeds, each initializer's std/bound formula and fan rule,
the gains, the seed contract, and bad input. Deterministic: every seed is fixed.
"""

import json
import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import scipy.integrate
import scipy.special
import scipy.stats

import kernels
from kernels import init

BACKENDS = ["numpy", "numba", "c"]
DTYPES = ["float32", "float64"]
RANDOM = ["uniform_init", "normal_init", "xavier_uniform_init", "xavier_normal_init", "he_uniform_init",
          "he_normal_init", "lecun_normal_init"]
ALL = ["zeros_init", "constant_init", *RANDOM]


def get(name, backend):
    try:
        return kernels.get(name, backend)
    except kernels.BackendUnavailable as exc:
        pytest.skip(str(exc))


# ---- an independent scalar implementation of the seed contract, for known answers ---------------

def philox_py(ctr, key):
    M = 0xFFFFFFFF
    c, k = list(ctr), list(key)
    for r in range(10):
        if r:
            k = [(k[0] + 0x9E3779B9) & M, (k[1] + 0xBB67AE85) & M]
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [(p1 >> 32) ^ c[1] ^ k[0], p1 & M, (p0 >> 32) ^ c[3] ^ k[1], p0 & M]
    return c


def u53(a, b):
    return ((a >> 5) * 2**26 + (b >> 6)) / 2**53  # exact: a 53-bit integer over a power of two


def uniform_py(i, seed, low, high):
    w = philox_py([i & 0xFFFFFFFF, i >> 32, 1, 0], [seed & 0xFFFFFFFF, seed >> 32])
    return low + (high - low) * u53(w[0], w[1])


def normal_py(i, seed, mean, std):
    """normal stream v2: the pair (2j, 2j + 1) draws counter j; cosine half even, sine half odd"""
    j = i // 2
    w = philox_py([j & 0xFFFFFFFF, j >> 32, 2, 0], [seed & 0xFFFFFFFF, seed >> 32])
    r = math.sqrt(-2.0 * math.log(1.0 - u53(w[0], w[1])))
    theta = 2.0 * math.pi * u53(w[2], w[3])
    return mean + std * r * (math.sin(theta) if i % 2 else math.cos(theta))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", [0, 1, 2**32 + 7, 2**64 - 1])
def test_uniform_known_answers(backend, seed):
    got = get("uniform_init", backend)((3, 4), -2.0, 3.0, seed, "float64")
    expected = np.array([uniform_py(i, seed, -2.0, 3.0) for i in range(12)]).reshape(3, 4)
    np.testing.assert_array_equal(got, expected)
    got32 = get("uniform_init", backend)(12, -2.0, 3.0, seed, "float32")
    np.testing.assert_array_equal(got32, expected.reshape(-1).astype(np.float32))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", [0, 2**63 + 5])
@pytest.mark.parametrize("n", [16, 17])
def test_normal_known_answers(backend, seed, n):
    got = get("normal_init", backend)(n, 0.5, 2.0, seed, "float64")
    expected = np.array([normal_py(i, seed, 0.5, 2.0) for i in range(n)])
    tol = 16 * np.finfo(np.float64).eps * np.abs(expected).max()  # verify.TOLERANCE: normwise 16 eps
    np.testing.assert_allclose(got, expected, rtol=0, atol=tol)


def test_normal_pairs_are_one_counter():
    """Stream v2: elements 2j and 2j + 1 are r cos(theta), r sin(theta) of one counter, so each pair
    lies on one circle: z_2j^2 + z_2j+1^2 = r^2 = -2 log(1 - u(w0, w1)) of counter j."""
    z = init.normal_init(64, 0.0, 1.0, 11, "float64")
    for j in range(32):
        w = philox_py([j, 0, 2, 0], [11, 0])
        assert z[2 * j] ** 2 + z[2 * j + 1] ** 2 == pytest.approx(-2.0 * math.log(1.0 - u53(w[0], w[1])), rel=1e-13)


# ---- distributions ------------------------------------------------------------------------------

N_STAT = 100_000


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_uniform_moments_and_ks(backend, dtype):
    low, high = -2.0, 5.0
    x = get("uniform_init", backend)(N_STAT, low, high, 314, dtype).astype(np.float64)
    assert x.min() >= low and x.max() <= high
    width = high - low
    sd = width / math.sqrt(12)
    assert abs(x.mean() - (low + high) / 2) < 5 * sd / math.sqrt(N_STAT)
    # var of the sample variance of a uniform: (mu4 - sd^4) / n with mu4 = width^4 / 80
    assert abs(x.var() - sd**2) < 5 * math.sqrt((width**4 / 80 - sd**4) / N_STAT)
    assert scipy.stats.kstest(x, "uniform", args=(low, width)).pvalue > 1e-4


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_normal_moments_and_ks(backend, dtype):
    """Both halves are N(0, 1); so is each half alone (the even elements, the odd ones) and the two
    halves of a pair are uncorrelated (independent, for Box-Muller)."""
    mean, std = 3.0, 0.5
    x = get("normal_init", backend)(N_STAT, mean, std, 2718, dtype).astype(np.float64)
    assert np.all(np.isfinite(x))
    assert abs(x.mean() - mean) < 5 * std / math.sqrt(N_STAT)
    assert abs(x.var() - std**2) < 5 * std**2 * math.sqrt(2 / N_STAT)
    assert abs(scipy.stats.skew(x)) < 5 * math.sqrt(6 / N_STAT)
    assert abs(scipy.stats.kurtosis(x)) < 5 * math.sqrt(24 / N_STAT)
    assert scipy.stats.kstest(x, "norm", args=(mean, std)).pvalue > 1e-4
    for half in (x[0::2], x[1::2]):
        assert scipy.stats.kstest(half, "norm", args=(mean, std)).pvalue > 1e-4
    assert abs(np.corrcoef(x[0::2], x[1::2])[0, 1]) < 5 / math.sqrt(N_STAT / 2)


def test_ks_catches_a_wrong_distribution():
    """The KS test above can fail: a sum of two uniforms (triangular) is not uniform, and a
    uniform scaled to unit variance is not normal."""
    u = init.uniform_init(N_STAT, 0.0, 1.0, 1, "float64")
    v = init.uniform_init(N_STAT, 0.0, 1.0, 2, "float64")
    assert scipy.stats.kstest((u + v) / 2, "uniform").pvalue < 1e-4
    assert scipy.stats.kstest((u - 0.5) * math.sqrt(12), "norm").pvalue < 1e-4


def test_uniform_and_normal_streams_are_independent():
    """One seed, two streams: the uniform and normal draws are uncorrelated."""
    u = init.uniform_init(N_STAT, 0.0, 1.0, 77, "float64")
    z = init.normal_init(N_STAT, 0.0, 1.0, 77, "float64")
    assert abs(np.corrcoef(u, z)[0, 1]) < 5 / math.sqrt(N_STAT)
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 5 / math.sqrt(N_STAT)


# ---- the formulas: empirical std of a 512x512-sized draw within 3% -------------------------------

R2 = math.sqrt(2.0)
FORMULAS = [  # (kernel, kwargs, expected std, bound for the uniform ones)
    ("uniform_init", {"shape": (512, 512), "low": -2.0, "high": 5.0}, 7 / math.sqrt(12), None),
    ("normal_init", {"shape": (512, 512), "mean": 3.0, "std": 0.5}, 0.5, None),
    ("xavier_uniform_init", {"shape": (512, 512), "gain": 1.5}, None, 1.5 * math.sqrt(6 / 1024)),
    ("xavier_normal_init", {"shape": (1024, 256), "gain": 2.0}, 2.0 * math.sqrt(2 / 1280), None),
    ("xavier_normal_init", {"shape": (16, 64, 256)}, math.sqrt(2 / (16 * 256 + 64 * 256)), None),
    ("he_uniform_init", {"shape": (512, 512)}, None, R2 * math.sqrt(3 / 512)),
    ("he_uniform_init", {"shape": (256, 1024), "mode": "fan_out", "nonlinearity": "leaky_relu", "slope": 0.2},
     None, math.sqrt(2 / 1.04) * math.sqrt(3 / 1024)),
    ("he_normal_init", {"shape": (1024, 256), "nonlinearity": "tanh"}, (5 / 3) / math.sqrt(1024), None),
    ("he_normal_init", {"shape": (64, 32, 128), "mode": "fan_out", "nonlinearity": "selu"},
     0.75 / math.sqrt(32 * 128), None),
    ("he_normal_init", {"shape": (256, 1024), "mode": "fan_in"}, R2 / math.sqrt(256), None),
    ("lecun_normal_init", {"shape": (256, 1024)}, 1 / math.sqrt(256), None),
    ("lecun_normal_init", {"shape": 262144}, 1 / math.sqrt(262144), None),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,kwargs,std,bound", FORMULAS,
                         ids=[f"{f[0]}-{i}" for i, f in enumerate(FORMULAS)])
def test_std_and_bound_formulas(backend, name, kwargs, std, bound):
    w = get(name, backend)(**kwargs, seed=12, dtype="float64")
    shape = kwargs["shape"]
    assert w.shape == ((shape,) if isinstance(shape, int) else shape) and w.dtype == np.float64
    if bound is not None:
        std = bound / math.sqrt(3)
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.999 * bound
    assert abs(w.std() / std - 1) < 0.03, f"std {w.std():.5g}, expected {std:.5g}"


def test_fans():
    assert init._fans((7,)) == (7, 7)
    assert init._fans((3, 5)) == (3, 5)  # (in, out): y = x @ W
    assert init._fans((3, 5, 2, 4)) == (24, 40)
    for bad in [(), (0,), (3, 0), (2, 3, 0)]:
        with pytest.raises(ValueError, match="^shape"):
            init._fans(bad)


def test_he_mode_uses_our_orientation():
    """(in, out) = (16, 4096): fan_in is 16, so the fan_in draw is 16x wider than the fan_out one."""
    a = init.he_normal_init((16, 4096), mode="fan_in", seed=3, dtype="float64")
    b = init.he_normal_init((16, 4096), mode="fan_out", seed=3, dtype="float64")
    np.testing.assert_allclose(a, b * 16, rtol=1e-14)  # same z, std ratio sqrt(4096 / 16)


# ---- gains -------------------------------------------------------------------------------------

def test_pytorch_gain_table():
    g = init.calculate_gain
    for lin in ("linear", "identity", "conv1d", "conv2d", "conv3d", "conv_transpose2d", "sigmoid"):
        assert g(lin) == 1.0
    assert g("tanh") == 5 / 3 and g("relu") == math.sqrt(2) and g("selu") == 0.75
    assert g("leaky_relu") == math.sqrt(2 / (1 + 0.01**2))
    assert g("leaky_relu", 0.2) == math.sqrt(2 / 1.04)
    assert g("leaky_relu", 0.0) == g("relu")


def _second_moment(f):
    return scipy.integrate.quad(lambda z: f(z) ** 2 * scipy.stats.norm.pdf(z), -np.inf, np.inf,
                                epsabs=1e-13, epsrel=1e-13)[0]


@pytest.mark.parametrize("name,f", [
    ("relu", lambda z: max(z, 0.0)),
    ("elu", lambda z: z if z > 0 else math.expm1(z)),
    ("gelu", lambda z: z * scipy.special.ndtr(z)),
])
def test_elu_gelu_gains_follow_the_relu_rule(name, f):
    """gain = 1 / sqrt(E[f(z)^2]), z ~ N(0, 1): the rule that gives relu sqrt(2), checked by quadrature."""
    assert init.calculate_gain(name) == pytest.approx(1 / math.sqrt(_second_moment(f)), rel=1e-9)


def test_gain_errors():
    with pytest.raises(ValueError, match="^nonlinearity"):
        init.calculate_gain("swish")
    with pytest.raises(ValueError, match="^slope"):
        init.calculate_gain("leaky_relu", math.nan)
    with pytest.raises(TypeError, match="^slope"):
        init.calculate_gain("leaky_relu", "0.1")


# ---- the seed contract -------------------------------------------------------------------------

def _draw(name, backend, shape, seed, dtype="float32"):
    return get(name, backend)(shape, seed=seed, dtype=dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", RANDOM)
def test_same_seed_same_numbers_other_seed_other_numbers(backend, name):
    a = _draw(name, backend, (33, 7), 5)
    np.testing.assert_array_equal(a, _draw(name, backend, (33, 7), 5))
    for other in (6, 5 + 2**32):  # both key words matter
        b = _draw(name, backend, (33, 7), other)
        assert np.count_nonzero(a == b) < 5


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["uniform_init", "normal_init"])
def test_numbers_depend_on_the_flat_index_only(backend, name):
    """The draw is a function of (seed, stream, flat index): any shape of the same size gives the same
    numbers, and a shorter draw is a prefix of a longer one."""
    a = _draw(name, backend, (6, 4, 5), 9, "float64")
    np.testing.assert_array_equal(a.reshape(-1), _draw(name, backend, 120, 9, "float64"))
    np.testing.assert_array_equal(a.reshape(-1)[:37], _draw(name, backend, 37, 9, "float64"))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["uniform_init", "xavier_uniform_init", "he_uniform_init"])
def test_uniform_bit_identical_across_backends(name, dtype):
    for seed in (0, 123456789, 2**64 - 2):
        ref = _draw(name, "numpy", (129, 65), seed, dtype)
        for backend in ("numba", "c"):
            np.testing.assert_array_equal(_draw(name, backend, (129, 65), seed, dtype), ref, err_msg=backend)


#: the C AVX2 path's float32 normal (its math in float) against the float64 draw: ulp of float32 of z
F32_NORMAL_ULPS = 4.0


def _f32_math_in_float(backend):
    return backend == "c" and init.rng_isa().startswith("avx2")


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_is_the_rounded_float64_draw(backend):
    """float32 is float64 rounded once -- but the C AVX2 normal, whose float math keeps z within
    F32_NORMAL_ULPS of the float64 z (csrc/init.c), on every tail size of its 16-value steps."""
    for name in ("uniform_init", "normal_init"):
        for n in (1000, 1, 2, 15, 16, 17, 31, 33, 129, 4099):
            a32 = _draw(name, backend, n, 4, "float32")
            a64 = _draw(name, backend, n, 4, "float64")
            if name == "normal_init" and _f32_math_in_float(backend):
                ulps = np.abs(a32.astype(np.float64) - a64) / np.spacing(np.abs(a64).astype(np.float32))
                assert ulps.max() <= F32_NORMAL_ULPS, (n, ulps.max())
            else:
                np.testing.assert_array_equal(a32, a64.astype(np.float32))


@pytest.mark.parametrize("mean, std", [(0.0, 0.0883883), (0.25, 1.5), (0.0, 1e-40), (0.0, 5e-46), (1e-30, 1e-41),
                                       (0.0, 2.0**-100), (0.0, 1e38), (0.0, 1e39), (1e39, 1.0), (3e38, 1e38),
                                       (-3.0, 0.0), (0.0, 1e300)])
def test_float32_normal_extreme_parameters(mean, std):
    """The C float32 normal (float math and float affine where std is 0 or a float >= 2^-100 and mean a
    finite float, else the double math) against NumPy's: within verify's normwise 16 eps where finite,
    the same infinities (std or mean beyond float32's range) -- also where the outputs are subnormal,
    with fewer bits than the float math's few ulp (those take the double math)."""
    c = init.KERNELS["normal_init"]["c"](4099, mean, std, 77, "float32")
    r = init.KERNELS["normal_init"]["numpy"](4099, mean, std, 77, "float32")
    fin = np.isfinite(r)
    np.testing.assert_array_equal(np.isfinite(c), fin)
    np.testing.assert_array_equal(c[~fin], r[~fin])
    if fin.any():
        tol = 16 * np.finfo(np.float32).eps * float(np.abs(r[fin]).max())
        assert float(np.abs(c[fin].astype(np.float64) - r[fin]).max()) <= tol


def test_float32_normal_bound_can_fail():
    """The bound above catches a draw 5 ulp off."""
    a64 = _draw("normal_init", "numpy", 64, 4, "float64")
    bad = a64.astype(np.float32)
    bad[7] = bad[7] + 5 * np.spacing(np.abs(bad[7]))
    assert (np.abs(bad.astype(np.float64) - a64) / np.spacing(np.abs(a64).astype(np.float32))).max() > F32_NORMAL_ULPS


# ---- the deterministic ones and the limits -----------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_zeros_and_constant(backend, dtype):
    z = get("zeros_init", backend)((5, 3), dtype)
    assert z.shape == (5, 3) and z.dtype == dtype and np.all(z == 0) and not np.any(np.signbit(z))
    c = get("constant_init", backend)(7, 0.1, dtype)
    assert c.shape == (7,) and c.dtype == dtype
    np.testing.assert_array_equal(c, np.full(7, 0.1, dtype=dtype))
    assert get("zeros_init", backend)(4).dtype == np.float32  # the default dtype


@pytest.mark.parametrize("backend", BACKENDS)
def test_degenerate_parameters(backend):
    u = get("uniform_init", backend)(50, 2.5, 2.5, 1, "float64")
    assert np.all(u == 2.5)
    n = get("normal_init", backend)(50, -1.25, 0.0, 1, "float64")
    assert np.all(n == -1.25)
    assert np.all(get("xavier_uniform_init", backend)((4, 5), 0.0, 1) == 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_and_scalar_shapes(backend):
    plain = [("zeros_init", ()), ("constant_init", (1.0,)), ("uniform_init", ()), ("normal_init", ())]
    for name, args in plain:
        f = get(name, backend)
        assert f((0, 5), *args).shape == (0, 5)
        assert f(0, *args).shape == (0,)
        assert f((), *args).shape == ()
    for name in RANDOM[2:]:
        with pytest.raises(ValueError, match="^shape"):
            get(name, backend)((0, 5))
        with pytest.raises(ValueError, match="^shape"):
            get(name, backend)(())


@pytest.mark.parametrize("backend", BACKENDS)
def test_extreme_seeds_and_range(backend):
    u = get("uniform_init", backend)(1000, -1e300, 1e300, 2**64 - 1, "float64")
    assert np.all(np.isfinite(u)) and u.min() >= -1e300 and u.max() <= 1e300
    z = get("normal_init", backend)(1000, 0.0, 1.0, 2**64 - 1, "float64")
    assert np.all(np.abs(z) < 8.6)


# ---- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ALL)
def test_bad_shape_dtype_seed(backend, name):
    f = get(name, backend)
    extra = {"value": 1.0} if name == "constant_init" else {}
    with pytest.raises(ValueError, match=r"^shape\[1\]"):
        f((3, -1), **extra)
    with pytest.raises(TypeError, match="^shape"):
        f(3.0, **extra)
    with pytest.raises(TypeError, match="^shape"):
        f("3", **extra)
    with pytest.raises(TypeError, match=r"^shape\[0\]"):
        f((2.5, 3), **extra)
    for bad in ("int32", "float16", "complex128", "nope"):
        with pytest.raises(TypeError, match="^dtype"):
            f((3, 4), **extra, dtype=bad)
    if name in RANDOM:
        for bad in (-1, 2**64):
            with pytest.raises(ValueError, match="^seed"):
                f((3, 4), seed=bad)
        for bad in (1.0, "1", None):
            with pytest.raises(TypeError, match="^seed"):
                f((3, 4), seed=bad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_parameters(backend):
    def raises(name, match, exc=ValueError, **kw):
        with pytest.raises(exc, match=match):
            get(name, backend)((4, 3), **kw)

    raises("uniform_init", "^high", low=1.0, high=0.0)
    raises("uniform_init", "^high", low=-1e308, high=1e308)  # high - low overflows
    raises("uniform_init", "^low", low=math.nan)
    raises("uniform_init", "^high", high=math.inf)
    raises("normal_init", "^std", std=-0.1)
    raises("normal_init", "^std", std=math.inf)
    raises("normal_init", "^mean", mean=math.nan)
    raises("constant_init", "^value", value=math.nan)
    raises("constant_init", "^value", exc=TypeError, value="1")
    for name in ("xavier_uniform_init", "xavier_normal_init"):
        raises(name, "^gain", gain=-1.0)
        raises(name, "^gain", gain=math.nan)
    for name in ("he_uniform_init", "he_normal_init"):
        raises(name, "^mode", mode="fan_avg")
        raises(name, "^nonlinearity", nonlinearity="softplus")
        raises(name, "^slope", nonlinearity="leaky_relu", slope=math.inf)


# ---- the C backend's paths: AVX2 (own log and sincos) and portable (libm) --------------------------

C_PATHS = ("portable", "avx2")


def _c_or_skip():
    if kernels.backends()["c"] is not None:
        pytest.skip(kernels.backends()["c"])


def _path_runs(path):
    return path == "portable" or kernels._c.lib.machine_isa() >= 1


def _run_path(path, code):
    """Run code in a fresh process with DEEPPROP_RNG_ISA=path (the path is chosen once per process);
    code prints one JSON line."""
    root = pathlib.Path(kernels.__file__).resolve().parent.parent
    env = dict(os.environ, DEEPPROP_RNG_ISA=path,
               PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


_DRAW = """
import json, numpy as np
from kernels import init
out = {"isa": init.rng_isa()}
for name in ("normal", "uniform"):
    for dt in ("float32", "float64"):
        for n in (1, 2, 3, 7, 15, 16, 17, 33, 1025, 4099):
            a = init.KERNELS[name + "_init"]["c"](n, 0.25, 1.5, 2**64 - 3 - n, dt)
            out[f"{name}-{dt}-{n}"] = a.tolist()
print(json.dumps(out))
"""


@pytest.mark.parametrize("path", C_PATHS)
def test_each_c_path_against_the_reference(path):
    """Each path, forced in a fresh process, on every tail size: the uniform bit for bit, the normal
    within verify's tolerance (normwise 16 eps), both dtypes."""
    _c_or_skip()
    if not _path_runs(path):
        pytest.skip(f"this CPU does not run the {path} path")
    res = _run_path(path, _DRAW)
    assert res["isa"].split()[0] == path and "forced" in res["isa"], res["isa"]
    for key, got in res.items():
        if key == "isa":
            continue
        name, dt, n = key.split("-")
        n = int(n)
        got = np.array(got, dtype=dt)
        ref = init.KERNELS[name + "_init"]["numpy"](n, 0.25, 1.5, 2**64 - 3 - n, dt)
        if name == "uniform":
            np.testing.assert_array_equal(got, ref, err_msg=key)
        else:
            tol = 16 * np.finfo(dt).eps * np.abs(ref).max()
            np.testing.assert_allclose(got, ref, rtol=0, atol=tol, err_msg=key)


def test_c_paths_agree_with_each_other():
    """The normal draw of the two paths (float64) differs by a few ulp at most, and float32 by at most
    one rounding step; the uniform is the same bits."""
    _c_or_skip()
    if not _path_runs("avx2"):
        pytest.skip("this CPU does not run the avx2 path")
    a, b = _run_path("avx2", _DRAW), _run_path("portable", _DRAW)
    for key in a:
        if key == "isa":
            continue
        x, y = np.array(a[key]), np.array(b[key])
        if key.startswith("uniform"):
            np.testing.assert_array_equal(x, y, err_msg=key)
        elif "float64" in key:
            np.testing.assert_allclose(x, y, rtol=0, atol=8 * np.finfo(np.float64).eps * np.abs(y).max(), err_msg=key)
        else:  # the AVX2 float math: z within F32_NORMAL_ULPS of the portable z, times std = 1.5
            x32, y32 = x.astype(np.float32), y.astype(np.float32)
            z = np.abs(y - 0.25) / 1.5
            bound = F32_NORMAL_ULPS * 1.5 * np.spacing(z.astype(np.float32)) + np.spacing(np.abs(y32))
            assert np.all(np.abs(x32.astype(np.float64) - y) <= bound), key


def _math_points():
    """v = 1 - u over [2^-53, 1] (u -> 0 and 1 - u -> tiny included); t over [0, 1) with the
    neighbourhoods of the quadrant boundaries and of the zeros of sin and cos."""
    rng = np.random.default_rng(5)
    u = rng.integers(0, 2**53, 20000, dtype=np.uint64)
    v = 1.0 - u.astype(np.float64) * 2.0**-53
    v = np.concatenate([v, 1.0 - np.arange(0, 200) * 2.0**-53, np.arange(1, 201) * 2.0**-53,
                        2.0 ** -np.arange(1, 54), [0.5 + 2**-53, np.sqrt(0.5), np.sqrt(0.5) + 2**-53]])
    t = rng.integers(0, 2**53, v.size, dtype=np.uint64).astype(np.float64) * 2.0**-53
    near = (np.arange(9)[:, None] / 8 + np.arange(-40, 41)[None, :] * 2.0**-53).ravel()
    near = near[(near >= 0) & (near < 1)]
    t[: near.size] = near
    return v, t


def test_rng_math_against_numpy_and_mpmath():
    """The C fill's log and sincos on the path running (the AVX2 one on this CPU): log within 1 ulp of
    NumPy everywhere on (0, 1]; cos, sin of 2 pi t within 1 ulp + 2^-50 absolute of NumPy's (which
    takes sin and cos of the rounded fl(2 pi) t: |fl(fl(2 pi) t) - 2 pi t| <= 2^-53 (2 pi) + 2^-51 < 2^-50,
    the absolute part, which matters at the zeros); and, against mpmath at 1000 points,
    within 1 ulp of the exact values on the AVX2 path (the bound csrc/init.c documents)."""
    _c_or_skip()
    v, t = _math_points()
    lg, cs, sn = init.rng_math_c(v, t)
    ref = np.log(v)
    ok = v < 1
    assert np.all(lg[~ok] == 0)
    assert np.max(np.abs(lg - ref)[ok] / np.spacing(np.abs(ref[ok]))) <= 1.0
    for got, want in ((cs, np.cos(2 * np.pi * t)), (sn, np.sin(2 * np.pi * t))):
        assert np.all(np.abs(got - want) <= np.spacing(np.abs(want)) + 2.0**-50)
    if not init.rng_isa().startswith("avx2"):
        return
    assert _mpmath_worst_ulps(v, t, lg, cs, sn, 6) <= 1.0


def _mpmath_worst_ulps(v, t, lg, cs, sn, seed):
    """The largest error, in ulp of the outputs' dtype at the exact value, of (lg, cs, sn) = (log v,
    cos 2 pi t, sin 2 pi t) against mpmath at 120 bits, at the first 400 points and 600 drawn with
    seed; an exact zero of sin or cos (t a multiple of 1/4) must be 0 in ours too."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.prec = 120
    dtype = lg.dtype

    def ulps(got, exact):
        if abs(exact) < 1e-30:
            return 0.0 if got == 0 else math.inf
        return float(abs(mpmath.mpf(float(got)) - exact)) / float(np.spacing(dtype.type(abs(float(exact)))))

    worst = 0.0
    for i in np.r_[0:400, np.random.default_rng(seed).integers(0, v.size, 600)]:
        if v[i] < 1:
            worst = max(worst, ulps(lg[i], mpmath.log(mpmath.mpf(float(v[i])))))
        theta = 2 * mpmath.pi * mpmath.mpf(float(t[i]))
        worst = max(worst, ulps(cs[i], mpmath.cos(theta)), ulps(sn[i], mpmath.sin(theta)))
    return worst


#: the float32 normal's log and sincos (csrc/init.c, measured 1.30 and 1.36 ulp of float32)
F32_MATH_ULPS = 1.5


def test_rng_math_f32_against_numpy_and_mpmath():
    """The C float32 normal's log, cos 2 pi t, sin 2 pi t on the path running (the AVX2 float math on
    this CPU, libm's double rounded on the portable one): within F32_MATH_ULPS ulp of float32 of NumPy's
    float64 everywhere on _math_points (+ 2^-50 absolute for NumPy's own error at the zeros of sin and
    cos); log 1 = 0; and on the AVX2 path, whose reduction in t is exact, within F32_MATH_ULPS of
    mpmath's exact values at 1000 points and the exact zeros (t a multiple of 1/4) exact."""
    _c_or_skip()
    v, t = _math_points()
    lg, cs, sn = init.rng_math_f32_c(v, t)
    assert lg.dtype == cs.dtype == sn.dtype == np.float32
    ok = v < 1
    assert np.all(lg[~ok] == 0)
    ref = np.log(v)
    assert np.max(np.abs(lg - ref)[ok] / np.spacing(np.abs(ref[ok]).astype(np.float32))) <= F32_MATH_ULPS
    for got, want in ((cs, np.cos(2 * np.pi * t)), (sn, np.sin(2 * np.pi * t))):
        err = np.abs(got.astype(np.float64) - want)
        assert np.all(err <= F32_MATH_ULPS * np.spacing(np.abs(want).astype(np.float32)) + 2.0**-50)
    if not init.rng_isa().startswith("avx2"):
        return   # libm's cos(fl(2 pi t)): off by up to 2^-50 at the zeros, as the float64 test says
    quarter = (t * 4) == np.round(t * 4)
    assert np.all((cs[quarter] == 0) | (sn[quarter] == 0))
    assert _mpmath_worst_ulps(v, t, lg, cs, sn, 7) <= F32_MATH_ULPS


def test_rng_math_catches_a_wrong_value():
    """The accuracy test above can fail: a log off by 2 ulp is outside its bound."""
    v, _ = _math_points()
    ref = np.log(v)
    bad = ref.copy()
    bad[100] = np.nextafter(np.nextafter(ref[100], 0), 0)
    assert np.max(np.abs(bad - ref)[v < 1] / np.spacing(np.abs(ref[v < 1]))) > 1.0


@pytest.mark.parametrize("name", ["he_normal_init", "normal_init", "uniform_init", "zeros_init", "xavier_normal_init"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_draw_into_is_the_c_kernel(name, dtype):
    """init.draw_into (kernels.depth's arena): the C kernel's numbers and checks, into the given array,
    which must be writeable, C-contiguous, of the call's shape and dtype."""
    _c_or_skip()
    kw = {"shape": (33, 7), "dtype": dtype}
    if name != "zeros_init":
        kw["seed"] = 2**64 - 9
    out = np.full((33, 7), np.nan, dtype)
    assert init.draw_into(out, name, **kw) is out
    np.testing.assert_array_equal(out, init.KERNELS[name]["c"](**kw))
    other = "float64" if dtype == "float32" else "float32"
    for bad in (np.empty((7, 33), dtype), np.empty((33, 7), other), np.empty((7, 33), dtype).T,
                np.empty(33 * 7, dtype)):
        with pytest.raises(ValueError):
            init.draw_into(bad, name, **kw)
    with pytest.raises(TypeError):  # the kernel's own checks still run
        init.draw_into(out, name, **{**kw, "dtype": "int32"})


def test_rng_isa_override_is_honoured_and_bogus_ignored():
    _c_or_skip()
    code = "import json; from kernels import init; print(json.dumps({'isa': init.rng_isa()}))"
    widest = "avx2" if _path_runs("avx2") else "portable"
    assert _run_path("auto", code)["isa"] == widest
    assert _run_path("portable", code)["isa"].startswith("portable (forced")
    bogus = _run_path("sse9", code)["isa"]
    assert bogus.split()[0] == widest and "ignored" in bogus
