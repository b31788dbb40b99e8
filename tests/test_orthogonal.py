"""qr and orthogonal_init (kernels/orthogonal.py): LAPACK's accuracy ratios, the sign fix, Haar
statistics, known answers, special values and bad input, on every backend and both dtypes.

orthogonal_init draws from kernels.init's normal_init. While that family is not in this tree
(its KERNELS is empty), the ``normal_init`` fixture below installs a NumPy stand-in for every
backend for the duration of each test; once the real one is registered it is used as it is.
The statistical tests run at fixed seeds, so they are deterministic for a given normal_init.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import scipy.stats

import kernels
from kernels import init, orthogonal

BACKENDS = ["numpy", "numba", "c"]
DTYPES = [np.float32, np.float64]
RATIO = 30.0  # LAPACK's test threshold for the ratios below


def _fallback_normal(shape, mean=0.0, std=1.0, seed=0, dtype="float32"):
    """Stand-in for normal_init (the same on every backend): only used while init has none."""
    return (mean + std * np.random.default_rng(seed).standard_normal(tuple(shape))).astype(dtype)


@pytest.fixture(autouse=True)
def normal_init(monkeypatch):
    if "normal_init" not in init.KERNELS:
        monkeypatch.setitem(init.KERNELS, "normal_init", {b: _fallback_normal for b in BACKENDS})


def get(name, backend):
    try:
        return kernels.get(name, backend)
    except kernels.BackendUnavailable as exc:
        pytest.skip(str(exc))


def norm1(x):
    return np.abs(np.asarray(x, dtype=np.float64)).sum(axis=0).max()


def ratios(a, q, r):
    """LAPACK's (xQRT01) ||A - QR||_1 / (m ||A||_1 u) and ||I - Q^T Q||_1 / (m u), u = eps(dtype)."""
    m, n = a.shape
    u = np.finfo(a.dtype).eps
    a64, q64, r64 = (np.asarray(x, dtype=np.float64) for x in (a, q, r))
    resid = norm1(a64 - q64 @ r64) / (m * max(norm1(a64), np.finfo(np.float64).tiny) * u)
    orth = norm1(np.eye(n) - q64.T @ q64) / (m * u)
    return resid, orth


def check_factorization(a, q, r):
    m, n = a.shape
    assert q.shape == (m, n) and r.shape == (n, n)
    assert q.dtype == a.dtype and r.dtype == a.dtype
    assert np.all(np.isfinite(q)) and np.all(np.isfinite(r))
    assert np.all(np.tril(r, -1) == 0), "r is not upper triangular"
    assert np.all(np.diagonal(r) >= 0), "diag(r) has a negative entry: the sign fix is missing"
    resid, orth = ratios(a, q, r)
    assert resid < RATIO, f"||A - QR|| ratio {resid:.3g}"
    assert orth < RATIO, f"||I - Q^T Q|| ratio {orth:.3g}"


def ill_conditioned(rng, m, n, cond):
    """U diag(s) V^T with singular values from 1 down to 1/cond (geometrically)."""
    u = scipy.stats.ortho_group.rvs(m, random_state=rng)[:, :n]
    v = scipy.stats.ortho_group.rvs(n, random_state=rng)
    return (u * np.geomspace(1.0, 1.0 / cond, n)) @ v.T


# ---- qr: accuracy and structure -------------------------------------------------------------------

