"""The depth harness: how gradients vanish or explode with depth, measured on the registered kernels.

    from kernels import depth
    cfg = depth.Config(activation="tanh", init="xavier_normal", depth=1000, backend="c")
    run = depth.run_config(cfg, seeds=(0, 1))
    run.summary            # dict: input_grad_ratio, log10_input_grad_ratio, rate, theory_rate, status, ...
    run.layers             # pandas.DataFrame, one row per layer (0 = input, L = output)
    depth.table([cfg, ...])  # DataFrame with the CSV columns of ``deepprop depth``

docs/depth.md is the manual: the network, the loss, how numbers survive depth, the status
thresholds and the mean-field theory (kernels.theory) set next to each measurement.

The network (every op a registered kernel on the chosen backend, arrays in the chosen dtype):

    x^0 ~ N(0, 1)                                   (batch, width_0), q^0 = 1
    plain:    x^l = drop(phi(norm(x^{l-1} W_l + b_l)))                        l = 1..L
    residual: x^l = x^{l-1} + s * (drop(phi(norm(x^{l-1}))) W_l + b_l)         (pre-activation blocks)
    loss      l = (1/batch) sum(g * x^L),  g ~ N(0, 1) fixed by the seed (a random linear probe)

W_l is (in, out). s = 1 (plain), 1/sqrt(L) (scaled), and for fixup W_l = 0 (each branch is one
layer, which is also its last: Fixup's zero init; Zhang et al. 2019). Every random draw (W_l, b_l,
the dropout masks, x^0, g) has its own seed derived from (seed, layer, stream) by
numpy.random.SeedSequence, so a net of depth 10 is exactly the first 10 layers of a net of depth
1000 with the same seed, and results do not depend on the order of the runs.

Numbers that survive depth: the backward pass is linear in the gradient, so whenever the gradient's
norm leaves [2^-E, 2^E] (E = 30 for float32, 200 for float64) it is multiplied by a power of two --
exact in binary floating point -- and the exponent is added to a log scale. Nets whose layers are
positively homogeneous (identity, relu, leaky_relu, prelu; no bias, no norm) get the same treatment
in the forward pass, where the activations themselves would underflow. Until the first rescale the
tracked run *is* the plain run, bit for bit; after it a shadow copy continues the plain computation
(or, when the forward pass was rescaled, a second plain pass is run) to report what the dtype
itself gives: finite, zero (underflow), inf or nan.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import io
import itertools
import json
import math
import sys
import textwrap
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize

from . import theory

# ---- vocabulary ---------------------------------------------------------------------------------

ACTIVATIONS = theory.ACTIVATIONS
INITS = ("zeros", "normal", "uniform", "pytorch_default", "xavier_uniform", "xavier_normal",
         "he_uniform", "he_normal", "lecun_normal", "orthogonal")
NORMS = ("none", "batch", "layer")
RESIDUALS = ("none", "plain", "scaled", "fixup")
BACKENDS = ("numpy", "numba", "c")
DTYPES = ("float32", "float64")
FORMATS = ("table", "csv", "json", "markdown")

#: init "normal" without --sigma-w2: N(0, 0.01^2), the classic "small random numbers"
SMALL_NORMAL_STD = 0.01
#: init "uniform" without --sigma-w2: U(-0.05, 0.05)
SMALL_UNIFORM_A = 0.05
#: status thresholds on log10(input_grad_ratio): a factor of 100 over the whole net
VANISHING_LOG10 = -2.0
EXPLODING_LOG10 = 2.0
#: rescale window exponents (powers of two) per dtype
WINDOW = {"float32": 30, "float64": 200}
#: the widest net the Jacobian spectrum mode accepts
SPECTRUM_MAX_WIDTH = 512

CSV_COLUMNS = ["activation", "init", "sigma_w2", "sigma_b2", "norm", "residual", "dropout", "clip", "width",
               "batch", "depth", "backend", "dtype", "seeds", "input_grad_ratio", "log10_input_grad_ratio",
               "weight_grad_ratio", "log10_weight_grad_ratio", "rate", "theory_rate", "status"]

CANONICAL = dict(activation=("sigmoid", "tanh", "relu", "leaky_relu"),
                 init=("zeros", "normal", "pytorch_default", "xavier_uniform", "he_normal", "orthogonal"),
                 depths=(10, 50, 100, 1000))
DEFAULT_WIDTH = 64
DEFAULT_BATCH = 32
DEFAULT_SEEDS = (0, 1)

_LN2 = math.log(2.0)
_LN10 = math.log(10.0)


def default_backend() -> str:
    """The fastest available backend: c, else numba, else numpy."""
    import kernels

    avail = kernels.backends()
    for b in ("c", "numba", "numpy"):
        if avail.get(b) is None:
            return b
    return "numpy"


@dataclass(frozen=True)
class Config:
    """One network. sigma_w2/sigma_b2 None = the init's own scale (see ``weight_scale``);
    width: an int, or a tuple of depth+1 widths (input, then each layer's output);
    alpha: slope of leaky_relu (0.01) / initial slope of prelu (0.25) / alpha of elu (1.0)."""

    activation: str = "relu"
    init: str = "he_normal"
    sigma_w2: float | None = None
    sigma_b2: float | None = None
    norm: str = "none"
    residual: str = "none"
    dropout: float = 0.0
    clip: float | None = None
    width: int | tuple = DEFAULT_WIDTH
    batch: int = DEFAULT_BATCH
    depth: int = 10
    backend: str = "numpy"
    dtype: str = "float32"
    alpha: float | None = None

    def __post_init__(self):
        check = _validate
        check("activation", self.activation, ACTIVATIONS)
        check("init", self.init, INITS)
        check("norm", self.norm, NORMS)
        check("residual", self.residual, RESIDUALS)
        check("backend", self.backend, BACKENDS)
        check("dtype", self.dtype, DTYPES)
        if int(self.depth) != self.depth or self.depth < 1:
            raise ValueError(f"depth: expected an integer >= 1, got {self.depth!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: expected a probability 0 <= p < 1, got {self.dropout!r}")
        if self.clip is not None and not self.clip > 0:
            raise ValueError(f"clip: expected a max norm > 0 (or None), got {self.clip!r}")
        for name in ("sigma_w2", "sigma_b2"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name}: expected a finite value >= 0 (or None), got {v!r}")
        if self.batch < 1 or int(self.batch) != self.batch:
            raise ValueError(f"batch: expected an integer >= 1, got {self.batch!r}")
        if self.norm == "batch" and self.batch < 2:
            raise ValueError("batch: batch norm needs batch >= 2")
        w = self.widths
        if len(w) != self.depth + 1:
            raise ValueError(f"width: expected an int or depth+1 = {self.depth + 1} widths, got {len(w)}")
        if min(w) < 1:
            raise ValueError(f"width: expected widths >= 1, got {self.width!r}")
        if self.residual != "none" and len(set(w)) != 1:
            raise ValueError("width: residual nets need one width throughout")

    @property
    def widths(self) -> tuple:
        if isinstance(self.width, (int, np.integer)):
            return (int(self.width),) * (self.depth + 1)
        return tuple(int(v) for v in self.width)

    @property
    def alpha_value(self) -> float | None:
        return theory.DEFAULT_ALPHA.get(self.activation) if self.alpha is None else float(self.alpha)

    @property
    def homogeneous(self) -> bool:
        """Positively homogeneous layers: the forward pass may be rescaled exactly too."""
        return (self.activation in ("identity", "relu", "leaky_relu", "prelu") and self.norm == "none"
                and self.bias_variance(self.widths[0]) == 0.0)

    def bias_variance(self, fan_in: int) -> float:
        if self.sigma_b2 is not None:
            return float(self.sigma_b2)
        if self.init == "pytorch_default":
            return 1.0 / (3.0 * fan_in)
        return 0.0


def _validate(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name}: expected one of {', '.join(allowed)}, got {value!r}")


# ---- initialization -----------------------------------------------------------------------------

def he_nonlinearity(cfg: Config) -> tuple[str, float]:
    """He init's (nonlinearity, slope): leaky_relu with the activation's slope for leaky_relu/prelu,
    relu (gain^2 = 2) for every other activation."""
    if cfg.activation in ("leaky_relu", "prelu"):
        return "leaky_relu", cfg.alpha_value
    return "relu", 0.0


def weight_scale(cfg: Config, fan_in: int, fan_out: int) -> float:
    """sigma_w2 = fan_in * Var(W) that ``cfg.init`` gives a (fan_in, fan_out) layer by itself."""
    k, m = fan_in, fan_out
    init = cfg.init
    if init == "zeros":
        return 0.0
    if init == "normal":
        return k * SMALL_NORMAL_STD ** 2
    if init == "uniform":
        return k * SMALL_UNIFORM_A ** 2 / 3.0
    if init == "pytorch_default":
        return 1.0 / 3.0
    if init.startswith("xavier"):
        return 2.0 * k / (k + m)
    if init.startswith("he"):
        nl, slope = he_nonlinearity(cfg)
        return 2.0 / (1.0 + slope * slope) if nl == "leaky_relu" else 2.0
    if init == "lecun_normal":
        return 1.0
    return k / max(k, m)  # orthogonal, gain 1


def layer_sigma_w2(cfg: Config) -> np.ndarray:
    """The sigma_w2 each layer actually gets (cfg.sigma_w2 overrides every init but zeros)."""
    w = cfg.widths
    if cfg.init == "zeros":
        return np.zeros(cfg.depth)
    if cfg.sigma_w2 is not None:
        return np.full(cfg.depth, float(cfg.sigma_w2))
    return np.array([weight_scale(cfg, w[i], w[i + 1]) for i in range(cfg.depth)])


def _seed(seed: int, layer: int, stream: int) -> int:
    """A kernel seed in [0, 2^64) for (seed, layer, stream), independent of any run order: the first
    uint64 of numpy.random.SeedSequence(seed, spawn_key=(layer, stream)).generate_state. Computed for
    1024 layers at a time by _seed_block (the same hash, vectorised: SeedSequence costs ~50 us a call,
    a layer of a deep net ~1 ms), or by SeedSequence itself beyond the block's word layout."""
    seed, layer, stream = int(seed), int(layer), int(stream)
    if 0 <= seed < 2 ** 64 and 0 <= layer < 2 ** 32 and 0 <= stream < 2 ** 32:
        return int(_seed_block(seed, stream, layer >> 10)[layer & 1023])
    ss = np.random.SeedSequence(seed, spawn_key=(layer, stream))
    return int(ss.generate_state(1, np.uint64)[0])


# numpy.random.SeedSequence's hash (numpy/random/bit_generator.pyx; pool size 4, 32-bit words)
_SS_INIT_A, _SS_MULT_A = 0x43b0d7e5, 0x931e8875
_SS_INIT_B, _SS_MULT_B = 0x8b51f9dd, 0x58f38ded
_SS_MIX_L, _SS_MIX_R = 0xca01f9dd, 0x4973f715


@functools.lru_cache(maxsize=256)
def _seed_block(seed: int, stream: int, block: int) -> np.ndarray:
    """_seed(seed, layer, stream) for the layers block * 1024 .. + 1023 (uint64). SeedSequence's entropy
    here is seed's 32-bit words (1 or 2, zero-padded to the pool size 4: a spawn key is present) then the
    spawn key's words (layer < 2^32 and stream < 2^32: one each), 6 words in all, and its hash constants
    advance the same way for every layer, so the mixing runs on uint32 arrays across the block."""
    u32 = np.uint32
    layers = np.arange(block * 1024, block * 1024 + 1024, dtype=np.uint64)
    ent = [np.full(1024, (seed >> (32 * i)) & 0xFFFFFFFF, dtype=u32) for i in range(4)]
    ent += [layers.astype(u32), np.full(1024, stream, dtype=u32)]
    const = [_SS_INIT_A]

    def hashmix(value):
        value = value ^ u32(const[0])
        const[0] = (const[0] * _SS_MULT_A) & 0xFFFFFFFF
        value = value * u32(const[0])
        return value ^ (value >> u32(16))

    def mix(x, y):
        r = u32(_SS_MIX_L) * x - u32(_SS_MIX_R) * y
        return r ^ (r >> u32(16))

    with np.errstate(over="ignore"):
        pool = [hashmix(ent[i]) for i in range(4)]
        for src in range(4):
            for dst in range(4):
                if src != dst:
                    pool[dst] = mix(pool[dst], hashmix(pool[src]))
        for src in range(4, 6):
            for dst in range(4):
                pool[dst] = mix(pool[dst], hashmix(ent[src]))
        words = []
        hc = _SS_INIT_B
        for i in range(2):  # generate_state(1, uint64): two 32-bit words, low first
            v = pool[i] ^ u32(hc)
            hc = (hc * _SS_MULT_B) & 0xFFFFFFFF
            v = v * u32(hc)
            words.append(v ^ (v >> u32(16)))
    out = words[0].astype(np.uint64) | (words[1].astype(np.uint64) << np.uint64(32))
    out.flags.writeable = False
    return out


_W, _B, _DROP, _INPUT, _PROBE = range(5)


def make_weights(k, cfg: Config, layer: int, seed: int, out=None, record=None):
    """(W (fan_in, fan_out), b (fan_out,) or None) of layer ``layer`` (1-based), in cfg.dtype. out: None,
    or (C backend) an array of W's shape and dtype that the initializers of kernels.init draw W into
    (the same numbers): W is then out itself, unless the init is another one or sigma_w2 rescales it;
    record: with out, the list init.draw_into appends W's C fill call to."""
    w = cfg.widths
    fi, fo = w[layer - 1], w[layer]
    shape, dt, s = (fi, fo), cfg.dtype, _seed(seed, layer, _W)
    wk = k if out is None else functools.partial(_draw_into, k, out, record)  # W's kernels
    init, target = cfg.init, cfg.sigma_w2
    if init == "zeros" or cfg.residual == "fixup":
        W = wk("zeros_init")(shape, dtype=dt)
    elif init == "normal":
        std = SMALL_NORMAL_STD if target is None else math.sqrt(target / fi)
        W = wk("normal_init")(shape, 0.0, std, s, dtype=dt)
    elif init in ("uniform", "pytorch_default"):
        if target is not None:
            a = math.sqrt(3.0 * target / fi)
        else:
            a = SMALL_UNIFORM_A if init == "uniform" else 1.0 / math.sqrt(fi)
        W = wk("uniform_init")(shape, -a, a, s, dtype=dt)
    elif init.startswith("xavier"):
        gain = 1.0 if target is None else math.sqrt(target * (fi + fo) / (2.0 * fi))
        W = wk(f"{init}_init")(shape, gain=gain, seed=s, dtype=dt)
    elif init.startswith("he"):
        nl, slope = he_nonlinearity(cfg)
        W = wk(f"{init}_init")(shape, mode="fan_in", nonlinearity=nl, slope=slope if slope else 0.01,
                              seed=s, dtype=dt)
        if target is not None:
            W = (W * math.sqrt(target / weight_scale(cfg, fi, fo))).astype(dt)
    elif init == "lecun_normal":
        W = wk("lecun_normal_init")(shape, seed=s, dtype=dt)
        if target is not None:
            W = (W * math.sqrt(target)).astype(dt)
    else:  # orthogonal
        gain = 1.0 if target is None else math.sqrt(target * max(fi, fo) / fi)
        W = wk("orthogonal_init")(shape, gain=gain, seed=s, dtype=dt)
    sb2 = cfg.bias_variance(fi)
    if sb2 == 0.0:
        return W, None
    sb = _seed(seed, layer, _B)
    if init == "pytorch_default":
        a = math.sqrt(3.0 * sb2)
        b = k("uniform_init")((1, fo), -a, a, sb, dtype=dt)
    else:
        b = k("normal_init")((1, fo), 0.0, math.sqrt(sb2), sb, dtype=dt)
    return W, np.ascontiguousarray(b.reshape(fo))


def _draw_into(k, out, record, name):
    """kernels.init's initializer ``name`` drawing into out (C backend); others as k gives them."""
    from . import init

    if name in init.KERNELS:
        return functools.partial(init.draw_into, out, name, record=record)
    return k(name)


# ---- small numerics -----------------------------------------------------------------------------

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


@functools.lru_cache(maxsize=1)
def _c_module():
    from . import _c

    return _c if _c.lib is not None else None


def _sums(a: np.ndarray, c: float = 0.0) -> tuple[float, float]:
    """(sum(a - c), sum((a - c)^2)) in float64: csrc/depth.c's depth_moments (8 lanes, a fixed order;
    ~6x cheaper than np.var at a layer's size) when the C module is built, else NumPy (einsum: float64
    without BLAS threads, which would contend with the GEMM's). The two differ in the last bits."""
    v = a.reshape(-1)
    cm = _c_module()
    if cm is not None and v.size and v.flags.c_contiguous and v.flags.aligned and v.dtype in _FLOATS:
        out = cm.ffi.new("double[2]")
        if v.dtype == np.float32:
            cm.lib.depth_moments_f32(out, cm.ffi.from_buffer("float[]", v), v.size, c)
        else:
            cm.lib.depth_moments_f64(out, cm.ffi.from_buffer("double[]", v), v.size, c)
        return out[0], out[1]
    d = v.astype(np.float64) - c
    return float(np.einsum("i->", d)), float(np.einsum("i,i->", d, d))


def _var(a: np.ndarray) -> float:
    """Variance of all of a's elements in float64, two passes like np.var (mean, then the mean square
    about it); NaN when a holds NaN or inf."""
    with np.errstate(invalid="ignore", over="ignore"):
        mean = _sums(a)[0] / a.size
        return _sums(a, mean)[1] / a.size


def _norm(a: np.ndarray, s: float | None = None) -> float:
    """Euclidean norm in float64 without overflow or underflow of the squares; s: _sums(a)[1] if the
    caller has it."""
    if s is None:
        s = _sums(a)[1]
    v = a.reshape(-1)
    if 1e-290 < s < 1e290:
        return math.sqrt(s)
    m = float(np.max(np.abs(v))) if v.size else 0.0
    if m == 0.0 or not math.isfinite(m):
        return m if not math.isnan(m) else math.nan
    if not np.all(np.isfinite(v)):
        return math.nan
    u = v.astype(np.float64) / m
    return m * math.sqrt(float(u @ u))


def _ln(x: float) -> float:
    if x == 0.0:
        return -math.inf
    if math.isnan(x):
        return math.nan
    return math.log(x)


def _pow2(a: np.ndarray, e: int) -> np.ndarray:
    """a * 2^-e, exact (new array in a's dtype)."""
    return np.ldexp(a, -e).astype(a.dtype, copy=False)


def fit_rate(log_norms: np.ndarray, lo: int, hi: int) -> float:
    """exp(-slope) of the least-squares line through ln ||dl/dx^l||, l = lo..hi: the factor by which
    the gradient norm grows per layer from output to input (0 if any of them is exactly zero)."""
    y = np.asarray(log_norms[lo:hi + 1], dtype=np.float64)
    if np.any(np.isnan(y)) or np.any(y == math.inf):
        return math.nan
    if np.any(y == -math.inf):
        return 0.0
    if len(y) < 2:
        return math.nan
    x = np.arange(lo, hi + 1, dtype=np.float64)
    slope = np.polyfit(x, y, 1)[0]
    return float(math.exp(-slope)) if -slope < 700 else math.inf


def fit_range(cfg: Config) -> tuple[int, int]:
    """Layers the rate is fitted on: all (0..L), or for normalised nets the interior, dropping
    ceil(L/10) layers at each end (the approach to the normalised fixed point)."""
    L = cfg.depth
    if cfg.norm == "none" or L < 10:
        return 0, L
    cut = math.ceil(L / 10)
    return cut, L - cut


# ---- activation statistics ----------------------------------------------------------------------

@functools.lru_cache(maxsize=64)
def _flat_rule(act: str, alpha) -> tuple[str, float]:
    """How to spot |phi'(u)| <= 1% of max |phi'| cheaply: ("abs", t) for |u| >= t (sigmoid, tanh),
    ("below", t) for u <= t (relu family, elu), ("dphi", c) to evaluate phi' against c (gelu)."""
    h = np.linspace(-10, 10, 4001)
    cut = 0.01 * float(np.max(np.abs(theory.dphi(act, h, alpha))))
    if act in ("sigmoid", "tanh"):
        return "abs", optimize.brentq(lambda u: float(theory.dphi(act, u)) - cut, 0.0, 60.0)
    if act in ("relu", "leaky_relu", "prelu"):
        return ("below", 0.0) if abs(alpha or 0.0) <= 0.01 else ("never", 0.0)
    if act == "elu":
        a = alpha if alpha is not None else 1.0
        return ("below", math.log(cut / a)) if a > cut else ("below", 0.0)
    if act == "identity":
        return "never", 0.0
    return "dphi", cut


def _saturation(act: str, alpha, u: np.ndarray) -> tuple[float, float]:
    """(fraction of elements, fraction of units) whose |phi'(u)| <= 1% of max |phi'|: saturated
    (sigmoid/tanh tails), off (relu u <= 0); a unit is dead when that holds for the whole batch."""
    kind, t = _flat_rule(act, alpha)
    if kind == "never":
        return 0.0, 0.0
    if kind == "abs":
        flat = np.abs(u) >= t
    elif kind == "below":
        flat = u <= t
    else:
        flat = np.abs(theory.dphi(act, u, alpha)) <= t
    return float(flat.mean()), float(flat.all(axis=0).mean())


# ---- the net ------------------------------------------------------------------------------------

class _Kernels:
    """Kernel lookup on one backend, cached."""

    def __init__(self, backend: str):
        import kernels

        self.backend = backend
        self._get = kernels.get
        self._cache = {}

    def __call__(self, name):
        f = self._cache.get(name)
        if f is None:
            f = self._cache[name] = self._get(name, self.backend)
        return f


# the arena (_FastC) the last C fast-path net of a shape left for the next one: at most one, dropped
# when a net of another shape, or one without an arena, is made -- so a run never holds more than one
# net's layers; release_arenas() frees it
_SPARE_ARENA: dict = {}


def _take_arena(key):
    """The spare arena if it has shape ``key``, else None; either way the spare is gone (a spare of
    another shape is dropped before the caller allocates its own)."""
    a = _SPARE_ARENA.pop(key, None)
    _SPARE_ARENA.clear()
    return a


def release_arenas() -> None:
    """Frees the spare arena the last plain C-backend net left behind for the next one of its shape
    (depth x width x width plus depth x batch x width values: 384 MB at depth 1000, width 256, batch
    128, float32). run_config and the CLI keep it between seeds and configurations; call this to give
    the memory back in a long-lived process."""
    _SPARE_ARENA.clear()


class _FastC:
    """The C backend's fused linear layer and activation, called directly: the hot loop of plain nets
    whose layers are one linear_forward each (residual none, norm none, any activation but prelu).

    At the harness's shapes the public wrappers' argument checks and ``_c.ptr`` pointers (~10 us a
    call) are a sizeable part of a layer, so this path skips them -- and only them: every array it
    hands to C was either allocated here (outputs and scratch: C order, aligned, the net's dtype) or
    passed ``_arg`` (dtype, shape, C order, alignment; anything else goes through ``_check.array``)
    just before its pointer is made with ``ffi.from_buffer``. Outputs that do not outlive a layer are
    reused from layer to layer instead of allocated: the forward's y, the backward's dx (two of each,
    so that a call's input is never its own output) and dW, db and the dz scratch; the backward pass
    allocates nothing. What outlives a layer (its W and z) goes to two arenas, one array per kind for
    all layers (see __init__). Once layer 1 showed W to be one C fill (``fill``), a net without dropout
    runs each further layer as one C call per pass (layer_forward, layer_backward: csrc/depth.c makes
    the same kernel calls in the same order, the moments included). The C functions and their
    arguments are those of ``linear_forward_c``, ``linear_backward_c`` and the activations' C forward,
    so the results are bit for bit theirs (tests/test_depth.py compares the two paths)."""

    def __init__(self, cfg: Config, alpha):
        from . import _c
        from .activations import check_activation

        _c.require()
        self.dt = np.dtype(cfg.dtype)
        sfx = _c.suffix(self.dt)
        self.ffi = _c.ffi
        self.NULL = _c.ffi.NULL
        self.ctype = "float[]" if sfx == "f32" else "double[]"
        self.c_forward = getattr(_c.lib, f"linear_forward_{sfx}")
        self.c_backward = getattr(_c.lib, f"linear_backward_{sfx}")
        self.c_act = getattr(_c.lib, f"activation_forward_{sfx}")
        self.c_layer_forward = getattr(_c.lib, f"depth_layer_forward_{sfx}")
        self.c_layer_backward = getattr(_c.lib, f"depth_layer_backward_{sfx}")
        # C fills by code, for depth_layer_forward (csrc/depth.c's DEPTH_FILL_*)
        self._fill_codes = {getattr(_c.lib, f"uniform_fill_{sfx}"): 1, getattr(_c.lib, f"normal_fill_{sfx}"): 2}
        self.fill = None  # (code, a, b) of the replayed fill, once layer 1 set it up (weights)
        self._sums = _c.ffi.new("double[2]")  # the layer calls' moments, read right after each call
        self.code, self.alpha = check_activation(cfg.activation, alpha)
        self._bufs = {}
        # the pointers of the arrays this object allocated and keeps (buffers, arena slots), by id:
        # (array, pointer), the array held so that its id stays its own. A known array skips _arg and
        # ffi.from_buffer (~1.5 us a pointer, ~20 pointers a layer).
        self._known = {}
        # what the net keeps per layer (W and z, until the backward) lives in two arenas, one array
        # each for all layers, when every layer has the same shape; make_weights draws W into its slot
        # and the forward writes z into its one. Why: a fresh 256 KB array per layer is mmap'd and
        # first touched page by page (64 page faults, ~2.5 us each here, as much as a third of the He
        # draw's time), while an arena is one allocation that NumPy marks for huge pages (>= 4 MB).
        # The arena is taken from the spare the last net of this shape released (_take_arena): first
        # touching a fresh one (the kernel zeroing 384 MB at the harness's shape) costs ~40-75 ms, 5-8%
        # of a forward+backward, paid again by every seed and configuration of a run.
        w = cfg.widths
        self._arena = self._replay = self._arena_key = None
        self._wslots = self._zslots = None
        if len(set(w)) == 1:
            self._arena_key = (self.dt.str, cfg.depth, cfg.batch, w[0])
            self._arena = _take_arena(self._arena_key) or {
                "W": np.empty((cfg.depth, w[0], w[0]), self.dt), "z": np.empty((cfg.depth, cfg.batch, w[0]), self.dt)}
            self._wslots = [self._keep(a) for a in self._arena["W"]]
            self._zslots = [self._keep(a) for a in self._arena["z"]]

    def release(self):
        """Hands the arena to the next net of this shape (_SPARE_ARENA); this object is then unusable."""
        if self._arena is not None:
            _SPARE_ARENA.clear()
            _SPARE_ARENA[self._arena_key] = self._arena
        self._arena = self._wslots = self._zslots = None
        self._known.clear()
        self._bufs.clear()

    def _keep(self, a):
        """a, its pointer made once and kept (a is an array this object allocated)."""
        self._known[id(a)] = (a, self.ffi.from_buffer(self.ctype, a))
        return a

    def _ptr(self, name, a, shape):
        """(a checked, its pointer): a known array's kept pointer, else _arg and ffi.from_buffer."""
        k = self._known.get(id(a))
        if k is not None and k[0] is a and a.shape == shape:
            return k
        a = self._arg(name, a, shape)
        return a, self.ffi.from_buffer(self.ctype, a)

    def weight_slot(self, layer):
        """Where layer ``layer``'s (1-based) W is kept: its slot of the arena (make_weights draws into
        it), or None without an arena."""
        return None if self._wslots is None else self._wslots[layer - 1]

    def weights(self, k, cfg: Config, layer: int, seed: int):
        """make_weights(k, cfg, layer, seed), W drawn into its arena slot. When the first layer's W was
        one C fill (kernels.init's uniform or normal family, no rescale, no bias), every other layer's
        is the same fill with its own seed (the layers have one shape, so the same bound or std):
        that call is replayed directly, without make_weights' ~25 us of Python per layer."""
        slot = self.weight_slot(layer)
        if slot is None:
            return make_weights(k, cfg, layer, seed)
        if self._replay is not None:
            fn, a, b = self._replay
            fn(self._known[id(slot)][1], slot.size, _seed(seed, layer, _W), a, b)
            return slot, None
        record = []
        W, bias = make_weights(k, cfg, layer, seed, out=slot, record=record)
        if W is slot and bias is None and len(record) == 1:
            self._replay = record[0]
            code = self._fill_codes.get(self._replay[0])
            self.fill = None if code is None else (code, *self._replay[1:])
        return W, bias

    def keep_weight(self, layer, W):
        """W of layer ``layer`` as the net stores it: W itself when it is the arena's slot (drawn there)
        or there is no arena, else (an init that does not draw into its out: orthogonal, a sigma_w2
        rescale) its copy in the slot."""
        slot = self.weight_slot(layer)
        if slot is None or W is slot or W.shape != slot.shape or W.dtype != self.dt:
            return W
        np.copyto(slot, W)
        return slot

    def _new_z(self, layer, shape):
        if self._zslots is not None and layer is not None and shape == self._zslots[0].shape:
            return self._zslots[layer - 1]
        return np.empty(shape, self.dt)

    def _buf(self, key, shape):
        a = self._bufs.get((key, shape))
        if a is None:
            a = self._bufs[(key, shape)] = self._keep(np.empty(shape, self.dt))
        return a

    def _other(self, key, shape, avoid):
        """One of the two buffers (key, shape): the one that is not ``avoid`` (the call's input)."""
        a = self._buf(key, shape)
        return a if a is not avoid else self._buf((key, 1), shape)

    def _arg(self, name, a, shape):
        if not (type(a) is np.ndarray and a.dtype == self.dt and a.shape == shape and a.flags.c_contiguous
                and a.flags.aligned):
            from . import _check
            a = _check.array(name, a, shape=shape, dtype=self.dt)
        return a

    def forward(self, x, W, b, layer=None):
        """(y, z) = (act(x W + b), x W + b); z is a new array (it is stored: layer's slot of the arena
        when there is one), y a reused buffer."""
        N, K = x.shape
        M = W.shape[1]
        x, px = self._ptr("x", x, (N, K))
        W, pW = self._ptr("W", W, (K, M))
        z, pz = self._ptr("z", self._new_z(layer, (N, M)), (N, M))
        y = self._other("y", (N, M), x)
        pb = self.NULL if b is None else self._ptr("b", b, (M,))[1]
        self.c_forward(self._known[id(y)][1], pz, px, pW, pb, N, K, M, self.code, self.alpha)
        return y, z

    def layer_forward(self, x, layer, seed):
        """Layer ``layer`` (1-based, from 2 on: ``fill`` is set) in one C call, depth_layer_forward: its W
        drawn into its slot as weights() replays it, (y, z) as forward(x, W, None, layer), and _var(y).
        Returns (W, y, z, var)."""
        code, a, b = self.fill
        W = self._wslots[layer - 1]
        z = self._zslots[layer - 1]
        N, K = x.shape
        M = W.shape[1]
        x, px = self._ptr("x", x, (N, K))
        y = self._other("y", (N, M), x)
        known, s = self._known, self._sums
        self.c_layer_forward(s, known[id(y)][1], known[id(z)][1], known[id(W)][1], px, code, _seed(seed, layer, _W),
                             a, b, N, K, M, self.code, self.alpha)
        return W, y, z, s[1] / y.size

    def layer_backward(self, dy, x, zprev, W, z):
        """backward(dy, x_in, W, z, "main") in one C call, depth_layer_backward, with the layer's input
        x_in = act(zprev) as act() makes it (zprev given) or x, and the sums of squares of dW and dx.
        Returns (dx, dW, sum dW^2, sum dx^2)."""
        N, M = dy.shape
        K = W.shape[0]
        dy, pdy = self._ptr("dy", dy, (N, M))
        W, pW = self._ptr("W", W, (K, M))
        z, pz = self._ptr("z", z, (N, M))
        known = self._known
        if zprev is not None:
            zprev, pzp = self._ptr("zprev", zprev, (N, K))
            px, pxin = self.NULL, known[id(self._buf("act", (N, K)))][1]
        else:
            x, px = self._ptr("x", x, (N, K))
            pzp = pxin = self.NULL
        dx = self._other(("dx", "main"), (N, K), dy)
        dW = self._buf(("dW", "main"), (K, M))
        db = self._buf("db", (M,))
        work = self._buf("work", (N, M))
        s = self._sums
        self.c_layer_backward(s, known[id(dx)][1], known[id(dW)][1], known[id(db)][1], known[id(work)][1], pxin,
                              pdy, px, pzp, pW, pz, N, K, M, self.code, self.alpha)
        return dx, dW, s[0], s[1]

    def act(self, z):
        """act(z) into a reused buffer (the backward's recomputed layer input)."""
        z, pz = self._ptr("z", z, z.shape)
        y = self._buf("act", z.shape)
        self.c_act(self._known[id(y)][1], pz, z.size, self.code, self.alpha)
        return y

    def backward(self, dy, x, W, z, stream):
        """(dx, dW) of linear_backward into reused buffers, two sets: stream "main" and "shadow"."""
        N, M = dy.shape
        K = W.shape[0]
        dy, pdy = self._ptr("dy", dy, (N, M))
        x, px = self._ptr("x", x, (N, K))
        W, pW = self._ptr("W", W, (K, M))
        z, pz = self._ptr("z", z, (N, M))
        known = self._known
        dx = self._other(("dx", stream), (N, K), dy)
        dW = self._buf(("dW", stream), (K, M))
        db = self._buf("db", (M,))
        work = self._buf("work", (N, M))
        self.c_backward(known[id(dx)][1], known[id(dW)][1], known[id(db)][1], known[id(work)][1], pdy, px, pW,
                        pz, N, K, M, self.code, self.alpha)
        return dx, dW


@dataclass
class _Layer:
    W: np.ndarray
    b: np.ndarray | None
    store: np.ndarray        # z_l (plain nets) or x^{l-1} (residual nets)
    mean: np.ndarray | None = None
    rstd: np.ndarray | None = None
    mask: np.ndarray | None = None
    shift: int = 0           # x^l as stored = true x^l * 2^-shift_total (homogeneous nets)


class _Net:
    """Forward/backward of one Config on one seed, with the log-scale bookkeeping."""

    def __init__(self, cfg: Config, seed: int, *, track: bool = True, x0=None, probe=None, stats=True):
        self.cfg, self.seed, self.track, self.stats = cfg, seed, track, stats
        self.k = _Kernels(cfg.backend)
        self.dt = np.dtype(cfg.dtype)
        self.window = WINDOW[cfg.dtype]
        self.alpha = cfg.alpha_value
        self.scale = 1.0 if cfg.residual != "scaled" else 1.0 / math.sqrt(cfg.depth)
        self.prelu_a = np.full(1, self.alpha, dtype=self.dt) if cfg.activation == "prelu" else None
        self.x0 = x0
        self.probe = probe
        self.layers: list[_Layer] = []
        self.forward_rescaled = False
        self.backward_rescaled = False
        # the C fast path for plain nets of fused layers (_FastC)
        self.fast = (_FastC(cfg, self.alpha) if cfg.backend == "c" and cfg.residual == "none" and self._fused()
                     else None)
        if self.fast is None or self.fast._arena is None:
            release_arenas()   # a net that keeps its layers elsewhere: no spare beside them (peak memory)

    def release(self):
        """Done with this net: its stored layers are dropped and the fast path's arena goes to the next
        net of this shape (_FastC.release). Results already read (norms, input_grad copies) stay valid."""
        self.layers = []
        if self.fast is not None:
            self.fast.release()
            self.fast = None

    # -- pieces --------------------------------------------------------------------------------
    def _norm_fwd(self, z):
        cfg, k = self.cfg, self.k
        m = z.shape[1]
        gamma, beta = np.ones(m, self.dt), np.zeros(m, self.dt)
        if cfg.norm == "batch":
            rm, rv = np.zeros(m, self.dt), np.ones(m, self.dt)
            return k("batchnorm_forward")(z, gamma, beta, rm, rv)
        return k("layernorm_forward")(z, gamma, beta)

    def _norm_bwd(self, du, z, mean, rstd):
        gamma = np.ones(z.shape[1], self.dt)
        name = "batchnorm_backward" if self.cfg.norm == "batch" else "layernorm_backward"
        return self.k(name)(du, z, gamma, mean, rstd)[0]

    def _act_fwd(self, u):
        a = self.cfg.activation
        if a == "prelu":
            return self.k("prelu_forward")(u, self.prelu_a)
        return self.k(f"{a}_forward")(u, alpha=self.alpha) if a in ("leaky_relu", "elu") else self.k(f"{a}_forward")(u)

    def _act_bwd(self, dy, u):
        a = self.cfg.activation
        if a == "prelu":
            return self.k("prelu_backward")(dy, u, self.prelu_a)[0]
        if a in ("leaky_relu", "elu"):
            return self.k(f"{a}_backward")(dy, u, alpha=self.alpha)
        return self.k(f"{a}_backward")(dy, u)

    def _drop_fwd(self, y, layer):
        p = self.cfg.dropout
        if p == 0.0:
            return y, None
        return self.k("dropout_forward")(y, p, _seed(self.seed, layer, _DROP), 0)

    def _drop_apply(self, y, mask):
        """The stored mask applied again (dropout_backward scales by mask/(1-p), like the forward)."""
        if mask is None:
            return y
        return self.k("dropout_backward")(y, self.cfg.dropout, mask=mask)

    def _fused(self) -> bool:
        return self.cfg.norm == "none" and self.cfg.activation != "prelu"

    # -- forward -------------------------------------------------------------------------------
    def forward(self, on_layer=None):
        """Runs the forward pass, storing what the backward needs; returns per-layer statistics."""
        cfg, k = self.cfg, self.k
        L = cfg.depth
        x = self.x0
        if x is None:
            x = k("normal_init")((cfg.batch, cfg.widths[0]), 0.0, 1.0, _seed(self.seed, 0, _INPUT), dtype=cfg.dtype)
        self.input = x
        var = np.empty(L + 1)  # ln Var(x^l)
        sat = np.zeros(L + 1)
        dead = np.zeros(L + 1)
        logscale = np.zeros(L + 1)  # ln of the forward scale of x^l (true = stored * e^logscale)
        with np.errstate(invalid="ignore", over="ignore"):
            var[0] = math.log(_var(x))
        shift = 0
        homog = self.track and cfg.homogeneous
        fast = self.fast if cfg.dropout == 0.0 else None   # its one-call layers (no dropout between)
        for layer in range(1, L + 1):
            if fast is not None and fast.fill is not None:
                W, y, u, v = fast.layer_forward(x, layer, self.seed)
                rec = _Layer(W, None, u)
            else:
                W, b = (make_weights(k, cfg, layer, self.seed) if self.fast is None
                        else self.fast.weights(k, cfg, layer, self.seed))
                if cfg.residual == "none":
                    rec, y, u = self._plain_layer(x, W, b, layer)
                else:
                    rec, y, u = self._residual_layer(x, W, b, layer)
                with np.errstate(invalid="ignore", over="ignore"):
                    v = _var(y)
            if self.stats:
                sat[layer], dead[layer] = _saturation(cfg.activation, self.alpha, u)
            del u
            if homog and v > 0 and math.isfinite(v):
                e = int(round(0.5 * math.log2(v)))
                if abs(e) > self.window:
                    y = _pow2(y, e)
                    shift += e
                    self.forward_rescaled = True
                    v = _var(y)
            rec.shift = shift
            # ln Var(x^l) of the true activations (the stored ones are 2^-shift times them)
            var[layer] = (math.log(v) if v > 0 else (-math.inf if v == 0 else math.nan)) + 2 * shift * _LN2
            logscale[layer] = shift * _LN2
            self.layers.append(rec)
            x = y
            if on_layer:
                on_layer()
        self.output = x
        self.fwd_logscale = logscale
        self.ln_act_var = var
        self.frac_saturated, self.frac_dead = sat, dead
        return x

    def _plain_layer(self, x, W, b, layer):
        cfg, k = self.cfg, self.k
        if self.fast is not None:
            W = self.fast.keep_weight(layer, W)
        rec = _Layer(W, b, None)
        if self.fast is not None:
            y, z = self.fast.forward(x, W, b, layer)
            u = z
        elif self._fused():
            y, z = k("linear_forward")(x, W, b, activation=cfg.activation, alpha=self.alpha,
                                       keep_preactivation=True)
            u = z
        else:
            z = k("linear_forward")(x, W, b)
            if cfg.norm != "none":
                u, rec.mean, rec.rstd = self._norm_fwd(z)
            else:
                u = z
            y = self._act_fwd(u)
        rec.store = z
        y, rec.mask = self._drop_fwd(y, layer)
        return rec, y, u

    def _residual_layer(self, x, W, b, layer):
        cfg, k = self.cfg, self.k
        rec = _Layer(W, b, x)
        if cfg.norm != "none":
            u, rec.mean, rec.rstd = self._norm_fwd(x)
        else:
            u = x
        a = self._act_fwd(u)
        a, rec.mask = self._drop_fwd(a, layer)
        fx = k("linear_forward")(a, W, b)
        y = k("residual_add")(x, fx, self.scale)
        return rec, y, u

    def _recompute_input(self, i):
        """x^{i} (as stored, i.e. times 2^-shift) for the backward of layer i+1 (plain nets)."""
        if i == 0:
            return self.input
        rec = self.layers[i - 1]
        cfg = self.cfg
        z = rec.store
        if self.fast is not None:
            y = self.fast.act(z)
        elif self._fused():
            y = self._act_fwd(z)
        else:
            u = self._norm_fwd(z)[0] if cfg.norm != "none" else z
            y = self._act_fwd(u)
        y = self._drop_apply(y, rec.mask)
        prev_shift = self.layers[i - 2].shift if i >= 2 else 0
        if rec.shift != prev_shift:
            y = _pow2(y, rec.shift - prev_shift)
        return y

    # -- backward ------------------------------------------------------------------------------
    def _layer_backward(self, i, dy, x_in, stream="main"):
        """(dx, dW) of layer i+1 for the gradient dy at its output; x_in is its stored input. stream:
        "main" or "shadow" (the fast path's two sets of output buffers: results valid until the next
        call on the same stream)."""
        cfg, k = self.cfg, self.k
        rec = self.layers[i]
        if cfg.residual == "none":
            dy = self._drop_apply(dy, rec.mask)
            z = rec.store
            if self.fast is not None:
                return self.fast.backward(dy, x_in, rec.W, z, stream)
            if self._fused():
                dx, dW, _ = k("linear_backward")(dy, x_in, rec.W, z, activation=cfg.activation, alpha=self.alpha)
                return dx, dW
            if cfg.norm != "none":
                u = self._norm_fwd(z)[0]
                dz = self._norm_bwd(self._act_bwd(dy, u), z, rec.mean, rec.rstd)
            else:
                dz = self._act_bwd(dy, z)
            dx, dW, _ = k("linear_backward")(dz, x_in, rec.W)
            return dx, dW
        # residual: x^l = x + s * (drop(phi(norm(x))) W + b)
        x = rec.store
        u = self._norm_fwd(x)[0] if cfg.norm != "none" else x
        a = self._drop_apply(self._act_fwd(u), rec.mask)
        da, dW, _ = k("linear_backward")(dy, a, rec.W)
        du = self._act_bwd(self._drop_apply(da, rec.mask), u)
        dbranch = self._norm_bwd(du, x, rec.mean, rec.rstd) if cfg.norm != "none" else du
        return k("residual_add")(dy, dbranch, self.scale), dW

    def _fused_backward(self, i, dy):
        """_layer_backward(i, dy, _recompute_input(i)) and the sums of squares of dW and dx in one C call
        (the fast path, no dropout): the input act(z) is made inside when no rescale lies between."""
        rec = self.layers[i]
        x = zprev = None
        if i == 0:
            x = self.input
        elif self.layers[i - 1].shift == (self.layers[i - 2].shift if i >= 2 else 0):
            zprev = self.layers[i - 1].store
        else:
            x = self._recompute_input(i)
        return self.fast.layer_backward(dy, x, zprev, rec.W, rec.store)

    def backward(self, dy=None, on_layer=None):
        """Backward from dl/dx^L = dy (default: the probe g/batch). Returns per-layer ln norms."""
        cfg, k = self.cfg, self.k
        L = cfg.depth
        if dy is None:
            g = self.probe
            if g is None:
                g = k("normal_init")(self.output.shape, 0.0, 1.0, _seed(self.seed, 0, _PROBE), dtype=cfg.dtype)
            dy = (g / cfg.batch).astype(self.dt)
        ln_x = np.full(L + 1, math.nan)
        ln_W = np.full(L + 1, math.nan)
        plain_x = np.full(L + 1, math.nan)
        plain_W = np.full(L + 1, math.nan)
        S = 0.0      # ln scale of the tracked gradient: true = stored * e^S
        shadow = None  # the plain gradient once tracking has rescaled
        dead_value = None  # what the plain gradient became (0, inf, nan) once it stopped being finite
        s_w = self.scale if cfg.residual != "none" else 1.0
        fast = self.fast if cfg.dropout == 0.0 else None   # its one-call layers (no dropout masks)
        d = dy
        n = _norm(d)
        for i in range(L - 1, -1, -1):
            layer = i + 1
            ln_x[layer] = _ln(n) + S
            if shadow is not None:
                plain_x[layer] = _norm(shadow)
            elif dead_value is not None:
                plain_x[layer] = dead_value
            elif S == 0.0:
                plain_x[layer] = n
            fwd_ln = (self.layers[i - 1].shift if i >= 1 else 0) * _LN2  # x^{i} stored = true * 2^-shift
            if fast is not None and shadow is None:
                dx, dW, sW, sx = self._fused_backward(i, d)
            else:
                x_in = self._recompute_input(i) if cfg.residual == "none" else None
                dx, dW = self._layer_backward(i, d, x_in)
                sW = sx = None
            nW = _norm(dW, sW)
            ln_W[layer] = _ln(nW) + S + fwd_ln + math.log(s_w)
            if shadow is not None:
                sdx, sdW = self._layer_backward(i, shadow, x_in, "shadow")
                plain_W[layer] = _norm(sdW) * s_w
                shadow = sdx
                if not (np.any(shadow) and np.all(np.isfinite(shadow))):
                    dead_value = 0.0 if not np.any(shadow) else (
                        math.nan if np.any(np.isnan(shadow)) else math.inf)
                    shadow = None
            elif dead_value is not None:
                plain_W[layer] = dead_value
            elif S == 0.0:
                plain_W[layer] = nW * s_w
            d = dx
            n = _norm(d, sx)
            # keep the tracked gradient inside the window: an exact power-of-two rescale
            if self.track and n > 0 and math.isfinite(n):
                e = math.frexp(n)[1]
                if abs(e) > self.window:
                    if shadow is None and dead_value is None and not self.forward_rescaled and S == 0.0:
                        shadow = d.copy()
                    d = _pow2(d, e)
                    n = math.ldexp(n, -e)
                    S += e * _LN2
                    self.backward_rescaled = True
            if on_layer:
                on_layer()
        ln_x[0] = _ln(n) + S
        if shadow is not None:
            plain_x[0] = _norm(shadow)
        elif dead_value is not None:
            plain_x[0] = dead_value
        elif S == 0.0:
            plain_x[0] = n
        self.ln_x, self.ln_W, self.plain_x, self.plain_W = ln_x, ln_W, plain_x, plain_W
        self.input_grad = d
        self.input_grad_logscale = S
        return ln_x, ln_W


# ---- one configuration: seeds, aggregation, theory ------------------------------------------------

@dataclass
class Run:
    """The result of ``run_config``: ``summary`` (dict, the CSV columns and more) and ``layers``
    (DataFrame, one row per layer l = 0..L, means over seeds of the log10 quantities)."""

    config: Config
    seeds: tuple
    summary: dict
    layers: pd.DataFrame
    per_seed: list


def _plain_outcome(v: float) -> str:
    if math.isnan(v):
        return "nan"
    if v == 0.0:
        return "zero"
    if math.isinf(v):
        return "inf"
    return "finite"


def _mean_log(values) -> float:
    with np.errstate(invalid="ignore"):
        return float(np.mean(np.asarray(values, dtype=np.float64)))


def _spread(values) -> float:
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2 or not np.all(np.isfinite(v)):
        return 0.0 if np.all(v == v[0]) else math.nan
    return float(np.std(v, ddof=1))


def status_of(log10_ratio: float) -> str:
    """ok | vanishing | exploding | nonfinite, from log10(input_grad_ratio) (docs/depth.md):
    below VANISHING_LOG10 (-2: the gradient at the input is < 1/100 of the one at the output)
    vanishing, above EXPLODING_LOG10 (+2) exploding, NaN (the forward or backward pass produced NaN
    that no rescaling can undo) nonfinite."""
    if math.isnan(log10_ratio):
        return "nonfinite"
    if log10_ratio < VANISHING_LOG10:
        return "vanishing"
    if log10_ratio > EXPLODING_LOG10:
        return "exploding"
    return "ok"


def predict(cfg: Config, q0: float = 1.0) -> theory.Prediction | None:
    """The mean-field prediction for ``cfg`` (None where no theory applies)."""
    sw = layer_sigma_w2(cfg)
    if cfg.residual == "fixup":
        sw = np.zeros(cfg.depth)
    return theory.predict(cfg.activation, cfg.depth, sw, cfg.bias_variance(cfg.widths[0]),
                          alpha=cfg.alpha_value, norm=cfg.norm, residual=cfg.residual, dropout=cfg.dropout,
                          q0=q0)


def theory_tolerance(cfg: Config, theory_log10: float, spread: float) -> tuple[float, float]:
    """(below, above): how far (in log10) a measurement may sit under / over the mean-field value
    before it is flagged. Both: 0.5 + 10% of the prediction + 3 seed spreads + 0.87 sqrt(beta),
    beta = sum_l 1/width_l, the finite-width fluctuation of ln ||dl/dx^0|| that mean-field theory
    (width -> infinity) leaves out (Hanin 2018; Hanin & Nica 2020). Below: another 0.6 beta, because
    the theory predicts the mean of the squared norm and at finite width ln ||.||^2 is roughly Gaussian,
    so its typical value sits below by half its variance (Jensen); ReLU/He nets measure ~0.55 beta.
    Batch/layer norm theories are large-batch/width limits: +0.87 sqrt(beta) + 0.05 per layer."""
    inv = sum(1.0 / w for w in cfg.widths[1:])
    tol = 0.5 + 0.1 * abs(theory_log10) + 3 * (spread if math.isfinite(spread) else 0) + 0.87 * math.sqrt(inv)
    if cfg.norm != "none":
        tol += 0.87 * math.sqrt(inv) + 0.05 * cfg.depth
    return tol + 0.6 * inv, tol


def run_config(cfg: Config, seeds=DEFAULT_SEEDS, *, progress=None, stats: bool = True) -> Run:
    """Runs ``cfg`` once per seed (one forward and backward at initialization each) and aggregates:
    ratios by geometric mean over seeds (mean of log10), their spread (std of log10 over seeds), the
    per-layer rate by least squares on ln ||dl/dx^l||, and the theory next to it."""
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise ValueError("seeds: expected at least one seed")
    L = cfg.depth
    tick = (lambda: progress.update(1)) if progress is not None else None
    per_seed = []
    lo, hi = fit_range(cfg)
    for seed in seeds:
        net = _Net(cfg, seed, stats=stats)
        net.forward(on_layer=tick)
        ln_x, ln_W = net.backward(on_layer=tick)
        plain_x, plain_W = net.plain_x, net.plain_W
        fwd_rescaled, rescaled = net.forward_rescaled, net.forward_rescaled or net.backward_rescaled
        ln_act_var, sat, dead = net.ln_act_var, net.frac_saturated, net.frac_dead
        net.release()  # its stored layers go before any second pass; its arena to the next net
        del net
        if fwd_rescaled:
            # the tracked forward differs from the plain one: run the plain net for what the dtype sees
            plain = _Net(cfg, seed, track=False, stats=False)
            plain.forward()
            plain.backward()
            plain_x, plain_W = plain.plain_x, plain.plain_W
            plain.release()
            del plain
        with np.errstate(invalid="ignore"):
            log10_input = (ln_x[0] - ln_x[L]) / _LN10
            log10_weight = (ln_W[1] - ln_W[L]) / _LN10
        rec = {
            "seed": seed,
            "log10_input": log10_input,
            "log10_weight": log10_weight,
            "rate": fit_rate(ln_x, lo, hi),
            "ln_x": ln_x, "ln_W": ln_W, "plain_x": plain_x, "plain_W": plain_W,
            "ln_act_var": ln_act_var, "sat": sat, "dead": dead,
            "plain": _plain_outcome(plain_x[0]),
            "rescaled": rescaled,
            "passes": 2 if fwd_rescaled else 1,   # forward+backward passes run for this seed
        }
        if cfg.clip is not None:
            with np.errstate(invalid="ignore"):
                total = 0.5 * float(np.logaddexp.reduce(2 * ln_W[1:]))  # ln of the global weight-grad norm
            rec["clip_ln_factor"] = min(0.0, math.log(cfg.clip) - total) if math.isfinite(total) else math.nan
        per_seed.append(rec)

    with np.errstate(invalid="ignore", divide="ignore"):
        log10_in = _mean_log([r["log10_input"] for r in per_seed])
        log10_w = _mean_log([r["log10_weight"] for r in per_seed])
        rates = np.array([r["rate"] for r in per_seed])
        rate = float(np.exp(np.mean(np.log(rates)))) if np.all(rates > 0) else (0.0 if np.any(rates == 0) else math.nan)
    spread = _spread([r["log10_input"] for r in per_seed])
    pred = predict(cfg)
    if pred is None:
        t_log10, t_rate, t_prof = math.nan, math.nan, None
    else:
        t_prof = pred.log_norms()
        t_log10 = pred.log_ratio / _LN10
        t_rate = fit_rate(t_prof, lo, hi)
    agree = None
    if pred is not None and not math.isnan(log10_in):
        if math.isinf(t_log10) or math.isinf(log10_in):
            agree = t_log10 == log10_in or (math.isinf(t_log10) and log10_in * t_log10 > 0
                                            and abs(log10_in) > 50)
        else:
            below, above = theory_tolerance(cfg, t_log10, spread)
            agree = -below <= log10_in - t_log10 <= above
    plains = sorted({r["plain"] for r in per_seed})
    sw = layer_sigma_w2(cfg)
    summary = {
        "activation": cfg.activation, "init": cfg.init,
        "sigma_w2": float(sw[0]) if len(set(sw)) == 1 else float(np.mean(sw)),
        "sigma_b2": cfg.bias_variance(cfg.widths[0]),
        "norm": cfg.norm, "residual": cfg.residual, "dropout": cfg.dropout,
        "clip": cfg.clip if cfg.clip is not None else math.nan,
        "width": cfg.widths[0] if len(set(cfg.widths)) == 1 else "/".join(map(str, cfg.widths)),
        "batch": cfg.batch, "depth": L, "backend": cfg.backend, "dtype": cfg.dtype,
        "seeds": " ".join(map(str, seeds)),
        "input_grad_ratio": 10.0 ** log10_in if log10_in < 308 else math.inf,
        "log10_input_grad_ratio": log10_in,
        "weight_grad_ratio": 10.0 ** log10_w if not log10_w > 308 else math.inf,
        "log10_weight_grad_ratio": log10_w,
        "rate": rate, "theory_rate": t_rate, "status": status_of(log10_in),
        # beyond the CSV columns
        "log10_input_grad_ratio_spread": spread,
        "theory_log10_input_grad_ratio": t_log10,
        "theory_agrees": agree,
        "theory_source": pred.source if pred is not None else "",
        "plain": "/".join(plains),
        "plain_log10_input_grad_ratio": _mean_log(
            [(_ln(r["plain_x"][0]) - _ln(r["plain_x"][L])) / _LN10 for r in per_seed]),
    }
    if cfg.clip is not None:
        summary["clip_log10_factor"] = _mean_log([r["clip_ln_factor"] / _LN10 for r in per_seed])

    def mean_rows(key, scale=1.0):
        with np.errstate(invalid="ignore"):
            return np.mean(np.stack([np.asarray(r[key], dtype=np.float64) * scale for r in per_seed]), axis=0)

    def mean_log10(key):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.mean(np.stack([np.log10(np.asarray(r[key], dtype=np.float64)) for r in per_seed]), axis=0)

    lx = mean_rows("ln_x", 1 / _LN10)
    layers = pd.DataFrame({
        "layer": np.arange(L + 1),
        "log10_grad_x": lx,
        "log10_grad_W": mean_rows("ln_W", 1 / _LN10),
        "log10_grad_x_rel": lx - lx[L],
        "theory_log10_grad_x_rel": t_prof / _LN10 if t_prof is not None else np.full(L + 1, np.nan),
        "log10_act_var": mean_rows("ln_act_var", 1 / _LN10),
        "frac_saturated": mean_rows("sat"),
        "frac_dead": mean_rows("dead"),
        "plain_log10_grad_x": mean_log10("plain_x"),
        "plain_log10_grad_W": mean_log10("plain_W"),
    })
    if cfg.clip is not None:
        layers["log10_grad_W_clipped"] = layers["log10_grad_W"] + summary["clip_log10_factor"]
    return Run(cfg, seeds, summary, layers, per_seed)


# ---- Jacobian spectrum mode -----------------------------------------------------------------------

def run_spectrum(cfg: Config, seeds=DEFAULT_SEEDS, *, progress=None) -> dict:
    """Squared singular values lambda of the input-output Jacobian J = dx^L/dx^0 at one input (width <=
    512): log10 of their mean, Var(lambda)/mean(lambda)^2 (the spread; 0 for an isometry), log10 of
    max/min, against Pennington et al. 2017. J is obtained by backpropagating the identity: the batch
    holds width_L copies of one input whose entries have mean square q* (the fixed point, where it
    is finite and positive) or 1. Batch norm and dropout are refused (they couple or vary the rows)."""
    w = cfg.widths
    if max(w) > SPECTRUM_MAX_WIDTH:
        raise ValueError(f"width: the spectrum mode needs widths <= {SPECTRUM_MAX_WIDTH}, got {max(w)}")
    if cfg.norm == "batch" or cfg.dropout:
        raise ValueError("spectrum mode: batch norm and dropout are not supported (they couple or vary rows)")
    n_out = w[-1]
    sw = layer_sigma_w2(cfg)
    q_in = 1.0
    if cfg.residual == "none" and cfg.norm == "none" and len(set(sw)) == 1 and sw[0] > 0:
        try:
            qs = theory.fixed_point(cfg.activation, float(sw[0]), cfg.bias_variance(w[0]), cfg.alpha_value)
        except (ValueError, RuntimeError):
            qs = math.nan
        if math.isfinite(qs) and qs > 1e-8:
            q_in = qs
    cfg_b = dataclasses.replace(cfg, batch=n_out)
    tick = (lambda: progress.update(1)) if progress is not None else None
    means, vars_, conds = [], [], []
    dt = np.dtype(cfg.dtype)
    for seed in seeds:
        k = _Kernels(cfg.backend)
        row = k("normal_init")((1, w[0]), 0.0, math.sqrt(q_in), _seed(seed, 0, _INPUT), dtype=cfg.dtype)
        x0 = np.ascontiguousarray(np.repeat(row, n_out, axis=0))
        net = _Net(cfg_b, seed, x0=x0, stats=False)
        net.forward(on_layer=tick)
        net.backward(dy=np.eye(n_out, dtype=dt), on_layer=tick)
        J = net.input_grad.astype(np.float64)
        S = net.input_grad_logscale
        net.release()
        sv = np.linalg.svd(J, compute_uv=False)
        lam = sv * sv
        top = lam.max() if lam.size else 0.0
        if top == 0 or not np.isfinite(top):
            means.append(-math.inf if top == 0 else math.nan)
            vars_.append(math.nan)
            conds.append(math.nan)
            continue
        r = lam / top
        means.append((math.log(float(r.mean())) + math.log(top) + 2 * S) / _LN10)
        vars_.append(float(r.var() / r.mean() ** 2))
        conds.append(math.log10(top / lam.min()) if lam.min() > 0 else math.inf)
    pred = predict(cfg, q0=q_in)
    t_mean = 2 * pred.log_ratio / _LN10 if pred is not None else math.nan
    t_var = None
    if cfg.residual == "none" and cfg.norm == "none" and len(set(sw)) == 1 and sw[0] > 0:
        t_var = theory.jacobian_spectrum(cfg.activation, cfg.depth, float(sw[0]), cfg.bias_variance(w[0]),
                                         orthogonal=cfg.init == "orthogonal", alpha=cfg.alpha_value)[1]
    return {
        "activation": cfg.activation, "init": cfg.init, "sigma_w2": float(sw[0]),
        "sigma_b2": cfg.bias_variance(w[0]), "norm": cfg.norm, "residual": cfg.residual,
        "width": w[0], "depth": cfg.depth, "backend": cfg.backend, "dtype": cfg.dtype,
        "seeds": " ".join(map(str, seeds)), "q_in": q_in,
        "log10_mean_s2": _mean_log(means), "theory_log10_mean_s2": t_mean,
        "var_s2": _mean_log(vars_), "theory_var_s2": math.nan if t_var is None else t_var,
        "log10_cond_s2": _mean_log(conds),
    }


# ---- tables ---------------------------------------------------------------------------------------

def configs_from(**lists) -> list[Config]:
    """The cross product of lists of Config fields (``depths`` for depth), in CSV-column order."""
    lists = dict(lists)
    if "depths" in lists:
        lists["depth"] = lists.pop("depths")
    names = [f.name for f in dataclasses.fields(Config)]
    keys = [n for n in names if n in lists]
    out = []
    for combo in itertools.product(*(lists[k] for k in keys)):
        out.append(Config(**dict(zip(keys, combo, strict=True))))
    return out


def table(configs, seeds=DEFAULT_SEEDS, *, progress=None, per_layer: bool = False,
          spectrum: bool = False) -> pd.DataFrame:
    """One row per configuration (or, per_layer=True, per configuration and layer)."""
    rows = []
    for cfg in configs:
        if spectrum:
            rows.append(run_spectrum(cfg, seeds, progress=progress))
            continue
        run = run_config(cfg, seeds, progress=progress)
        if per_layer:
            lay = run.layers.copy()
            for c in reversed(CSV_COLUMNS[:14]):
                lay.insert(0, c, run.summary[c])
            rows.append(lay)
        else:
            rows.append(run.summary)
    if per_layer and not spectrum:
        return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    return pd.DataFrame(rows)


def ratio_text(log10_value: float) -> str:
    """10**log10_value as text, exact in exponent beyond float64's range ('6.46e-1703')."""
    v = float(log10_value)
    if math.isnan(v):
        return ""
    if math.isinf(v):
        return "0" if v < 0 else "inf"
    e = math.floor(v)
    m = 10.0 ** (v - e)
    if m >= 9.995:
        m, e = 1.0, e + 1
    if -3 <= e < 5:
        return f"{10.0 ** v:.3g}"
    return f"{m:.2f}e{e:+d}"


def _fmt(v, kind="g"):
    if v is None:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "NO"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if math.isnan(v):
            return ""
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if kind == "f2":
            return f"{v:.2f}"
        if kind == "f4":
            return f"{v:.4f}"
        if v == 0:
            return "0"
        return f"{v:.3g}" if (abs(v) >= 1e-3 and abs(v) < 1e5) else f"{v:.2e}"
    return str(v)


_CONFIG_COLS = ["activation", "init", "sigma_w2", "sigma_b2", "norm", "residual", "dropout", "clip", "width",
                "batch", "depth", "backend", "dtype", "seeds"]


def _display(df: pd.DataFrame, spectrum: bool) -> tuple[list[str], list[list[str]], list[str]]:
    """(header, rows, notes) for the text and Markdown tables: the configuration columns that vary,
    then the measurement next to its theory; the constant settings go into the notes."""
    cfg_cols = [c for c in _CONFIG_COLS if c in df.columns]
    varying = [c for c in cfg_cols if df[c].astype(str).nunique() > 1 or c in ("activation", "init", "depth")]
    constant = [c for c in cfg_cols if c not in varying]
    notes = []
    if len(df):
        notes.append("  ".join(f"{c}={_fmt(df[c].iloc[0])}" for c in constant if _fmt(df[c].iloc[0]) != ""))
    if spectrum:
        meas = [("log10 mean s^2", "log10_mean_s2", "f2"), ("theory", "theory_log10_mean_s2", "f2"),
                ("var s^2 / mean^2", "var_s2", "g"), ("theory", "theory_var_s2", "g"),
                ("log10 max/min", "log10_cond_s2", "f2")]
    else:
        meas = [("grad ratio in/out", "log10_input_grad_ratio", "ratio"), ("log10", "log10_input_grad_ratio", "f2"),
                ("+-seeds", "log10_input_grad_ratio_spread", "f2"),
                ("theory log10", "theory_log10_input_grad_ratio", "f2"), ("rate", "rate", "f4"),
                ("theory rate", "theory_rate", "f4"), ("W ratio log10", "log10_weight_grad_ratio", "f2"),
                ("status", "status", "s"), ("plain " + (str(df["dtype"].iloc[0]) if len(df) and
                                                           df["dtype"].nunique() == 1 else "dtype"), "plain", "s")]
    header = [c.replace("_", " ") for c in varying] + [m[0] for m in meas]
    rows = []
    flagged = False
    for _, r in df.iterrows():
        cells = [_fmt(r[c]) for c in varying]
        for _title, key, kind in meas:
            if kind == "ratio":
                cell = ratio_text(r[key])
            else:
                cell = _fmt(r[key], kind) if key in r else ""
            if key == "theory_log10_input_grad_ratio" and r.get("theory_agrees") is False:
                cell += " !"
                flagged = True
            cells.append(cell)
        rows.append(cells)
    if not spectrum:
        notes.append(f"ratio = ||dl/dx^0|| / ||dl/dx^L|| (geometric mean over seeds); rate: per-layer growth "
                     f"output->input (least squares); status: log10 ratio < {VANISHING_LOG10:g} vanishing, "
                     f"> {EXPLODING_LOG10:g} exploding; plain: what the unrescaled run in the dtype gave")
        if flagged:
            notes.append("! = measurement and mean-field theory disagree beyond the tolerance of docs/depth.md")
    return header, rows, notes


def format_table(df: pd.DataFrame, fmt: str = "table", *, per_layer: bool = False, spectrum: bool = False,
                 stamp: str = "") -> str:
    """Renders ``table``'s DataFrame: table (aligned text), markdown, csv or json (exactly
    CSV_COLUMNS for the summary; every column for per-layer and spectrum output)."""
    if fmt in ("csv", "json"):
        cols = list(df.columns) if (per_layer or spectrum) else CSV_COLUMNS
        out = df[cols]
        if fmt == "csv":
            if not (per_layer or spectrum):
                out = out.copy()
                out["input_grad_ratio"] = [ratio_text(v) for v in out["log10_input_grad_ratio"]]
                out["weight_grad_ratio"] = [ratio_text(v) for v in out["log10_weight_grad_ratio"]]
            head = "".join(f"# {line}\n" for line in stamp.splitlines()) if stamp else ""
            return head + out.to_csv(index=False, float_format="%.8g", na_rep="")
        recs = []
        for rec in out.to_dict(orient="records"):
            clean = {}
            for k_, v in rec.items():
                if isinstance(v, (float, np.floating)):
                    v = float(v)
                    v = None if math.isnan(v) else ("inf" if v == math.inf else ("-inf" if v == -math.inf else v))
                elif isinstance(v, np.integer):
                    v = int(v)
                elif isinstance(v, np.bool_):
                    v = bool(v)
                clean[k_] = v
            recs.append(clean)
        return json.dumps(recs, indent=1) + "\n"
    if per_layer:
        header = list(df.columns)
        rows = [[_fmt(v) for v in rec] for rec in df.itertuples(index=False)]
        notes = []
        nconf = len(CSV_COLUMNS[:14])
    else:
        header, rows, notes = _display(df, spectrum)
        nconf = len(header) - (5 if spectrum else 9)
    buf = io.StringIO()
    if fmt == "markdown":
        for line in stamp.splitlines():
            buf.write(f"<!-- {line} -->\n")
        buf.write("| " + " | ".join(header) + " |\n")
        buf.write("|" + "|".join("---" if i < nconf else "---:" for i in range(len(header))) + "|\n")
        for r in rows:
            buf.write("| " + " | ".join(r) + " |\n")
        buf.write("\n" + "\n".join(f"{n}  " for n in notes if n) + "\n")
        return buf.getvalue()
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]

    def line(cells):
        return "  ".join(c.ljust(w) if i < nconf else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
    for n in notes[:1]:
        if n:
            buf.write(n + "\n")
    buf.write(line(header).rstrip() + "\n")
    buf.write("  ".join("-" * w for w in widths) + "\n")
    for r in rows:
        buf.write(line(r).rstrip() + "\n")
    for n in notes[1:]:
        buf.write(n + "\n")
    return buf.getvalue()


# ---- plots ----------------------------------------------------------------------------------------

def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("--plot needs matplotlib, which is not installed: pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _label(cfg: Config, skip=()) -> str:
    parts = []
    for f in ("activation", "init", "sigma_w2", "sigma_b2", "norm", "residual", "dropout", "depth"):
        if f in skip:
            continue
        v = getattr(cfg, f)
        if v in (None, "none", 0.0) and f not in ("activation", "init", "depth"):
            continue
        parts.append(f"{v}" if f in ("activation", "init") else f"{f}={v}")
    return " ".join(parts)


def save_figure(fig, path: str, stamp: str = "") -> None:
    """Writes ``fig`` to ``path`` (PNG) and closes it; ``stamp`` (lines: command, commit, CPU, BLAS, threads,
    versions) goes into a footer and the PNG's text metadata, so a plot in results/ says what made it."""
    plt = _pyplot()
    width, height = fig.get_size_inches()
    meta = "\n".join(ln for ln in stamp.splitlines() if ln.strip())
    # 5-pt monospace: ~21 characters per inch with a margin; a longer line wraps rather than runs off
    lines = [w for ln in meta.splitlines() for w in textwrap.wrap(ln, int(width * 20), subsequent_indent="    ")]
    if lines:  # the figure grows by the footer, so the plots keep their size
        foot = 0.1 + 0.085 * len(lines)
        fig.set_size_inches(width, height + foot)
        fig.tight_layout(rect=(0, foot / (height + foot), 1, 1))
        fig.text(0.01, 0.01, "\n".join(lines), fontsize=5, va="bottom", family="monospace", color="#555555")
    else:
        fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": "deepprop", "Description": meta})
    plt.close(fig)


def plot_runs(runs, path: str, title: str = "", theory_lines: bool = True, stamp: str = "") -> None:
    """log10 ||dl/dx^l|| / ||dl/dx^L|| against layer l, a line per run (theory dashed), one panel
    per activation; writes a PNG to ``path``."""
    plt = _pyplot()
    acts = list(dict.fromkeys(r.config.activation for r in runs))
    n = len(acts)
    # more than 6 lines a panel: the legend goes beside it, instead of over the lines, and the panels stack
    outside = max(sum(r.config.activation == a for r in runs) for a in acts) > 6
    cols = 1 if outside else min(n, 2)
    rows_ = math.ceil(n / cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(6.5 * cols * (1.45 if outside else 1), 4.2 * rows_),
                             squeeze=False)
    fields = ("activation", "init", "sigma_w2", "sigma_b2", "norm", "residual", "dropout", "depth")
    constant = tuple(f for f in fields if len({getattr(r.config, f) for r in runs}) == 1 and f != "init")
    for ax, act in zip(axes.ravel(), acts, strict=False):
        mine = [r for r in runs if r.config.activation == act]
        # more lines than the default cycle's 10 colours: tab20, so that no two lines share one
        colors = (plt.rcParams["axes.prop_cycle"].by_key()["color"] if len(mine) <= 10
                  else list(plt.get_cmap("tab20").colors))
        for j, r in enumerate(mine):
            c = colors[j % len(colors)]
            lay = r.layers
            y = lay["log10_grad_x_rel"].to_numpy()
            ax.plot(lay["layer"], np.where(np.isfinite(y), y, np.nan), color=c, lw=1.3,
                    label=_label(r.config, skip=("activation",) + constant))
            if theory_lines and np.any(np.isfinite(lay["theory_log10_grad_x_rel"])):
                ty = lay["theory_log10_grad_x_rel"].to_numpy()
                ax.plot(lay["layer"], np.where(np.isfinite(ty), ty, np.nan), color=c, lw=0.9, ls="--")
        ax.set_title(act)
        ax.set_xlabel("layer l (0 = input)")
        ax.set_ylabel("log10 ||dl/dx^l|| / ||dl/dx^L||")
        ax.grid(alpha=0.3)
        if len(mine) <= 20:
            ax.legend(fontsize=7, **({"loc": "upper left", "bbox_to_anchor": (1.01, 1.0)} if outside
                                     else {"loc": "best"}))
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    fig.suptitle((title + "\n" if title else "") + "solid: measured (mean over seeds), dashed: mean-field theory",
                 fontsize=9)
    save_figure(fig, path, stamp)


def plot_spectrum(df: pd.DataFrame, path: str, title: str = "", stamp: str = "") -> None:
    """Mean and spread of the squared singular values of the input-output Jacobian against depth."""
    plt = _pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.2))
    keys = ["activation", "init", "sigma_w2", "sigma_b2", "norm", "residual"]
    for j, (key, g) in enumerate(df.groupby(keys, sort=False)):
        c = plt.rcParams["axes.prop_cycle"].by_key()["color"][j % 10]
        lab = f"{key[0]} {key[1]} sw2={key[2]:.3g}" + (f" sb2={key[3]:.2g}" if key[3] else "")
        a1.plot(g["depth"], g["log10_mean_s2"], "o-", color=c, label=lab)
        a1.plot(g["depth"], g["theory_log10_mean_s2"], "--", color=c, lw=0.8)
        a2.plot(g["depth"], g["var_s2"], "o-", color=c, label=lab)
        if np.any(np.isfinite(g["theory_var_s2"])):
            a2.plot(g["depth"], g["theory_var_s2"], "--", color=c, lw=0.8)
    for a in (a1, a2):
        a.set_xscale("log")
        a.set_xlabel("depth L")
        a.grid(alpha=0.3)
    a2.set_yscale("log")
    a1.set_ylabel("log10 mean of squared singular values")
    a2.set_ylabel("Var / mean^2 of squared singular values\n(at most width - 1)")
    a1.legend(fontsize=7)
    fig.suptitle((title + "\n" if title else "") + "input-output Jacobian; dashed: Pennington et al. 2017",
                 fontsize=9)
    save_figure(fig, path, stamp)


