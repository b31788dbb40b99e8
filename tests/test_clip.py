"""clip family: clip_grad_norm and clip_grad_value on every backend and both dtypes.

Properties, limits and errors only (backend-vs-reference agreement on random inputs is the generic
registry test's job): the total is the float64 norm of the concatenation, clipping scales to max_norm
along the same direction, nothing is written when no clipping is due, squares that overflow or
underflow the dtype do not spoil the total, non-finite totals leave the arrays alone, and every bad
argument is refused by name.
"""

import json
import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import kernels

BACKENDS = [b for b, why in kernels.backends().items() if why is None]
DTYPES = [np.dtype(np.float32), np.dtype(np.float64)]
NORMS = [2.0, math.inf]


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture(params=DTYPES, ids=["f32", "f64"])
def dtype(request):
    return request.param


def approx(expected, rel):
    """pytest.approx without its absolute 1e-12 floor, which would pass anything at 1e-200."""
    return pytest.approx(expected, rel=rel, abs=0)


def norm_fn(backend):
    return kernels.get("clip_grad_norm", backend)


def value_fn(backend):
    return kernels.get("clip_grad_value", backend)


def make_grads(dtype, seed=0, shapes=((13, 3), (5,), (2, 7), (0, 4), (3, 2, 2))):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def flat64(grads):
    return np.concatenate([g.reshape(-1).astype(np.float64) for g in grads])


def exact_norm(grads, norm_type):
    """float64 norm of the concatenation, computed on a power-of-two rescaling (exact), so it is
    right even where the squares overflow or underflow a double."""
    x = flat64(grads)
    if norm_type == math.inf:
        return float(np.max(np.abs(x)))
    amax = float(np.max(np.abs(x)))
    if amax == 0:
        return 0.0
    k = math.frexp(amax)[1]
    return math.ldexp(float(np.linalg.norm(np.ldexp(x, -k))), k)


# ---- the total, clipping and not clipping ---------------------------------------------------------

@pytest.mark.parametrize("norm_type", NORMS, ids=["l2", "inf"])
def test_total_is_the_norm_of_the_concatenation(backend, dtype, norm_type):
    grads = make_grads(dtype, seed=1)
    expected = (np.linalg.norm(flat64(grads)) if norm_type == 2.0 else np.max(np.abs(flat64(grads))))
    total = norm_fn(backend)(grads, max_norm=1e9, norm_type=norm_type)
    assert isinstance(total, float)
    assert total == approx(float(expected), rel=1e-14)


@pytest.mark.parametrize("norm_type", NORMS, ids=["l2", "inf"])
def test_clipping_scales_to_max_norm_along_the_same_direction(backend, dtype, norm_type):
    grads = make_grads(dtype, seed=2)
    before = [g.copy() for g in grads]
    total0 = exact_norm(grads, norm_type)
    max_norm = total0 / 3.0
    total = norm_fn(backend)(grads, max_norm, norm_type=norm_type)
    assert total == approx(total0, rel=1e-14)
    coef = max_norm / (total0 + 1e-6)
    eps = float(np.finfo(dtype).eps)
    # the new norm is max_norm (up to PyTorch's 1e-6 in the denominator and one rounding per element)
    assert exact_norm(grads, norm_type) == approx(max_norm, rel=1e-6 / total0 + 2 * eps)
    assert exact_norm(grads, norm_type) == approx(total0 * coef, rel=3 * eps)
    for g, b in zip(grads, before, strict=True):  # direction unchanged: every element scaled by the same coef
        assert g.dtype == dtype
        np.testing.assert_allclose(g.astype(np.float64), b.astype(np.float64) * coef, rtol=2 * eps, atol=0)
        np.testing.assert_array_equal(np.sign(g), np.sign(b))


