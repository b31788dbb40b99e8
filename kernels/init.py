"""Weight initializers: constant fills and counter-based (Philox4x32-10) uniform and normal draws.

    zeros_init(shape, dtype="float32")
    constant_init(shape, value, dtype="float32")
    uniform_init(shape, low=-1.0, high=1.0, seed=0, dtype="float32")
    normal_init(shape, mean=0.0, std=1.0, seed=0, dtype="float32")
    xavier_uniform_init(shape, gain=1.0, seed=0, dtype="float32")  bound = gain * sqrt(6 / (fan_in + fan_out))
    xavier_normal_init(shape, gain=1.0, seed=0, dtype="float32")   std   = gain * sqrt(2 / (fan_in + fan_out))
    he_uniform_init(shape, mode="fan_in", nonlinearity="relu", slope=0.01, seed=0, dtype="float32")
                                                                   bound = gain * sqrt(3 / fan)
    he_normal_init(shape, mode="fan_in", nonlinearity="relu", slope=0.01, seed=0, dtype="float32")
                                                                   std   = gain / sqrt(fan)
    lecun_normal_init(shape, seed=0, dtype="float32")              std   = 1 / sqrt(fan_in)
    calculate_gain(nonlinearity, slope=0.01)                       (not a registry kernel)

Every initializer returns a new array of ``shape`` (an int or a tuple of ints >= 0) and ``dtype``
('float32', the default, or 'float64'); nothing is written in place. The uniform initializers draw
from [-bound, bound], the normal ones from N(0, std^2).

The seed contract (shared with kernels.dropout, which holds the generator and its description):
a seed is an integer in [0, 2**64); key = (seed & 0xffffffff, seed >> 32); every random number is a
pure function of (seed, stream, element index), identical across backends, thread counts and call
order. A counter c gives w = philox4x32_10(counter = (c low 32 bits, c high 32 bits, stream, 0), key)
and u(a, b) = ((a >> 5) * 2**26 + (b >> 6)) * 2**-53 (53 random bits, in [0, 1), exact):
  * stream 1, uniform: element i of the C-ordered output uses counter i; out = low + (high - low) *
    u(w0, w1) in float64, rounded once to dtype. Within [low, high]: the float64 rounding (and a float32
    result's) can give exactly high. Bit-identical on every backend.
  * stream 2, normal ("normal stream v2"): the pair of elements (2j, 2j + 1) uses counter j, Box-Muller
    in float64 with both halves: r = sqrt(-2 log(1 - u(w0, w1))), theta = 2 pi u(w2, w3),
    z_2j = r cos(theta), z_2j+1 = r sin(theta) (1 - u is in (0, 1], so z is always finite, |z| < 8.6);
    out = mean + std * z, rounded once. An odd number of elements ends with the cosine half of its
    last pair. Backends agree to a few ulp of float64 (NumPy and libm, and the C backend's own
    vectorised log and sincos on AVX2 CPUs - csrc/init.c, error bounds there - may differ in the last
    bits; the C AVX2 path reduces 2 pi u exactly in u, libm reduces the rounded 2 pi u). One exception
    to "in float64": the C AVX2 path's float32 outputs take the same u but do log, sqrt, sin, cos and
    mean + std * z in float (twice the lanes; csrc/init.c), so z there is within 4 ulp of float32 of
    the float64 z (measured 3.3), not the rounded float64 draw (where std is 0 or >= 2**-100 and
    mean a finite float32; otherwise float64 as above). (The first version drew one counter per element and
    kept only the cosine half: half the Philox calls now.)
So the same seed gives the same numbers for any shape with the same number of elements (the first k
elements of a longer draw are the shorter draw), and a normal and a uniform draw of one seed are
independent streams.

Fans. Our weights are (fan_in, fan_out) = (in, out), because layers compute y = x @ W: the transpose of
PyTorch's (out, in) Linear weight. So for a 2-d shape fan_in = shape[0], fan_out = shape[1] (PyTorch:
fan_in = shape[1]). For more dimensions PyTorch's receptive-field rule is adapted the same way: shape =
(in, out, *receptive), fan_in = shape[0] * prod(shape[2:]), fan_out = shape[1] * prod(shape[2:]). A 1-d
shape (n,) has fan_in = fan_out = n. A 0-d shape or one with a zero dimension has no fans: ValueError
(naming shape) for the fan-based initializers; zeros/constant/uniform/normal accept any shape (an empty
one gives an empty array, () a 0-d array).

Gains (``calculate_gain``): PyTorch's table - linear, identity, conv*, sigmoid 1; tanh 5/3; relu sqrt(2);
leaky_relu sqrt(2 / (1 + slope^2)); selu 3/4 - plus two PyTorch does not have, by the rule that gives relu
its sqrt(2) (He et al. 2015: keep E[f(z)^2] * gain^2 = 1 for z ~ N(0, 1)): gain = 1 / sqrt(E[f(z)^2]),
  elu (alpha = 1):   E[f^2] = 1 + e^2 Phi(-2) - 2 sqrt(e) Phi(-1) = 0.64495, gain = 1.24520
  gelu (exact erf):  E[f^2] = 1/3 + 1 / (2 pi sqrt(3))           = 0.42522, gain = 1.53353
``slope`` is used by leaky_relu only (like PyTorch's ``param``), but must be a finite real always.

Bad input, every backend alike: shape not an int/tuple of ints (TypeError) or negative (ValueError);
dtype not float32/float64 (TypeError); seed not an integer (TypeError) or outside [0, 2**64)
(ValueError); low > high, a non-finite low/high/high - low, mean, std < 0 or non-finite, value, gain < 0
or non-finite, mode not fan_in/fan_out, an unknown nonlinearity: ValueError naming the argument.

Backends: the fan/gain/bound logic below is shared Python; initializer X on backend B is that logic
plus B's fill kernel (NumPy: vectorised over uint64 arrays, the reference; Numba: ``_*_fill_nb``; C:
constant_fill, uniform_fill, normal_fill in csrc/init.c, which runs an AVX2 path where the CPU has it -
``rng_isa()`` names the path, DEEPPROP_RNG_ISA=portable|avx2 forces one; ``rng_math_c`` exposes its log
and sincos to the tests).
"""

