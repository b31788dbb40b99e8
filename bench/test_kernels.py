"""Every kernel x backend x dtype x size, from the registry: a new kernel or backend is benchmarked with no
new bench code. torch joins as a backend when it is importable (kernels.torch_peer).

Inputs come from the kernel's workload (kernels.bench.WORKLOADS, `deepprop bench --workloads`); they are
built, the kernel is JIT-compiled and its result checked against the NumPy reference once, all outside
the timed call (kernels.bench.prepare_case). Kernels that write in place get those arguments restored
before every round, untimed. Output allocation is inside the timed call for every backend alike.

    pytest bench/ --benchmark-only                      time them (backends side by side per group)
    pytest bench/ --benchmark-only -k batchnorm --benchmark-save=bn
    DEEPPROP_BENCH_SIZES=all pytest bench/ --benchmark-only     every default size, not just the first two
A plain `pytest` run executes each once (--benchmark-disable in addopts), so the suites cannot rot.

Each benchmark's extra_info holds kernel, backend, dtype, size, shape, flops, bytes (kernels.bench's byte
rule), bound, threads (BLAS, Numba, torch) and the BLAS architecture, so a saved JSON turns into GFLOP/s
and GB/s: gflops = flops / stats.median / 1e9, gbps = bytes / stats.median / 1e9. These run in one process;
`deepprop bench` is the isolated comparison (one spawned process per backend, one --threads setting).
"""

import os

import pytest
import threadpoolctl

import kernels
from kernels import bench, torch_peer

AVAILABLE = [b for b, why in bench.available_backends().items() if why is None]


def _sizes(name):
    sizes = bench.workload(name).sizes
    return sizes if os.environ.get("DEEPPROP_BENCH_SIZES") == "all" else sizes[:2]


CASES = [(name, backend, dtype, n)
         for name in kernels.names()
         for backend in AVAILABLE if backend != "torch" or torch_peer.has_peer(name)
         for dtype in bench.DTYPES
         for n in _sizes(name)]


def _threads(backend):
    pools = threadpoolctl.threadpool_info()
    out = {"blas": [p.get("num_threads") for p in pools if p.get("user_api") == "blas"]}
    if kernels._numba.numba is not None:
        out["numba"] = kernels._numba.numba.get_num_threads()
    if backend == "torch":
        import torch

        out["torch"] = torch.get_num_threads()
    return out, "; ".join(f"{p['internal_api']} {p.get('architecture') or '?'}" for p in pools
                          if p.get("user_api") == "blas")


@pytest.mark.parametrize(("name", "backend", "dtype", "size"), CASES,
                         ids=[f"{n}-{b}-{d}-{s}" for n, b, d, s in CASES])
def test_kernel(benchmark, name, backend, dtype, size):
    row, call, restore = bench.prepare_case(name, backend, dtype, size)  # builds, compiles, checks: untimed
    assert call is not None, row.get("error")
    threads, blas_arch = _threads(backend)
    benchmark.group = f"{name} {dtype} n={size}"
    benchmark.extra_info.update(
        kernel=name, backend=backend, dtype=dtype, size=size, shape=row["shape"], bound=row["bound"],
        flops=row["flops"], bytes=row["bytes"], threads=threads, blas_arch=blas_arch,
        OPENBLAS_CORETYPE=os.environ.get("OPENBLAS_CORETYPE"), check=row["check"])
    if restore is None:
        benchmark(call)
    else:  # in-place arguments restored before each round, outside the timing
        benchmark.pedantic(call, setup=restore, rounds=50, iterations=1, warmup_rounds=1)
