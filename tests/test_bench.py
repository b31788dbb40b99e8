"""deepprop bench and deepprop report: correctness only, never a timed assert.

One small run (residual_add, tiny sizes, --repeat 2, one thread) spawns a child per available backend
and is shared by the tests that read its rows; the rest call the pieces in process."""

import csv
import io
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import types

import numpy as np
import pytest

import kernels
from kernels import _c, bench, machine, torch_peer
from kernels import report as report_mod

HAVE_TORCH = torch_peer.available() is None
AVAILABLE = [b for b, why in bench.available_backends().items() if why is None]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("limits")
    old = os.environ.get("DEEPPROP_CACHE_DIR")
    os.environ["DEEPPROP_CACHE_DIR"] = str(d)
    yield d
    if old is None:
        os.environ.pop("DEEPPROP_CACHE_DIR", None)
    else:
        os.environ["DEEPPROP_CACHE_DIR"] = old


@pytest.fixture(scope="module")
def limits(cache_dir):
    return machine.limits(quick=True)  # rough figures: the tests only check they are used consistently


@pytest.fixture(scope="module")
def small_run(limits):
    plan = bench.make_plan(["residual_add", "l1_grad"], None, ["float32"], (3, 40), threads=1, repeat=2, min_time=0.0)
    rows, envs = bench.run(plan, limits, progress=False)
    return plan, rows, envs


# ---- the rows -----------------------------------------------------------------------------------------

def test_a_row_per_backend_kernel_and_size_with_every_column(small_run):
    plan, rows, _ = small_run
    assert {(r["kernel"], r["backend"], r["size"]) for r in rows} == {
        (k, b, n) for k in ("residual_add", "l1_grad") for b in AVAILABLE for n in (3, 40)}
    text = bench.to_csv(rows)
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert list(parsed[0]) == bench.ALL_COLUMNS
    assert bench.ALL_COLUMNS[:13] == ["kernel", "backend", "dtype", "shape", "threads", "min_s", "median_s", "iqr_s",
                                      "gflops", "gbps", "speedup_vs_numpy", "speedup_vs_torch", "pct_of_limit"]
    for r in parsed:
        assert r["error"] == "", r
        for col in ("shape", "threads", "min_s", "median_s", "iqr_s", "gflops", "gbps", "speedup_vs_numpy",
                    "pct_of_limit", "bytes", "blas_arch", "limit"):
            assert r[col] != "", (col, r)
        assert float(r["min_s"]) <= float(r["median_s"])
        assert float(r["iqr_s"]) >= 0
        assert (r["speedup_vs_torch"] != "") == HAVE_TORCH
        assert r["threads"] == "1"


def test_speedups_are_relative_to_the_numpy_and_torch_rows(small_run):
    _, rows, _ = small_run
    by = {(r["kernel"], r["size"], r["backend"]): r for r in rows}
    for r in rows:
        base = by[(r["kernel"], r["size"], "numpy")]
        assert r["speedup_vs_numpy"] == pytest.approx(base["median_s"] / r["median_s"])
        if r["backend"] == "numpy":
            assert r["speedup_vs_numpy"] == 1.0
        if r["backend"] == "torch":
            assert r["speedup_vs_torch"] == 1.0


def test_rates_follow_the_counts_and_pct_of_limit_is_in_range(small_run, limits):
    _, rows, _ = small_run
    for r in rows:
        n_el = r["size"] * bench.WIDTH
        assert r["bytes"] == 3 * 4 * n_el            # two arrays read, one written, float32
        assert r["flops"] == 2 * n_el
        assert r["gbps"] == pytest.approx(r["bytes"] / r["median_s"] / 1e9)
        assert r["gflops"] == pytest.approx(r["flops"] / r["median_s"] / 1e9)
        limit = machine.limit_for(limits, "memory", "float32", 1, r["bytes"])[0]
        assert r["pct_of_limit"] == pytest.approx(100 * r["gbps"] / limit)
        # against the rough quick limits a little over 100 % is possible; far over would be a unit error
        assert 0 < r["pct_of_limit"] <= 150


def test_results_were_checked_against_the_reference(small_run):
    _, rows, _ = small_run
    for r in rows:
        assert r["check"] == "reference" if r["backend"] == "numpy" else r["check"].startswith("ok"), r