from __future__ import annotations

import math

import numpy as np

from . import _c, _check
from ._numba import njit
from .dropout import _LO32, _S32, _U64, _philox_nb, _philox_np

STREAM_UNIFORM = 1
STREAM_NORMAL = 2
_TWO_PI = 2.0 * math.pi  # 6.283185307179586, the same double in csrc/init.c


# ---- gains and fans: shared by every backend -------------------------------------------------------

def _phi_lower(x: float) -> float:
    """Phi(-x) for the standard normal."""
    return 0.5 * math.erfc(x / math.sqrt(2.0))


_ELU_SECOND_MOMENT = 1.0 + math.e**2 * _phi_lower(2.0) - 2.0 * math.sqrt(math.e) * _phi_lower(1.0)
_GELU_SECOND_MOMENT = 1.0 / 3.0 + 1.0 / (2.0 * math.pi * math.sqrt(3.0))

_GAINS = {
    "linear": 1.0, "identity": 1.0, "conv1d": 1.0, "conv2d": 1.0, "conv3d": 1.0,
    "conv_transpose1d": 1.0, "conv_transpose2d": 1.0, "conv_transpose3d": 1.0, "sigmoid": 1.0,
    "tanh": 5.0 / 3.0, "relu": math.sqrt(2.0), "leaky_relu": None, "selu": 3.0 / 4.0,
    "elu": 1.0 / math.sqrt(_ELU_SECOND_MOMENT), "gelu": 1.0 / math.sqrt(_GELU_SECOND_MOMENT),
}
NONLINEARITIES = tuple(_GAINS)


