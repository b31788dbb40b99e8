import threadpoolctl


def pytest_benchmark_update_machine_info(config, machine_info):
    """Stamp every saved benchmark run with the BLAS library, its architecture and thread counts."""
    import os

    import kernels

    machine_info["blas"] = [
        {k: p.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
        for p in threadpoolctl.threadpool_info()
    ]
    machine_info["OPENBLAS_CORETYPE"] = os.environ.get("OPENBLAS_CORETYPE")
    machine_info["deepprop_backends"] = kernels.backend_info()