# ---- the command line: deepprop depth ------------------------------------------------------------

def _split(text: str) -> list[str]:
    items = [t.strip() for t in str(text).split(",")]
    if not items or any(t == "" for t in items):
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    return items


def _choices(allowed):
    def parse(text):
        items = _split(text)
        for t in items:
            if t not in allowed:
                raise argparse.ArgumentTypeError(f"unknown value {t!r}; expected one of {', '.join(allowed)}")
        return items
    return parse


def _numbers(kind, *, lo=None, hi=None, lo_open=False, hi_open=False, auto=None):
    def parse(text):
        out = []
        for t in _split(text):
            if auto is not None and t == auto:
                out.append(None)
                continue
            try:
                v = kind(t)
            except ValueError:
                word = "an integer" if kind is int else "a number"
                extra = f" or {auto!r}" if auto else ""
                raise argparse.ArgumentTypeError(f"expected {word}{extra}, got {t!r}") from None
            if kind is float and not math.isfinite(v):
                raise argparse.ArgumentTypeError(f"expected a finite number, got {t!r}")
            if lo is not None and (v < lo or (lo_open and v == lo)):
                raise argparse.ArgumentTypeError(f"{t} is out of range: expected {'>' if lo_open else '>='} {lo:g}")
            if hi is not None and (v > hi or (hi_open and v == hi)):
                raise argparse.ArgumentTypeError(f"{t} is out of range: expected {'<' if hi_open else '<='} {hi:g}")
            out.append(v)
        return out
    return parse


