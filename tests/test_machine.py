"""deepprop info and the machine probe: correctness only, never a timed assert (figures vary with load)."""

import json
import math

import numpy as np
import pytest

import kernels
from kernels import _c, machine

needs_c = pytest.mark.skipif(_c.UNAVAILABLE is not None, reason=f"C backend unavailable: {_c.UNAVAILABLE}")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Never read or write the user's real limits cache from a test."""
    monkeypatch.setenv("DEEPPROP_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_cpu_describes_this_machine():
    c = machine.cpu()
    assert isinstance(c["model"], str) and c["model"]
    assert c["usable_cores"] >= 1
    assert isinstance(c["flags"], list)
    assert all(v > 0 for v in c["caches"].values())


@needs_c
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fma_probe_returns_positive_finite_gflops(dtype):
    for isa in range(machine.probe_isa() + 1):  # every variant this CPU runs, portable C included
        g = machine.fma_peak(dtype, threads=1, seconds=0.002, rounds=1, isa=isa)
        assert math.isfinite(g) and g > 0, (isa, g)
    g2 = machine.fma_peak(dtype, threads=2, seconds=0.002, rounds=1)
    assert math.isfinite(g2) and g2 > 0


@needs_c
def test_probe_counts_the_flops_and_bytes_it_does():
    ffi, lib = _c.ffi, _c.lib
    sink = ffi.new("double *")
    isa = machine.probe_isa()
    lanes = {0: 1, 1: 8, 2: 16}[isa]
    chains = {0: 16, 1: 12, 2: 16}[isa]
    assert lib.machine_fma_f32(sink, 1000, isa) == 2 * chains * lanes * 1000
    assert math.isfinite(sink[0]) and sink[0] > 0  # the chains converge; nothing overflowed
    n = 1001
    a, b, c = np.zeros(n), np.arange(n, dtype=np.float64), np.full(n, 2.0)
    p = lambda x: ffi.cast("double *", x.ctypes.data)  # noqa: E731
    assert lib.machine_stream_triad(p(a), p(b), p(c), n, 3, 0.5, isa) == 3 * 8 * n * 3
    np.testing.assert_array_equal(a, b + 0.5 * c)  # the triad really ran
    assert lib.machine_stream_copy(p(a), p(c), n, 2, -1) == 2 * 8 * n * 2
    np.testing.assert_array_equal(a, c)


@needs_c
def test_an_isa_the_cpu_lacks_is_refused_not_run():
    isa = machine.probe_isa()
    if isa == 2:
        pytest.skip("this CPU runs every probe variant")
    assert _c.lib.machine_fma_f64(_c.ffi.new("double *"), 10, isa + 1) == -1
    with pytest.raises(ValueError, match="does not run probe ISA"):
        machine.fma_peak("float64", isa=isa + 1)


@needs_c
@pytest.mark.parametrize("kind", ["copy", "triad"])
def test_stream_probe_returns_positive_finite_bandwidth(kind):
    for threads in (1, 2):
        bw = machine.stream(kind, working_set=1 << 16, threads=threads, seconds=0.002, rounds=1)
        assert math.isfinite(bw) and bw > 0


@needs_c
def test_limits_are_measured_once_then_cached(private_cache):
    first = machine.limits(quick=True)
    assert first["source"].startswith("measured now")
    for per in first["fma_gflops"].values():
        assert all(math.isfinite(v) and v > 0 for v in per.values())
    for kind in ("copy", "triad"):
        for level in machine.LEVELS:
            assert all(math.isfinite(v) and v > 0 for v in first["bandwidth_gbps"][kind][level].values())
    files = list(private_cache.glob("machine-*.json"))
    assert len(files) == 1
    again = machine.limits(quick=True)
    assert again["source"].startswith("cached")
    assert again["fma_gflops"] == first["fma_gflops"]
    assert again["bandwidth_gbps"] == first["bandwidth_gbps"]
    assert machine.limits(measure_if_missing=False) is None  # a quick entry never stands in for a real one


@needs_c
def test_cache_is_keyed_by_cpu_and_build(private_cache):
    key = machine.cache_key()
    assert set(key) >= {"model", "flags", "cores", "build", "probe_version"}
    lim = {"cores": 1, "fma_gflops": {"float32": {"1": 1.0}, "float64": {"1": 0.5}}}
    machine.save_cached(lim, key)
    assert machine.load_cached(key) == lim
    assert machine.load_cached({**key, "build": key["build"] + " -march=native"}) is None
    assert machine.load_cached({**key, "flags": key["flags"] + ["avx512f_pretend"]}) is None
    machine.cache_path(key).write_text("{not json")
    assert machine.load_cached(key) is None  # a corrupt cache is ignored, not fatal


LIMITS = {"cores": 2, "caches": {"L1d": 32 << 10, "L2": 512 << 10, "L3": 32 << 20},
          "fma_gflops": {"float32": {"1": 100.0, "2": 190.0}, "float64": {"1": 50.0, "2": 95.0}},
          "bandwidth_gbps": {k: {"L1": {"1": 200.0, "2": 390.0}, "L2": {"1": 90.0, "2": 170.0},
                                 "L3": {"1": 60.0, "2": 110.0}, "DRAM": {"1": 20.0, "2": 30.0}}
                             for k in ("copy", "triad")}}


def test_limit_for_compute_scales_with_threads_up_to_the_all_core_figure():
    assert machine.limit_for(LIMITS, "compute", "float32", 1)[0] == 100.0
    assert machine.limit_for(LIMITS, "compute", "float64", 2)[0] == 95.0
    assert machine.limit_for(LIMITS, "compute", "float64", 8)[0] == 95.0  # no more cores than there are


def test_limit_for_memory_picks_the_level_the_bytes_fit_in():
    assert machine.limit_for(LIMITS, "memory", "float32", 1, 16 << 10)[0] == 200.0
    assert machine.limit_for(LIMITS, "memory", "float32", 1, 100 << 10)[0] == 90.0
    assert machine.limit_for(LIMITS, "memory", "float32", 2, 100 << 10)[0] == 170.0
    assert machine.limit_for(LIMITS, "memory", "float32", 1, 4 << 20)[0] == 60.0
    value, unit, text = machine.limit_for(LIMITS, "memory", "float64", 2, 1 << 30)
    assert (value, unit) == (30.0, "GB/s") and "DRAM" in text


def test_coretype_note_only_when_pinned():
    assert machine.coretype_note({}) is None
    note = machine.coretype_note({"OPENBLAS_CORETYPE": "Haswell"})
    assert "Haswell" in note and "--blas-coretype auto" in note


def test_blas_reports_the_architecture():
    pools = machine.blas()
    assert any(p["user_api"] == "blas" for p in pools)
    assert "openblas" in machine.blas_architecture(pools) or "mkl" in machine.blas_architecture(pools) \
        or machine.blas_architecture(pools) == "no BLAS found"


def test_info_cli_json_without_measuring(capsys):
    from kernels import cli

    assert cli.main(["info", "--no-measure", "--format", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["limits"] is None  # nothing cached in the private cache, and told not to measure
    assert d["cpu"]["usable_cores"] >= 1
    assert d["software"]["numpy"] == np.__version__
    assert d["software"]["c_build"] == kernels.backend_info()["c_build"]
    assert set(d["threads"]) >= {"OMP_NUM_THREADS", "OPENBLAS_CORETYPE", "NUMBA_NUM_THREADS"}


@needs_c
def test_info_text_shows_limits_blas_threads_and_versions(capsys):
    machine.limits(quick=True)  # fills the private cache with a rough (quick) entry ...
    d = machine.info(measure_limits=False)
    assert d["limits"] is None  # ... which `deepprop info` does not take for the real limits
    d["limits"] = machine.limits(quick=True)
    text = machine.format_info(d)
    for needle in ("CPU", "FMA peak float32", "FMA peak float64", "triad", "DRAM", "OPENBLAS_CORETYPE",
                   "numba", "C build", "torch"):
        assert needle in text, needle
