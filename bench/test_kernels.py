"""Every kernel x backend x dtype x size, from the registry: a new kernel is benchmarked with no new
bench code. Inputs are built and the kernel is JIT-compiled and checked against the reference once,
all outside the timed call; each timed round gets fresh copies (in-place kernels stay honest).

    pytest bench/ --benchmark-only --benchmark-group-by=param:name,param:dtype,param:size
times them with backends side by side; a plain `pytest` run executes each once (--benchmark-disable).
"""

import copy

import numpy as np
import pytest
import threadpoolctl

import kernels
from kernels import verify

BENCH_SIZES = (65, 1025)
AVAILABLE = [b for b, why in kernels.backends().items() if why is None]


@pytest.mark.parametrize("size", BENCH_SIZES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("backend", AVAILABLE)
@pytest.mark.parametrize("name", kernels.names())
def test_kernel(benchmark, name, backend, dtype, size):
    result = verify.check_case(name, backend, dtype, size)  # compiles, and validates before timing
    assert result.ok, result
    kwargs = kernels.CASES[name](np.random.default_rng(size), size, np.dtype(dtype))
    fn = kernels.REGISTRY[name][backend]
    benchmark.group = f"{name} {dtype} n={size}"
    benchmark.extra_info.update(
        backend=backend, dtype=dtype, size=size,
        blas=[(p.get("internal_api"), p.get("architecture"), p.get("num_threads"))
              for p in threadpoolctl.threadpool_info()])
    benchmark.pedantic(fn, setup=lambda: ((), copy.deepcopy(kwargs)), rounds=20, warmup_rounds=1)
