"""``deepprop bench --targets``: the speed targets of issue 5, measured and graded in one run.

Each target compares two measurements of one workload (or one measurement with a machine limit):

    ratio    median time of the baseline / median time of ours          (>= required)
    pct_bw   bytes / median time, as % of the measured DRAM bandwidth   (>= required %)
             for the threads used (kernels.machine limits: best of copy and triad, counted as STREAM
             counts them, without the write-allocate read of the output; a kernel that rewrites its
             input in place (clip) moves no such extra line and can pass 100%). The bytes are those of the
             passes the kernel must make, as the issue counts clip's (norm, then scale: 3 passes): batch
             norm's exact statistics make 8 (csrc/batchnorm.c, _bn_bytes); the note quotes the figure with
             every array counted once beside it
    rate     elements / median time                                     (>= required per second)
    scaling  median time at 1 thread / median time at 2 threads         (>= required)

Every graded row also carries its bound: the best its figure could be at the measured limits (floor_s, a
roofline: our call at its flop count over the FMA peak, or its arrays each moved once over the bandwidth of
the level they fit in; the baseline, or our 1-thread time, as measured; a bandwidth share's passes over
that floor, so above 100% where a kernel must make more passes than it has arrays). Where
the bound is below the requirement the note says the target is out of reach on this machine. The flops
counted are the GEMMs' (and QR's) only, so the bound is optimistic, never pessimistic.

The sides a workload is measured on:

    c, numba   our backends (kernels.REGISTRY)
    reference  our NumPy reference (float64 inside: the spec, the "NumPy reference" of the issue)
    native     NumPy/SciPy as a user writes it, in the input dtype, on OpenBLAS/LAPACK with its own
               auto-detected kernels (OPENBLAS_CORETYPE removed in every child): the issue's "NumPy"
    torch      PyTorch's own ops (kernels.torch_peer), when torch is importable

How a figure is made: every (side, threads) group runs in its own spawned child with the threads pinned
as `deepprop bench` pins them (kernels.bench.pin_threads), so no two thread pools share the cores. Inputs
are built outside the timing; the first call is untimed (JIT compile, pool start-up); then
kernels.bench.time_call takes samples until there are --repeat of them and --min-time seconds; medians
are compared. Output allocation is inside the timing on every side (`deepprop bench --alloc inside`: what a
user's call costs, fresh pages included) -- except for the bandwidth (pct_bw) and rate targets, which are
measured in children with `--alloc outside` (freed outputs reused warm, as STREAM's arrays are: the limit
they are graded against was measured that way; the kernel's own traffic is what is graded), and whose note
gives the inside figure too. Before timing, the output of c and
numba is compared with the reference's on the same inputs (a loose relative check, 1e-3 float32 /
1e-9 float64 of the largest magnitude: it catches a wrong call, the tight checks are kernels.verify's);
a side that fails gets no time. Baselines use their own fastest idiom where one is obvious (in-place
bias add and activation for NumPy's linear layer), so a target is not met against a strawman.

Steal time: on a VM the hypervisor can take a core away mid-measurement. Each timing records the share of
the CPU time the machine's cores asked for while it ran that the host took instead (kernels.machine.steal_pct,
from /proc/stat; its ticks pooled over the rounds as the samples are: targets.csv's steal_pct), and a graded
row whose figure, or its baseline, was timed with STEAL_NOTE_PCT or more stolen says so in its note. It is a
sign, not a correction: nothing is rescaled.
"""

from __future__ import annotations

import copy
import multiprocessing
import sys
import time
import traceback
from dataclasses import dataclass

SIDES = ("c", "numba", "reference", "native", "torch")
WIDTH = 1024


@dataclass
class Case:
    doc: str                      # what is timed, for the table
    make: object                  # make(rng) -> kwargs (the dtype is part of the case)
    build: object                 # build(side, kwargs) -> call()
    dtype: str = "float32"
    bytes: object = None          # bytes(kwargs) -> bytes one call must move (the passes it must make)
    bytes_once: object = None     # bytes(kwargs) counting each array once, quoted beside a passes count
    elements: object = None       # elements(kwargs) -> elements processed by one call
    flops: object = None          # flops(kwargs) -> the floating-point operations one call must do
    check: bool = True            # compare c/numba with the reference before timing
    restore: bool = False         # the call writes its inputs (clip): put them back before every call


# ---- workloads ---------------------------------------------------------------------------------------------