def test_threads_pin_every_pool_in_the_child(small_run):
    _, _, envs = small_run
    assert set(envs) == set(AVAILABLE)
    for backend, rep in envs.items():
        assert rep["pid"] != os.getpid()
        for var in bench.THREAD_ENV:
            assert rep["env"][var] == "1", (backend, var)
        assert rep["numba_threads"] == 1
        assert all(p["num_threads"] == 1 for p in rep["pools"]), rep["pools"]
        if backend == "torch":
            assert rep["torch_threads"] == 1
        assert rep["blas_arch"]


def test_blas_coretype_auto_removes_the_pin_in_the_child(monkeypatch, limits):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    for choice, seen in (("auto", None), ("env", "Haswell")):
        plan = bench.make_plan(["residual_add"], ["numpy"], ["float32"], (2,), 1, 1, 0.0, blas_coretype=choice)
        rows, envs = bench.run(plan, limits, progress=False)
        assert envs["numpy"]["env"]["OPENBLAS_CORETYPE"] == seen
        assert rows[0]["blas_coretype"] == (seen or "auto")
    assert os.environ["OPENBLAS_CORETYPE"] == "Haswell"  # the parent's environment is left as it was


def test_alloc_outside_reuses_warm_memory_and_inside_maps_fresh_pages(limits):
    # a 48 MiB output (float32 (12288, 1024)): above glibc's largest dynamic mmap threshold (32 MiB), so
    # with the default allocator every call maps it anew (page faults in the timing); --alloc outside
    # makes the child reuse the freed block, faulting nothing. Runs in real spawned children.
    # Under tox -e sanitize the children run ASan's allocator, which ignores mallopt: "outside" cannot
    # be had there, and the rows must say so rather than pretend.
    asan = "libasan" in os.environ.get("LD_PRELOAD", "")
    faults = {}
    for mode in bench.ALLOC_MODES:
        plan = bench.make_plan(["residual_add"], ["numpy"], ["float32"], (12288,), 1, 2, 0.0, alloc=mode)
        rows, envs = bench.run(plan, limits, progress=False)
        assert rows[0]["error"] is None
        if asan and mode == "outside":
            assert rows[0]["alloc"] == envs["numpy"]["alloc"] == bench.ALLOC_OUTSIDE_UNAVAILABLE
            continue
        assert rows[0]["alloc"] == mode == envs["numpy"]["alloc"]
        faults[mode] = rows[0]["faults_per_call"]
    assert faults["inside"] > 100, faults   # 48 MiB / 4 KiB pages = 12288 (fewer with transparent huge pages)
    assert asan or faults["outside"] < 1, faults
    with pytest.raises(bench.BenchError, match="--alloc must be one of inside, outside"):
        bench.make_plan(["residual_add"], alloc="preallocated")


def test_child_environment():
    env = bench.child_environment(3, "auto", base={"OPENBLAS_CORETYPE": "Haswell", "PATH": "/bin"})
    assert "OPENBLAS_CORETYPE" not in env and env["PATH"] == "/bin"
    assert all(env[v] == "3" for v in bench.THREAD_ENV)
    assert bench.child_environment(1, "env", base={"OPENBLAS_CORETYPE": "Zen"})["OPENBLAS_CORETYPE"] == "Zen"
    assert bench.child_environment(1, "SkylakeX", base={})["OPENBLAS_CORETYPE"] == "SkylakeX"


# ---- requests -------------------------------------------------------------------------------------------

def test_unknown_kernel_or_backend_is_a_clear_error(capsys):
    with pytest.raises(bench.BenchError, match="unknown kernel.*no_such_kernel.*deepprop list"):
        bench.make_plan(["no_such_kernel"])
    with pytest.raises(bench.BenchError, match="unknown backend.*cuda.*numpy, numba, c, torch"):
        bench.make_plan(["residual_add"], ["cuda"])
    with pytest.raises(bench.BenchError, match="dtype"):
        bench.make_plan(["residual_add"], dtypes=["float16"])
    with pytest.raises(bench.BenchError, match="--threads"):
        bench.make_plan(["residual_add"], threads=0)
    from kernels import cli

    assert cli.main(["bench", "--kernel", "no_such_kernel"]) == 2
    assert "unknown kernel" in capsys.readouterr().err


def test_an_unavailable_backend_asked_for_is_an_error(monkeypatch):
    monkeypatch.setattr(bench, "available_backends",
                        lambda: {"numpy": None, "numba": None, "c": None, "torch": "torch is not installed"})
    with pytest.raises(bench.BenchError, match="torch is not installed"):
        bench.make_plan(["residual_add"], ["torch"])
    assert "torch" in bench.make_plan(["residual_add"]).skipped  # by default it is just left out