def calculate_gain(nonlinearity, slope=0.01) -> float:
    """The recommended gain for a nonlinearity (PyTorch's table, plus elu and gelu: see the module
    docstring). slope: leaky_relu's negative slope (finite real; ignored by the others).
    ValueError for an unknown nonlinearity or a non-finite slope."""
    _check.choice("nonlinearity", nonlinearity, NONLINEARITIES)
    slope = _check.real("slope", slope)
    if nonlinearity == "leaky_relu":
        return math.sqrt(2.0 / (1.0 + slope * slope))
    return _GAINS[nonlinearity]


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight of this shape, laid out (in, out, *receptive)."""
    if len(shape) == 0 or 0 in shape:
        raise ValueError(f"shape: a fan-based initializer needs at least one dimension and no zero dimension "
                         f"(fan_in and fan_out must be >= 1), got {shape}")
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[2:])
    return shape[0] * receptive, shape[1] * receptive


def _base(shape, dtype):
    return _check.shape("shape", shape), _check.dtype("dtype", dtype)


def _uniform_args(shape, low, high, seed, dtype):
    shape, dtype = _base(shape, dtype)
    low = _check.real("low", low)
    high = _check.real("high", high)
    if high < low:
        raise ValueError(f"high: expected high >= low, got low={low!r}, high={high!r}")
    if not math.isfinite(high - low):
        raise ValueError(f"high: high - low must be finite in float64, got low={low!r}, high={high!r}")
    return shape, low, high, _check.seed("seed", seed), dtype


def _normal_args(shape, mean, std, seed, dtype):
    shape, dtype = _base(shape, dtype)
    return (shape, _check.real("mean", mean), _check.real("std", std, lo=0.0), _check.seed("seed", seed),
            dtype)


def _gain_args(shape, gain, seed, dtype):
    shape, dtype = _base(shape, dtype)
    gain = _check.real("gain", gain, lo=0.0)
    return shape, gain, _check.seed("seed", seed), dtype


def _he_fan_gain(shape, mode, nonlinearity, slope):
    _check.choice("mode", mode, ("fan_in", "fan_out"))
    gain = calculate_gain(nonlinearity, slope)
    fan_in, fan_out = _fans(shape)
    return (fan_in if mode == "fan_in" else fan_out), gain


# ---- fill kernels: NumPy (reference), Numba, C -----------------------------------------------------
# fill(shape, dtype, ...) -> a new array; the numbers depend only on (seed, stream, flat index).

def _words_np(n: int, seed: int, stream: int):
    i = np.arange(n, dtype=np.uint64)
    return _philox_np(i & _LO32, i >> _S32, stream, 0, seed & 0xFFFFFFFF, seed >> 32)


def _u53_np(a, b):
    return ((a >> _U64(5)).astype(np.float64) * 67108864.0 + (b >> _U64(6)).astype(np.float64)) * 2.0**-53


def _constant_np(shape, dtype, value):
    return np.full(shape, value, dtype=dtype)


def _uniform_np(shape, dtype, seed, low, high):
    w0, w1, _, _ = _words_np(math.prod(shape), seed, STREAM_UNIFORM)
    out = low + (high - low) * _u53_np(w0, w1)
    with np.errstate(over="ignore"):  # beyond float32's range is Inf, as in C and Numba
        return out.astype(dtype).reshape(shape)


def _normal_np(shape, dtype, seed, mean, std):
    n = math.prod(shape)
    w0, w1, w2, w3 = _words_np((n + 1) // 2, seed, STREAM_NORMAL)  # one counter per pair of elements
    r = np.sqrt(-2.0 * np.log(1.0 - _u53_np(w0, w1)))
    theta = _TWO_PI * _u53_np(w2, w3)
    z = np.empty(2 * r.size)
    z[0::2] = r * np.cos(theta)
    z[1::2] = r * np.sin(theta)
    out = mean + std * z[:n]
    with np.errstate(over="ignore"):
        return out.astype(dtype).reshape(shape)


@njit
def _u53_nb(a, b):
    return (np.float64(a >> _U64(5)) * 67108864.0 + np.float64(b >> _U64(6))) * (1.0 / 9007199254740992.0)


@njit
def _constant_fill_nb(out, value):
    for i in range(out.size):
        out[i] = value


@njit
def _uniform_fill_nb(out, seed, low, high):
    k0 = seed & _LO32
    k1 = seed >> _S32
    width = high - low
    for i in range(out.size):
        c = _U64(i)
        w = _philox_nb(c & _LO32, c >> _S32, _U64(STREAM_UNIFORM), _U64(0), k0, k1)
        out[i] = low + width * _u53_nb(w[0], w[1])


@njit
def _normal_fill_nb(out, seed, mean, std):
    k0 = seed & _LO32
    k1 = seed >> _S32
    n = out.size
    for j in range((n + 1) // 2):  # pair (2j, 2j + 1) <- counter j
        c = _U64(j)
        w = _philox_nb(c & _LO32, c >> _S32, _U64(STREAM_NORMAL), _U64(0), k0, k1)
        r = math.sqrt(-2.0 * math.log(1.0 - _u53_nb(w[0], w[1])))
        theta = _TWO_PI * _u53_nb(w[2], w[3])
        out[2 * j] = mean + std * (r * math.cos(theta))
        if 2 * j + 1 < n:
            out[2 * j + 1] = mean + std * (r * math.sin(theta))


def _constant_numba(shape, dtype, value):
    out = np.empty(shape, dtype=dtype)
    _constant_fill_nb(out.reshape(-1), float(value))
    return out


def _uniform_numba(shape, dtype, seed, low, high):
    out = np.empty(shape, dtype=dtype)
    _uniform_fill_nb(out.reshape(-1), _U64(seed), low, high)
    return out


def _normal_numba(shape, dtype, seed, mean, std):
    out = np.empty(shape, dtype=dtype)
    _normal_fill_nb(out.reshape(-1), _U64(seed), mean, std)
    return out


def _constant_c(shape, dtype, value):
    out = np.empty(shape, dtype=dtype)
    _c.fn("constant_fill", dtype)(_c.ptr_out(out), out.size, float(value))
    return out


def _uniform_c(shape, dtype, seed, low, high):
    out = np.empty(shape, dtype=dtype)
    _c.fn("uniform_fill", dtype)(_c.ptr_out(out), out.size, seed, low, high)
    return out


def _normal_c(shape, dtype, seed, mean, std):
    out = np.empty(shape, dtype=dtype)
    _c.fn("normal_fill", dtype)(_c.ptr_out(out), out.size, seed, mean, std)
    return out


def rng_isa() -> str:
    """The path the C random kernels run ('portable' or 'avx2' first, then how it was chosen), or None
    without the C backend. Not a registry kernel."""
    if _c.lib is None:
        return None
    return _c.ffi.string(_c.lib.rng_isa()).decode()


def rng_math_c(v, t):
    """(log v, cos 2 pi t, sin 2 pi t) as the C normal fill computes them on the path running (rng_isa):
    the AVX2 path's own vectorised log and sincos, or libm. v: float64 values in (0, 1]; t: float64 in
    [0, 1), same shape. For the accuracy tests; not a registry kernel."""
    return _rng_math(v, t, np.float64, "rng_math_check")


def rng_math_f32_c(v, t):
    """(log v, cos 2 pi t, sin 2 pi t) in float32 as the C float32 normal fill computes them on the path
    running: the AVX2 path's float math (csrc/init.c), or libm's double rounded to float. v, t as for
    rng_math_c. For the accuracy tests; not a registry kernel."""
    return _rng_math(v, t, np.float32, "rng_math_f32_check")


def _rng_math(v, t, dtype, check):
    _c.require()
    v = np.ascontiguousarray(v, dtype=np.float64)
    t = np.ascontiguousarray(t, dtype=np.float64)
    if v.shape != t.shape or v.ndim != 1:
        raise ValueError(f"v, t: expected two 1-d arrays of one shape, got {v.shape} and {t.shape}")
    if not (np.all(v > 0) and np.all(v <= 1) and np.all(t >= 0) and np.all(t < 1)):
        raise ValueError("v, t: expected v in (0, 1] and t in [0, 1)")
    lg, cs, sn = (np.empty(v.shape, dtype) for _ in range(3))
    getattr(_c.lib, check)(_c.ptr_out(lg), _c.ptr_out(cs), _c.ptr_out(sn), _c.ptr(v), _c.ptr(t), v.size)
    return lg, cs, sn


class _Fill:
    def __init__(self, constant, uniform, normal):
        self.constant, self.uniform, self.normal = constant, uniform, normal


_FILL = {
    "numpy": _Fill(_constant_np, _uniform_np, _normal_np),
    "numba": _Fill(_constant_numba, _uniform_numba, _normal_numba),
    "c": _Fill(_constant_c, _uniform_c, _normal_c),
}


# ---- the initializers: argument checks + bound computation + a backend's fill ----------------------

def _zeros(fill, shape, dtype):
    shape, dtype = _base(shape, dtype)
    return fill.constant(shape, dtype, 0.0)


def _constant(fill, shape, value, dtype):
    shape, dtype = _base(shape, dtype)
    return fill.constant(shape, dtype, _check.real("value", value))


def _uniform(fill, shape, low, high, seed, dtype):
    shape, low, high, seed, dtype = _uniform_args(shape, low, high, seed, dtype)
    return fill.uniform(shape, dtype, seed, low, high)


def _normal(fill, shape, mean, std, seed, dtype):
    shape, mean, std, seed, dtype = _normal_args(shape, mean, std, seed, dtype)
    return fill.normal(shape, dtype, seed, mean, std)


def _xavier_uniform(fill, shape, gain, seed, dtype):
    shape, gain, seed, dtype = _gain_args(shape, gain, seed, dtype)
    fan_in, fan_out = _fans(shape)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return fill.uniform(shape, dtype, seed, -bound, bound)


def _xavier_normal(fill, shape, gain, seed, dtype):
    shape, gain, seed, dtype = _gain_args(shape, gain, seed, dtype)
    fan_in, fan_out = _fans(shape)
    return fill.normal(shape, dtype, seed, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))


def _he_uniform(fill, shape, mode, nonlinearity, slope, seed, dtype):
    shape, dtype = _base(shape, dtype)
    seed = _check.seed("seed", seed)
    fan, gain = _he_fan_gain(shape, mode, nonlinearity, slope)
    bound = gain * math.sqrt(3.0 / fan)
    return fill.uniform(shape, dtype, seed, -bound, bound)


def _he_normal(fill, shape, mode, nonlinearity, slope, seed, dtype):
    shape, dtype = _base(shape, dtype)
    seed = _check.seed("seed", seed)
    fan, gain = _he_fan_gain(shape, mode, nonlinearity, slope)
    return fill.normal(shape, dtype, seed, 0.0, gain / math.sqrt(fan))


def _lecun_normal(fill, shape, seed, dtype):
    shape, dtype = _base(shape, dtype)
    seed = _check.seed("seed", seed)
    fan_in, _ = _fans(shape)
    return fill.normal(shape, dtype, seed, 0.0, 1.0 / math.sqrt(fan_in))


_NP = _FILL["numpy"]


def zeros_init(shape, dtype="float32"):
    """A new array of zeros. shape: int or tuple of ints >= 0 (any, empty included); dtype: 'float32'
    or 'float64'. On the Numba and C backends: the constant fill with 0."""
    return _zeros(_NP, shape, dtype)


def constant_init(shape, value, dtype="float32"):
    """A new array filled with value (a finite real, rounded once to dtype). shape: int or tuple of
    ints >= 0; dtype: 'float32' or 'float64'."""
    return _constant(_NP, shape, value, dtype)


def uniform_init(shape, low=-1.0, high=1.0, seed=0, dtype="float32"):
    """A new array of uniform draws on [low, high): low + (high - low) * u, u from stream 1 of the
    Philox seed contract (53 random bits), float64, rounded once (so high itself can appear after
    rounding). low <= high finite with high - low finite (low == high gives the constant low);
    seed: integer in [0, 2**64); shape: int or tuple of ints >= 0; dtype: 'float32' or 'float64'.
    Bit-identical on every backend."""
    return _uniform(_NP, shape, low, high, seed, dtype)


def normal_init(shape, mean=0.0, std=1.0, seed=0, dtype="float32"):
    """A new array of normal draws N(mean, std^2): mean + std * z, z by Box-Muller (both halves: one
    counter per pair of elements, "normal stream v2") from stream 2 of the Philox seed contract,
    float64, rounded once (the C backend's float32 on AVX2 CPUs: z in float, within 4 ulp of it). mean
    finite, std >= 0 finite (std = 0 gives the constant mean); seed: integer in [0, 2**64); shape: int
    or tuple of ints >= 0; dtype: 'float32' or 'float64'. Backends agree to a few ulp. Also the draw
    behind orthogonal_init."""
    return _normal(_NP, shape, mean, std, seed, dtype)


def xavier_uniform_init(shape, gain=1.0, seed=0, dtype="float32"):
    """Glorot/Xavier uniform: uniform on [-bound, bound], bound = gain * sqrt(6 / (fan_in + fan_out)).
    shape: (in, out, *receptive) or (n,) with no zero dimension (fans: module docstring); gain: finite
    real >= 0; seed: integer in [0, 2**64); dtype: 'float32' or 'float64'. Returns a new array."""
    return _xavier_uniform(_NP, shape, gain, seed, dtype)


def xavier_normal_init(shape, gain=1.0, seed=0, dtype="float32"):
    """Glorot/Xavier normal: N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out)). Arguments as
    xavier_uniform_init. Returns a new array."""
    return _xavier_normal(_NP, shape, gain, seed, dtype)


def he_uniform_init(shape, mode="fan_in", nonlinearity="relu", slope=0.01, seed=0, dtype="float32"):
    """He/Kaiming uniform: uniform on [-bound, bound], bound = gain * sqrt(3 / fan), fan = fan_in or
    fan_out by mode ('fan_in' keeps forward variances, 'fan_out' backward ones), gain =
    calculate_gain(nonlinearity, slope). shape: as xavier_uniform_init; seed: integer in [0, 2**64);
    dtype: 'float32' or 'float64'. Returns a new array."""
    return _he_uniform(_NP, shape, mode, nonlinearity, slope, seed, dtype)


def he_normal_init(shape, mode="fan_in", nonlinearity="relu", slope=0.01, seed=0, dtype="float32"):
    """He/Kaiming normal: N(0, std^2), std = gain / sqrt(fan). Arguments as he_uniform_init.
    Returns a new array."""
    return _he_normal(_NP, shape, mode, nonlinearity, slope, seed, dtype)


def lecun_normal_init(shape, seed=0, dtype="float32"):
    """LeCun normal: N(0, std^2), std = 1 / sqrt(fan_in). shape: as xavier_uniform_init; seed: integer
    in [0, 2**64); dtype: 'float32' or 'float64'. Returns a new array."""
    return _lecun_normal(_NP, shape, seed, dtype)


# ---- the Numba and C backends: the same Python logic with their fill kernels ----------------------

def _backend_kernels(b, f=None):
    f = _FILL[b] if f is None else f

    def zeros(shape, dtype="float32"):
        return _zeros(f, shape, dtype)

    def constant(shape, value, dtype="float32"):
        return _constant(f, shape, value, dtype)

    def uniform(shape, low=-1.0, high=1.0, seed=0, dtype="float32"):
        return _uniform(f, shape, low, high, seed, dtype)

    def normal(shape, mean=0.0, std=1.0, seed=0, dtype="float32"):
        return _normal(f, shape, mean, std, seed, dtype)

    def xavier_uniform(shape, gain=1.0, seed=0, dtype="float32"):
        return _xavier_uniform(f, shape, gain, seed, dtype)

    def xavier_normal(shape, gain=1.0, seed=0, dtype="float32"):
        return _xavier_normal(f, shape, gain, seed, dtype)

    def he_uniform(shape, mode="fan_in", nonlinearity="relu", slope=0.01, seed=0, dtype="float32"):
        return _he_uniform(f, shape, mode, nonlinearity, slope, seed, dtype)

    def he_normal(shape, mode="fan_in", nonlinearity="relu", slope=0.01, seed=0, dtype="float32"):
        return _he_normal(f, shape, mode, nonlinearity, slope, seed, dtype)

    def lecun_normal(shape, seed=0, dtype="float32"):
        return _lecun_normal(f, shape, seed, dtype)

    fns = {"zeros_init": zeros, "constant_init": constant, "uniform_init": uniform, "normal_init": normal,
           "xavier_uniform_init": xavier_uniform, "xavier_normal_init": xavier_normal,
           "he_uniform_init": he_uniform, "he_normal_init": he_normal, "lecun_normal_init": lecun_normal}
    for name, fn in fns.items():
        fn.__name__ = fn.__qualname__ = f"{name}_{b}"
    return fns


class _FillInto:
    """The C backend's fills, writing into a given array instead of a new one (for draw_into)."""

    def __init__(self, out, record=None):
        self.out, self.record = out, record

    def _take(self, shape, dtype):
        out = self.out
        if not (type(out) is np.ndarray and out.shape == shape and out.dtype == dtype and out.flags.c_contiguous
                and out.flags.aligned and out.flags.writeable):
            raise ValueError(f"out: expected a writeable C-contiguous {np.dtype(dtype).name} array of shape "
                             f"{shape}, got {getattr(out, 'dtype', type(out))} {getattr(out, 'shape', '')}")
        return out

    def constant(self, shape, dtype, value):
        out = self._take(shape, dtype)
        _c.fn("constant_fill", dtype)(_c.ptr_out(out), out.size, float(value))
        return out

    def _random(self, fill, shape, dtype, seed, a, b):
        out = self._take(shape, dtype)
        fn = _c.fn(fill, dtype)
        fn(_c.ptr_out(out), out.size, seed, a, b)
        if self.record is not None:
            self.record.append((fn, a, b))
        return out

    def uniform(self, shape, dtype, seed, low, high):
        return self._random("uniform_fill", shape, dtype, seed, low, high)

    def normal(self, shape, dtype, seed, mean, std):
        return self._random("normal_fill", shape, dtype, seed, mean, std)