def _normal(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def _registry(name, side):
    from . import REGISTRY

    return REGISTRY[name]["numpy" if side == "reference" else side]


def _torch_peer(name, kw):
    from . import torch_peer

    return torch_peer.make(name, kw).call


def _linear_flops(kw, backward=False):
    from .bench import _linear_flops as count

    return count(kw, backward)


def _qr_flops(kw):
    from .bench import _qr_flops as count

    a = kw["a"]
    return count(*a.shape[-2:]) * (a.size // (a.shape[-1] * a.shape[-2]))


def _linear_make(n, dtype, backward=False):
    def make(rng):
        kw = {"x": _normal(rng, (n, WIDTH), dtype), "W": _normal(rng, (WIDTH, WIDTH), dtype, 1 / 32)}
        if backward:
            kw["dy"] = _normal(rng, (n, WIDTH), dtype)
        else:
            kw["b"] = _normal(rng, (WIDTH,), dtype)
        return kw
    return make


def _linear_forward_build(activation):
    def build(side, kw):
        import numpy as np

        x, W, b = kw["x"], kw["W"], kw["b"]
        if side == "native":  # NumPy's fastest idiom: one GEMM, then the bias and activation in place
            def call():
                z = x @ W
                z += b
                if activation == "relu":
                    np.maximum(z, 0, out=z)
                return z
            return call
        if side == "torch":
            return _torch_peer("linear_forward", {**kw, "activation": activation})
        fn = _registry("linear_forward", side)
        return lambda: fn(x, W, b, activation=activation)
    return build


def _linear_backward_build(side, kw):
    dy, x, W = kw["dy"], kw["x"], kw["W"]
    if side == "native":
        def call():
            return dy @ W.T, x.T @ dy, dy.sum(axis=0)
        return call
    if side == "torch":
        return _torch_peer("linear_backward", kw)
    fn = _registry("linear_backward", side)
    return lambda: fn(dy, x, W)


def _bn_make(n, dtype):
    def make(rng):
        import numpy as np

        return {"x": _normal(rng, (n, WIDTH), dtype), "dy": _normal(rng, (n, WIDTH), dtype),
                "gamma": _normal(rng, (WIDTH,), dtype), "beta": _normal(rng, (WIDTH,), dtype),
                "running_mean": np.zeros(WIDTH, dtype), "running_var": np.ones(WIDTH, dtype)}
    return make


def _bn_build(side, kw):
    x, dy, g, b, rm, rv = (kw[k] for k in ("x", "dy", "gamma", "beta", "running_mean", "running_var"))
    if side == "torch":
        import torch

        tx, tdy, tg, tb, trm, trv = (torch.from_numpy(a) for a in (x, dy, g, b, rm, rv))
        aten = torch.ops.aten

        def call():
            with torch.no_grad():
                y, mean, rstd = aten.native_batch_norm(tx, tg, tb, trm, trv, True, 0.1, 1e-5)
                return (y, *aten.native_batch_norm_backward(tdy, tx, tg, trm, trv, mean, rstd, True, 1e-5,
                                                            [True, True, True]))
        return call
    if side == "native":
        raise NotImplementedError
    fwd, bwd = _registry("batchnorm_forward", side), _registry("batchnorm_backward", side)

    def call():
        y, mean, rstd = fwd(x, g, b, rm, rv)
        return (y, *bwd(dy, x, g, mean, rstd))
    return call


def _bn_bytes(kw):
    # the passes an exact batch norm must make over arrays larger than the caches: the forward reads x for
    # the statistics, then again for y (no y before every row is summed), and writes y; the backward reads dy
    # and x for its two sums, then both again for dx (no dx before both sums), and writes dx: 8 passes of
    # (N, C), plus the (C,) vectors. Fewer needs x to stay cached between passes, column strips (tried:
    # slower here, csrc/batchnorm.c); _bn_bytes_once counts every array once, the floor such blocking aims at.
    nc, c = kw["x"].size, kw["x"].shape[1]
    return kw["x"].itemsize * (3 * nc + 9 * c + 5 * nc + 6 * c)


def _bn_bytes_once(kw):
    # forward: x read, y written; backward: dy, x read, dx written (kernels.bench's rule), plus the vectors
    nc, c = kw["x"].size, kw["x"].shape[1]
    return kw["x"].itemsize * (2 * nc + 9 * c + 3 * nc + 6 * c)


def _dropout_make(rows, dtype):
    return lambda rng: {"x": _normal(rng, (rows, WIDTH), dtype), "p": 0.5, "seed": 1234}


def _dropout_build(side, kw):
    import numpy as np

    x, p, seed = kw["x"], kw["p"], kw["seed"]
    if side == "native":  # Generator.random < p, as a NumPy user writes dropout (the Generator made outside)
        rng = np.random.default_rng(seed)
        scale = x.dtype.type(1 / (1 - p))

        def call():
            keep = rng.random(x.shape, dtype=x.dtype) >= p
            return x * keep * scale, keep
        return call
    if side == "torch":
        return _torch_peer("dropout_forward", kw)
    fn = _registry("dropout_forward", side)
    return lambda: fn(x, p, seed)


def _sign_fix(q, r):
    import numpy as np

    s = np.sign(np.diagonal(r, axis1=-2, axis2=-1))
    s[s == 0] = 1
    return q * s[..., None, :], r * s[..., :, None]


def _qr_build(side, kw):
    a = kw["a"]
    if side == "native":
        import scipy.linalg

        return lambda: _sign_fix(*scipy.linalg.qr(a, mode="economic", check_finite=False))
    if side == "torch":
        raise NotImplementedError
    fn = _registry("qr", side)
    return lambda: fn(a)


def _qr_batch_build(side, kw):
    a = kw["a"]
    if side == "native":
        import numpy as np

        return lambda: _sign_fix(*np.linalg.qr(a))
    if side == "torch":
        raise NotImplementedError
    fn = _registry("qr", side)
    return lambda: fn(a)  # qr takes stacks (..., m, n) like numpy.linalg.qr: one call


def _clip_make(dtype):
    # 100 arrays of (500, 1000): 50M values; normal entries give a total norm ~7000 >> max_norm, so a call
    # makes both passes (norm, then scale) on every side. The gradients are restored before every timed
    # call (Case.restore): after one clip their norm is max_norm, and a kernel that skips the scale pass
    # when nothing needs clipping (ours) would then be timed on one pass while torch always makes two.
    return lambda rng: {"grads": [_normal(rng, (500, 1000), dtype) for _ in range(100)], "max_norm": 1.0}


def _clip_build(side, kw):
    grads, max_norm = kw["grads"], kw["max_norm"]
    if side == "torch":
        return _torch_peer("clip_grad_norm", kw)
    if side == "native":
        raise NotImplementedError
    fn = _registry("clip_grad_norm", side)
    return lambda: fn(grads, max_norm)


def _clip_bytes(kw):
    n = sum(g.nbytes for g in kw["grads"])
    return 3 * n  # the norm pass reads every value; the scale pass reads and writes every value


def _clip_bytes_once(kw):
    return 2 * sum(g.nbytes for g in kw["grads"])  # every value read once and written once


HARNESS = {"depth": 1000, "width": 256, "batch": 128, "activation": "relu", "init": "he_normal"}


def _harness_flops(kw):
    # its three GEMMs per layer (forward, dx, dW) only: the draw, activations and statistics are not counted,
    # so the bound made from this count is an optimistic one
    return 3 * 2.0 * HARNESS["depth"] * HARNESS["batch"] * HARNESS["width"] ** 2


def _harness_build(side, kw):
    if side == "torch":
        from . import torch_peer

        return lambda: torch_peer.depth_net(**HARNESS, dtype=kw["dtype"], seed=0)
    if side not in ("c", "numba"):
        raise NotImplementedError
    from . import depth

    depth.run_config(depth.Config(**{**HARNESS, "depth": 2, "width": 8, "batch": 4}, backend=side,
                                  dtype=kw["dtype"]), (0,), stats=False)  # compile/load: untimed
    cfg = depth.Config(**HARNESS, backend=side, dtype=kw["dtype"])
    return lambda: depth.run_config(cfg, (0,), stats=False)


def _cases() -> dict[str, Case]:
    cases = {}
    for dt in ("float32", "float64"):
        for n in (1024, 256):
            cases[f"linear_forward {n}x1024x1024 {dt}"] = Case(
                f"linear_forward x ({n}, 1024) @ W (1024, 1024) + b, identity; native: z = x @ W; z += b",
                _linear_make(n, dt), _linear_forward_build("identity"), dt, flops=_linear_flops)
            cases[f"linear_backward {n}x1024x1024 {dt}"] = Case(
                f"linear_backward dy, x ({n}, 1024), W (1024, 1024), identity; native: dy @ W.T, x.T @ dy, "
                "dy.sum(0)", _linear_make(n, dt, backward=True), _linear_backward_build, dt,
                flops=lambda kw: _linear_flops(kw, backward=True))
    for n, w in ((128, 256), (256, 1024)):
        cases[f"linear+bias+relu {n}x{w}x{w} float32"] = Case(
            f"linear_forward x ({n}, {w}) @ W ({w}, {w}) + b, relu fused; native: z = x @ W; z += b; "
            "np.maximum(z, 0, out=z)",
            lambda rng, n=n, w=w: {"x": _normal(rng, (n, w), "float32"),
                                   "W": _normal(rng, (w, w), "float32", w ** -0.5),
                                   "b": _normal(rng, (w,), "float32")},
            _linear_forward_build("relu"), flops=_linear_flops)
    for n in (1024, 16384):
        cases[f"batchnorm fwd+bwd {n}x1024 float32"] = Case(
            f"batchnorm_forward then batchnorm_backward, x ({n}, 1024); torch: aten native_batch_norm + "
            "native_batch_norm_backward", _bn_make(n, "float32"), _bn_build, bytes=_bn_bytes,
            bytes_once=_bn_bytes_once)
    cases["dropout 16M float32"] = Case(
        "dropout_forward (mask + apply), x (16384, 1024), p = 0.5; native: rng.random(shape, float32) >= p, "
        "x * keep * scale; torch: F.dropout", _dropout_make(16384, "float32"), _dropout_build,
        bytes=lambda kw: 2 * kw["x"].nbytes + kw["x"].size // 8, elements=lambda kw: kw["x"].size, check=True)
    for dt in ("float32", "float64"):
        cases[f"qr 1024x1024 {dt}"] = Case(
            "qr (thin, sign-fixed) of a (1024, 1024); native: scipy.linalg.qr(mode='economic') + sign fix",
            lambda rng, dt=dt: {"a": _normal(rng, (1024, 1024), dt)}, _qr_build, dt, flops=_qr_flops)
    cases["qr 1000 x 64x64 float32"] = Case(
        "qr of a (1000, 64, 64) stack in one call; native: np.linalg.qr of the stack + sign fix",
        lambda rng: {"a": _normal(rng, (1000, 64, 64), "float32")}, _qr_batch_build, flops=_qr_flops)
    cases["clip_grad_norm 100 arrays 50M float32"] = Case(
        "clip_grad_norm over 100 arrays (500, 1000) = 50M values, max_norm 1 (always clips); torch: "
        "clip_grad_norm_(foreach=True); the gradients restored before every call, outside the timing",
        _clip_make("float32"), _clip_build, bytes=_clip_bytes, bytes_once=_clip_bytes_once,
        elements=lambda kw: sum(g.size for g in kw["grads"]),
        restore=True)
    cases["depth harness 1000x256x128 float32"] = Case(
        "one forward+backward of the depth harness: depth 1000, width 256, batch 128, ReLU, He normal, with the "
        "per-layer statistics; C: its W and z arenas are the spare the previous run of this shape left "
        "(kernels.depth._take_arena, as between the seeds and configurations of `deepprop depth`); torch: the "
        "same net in eager mode with autograd (kernels.torch_peer.depth_net), its tensors allocated as torch does",
        lambda rng: {"dtype": "float32"}, _harness_build, check=False, flops=_harness_flops)
    return cases


CASES = _cases()

#: (target text, kind, case, side, baseline side or None, threads, required)
TARGETS: list[tuple] = []
for _dt in ("float32", "float64"):
    for _n in (1024, 256):
        for _k in ("linear_forward", "linear_backward"):
            _case = f"{_k} {_n}x1024x1024 {_dt}"
            TARGETS += [(f"{_case}: C >= 0.9x NumPy", "ratio", _case, "c", "native", 1, 0.9),
                        (f"{_case}: Numba >= 0.5x NumPy", "ratio", _case, "numba", "native", 1, 0.5),
                        (f"{_case}: C ahead of torch", "ratio", _case, "c", "torch", 1, 1.0),
                        (f"{_case}: Numba ahead of torch", "ratio", _case, "numba", "torch", 1, 1.0)]
for _case in ("linear+bias+relu 128x256x256 float32", "linear+bias+relu 256x1024x1024 float32"):
    TARGETS.append((f"{_case}: C >= 1.2x NumPy's matmul + add + relu", "ratio", _case, "c", "native", 1, 1.2))
for _n in (1024, 16384):
    _case = f"batchnorm fwd+bwd {_n}x1024 float32"
    TARGETS += [(f"{_case}: C >= 4x the NumPy reference", "ratio", _case, "c", "reference", 1, 4.0),
                (f"{_case}: C >= 1.5x torch", "ratio", _case, "c", "torch", 1, 1.5),
                (f"{_case}: Numba >= 3x the NumPy reference", "ratio", _case, "numba", "reference", 1, 3.0)]
TARGETS.append(("batchnorm fwd+bwd 16384x1024 float32: C >= 70% of DRAM bandwidth (8 passes)", "pct_bw",
                "batchnorm fwd+bwd 16384x1024 float32", "c", None, 1, 70.0))
_case = "dropout 16M float32"
TARGETS += [(f"{_case}: C >= 5x NumPy (Generator.random < p)", "ratio", _case, "c", "native", 1, 5.0),
            (f"{_case}: C >= 10x torch", "ratio", _case, "c", "torch", 1, 10.0),
            (f"{_case}: C >= 2.5 G elements/s per core", "rate", _case, "c", None, 1, 2.5e9),
            (f"{_case}: Numba >= 2x NumPy", "ratio", _case, "numba", "native", 1, 2.0)]
TARGETS += [("qr 1024x1024 float32: C >= 0.8x scipy.linalg.qr + sign fix", "ratio", "qr 1024x1024 float32", "c",
             "native", 1, 0.8),
            ("qr 1024x1024 float64: C >= 0.8x scipy.linalg.qr + sign fix", "ratio", "qr 1024x1024 float64", "c",
             "native", 1, 0.8),
            ("qr 1000 x 64x64 float32: C >= 2x NumPy's stacked qr", "ratio", "qr 1000 x 64x64 float32", "c",
             "native", 1, 2.0)]
_case = "clip_grad_norm 100 arrays 50M float32"
TARGETS += [(f"{_case}: C >= 70% of DRAM bandwidth (3 passes)", "pct_bw", _case, "c", None, 1, 70.0),
            (f"{_case}: C >= 1.0x torch clip_grad_norm_(foreach)", "ratio", _case, "c", "torch", 1, 1.0),
            (f"{_case}: C >= 3x NumPy (float64 accumulation: the reference)", "ratio", _case, "c", "reference", 1,
             3.0)]
for _case in ("linear_forward 1024x1024x1024 float32", "linear_backward 1024x1024x1024 float32"):
    for _side in ("c", "numba"):
        TARGETS.append((f"{_case}: {'C' if _side == 'c' else 'Numba'} scales >= 1.7x on 2 threads", "scaling",
                        _case, _side, None, 2, 1.7))
for _case in ("batchnorm fwd+bwd 16384x1024 float32", "dropout 16M float32", "clip_grad_norm 100 arrays 50M float32"):
    _passes = {"batchnorm": " (8 passes)", "clip_grad_norm": " (3 passes)"}.get(_case.split()[0], "")
    TARGETS.append((f"{_case}: C on 2 threads >= 70% of 2-core DRAM bandwidth{_passes}", "pct_bw", _case, "c", None,
                    2, 70.0))
TARGETS.append(("depth harness 1000x256x128 float32: C >= 1.5x torch eager + autograd", "ratio",
                "depth harness 1000x256x128 float32", "c", "torch", 1, 1.5))


def alloc_of(kind: str) -> str:
    """The --alloc mode a target's own measurement is made in (module docstring)."""
    return "outside" if kind in ("pct_bw", "rate") else "inside"


def measurements(targets=None) -> dict[tuple, list[str]]:
    """(side, threads, alloc) -> the cases to measure on it, for the given targets (default: all). A bandwidth
    or rate target is measured outside (graded) and inside (quoted in its note)."""
    need: dict[tuple, list[str]] = {}
    for _, kind, case, side, base, threads, _ in (targets or TARGETS):
        keys = [(side, threads, "inside")] + ([(base, threads, "inside")] if base else [])
        keys += [(side, 1, "inside")] if kind == "scaling" else []
        keys += [(side, threads, "outside")] if alloc_of(kind) == "outside" else []
        for k in keys:
            if case not in need.setdefault(k, []):
                need[k].append(case)
    return need


# ---- the child -------------------------------------------------------------------------------------------

def _flat(result):
    import numpy as np

    if isinstance(result, tuple | list):
        return [a for r in result for a in _flat(r)]
    if hasattr(result, "numpy") and not isinstance(result, np.ndarray):  # a torch tensor
        return [result.numpy()]
    return [np.asarray(result)] if result is not None else []


def _check(case: Case, ref_kw, kw, result) -> str | None:
    """None if our result matches the reference's on ref_kw, a copy of the inputs taken before our call
    (loosely), else why not. Compares the returned arrays and the arguments written in place."""
    import numpy as np

    ref = _flat(case.build("reference", ref_kw)()) + _flat(ref_kw.get("grads"))
    ours = _flat(result) + _flat(kw.get("grads"))
    tol = 1e-3 if case.dtype == "float32" else 1e-9
    if len(ref) != len(ours):
        return f"{len(ours)} outputs, the reference has {len(ref)}"
    for i, (a, b) in enumerate(zip(ours, ref, strict=True)):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if a.shape != b.shape:
            return f"output {i}: shape {a.shape}, the reference's {b.shape}"
        scale = float(np.max(np.abs(b))) if b.size else 0.0
        err = float(np.max(np.abs(a - b))) if b.size else 0.0
        if not err <= tol * max(scale, 1e-30):
            return f"output {i}: max error {err:.3g} > {tol:g} x {scale:.3g}"
    return None


def child_main(side, threads, case_ids, repeat, min_time, out_queue, alloc="inside"):
    """A spawned child: set the --alloc mode, pin threads, then build, check and time each case on `side`."""
    import numpy as np

    from . import bench, machine

    bench.die_with_parent()
    try:
        alloc_done = bench.set_alloc(alloc)
        env = bench.pin_threads(threads, "torch" if side == "torch" else side)
        env["alloc"] = alloc_done
        out_queue.put(("env", env))
        for cid in case_ids:
            case = CASES[cid]
            row = {"case": cid, "side": side, "threads": threads, "alloc": alloc}
            if alloc_done != alloc:
                row["error"] = f"--alloc {alloc}: {alloc_done}"
                out_queue.put(("row", row))
                continue
            try:
                kw = case.make(np.random.default_rng(0))
                if case.bytes:
                    row["bytes"] = case.bytes(kw)
                if case.bytes_once:
                    row["bytes_once"] = case.bytes_once(kw)
                if case.elements:
                    row["elements"] = case.elements(kw)
                if case.flops:
                    row["flops"] = case.flops(kw)
                checking = case.check and side in ("c", "numba")
                ref_kw = copy.deepcopy(kw) if checking else None  # before any in-place write (clip)
                call = case.build(side, kw)
                t0 = time.perf_counter()
                result = call()  # untimed: JIT compile, pools, first-touch
                first = time.perf_counter() - t0
                if checking:
                    why = _check(case, ref_kw, kw, result)
                    if why:
                        raise AssertionError(f"result differs from the reference: {why}")
                del result
                restore = None
                if case.restore:  # in-place kernels: every timed call sees the original inputs
                    originals = case.make(np.random.default_rng(0))  # the same inputs, made afresh

                    def restore(kw=kw, originals=originals):
                        for a, b in zip(kw["grads"], originals["grads"], strict=True):
                            np.copyto(a, b)
                ticks = machine.cpu_ticks()
                samples, number = bench.time_call(call, restore, repeat, min_time, first_s=first)
                row["steal_ticks"] = machine.steal_ticks(ticks, machine.cpu_ticks())  # during the timed calls
                row["min_s"], row["median_s"], row["iqr_s"] = bench.stats(samples)
                row["repeats"] = len(samples) * number
                row["samples"], row["number"] = samples, number
            except NotImplementedError:
                row["error"] = f"no {side} version of this workload"
            except Exception as exc:
                row["error"] = f"{type(exc).__name__}: {exc}"
                row["traceback"] = traceback.format_exc(limit=4)
            out_queue.put(("row", row))
        out_queue.put(("done", None))
    except BaseException as exc:
        out_queue.put(("fatal", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=6)}"))
        raise


# ---- the parent ------------------------------------------------------------------------------------------

def _run_group(side, threads, case_ids, repeat, min_time, bar, envs, alloc="inside") -> list[dict]:
    from . import bench

    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=child_main, args=(side, threads, case_ids, repeat, min_time, q, alloc), daemon=True,
                       name=f"deepprop-targets-{side}-{threads}-{alloc}")
    with bench._environment(bench.child_environment(threads, "auto")):
        proc.start()
    rows, fatal, kind = [], None, None
    try:
        for kind, payload in bench.child_messages(proc, q):
            if kind == "env":
                envs[(side, threads, alloc)] = payload
            elif kind == "row":
                rows.append(payload)
                if bar is not None:
                    bar.update(1)
            elif kind == "fatal":
                fatal = payload.splitlines()[0]
        if kind not in ("done", "fatal"):
            fatal = f"the {side} child died (exit code {proc.exitcode})"
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.terminate()
    done = {r["case"] for r in rows}
    rows += [{"case": c, "side": side, "threads": threads, "alloc": alloc, "error": fatal or "not run"}
             for c in case_ids if c not in done]
    return rows


def available_sides() -> dict[str, str | None]:
    from . import backends, torch_peer

    out = {"reference": None, "native": None, **{b: why for b, why in backends().items() if b in ("c", "numba")}}
    out["torch"] = torch_peer.available()
    return out


#: a graded row's note mentions steal time at or above this share (%), of ours or of its baseline
#: (a quiet stretch of this VM reads 0-3%)
STEAL_NOTE_PCT = 5.0


def grade(rows: list[dict], limits: dict | None, targets=None) -> list[dict]:
    """One graded row per target from the measurements."""
    from .machine import limit_for

    by = {(r["case"], r["side"], r["threads"], r.get("alloc", "inside")): r for r in rows}
    out = []
    for text, kind, case, side, base, threads, req in (targets or TARGETS):
        alloc = alloc_of(kind)
        m = by.get((case, side, threads, alloc), {})
        g = {"target": text, "kind": kind, "required": req, "threads": threads, "ours_s": m.get("median_s"),
             "base_s": None, "measured": None, "met": None, "bound": None, "note": m.get("error") or ""}
        # what ours is compared with: the baseline side, or for a scaling target our own 1-thread run
        b = (by.get((case, side, 1, "inside"), {}) if kind == "scaling"
             else by.get((case, base, threads, "inside"), {}) if base else {})
        t = m.get("median_s")
        if t:
            if kind == "ratio":
                g["base_s"] = b.get("median_s")
                if g["base_s"]:
                    g["measured"] = g["base_s"] / t
                else:
                    g["note"] = f"{base}: {b.get('error', 'not measured')}"
            elif kind == "scaling":
                g["base_s"] = b.get("median_s")
                if g["base_s"]:
                    g["measured"] = g["base_s"] / t
            elif kind == "rate":
                g["measured"] = m["elements"] / t
                g["note"] = "outputs reused warm (--alloc outside)"
                t_in = by.get((case, side, threads, "inside"), {}).get("median_s")
                if t_in:
                    g["note"] += f"; with fresh outputs in the timing: {m['elements'] / t_in / 1e9:.2f} G/s"
            elif kind == "pct_bw" and limits:
                value, _, desc = limit_for(limits, "memory", CASES[case].dtype, threads, m["bytes"])
                g["measured"] = 100.0 * m["bytes"] / t / 1e9 / value
                g["note"] = f"{m['bytes'] / t / 1e9:.1f} GB/s of {desc}"
                if m.get("bytes_once"):
                    g["note"] += (f"; every array counted once: {m['bytes_once'] / t / 1e9:.1f} GB/s = "
                                  f"{100.0 * m['bytes_once'] / t / 1e9 / value:.0f}%")
                g["note"] += "; outputs reused warm (--alloc outside)"
                t_in = by.get((case, side, threads, "inside"), {}).get("median_s")
                if t_in:
                    g["note"] += (f"; with fresh outputs in the timing: {m['bytes'] / t_in / 1e9:.1f} GB/s = "
                                  f"{100.0 * m['bytes'] / t_in / 1e9 / value:.0f}%")
        if t and limits:
            g["bound"] = _bound(kind, m, by.get((case, base, threads, "inside"), {}).get("median_s"),
                                by.get((case, side, 1, "inside"), {}).get("median_s"), CASES[case].dtype,
                                threads, limits)
        steal = max((v for v in (m.get("steal_pct"), b.get("steal_pct")) if v is not None), default=None)
        g["steal_pct"] = steal
        if steal is not None and steal >= STEAL_NOTE_PCT:
            g["note"] = "; ".join(filter(None, [g["note"], f"the host took {steal:.1f}% of the CPU time asked "
                                                "for while this was timed (steal)"]))
        if g["measured"] is not None:
            g["met"] = g["measured"] >= req
            if g["bound"] is not None and g["bound"] < req:
                g["note"] = "; ".join(filter(None, [g["note"], (
                    f"out of reach on this machine: at its measured limits the best possible is "
                    f"{_fmt_value(kind, g['bound'])}")]))
        out.append(g)
    return out


def floor_s(m: dict, dtype: str, threads: int, limits: dict) -> float | None:
    """The least time a call can take at the machine's measured limits (a roofline bound): its flops at
    the FMA peak, or every array it touches moved once (bytes_once, else bytes) at the bandwidth of the
    cache level that traffic fits in, whichever is longer. An optimistic bound: a call cannot beat it,
    and need not reach it. None when the row counts neither."""
    from .machine import limit_for

    t = 0.0
    if m.get("flops"):
        t = max(t, m["flops"] / 1e9 / limit_for(limits, "compute", dtype, threads)[0])
    traffic = m.get("bytes_once") or m.get("bytes")
    if traffic:
        t = max(t, traffic / 1e9 / limit_for(limits, "memory", dtype, threads, traffic)[0])
    return t or None


def _bound(kind, m, base_s, one_thread_s, dtype, threads, limits) -> float | None:
    """The best value a target's figure can take at the measured limits: ours at floor_s, the baseline
    (or our 1-thread time, for scaling) as measured. A bandwidth share counts the passes the kernel must
    make (m["bytes"]) over a floor that moves every array once, so it can exceed 100% (clip: 3 passes over
    2 arrays-once is 150%)."""
    from .machine import limit_for

    floor = floor_s(m, dtype, threads, limits)
    if floor is None:
        return None
    if kind == "pct_bw":
        return 100.0 * m["bytes"] / floor / 1e9 / limit_for(limits, "memory", dtype, threads, m["bytes"])[0]
    if kind == "rate":
        return m["elements"] / floor if m.get("elements") else None
    num = base_s if kind == "ratio" else one_thread_s
    return num / floor if num else None


def merge_rounds(rounds: list[list[dict]]) -> list[dict]:
    """One row per (case, side, threads, alloc) from the rows of several rounds: the samples pooled (each
    weighted by its loop count), min/median/IQR over the pool; a case that failed in any round keeps that
    round's error (and gets no time)."""
    from . import bench, machine

    out: dict = {}
    for rows in rounds:
        for r in rows:
            key = (r["case"], r["side"], r["threads"], r.get("alloc", "inside"))
            if key not in out:
                out[key] = {**r, "samples": list(r.get("samples", [])), "repeats": r.get("repeats", 0),
                            "rounds": 1}
                continue
            m = out[key]
            m["rounds"] += 1
            if r.get("steal_ticks") and m.get("steal_ticks"):  # pooled, as the samples are
                m["steal_ticks"] = tuple(a + b for a, b in zip(m["steal_ticks"], r["steal_ticks"], strict=True))
            else:
                m["steal_ticks"] = None
            if r.get("error") and not m.get("error"):
                m.update(error=r["error"], traceback=r.get("traceback"))
            m["samples"] += r.get("samples", [])
            m["repeats"] = m.get("repeats", 0) + r.get("repeats", 0)
    merged = []
    for m in out.values():
        m["steal_pct"] = machine.steal_pct(m.pop("steal_ticks", None))
        samples = m.pop("samples")
        m.pop("number", None)
        if m.get("error"):
            for k in ("min_s", "median_s", "iqr_s"):
                m.pop(k, None)
        elif samples:
            m["min_s"], m["median_s"], m["iqr_s"] = bench.stats(samples)
        merged.append(m)
    return merged


def run(targets=None, repeat=5, min_time=0.5, progress=True, rounds=3):
    """Measure and grade. Returns (graded rows, raw measurement rows, child environment reports).

    The (side, threads, alloc) children run in `rounds` interleaved rounds, each timing every case for
    1/rounds of the samples and time, and the samples are pooled (merge_rounds): on a machine whose speed
    drifts (a VM with busy neighbours: the same GEMM measured 24 and 31 ms ten minutes apart) a baseline
    and ours are then timed across the same stretch, not one in a fast minute and the other in a slow one."""
    from tqdm import tqdm

    from . import machine

    targets = targets or TARGETS
    avail = available_sides()
    need = measurements(targets)
    envs: dict = {}
    rounds = max(1, int(rounds))
    total = sum(len(v) for v in need.values()) * rounds
    bar = tqdm(total=total, desc="targets", unit="case", file=sys.stderr, disable=None if progress else True,
               leave=False, dynamic_ncols=True)
    per_round = []
    try:
        for rnd in range(rounds):
            got: list[dict] = []
            for (side, threads, alloc), case_ids in sorted(need.items(), key=lambda kv: (
                    kv[0][1], SIDES.index(kv[0][0]), kv[0][2])):
                if avail.get(side) is not None:
                    got += [{"case": c, "side": side, "threads": threads, "alloc": alloc, "error": avail[side]}
                            for c in case_ids]
                    bar.update(len(case_ids))
                    continue
                if bar is not None:
                    bar.set_postfix_str(f"round {rnd + 1}/{rounds}: {side} x{threads} alloc {alloc}", refresh=True)
                got += _run_group(side, threads, case_ids, max(1, -(-repeat // rounds)), min_time / rounds, bar,
                                  envs, alloc)
            per_round.append(got)
    finally:
        bar.close()
    rows = merge_rounds(per_round)
    limits = machine.limits()
    return grade(rows, limits, targets), rows, envs


def _fmt_value(kind, v) -> str:
    if v is None:
        return ""
    return {"ratio": f"{v:.2f}x", "scaling": f"{v:.2f}x", "pct_bw": f"{v:.0f}%",
            "rate": f"{v / 1e9:.2f} G/s"}[kind]


def _fmt_required(g) -> str:
    r = g["required"]
    return {"ratio": f">= {r:g}x", "scaling": f">= {r:g}x", "pct_bw": f">= {r:g}%", "rate": f">= {r / 1e9:g} G/s"}[
        g["kind"]]


def to_markdown(graded: list[dict]) -> str:
    lines = ["| target | threads | ours (s) | baseline (s) | measured | required | met | bound | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for g in graded:
        met = "" if g["met"] is None else ("yes" if g["met"] else "**no**")
        lines.append(f"| {g['target']} | {g['threads']} | {_s(g['ours_s'])} | {_s(g['base_s'])} | "
                     f"{_fmt_value(g['kind'], g['measured'])} | {_fmt_required(g)} | {met} | "
                     f"{_fmt_value(g['kind'], g.get('bound'))} | {g['note']} |")
    met = sum(1 for g in graded if g["met"])
    lines += ["", f"{met} of {len(graded)} targets met."]
    steal = sorted(g["steal_pct"] for g in graded if g.get("steal_pct") is not None)
    if steal:
        lines[-1] += (f" Steal time (the share of the CPU time a timing asked for that the host took instead; per "
                      f"row, the larger of ours and its baseline's): median {steal[len(steal) // 2]:.1f}%, largest "
                      f"{steal[-1]:.1f}%; noted at >= {STEAL_NOTE_PCT:g}%.")
    return "\n".join(lines)


def _s(v) -> str:
    return "" if v is None else f"{v:.4g}"


def main(args) -> int:
    """`deepprop bench --targets` (wired in kernels.bench.main)."""
    import pandas as pd

    t0 = time.time()
    graded, rows, envs = run(repeat=args.repeat, min_time=max(args.min_time, 0.5))
    if args.format == "markdown" or args.format == "table":
        text = to_markdown(graded)
    elif args.format == "csv":
        text = pd.DataFrame(graded).to_csv(index=False)
    else:
        text = pd.DataFrame(graded).to_json(orient="records", indent=1)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    print(text)
    print(f"({time.time() - t0:.0f} s; children: " + "; ".join(
        f"{s} x{t}: BLAS {e.get('blas_arch')}" for (s, t), e in envs.items()) + ")", file=sys.stderr)
    return 0