def _thread_count(text):
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} is out of range: expected >= 1")
    return n


def _seeds(text):
    out = []
    for t in _split(text):
        try:
            if ":" in t:
                a, b = (int(v) for v in t.split(":"))
                if b <= a:
                    raise ValueError
                out.extend(range(a, b))
            else:
                out.append(int(t))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected seeds like 0,1,2 or a range 0:4, got {t!r}") from None
    if any(s < 0 or s >= 2 ** 64 for s in out):
        raise argparse.ArgumentTypeError("seeds must be integers in [0, 2^64)")
    return out


EPILOG = """\
examples:
  deepprop depth                                   the canonical table (about a minute)
  deepprop depth --activation tanh --init normal --sigma-w2 1,1.5,1.76,2,3 --sigma-b2 0.05 --depths 100,1000
                                                   tanh across the order-to-chaos transition
  deepprop depth --activation relu --init he_normal --norm none,batch,layer --residual none,scaled \\
                 --depths 10,100,1000 --format markdown
  deepprop depth --activation sigmoid --init xavier_normal --depths 2000 --dtype float64
                                                   a gradient that underflows float64, still measured
  deepprop depth --activation relu,tanh --init he_normal,orthogonal --depths 200 --per-layer --format csv
  deepprop depth --activation tanh --init orthogonal,normal --sigma-w2 1.0 --sigma-b2 1e-4 --spectrum \\
                 --width 128 --depths 1,10,100          Jacobian spectra: dynamical isometry
  deepprop depth --activation relu,tanh --init he_normal --depths 50 --plot grads.png

every list option takes comma-separated values and the cross product of all of them runs; seeds are
aggregated (geometric mean, spread), not crossed. The table shows measurement and mean-field theory side
by side and flags disagreements with '!'. docs/depth.md explains the network, the loss, the thresholds and
the theory, with sources.
"""


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds every option of ``deepprop depth`` to ``parser`` (defaults: the canonical table)."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    if parser.description is None:
        parser.description = textwrap.fill(
            "How gradients vanish or explode with depth: builds deep MLPs from the library's kernels, runs one "
            "forward and backward pass at initialization and reports ||dl/dx^0|| / ||dl/dx^L|| next to the "
            "mean-field prediction. With no options: the canonical table (activations sigmoid, tanh, relu, "
            "leaky_relu x inits zeros, normal (std 0.01), pytorch_default, xavier_uniform, he_normal, "
            f"orthogonal at depths 10, 50, 100, 1000; width {DEFAULT_WIDTH}, batch {DEFAULT_BATCH}, seeds "
            f"{','.join(map(str, DEFAULT_SEEDS))}, float32, the fastest backend), about a minute on 2 cores.")
    parser.epilog = EPILOG
    g = parser.add_argument_group("network (each option a comma-separated list; the cross product runs)")
    g.add_argument("--activation", type=_choices(ACTIVATIONS), default=",".join(CANONICAL["activation"]),
                   metavar="LIST", help=f"activations: {', '.join(ACTIVATIONS)} (prelu: slope 0.25 as in "
                   "PyTorch; leaky_relu: 0.01). default: %(default)s")
    g.add_argument("--init", type=_choices(INITS), default=",".join(CANONICAL["init"]), metavar="LIST",
                   help="weight initializations: zeros; normal = N(0, 0.01^2); uniform = U(-0.05, 0.05); "
                   "pytorch_default = U(+-1/sqrt(fan_in)) for weights and biases (nn.Linear); xavier_uniform, "
                   "xavier_normal (gain 1); he_uniform, he_normal (fan_in, gain sqrt(2), leaky_relu/prelu: "
                   "sqrt(2/(1+slope^2))); lecun_normal; orthogonal (gain 1). default: %(default)s")
    g.add_argument("--sigma-w2", type=_numbers(float, lo=0, auto="auto"), default="auto", metavar="LIST",
                   help="sigma_w^2 = fan_in * Var(W): rescales any init but zeros to it, keeping its "
                   "distribution (normal stays Gaussian, orthogonal stays orthogonal); 'auto' = the init's "
                   "own. default: auto")
    g.add_argument("--sigma-b2", type=_numbers(float, lo=0, auto="auto"), default="auto", metavar="LIST",
                   help="bias variance sigma_b^2 (biases ~ N(0, sigma_b^2)); 'auto' = 0, or 1/(3 fan_in) "
                   "for pytorch_default. default: auto")
    g.add_argument("--norm", type=_choices(NORMS), default="none", metavar="LIST",
                   help="normalization before the activation: none, batch, layer (gamma 1, beta 0). "
                   "default: none")
    g.add_argument("--residual", type=_choices(RESIDUALS), default="none", metavar="LIST",
                   help="none; plain: x + F(x) with pre-activation branches F(x) = drop(phi(norm(x))) W + b; "
                   "scaled: x + F(x)/sqrt(L); fixup: F's (last) layer zero-initialized. default: none")
    g.add_argument("--dropout", type=_numbers(float, lo=0, hi=1, hi_open=True), default="0", metavar="LIST",
                   help="dropout probability after each activation, 0 <= p < 1 (inverted scaling). default: 0")
    g.add_argument("--clip", type=_numbers(float, lo=0, lo_open=True, auto="none"), default="none",
                   metavar="LIST", help="global-norm gradient clipping of the weight gradients at this max "
                   "norm; it scales every layer alike, so ratios are unchanged (per-layer output shows the "
                   "clipped norms). default: none")
    g.add_argument("--width", type=_numbers(int, lo=1), default=str(DEFAULT_WIDTH), metavar="LIST",
                   help="width of every layer (input and hidden). default: %(default)s")
    g.add_argument("--batch", type=_numbers(int, lo=1), default=str(DEFAULT_BATCH), metavar="LIST",
                   help="batch size (>= 2 for batch norm). default: %(default)s")
    g.add_argument("--depths", type=_numbers(int, lo=1, hi=100_000), default=",".join(map(str, CANONICAL["depths"])),
                   metavar="LIST", help="number of layers L (1 to 10,000 and beyond; memory grows with "
                   "L * width * (width + batch)). default: %(default)s")
    g.add_argument("--alpha", type=float, default=None,
                   help="slope of leaky_relu / initial slope of prelu / alpha of elu (default 0.01 / 0.25 / 1)")
    r = parser.add_argument_group("run")
    r.add_argument("--seeds", type=_seeds, default=",".join(map(str, DEFAULT_SEEDS)), metavar="LIST",
                   help="seeds to aggregate over (geometric mean and spread), e.g. 0,1,2 or 0:8. "
                   "default: %(default)s")
    r.add_argument("--backend", type=_choices(BACKENDS + ("auto",)), default="auto", metavar="LIST",
                   help="kernel backends: numpy, numba, c; auto = the fastest available (c, numba, numpy)")
    r.add_argument("--dtype", type=_choices(DTYPES), default="float32", metavar="LIST",
                   help="float32 or float64. default: float32")
    r.add_argument("--threads", type=_thread_count, default=None, metavar="N",
                   help="threads for the C backend's GEMM (OpenMP; only products of >= 256^3 multiply-adds "
                   "use them, see DEEPPROP_GEMM_THREAD_MIN_WORK in csrc/gemm.c) and for BLAS (the numpy "
                   "backend's matrix products); results do not depend on it. default: every usable core")
    r.add_argument("--spectrum", action="store_true",
                   help="Jacobian spectrum mode: mean and spread of the squared singular values of "
                   f"dx^L/dx^0 (width <= {SPECTRUM_MAX_WIDTH}; no batch norm or dropout)")
    o = parser.add_argument_group("output")
    o.add_argument("--format", choices=FORMATS, default="table",
                   help="table (aligned text), markdown, csv or json (csv/json: the columns "
                   "activation ... status listed in docs/depth.md). default: table")
    o.add_argument("--per-layer", action="store_true",
                   help="one row per configuration and layer (gradient norms, activation variance, "
                   "saturated/dead fractions, theory), for plots")
    o.add_argument("--plot", metavar="FILE.png", default=None,
                   help="also plot log10 gradient norm against layer, a line per configuration (matplotlib)")
    o.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return parser


