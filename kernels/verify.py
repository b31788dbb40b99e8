"""Check every backend of every kernel against its NumPy reference: the engine behind
``deepprop check`` and tests/test_registry.py.

For each (kernel, backend, dtype, size) the kernel's case maker (``kernels.CASES``) builds inputs
from the awkward size n; the reference and the backend each run on their own deep copy; then every
returned array and every array argument the kernel wrote in place is compared with ``TOLERANCE``.

Error measures (``max_error`` is the largest ratio |out - ref| / denominator; ``ok`` is
``max_error <= k * eps(dtype)``):
  * ``elementwise``: denominator |ref| (+ the smallest normal, for zeros) - componentwise relative;
  * ``normwise``:    denominator max|ref| over the output - for outputs with cancellation;
  * ``gemm``:        denominator (|A|·|B|)_ij of the product behind each output, the componentwise
                     bound |C - C_ref| <= k·eps·(|A|·|B|) of the reference BLAS test suite (k = 16);
  * ``exact``:       bitwise equality (dropout masks), max_error is the count of differing elements.
NaN/Inf positions must match exactly in every measure.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np

# kernel -> (measure, k). One table for every backend and dtype; eps is the output dtype's.
# Why each k: elementwise kernels round once from a float64-accurate value (reference too), so two
# roundings plus libm's <= 1-2 ulp; normalisations accumulate in float64 but round the saved
# statistics to the dtype, which moves outputs by a few ulp of max|y|; QR-based results inherit
# cond(A)·eps, so their k grows with the matrix size (see _qr_k); random normals go through
# log/cos, whose libm and NumPy implementations may differ by an ulp near the zeros of cos.
TOLERANCE: dict[str, tuple[str, float]] = {
    "linear_forward": ("gemm", 16), "linear_backward": ("gemm", 16),
    **{f"{a}_{d}": ("elementwise", 8) for a in ("identity", "sigmoid", "tanh", "relu", "leaky_relu",
                                                  "elu", "gelu") for d in ("forward", "backward")},
    "prelu_forward": ("elementwise", 8), "prelu_backward": ("normwise", 64),
    "batchnorm_forward": ("normwise", 64), "batchnorm_inference": ("normwise", 16),
    "batchnorm_backward": ("normwise", 256),
    "layernorm_forward": ("normwise", 64), "layernorm_backward": ("normwise", 256),
    "dropout_mask": ("exact", 0), "dropout_forward": ("elementwise", 1), "dropout_backward": ("elementwise", 1),
    "zeros_init": ("exact", 0), "constant_init": ("exact", 0), "uniform_init": ("elementwise", 1),
    "xavier_uniform_init": ("elementwise", 1), "he_uniform_init": ("elementwise", 1),
    "normal_init": ("normwise", 16), "xavier_normal_init": ("normwise", 16),
    "he_normal_init": ("normwise", 16), "lecun_normal_init": ("normwise", 16),
    "qr": ("normwise", "qr"), "orthogonal_init": ("normwise", "qr"),
    "clip_grad_norm": ("normwise", 64), "clip_grad_value": ("exact", 0),
    "residual_add": ("elementwise", 1), "l2_grad": ("elementwise", 1), "l1_grad": ("elementwise", 1),
}
DEFAULT_TOLERANCE = ("normwise", 64)

#: the awkward sizes of the issue: powers of two, one off either side, primes, and 1
SIZES = (1, 2, 3, 7, 15, 16, 17, 33, 63, 65, 1025)
#: the subset ``deepprop check`` uses by default (every size is in the test suite)
QUICK_SIZES = (1, 7, 33, 65)


@dataclass
class Result:
    kernel: str
    backend: str
    dtype: str
    size: int
    ok: bool
    max_error: float
    tolerance: float
    message: str = ""


def _qr_k(kwargs) -> float:
    """QR results agree to about cond(A)·eps·max(m, n); the case makers draw tall matrices whose
    condition number stays below ~10, so 32·max(m, n) ulps of the largest entry leaves room."""
    shape = kwargs["a"].shape if "a" in kwargs else tuple(kwargs["shape"])
    return 32.0 * max(shape)


def _flatten(value) -> list[np.ndarray]:
    """The arrays in a kernel's return value (array, scalar, tuple or list of those)."""
    if value is None:
        return []
    if isinstance(value, tuple | list):
        return [a for v in value for a in _flatten(v)]
    return [np.asarray(value)]


def _written_arrays(kwargs) -> list[np.ndarray]:
    out = []
    for v in kwargs.values():
        if isinstance(v, np.ndarray):
            out.append(v)
        elif isinstance(v, list) and v and all(isinstance(a, np.ndarray) for a in v):
            out.extend(v)
    return out


def _gemm_denominators(name, kwargs, refs):
    """|A|·|B| for each output of the linear kernels (float64), in output order."""
    from . import activations

    x = np.abs(kwargs["x"].astype(np.float64))
    W = np.abs(kwargs["W"].astype(np.float64))
    act = kwargs.get("activation", "identity")
    alpha = kwargs.get("alpha")
    if name == "linear_forward":
        b = kwargs.get("b")
        den = x @ W + (0.0 if b is None else np.abs(b.astype(np.float64)))
        # the activation is Lipschitz (<= 1.13 for gelu) and rounds once more: allow both
        y = np.abs(refs[0].astype(np.float64))
        dens = [1.2 * den + y]
        if kwargs.get("keep_preactivation"):  # z is returned too
            dens.append(den)
        return dens
    # linear_backward: dz = dy * act'(z); dx = dz W^T, dW = x^T dz, db = sum dz
    dy = kwargs["dy"].astype(np.float64)
    z = kwargs.get("z")
    if act == "identity" or z is None:
        dz = np.abs(dy)
    else:
        back = activations.REFERENCE_BACKWARD[act]
        dz = np.abs(back(dy, z.astype(np.float64), alpha))
    dz = dz + np.abs(dy) * 1e-30  # keep a denominator where act' is 0
    return [dz @ W.T + np.abs(refs[0]), x.T @ dz + np.abs(refs[1]), dz.sum(axis=0) + np.abs(refs[2])]