@pytest.mark.parametrize("norm_type", NORMS, ids=["l2", "inf"])
def test_no_clipping_under_max_norm_leaves_arrays_bitwise(backend, dtype, norm_type):
    grads = make_grads(dtype, seed=3)
    before = [g.copy() for g in grads]
    total0 = exact_norm(grads, norm_type)
    total = norm_fn(backend)(tuple(grads), max_norm=total0 * 1.01, norm_type=norm_type)
    assert total == approx(total0, rel=1e-14)
    for g, b in zip(grads, before, strict=True):
        assert g.tobytes() == b.tobytes()


def test_max_norm_zero_zeroes_and_one_array_is_a_list_of_one(backend, dtype):
    g = make_grads(dtype, seed=4, shapes=((6, 5),))[0]
    total0 = exact_norm([g], 2.0)
    total = norm_fn(backend)(g, 0.0)
    assert total == approx(total0, rel=1e-14)
    assert not np.any(g)


def test_empty_arrays_are_ignored(backend, dtype):
    g = make_grads(dtype, seed=5, shapes=((4, 3),))[0]
    e = np.empty((0, 3), dtype)
    total = norm_fn(backend)([e, g, np.empty(0, dtype)], 1e9)
    assert total == approx(exact_norm([g], 2.0), rel=1e-14)
    assert norm_fn(backend)([np.empty((2, 0), dtype)], 1.0) == 0.0