def set_threads(threads: int | None = None):
    """Runs the C backend's GEMM (an OpenMP team, csrc/gemm.c) and BLAS on ``threads`` threads (None: every
    usable core) for calls from this thread, through threadpoolctl; returns the limiter, whose
    ``restore_original_limits()`` undoes it. The GEMM gives the same bits for any thread count."""
    import threadpoolctl

    from . import _c  # noqa: F401  (loads the C module, and with it the OpenMP runtime threadpoolctl pins)
    from .machine import usable_cores

    return threadpoolctl.threadpool_limits(limits=int(threads or usable_cores()))


def _progress(total, disable):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=total, unit="layer", file=sys.stderr, disable=True if disable else None,
                dynamic_ncols=True, leave=False)


def main(args: argparse.Namespace) -> int:
    """Runs ``deepprop depth`` for parsed ``args`` and prints the table; returns the exit code."""
    backends = [default_backend() if b == "auto" else b for b in args.backend]
    if args.alpha is not None and not math.isfinite(args.alpha):
        print("deepprop depth: error: --alpha: expected a finite number", file=sys.stderr)
        return 2
    try:
        configs = configs_from(activation=args.activation, init=args.init, sigma_w2=args.sigma_w2,
                               sigma_b2=args.sigma_b2, norm=args.norm, residual=args.residual,
                               dropout=args.dropout, clip=args.clip, width=args.width, batch=args.batch,
                               depth=args.depths, backend=list(dict.fromkeys(backends)), dtype=args.dtype,
                               alpha=[args.alpha])
        if args.spectrum:
            for c in configs:
                if max(c.widths) > SPECTRUM_MAX_WIDTH or c.norm == "batch" or c.dropout:
                    raise ValueError(f"--spectrum: needs width <= {SPECTRUM_MAX_WIDTH}, no batch norm and "
                                     "no dropout")
        if args.plot:
            _pyplot()
    except (ValueError, RuntimeError) as exc:
        print(f"deepprop depth: error: {exc}", file=sys.stderr)
        return 2
    import kernels

    for b in dict.fromkeys(c.backend for c in configs):
        reason = kernels.backends().get(b)
        if reason is not None:
            print(f"deepprop depth: error: backend {b!r} is unavailable: {reason}", file=sys.stderr)
            return 2
    seeds = args.seeds
    total = sum(2 * c.depth * len(seeds) for c in configs)
    from .machine import usable_cores

    threads = args.threads or usable_cores()
    limiter = set_threads(threads)
    bar = _progress(total, args.no_progress)
    t0 = time.perf_counter()
    runs = []
    try:
        if args.spectrum:
            df = table(configs, seeds, progress=bar, spectrum=True)
        else:
            for c in configs:
                runs.append(run_config(c, seeds, progress=bar))
            if args.per_layer:
                parts = []
                for r in runs:
                    lay = r.layers.copy()
                    for col in reversed(CSV_COLUMNS[:14]):
                        lay.insert(0, col, r.summary[col])
                    parts.append(lay)
                df = pd.concat(parts, ignore_index=True)
            else:
                df = pd.DataFrame([r.summary for r in runs])
    finally:
        if bar is not None:
            bar.close()
        limiter.restore_original_limits()
    elapsed = time.perf_counter() - t0
    sys.stdout.write(format_table(df, args.format, per_layer=args.per_layer, spectrum=args.spectrum))
    if args.format == "table":
        sys.stdout.write(f"{len(configs)} configurations x {len(seeds)} seeds in {elapsed:.1f} s "
                         f"on {threads} thread{'s' if threads > 1 else ''}\n")
    if args.plot:
        if args.spectrum:
            plot_spectrum(df, args.plot)
        else:
            plot_runs(runs, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


# ---- results/: deepprop report ----------------------------------------------------------------------

#: the tables of results/, regenerated by ``report``: name -> (title, spec)
REPORT_TABLES = {
    "1_activation_init": "activation x initialization (the canonical table)",
    "2_norm_residual_dropout": "batch norm, layer norm, residual variants and dropout",
    "3_tanh_order_chaos": "tanh across the order-to-chaos transition (sigma_b2 = 0.05)",
    "4_jacobian_spectrum": "squared singular values of the input-output Jacobian against depth",
}


def report_configs(backend: str, dtype: str = "float32") -> dict:
    """name -> (list of Config, spectrum?) for the four results tables."""
    common = dict(backend=[backend], dtype=[dtype], width=[DEFAULT_WIDTH], batch=[DEFAULT_BATCH])
    t1 = configs_from(activation=CANONICAL["activation"], init=CANONICAL["init"], depths=CANONICAL["depths"],
                      **common)
    depths2 = (10, 100, 1000)
    t2 = []
    for act, init in (("relu", "he_normal"), ("tanh", "xavier_normal")):
        t2 += configs_from(activation=[act], init=[init], norm=NORMS, residual=RESIDUALS, depths=depths2, **common)
        t2 += configs_from(activation=[act], init=[init], dropout=[0.1, 0.3], depths=depths2, **common)
    t3 = configs_from(activation=["tanh"], init=["normal"], sigma_w2=[1.0 + 0.25 * i for i in range(13)],
                      sigma_b2=[0.05], depths=(10, 100, 1000), **common)
    sb = 1e-4
    crit = round(theory.critical_sigma_w2("tanh", sb), 6)
    spec_common = dict(backend=[backend], dtype=[dtype], width=[128], depths=(1, 10, 100, 1000))
    t4 = (configs_from(activation=["tanh"], init=["orthogonal", "normal"], sigma_w2=[crit], sigma_b2=[sb],
                       **spec_common)
          + configs_from(activation=["relu"], init=["orthogonal", "he_normal"], sigma_w2=[2.0], **spec_common))
    return {"1_activation_init": (t1, False), "2_norm_residual_dropout": (t2, False),
            "3_tanh_order_chaos": (t3, False), "4_jacobian_spectrum": (t4, True)}


def _plot_order_chaos(df: pd.DataFrame, path: str, title: str, stamp: str = "") -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for j, (d, g) in enumerate(df.groupby("depth")):
        c = plt.rcParams["axes.prop_cycle"].by_key()["color"][j]
        ax.plot(g["sigma_w2"], g["rate"], "o-", color=c, label=f"measured, depth {d}")
    g = df[df["depth"] == df["depth"].max()]
    ax.plot(g["sigma_w2"], g["theory_rate"], "k--", lw=1, label="mean-field sqrt(chi) at q*")
    crit = theory.critical_sigma_w2("tanh", 0.05)
    ax.axvline(crit, color="gray", lw=0.8, ls=":")
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.text(crit, ax.get_ylim()[0], f" edge of chaos {crit:.3f}", fontsize=8, va="bottom")
    ax.set_xlabel("sigma_w^2")
    ax.set_ylabel("per-layer gradient growth rate (output -> input)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=9)
    save_figure(fig, path, stamp)


def report(outdir: str = "results", stamp: str = "", *, backend: str | None = None, seeds=DEFAULT_SEEDS,
           only=None, progress: bool = True) -> list[str]:
    """Writes the four results tables to ``outdir`` as CSV, Markdown and (if matplotlib is importable)
    PNG, each stamped at the top with the command and ``stamp`` (commit, CPU, BLAS, threads,
    versions: the caller's). ``only``: a subset of REPORT_TABLES names. Returns the paths written."""
    import os

    backend = backend or default_backend()
    os.makedirs(outdir, exist_ok=True)
    try:
        _pyplot()
        can_plot = True
    except RuntimeError:
        can_plot = False
    written = []
    for name, (configs, spectrum) in report_configs(backend).items():
        if only and name not in only:
            continue
        title = REPORT_TABLES[name]
        total = sum(2 * c.depth * len(seeds) for c in configs)
        bar = _progress(total, not progress)
        t0 = time.perf_counter()
        runs = []
        try:
            if spectrum:
                df = table(configs, seeds, progress=bar, spectrum=True)
            else:
                runs = [run_config(c, seeds, progress=bar) for c in configs]
                df = pd.DataFrame([r.summary for r in runs])
        finally:
            if bar is not None:
                bar.close()
        elapsed = time.perf_counter() - t0
        head = (f"deepprop report: results/{name} -- {title}\n"
                f"command: deepprop report (kernels.depth.report); {len(configs)} configurations x seeds "
                f"{' '.join(map(str, seeds))} on backend {backend} in {elapsed:.0f} s\n"
                + (stamp.strip() + "\n" if stamp.strip() else ""))
        base = os.path.join(outdir, name)
        with open(base + ".csv", "w") as f:
            f.write(format_table(df, "csv", spectrum=spectrum, stamp=head))
        with open(base + ".md", "w") as f:
            f.write(f"## {title}\n\n")
            f.write(format_table(df, "markdown", spectrum=spectrum, stamp=head))
        written += [base + ".csv", base + ".md"]
        if can_plot:
            if spectrum:
                plot_spectrum(df, base + ".png", title, stamp=head)
            elif name == "3_tanh_order_chaos":
                _plot_order_chaos(df, base + ".png", title, stamp=head)
            else:
                pick = [r for r in runs if r.config.depth == 100]
                plot_runs(pick, base + ".png", title + " (depth 100)", stamp=head)
            written.append(base + ".png")
        elif os.path.exists(base + ".png"):  # an earlier run's plot no longer matches the new table
            os.remove(base + ".png")
            print(f"deepprop report: {name}.png not made (matplotlib is not installed: pip install matplotlib); "
                  "removed the stale one", file=sys.stderr)
    return written


# ---- the harness benchmark ----------------------------------------------------------------------------

_BENCH_CHILD = """
import json, resource, sys, time
from kernels import depth
kw = json.loads(sys.argv[1])
warm = depth.Config(**{**kw, "depth": 2, "width": 8, "batch": 4})
depth.run_config(warm, (0,), stats=False)          # JIT-compile / load outside the timing
cfg = depth.Config(**kw)
t = time.perf_counter()
run = depth.run_config(cfg, (0,), stats=False)
sec = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": sec, "peak_rss_bytes": rss, "log10_ratio": run.summary["log10_input_grad_ratio"],
                  "passes": run.per_seed[0]["passes"]}))
"""


def bench(depths=(100, 1000, 10_000), *, width: int = 256, batch: int = 128, backend: str | None = None,
          dtype: str = "float32", activation: str = "relu", init: str = "he_normal",
          timeout: float = 3600) -> pd.DataFrame:
    """Time and peak memory of one forward+backward of the harness at each depth (one seed), each in
    a fresh Python process so that its peak resident memory is its own. The issue's target: depth
    10,000, width 256, batch 128, float32, He init, C backend: < 30 s and < 8 GiB."""
    import subprocess

    backend = backend or default_backend()
    rows = []
    for d in depths:
        kw = dict(activation=activation, init=init, width=width, batch=batch, depth=int(d), backend=backend,
                  dtype=dtype)
        proc = subprocess.run([sys.executable, "-c", _BENCH_CHILD, json.dumps(kw)], capture_output=True,
                              text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"bench at depth {d} failed:\n{proc.stderr[-2000:]}")
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        item = np.dtype(dtype).itemsize
        rows.append({**kw, "seconds": res["seconds"], "passes": res["passes"],
                     "seconds_per_pass": res["seconds"] / res["passes"],
                     "peak_rss_gib": res["peak_rss_bytes"] / 2 ** 30,
                     "stored_gib": d * (width * width + batch * width) * item / 2 ** 30,
                     "seconds_per_layer": res["seconds"] / d, "log10_input_grad_ratio": res["log10_ratio"]})
    return pd.DataFrame(rows)