def draw_into(out, name, *args, record=None, **kwargs):
    """The C backend's initializer ``name`` (one of this module's kernels) called with args, kwargs --
    the same checks and the same numbers -- drawn into ``out`` (a writeable, C-contiguous, aligned
    array of the call's shape and dtype, else ValueError) instead of a new array; returns out.
    record: None, or a list to which a random draw appends (fill, a, b): fill(ptr(out), out.size,
    seed, a, b) is the C call it made (uniform: low, high; normal: mean, std) -- the same draw again
    with another seed. Internal, for kernels.depth, which keeps every layer's weights in one arena and
    draws the layers of one shape with that record: not a registry kernel."""
    _c.require()
    return _backend_kernels("c", _FillInto(out, record))[name](*args, **kwargs)


_REFERENCE = {"zeros_init": zeros_init, "constant_init": constant_init, "uniform_init": uniform_init,
              "normal_init": normal_init, "xavier_uniform_init": xavier_uniform_init,
              "xavier_normal_init": xavier_normal_init, "he_uniform_init": he_uniform_init,
              "he_normal_init": he_normal_init, "lecun_normal_init": lecun_normal_init}
_NUMBA_KERNELS = _backend_kernels("numba")
_C_KERNELS = _backend_kernels("c")

KERNELS = {name: {"numpy": ref, "numba": _NUMBA_KERNELS[name], "c": _C_KERNELS[name]}
           for name, ref in _REFERENCE.items()}


