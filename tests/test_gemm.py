"""The C backend's GEMM (csrc/gemm.c) behind linear_forward / linear_backward, on every micro-kernel path
this CPU runs, forced with DEEPPROP_GEMM_ISA in a fresh process (the path is chosen once per process).

Each path runs the linear kernels on shapes that cross every block edge of every path's blocking --
the register tile MR x NR, the cache blocks MC, KC, NC, one below, on and one above -- in each of the
three GEMMs (forward x W: m=N, n=M, k=K; dx = dz W^T: m=N, n=K, k=M; dW = x^T dz: m=K, n=M, k=N), so
every packing routine (A and B, plain and transposed), every partial tile, every balanced k block
and the fused bias + activation store are exercised. The results must meet the componentwise BLAS
bound |C - C_ref| <= 16 eps (|A|·|B|) against the float64 product, y must be the elementwise
activation of z bit for bit, and K = 0, N = 0, M = 0 give their documented results.
Slices: a product's rows (columns) must be bit for bit those of the same rows (columns) of a larger
product, so the small-GEMM paths (B packed per micro-panel, A not packed, a split last panel) give
exactly what the packed blocks give.

Threads: the children run with DEEPPROP_GEMM_THREAD_MIN_WORK=0, so every GEMM of every shape runs on
the OMP_NUM_THREADS team; the results (a digest of every output) must be bit for bit the same for 1, 2
and 3 threads (3: shares of unequal size, more threads than this machine's cores). A process that ran a
threaded GEMM must still start spawn and fork children that run one (libgomp's pool dies in a fork).
"""

import functools
import hashlib
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import kernels
from tests import forking  # absolute: this file also runs as a script (--worker)

# every blocking's MR, NR, MC, KC, NC one below / on / one above (csrc/gemm.c's tables):
# MR 4, 6, 14; NR 4, 8, 16, 32; MC 64, 72, 128, 144, 168; KC 128, 256; NC 1024, 2048, 4096
EDGES = (1, 3, 4, 5, 6, 7, 8, 9, 13, 14, 15, 16, 17, 31, 32, 33, 63, 64, 65, 71, 72, 73, 127, 128, 129,
         143, 144, 145, 167, 168, 169, 255, 256, 257, 1025)
SMALL = (1, 7, 17)
BIG = (255, 256, 257, 1025)
ACTS = ("identity", "relu", "tanh", "leaky_relu", "sigmoid", "elu", "gelu")
ALPHA = {"leaky_relu": 0.1, "elu": 0.7}


def shapes():
    """(N, K, M) triples: each dimension walks EDGES with the others small; pairs of big dimensions
    (several MC / KC / NC blocks at once, with partial ones); all-big cubes; n past every NC; several
    groups of k blocks for a team's claimed m blocks."""
    out = []
    for e in EDGES:
        for o1, o2 in ((1, 7), (17, 1), (7, 17)):
            out += [(e, o1, o2), (o1, e, o2), (o1, o2, e)]
    for a in BIG:
        for b in BIG:
            out += [(a, b, 7), (a, 7, b), (7, a, b)]
    out += [(255, 257, 129), (257, 255, 257), (145, 513, 169), (1025, 257, 1025)]
    out += [(5, 17, 2047), (7, 33, 2049), (3, 9, 4097), (2049, 15, 6)]
    # a team's claimed m blocks with B packed for a group of k blocks: k x n too big for one group
    # (float64: 3 groups of 2 k blocks, the last partial; float32: 2 groups)
    out += [(400, 1100, 1000)]
    return list(dict.fromkeys(out))


EMPTY = ((4, 0, 3), (1025, 0, 17), (3, 0, 1025), (0, 5, 3), (0, 257, 33), (4, 5, 0), (33, 257, 0), (0, 0, 0))


def _operands(rng, N, K, M, dt):
    """x (N, K), W (K, M), b (M,), dy (N, M): standard normal, drawn in that order, in dtype dt."""
    return tuple(rng.standard_normal(shape).astype(dt) for shape in ((N, K), (K, M), (M,), (N, M)))