def test_default_sizes_span_cache_and_memory(limits):
    for name in kernels.names():
        w = bench.workload(name)
        assert list(w.sizes) == sorted(w.sizes) and len(w.sizes) >= 2, name
    caches = limits["caches"]
    rows_bytes = [4 * n * bench.WIDTH for n in bench.ROWS]  # one float32 (n, 1024) array
    assert rows_bytes[0] * 3 < caches.get("L2", 512 << 10) * 2  # the smallest fits in L2
    assert 2 * rows_bytes[-1] >= caches.get("L3", 32 << 20)  # the largest (>= 2 arrays) does not fit in L3


@pytest.mark.parametrize("name", kernels.names())
def test_every_workload_runs_on_the_reference(name):
    """The workloads follow the kernels' signatures (a renamed argument shows up here)."""
    w = bench.workload(name)
    kw = w.make(np.random.default_rng(0), 2, np.dtype("float32"))
    bench._flatten(kernels.REGISTRY[name]["numpy"](**kw))
    assert isinstance(bench.describe_shape(kw), str)
    if w.flops is not None:
        assert w.flops(kw) > 0
    assert w.bound == ("compute" if name in bench.COMPUTE_BOUND else "memory")


# ---- pieces, in process ---------------------------------------------------------------------------------------

def test_a_wrong_backend_gets_an_error_row_not_a_speed(monkeypatch):
    ref = kernels.REGISTRY["residual_add"]["numpy"]

    def off(x, fx, scale=1.0):
        y = ref(x, fx, scale)
        return y + np.asarray(np.finfo(y.dtype).eps * 64, dtype=y.dtype) * np.abs(y)

    monkeypatch.setitem(kernels.REGISTRY["residual_add"], "c", off)
    row = bench.run_case("residual_add", "c", "float32", 3, repeat=1, min_time=0.0)
    assert row["check"].startswith("FAIL") and "reference" in row["error"]
    assert "median_s" not in row


def test_time_call_restores_in_place_arguments_before_every_call():
    state = {"value": 0, "calls": 0}

    def call():
        assert state["value"] == 0, "not restored"
        state["value"] += 1
        state["calls"] += 1

    def restore():
        state["value"] = 0

    samples, number = bench.time_call(call, restore, repeat=7, min_time=0.0)
    assert number == 1 and len(samples) == 7 == state["calls"]


def test_time_call_takes_repeat_samples_and_min_time():
    samples, number = bench.time_call(lambda: None, None, repeat=3, min_time=0.01)
    assert len(samples) >= 3 and number > 1  # a no-op call is looped
    assert sum(samples) * number >= 0.01
    mn, med, iqr = bench.stats([3.0, 1.0, 2.0, 4.0])
    assert (mn, med) == (1.0, 2.5) and iqr == pytest.approx(1.5)


def test_byte_rule_and_shape_text():
    x = np.zeros((4, 5), np.float32)
    kw = {"x": x, "fx": x.copy(), "scale": 0.5}
    assert bench.count_bytes(kw, [x.copy()], set()) == 3 * 80
    grads = [np.zeros((2, 3)), np.zeros(3)]
    assert bench.count_bytes({"grads": grads, "max_norm": 1.0}, [np.float64(1.0)], {"grads[0]", "grads[1]"}) \
        == 2 * (48 + 24)  # read once, written once more; a scalar result moves no array
    assert bench.describe_shape(kw) == "x=4x5 fx=4x5"
    assert bench.describe_shape({"grads": grads + [np.zeros((2, 3))]}) == "grads=2x(2x3)+1x(3)"
    assert bench.describe_shape({"shape": (8, 4), "seed": 1}) == "shape=8x4"


def test_derive_without_limits_leaves_pct_blank():
    rows = [{"kernel": "k", "backend": "numpy", "dtype": "float32", "size": 1, "median_s": 2.0, "flops": 4e9,
             "bytes": 8e9, "bound": "memory"},
            {"kernel": "k", "backend": "c", "dtype": "float32", "size": 1, "median_s": 0.5, "flops": 4e9,
             "bytes": 8e9, "bound": "memory"},
            {"kernel": "k", "backend": "numba", "dtype": "float32", "size": 1, "error": "boom"}]
    out = bench.derive(rows, None, 1)
    assert out[1]["speedup_vs_numpy"] == 4.0 and out[1]["gflops"] == 8.0 and out[1]["gbps"] == 16.0
    assert all(r["pct_of_limit"] is None for r in out)
    assert out[2]["speedup_vs_numpy"] is None and out[2]["error"] == "boom"
    assert [c for c in bench.to_csv(out).splitlines()[3].split(",")][bench.ALL_COLUMNS.index("pct_of_limit")] == ""


