"""kernels.targets (`deepprop bench --targets`): the grading arithmetic and the measuring machinery.
Correctness only: no test asserts a speed."""

import os

import numpy as np
import pytest

from kernels import bench
from kernels import targets as T

FUSED = "linear+bias+relu 128x256x256 float32"


def test_every_target_names_a_case_and_known_sides():
    for text, kind, case, side, base, threads, req in T.TARGETS:
        assert case in T.CASES, text
        assert side in T.SIDES and (base is None or base in T.SIDES), text
        assert kind in ("ratio", "pct_bw", "rate", "scaling") and req > 0 and threads in (1, 2), text
        assert (base is not None) == (kind == "ratio"), text
        if kind == "pct_bw":
            assert T.CASES[case].bytes is not None, text
        if kind == "rate":
            assert T.CASES[case].elements is not None, text
    need = T.measurements()
    assert FUSED in need[("c", 1, "inside")] and FUSED in need[("native", 1, "inside")]
    # a scaling target measures its side at 1 thread too
    assert "linear_forward 1024x1024x1024 float32" in need[("numba", 1, "inside")]
    # a bandwidth target: graded outside (as STREAM's arrays), quoted inside
    assert "dropout 16M float32" in need[("c", 2, "outside")] and "dropout 16M float32" in need[("c", 2, "inside")]
    assert FUSED not in need.get(("c", 1, "outside"), [])


def _rows(**medians):
    return [{"case": "w", "side": s, "threads": t, "median_s": m, "bytes": 4e9, "elements": 1e9}
            for (s, t), m in medians.items()]


def test_grade_arithmetic():
    tg = [("r", "ratio", "w", "c", "native", 1, 1.2), ("s", "scaling", "w", "c", None, 2, 1.7),
          ("e", "rate", "w", "c", None, 1, 2.5e9), ("b", "pct_bw", "w", "c", None, 1, 70.0)]
    saved = T.CASES.get("w")
    T.CASES["w"] = T.Case("synthetic", None, None)
    try:
        limits = {"cores": 2, "caches": {}, "bandwidth_gbps": {k: {lv: {"1": 10.0, "2": 20.0}
                                                                    for lv in ("L1", "L2", "L3", "DRAM")}
                                                                for k in ("copy", "triad")}}
        rows = [{"case": "w", "side": "c", "threads": 1, "median_s": 0.5, "bytes": 4e9, "elements": 1e9},
                {"case": "w", "side": "c", "threads": 1, "median_s": 0.4, "bytes": 4e9, "elements": 1e9,
                 "bytes_once": 2.4e9, "alloc": "outside"},
                {"case": "w", "side": "native", "threads": 1, "median_s": 0.75},
                {"case": "w", "side": "c", "threads": 2, "median_s": 0.3125, "bytes": 4e9}]
        g = {x["target"]: x for x in T.grade(rows, limits, tg)}
    finally:
        if saved is None:
            del T.CASES["w"]
        else:
            T.CASES["w"] = saved
    assert g["r"]["measured"] == pytest.approx(1.5) and g["r"]["met"] is True
    assert g["s"]["measured"] == pytest.approx(1.6) and g["s"]["met"] is False
    # bandwidth and rate: graded on the outside row (outputs reused warm), the inside row quoted
    assert g["e"]["measured"] == pytest.approx(2.5e9) and g["e"]["met"] is True
    assert "fresh outputs in the timing: 2.00 G/s" in g["e"]["note"]
    assert g["b"]["measured"] == pytest.approx(100.0) and g["b"]["met"] is True  # 10 GB/s of 10 GB/s
    assert "fresh outputs in the timing: 8.0 GB/s = 80%" in g["b"]["note"]
    assert "every array counted once: 6.0 GB/s = 60%" in g["b"]["note"]
    md = T.to_markdown(list(g.values()))
    assert "3 of 4 targets met." in md and "**no**" in md and "1.50x" in md
    # bounds: ours at the limits moves its bytes (4e9; the outside row, which grades the rate: bytes_once
    # 2.4e9) at 10 GB/s on 1 thread, 20 on 2
    assert g["r"]["bound"] == pytest.approx(0.75 / 0.4)      # baseline 0.75 s / 4e9 B at 10 GB/s
    assert g["s"]["bound"] == pytest.approx(0.5 / 0.2)       # 1 thread 0.5 s / 4e9 B at 20 GB/s
    assert g["e"]["bound"] == pytest.approx(1e9 / 0.24)      # 1e9 elements / 2.4e9 B at 10 GB/s
    assert g["b"]["bound"] == pytest.approx(100.0 * 4e9 / 2.4e9)  # 4e9 B of passes over 2.4e9 B once
    assert not any("out of reach" in x["note"] for x in g.values())