def _bound_ok(got, want, den, terms):
    """|got - want| <= 16 eps den + terms * eta (eta: the dtype's smallest subnormal; each of the
    terms products may underflow, gradual underflow adds at most eta to each); (ok, worst ratio)."""
    info = np.finfo(got.dtype)
    err = np.abs(got.astype(np.float64) - want)
    bound = 16 * float(info.eps) * den + terms * float(info.smallest_subnormal)
    return bool(np.all(err <= bound)), float(np.max(err / np.maximum(bound, 1e-300), initial=0.0))


def worker() -> dict:
    """Run in the child process: every shape and empty case on the path DEEPPROP_GEMM_ISA forced."""
    from kernels.linear import linear_backward_c, linear_forward_c

    rng = np.random.default_rng(2024)
    failures, checked = [], 0
    digest = hashlib.sha256()

    def fail(what, shape, dt, act, detail=""):
        failures.append(f"{what} {shape} {np.dtype(dt).name} {act} {detail}".strip())

    for idx, (N, K, M) in enumerate(shapes()):
        act = ACTS[idx % len(ACTS)]
        alpha = ALPHA.get(act)
        for dt in (np.float32, np.float64):
            x = rng.standard_normal((N, K)).astype(dt)
            W = rng.standard_normal((K, M)).astype(dt)
            b = None if idx % 3 == 0 else rng.standard_normal(M).astype(dt)
            dy = rng.standard_normal((N, M)).astype(dt)
            x64, W64 = x.astype(np.float64), W.astype(np.float64)
            ax, aW = np.abs(x64), np.abs(W64)
            b64 = np.zeros(M) if b is None else b.astype(np.float64)
            y, z = linear_forward_c(x, W, b, act, alpha, keep_preactivation=True)
            ok, err = _bound_ok(z, x64 @ W64 + b64, ax @ aW + np.abs(b64), K + 1)
            if not ok:
                fail("z bound", (N, K, M), dt, act, f"max error / bound = {err:.2f}")
            y_elem = kernels.get(f"{act}_forward", "c")(z, alpha=alpha)
            if not np.array_equal(y, y_elem):
                fail("y != act(z)", (N, K, M), dt, act)
            if not np.array_equal(linear_forward_c(x, W, b, act, alpha), y):
                fail("y without z differs", (N, K, M), dt, act)
            dx, dW, db = linear_backward_c(dy, x, W, z, act, alpha)
            for a in (y, z, dx, dW, db):
                digest.update(a.tobytes())
            # the GEMMs multiply dz = dy * act'(z) as the backward computes it, in the dtype: the
            # elementwise kernel's result (bit for bit: one formula, act_scalar.h). Against the float64
            # dz, an act' that underflows in float32 (gelu' at z = -20) would fail any relative bound.
            dz = kernels.get(f"{act}_backward", "c")(dy, z, alpha=alpha).astype(np.float64)
            adz = np.abs(dz)
            for name, got, want, den, terms in (("dx", dx, dz @ W64.T, adz @ aW.T, M),
                                                ("dW", dW, x64.T @ dz, ax.T @ adz, N),
                                                ("db", db, dz.sum(0), adz.sum(0), 1)):
                ok, err = _bound_ok(got, want, den, terms)
                if not ok:
                    fail(f"{name} bound", (N, K, M), dt, act, f"max error / bound = {err:.2f}")
            checked += 1
    for N, K, M in EMPTY:   # every case has a zero dimension: z = b broadcast; dx, dW zero or empty
        for dt in (np.float32, np.float64):
            x, W, b, dy = _operands(rng, N, K, M, dt)
            y, z = linear_forward_c(x, W, b, "relu", keep_preactivation=True)
            if not (z.shape == (N, M) and np.array_equal(z, np.broadcast_to(b, (N, M)))
                    and np.array_equal(y, np.maximum(z, 0))):
                fail("empty forward", (N, K, M), dt, "relu")
            if not np.array_equal(linear_forward_c(x, W, None, "sigmoid"), np.full((N, M), 0.5, dt)):
                fail("empty forward without bias", (N, K, M), dt, "sigmoid")
            dx, dW, db = linear_backward_c(dy, x, W, z, "relu")
            dz = dy.astype(np.float64) * (z > 0)
            if not (np.array_equal(dx, np.zeros((N, K), dt)) and np.array_equal(dW, np.zeros((K, M), dt))):
                fail("empty backward: dx, dW not zero", (N, K, M), dt, "relu")
            if not (db.shape == (M,) and _bound_ok(db, dz.sum(0), np.abs(dz).sum(0), 1)[0]):
                fail("empty backward: db", (N, K, M), dt, "relu")
            checked += 1
    sliced = _slices(rng, fail)
    return {"isa": kernels.backend_info()["gemm_isa"], "checked": checked, "failures": failures,
            "digest": digest.hexdigest(), "sliced": sliced}