def test_formats(small_run):
    plan, rows, envs = small_run
    d = json.loads(bench.to_json(rows, {"threads": 1}))
    assert d["context"]["threads"] == 1 and len(d["rows"]) == len(rows)
    table = bench.to_table(rows)
    assert "x numpy" in table and "% limit" in table and "residual_add" in table
    md = bench.to_table(rows, markdown=True)
    assert md.splitlines()[0].startswith("| kernel |") and md.count("\n") == len(rows) + 1
    s = bench.summary(rows, plan, envs, None)
    assert "speed-up over numpy" in s and "residual_add" in s


@pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed")
@pytest.mark.parametrize("name", [n for n in torch_peer.names() if n in kernels.REGISTRY])
def test_every_torch_counterpart_passes_its_check(name):
    row = bench.run_case(name, "torch", "float64", 3, repeat=1, min_time=0.0)
    assert not row.get("error"), row
    assert row["check"].startswith("ok")


def test_the_torch_module_imports_without_torch():
    assert "torch" not in sys.modules or HAVE_TORCH  # importing kernels.bench/torch_peer did not need it
    assert torch_peer.has_peer("batchnorm_forward") and not torch_peer.has_peer("dropout_mask")


# ---- report ----------------------------------------------------------------------------------------------------

@pytest.mark.skipif(_c.UNAVAILABLE is not None, reason="C backend unavailable")
def test_report_writes_stamped_files_and_calls_the_depth_report(tmp_path, monkeypatch, limits):
    seen = {}

    def fake_depth_report(outdir, stamp=""):
        seen["stamp"] = stamp
        path = os.path.join(outdir, "1_depth_table.md")
        with open(path, "w") as f:
            f.write(stamp + "\n")
        return [path]

    fake = types.ModuleType("kernels.depth")
    fake.report = fake_depth_report
    fake.REPORT_TABLES = {"1_depth_table": "gradient norms against depth"}
    monkeypatch.setitem(sys.modules, "kernels.depth", fake)
    monkeypatch.setattr(kernels, "depth", fake, raising=False)
    from kernels import targets as targets_mod

    def fake_targets_run(progress=True):  # the real one times all 59 targets for minutes: tests/test_targets.py
        graded = [{"target": "t1", "kind": "ratio", "required": 1.0, "threads": 1, "ours_s": 1.0, "base_s": 2.0,
                   "measured": 2.0, "met": True, "note": ""}]
        return graded, [{"case": "w", "side": "c", "threads": 1, "alloc": "inside", "median_s": 1.0}], {}

    monkeypatch.setattr(targets_mod, "run", fake_targets_run)
    files = report_mod.report(tmp_path, ["residual_add"], threads=1, sizes=(3, 9), repeat=1, min_time=0.0,
                              remeasure=False, backends=["numpy", "c"], command="deepprop report --test",
                              progress=False)
    for name in ("speed.csv", "speed.md", "README.md", "1_depth_table.md"):
        assert (tmp_path / name).exists(), name
    readme = (tmp_path / "README.md").read_text()
    assert "1_depth_table.md" in files and "gradient norms against depth" in readme
    stamp = seen["stamp"]  # the depth harness gets the same stamp, as text
    for needle in ("command: deepprop report --test", "commit:", "CPU:", "limits:", "BLAS:", "threads: 1",
                   "versions:"):
        assert needle in stamp, needle
    csv_text = (tmp_path / "speed.csv").read_text()
    head = [ln for ln in csv_text.splitlines() if ln.startswith("# ")]
    for needle in ("command:", "commit:", "CPU:", "limits:", "BLAS:", "threads:", "versions:"):
        assert any(needle in ln for ln in head), needle
    import pandas as pd

    df = pd.read_csv(tmp_path / "speed.csv", comment="#")
    assert list(df.columns) == bench.ALL_COLUMNS and len(df) == 2 * 2 * 2  # backends x dtypes x sizes
    md = (tmp_path / "speed.md").read_text()
    assert "deepprop report --test" in md and "## residual" in md and "| kernel | bound |" in md
    assert "targets.md" in files and "**1 of 1 targets met.**" in (tmp_path / "targets.md").read_text()
    assert "## Speed targets (issue 5)" in md and "| t1 | 1 |" in md   # speed.md carries the graded table
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "matplotlib" in (tmp_path / "README.md").read_text()
    else:
        assert (tmp_path / "speed_residual.png").stat().st_size > 1000