def test_a_target_above_its_bound_says_it_is_out_of_reach():
    limits = {"cores": 2, "caches": {}, "fma_gflops": {"float32": {"1": 100.0, "2": 200.0}},
              "bandwidth_gbps": {k: {lv: {"1": 10.0, "2": 20.0} for lv in ("L1", "L2", "L3", "DRAM")}
                                 for k in ("copy", "triad")}}
    tg = [("f", "ratio", FUSED, "c", "native", 1, 1.2), ("e", "rate", FUSED, "c", None, 1, 2.5e9)]
    rows = [{"case": FUSED, "side": "c", "threads": 1, "median_s": 1.0, "flops": 1e11},  # 1 s at 100 GFLOP/s
            {"case": FUSED, "side": "native", "threads": 1, "median_s": 1.1},
            {"case": FUSED, "side": "c", "threads": 1, "alloc": "outside", "median_s": 1.0, "bytes": 2e10,
             "elements": 1e9, "flops": 1e9}]                                              # 2 s at 10 GB/s
    g = {x["target"]: x for x in T.grade(rows, limits, tg)}
    assert g["f"]["bound"] == pytest.approx(1.1) and "best possible is 1.10x" in g["f"]["note"]
    assert g["e"]["bound"] == pytest.approx(5e8) and "best possible is 0.50 G/s" in g["e"]["note"]
    assert T.floor_s({"flops": 1e11, "bytes": 1e9}, "float32", 2, limits) == pytest.approx(0.5)
    assert T.floor_s({}, "float32", 1, limits) is None
    assert "| 1.10x |" in T.to_markdown(list(g.values()))


def test_every_compute_bound_case_counts_its_flops():
    kw = T.CASES[FUSED].make(np.random.default_rng(0))
    assert T.CASES[FUSED].flops(kw) == 2.0 * 128 * 256 * 256 + 128 * 256
    kw = T.CASES["qr 1000 x 64x64 float32"].make(np.random.default_rng(0))
    assert T.CASES["qr 1000 x 64x64 float32"].flops(kw) == pytest.approx(1000 * (4 * 64 ** 3 - 4 * 64 ** 3 / 3))
    assert T.CASES["depth harness 1000x256x128 float32"].flops({}) == 3 * 2.0 * 1000 * 128 * 256 * 256
    for name, case in T.CASES.items():
        if name.startswith(("linear", "qr", "depth")):
            assert case.flops is not None, name


def test_a_failed_side_grades_as_not_measured_with_its_reason():
    tg = [("r", "ratio", FUSED, "c", "native", 1, 1.2)]
    rows = [{"case": FUSED, "side": "c", "threads": 1, "error": "AssertionError: result differs"},
            {"case": FUSED, "side": "native", "threads": 1, "median_s": 1.0}]
    (g,) = T.grade(rows, None, tg)
    assert g["measured"] is None and g["met"] is None and "result differs" in g["note"]
    rows = [{"case": FUSED, "side": "c", "threads": 1, "median_s": 1.0},
            {"case": FUSED, "side": "native", "threads": 1, "error": "boom"}]
    (g,) = T.grade(rows, None, tg)
    assert g["met"] is None and "native: boom" in g["note"]


def test_the_check_catches_a_wrong_result():
    case = T.CASES[FUSED]
    kw = case.make(np.random.default_rng(0))
    good = case.build("c", kw)()
    assert T._check(case, kw, kw, good) is None
    bad = good.copy()
    bad[3, 5] += 1.0
    assert "max error" in T._check(case, kw, kw, bad)


def test_native_baselines_compute_what_they_claim():
    rng = np.random.default_rng(1)
    case = T.CASES[FUSED]
    kw = case.make(rng)
    ref = np.maximum(kw["x"].astype(np.float64) @ kw["W"] + kw["b"], 0)
    np.testing.assert_allclose(case.build("native", kw)(), ref, rtol=1e-4, atol=1e-4)
    a = rng.standard_normal((5, 4, 3))
    q, r = T._sign_fix(*np.linalg.qr(a))
    assert np.all(np.diagonal(r, axis1=-2, axis2=-1) >= 0)
    np.testing.assert_allclose(q @ r, a, atol=1e-12)


def test_a_real_run_in_spawned_children():
    tg = [t for t in T.TARGETS if t[2] == FUSED]
    graded, rows, envs = T.run(tg, repeat=1, min_time=0.0, progress=False, rounds=2)
    assert all(r["rounds"] == 2 and r["repeats"] >= 2 for r in rows), rows   # both rounds pooled
    assert {(r["side"], r["threads"], r["alloc"]) for r in rows} == {("c", 1, "inside"), ("native", 1, "inside")}
    assert all(not r.get("error") and r["median_s"] > 0 for r in rows), rows
    assert all(r["steal_pct"] is None or 0 <= r["steal_pct"] <= 100 for r in rows), rows   # None off Linux
    assert graded[0]["measured"] > 0 and graded[0]["met"] in (True, False)
    assert all(e["threads"] == 1 and e["env"]["OPENBLAS_CORETYPE"] is None for e in envs.values())