def compare(out: np.ndarray, ref: np.ndarray, measure: str, den=None) -> tuple[float, str]:
    """max_error of out against ref under a measure, and a message when something is off."""
    out = np.asarray(out)
    ref = np.asarray(ref)
    if out.shape != ref.shape:
        return math.inf, f"shape {out.shape} != reference {ref.shape}"
    if out.dtype != ref.dtype:
        return math.inf, f"dtype {out.dtype} != reference {ref.dtype}"
    if measure == "exact":
        if out.dtype.kind == "f":
            same = (out == ref) | (np.isnan(out) & np.isnan(ref))
        else:
            same = out == ref
        bad = int(np.count_nonzero(~same))
        return float(bad), (f"{bad} elements differ" if bad else "")
    o = out.astype(np.float64)
    r = ref.astype(np.float64)
    fin = np.isfinite(r)
    special = ~fin
    if np.any(special) and not np.array_equal(o[special], r[special], equal_nan=True):
        return math.inf, "NaN/Inf positions differ from the reference"
    if np.any(~np.isfinite(o[fin])):
        return math.inf, "non-finite values where the reference is finite"
    if o.size == 0 or not np.any(fin):
        return 0.0, ""
    diff = np.abs(o[fin] - r[fin])
    if measure == "elementwise":
        d = np.abs(r[fin]) + np.finfo(ref.dtype if ref.dtype.kind == "f" else np.float64).tiny
    elif measure == "normwise":
        d = max(float(np.max(np.abs(r[fin]))), np.finfo(np.float64).tiny)
    elif measure == "gemm":
        d = np.maximum(np.asarray(den, dtype=np.float64)[fin], np.finfo(np.float64).tiny)
    else:
        raise ValueError(f"unknown measure {measure!r}")
    return float(np.max(diff / d)), ""


def check_case(name: str, backend: str, dtype, n: int, seed: int = 0) -> Result:
    """Run one kernel on one backend at size n against the reference."""
    from . import CASES, REGISTRY

    dtype = np.dtype(dtype)
    rng = np.random.default_rng([seed, n, 1 if dtype == np.float32 else 2])
    kwargs = CASES[name](rng, n, dtype)
    ref_kwargs = copy.deepcopy(kwargs)
    out_kwargs = copy.deepcopy(kwargs)
    measure, k = TOLERANCE.get(name, DEFAULT_TOLERANCE)
    if k == "qr":
        k = _qr_k(kwargs)
    tol = float(k) * float(np.finfo(dtype).eps)
    res = Result(name, backend, dtype.name, n, False, math.inf, tol)
    try:
        refs = _flatten(REGISTRY[name]["numpy"](**ref_kwargs)) + _written_arrays(ref_kwargs)
        outs = _flatten(REGISTRY[name][backend](**out_kwargs)) + _written_arrays(out_kwargs)
    except Exception as exc:  # a crash in a backend is a failed cell, not a failed run
        res.message = f"{type(exc).__name__}: {exc}"
        return res
    if len(refs) != len(outs):
        res.message = f"{len(outs)} outputs, reference has {len(refs)}"
        return res
    dens = _gemm_denominators(name, kwargs, refs) if measure == "gemm" else [None] * len(refs)
    dens += [None] * (len(refs) - len(dens))
    worst, msgs = 0.0, []
    for i, (o, r, den) in enumerate(zip(outs, refs, dens, strict=True)):
        m = measure if (measure != "gemm" or den is not None) else "normwise"
        if m != "exact" and np.asarray(r).dtype.kind != "f":
            m = "exact"
        err, msg = compare(o, r, m, den)
        if msg:
            msgs.append(f"output {i}: {msg}")
        worst = max(worst, err)
    res.max_error = worst
    res.ok = not msgs and (worst <= tol if measure != "exact" else worst == 0)
    res.message = "; ".join(msgs)
    return res


def check(names=None, backends=None, dtypes=("float32", "float64"), sizes=QUICK_SIZES, seed=0,
          progress=None) -> list[Result]:
    """Every (kernel, backend, dtype) over sizes; one Result per cell, the worst size's."""
    from . import BACKENDS, REGISTRY
    from . import backends as available

    names = list(REGISTRY) if names is None else list(names)
    backends = [b for b in (backends or BACKENDS) if b != "numpy"]
    avail = available()
    results = []
    for name in names:
        for backend in backends:
            for dt in dtypes:
                if avail[backend] is not None:
                    results.append(Result(name, backend, dt, 0, False, math.nan, math.nan,
                                          f"unavailable: {avail[backend]}"))
                    continue
                cell = None
                for n in sizes:
                    r = check_case(name, backend, dt, n, seed)
                    if cell is None or not r.ok or r.max_error > cell.max_error:
                        cell = r  # the worst size speaks for the cell; a failure stops it
                    if not r.ok:
                        break
                    if progress is not None:
                        progress()
                results.append(cell)
    return results