@pytest.mark.skipif(_c.UNAVAILABLE is not None, reason="C backend unavailable")
def test_report_removes_a_speed_png_it_cannot_redraw(tmp_path, monkeypatch, limits, capsys):
    """Without matplotlib, an earlier run's PNG would be left beside tables it no longer matches."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # import matplotlib -> ImportError
    (tmp_path / "speed_residual.png").write_bytes(b"an earlier run")
    (tmp_path / "speed_other.png").write_bytes(b"a family this run does not measure")
    report_mod.report(tmp_path, ["residual_add"], threads=1, sizes=(3,), repeat=1, min_time=0.0, remeasure=False,
                      backends=["numpy", "c"], parts=("speed",), progress=False)
    assert not (tmp_path / "speed_residual.png").exists()
    assert (tmp_path / "speed_other.png").exists()
    readme = (tmp_path / "README.md").read_text()
    assert "`speed_residual.png`" not in readme and "not made: matplotlib is not installed" in readme
    assert "removed the stale speed_residual.png" in capsys.readouterr().err


def test_depth_report_removes_a_png_it_cannot_redraw(tmp_path, monkeypatch, capsys):
    from kernels import depth

    def no_pyplot():
        raise RuntimeError("matplotlib is not installed")

    cfg = depth.Config(activation="relu", init="he_normal", depth=3, width=8, batch=4)
    monkeypatch.setattr(depth, "_pyplot", no_pyplot)
    monkeypatch.setattr(depth, "report_configs", lambda backend: {"1_activation_init": ([cfg], False)})
    (tmp_path / "1_activation_init.png").write_bytes(b"an earlier run")
    written = depth.report(str(tmp_path), seeds=(0,), progress=False)
    assert sorted(os.path.basename(p) for p in written) == ["1_activation_init.csv", "1_activation_init.md"]
    assert not (tmp_path / "1_activation_init.png").exists()
    assert "removed the stale one" in capsys.readouterr().err


def test_depth_report_plots_carry_the_stamp(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from PIL import Image

    from kernels import depth

    cfg = depth.Config(activation="relu", init="he_normal", depth=100, width=8, batch=4)  # plotted at depth 100
    monkeypatch.setattr(depth, "report_configs", lambda backend: {"1_activation_init": ([cfg], False)})
    written = depth.report(str(tmp_path), stamp="commit: 0123abc (clean)\nCPU: a test CPU", seeds=(0,),
                           progress=False)
    assert str(tmp_path / "1_activation_init.png") in written
    meta = Image.open(tmp_path / "1_activation_init.png").info["Description"]
    assert "commit: 0123abc (clean)" in meta and "CPU: a test CPU" in meta and "command: deepprop report" in meta


def test_a_partial_report_stamps_the_blas_setting_it_ran_under(monkeypatch):
    """--parts depth starts no benchmark child: the stamp gives this process's OPENBLAS_CORETYPE, not 'the
    children's' (there were none)."""
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    plan = bench.make_plan(["residual_add"], ["numpy"], None, (3,), 1, 1, 0.0, "auto", "inside")
    lines = report_mod.stamp_lines(report_mod.make_stamp("deepprop report --parts depth", plan, {}, None))
    blas = next(ln for ln in lines if ln.startswith("BLAS: "))
    assert blas.endswith("; OPENBLAS_CORETYPE in this process (no benchmark child ran): Haswell"), blas
    child = {"numpy": {"blas_arch": "openblas Zen", "env": {}}}
    blas = next(ln for ln in report_mod.stamp_lines(report_mod.make_stamp("deepprop report", plan, child, None))
                if ln.startswith("BLAS: "))
    assert blas == "BLAS: openblas Zen; OPENBLAS_CORETYPE in the children: unset (auto-detected) (--blas-coretype auto)"


def test_report_before_after_joins_two_speed_files(tmp_path, capsys):
    from kernels import cli

    cols = ",".join(bench.ALL_COLUMNS)

    def speed(path, commit, c_median):
        row = {c: "" for c in bench.ALL_COLUMNS}
        rows = []
        for backend, med in (("numpy", 1.0), ("c", c_median), ("torch", 0.5)):
            row = dict(row, kernel="relu_forward", backend=backend, dtype="float32", size=16, shape="x=16x1024",
                       median_s=med, speedup_vs_numpy=1.0 / med, pct_of_limit=10)
            rows.append(",".join(str(row[c]) for c in bench.ALL_COLUMNS))
        path.write_text(f"# command: deepprop report\n# commit: {commit}\n{cols}\n" + "\n".join(rows) + "\n")

    out = tmp_path / "results"
    out.mkdir()
    speed(tmp_path / "old.csv", "aaaa", 0.5)
    speed(out / "speed.csv", "bbbb", 0.125)
    assert cli.main(["report", "--outdir", str(out), "--before", str(tmp_path / "old.csv")]) == 0
    md = (out / "speed_before_after.md").read_text()
    assert "- commit: aaaa" in md and "- commit: bbbb" in md
    (line,) = [ln for ln in md.splitlines() if ln.startswith("| relu_forward")]  # c only: numpy/torch left out
    assert "| c | float32 | 16 |" in line and "| 4.00x |" in line
    assert "speed_before_after.md" in (out / "README.md").read_text()
    assert cli.main(["report", "--outdir", str(out), "--before", str(tmp_path / "missing.csv")]) == 2


def test_speed_md_carries_the_targets_and_the_before_after_once(tmp_path):
    from kernels import report

    (tmp_path / "speed.md").write_text("# Kernel speed\n\n- commit: cccc\n\n## linear\n\nrows\n")
    (tmp_path / "targets.md").write_text("# Speed targets\n\n- commit: tttt\n- date: d1\n\n**1 of 2 targets met.**"
                                         "\n\n| target | met |\n|---|---|\n| x | yes |\n\n## Workloads\n\nw\n")
    (tmp_path / "speed_before_after.md").write_text("# B/A\n\n- commit: aaaa\n- date: d0\n\n- commit: bbbb\n"
                                                    "- date: d2\n\nfactor = before / after\n\n## clip\n\n| c |\n")
    report.embed_issue5_sections(tmp_path)
    once = (tmp_path / "speed.md").read_text()
    report.embed_issue5_sections(tmp_path)   # regenerating one file re-copies, never duplicates
    assert (tmp_path / "speed.md").read_text() == once
    assert once.count("## Speed targets (issue 5)") == 1 and "**1 of 2 targets met.**" in once
    assert "| x | yes |" in once and "Workloads" not in once and "commit: tttt, date: d1" in once
    assert "Before: the run of commit: aaaa, date: d0; after: the run of commit: bbbb, date: d2." in once
    assert "### clip" in once and once.index("### clip") < once.index("## linear")


# ---- a killed parent leaves no child running --------------------------------------------------------------

_ORPHAN_CHILD = """
import time
from kernels import bench