def test_a_rate_target_is_measured_in_an_outside_child_and_an_inside_one():
    tg = [t for t in T.TARGETS if t[1] == "rate"]
    graded, rows, envs = T.run(tg, repeat=1, min_time=0.0, progress=False, rounds=1)
    assert {(r["side"], r["alloc"]) for r in rows} == {("c", "inside"), ("c", "outside")}
    if "libasan" in os.environ.get("LD_PRELOAD", ""):   # tox -e sanitize: ASan's allocator ignores mallopt
        outside = [r for r in rows if r["alloc"] == "outside"]
        assert [r.get("error") for r in outside] == [f"--alloc outside: {bench.ALLOC_OUTSIDE_UNAVAILABLE}"]
        assert graded[0]["measured"] is None and graded[0]["met"] is None, graded   # not graded on a wrong figure
        return
    assert all(not r.get("error") and r["median_s"] > 0 for r in rows), rows
    assert envs[("c", 1, "outside")]["alloc"] == "outside" and envs[("c", 1, "inside")]["alloc"] == "inside"
    assert graded[0]["measured"] > 0 and "with fresh outputs in the timing" in graded[0]["note"]


def test_rounds_pool_their_samples_and_keep_an_error():
    r1 = [{"case": "w", "side": "c", "threads": 1, "samples": [1.0, 5.0], "repeats": 2, "median_s": 3.0},
          {"case": "w", "side": "torch", "threads": 1, "samples": [2.0], "repeats": 1, "median_s": 2.0}]
    r2 = [{"case": "w", "side": "c", "threads": 1, "samples": [2.0, 3.0, 4.0], "repeats": 3, "median_s": 3.0},
          {"case": "w", "side": "torch", "threads": 1, "error": "boom"}]
    by = {r["side"]: r for r in T.merge_rounds([r1, r2])}
    c = by["c"]
    assert (c["min_s"], c["median_s"], c["rounds"], c["repeats"]) == (1.0, 3.0, 2, 5)
    assert c["iqr_s"] == pytest.approx(2.0) and "samples" not in c
    assert by["torch"]["error"] == "boom" and "median_s" not in by["torch"]


def test_steal_time_is_kept_per_measurement_and_noted_where_it_was_high():
    from kernels import machine

    before = [100, 0, 50, 800, 5, 0, 0, 10]   # user nice system idle iowait irq softirq steal
    after = [150, 0, 60, 830, 5, 0, 0, 20]    # 70 ticks wanted (30 idle), 10 of them stolen by the host
    assert machine.steal_pct(machine.steal_ticks(before, after)) == pytest.approx(100 * 10 / 70)
    assert machine.steal_pct(machine.steal_ticks(None, after)) is None
    assert machine.steal_pct(machine.steal_ticks(after, after)) is None
    ticks = machine.cpu_ticks()
    assert ticks is None or (len(ticks) == 8 and all(v >= 0 for v in ticks))
    assert machine.steal_ticks(before, after) == (10, 70)
    # pooling adds the rounds' ticks, as it pools their samples; a round without them leaves no figure
    r1 = [{"case": "w", "side": "c", "threads": 1, "samples": [1.0], "repeats": 1, "steal_ticks": (1, 50)}]
    r2 = [{"case": "w", "side": "c", "threads": 1, "samples": [1.0], "repeats": 1, "steal_ticks": (9, 50)}]
    r3 = [{"case": "w", "side": "c", "threads": 1, "error": "boom"}]
    assert T.merge_rounds([r1, r2])[0]["steal_pct"] == pytest.approx(10.0)
    assert T.merge_rounds([r1, r3])[0]["steal_pct"] is None
    assert "steal_ticks" not in T.merge_rounds([r1])[0]
    # a ratio notes the baseline's steal as well as ours; a scaling one its 1-thread run's
    tg = [("r", "ratio", FUSED, "c", "native", 1, 1.2), ("s", "scaling", FUSED, "c", None, 2, 1.7)]
    rows = [{"case": FUSED, "side": "c", "threads": 1, "median_s": 1.0, "steal_pct": 0.1},
            {"case": FUSED, "side": "native", "threads": 1, "median_s": 1.5, "steal_pct": 7.25},
            {"case": FUSED, "side": "c", "threads": 2, "median_s": 0.6, "steal_pct": 4.9}]
    graded = T.grade(rows, None, tg)
    g = {x["target"]: x for x in graded}
    assert g["r"]["steal_pct"] == 7.25 and "the host took 7.2% of the CPU time asked for" in g["r"]["note"]
    assert g["s"]["steal_pct"] == 4.9 and "steal" not in g["s"]["note"]   # below STEAL_NOTE_PCT
    assert "Steal time" in T.to_markdown(graded) and "largest 7.2%" in T.to_markdown(graded)


def test_batchnorm_bytes_count_the_eight_passes_and_the_arrays_once():
    import numpy as np

    kw = {"x": np.zeros((16, 8), np.float32)}
    # 8 passes of (N, C) and 15 vectors of (C,) / every (N, C) array once (x, y, dy, x, dx): 5 passes
    assert T._bn_bytes(kw) == 4 * (8 * 128 + 15 * 8)
    assert T._bn_bytes_once(kw) == 4 * (5 * 128 + 15 * 8)
    case = T.CASES["batchnorm fwd+bwd 16384x1024 float32"]
    assert case.bytes is T._bn_bytes and case.bytes_once is T._bn_bytes_once
