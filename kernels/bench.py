"""``deepprop bench``: kernel speed, NumPy against Numba against C against PyTorch, next to what the
machine can do and with the threads and BLAS it ran with.

How a figure is made
  * Inputs are built from the kernel's workload at size n (``WORKLOADS``, below; ``deepprop bench
    --workloads`` prints the table), outside the timing. Each backend runs once untimed (the JIT
    compiles, thread pools start) and its result is checked against the NumPy reference, outside the
    timing; a backend that disagrees gets an error row, not a speed.
  * Timing: ``time.perf_counter`` around the call, garbage collector off. Calls shorter than ~200 us
    are looped ``number`` times per sample and the time divided by ``number``. Samples are taken until
    there are ``--repeat`` of them AND they add up to ``--min-time`` seconds. Rows give the min, the
    median and the inter-quartile range (q75 - q25) of the per-call times; every rate (GFLOP/s, GB/s,
    speed-ups, % of limit) uses the median.
  * Kernels that write arguments in place (batch-norm running statistics, the gradients given to
    clip_grad_*) get those arguments restored before every call, outside the timing (number = 1).
  * Output allocation: every backend allocates its outputs in the call (our kernels and the torch ops
    alike), and ``--alloc`` says where that cost lands. ``inside`` (default): the allocator as every
    Python program has it (glibc's defaults: its dynamic mmap threshold recycles most freed blocks up
    to 32 MiB, larger outputs get fresh pages each call), so the page faults and zeroing of new output
    memory are in the timing. ``outside``: each child first tells glibc (``mallopt``) never to mmap
    and never to trim, so a freed output's warm memory is reused by the next call: page faults and
    zeroing leave the timing and what remains is the allocator call itself (~1 us, independent of
    size) - the figure a caller reusing its buffers would see. Every row records the mode (``alloc``)
    and the minor page faults per timed call (``faults_per_call``, from getrusage), so the effect is
    measured, not assumed: ``outside`` shows ~0. Both modes apply to NumPy, Numba, C and torch alike.
  * Isolation: each backend runs in its own subprocess, started with the SPAWN method (fork is unsafe
    once Numba's or torch's OpenMP pool is up), so thread pools of one backend never contend with
    another's. ``--threads N`` is set in that child's environment before it imports anything heavy
    (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, MKL_NUM_THREADS, NUMBA_NUM_THREADS) and applied again
    once loaded (threadpoolctl.threadpool_limits, numba.set_num_threads, torch.set_num_threads); the
    child reports what it then sees. Of the C kernels the GEMM (linear_*, qr's updates; from 256^3
    multiply-adds; kernels.backend_info()["gemm_isa"] says how many), gradient clipping (from 2^20
    values), dropout (from 2^18 elements) and batch norm (from 2^22) are threaded (OpenMP, csrc/team.c;
    every result bit for bit that of one thread); the others are single-threaded, as are NumPy's
    elementwise operations and the Numba kernels but dropout's (prange): N pins the pools that exist,
    and pct_of_limit is against what N threads could do.
  * OPENBLAS_CORETYPE: ``--blas-coretype env`` (default) leaves the environment as it is, ``auto``
    removes the variable from every child's environment before NumPy loads (OpenBLAS then picks the
    kernels it detects for this CPU: the fair NumPy baseline), NAME sets it. Every row records the
    architecture threadpoolctl reports in its child (``blas_arch``).

Columns: kernel, backend, dtype, shape, threads, min_s, median_s, iqr_s, gflops, gbps,
speedup_vs_numpy, speedup_vs_torch, pct_of_limit, then size, bound, flops, bytes, limit, repeats,
number, blas_arch, blas_coretype, alloc, faults_per_call, check, error.
  * gflops = the kernel's flop count (WORKLOADS; blank where no count is meaningful) / median_s.
  * gbps = bytes / median_s, bytes counted by one rule for every kernel: every array argument read
    once + every returned array written once + every argument written in place written once more
    (lists of arrays count each array; no write-allocate or re-read traffic, as STREAM counts).
  * pct_of_limit: compute-bound kernels (linear_*, qr, orthogonal_init): gflops against the FMA peak
    of the dtype for the threads used; memory-bound kernels (all others): gbps against the best
    measured copy/triad bandwidth at the cache level the bytes fit in (kernels.machine.limit_for).
  * speedup_vs_numpy / _vs_torch: the numpy (torch) row's median / this row's median, same kernel,
    dtype and size; blank when that backend did not run.
"""

from __future__ import annotations

import copy
import csv
import gc
import io
import json
import math
import multiprocessing
import os
import queue as queue_mod
import sys
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field

from .cli import parse_sizes

COLUMNS = ["kernel", "backend", "dtype", "shape", "threads", "min_s", "median_s", "iqr_s", "gflops", "gbps",
           "speedup_vs_numpy", "speedup_vs_torch", "pct_of_limit"]
EXTRA_COLUMNS = ["size", "bound", "flops", "bytes", "limit", "repeats", "number", "blas_arch", "blas_coretype",
                 "alloc", "faults_per_call", "check", "error"]
ALL_COLUMNS = COLUMNS + EXTRA_COLUMNS
ALL_BACKENDS = ("numpy", "numba", "c", "torch")
DTYPES = ("float32", "float64")
ALLOC_MODES = ("inside", "outside")
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS")
COMPUTE_BOUND = ("linear_forward", "linear_backward", "qr", "orthogonal_init")
#: per-sample target: shorter calls are looped to about this long
SAMPLE_TARGET_S = 2e-4
MAX_SAMPLES = 100_000
#: torch computes in the dtype (not float64 inside): its check allows this many times our tolerance
TORCH_SLACK = 64.0


class BenchError(ValueError):
    """A bad request (unknown kernel/backend, unavailable backend): the CLI prints it, exit 2."""


# ---- workloads: what each kernel is timed on ---------------------------------------------------------

WIDTH = 1024                          # the feature width of the row-shaped workloads


def _memory_rows() -> int:
    """Rows of a (rows, 1024) workload whose float32 array alone is at least half the last-level cache
    (at least 4096): with its other arrays the working set is then 1.5-3x the L3 in float32, twice
    that in float64, so the largest default size is memory-bound on this machine. (Larger sizes say
    little more and cost minutes: the float64-inside reference of gelu takes ~1 s per 4M elements.)"""
    try:
        from .machine import caches

        l3 = caches().get("L3", 32 << 20)
    except Exception:  # no sysfs: assume a common 32 MiB
        l3 = 32 << 20
    rows = 4096
    while rows * WIDTH * 4 < l3 // 2:
        rows *= 2
    return rows