@pytest.mark.parametrize("n", [1, 3, 4, 5, 9, 15, 16, 17, 31, 33, 1025])
def test_every_lane_and_the_tail_count(backend, dtype, n):
    """One large element at each position of arrays whose length is or is not a multiple of the 16
    lanes (and of the 8 and 4 elements of the vector loops)."""
    for pos in sorted({0, n // 2, n - 1}):
        g = np.full(n, 0.5, dtype)
        g[pos] = 100.0
        expected = math.sqrt(100.0**2 + 0.25 * (n - 1))
        assert norm_fn(backend)([g], 1e9) == approx(expected, rel=1e-14)
        assert norm_fn(backend)([g], 1e9, norm_type="inf") == 100.0


# ---- squares that overflow or underflow the dtype --------------------------------------------------

@pytest.mark.parametrize("norm_type", NORMS, ids=["l2", "inf"])
def test_float32_at_1e20(backend, norm_type):
    grads = [(g.astype(np.float64) * 1e20).astype(np.float32)
             for g in make_grads(np.float32, seed=6)]
    exact = exact_norm(grads, norm_type)
    assert 1e20 < exact < 1e23  # the squares overflow float32 (max 3.4e38)
    total = norm_fn(backend)(grads, 1.0, norm_type=norm_type)
    assert math.isfinite(total)
    assert abs(total - exact) / exact < 1e-6
    assert all(np.all(np.isfinite(g)) for g in grads)
    assert exact_norm(grads, norm_type) == approx(1.0, rel=1e-6)


@pytest.mark.parametrize("norm_type", NORMS, ids=["l2", "inf"])
@pytest.mark.parametrize("scale", [1e-310, 1e-300, 1e-200, 1e-150, 1e-149, 1e149, 1e150, 1e151, 1e200, 1e300])
def test_float64_squares_overflow_or_underflow(backend, norm_type, scale):
    grads = [g * scale for g in make_grads(np.float64, seed=7)]
    exact = exact_norm(grads, norm_type)
    assert 0.0 < exact < math.inf
    total = norm_fn(backend)(grads, 1e308, norm_type=norm_type)
    assert total == approx(exact, rel=1e-14 if scale > 1e-300 else 1e-10)  # subnormals: few bits


def test_float64_exact_small_cases(backend):
    assert norm_fn(backend)([np.array([3e200]), np.array([4e200])], 1e308) == approx(5e200, rel=1e-15)
    assert norm_fn(backend)([np.array([3e-200, 4e-200])], 1.0) == approx(5e-200, rel=1e-15)
    # a huge element next to ordinary ones, in different arrays
    got = norm_fn(backend)([np.ones(10), np.array([1e200]), np.full(3, 2.0)], 1e308)
    assert got == approx(1e200, rel=1e-15)
    # clipping 1e200 gradients gives finite arrays of norm max_norm
    grads = [g * 1e200 for g in make_grads(np.float64, seed=8)]
    norm_fn(backend)(grads, 2.0)
    assert exact_norm(grads, 2.0) == approx(2.0, rel=1e-12)


# ---- non-finite totals ------------------------------------------------------------------------------

@pytest.mark.parametrize("norm_type", NORMS, ids=["l2", "inf"])
@pytest.mark.parametrize("pos", range(9))
def test_nan_anywhere_gives_nan_and_touches_nothing(backend, dtype, norm_type, pos):
    grads = make_grads(dtype, seed=9, shapes=((9,), (3, 2)))
    grads[0][pos] = np.nan
    grads[1][0, 0] = np.inf    # NaN wins over inf, wherever it is (max must not skip NaN)
    grads[1][1, 1] = 1e30 if dtype == np.float32 else 1e300
    before = [g.copy() for g in grads]
    total = norm_fn(backend)(grads, 1e-3, norm_type=norm_type)
    assert math.isnan(total)
    for g, b in zip(grads, before, strict=True):
        assert g.tobytes() == b.tobytes()
    with pytest.raises(ValueError, match="NaN"):
        norm_fn(backend)(grads, 1e-3, norm_type=norm_type, error_if_nonfinite=True)
    for g, b in zip(grads, before, strict=True):
        assert g.tobytes() == b.tobytes()


@pytest.mark.parametrize("norm_type", NORMS, ids=["l2", "inf"])
def test_inf_gives_inf_and_touches_nothing(backend, dtype, norm_type):
    grads = make_grads(dtype, seed=10, shapes=((5,), (2, 3)))
    grads[1][1, 2] = -np.inf
    before = [g.copy() for g in grads]
    assert norm_fn(backend)(grads, 1e-3, norm_type=norm_type) == math.inf
    for g, b in zip(grads, before, strict=True):
        assert g.tobytes() == b.tobytes()
    label = "L2" if norm_type == 2.0 else "inf"
    with pytest.raises(ValueError, match=rf"{label}-norm .* infinite"):
        norm_fn(backend)(grads, 1e-3, norm_type=norm_type, error_if_nonfinite=True)
    for g, b in zip(grads, before, strict=True):
        assert g.tobytes() == b.tobytes()


def test_overflowing_total_is_infinite_not_nan(backend):
    grads = [np.full(4, 1.5e308)]
    assert norm_fn(backend)(grads, 1.0) == math.inf
    assert np.all(grads[0] == 1.5e308)


# ---- clip_grad_value -------------------------------------------------------------------------------

def test_clip_grad_value(backend, dtype):
    c = 0.1  # not representable: the clamp value is 0.1 rounded to the dtype
    a = np.array([np.nan, np.inf, -np.inf, 0.05, -0.05, 0.0, -0.0, 0.3, -7.0, 0.1], dtype)
    b = np.linspace(-0.09, 0.09, 13).astype(dtype).reshape(13, 1)
    inside = b.copy()
    a_in = a.copy()
    assert value_fn(backend)([a, b, np.empty(0, dtype)], c) is None
    assert np.isnan(a[0])
    hi, lo = dtype.type(c), dtype.type(-c)
    np.testing.assert_array_equal(a[1:3], [hi, lo])
    np.testing.assert_array_equal(a[7:9], [hi, lo])
    assert a[3:7].tobytes() == a_in[3:7].tobytes()  # inside, signed zeros included: bitwise
    assert a[9] == min(a_in[9], hi)
    assert b.tobytes() == inside.tobytes()
    assert a.dtype == dtype and b.dtype == dtype


def test_clip_grad_value_single_array(backend, dtype):
    g = (np.arange(-5, 6, dtype=np.float64) * 0.5).astype(dtype)
    value_fn(backend)(g, 1.0)
    np.testing.assert_array_equal(g, np.clip(np.arange(-5, 6) * 0.5, -1.0, 1.0).astype(dtype))


# ---- bad input ----------------------------------------------------------------------------------

KERNEL_ARGS = [("clip_grad_norm", {"max_norm": 1.0}), ("clip_grad_value", {"clip_value": 1.0})]


@pytest.mark.parametrize("name,extra", KERNEL_ARGS, ids=["norm", "value"])
def test_bad_grads_are_refused_by_name(backend, name, extra):
    fn = kernels.get(name, backend)
    g = np.ones((4, 3))
    with pytest.raises(TypeError, match=r"^grads\[1\].*float64"):
        fn([g, np.ones(3, np.float32)], **extra)
    ro = np.ones(5)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match=r"^grads\[1\].*read-only"):
        fn([g, ro], **extra)
    view = np.ones((4, 6))[:, ::2]
    before = view.copy()
    with pytest.raises(ValueError, match=r"^grads\[2\].*contiguous"):
        fn([g, g[0], view], **extra)
    assert np.array_equal(view, before)
    with pytest.raises(TypeError, match=r"^grads\[0\]"):
        fn([np.ones(3, np.int64)], **extra)
    with pytest.raises(TypeError, match=r"^grads\b"):
        fn(np.ones(3, np.int32), **extra)
    with pytest.raises(TypeError, match=r"^grads\[1\]"):
        fn([g, [1.0, 2.0]], **extra)
    with pytest.raises(ValueError, match=r"^grads.*empty"):
        fn([], **extra)
    with pytest.raises(TypeError, match=r"^grads"):
        fn((x for x in [g]), **extra)


def test_overlapping_grads_are_refused_for_norm_clipping(backend):
    buf = np.ones(10)
    with pytest.raises(ValueError, match=r"grads\[1\].*overlaps grads\[0\]"):
        norm_fn(backend)([buf[:6], buf[4:]], 0.1)
    with pytest.raises(ValueError, match=r"overlaps"):
        norm_fn(backend)([buf, np.ones(2), buf], 0.1)
    assert np.all(buf == 1.0)
    norm_fn(backend)([buf[:5], buf[5:]], 0.1)  # adjacent is fine
    assert np.linalg.norm(buf) == approx(0.1 * math.sqrt(10) / (math.sqrt(10) + 1e-6), rel=1e-15)


@pytest.mark.parametrize("max_norm", [-1e-3, math.nan, math.inf, -math.inf])
def test_bad_max_norm(backend, max_norm):
    with pytest.raises(ValueError, match="^max_norm"):
        norm_fn(backend)([np.ones(3)], max_norm)


@pytest.mark.parametrize("norm_type", [3, 1, 0, "fro", "2", "Inf", -math.inf, math.nan, None, True])
def test_bad_norm_type(backend, norm_type):
    g = np.ones(3)
    with pytest.raises(ValueError, match="^norm_type"):
        norm_fn(backend)([g], 0.1, norm_type=norm_type)
    assert np.all(g == 1.0)


@pytest.mark.parametrize("norm_type", [2, 2.0, np.float64(2), math.inf, float("inf"), np.inf, "inf"])
def test_accepted_norm_types(backend, norm_type):
    g = np.array([3.0, -4.0])
    assert norm_fn(backend)([g], 1e9, norm_type=norm_type) == (5.0 if norm_type == 2 else 4.0)


@pytest.mark.parametrize("clip_value", [0.0, -0.0, -1.0, math.nan, math.inf])
def test_bad_clip_value(backend, clip_value):
    g = np.ones(3)
    with pytest.raises(ValueError, match="^clip_value"):
        value_fn(backend)([g], clip_value)
    assert np.all(g == 1.0)


# ---- the C paths (avx2, portable) and Numba agree bit for bit --------------------------------------

def _path_cases():
    """Lists of arrays over every lane, tail and special value, float32 and float64."""
    rng = np.random.default_rng(11)
    cases = []
    for dt in ("float32", "float64"):
        for n in (1, 7, 15, 16, 17, 31, 32, 33, 100, 1025, 4099):
            cases.append([rng.standard_normal(n).astype(dt), rng.standard_normal(n % 19 + 1).astype(dt)])
        big = rng.standard_normal(70).astype(dt)
        nan, inf = big.copy(), big.copy()
        nan[37], inf[50] = np.nan, -np.inf
        cases += [[nan], [inf], [big * (1e20 if dt == "float32" else 1e200)]]
        if dt == "float64":
            cases += [[big * 1e-200], [big * 1e160]]
    return cases


def _path_outputs(backend) -> list:
    """Totals (both norms), the arrays clipped by norm and by value, as exact text."""
    out = []
    for grads in _path_cases():
        for norm_type in NORMS:
            out.append(repr(kernels.get("clip_grad_norm", backend)([g.copy() for g in grads], 1e30, norm_type)))
        g = [a.copy() for a in grads]
        kernels.get("clip_grad_norm", backend)(g, 0.3)  # scales unless the total is not finite
        out.append([a.tobytes().hex() for a in g])
        g = [a.copy() for a in grads]
        kernels.get("clip_grad_value", backend)(g, 0.7)
        out.append([a.tobytes().hex() for a in g])
    return out


def path_worker() -> dict:
    """Run in a child process: _path_outputs on the C path DEEPPROP_CLIP_ISA forced."""
    return {"isa": kernels._c.ffi.string(kernels._c.lib.clip_isa()).decode(), "out": _path_outputs("c"),
            "team": kernels._c.ffi.string(kernels._c.lib.gemm_isa()).decode().rsplit("; ", 1)[1]}


def _run_path(path, threads=1):
    """The C outputs in a child with the path forced (None: automatic) on `threads` OpenMP threads,
    every call threaded (DEEPPROP_CLIP_THREAD_MIN_VALUES=0) when threads > 1."""
    root = pathlib.Path(kernels.__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS=str(threads), OMP_WAIT_POLICY="passive",
               DEEPPROP_CLIP_THREAD_MIN_VALUES="0" if threads > 1 else "")
    env.pop("DEEPPROP_CLIP_ISA", None)
    if path is not None:
        env["DEEPPROP_CLIP_ISA"] = path
    proc = subprocess.run([sys.executable, __file__, "--path-worker"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(kernels.backends()["c"] is not None, reason="C backend not built")
def test_c_paths_and_numba_agree_bitwise():
    runs = {p: _run_path(p) for p in ("portable", "avx2", None, "sse9")}
    assert runs["portable"]["isa"] == "portable (forced by DEEPPROP_CLIP_ISA)"
    widest = runs[None]["isa"]
    assert widest in ("avx2", "portable")  # what this CPU runs, chosen automatically
    assert runs["sse9"]["isa"].split()[0] == widest and "ignored" in runs["sse9"]["isa"]
    if widest == "avx2":
        assert runs["avx2"]["isa"] == "avx2 (forced by DEEPPROP_CLIP_ISA)"
    assert runs["avx2"]["out"] == runs["portable"]["out"]
    if kernels.backends()["numba"] is None:
        assert _path_outputs("numba") == runs["portable"]["out"]


@pytest.mark.skipif(kernels.backends()["c"] is not None, reason="C backend not built")
@pytest.mark.parametrize("path", ["portable", None])
def test_thread_count_never_changes_a_result(path):
    """Every call on a team of 2 and of 3 (all calls threaded) gives one thread's bits: the norm's
    per-array partials are combined in array order, scaling and clamping are elementwise."""
    one = _run_path(path, threads=1)["out"]
    for t in (2, 3):
        run = _run_path(path, threads=t)
        assert run["team"] == f"{t} threads (OpenMP)", run["team"]   # the module could start a team of t
        assert run["out"] == one


if __name__ == "__main__" and sys.argv[1:] == ["--path-worker"]:
    print(json.dumps(path_worker()))