SLICES = (1, 5, 6, 7, 8, 9, 13, 128, 131, 144, 145, 174, 175, 283)


def _slices(rng, fail) -> int:
    """Each element of C is one micro-kernel's k loop in the same order whatever the blocking of m
    and n, so the rows (columns) of a product are bit for bit those of the same rows (columns) of a
    larger one. A few rows take the small-GEMM paths (one block of A: B packed micro-panel by
    micro-panel in the macro-kernel; on avx2 A not packed at all; the last panel split in two), many
    rows the packed blocks: every one must give the same bits. Forward and dx by rows of x; dW and
    dx by columns of x (rows of W). Returns the comparisons made."""
    from kernels.linear import linear_backward_c, linear_forward_c

    N, K, M = 1025, 257, 129
    done = 0
    for dt in (np.float32, np.float64):
        x, W, b, dy = _operands(rng, N, K, M, dt)
        y, z = linear_forward_c(x, W, b, "relu", keep_preactivation=True)
        dx, dW, db = linear_backward_c(dy, x, W, z, "relu")
        for n in SLICES:
            ys, zs = linear_forward_c(x[:n], W, b, "relu", keep_preactivation=True)
            dxs = linear_backward_c(dy[:n], x[:n], W, z[:n], "relu")[0]
            if not (np.array_equal(ys, y[:n]) and np.array_equal(zs, z[:n]) and np.array_equal(dxs, dx[:n])):
                fail("rows of x differ from those of the larger product", (n, K, M), dt, "relu")
            dxk, dWk, _ = linear_backward_c(dy, np.ascontiguousarray(x[:, :n]), W[:n], z, "relu")
            if n <= K and not (np.array_equal(dWk, dW[:n]) and np.array_equal(dxk, dx[:, :n])):
                fail("columns of x differ from those of the larger product", (N, n, M), dt, "relu")
            done += 1
    return done


PATHS = ("portable", "avx2", "avx2-as-avx512", "avx512")


def _env(**extra) -> dict:
    root = pathlib.Path(kernels.__file__).resolve().parent.parent
    # passive: idle team threads sleep instead of spinning on the shared cores (3 threads on 2 cores)
    return dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_WAIT_POLICY="passive",
                PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]), **extra)