SHAPES = [(1, 1), (6, 6), (7, 3), (40, 1), (2, 1), (64, 64), (1025, 33), (100, 99)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_qr_lapack_ratios_random(backend, dtype, shape):
    a = np.random.default_rng([11, *shape]).standard_normal(shape).astype(dtype)
    q, r = get("qr", backend)(a)
    check_factorization(a, q, r)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cond", [1e6, 1e14])
@pytest.mark.parametrize("shape", [(80, 50), (230, 170)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_qr_lapack_ratios_ill_conditioned(backend, dtype, cond, shape):
    # QR is backward stable: both ratios stay small however ill-conditioned a is (the C backend
    # factors 80 x 50 as one panel, 230 x 170 blocked with GEMM updates)
    a = ill_conditioned(np.random.default_rng(5), *shape, cond).astype(dtype)
    q, r = get("qr", backend)(a)
    check_factorization(a, q, r)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_qr_rank_deficient(backend, dtype):
    # a zero column (a trivial reflector, tau = 0) and a repeated column (r_jj ~ 0)
    a = np.random.default_rng(3).standard_normal((9, 5)).astype(dtype)
    a[:, 1] = 0
    a[:, 3] = a[:, 0]
    q, r = get("qr", backend)(a)
    check_factorization(a, q, r)
    assert r[1, 1] == 0 and abs(float(r[3, 3])) < 50 * np.finfo(dtype).eps * norm1(a)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", ["huge", "tiny"])
def test_qr_no_overflow_or_underflow(backend, dtype, scale):
    # squares of these entries overflow / underflow: the norms must be computed scaled
    s = {("huge", np.float64): 1e300, ("tiny", np.float64): 1e-300,
         ("huge", np.float32): 1e36, ("tiny", np.float32): 1e-36}[scale, dtype]
    base = np.random.default_rng(8).standard_normal((12, 7))
    a = (base * s).astype(dtype)
    q, r = get("qr", backend)(a)
    assert np.all(np.isfinite(q)) and np.all(np.isfinite(r))
    check_factorization((a / dtype(s)).astype(dtype), q, (r / dtype(s)).astype(dtype))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_qr_recovers_a_known_factorization(backend, dtype):
    # the QR with diag(r) > 0 of a full-rank a is unique: a = Q0 R0 must give back Q0 and R0
    rng = np.random.default_rng(21)
    q0 = scipy.stats.ortho_group.rvs(12, random_state=rng)[:, :8]
    r0 = np.triu(rng.standard_normal((8, 8)), 1) + np.diag(rng.uniform(1.0, 2.0, 8))
    a = (q0 @ r0).astype(dtype)
    q, r = get("qr", backend)(a)
    tol = 200 * np.finfo(dtype).eps
    np.testing.assert_allclose(q, q0, atol=tol)
    np.testing.assert_allclose(r, r0, atol=tol * 4)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_qr_known_answers(backend, dtype):
    f = get("qr", backend)
    # one column: q = a / ||a||, r = ||a||
    q, r = f(np.array([[3.0], [-4.0]], dtype=dtype))
    np.testing.assert_allclose(q, [[0.6], [-0.8]], rtol=2 * np.finfo(dtype).eps)
    np.testing.assert_allclose(r, [[5.0]], rtol=2 * np.finfo(dtype).eps)
    # already triangular with negative diagonal entries: only the signs move
    q, r = f(np.array([[-2.0, 1.0, 4.0], [0.0, 3.0, 5.0], [0.0, 0.0, -1.0]], dtype=dtype))
    np.testing.assert_array_equal(q, np.diag([-1.0, 1.0, -1.0]))
    np.testing.assert_array_equal(r, [[2.0, -1.0, -4.0], [0.0, 3.0, 5.0], [0.0, 0.0, 1.0]])
    # 1 x 1 negative: q = -1, r = |a|
    q, r = f(np.array([[-7.0]], dtype=dtype))
    assert q.tolist() == [[-1.0]] and r.tolist() == [[7.0]]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_qr_zero_matrix_sign_of_zero_is_plus(backend, dtype):
    # every reflector is trivial and r = 0; sign(0) = +1 leaves q = the first columns of I
    q, r = get("qr", backend)(np.zeros((5, 3), dtype=dtype))
    np.testing.assert_array_equal(q, np.eye(5, 3))
    np.testing.assert_array_equal(r, np.zeros((3, 3)))
    assert not np.any(np.signbit(np.diagonal(r)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_qr_non_contiguous_input_same_result(backend):
    # strided, Fortran-ordered and negative-stride inputs are copied to C order: same q and r
    f = get("qr", backend)
    base = np.random.default_rng(4).standard_normal((9, 12))
    keep = base.copy()
    for a in (base[:, ::2], np.asfortranarray(base[:, :7]), base[::-1, ::-3]):
        assert not a.flags.c_contiguous
        q, r = f(a)
        q0, r0 = f(np.ascontiguousarray(a))
        np.testing.assert_array_equal(q, q0)
        np.testing.assert_array_equal(r, r0)
        check_factorization(np.ascontiguousarray(a), q, r)
    np.testing.assert_array_equal(base, keep)  # input untouched


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_qr_does_not_write_its_input(backend, dtype):
    a = np.random.default_rng(2).standard_normal((8, 5)).astype(dtype)
    a.flags.writeable = False   # a read-only input is fine: nothing is written in place
    before = a.copy()
    get("qr", backend)(a)
    np.testing.assert_array_equal(a, before)


# ---- qr: stacks -----------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 9, 5), (2, 2, 70, 66), (1, 1, 1)], ids=lambda s: "x".join(map(str, s)))
def test_qr_stack_is_each_matrix_alone(backend, dtype, shape):
    # a (..., m, n): q (..., m, n), r (..., n, n), each the QR of its matrix (bit for bit on numba
    # and C, which run the same code per matrix; LAPACK's stacked loop may pick other kernels)
    f = get("qr", backend)
    a = np.random.default_rng(8).standard_normal(shape).astype(dtype)
    q, r = f(a)
    m, n = shape[-2:]
    assert q.shape == shape and r.shape == shape[:-2] + (n, n) and q.dtype == r.dtype == dtype
    for idx in np.ndindex(shape[:-2]):
        check_factorization(a[idx], q[idx], r[idx])
        q1, r1 = f(a[idx])
        if backend == "numpy":
            tol = 32 * max(m, n) * np.finfo(dtype).eps
            np.testing.assert_allclose(q[idx], q1, rtol=0, atol=tol)
            np.testing.assert_allclose(r[idx], r1, rtol=0, atol=tol * np.abs(r1).max())
        else:
            np.testing.assert_array_equal(q[idx], q1)
            np.testing.assert_array_equal(r[idx], r1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_qr_empty_stack(backend):
    q, r = get("qr", backend)(np.zeros((0, 4, 3)))
    assert q.shape == (0, 4, 3) and r.shape == (0, 3, 3)


# ---- qr: the C backend's paths --------------------------------------------------------------------
# csrc/orthogonal.c: sub-panels of QR_NB = 8 reflectors, one panel up to n = QR_ONE_PANEL = 64, blocks
# of QR_BLOCK = 32 above; n one below / on / one above each edge, square and tall, and a last block
# of a single column (n = 65, 97).

C_EDGE_SHAPES = [(m, n) for n in (7, 8, 9, 16, 17, 63, 64, 65, 95, 96, 97, 129) for m in (n, n + 1, 2 * n + 3)]


def c_edge_failures():
    """The LAPACK ratios, r's structure and the sign fix on every edge shape, both dtypes (run here
    and in a child process on the portable path): a list of what failed."""
    failures = []
    rng = np.random.default_rng(12)
    for m, n in C_EDGE_SHAPES:
        for dtype in DTYPES:
            a = rng.standard_normal((m, n)).astype(dtype)
            q, r = orthogonal.qr_c(a)
            resid, orth = ratios(a, q, r)
            ok = (resid < RATIO and orth < RATIO and np.all(np.tril(r, -1) == 0)
                  and np.all(np.diagonal(r) >= 0) and np.all(np.isfinite(q)))
            if not ok:
                failures.append(f"{m}x{n} {np.dtype(dtype).name}: ratios {resid:.3g}, {orth:.3g}")
    return failures


def test_qr_c_every_block_edge():
    get("qr", "c")
    assert not c_edge_failures()


def test_qr_c_every_block_edge_on_the_portable_path():
    # the sub-panel update has an AVX2 + FMA variant and a portable one; DEEPPROP_GEMM_ISA=portable
    # (read once per process) forces the portable one along with the GEMM's
    get("qr", "c")
    root = pathlib.Path(kernels.__file__).resolve().parent.parent
    env = dict(os.environ, DEEPPROP_GEMM_ISA="portable", OPENBLAS_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(root), str(root / "tests"), os.environ.get("PYTHONPATH", "")]))
    code = ("import json, kernels, test_orthogonal as t; "
            "print(json.dumps([kernels.backend_info()['gemm_isa'], t.c_edge_failures()]))")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    isa, failures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert isa.startswith("portable") and "forced" in isa, isa
    assert not failures, failures


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(9, 9), (64, 64), (300, 97)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_qr_c_stays_inside_its_work_buffer(dtype, shape):
    # the scratch is householder_qr_work(m, n) doubles: a guard region after it stays untouched
    get("qr", "c")
    from kernels import _c
    m, n = shape
    a = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    size = _c.lib.householder_qr_work(m, n)
    work = np.full(size + 4096, 1234.5)
    q, r = np.empty((m, n), dtype), np.empty((n, n), dtype)
    rc = _c.fn("householder_qr", dtype)(_c.ptr_out(q), _c.ptr_out(r), _c.ptr_out(work), _c.ptr(a), 1, m, n)
    assert rc == 0 and np.all(work[size:] == 1234.5)
    check_factorization(a, q, r)


@pytest.mark.parametrize("dtype", DTYPES)
def test_qr_c_blocked_special_values(dtype):
    # the blocked path (n > 64) keeps the documented behaviour: zeros give q = I exactly, a NaN
    # reaches its column of r and q, a rank-deficient a still factors
    f = get("qr", "c")
    q, r = f(np.zeros((90, 70), dtype=dtype))
    np.testing.assert_array_equal(q, np.eye(90, 70))
    np.testing.assert_array_equal(r, np.zeros((70, 70)))
    a = np.random.default_rng(6).standard_normal((90, 70)).astype(dtype)
    a[5, 40] = np.nan
    q, r = f(a)
    assert np.isnan(r[:, 40]).any() and np.isnan(q).any()
    a = np.random.default_rng(3).standard_normal((100, 70)).astype(dtype)
    a[:, 33] = 0
    a[:, 66] = a[:, 2]
    q, r = f(a)
    check_factorization(a, q, r)
    assert r[33, 33] == 0 and abs(float(r[66, 66])) < 50 * np.finfo(dtype).eps * norm1(a)


# ---- qr: special values ---------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("where", [(0, 0), (3, 0), (2, 2), (5, 3)])
def test_qr_nan_propagates(backend, dtype, where):
    # documented: no error; NaN reaches r and (the reflectors before it being nontrivial) q
    a = np.random.default_rng(6).standard_normal((6, 4)).astype(dtype)
    a[where] = np.nan
    q, r = get("qr", backend)(a)
    assert np.isnan(r).any() and np.isnan(q).any()
    assert np.isnan(r[:, where[1]]).any()  # the column holding the NaN


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_qr_inf_gives_non_finite(backend, dtype):
    a = np.random.default_rng(7).standard_normal((5, 3)).astype(dtype)
    a[0, 0] = np.inf
    q, r = get("qr", backend)(a)
    assert not np.isfinite(r[:, 0]).all() and np.isnan(q).any()


# ---- qr: bad input --------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(4,), (2, 3, 4), (3, 5), (1, 2), (3, 0), (0, 0), (0, 3)])
def test_qr_bad_shape(backend, shape):
    with pytest.raises(ValueError, match=r"^a: "):
        get("qr", backend)(np.ones(shape))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("a", [np.ones((4, 3), dtype=np.int64), np.ones((4, 3), dtype=np.float16),
                               np.ones((4, 3), dtype=np.complex128), [[1.0], [2.0]]],
                         ids=["int64", "float16", "complex", "list"])
def test_qr_bad_dtype(backend, a):
    with pytest.raises(TypeError, match=r"^a: "):
        get("qr", backend)(a)


# ---- orthogonal_init: structure ------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (5, 5), (9, 4), (4, 9), (1, 6), (6, 1), (300, 17), (17, 300)],
                         ids=lambda s: f"{s[0]}x{s[1]}")
def test_orthogonal_init_orthonormal(backend, dtype, shape):
    rows, cols = shape
    w = get("orthogonal_init", backend)(shape, gain=1.0, seed=42, dtype=np.dtype(dtype).name)
    assert w.shape == shape and w.dtype == dtype and w.flags.c_contiguous
    g = np.asarray(w, dtype=np.float64)
    gram = g.T @ g if rows >= cols else g @ g.T   # orthonormal columns, or rows when wide
    k = min(shape)
    err = norm1(np.eye(k) - gram) / (max(shape) * np.finfo(dtype).eps)
    assert err < RATIO, f"orthonormality ratio {err:.3g}"
    if rows == cols:  # square: orthogonal both ways
        assert norm1(np.eye(k) - g @ g.T) / (k * np.finfo(dtype).eps) < RATIO


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_orthogonal_init_wide_is_transpose_of_tall(backend, dtype):
    # both draw the same (max, min) Gaussian: the wide result is the tall one transposed
    f = get("orthogonal_init", backend)
    name = np.dtype(dtype).name
    np.testing.assert_array_equal(f((3, 8), seed=9, dtype=name), f((8, 3), seed=9, dtype=name).T)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_orthogonal_init_gain_scales(backend, dtype):
    f = get("orthogonal_init", backend)
    name = np.dtype(dtype).name
    w1 = f((7, 5), gain=1.0, seed=3, dtype=name)
    np.testing.assert_array_equal(f((7, 5), gain=2.0, seed=3, dtype=name), 2 * w1)  # exact: a power of 2
    np.testing.assert_array_equal(f((7, 5), gain=-1.0, seed=3, dtype=name), -w1)
    np.testing.assert_allclose(f((7, 5), gain=1.37, seed=3, dtype=name), 1.37 * w1.astype(np.float64),
                               rtol=2 * np.finfo(dtype).eps, atol=0)
    assert not np.any(f((7, 5), gain=0.0, seed=3, dtype=name))
    # the singular values are all gain
    s = np.linalg.svd(f((7, 5), gain=1.37, seed=3, dtype=name).astype(np.float64), compute_uv=False)
    np.testing.assert_allclose(s, 1.37, rtol=20 * np.finfo(dtype).eps)


@pytest.mark.parametrize("backend", BACKENDS)
def test_orthogonal_init_seeds(backend):
    f = get("orthogonal_init", backend)
    a, b = f((6, 4), seed=1, dtype="float64"), f((6, 4), seed=1, dtype="float64")
    np.testing.assert_array_equal(a, b)                       # same seed, same matrix
    assert not np.allclose(a, f((6, 4), seed=2, dtype="float64"))  # another seed, another one
    assert f((6, 4), seed=2**64 - 1).shape == (6, 4)          # the whole seed range is accepted


@pytest.mark.parametrize("backend", ["numba", "c"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(8, 8), (40, 3), (3, 40)])
def test_orthogonal_init_same_seed_same_matrix_across_backends(backend, dtype, shape):
    # normal_init agrees across backends within rounding, so q does too: within verify's QR bound
    name = np.dtype(dtype).name
    ref = get("orthogonal_init", "numpy")(shape, gain=1.5, seed=123, dtype=name)
    out = get("orthogonal_init", backend)(shape, gain=1.5, seed=123, dtype=name)
    tol = 32 * max(shape) * np.finfo(dtype).eps * np.abs(ref).max()
    assert np.abs(out.astype(np.float64) - ref).max() <= tol


# ---- orthogonal_init: Haar distribution -----------------------------------------------------------

N_HAAR = 4000
HAAR_N = 4
P_MIN = 1e-3


def haar_pvalues(qs):
    """Two-sided p-values of Haar(O(n)) properties of a stack of square orthogonal matrices:
    sign(det) and sign(q[0, 0]) fair coins; trace with mean 0 and variance 1 (z tests, the
    variance's standard error from the sample's 4th moment); trace vs scipy's ortho_group (KS)."""
    n_samples = len(qs)
    det_pos = int(np.count_nonzero(np.linalg.det(qs) > 0))
    q00_pos = int(np.count_nonzero(qs[:, 0, 0] > 0))
    tr = np.trace(qs, axis1=1, axis2=2)
    z_mean = tr.mean() / (tr.std() / np.sqrt(n_samples))
    dev2 = (tr - tr.mean()) ** 2
    z_var = (dev2.mean() - 1.0) / np.sqrt(dev2.var() / n_samples)
    ref = scipy.stats.ortho_group.rvs(qs.shape[1], size=n_samples, random_state=np.random.default_rng(2024))
    return {
        "det sign": scipy.stats.binomtest(det_pos, n_samples, 0.5).pvalue,
        "q00 sign": scipy.stats.binomtest(q00_pos, n_samples, 0.5).pvalue,
        "trace mean": 2 * scipy.stats.norm.sf(abs(z_mean)),
        "trace variance": 2 * scipy.stats.norm.sf(abs(z_var)),
        "trace KS vs ortho_group": scipy.stats.ks_2samp(tr, np.trace(ref, axis1=1, axis2=2)).pvalue,
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_orthogonal_init_is_haar(backend):
    f = get("orthogonal_init", backend)
    qs = np.stack([f((HAAR_N, HAAR_N), seed=s, dtype="float64") for s in range(N_HAAR)])
    p = haar_pvalues(qs)
    assert all(v > P_MIN for v in p.values()), p


def test_haar_checks_detect_a_missing_sign_fix():
    # the same draws through LAPACK's QR without the sign fix: q[0, 0] = a00 / (-sign(a00) ||a0||)
    # is always negative and det q = (-1)^(n-1) always, so the checks above must reject them
    draw = init.KERNELS["normal_init"]["numpy"]
    qs = np.stack([np.linalg.qr(draw((HAAR_N, HAAR_N), 0.0, 1.0, s, "float64"))[0] for s in range(N_HAAR)])
    p = haar_pvalues(qs)
    assert p["det sign"] < 1e-100 and p["q00 sign"] < 1e-100
    assert p["trace mean"] < P_MIN and p["trace KS vs ortho_group"] < P_MIN, p
    # and the fixed kernel on the same draws is accepted (the statistic is not simply hard to pass)
    assert min(haar_pvalues(np.stack([orthogonal.orthogonal_init((HAAR_N, HAAR_N), seed=s, dtype="float64")
                                      for s in range(N_HAAR)])).values()) > P_MIN


# ---- orthogonal_init: bad input -------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(5,), 5, (2, 3, 4), (), (0, 3), (3, 0), (0, 0)])
def test_orthogonal_init_bad_shape(backend, shape):
    with pytest.raises(ValueError, match=r"^shape"):
        get("orthogonal_init", backend)(shape)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kwargs,exc,match", [
    ({"shape": (-1, 3)}, ValueError, r"^shape\[0\]"),
    ({"shape": (2.5, 3)}, TypeError, r"^shape\[0\]"),
    ({"shape": "ab"}, TypeError, r"^shape"),
    ({"gain": float("nan")}, ValueError, r"^gain"),
    ({"gain": float("inf")}, ValueError, r"^gain"),
    ({"gain": "1"}, TypeError, r"^gain"),
    ({"seed": -1}, ValueError, r"^seed"),
    ({"seed": 2**64}, ValueError, r"^seed"),
    ({"seed": 1.5}, TypeError, r"^seed"),
    ({"dtype": "int32"}, TypeError, r"^dtype"),
    ({"dtype": "float16"}, TypeError, r"^dtype"),
])
def test_orthogonal_init_bad_arguments(backend, kwargs, exc, match):
    args = {"shape": (4, 3), **kwargs}
    with pytest.raises(exc, match=match):
        get("orthogonal_init", backend)(**args)


def test_orthogonal_init_uses_normal_init_at_call_time(monkeypatch):
    # the draw is looked up in kernels.init.KERNELS when called, on the caller's backend
    calls = []

    def spy(backend):
        def draw(shape, mean, std, seed, dtype):
            calls.append((backend, tuple(shape), mean, std, seed, dtype))
            return _fallback_normal(shape, mean, std, seed, dtype)
        return draw

    monkeypatch.setitem(init.KERNELS, "normal_init", {b: spy(b) for b in BACKENDS})
    for b in BACKENDS:
        get("orthogonal_init", b)((3, 7), gain=2.0, seed=5, dtype="float64")
    assert calls == [(b, (7, 3), 0.0, 1.0, 5, "float64") for b in BACKENDS]


def test_orthogonal_init_without_normal_init_says_so(monkeypatch):
    monkeypatch.delitem(init.KERNELS, "normal_init")
    with pytest.raises(RuntimeError, match="normal_init"):
        orthogonal.orthogonal_init((3, 3))