def child(use):
    if use:
        bench.die_with_parent()
    time.sleep(60)
"""

_ORPHAN_PARENT = """
import multiprocessing, os, signal, sys, time
sys.path.insert(0, sys.argv[1])
import orphan_child
if __name__ == "__main__":
    proc = multiprocessing.get_context("spawn").Process(target=orphan_child.child, args=(sys.argv[2] == "1",),
                                                        daemon=True)
    proc.start()
    time.sleep(3)  # the child is up and past die_with_parent
    print(proc.pid, flush=True)
    os.kill(os.getpid(), signal.SIGTERM)  # no cleanup runs: daemon=True does not stop the child
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in f)
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("use", [True, False])
def test_a_benchmark_child_dies_with_its_killed_parent(tmp_path, use):
    """The parent of a spawned benchmark child is killed by SIGTERM: with die_with_parent (what
    bench.child_main and targets.child_main call first) the child is gone within seconds; without it, it
    is still running -- the orphan this guards against (so the check can fail)."""
    (tmp_path / "orphan_child.py").write_text(_ORPHAN_CHILD)
    root = pathlib.Path(kernels.__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    # Popen, reading one line: the child inherits the stdout pipe, so waiting for EOF would wait for it
    with subprocess.Popen([sys.executable, "-c", _ORPHAN_PARENT, str(tmp_path), "1" if use else "0"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env) as parent:
        pid = int(parent.stdout.readline())
        assert parent.wait(timeout=60) == -signal.SIGTERM
        parent.stdout.close()
    try:
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _alive(pid) is not use
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