# ---- verification cases: make(rng, n, dtype) -> kwargs, shapes built from the awkward size n -------
# (n, n % 5 + 2); the fan-based ones get a receptive field (n, n % 5 + 2, 3) when n % 4 == 3. Seeds
# cover the full 64-bit range; he_* cycle through modes and nonlinearities with n.

def _shape(n):
    return (n, n % 5 + 2)


def _fan_shape(n):
    return (n, n % 5 + 2, 3) if n % 4 == 3 else _shape(n)


def _seed(rng):
    return int(rng.integers(0, 2**64, dtype=np.uint64))


def _he_case(rng, n, dt):
    return {"shape": _fan_shape(n), "mode": ("fan_in", "fan_out")[n % 2],
            "nonlinearity": NONLINEARITIES[n % len(NONLINEARITIES)], "slope": 0.2, "seed": _seed(rng),
            "dtype": np.dtype(dt).name}


CASES = {
    "zeros_init": lambda rng, n, dt: {"shape": _shape(n), "dtype": np.dtype(dt).name},
    "constant_init": lambda rng, n, dt: {"shape": _shape(n), "value": -0.37, "dtype": np.dtype(dt).name},
    "uniform_init": lambda rng, n, dt: {"shape": _shape(n), "low": -0.3, "high": 1.7, "seed": _seed(rng),
                                        "dtype": np.dtype(dt).name},
    "normal_init": lambda rng, n, dt: {"shape": _shape(n), "mean": 0.5, "std": 2.0, "seed": _seed(rng),
                                       "dtype": np.dtype(dt).name},
    "xavier_uniform_init": lambda rng, n, dt: {"shape": _fan_shape(n), "gain": 1.3, "seed": _seed(rng),
                                               "dtype": np.dtype(dt).name},
    "xavier_normal_init": lambda rng, n, dt: {"shape": _fan_shape(n), "gain": 0.8, "seed": _seed(rng),
                                              "dtype": np.dtype(dt).name},
    "he_uniform_init": _he_case,
    "he_normal_init": _he_case,
    "lecun_normal_init": lambda rng, n, dt: {"shape": _fan_shape(n), "seed": _seed(rng),
                                             "dtype": np.dtype(dt).name},
}