@functools.cache
def _run_child(path: str, threads: int = 2) -> dict:
    env = _env(DEEPPROP_GEMM_ISA=path, OMP_NUM_THREADS=str(threads), DEEPPROP_GEMM_THREAD_MIN_WORK="0")
    proc = subprocess.run([sys.executable, __file__, "--worker"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _cpu_runs(path: str) -> bool:
    """The dispatcher honours a forced path only where the CPU runs it (else it says 'ignored')."""
    level = {"portable": 0, "avx2": 1, "avx2-as-avx512": 1, "avx512": 2}[path]
    return kernels._c.lib.machine_isa() >= level


@pytest.mark.skipif(kernels.backends()["c"] is not None, reason="C backend not built")
@pytest.mark.parametrize("path", PATHS)
def test_linear_on_every_block_edge_under_each_isa_path(path):
    if not _cpu_runs(path):
        pytest.skip(f"this CPU cannot run the {path} micro-kernels (it compiles; the dispatcher skips it)")
    res = _run_child(path)
    assert res["isa"].split()[0] == path and "forced" in res["isa"], res["isa"]
    assert "; 2 threads (OpenMP)" in res["isa"], res["isa"]   # every GEMM ran on a team of 2
    assert res["checked"] == 2 * (len(shapes()) + len(EMPTY))
    assert res["sliced"] == 2 * len(SLICES)
    assert not res["failures"], "\n".join(res["failures"][:20])


@pytest.mark.skipif(kernels.backends()["c"] is not None, reason="C backend not built")
@pytest.mark.parametrize("path", PATHS)
def test_thread_count_never_changes_a_result(path):
    if not _cpu_runs(path):
        pytest.skip(f"this CPU cannot run the {path} micro-kernels")
    runs = {t: _run_child(path, t) for t in (1, 2, 3)}
    for t, res in runs.items():
        assert f"; {t} thread{'s' if t > 1 else ''} (OpenMP)" in res["isa"], res["isa"]
        assert not res["failures"], "\n".join(res["failures"][:20])
    assert runs[1]["digest"] == runs[2]["digest"] == runs[3]["digest"]


_FORK_CHILD = """
import sys
import numpy as np
import kernels
from kernels.linear import linear_forward_c
from tests.forking import spawn_and_fork

def child(q):
    a = np.full((300, 300), 0.5, np.float32)
    q.put((float(linear_forward_c(a, a)[7, 7]), kernels.backend_info()["gemm_isa"]))

if __name__ == "__main__":
    a = np.full((300, 300), 0.5, np.float32)
    # the parent's team: C's, or Numba's threaded GEMM (the same libgomp, a team C cannot see)
    forward = kernels.get("linear_forward", sys.argv[1])
    print("parent", float(forward(a, a)[7, 7]), kernels.backend_info()["gemm_isa"], flush=True)
    spawn_and_fork(child)
"""


@pytest.mark.skipif(kernels.backends()["c"] is not None, reason="C backend not built")
@pytest.mark.parametrize("parent_team", ["c", "numba"])
def test_threaded_gemm_then_spawn_and_fork_children(tmp_path, parent_team):
    """libgomp's thread pool does not survive fork: a forked child must fall back to one thread
    (and say so) instead of hanging; a spawned child starts fresh with its own team. Also when the
    parent's first team was Numba's threaded GEMM (the same libgomp)."""
    if parent_team == "numba" and kernels.backends()["numba"] is not None:
        pytest.skip("numba is not available")
    lines = forking.run_script(tmp_path, _FORK_CHILD, parent_team, OMP_NUM_THREADS="2", NUMBA_NUM_THREADS="2")
    assert lines["parent"].startswith("75.0 ") and "2 threads (OpenMP)" in lines["parent"], lines
    assert lines["spawn"].startswith("0 75.0 ") and "2 threads (OpenMP)" in lines["spawn"], lines
    assert lines["fork"].startswith("0 75.0 ") and "1 thread (OpenMP; a fork" in lines["fork"], lines


@pytest.mark.skipif(kernels.backends()["c"] is not None, reason="C backend not built")
def test_dispatch_defaults_to_the_widest_path_and_ignores_what_the_cpu_cannot_run():
    root = pathlib.Path(kernels.__file__).resolve().parent.parent
    code = "import kernels; print(kernels.backend_info()['gemm_isa'])"

    def isa(value):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
        env.pop("DEEPPROP_GEMM_ISA", None)
        if value is not None:
            env["DEEPPROP_GEMM_ISA"] = value
        return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                              check=True).stdout.strip()

    widest = {0: "portable", 1: "avx2", 2: "avx512"}[kernels._c.lib.machine_isa()]
    assert isa(None).split()[0] == widest and "DEEPPROP_GEMM_ISA" not in isa(None)
    assert isa("auto") == isa(None)
    bogus = isa("sse9")
    assert bogus.split()[0] == widest and "ignored" in bogus
    if widest != "avx512":
        assert isa("avx512").split()[0] == widest and "ignored" in isa("avx512")


if __name__ == "__main__" and sys.argv[1:] == ["--worker"]:
    print(json.dumps(worker()))
