"""pytest-benchmark configuration: stamp saved runs with the machine, and let `--benchmark-only` work
although pyproject's addopts carry `--benchmark-disable` (so a plain `pytest` runs each benchmark once)."""

import os

import pytest
import threadpoolctl


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """`pytest bench/ --benchmark-only` means: time them. pytest-benchmark refuses --benchmark-only
    together with the --benchmark-disable from addopts; --benchmark-enable overrides the latter."""
    if getattr(config.option, "benchmark_only", False):
        config.option.benchmark_enable = True


def pytest_benchmark_update_machine_info(config, machine_info):
    """Stamp every saved benchmark run with the BLAS library, its architecture, thread counts, the
    machine's measured limits (when cached: `deepprop info` measures them) and the versions."""
    import kernels
    from kernels import machine

    machine_info["blas"] = [
        {k: p.get(k) for k in ("user_api", "internal_api", "version", "architecture", "num_threads")}
        for p in threadpoolctl.threadpool_info()
    ]
    machine_info["OPENBLAS_CORETYPE"] = os.environ.get("OPENBLAS_CORETYPE")
    machine_info["thread_settings"] = machine.thread_settings()
    machine_info["deepprop_backends"] = kernels.backend_info()
    machine_info["deepprop_commit"] = machine.commit()
    machine_info["deepprop_limits"] = machine.limits(measure_if_missing=False)
    torch = machine.torch_info()
    machine_info["torch"] = torch and {k: torch.get(k) for k in ("version", "num_threads", "cpu_capability")}