#: x (n, 1024) float32: 64 KiB (L1/L2), 1 MiB (L2/L3), >= L3/2 (main memory with the other arrays)
ROWS = (16, 256, _memory_rows())
#: clip: 4 layers of (n, 1024) + (1024,): the same total bytes as ROWS
GRAD_ROWS = (4, 64, ROWS[-1] // 4)
MATRIX = (64, 256, 1024)              # linear: N = K = M = n
QR_SIZES = (32, 128, 512)             # qr: a (n + n//2, n); orthogonal_init: (n, n)
FALLBACK_SIZES = (65, 1025)           # kernels without a workload: kernels.CASES at n


@dataclass
class Workload:
    make: object                      # make(rng, n, dtype) -> kwargs
    sizes: tuple
    size_doc: str                     # what n means
    bound: str = "memory"             # "memory" | "compute"
    flops: object = None              # flops(kwargs) -> float, or None: no meaningful count
    flops_doc: str = ""


def _normal(rng, shape, dtype, scale=1.0, shift=0.0):
    import numpy as np

    a = rng.standard_normal(shape, dtype=np.dtype(dtype).type)
    if scale != 1.0 or shift != 0.0:
        a = a * np.asarray(scale, dtype) + np.asarray(shift, dtype)
    return a


def _rows(name_x="x", extra=None, with_dy=False):
    """x (n, 1024) [+ dy], plus fixed extra kwargs (callable(rng, n, dtype, kw) -> dict)."""
    def make(rng, n, dtype):
        kw = {}
        if with_dy:
            kw["dy"] = _normal(rng, (n, WIDTH), dtype)
        kw[name_x] = _normal(rng, (n, WIDTH), dtype)
        if extra:
            kw.update(extra(rng, n, dtype, kw))
        return kw
    return make


def _elements(kw) -> int:
    """Elements of the largest array argument (x, or dy): what a per-element flop count counts."""
    import numpy as np

    return max((v.size for v in kw.values() if isinstance(v, np.ndarray)), default=0)


def _per_element(k: float):
    return lambda kw: k * _elements(kw)


def _linear_fwd(rng, n, dtype):
    s = 1.0 / math.sqrt(n)
    return {"x": _normal(rng, (n, n), dtype), "W": _normal(rng, (n, n), dtype, s), "b": _normal(rng, (n,), dtype),
            "activation": "identity"}


def _linear_bwd(rng, n, dtype):
    s = 1.0 / math.sqrt(n)
    return {"dy": _normal(rng, (n, n), dtype), "x": _normal(rng, (n, n), dtype),
            "W": _normal(rng, (n, n), dtype, s), "activation": "identity"}


def _linear_flops(kw, backward=False):
    N, K = kw["x"].shape
    M = kw["W"].shape[1]
    if backward:
        return 4.0 * N * K * M + N * M          # dx = dy W^T, dW = x^T dy, db = column sums
    return 2.0 * N * K * M + (N * M if kw.get("b") is not None else 0)


def _qr_flops(m, n):
    """Householder QR (2mn^2 - 2n^3/3) and forming the thin Q (the same again)."""
    return 4.0 * m * n * n - 4.0 * n ** 3 / 3.0


def _bn_params(rng, n, dtype, kw, running=True, momentum=True):
    C = WIDTH
    out = {"gamma": _normal(rng, (C,), dtype, 0.2, 1.0), "beta": _normal(rng, (C,), dtype, 0.1)}
    if running:
        out["running_mean"] = _normal(rng, (C,), dtype, 0.1)
        out["running_var"] = rng.uniform(0.5, 2.0, C).astype(dtype)
    if momentum:
        out["momentum"] = 0.1
    out["eps"] = 1e-5
    return out


def _stats(axis):
    """mean, rstd of x along axis, float64 then cast: the saved statistics a backward takes."""
    def extra(rng, n, dtype, kw):
        import numpy as np

        x = kw["x"].astype(np.float64)
        mean = x.mean(axis=axis)
        rstd = 1.0 / np.sqrt(x.var(axis=axis) + 1e-5)
        return {"gamma": _normal(rng, (WIDTH,), dtype, 0.2, 1.0), "mean": mean.astype(dtype),
                "rstd": rstd.astype(dtype)}
    return extra


def _grads(rng, n, dtype):
    out = []
    for _ in range(4):
        out += [_normal(rng, (n, WIDTH), dtype), _normal(rng, (WIDTH,), dtype)]
    return out


def _dropout_backward(rng, n, dtype):
    """dy (n, 1024) and the bit-packed mask the reference dropout_mask makes for it (p = 0.5)."""
    from . import REGISTRY

    dy = _normal(rng, (n, WIDTH), dtype)
    return {"dy": dy, "p": 0.5, "mask": REGISTRY["dropout_mask"]["numpy"](dy.size, 0.5, 1234)}


def _init_kernel(**params):
    """Initializers: shape (n, 1024), the benchmarked dtype, fixed parameters."""
    def make(rng, n, dtype):
        import numpy as np

        return {"shape": (n, WIDTH), **params, "dtype": np.dtype(dtype).name}
    return make


ACTIVATIONS = ("identity", "sigmoid", "tanh", "relu", "leaky_relu", "elu", "gelu")
ALPHA = {"leaky_relu": 0.01, "elu": 1.0}
INITS = ("zeros_init", "constant_init", "uniform_init", "normal_init", "xavier_uniform_init",
         "xavier_normal_init", "he_uniform_init", "he_normal_init", "lecun_normal_init")
ROWS_DOC = f"x ({{n}}, {WIDTH})"

WORKLOADS: dict[str, Workload] = {
    "linear_forward": Workload(_linear_fwd, MATRIX, "x (n, n) @ W (n, n) + b (n,), identity", "compute",
                               _linear_flops, "2NKM + NM (bias)"),
    "linear_backward": Workload(_linear_bwd, MATRIX, "dy, x (n, n), W (n, n), identity", "compute",
                                lambda kw: _linear_flops(kw, True), "4NKM + NM (db)"),
    "qr": Workload(lambda rng, n, dt: {"a": _normal(rng, (n + n // 2, n), dt)}, QR_SIZES, "a (n + n//2, n)",
                   "compute", lambda kw: _qr_flops(*kw["a"].shape), "4mn^2 - 4n^3/3 (R, then thin Q)"),
    "orthogonal_init": Workload(
        lambda rng, n, dt: {"shape": (n, n), "gain": 1.0, "seed": 1234, "dtype": dt.name if hasattr(dt, "name")
                            else str(dt)},
        QR_SIZES, "shape (n, n)", "compute", lambda kw: _qr_flops(*kw["shape"]),
        "4n^3 - 4n^3/3 (QR of the (n, n) normal draw; the draw itself not counted)"),
    "residual_add": Workload(lambda rng, n, dt: {"x": _normal(rng, (n, WIDTH), dt),
                                                 "fx": _normal(rng, (n, WIDTH), dt), "scale": 0.5},
                             ROWS, "x, fx (n, 1024)", flops=_per_element(2), flops_doc="2 per element"),
    "l2_grad": Workload(lambda rng, n, dt: {"grad": _normal(rng, (n, WIDTH), dt), "w": _normal(rng, (n, WIDTH), dt),
                                            "weight_decay": 1e-2},
                        ROWS, "grad, w (n, 1024)", flops=_per_element(2), flops_doc="2 per element"),
    "l1_grad": Workload(lambda rng, n, dt: {"grad": _normal(rng, (n, WIDTH), dt), "w": _normal(rng, (n, WIDTH), dt),
                                            "l1": 1e-3},
                        ROWS, "grad, w (n, 1024)", flops=_per_element(2), flops_doc="2 per element (sign not counted)"),
    "batchnorm_forward": Workload(_rows(extra=lambda r, n, d, kw: _bn_params(r, n, d, kw)), ROWS,
                                  "x (n, 1024), C = 1024", flops=_per_element(7),
                                  flops_doc="7 per element (mean 1, variance 3, normalise 3), nominal"),
    "batchnorm_inference": Workload(_rows(extra=lambda r, n, d, kw: _bn_params(r, n, d, kw, momentum=False)), ROWS,
                                    "x (n, 1024), C = 1024", flops=_per_element(2),
                                    flops_doc="2 per element (x * s + t), nominal"),
    "batchnorm_backward": Workload(_rows(with_dy=True, extra=_stats(0)), ROWS, "dy, x (n, 1024), C = 1024",
                                   flops=_per_element(10), flops_doc="10 per element, nominal"),
    "layernorm_forward": Workload(_rows(extra=lambda r, n, d, kw: _bn_params(r, n, d, kw, running=False,
                                                                            momentum=False)),
                                  ROWS, "x (n, 1024), D = 1024", flops=_per_element(7),
                                  flops_doc="7 per element, nominal"),
    "layernorm_backward": Workload(_rows(with_dy=True, extra=_stats(1)), ROWS, "dy, x (n, 1024), D = 1024",
                                   flops=_per_element(10), flops_doc="10 per element, nominal"),
    "dropout_mask": Workload(lambda rng, n, dt: {"n": n * WIDTH, "p": 0.5, "seed": 1234}, ROWS,
                             "n * 1024 mask bits"),
    "dropout_forward": Workload(_rows(extra=lambda r, n, d, kw: {"p": 0.5, "seed": 1234}), ROWS, "x (n, 1024)"),
    "dropout_backward": Workload(_dropout_backward, ROWS, "dy (n, 1024), the bit-packed mask"),
    "clip_grad_norm": Workload(lambda rng, n, dt: {"grads": _grads(rng, n, dt), "max_norm": 1.0, "norm_type": 2.0},
                               GRAD_ROWS, "grads: 4 x ((n, 1024), (1024,))", flops=None),
    "clip_grad_value": Workload(lambda rng, n, dt: {"grads": _grads(rng, n, dt), "clip_value": 0.5},
                                GRAD_ROWS, "grads: 4 x ((n, 1024), (1024,))"),
    "prelu_forward": Workload(_rows(extra=lambda r, n, d, kw: {"a": _normal(r, (WIDTH,), d, 0.1, 0.2)}), ROWS,
                              "x (n, 1024), a (1024,)"),
    "prelu_backward": Workload(_rows(with_dy=True, extra=lambda r, n, d, kw: {"a": _normal(r, (WIDTH,), d, 0.1, 0.2)}),
                               ROWS, "dy, x (n, 1024), a (1024,)"),
}
for _act in ACTIVATIONS:
    _alpha = ALPHA.get(_act)
    WORKLOADS[f"{_act}_forward"] = Workload(_rows(extra=lambda r, n, d, kw, a=_alpha: {"alpha": a} if a else {}),
                                            ROWS, "x (n, 1024)")
    WORKLOADS[f"{_act}_backward"] = Workload(_rows(with_dy=True,
                                                   extra=lambda r, n, d, kw, a=_alpha: {"alpha": a} if a else {}),
                                             ROWS, "dy, x (n, 1024)")
_INIT_PARAMS = {
    "zeros_init": {}, "constant_init": {"value": 0.1},
    "uniform_init": {"low": -0.1, "high": 0.1, "seed": 1234}, "normal_init": {"mean": 0.0, "std": 0.02, "seed": 1234},
    "xavier_uniform_init": {"gain": 1.0, "seed": 1234}, "xavier_normal_init": {"gain": 1.0, "seed": 1234},
    "he_uniform_init": {"mode": "fan_in", "nonlinearity": "relu", "seed": 1234},
    "he_normal_init": {"mode": "fan_in", "nonlinearity": "relu", "seed": 1234},
    "lecun_normal_init": {"seed": 1234},
}
for _init in INITS:
    WORKLOADS[_init] = Workload(_init_kernel(**_INIT_PARAMS[_init]), ROWS, "shape (n, 1024)")


def workload(name: str) -> Workload:
    """The kernel's workload; kernels without one are timed on their verification case (kernels.CASES)."""
    if name in WORKLOADS:
        return WORKLOADS[name]
    from . import CASES

    return Workload(CASES[name], FALLBACK_SIZES, "kernels.CASES at n (no bench workload)",
                    "compute" if name in COMPUTE_BOUND else "memory")


def workloads_table(names=None) -> str:
    """The markdown table of what each kernel is timed on and how its flops and bytes are counted."""
    from . import names as all_names

    lines = ["| kernel | bound | size n means | default sizes | flops counted | bytes counted |",
             "|---|---|---|---|---|---|"]
    for name in names or all_names():
        w = workload(name)
        lines.append(f"| `{name}` | {w.bound} | {w.size_doc} | {', '.join(map(str, w.sizes))} | "
                     f"{w.flops_doc or '-'} | arrays in once + arrays out once + in-place arrays once more |")
    return "\n".join(lines)


# ---- cases: inputs, shape text, byte counts ----------------------------------------------------------

def _array_args(kwargs):
    import numpy as np

    for k, v in kwargs.items():
        if isinstance(v, np.ndarray):
            yield k, v
        elif isinstance(v, list) and v and all(isinstance(a, np.ndarray) for a in v):
            for i, a in enumerate(v):
                yield f"{k}[{i}]", a


def describe_shape(kwargs) -> str:
    """'x=4096x1024' / 'x=64x64 W=64x64' / 'grads=4x(64x1024)+4x(1024)' / 'shape=512x512'."""
    import numpy as np

    parts = []
    for k, v in kwargs.items():
        if isinstance(v, np.ndarray) and (v.ndim >= 2 or not parts):
            if v.ndim >= 2 or v.size > 1:
                parts.append(f"{k}={'x'.join(map(str, v.shape))}")
        elif isinstance(v, list) and v and all(isinstance(a, np.ndarray) for a in v):
            counts: dict = {}
            for a in v:
                counts[a.shape] = counts.get(a.shape, 0) + 1
            parts.append(f"{k}=" + "+".join(f"{c}x({'x'.join(map(str, s))})" for s, c in counts.items()))
        elif k == "shape":
            parts.append("shape=" + "x".join(map(str, v)))
        elif k == "n" and isinstance(v, int):
            parts.append(f"n={v}")
    return " ".join(parts)


def _flatten(value):
    from .verify import _flatten as flat

    return flat(value)


def count_bytes(kwargs, outputs, written_keys) -> int:
    """The byte rule: array arguments read once + returned arrays written once + in-place arrays once more."""
    import numpy as np

    inputs = sum(a.nbytes for _, a in _array_args(kwargs))
    outs = sum(np.asarray(o).nbytes for o in outputs if o is not None and np.ndim(o) > 0)
    inplace = sum(a.nbytes for k, a in _array_args(kwargs) if k in written_keys)
    return int(inputs + outs + inplace)


# ---- timing --------------------------------------------------------------------------------------------

def time_call(call, restore=None, repeat=5, min_time=0.2, max_samples=MAX_SAMPLES, first_s=None):
    """Per-call times (seconds) and the loop count: see the module docstring. call() is the timed
    call; restore(), if given, runs before every call, untimed (then each sample is one call).
    first_s: the time of an earlier untimed call, to calibrate the loop count without another call."""
    perf = time.perf_counter
    number = 1
    if restore is None:  # calibrate: loop short calls so a sample is ~SAMPLE_TARGET_S
        single = first_s
        if single is None or single < 1.0:  # a first call may include one-off costs (JIT): re-measure it
            t0 = perf()
            call()
            single = perf() - t0
        if single < SAMPLE_TARGET_S:
            number = min(10_000, max(1, int(SAMPLE_TARGET_S / max(single, 1e-8))))
    samples = []
    total = 0.0
    gc_was = gc.isenabled()
    gc.disable()
    try:
        while len(samples) < max(1, repeat) or total < min_time:
            if restore is not None:
                restore()
            t0 = perf()
            for _ in range(number):
                call()
            dt = perf() - t0
            samples.append(dt / number)
            total += dt
            if len(samples) >= max_samples:
                break
    finally:
        if gc_was:
            gc.enable()
    return samples, number


def stats(samples):
    import numpy as np

    a = np.asarray(samples, dtype=np.float64)
    q25, q50, q75 = np.percentile(a, [25, 50, 75])
    return float(a.min()), float(q50), float(q75 - q25)


# ---- one case, in the child ------------------------------------------------------------------------------

def _written_keys(before, after_kwargs) -> set:
    import numpy as np

    orig = dict(_array_args(before))
    out = set()
    for k, a in _array_args(after_kwargs):
        b = orig.get(k)
        if b is not None and b.shape == a.shape and not np.array_equal(a, b, equal_nan=True):
            out.add(k)
    return out


def _restorer(kwargs, originals, keys):
    import numpy as np

    if not keys:
        return None
    pairs = [(a, originals[k]) for k, a in _array_args(kwargs) if k in keys]

    def restore():
        for dst, src in pairs:
            np.copyto(dst, src)
    return restore


def _compare_all(name, kwargs, outs, refs, dtype, slack=1.0):
    """Max error and message of outs against refs under the kernel's tolerance (kernels.verify).
    slack > 1 (a peer that computes in the dtype): elementwise measures become normwise, since one
    rounding in the dtype before a cancellation breaks a componentwise bound, not a normwise one."""
    import numpy as np

    from . import verify

    measure, k = verify.TOLERANCE.get(name, verify.DEFAULT_TOLERANCE)
    if slack > 1.0 and measure == "elementwise":
        measure = "normwise"
    if k == "qr":
        k = verify._qr_k(kwargs)
    tol = float(k) * float(np.finfo(dtype).eps) * slack  # eps of the case's dtype, as kernels.verify
    if len(outs) != len(refs):
        return math.inf, tol, f"{len(outs)} outputs, reference has {len(refs)}"
    dens = (verify._gemm_denominators(name, kwargs, refs) if measure == "gemm" else [])
    dens = list(dens) + [None] * (len(refs) - len(dens))
    worst, msgs = 0.0, []
    for i, (o, r, den) in enumerate(zip(outs, refs, dens, strict=True)):
        if o is None:  # the peer does not return this output
            continue
        m = measure if (measure != "gemm" or den is not None) else "normwise"
        if m != "exact" and np.asarray(r).dtype.kind != "f":
            m = "exact"
        err, msg = verify.compare(o, r, m, den)
        if msg:
            msgs.append(f"output {i}: {msg}")
        worst = max(worst, err)
    ok = not msgs and (worst <= tol if measure != "exact" else worst == 0)
    if not ok and not msgs:
        msgs.append(f"max error {worst:.3g} > tolerance {tol:.3g}")
    return worst, tol, "; ".join(msgs)


def prepare_case(name, backend, dtype, n, seed=0):
    """Build one case, run it once untimed (JIT compile, pool start-up) and check the result against
    the reference. Returns (row, call, restore): the partial row (no timings; "error" set when the
    check failed, and then call is None), the call to time, and the untimed restore of in-place
    arguments to run before each call (None when the kernel writes nothing in place)."""
    import numpy as np

    from . import REGISTRY

    dt = np.dtype(dtype)
    wl = workload(name)
    rng = np.random.default_rng([seed, n, 1 if dt == np.float32 else 2])
    kwargs = wl.make(rng, n, dt)
    row = {"kernel": name, "backend": backend, "dtype": dt.name, "size": n, "shape": describe_shape(kwargs),
           "bound": wl.bound}
    flops = wl.flops(kwargs) if wl.flops else None
    row["flops"] = None if flops is None else float(flops)

    # the reference, once: outputs, which arguments it writes, the byte count
    ref_kw = copy.deepcopy(kwargs)
    t0 = time.perf_counter()
    refs = _flatten(REGISTRY[name]["numpy"](**ref_kw))
    first_s = time.perf_counter() - t0
    written = _written_keys(kwargs, ref_kw)
    refs_all = refs + [a for k, a in _array_args(ref_kw) if k in written]
    row["bytes"] = count_bytes(kwargs, refs, written)

    originals = {k: a.copy() for k, a in _array_args(kwargs)}
    peer = None
    if backend == "torch":
        from . import torch_peer

        peer = torch_peer.make(name, kwargs)
        call = peer.call
    else:
        fn = REGISTRY[name][backend]

        def call():
            return fn(**kwargs)

    # the untimed first call: compiles, starts pools, and is checked against the reference (for numpy
    # the reference run above was that call: it ran the same function on a copy of the same inputs)
    if backend == "numpy":
        row["check"] = "reference"
    else:
        t0 = time.perf_counter()
        result = call()
        first_s = time.perf_counter() - t0
        if peer is not None:
            outs = peer.outputs(result)
            outs = [None if o is None else np.asarray(o).astype(np.asarray(r).dtype, copy=False)
                    for o, r in zip(outs, refs, strict=False)] + [None] * max(0, len(refs) - len(outs))
        else:
            outs = _flatten(result)
        outs_all = outs + [a for k, a in _array_args(kwargs) if k in written]
        if peer is not None and peer.check is not None:
            msg = peer.check(kwargs, originals, outs_all, refs_all)
            row["check"] = "ok (properties)" if not msg else f"FAIL: {msg}"
        else:
            err, tol, msg = _compare_all(name, kwargs, outs_all, refs_all, dt, TORCH_SLACK if peer else 1.0)
            row["check"] = (f"ok ({err:.2g} <= {tol:.2g})" if not msg else f"FAIL: {msg}")
        if msg:
            row["error"] = f"result differs from the reference: {msg}"
            return row, None, None
    restore = _restorer(kwargs, originals, written)
    if restore is not None:
        restore()
    row["first_s"] = first_s
    return row, call, restore


def run_case(name, backend, dtype, n, repeat, min_time, seed=0):
    """Build, check and time one case in this process. Returns a partial row (no derived columns)."""
    row, call, restore = prepare_case(name, backend, dtype, n, seed)
    if call is None:
        return row
    faults0 = _minor_faults()
    samples, number = time_call(call, restore, repeat, min_time, first_s=row.pop("first_s", None))
    faults = _minor_faults() - faults0
    row["min_s"], row["median_s"], row["iqr_s"] = stats(samples)
    row["repeats"], row["number"] = len(samples), number
    # includes the (non-allocating) restores and the calibration call, at most one call's worth
    row["faults_per_call"] = faults / (len(samples) * number) if faults >= 0 else None
    return row


def _minor_faults() -> int:
    """Minor page faults of this process so far (-1 where getrusage is unavailable)."""
    try:
        import resource
    except ImportError:  # not POSIX
        return -1
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
# what set_alloc returns (and the rows record) when "outside" cannot be had: no glibc, or ASan's allocator
ALLOC_OUTSIDE_UNAVAILABLE = "inside (outside unavailable: no glibc mallopt)"


def set_alloc(mode: str) -> str:
    """Apply an --alloc mode to this (child) process; returns what the rows record. ``outside``: glibc
    never mmaps a block (so never unmaps one) and never trims the heap, so freed output memory stays
    mapped and warm and the next call's output reuses it (see the module docstring)."""
    if mode == "inside":
        return "inside"
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    except (OSError, AttributeError):  # not glibc
        ok = False
    return "outside" if ok else ALLOC_OUTSIDE_UNAVAILABLE


# ---- the child process ------------------------------------------------------------------------------------

def child_environment(threads: int, blas_coretype: str = "env", base=None) -> dict:
    """The environment a backend's child starts with: threads pinned, OPENBLAS_CORETYPE as asked."""
    env = dict(os.environ if base is None else base)
    for var in THREAD_ENV:
        env[var] = str(threads)
    if blas_coretype == "auto":
        env.pop("OPENBLAS_CORETYPE", None)
    elif blas_coretype != "env":
        env["OPENBLAS_CORETYPE"] = blas_coretype
    return env


@contextmanager
def _environment(env: dict):
    """os.environ replaced by env (a spawned child inherits it), restored afterwards."""
    saved = dict(os.environ)
    try:
        for k in list(os.environ):
            if k not in env:
                del os.environ[k]
        os.environ.update(env)
        yield
    finally:
        for k in list(os.environ):
            if k not in saved:
                del os.environ[k]
        os.environ.update(saved)


def pin_threads(threads: int, backend: str) -> dict:
    """Apply the thread setting in this (child) process and report what the libraries now use."""
    import threadpoolctl

    global _LIMITER
    _LIMITER = threadpoolctl.threadpool_limits(limits=threads)
    report = {"pid": os.getpid(), "threads": threads,
              "env": {v: os.environ.get(v) for v in THREAD_ENV + ("OPENBLAS_CORETYPE",)}}
    from . import _numba

    if _numba.numba is not None:
        _numba.numba.set_num_threads(min(threads, _numba.numba.config.NUMBA_NUM_THREADS))
        report["numba_threads"] = _numba.numba.get_num_threads()
    if backend == "torch":
        import torch

        torch.set_num_threads(threads)
        report["torch_threads"] = torch.get_num_threads()
        report["torch"] = torch.__version__
    pools = threadpoolctl.threadpool_info()
    report["pools"] = [{k: p.get(k) for k in ("user_api", "internal_api", "num_threads", "architecture")}
                       for p in pools]
    report["blas_arch"] = "; ".join(f"{p['internal_api']} {p.get('architecture') or '?'}" for p in pools
                                    if p.get("user_api") == "blas") or "none"
    return report


_LIMITER = None


def die_with_parent() -> None:
    """In a spawned child: be killed when the parent dies (Linux: prctl PR_SET_PDEATHSIG; elsewhere a
    no-op). A parent killed by a signal (SIGTERM, SIGKILL) runs no cleanup, so ``daemon=True`` never
    stops its child, and an orphaned benchmark child goes on loading a core under every later
    measurement -- it did here: one left by a killed ``deepprop report`` halved the next run's 2-core
    limits. Exits at once if the parent is already gone (it died before the prctl)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):  # no prctl: the child lives on as before
        return
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:
        os._exit(1)


def child_main(backend, cases, threads, repeat, min_time, out_queue, alloc="inside"):
    """Entry point of a backend's spawned child: allocator mode, pin threads, then run every case."""
    die_with_parent()
    try:
        alloc_applied = set_alloc(alloc)
        env_report = pin_threads(threads, backend)
        env_report["alloc"] = alloc_applied
        out_queue.put(("env", env_report))
        for i, (name, dtype, n) in enumerate(cases):
            out_queue.put(("start", i))
            try:
                row = run_case(name, backend, dtype, n, repeat, min_time)
            except Exception as exc:
                row = {"kernel": name, "backend": backend, "dtype": dtype, "size": n,
                       "error": f"{type(exc).__name__}: {exc}",
                       "traceback": traceback.format_exc(limit=6)}
            row["blas_arch"] = env_report["blas_arch"]
            row["blas_coretype"] = env_report["env"].get("OPENBLAS_CORETYPE") or "auto"
            row["alloc"] = alloc_applied
            out_queue.put(("row", row))
        out_queue.put(("done", None))
    except BaseException as exc:  # report, then die
        out_queue.put(("fatal", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=6)}"))
        raise


# ---- the parent ---------------------------------------------------------------------------------------------

@dataclass
class Plan:
    kernels: list
    backends: list
    dtypes: list
    sizes: dict                     # kernel -> sizes
    threads: int
    repeat: int = 5
    min_time: float = 0.2
    blas_coretype: str = "env"
    alloc: str = "inside"
    skipped: dict = field(default_factory=dict)  # backend -> why it is not run


def available_backends() -> dict[str, str | None]:
    """numpy, numba, c (kernels.backends()) and torch: None when available, else why not."""
    import importlib.util

    from . import backends

    out = dict(backends())
    out["torch"] = None if importlib.util.find_spec("torch") is not None else \
        "torch is not installed (optional peer: pip install 'deepprop[torch]')"
    return out


def default_threads() -> int:
    from .machine import usable_cores

    return usable_cores()


def make_plan(kernels=None, backends=None, dtypes=None, sizes=None, threads=None, repeat=5, min_time=0.2,
              blas_coretype="env", alloc="inside") -> Plan:
    """Validate a request (BenchError with a clear message) and resolve its defaults."""
    from . import REGISTRY, torch_peer

    names = list(kernels) if kernels else list(REGISTRY)
    unknown = [k for k in names if k not in REGISTRY]
    if unknown:
        raise BenchError(f"unknown kernel(s) {', '.join(unknown)}; `deepprop list` shows them")
    avail = available_backends()
    skipped = {}
    if backends:
        bad = [b for b in backends if b not in ALL_BACKENDS]
        if bad:
            raise BenchError(f"unknown backend(s) {', '.join(bad)}; expected some of {', '.join(ALL_BACKENDS)}")
        missing = [f"{b} ({avail[b]})" for b in backends if avail[b] is not None]
        if missing:
            raise BenchError(f"backend unavailable: {'; '.join(missing)}")
        chosen = list(dict.fromkeys(backends))
    else:
        chosen = [b for b in ALL_BACKENDS if avail[b] is None]
        skipped = {b: why for b, why in avail.items() if why is not None}
    dtypes = list(dtypes or DTYPES)
    for d in dtypes:
        if d not in DTYPES:
            raise BenchError(f"unknown dtype {d!r}; expected float32 or float64")
    threads = default_threads() if threads is None else int(threads)
    if threads < 1:
        raise BenchError(f"--threads must be >= 1, got {threads}")
    if repeat < 1 or min_time < 0:
        raise BenchError("--repeat must be >= 1 and --min-time >= 0")
    if alloc not in ALLOC_MODES:
        raise BenchError(f"--alloc must be one of {', '.join(ALLOC_MODES)}, got {alloc!r}")
    per_kernel = {k: tuple(sizes) if sizes else workload(k).sizes for k in names}
    if "torch" in chosen and not any(torch_peer.has_peer(k) for k in names):
        skipped["torch"] = "no torch counterpart for the kernel(s) asked"
    return Plan(names, chosen, dtypes, per_kernel, threads, repeat, min_time, blas_coretype, alloc, skipped)


def plan_cases(plan: Plan, backend: str) -> list:
    from . import torch_peer

    cases = []
    for name in plan.kernels:
        if backend == "torch" and not torch_peer.has_peer(name):
            continue
        for dtype in plan.dtypes:
            for n in plan.sizes[name]:
                cases.append((name, dtype, n))
    return cases


def child_messages(proc, q, poll=0.5):
    """The (kind, payload) messages a spawned child puts on q, until it sends "done" or "fatal" (both
    yielded) or dies with nothing left on the queue (then the messages just stop)."""
    while True:
        try:
            kind, payload = q.get(timeout=poll)
        except queue_mod.Empty:
            if not proc.is_alive():
                return
            continue
        yield kind, payload
        if kind in ("done", "fatal"):
            return


def _run_backend(plan: Plan, backend: str, cases: list, bar, env_reports: dict) -> list:
    """Run `cases` in spawned children of `backend` (a new child resumes after a crash)."""
    ctx = multiprocessing.get_context("spawn")
    rows: list = []
    todo = list(cases)
    while todo:
        q = ctx.Queue()
        proc = ctx.Process(target=child_main, name=f"deepprop-bench-{backend}",
                           args=(backend, todo, plan.threads, plan.repeat, plan.min_time, q, plan.alloc),
                           daemon=True)
        with _environment(child_environment(plan.threads, plan.blas_coretype)):
            proc.start()
        current, done, received, kind, fatal = None, False, 0, None, ""
        try:
            for kind, payload in child_messages(proc, q):
                if kind == "env":
                    env_reports[backend] = payload
                elif kind == "start":
                    current = payload
                    if bar is not None:
                        name, dtype, n = todo[payload]
                        bar.set_postfix_str(f"{backend} {name} {dtype} n={n}", refresh=True)
                elif kind == "row":
                    rows.append(payload)
                    current, received = None, received + 1
                    if bar is not None:
                        bar.update(1)
                elif kind == "fatal":
                    fatal = payload
                elif kind == "done":
                    done = True
        except BaseException:
            proc.terminate()
            proc.join(5)
            raise
        proc.join(30)
        if proc.is_alive():
            proc.terminate()
            proc.join(5)
        if done:
            break
        # the case running when the child died gets an error row; the rest run in a new child
        idx = current if current is not None else received
        if idx >= len(todo):
            break
        why = (f"the {backend} child failed: {fatal.splitlines()[0]}" if kind == "fatal" else
               f"the {backend} child died (exit code {proc.exitcode}) while running this case")
        name, dtype, n = todo[idx]
        rows.append({"kernel": name, "backend": backend, "dtype": dtype, "size": n, "error": why})
        if bar is not None:
            bar.update(1)
        if kind == "fatal" and current is None:  # failed before any case: the others would too
            for name, dtype, n in todo[idx + 1:]:
                rows.append({"kernel": name, "backend": backend, "dtype": dtype, "size": n, "error": why})
            break
        todo = todo[idx + 1:]
    return [r for r in rows if r.get("kernel") is not None]


def derive(rows: list, limits: dict | None, threads: int) -> list:
    """Fill gflops, gbps, speed-ups, pct_of_limit and limit; order every row by ALL_COLUMNS."""
    from .machine import limit_for

    medians = {}
    for r in rows:
        if r.get("median_s"):
            medians[(r["kernel"], r["dtype"], r["size"], r["backend"])] = r["median_s"]
    out = []
    for r in rows:
        r = dict(r)
        r.setdefault("threads", threads)
        med = r.get("median_s")
        if med:
            if r.get("flops"):
                r["gflops"] = r["flops"] / med / 1e9
            if r.get("bytes"):
                r["gbps"] = r["bytes"] / med / 1e9
            for ref in ("numpy", "torch"):
                base = medians.get((r["kernel"], r["dtype"], r["size"], ref))
                if base:
                    r[f"speedup_vs_{ref}"] = base / med
            if limits is not None:
                if r.get("bound") == "compute" and r.get("gflops"):
                    value, _, desc = limit_for(limits, "compute", r["dtype"], threads)
                    r["pct_of_limit"] = 100.0 * r["gflops"] / value
                    r["limit"] = desc
                elif r.get("bound") == "memory" and r.get("gbps"):
                    value, _, desc = limit_for(limits, "memory", r["dtype"], threads, r["bytes"])
                    r["pct_of_limit"] = 100.0 * r["gbps"] / value
                    r["limit"] = desc
        out.append({c: r.get(c) for c in ALL_COLUMNS} | ({"traceback": r["traceback"]} if "traceback" in r else {}))
    return out


def run(plan: Plan, limits: dict | None = None, progress: bool = True):
    """Run a plan: every backend in its own spawned child. Returns (rows, env_reports)."""
    from tqdm import tqdm

    per_backend = {b: plan_cases(plan, b) for b in plan.backends}
    total = sum(map(len, per_backend.values()))
    bar = tqdm(total=total, desc="bench", unit="case", file=sys.stderr, disable=None if progress else True,
               dynamic_ncols=True, leave=False)
    rows: list = []
    env_reports: dict = {}
    try:
        for backend, cases in per_backend.items():
            if cases:
                rows += _run_backend(plan, backend, cases, bar, env_reports)
    finally:
        bar.close()
    order = {b: i for i, b in enumerate(ALL_BACKENDS)}
    korder = {k: i for i, k in enumerate(plan.kernels)}
    rows.sort(key=lambda r: (korder.get(r["kernel"], 0), r["dtype"], r["size"], order.get(r["backend"], 9)))
    return derive(rows, limits, plan.threads), env_reports


# ---- output --------------------------------------------------------------------------------------------------

def _fmt(value, col) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if col in ("min_s", "median_s", "iqr_s"):
        return f"{value:.4g}"
    if col in ("gflops", "gbps", "pct_of_limit"):
        return f"{value:.3g}" if value < 100 else f"{value:.0f}"
    if col in ("speedup_vs_numpy", "speedup_vs_torch"):
        return f"{value:.3g}"
    if col == "flops":
        return f"{value:.6g}"
    if col == "faults_per_call":
        return f"{value:.3g}"
    return str(value)


def _human_time(s) -> str:
    if s is None:
        return ""
    for unit, f in (("s", 1.0), ("ms", 1e3), ("us", 1e6)):
        if s * f >= 1:
            return f"{s * f:.3g} {unit}"
    return f"{s * 1e9:.3g} ns"


def to_csv(rows, columns=ALL_COLUMNS) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([_fmt(r.get(c), c) for c in columns])
    return buf.getvalue()


def to_json(rows, context: dict | None = None) -> str:
    def clean(v):
        return None if isinstance(v, float) and not math.isfinite(v) else v
    return json.dumps({"context": context or {}, "rows": [{k: clean(v) for k, v in r.items() if k != "traceback"}
                                                         for r in rows]}, indent=1)


TABLE_COLUMNS = [("kernel", "kernel"), ("backend", "backend"), ("dtype", "dtype"), ("shape", "shape"),
                 ("threads", "thr"), ("median_s", "median"), ("iqr_s", "iqr"), ("gflops", "GFLOP/s"),
                 ("gbps", "GB/s"), ("speedup_vs_numpy", "x numpy"), ("speedup_vs_torch", "x torch"),
                 ("pct_of_limit", "% limit")]


def _cell(r, col) -> str:
    v = r.get(col)
    if col in ("median_s", "iqr_s", "min_s"):
        return _human_time(v)
    if col in ("speedup_vs_numpy", "speedup_vs_torch") and v is not None:
        return f"{v:.2f}"
    if col == "backend" and r.get("error"):
        return f"{v} (!)"
    return _fmt(v, col)


def to_table(rows, markdown=False) -> str:
    heads = [h for _, h in TABLE_COLUMNS]
    body = [[_cell(r, c) for c, _ in TABLE_COLUMNS] for r in rows]
    if markdown:
        align = "|".join("---" if i < 4 else "---:" for i in range(len(heads)))
        lines = ["| " + " | ".join(heads) + " |", f"|{align}|"]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in b) + " |" for b in body]
    else:
        widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(heads)]
        right = {i for i in range(len(heads)) if i >= 4}

        def line(cells):
            return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                             for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
        lines = [line(heads), line(["-" * w for w in widths])] + [line(b) for b in body]
    errs = [r for r in rows if r.get("error")]
    if errs:
        lines.append("")
        lines += [f"(!) {r['kernel']} {r['backend']} {r['dtype']} n={r['size']}: {r['error']}" for r in errs]
    return "\n".join(lines)


def summary(rows, plan: Plan, env_reports: dict, limits: dict | None) -> str:
    """Speed-up over NumPy (and % of limit) per kernel, dtype and size, one column per backend."""
    backends = [b for b in ALL_BACKENDS if any(r["backend"] == b for r in rows)]
    keys = list(dict.fromkeys((r["kernel"], r["dtype"], r["size"]) for r in rows))
    by = {(r["kernel"], r["dtype"], r["size"], r["backend"]): r for r in rows}
    head = ["kernel", "dtype", "n"] + backends + ["fastest"]
    body = []
    for k in keys:
        cells = [k[0], k[1], str(k[2])]
        best, best_t = "", math.inf
        for b in backends:
            r = by.get((*k, b))
            if r is None:
                cells.append("")
            elif r.get("error"):
                cells.append("error")
            else:
                s = r.get("speedup_vs_numpy")
                pct = r.get("pct_of_limit")
                cells.append((f"{s:.2f}x" if s is not None else _human_time(r["median_s"]))
                             + (f" ({pct:.0f}%)" if pct is not None else ""))
                if r["median_s"] < best_t:
                    best, best_t = b, r["median_s"]
        cells.append(best)
        body.append(cells)
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    lines = ["summary: speed-up over numpy (% of the machine's limit), median times; "
             f"threads={plan.threads}"]
    lines.append("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)) for b in body]
    for b, why in plan.skipped.items():
        lines.append(f"not run: {b}: {why}")
    for b, rep in env_reports.items():
        extra = "".join(f", {k}={rep[k]}" for k in ("numba_threads", "torch_threads") if k in rep)
        lines.append(f"{b} child: BLAS {rep['blas_arch']}, OPENBLAS_CORETYPE="
                     f"{rep['env'].get('OPENBLAS_CORETYPE') or 'unset (auto-detected)'}{extra}")
    lines.append({"inside": "output allocation: inside the timing (--alloc outside reuses warm output memory)",
                  "outside": "output allocation: outside the timing (warm memory reused; the allocator call "
                             "remains)"}[plan.alloc] + "; faults_per_call in the rows shows the page faults")
    if limits is None:
        lines.append("pct_of_limit: blank (machine limits not available)")
    else:
        lines.append(f"limits: {limits.get('source', '')} (deepprop info shows them)")
    return "\n".join(lines)


def context(plan: Plan, env_reports: dict, limits: dict | None, command: str) -> dict:
    """What a result file is stamped with (kernels.report renders it)."""
    from . import machine

    c = machine.cpu()
    try:
        load = round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        load = None
    return {"command": command, "commit": machine.commit(), "cpu": c["model"], "cores": c["usable_cores"],
            "load_average_1min": load,
            "threads": plan.threads, "blas_coretype": plan.blas_coretype, "alloc": plan.alloc,
            "children": env_reports,
            "limits": limits, "software": machine.software(threading_layer=False),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


# ---- command line ---------------------------------------------------------------------------------------------

def _csv_list(text):
    return [t.strip() for t in text.split(",") if t.strip()]


EPILOG = """\
examples:
  deepprop bench --kernel batchnorm_forward --format csv
  deepprop bench --kernel linear_forward --kernel qr --dtype float32 --threads 1
  deepprop bench --kernel relu_forward --sizes 256,16384 --backends numpy,c --format markdown --out relu.md
  deepprop bench --blas-coretype auto --kernel linear_forward      NumPy on OpenBLAS's own kernels
  deepprop bench --workloads                                        what each kernel is timed on
  deepprop bench --kernel relu_forward --sizes 16384 --alloc outside  output allocation outside the timing

Output allocation is inside the timing for every backend alike (our kernels allocate their outputs,
as do the torch ops); --alloc outside makes every child reuse warm output memory instead, so page
faults and zeroing of new outputs leave the timing (faults_per_call shows it). Each backend runs in its own spawned
subprocess with the --threads setting applied before NumPy, Numba or torch load. A progress bar runs
on stderr; a summary table ends the run (stderr, or stdout with --out). `deepprop bench --help`
shows how figures are made (`python -c "import kernels.bench; help(kernels.bench)"` has more).
"""


def add_arguments(p) -> None:
    p.add_argument("--kernel", action="append", metavar="NAME",
                   help="kernel to time (repeatable, or comma-separated; default: every kernel)")
    p.add_argument("--sizes", type=parse_sizes, metavar="N,N,...",
                   help="sizes n for every kernel asked (default: each kernel's own, from cache-resident to "
                        "memory-bound; --workloads lists them and what n means)")
    p.add_argument("--dtype", type=_csv_list, default=list(DTYPES), metavar="float32,float64",
                   help="dtype(s) (default: both)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="threads for BLAS, Numba, OpenMP (and so the C kernels, were they threaded) and torch, "
                        "set in each backend's child before it loads them (default: the usable cores, "
                        f"{default_threads()} here)")
    p.add_argument("--backends", type=_csv_list, default=None, metavar="B,B,...",
                   help="numpy, numba, c, torch (default: every available one; torch joins when importable)")
    p.add_argument("--repeat", type=int, default=5, help="at least this many timed samples (default: 5)")
    p.add_argument("--min-time", type=float, default=0.2, metavar="SECONDS",
                   help="and at least this much timed time per case (default: 0.2)")
    p.add_argument("--blas-coretype", default="env", metavar="env|auto|NAME",
                   help="OPENBLAS_CORETYPE in the children: env = as in this environment (default), auto = "
                        "removed (OpenBLAS's own detection: the fair NumPy baseline), NAME = set to NAME")
    p.add_argument("--alloc", choices=ALLOC_MODES, default="inside",
                   help="output allocation inside the timing (default: the allocator as any program has it, "
                        "fresh pages for large outputs) or outside (every child reuses warm output memory: page "
                        "faults and zeroing leave the timing); rows record faults_per_call either way")
    p.add_argument("--format", choices=("table", "csv", "json", "markdown"), default="table")
    p.add_argument("--out", metavar="FILE", help="write the rows to FILE (the summary then goes to stdout)")
    p.add_argument("--no-limits", action="store_true",
                   help="do not measure the machine's limits if they are not cached (pct_of_limit blank)")
    p.add_argument("--workloads", action="store_true",
                   help="print what each kernel is timed on and how flops and bytes are counted, and exit")
    p.add_argument("--targets", action="store_true",
                   help="instead of the kernel table, measure and grade the speed targets of kernels.targets "
                        "(issue 5: each kernel against NumPy/SciPy as a user writes it, the reference and torch, "
                        "at the issue's shapes; %% of bandwidth; 2-thread scaling; the harness against torch "
                        "autograd), each row beside its bound: the best its figure could be at the machine's "
                        "measured limits (a target above it is out of reach here); --repeat/--min-time/--format/"
                        "--out apply")
    p.add_argument("--harness", metavar="DEPTHS", type=parse_sizes, nargs="?", const=(100, 1000, 10_000),
                   help="instead of kernels, time one forward+backward of the depth harness (width 256, batch 128, "
                        "float32, He init, ReLU; --backends picks one, default c) and its peak memory, each depth "
                        "in a fresh process; DEPTHS defaults to 100,1000,10000")


def _harness_main(args) -> int:
    """`deepprop bench --harness`: the depth harness's time and peak memory per depth."""
    from . import depth

    backend = (args.backends or ["c"])[0]
    dtype = args.dtype[0] if args.dtype else "float32"
    threads = args.threads or default_threads()
    os.environ.update({k: str(threads) for k in THREAD_ENV})  # the children inherit the pinning
    df = depth.bench(tuple(args.harness), backend=backend, dtype=dtype)
    df.insert(len(df.columns) - 1, "threads", threads)
    if args.format == "markdown":
        cols = list(df.columns)
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row) + " |"
                  for row in df.itertuples(index=False)]
        text = "\n".join(lines)
    else:
        text = {"csv": df.to_csv(index=False), "json": df.to_json(orient="records", indent=1),
                "table": df.to_string(index=False)}[args.format]
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    print(text)
    return 0


def main(args) -> int:
    """`deepprop bench` (wired in kernels/cli.py)."""
    from . import machine

    kernels_asked = [k for arg in (args.kernel or []) for k in _csv_list(arg)]
    if args.harness:
        return _harness_main(args)
    if args.targets:
        from . import targets

        return targets.main(args)
    if args.workloads:
        print(workloads_table(kernels_asked or None))
        return 0
    try:
        plan = make_plan(kernels_asked or None, args.backends, args.dtype, args.sizes, args.threads, args.repeat,
                         args.min_time, args.blas_coretype, args.alloc)
    except BenchError as exc:
        print(f"deepprop bench: {exc}", file=sys.stderr)
        return 2
    note = machine.coretype_note()
    if note and plan.blas_coretype == "env":
        print(f"deepprop bench: note: {note}", file=sys.stderr)
    elif note:
        print(f"deepprop bench: OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']} is set here; the children "
              f"run with --blas-coretype {plan.blas_coretype}", file=sys.stderr)
    busy = machine.load_note()
    if busy:
        print(f"deepprop bench: note: {busy}", file=sys.stderr)
    limits = machine.limits(measure_if_missing=not args.no_limits,
                            progress=lambda m: print(f"\rmeasuring the machine's limits once (cached): {m:<40}",
                                                     end="", file=sys.stderr, flush=True))
    rows, env_reports = run(plan, limits)
    command = getattr(args, "command_line", "deepprop bench")
    if args.format == "csv":
        text = to_csv(rows)
    elif args.format == "json":
        text = to_json(rows, context(plan, env_reports, limits, command))
    else:
        text = to_table(rows, markdown=args.format == "markdown")
    summ = summary(rows, plan, env_reports, limits)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text if text.endswith("\n") else text + "\n")
        print(summ)
        print(f"rows written to {args.out}")
    else:
        print(text, end="" if text.endswith("\n") else "\n")
        print(summ, file=sys.stderr)
    return 1 if any(r.get("error") for r in rows) else 0
