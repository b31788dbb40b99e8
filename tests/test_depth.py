"""The depth harness (kernels.depth): log-scale tracking, theory agreement, backends, CLI errors."""

import argparse
import json
import math

import numpy as np
import pandas as pd
import pytest

import kernels
from kernels import depth, theory

BACKENDS = [b for b in ("numpy", "numba", "c") if kernels.backends().get(b) is None]


def cfg(**kw):
    base = dict(activation="tanh", init="xavier_normal", width=32, batch=8, depth=10, backend="numpy",
                dtype="float64")
    base.update(kw)
    return depth.Config(**base)


# ---- log-scale tracking ---------------------------------------------------------------------------

def test_tracking_equals_plain_where_plain_survives():
    """sigmoid in float32: the gradient leaves the 2^+-30 window after ~20 layers (so the tracked run
    rescales) and underflows float32 only after ~65; in between both must give the same norms."""
    c = cfg(activation="sigmoid", dtype="float32", depth=90, width=48, batch=8)
    run = depth.run_config(c, seeds=(3,))
    rec = run.per_seed[0]
    ln_x, plain = rec["ln_x"], rec["plain_x"]
    assert rec["rescaled"]
    ok = (plain > 0) & np.isfinite(plain) & (plain > 1e-30)  # away from float32's subnormals
    assert ok.sum() > 40 and (~ok).sum() > 0  # both regimes are present
    np.testing.assert_allclose(ln_x[ok], np.log(plain[ok]), rtol=0, atol=1e-4)
    # and where the dtype gave up, it says so
    assert run.summary["plain"] == "zero"
    # an independent plain pass (no rescaling at all) sees the same numbers
    net = depth._Net(c, 3, track=False, stats=False)
    net.forward()
    net.backward()
    np.testing.assert_array_equal(net.plain_x, plain)


def test_forward_rescaling_of_homogeneous_nets_is_exact():
    """relu with tiny weights: activations underflow float32 by layer ~40; the tracked forward keeps
    them and the measured ratio matches theory, while the plain run sees zero."""
    c = cfg(activation="relu", init="normal", dtype="float32", depth=60, width=64, batch=16)
    run = depth.run_config(c, seeds=(0,))
    s = run.summary
    assert run.per_seed[0]["rescaled"]
    assert s["plain"] == "zero"
    assert math.isfinite(s["log10_input_grad_ratio"])
    assert s["log10_input_grad_ratio"] == pytest.approx(s["theory_log10_input_grad_ratio"], abs=1.0)
    assert s["log10_weight_grad_ratio"] == pytest.approx(0.0, abs=1.5)  # dW_l = x^{l-1} dz_l: it balances
    # the rescaled activation variance is the true one: Var(x^l) ~ (sigma_w2/2)^l
    lv = run.layers["log10_act_var"].to_numpy()
    slope = np.polyfit(np.arange(10, 61), lv[10:], 1)[0]
    assert slope == pytest.approx(math.log10(64 * 1e-4 / 2), abs=0.05)


def test_deep_sigmoid_underflowing_float64_still_measured():
    c = cfg(activation="sigmoid", depth=2000, width=24, batch=4, dtype="float64")
    run = depth.run_config(c, seeds=(0,), stats=False)
    s = run.summary
    assert s["plain"] == "zero"  # the plain float64 gradient is exactly zero
    assert math.isfinite(s["log10_input_grad_ratio"]) and s["log10_input_grad_ratio"] < -1000
    assert s["log10_input_grad_ratio"] == pytest.approx(s["theory_log10_input_grad_ratio"], rel=0.02)
    assert s["status"] == "vanishing" and s["theory_agrees"]
    assert depth.ratio_text(s["log10_input_grad_ratio"]).count("e-") == 1  # e.g. '3.1e-1263'


def test_relu_he_rate_one_and_small_tanh_vanishing():
    relu = depth.run_config(cfg(activation="relu", init="he_normal", depth=40, width=128, batch=16),
                            seeds=(0, 1)).summary
    assert relu["rate"] == pytest.approx(1.0, abs=0.02)
    assert relu["theory_rate"] == 1.0 and relu["status"] == "ok"
    tanh = depth.run_config(cfg(activation="tanh", init="normal", sigma_w2=0.5, depth=40, width=128, batch=16),
                            seeds=(0, 1)).summary
    assert tanh["status"] == "vanishing"
    assert tanh["rate"] == pytest.approx(math.sqrt(0.5), rel=0.03)  # q* = 0: chi = sigma_w2
    assert tanh["theory_agrees"]


def test_zero_init_gradient_is_exactly_zero():
    s = depth.run_config(cfg(init="zeros", depth=5), seeds=(0,)).summary
    assert s["log10_input_grad_ratio"] == -math.inf and s["rate"] == 0.0
    assert s["theory_rate"] == 0.0 and s["status"] == "vanishing"


def test_fixup_blocks_start_as_identity():
    c = cfg(activation="relu", init="he_normal", residual="fixup", depth=12, norm="layer")
    net = depth._Net(c, 0)
    out = net.forward()
    np.testing.assert_array_equal(out, net.input)
    net.backward()
    assert net.ln_x[0] == net.ln_x[-1]  # the gradient passes unchanged
    assert np.all(np.isfinite(net.ln_W[1:]))  # but every (zero) weight gets a gradient


def test_seeds_are_per_layer_so_shallow_nets_are_prefixes():
    a = depth._Net(cfg(depth=4), 7, stats=False)
    b = depth._Net(cfg(depth=9), 7, stats=False)
    a.forward()
    b.forward()
    for la, lb in zip(a.layers, b.layers[:4], strict=True):
        np.testing.assert_array_equal(la.W, lb.W)
        np.testing.assert_array_equal(la.store, lb.store)


def test_residual_scaled_and_dropout_agree_with_theory():
    s = depth.run_config(cfg(activation="relu", init="he_normal", residual="scaled", depth=100, width=128,
                             batch=16), seeds=(0, 1)).summary
    assert s["theory_agrees"] and abs(s["log10_input_grad_ratio"] - s["theory_log10_input_grad_ratio"]) < 0.2
    d = depth.run_config(cfg(activation="tanh", init="xavier_normal", dropout=0.2, depth=30, width=128,
                             batch=16), seeds=(0, 1)).summary
    assert d["theory_agrees"] and d["theory_rate"] > depth.run_config(
        cfg(activation="tanh", init="xavier_normal", depth=30, width=128, batch=16), seeds=(0,)).summary["theory_rate"]


def test_batchnorm_relu_explodes_like_yang_et_al():
    s = depth.run_config(cfg(activation="relu", init="he_normal", norm="batch", depth=30, width=128, batch=64),
                         seeds=(0,)).summary
    assert s["status"] == "exploding"
    assert s["rate"] == pytest.approx(math.sqrt(math.pi / (math.pi - 1)), rel=0.05)


def test_clip_scales_weight_gradients_only():
    a = depth.run_config(cfg(depth=6), seeds=(0,))
    b = depth.run_config(cfg(depth=6, clip=1e-6), seeds=(0,))
    assert a.summary["log10_input_grad_ratio"] == b.summary["log10_input_grad_ratio"]
    assert b.summary["clip_log10_factor"] < 0
    np.testing.assert_allclose(b.layers["log10_grad_W_clipped"][1:] - a.layers["log10_grad_W"][1:],
                               b.summary["clip_log10_factor"])
    total = 10 ** b.layers["log10_grad_W_clipped"][1:]
    assert math.sqrt(float(np.sum(total ** 2))) == pytest.approx(1e-6, rel=1e-9)


def test_spectrum_linear_orthogonal_is_an_isometry():
    row = depth.run_spectrum(cfg(activation="identity", init="orthogonal", depth=20, width=24), seeds=(0,))
    assert row["log10_mean_s2"] == pytest.approx(0.0, abs=1e-10)
    assert row["var_s2"] == pytest.approx(0.0, abs=1e-10)
    g = depth.run_spectrum(cfg(activation="relu", init="he_normal", depth=5, width=128), seeds=(0, 1))
    assert g["var_s2"] == pytest.approx(g["theory_var_s2"], rel=0.35)  # Pennington et al.: 2L


# ---- backends --------------------------------------------------------------------------------------

@pytest.mark.skipif(len(BACKENDS) < 2, reason="needs at least two kernel backends")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_backends_give_the_same_table(dtype):
    configs = depth.configs_from(activation=["sigmoid", "relu", "prelu"], init=["pytorch_default"],
                                 norm=["none", "layer"], depths=[12], width=[16], batch=[6], dtype=[dtype],
                                 backend=BACKENDS)
    configs += depth.configs_from(activation=["gelu"], init=["he_uniform"], norm=["batch"], residual=["plain"],
                                  dropout=[0.1], depths=[12], width=[16], batch=[6], dtype=[dtype],
                                  backend=BACKENDS)
    df = depth.table(configs, seeds=(5,))
    tol = 2e-3 if dtype == "float32" else 1e-9
    key = ["activation", "init", "norm", "residual"]
    for _, g in df.groupby(key):
        ref = g.iloc[0]
        for _, r in g.iloc[1:].iterrows():
            for col in ("log10_input_grad_ratio", "log10_weight_grad_ratio", "rate"):
                assert r[col] == pytest.approx(ref[col], abs=tol), (r["backend"], col)
            assert r["status"] == ref["status"]


@pytest.mark.skipif("c" not in BACKENDS, reason="C backend not built")
@pytest.mark.parametrize("kw", [
    dict(activation="relu", init="he_normal", dtype="float32"),
    dict(activation="tanh", init="xavier_normal", dtype="float64", sigma_b2=0.05),
    dict(activation="sigmoid", init="xavier_normal", dtype="float32", depth=90),   # backward rescales: shadow
    dict(activation="relu", init="normal", dtype="float32", depth=60),             # forward rescales
    dict(activation="leaky_relu", init="he_uniform", dtype="float64", dropout=0.2),
    dict(activation="elu", init="orthogonal", dtype="float32", width=(24, 40, 16, 33, 24), depth=4),
])
def test_c_fast_path_equals_the_checked_kernels(kw):
    """Plain fused nets on C run _FastC (direct calls, reused buffers); with it switched off the same
    net runs the public kernels: every per-layer number must be the same, bit for bit."""
    c = cfg(**{"width": 48, "batch": 8, "depth": 30, "backend": "c", **kw})
    out, streams = [], set()
    for fast in (True, False):
        for track in (True, False):
            net = depth._Net(c, 7, track=track)
            assert net.fast is not None
            if not fast:
                net.fast = None
            net.forward()
            net.backward()
            out.append((net.ln_x, net.ln_W, net.plain_x, net.plain_W, net.ln_act_var, net.frac_dead,
                        net.input_grad.copy()))
            if fast and track:
                streams |= {key[0][1] for key in net.fast._bufs if key[0][0] == "dx"}
                rescaled = net.forward_rescaled or net.backward_rescaled
                fused = net.fast.fill is not None   # layers 2.. ran as one C call each way
    for a, b in zip(out[0] + out[1], out[2] + out[3], strict=True):
        np.testing.assert_array_equal(a, b)
    if c.depth == 90:   # the tracked gradient was rescaled and the plain one followed in the shadow stream
        assert streams == {"main", "shadow"}
    if c.depth >= 60:
        assert rescaled
    # the one-call layers (without dropout) where W is one replayed C fill and there is no bias
    assert fused == (c.init in ("he_normal", "normal", "xavier_normal", "he_uniform") and not c.bias_variance(48))
    # the generic path is still taken where the fast one does not apply
    assert depth._Net(cfg(backend="c", norm="layer"), 0).fast is None
    assert depth._Net(cfg(backend="c", activation="prelu"), 0).fast is None
    assert depth._Net(cfg(backend="c", residual="plain"), 0).fast is None
    assert depth._Net(cfg(backend="numba"), 0).fast is None


@pytest.mark.parametrize("kw", [
    dict(init="he_normal"), dict(init="he_normal", sigma_w2=1.5), dict(init="normal"), dict(init="zeros"),
    dict(init="pytorch_default", dtype="float64"), dict(init="xavier_uniform"), dict(init="lecun_normal"),
    dict(init="orthogonal"), dict(init="xavier_normal", sigma_b2=0.1, dtype="float64"),
])
def test_weights_drawn_into_the_arena_are_the_same(kw):
    """make_weights(out=...) (the fast path draws W into its arena slot) gives the same W and b, bit for
    bit, as the plain call; W is the slot itself for kernels.init's initializers without a rescale; the
    net keeps every layer's W and z in its arenas, and its W (replayed fills included) are make_weights'."""
    c = cfg(**{"width": 24, "batch": 4, "depth": 3, "backend": "c", "activation": "relu", **kw})
    k = depth._Kernels("c")
    for layer in (1, 3):
        slot = np.full((24, 24), np.nan, c.dtype)
        W, b = depth.make_weights(k, c, layer, 11)
        W2, b2 = depth.make_weights(k, c, layer, 11, out=slot)
        np.testing.assert_array_equal(W2, W)
        assert (b is None) == (b2 is None)
        if b is not None:
            np.testing.assert_array_equal(b2, b)
        drawn = c.init != "orthogonal" and kw.get("sigma_w2") is None
        assert (W2 is slot) == drawn
    net = depth._Net(c, 11)
    net.forward()
    # layers 2.. replay layer 1's C fill with their seeds where it was one random fill into the slot
    assert (net.fast._replay is not None) == (drawn and c.init != "zeros" and c.bias_variance(24) == 0)
    arena = net.fast._arena
    for i, rec in enumerate(net.layers):
        assert np.shares_memory(rec.W, arena["W"][i]) and np.shares_memory(rec.store, arena["z"][i])
        np.testing.assert_array_equal(rec.W, depth.make_weights(k, c, i + 1, 11)[0])
    # no arena where the layers differ in shape: the net keeps the new arrays
    net = depth._Net(cfg(backend="c", width=(24, 40, 16), depth=2, batch=4), 11)
    assert net.fast._arena is None and net.fast.weight_slot(1) is None
    net.forward()


def test_spare_arena_is_reused_by_the_next_net_of_its_shape_only():
    """run_config hands a finished net's arena to the next net of the same shape (dirty memory: every
    slot is written before it is read), so a warm arena gives the same table bit for bit as a fresh
    one; a net of another shape or dtype drops the spare, and release_arenas frees it."""
    c = cfg(backend="c", activation="relu", init="he_normal", width=32, batch=8, depth=12, dtype="float32")
    depth.release_arenas()
    fresh = depth.run_config(c, (3, 4))
    spare = depth._SPARE_ARENA.get(("<f4", 12, 8, 32))
    assert spare is not None and len(depth._SPARE_ARENA) == 1
    spare["W"].fill(np.nan)   # stale contents must never be read
    spare["z"].fill(np.inf)
    net = depth._Net(c, 3)
    assert net.fast._arena is spare and not depth._SPARE_ARENA   # taken, not shared
    net.forward()
    net.backward()
    net.release()
    assert depth._SPARE_ARENA[("<f4", 12, 8, 32)] is spare and net.fast is None and net.layers == []
    warm = depth.run_config(c, (3, 4))
    pd.testing.assert_frame_equal(warm.layers, fresh.layers)
    assert warm.summary == fresh.summary or all(
        a == b or (a != a and b != b) for a, b in zip(warm.summary.values(), fresh.summary.values(), strict=True))
    # another shape, or dtype, drops the spare before allocating its own
    net = depth._Net(cfg(backend="c", activation="relu", width=32, batch=8, depth=12, dtype="float64"), 3)
    assert net.fast._arena is not spare and not depth._SPARE_ARENA
    net.release()
    assert list(depth._SPARE_ARENA) == [("<f8", 12, 8, 32)]
    # a net that does not use an arena drops the spare too: no run holds more than one net's layers
    depth._Net(cfg(backend="numba", width=32, batch=8, depth=12), 3)
    assert not depth._SPARE_ARENA
    depth._Net(c, 3).release()
    assert depth._SPARE_ARENA
    depth.release_arenas()
    assert not depth._SPARE_ARENA


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_norm_and_var_match_numpy(dtype, monkeypatch):
    """The harness's statistics (csrc/depth.c when built, NumPy otherwise) against NumPy: every size
    class of the 8 lanes, an offset mean, tiny and huge values (the scaled norm), zeros, NaN and inf."""
    rng = np.random.default_rng(3)
    for use_c in (True, False):
        if not use_c:
            monkeypatch.setattr(depth, "_c_module", lambda: None)
        for n in (1, 7, 8, 9, 33, 1000, 32771):
            a = (rng.standard_normal(n) * 3 + 5).astype(dtype)
            assert depth._var(a) == pytest.approx(float(np.var(a.astype(np.float64))), rel=1e-12)
            assert depth._norm(a) == pytest.approx(float(np.linalg.norm(a.astype(np.float64))), rel=1e-12)
            assert depth._norm(a.reshape(1, n)) == depth._norm(a)
        big = np.array([1e200, -3e200, 2e200] if dtype == "float64" else [1e38, -3e38, 2e38], dtype=dtype)
        assert depth._norm(big) == pytest.approx(math.sqrt(14) * float(big[0]), rel=1e-6)   # squares overflow
        tiny = np.array([1e-300, 3e-301] if dtype == "float64" else [1e-44, 3e-45], dtype=dtype)
        t64 = tiny.astype(np.float64)
        assert depth._norm(tiny) == pytest.approx(float(t64[0]) * float(np.linalg.norm(t64 / t64[0])), rel=1e-6)
        assert depth._norm(np.zeros(5, dtype)) == 0.0 and depth._var(np.zeros(5, dtype)) == 0.0
        for bad in (np.nan, np.inf):
            a = np.array([1.0, bad, 2.0], dtype=dtype)
            assert math.isnan(depth._var(a))
            assert math.isnan(depth._norm(a)) if bad != bad else depth._norm(a) == math.inf
        assert math.isnan(depth._norm(np.array([np.inf, np.nan], dtype=dtype)))


def _moments_in_lane_order(x, c):
    """csrc/depth.c's sums, emulated: element i to lane i % 8 in order (cumsum adds sequentially), the
    tail to lane 0, the lanes combined ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7))."""
    d = x.astype(np.float64) - c
    n8 = d.size // 8 * 8
    lanes = d[:n8].reshape(-1, 8)
    s = np.cumsum(lanes, axis=0)[-1] if n8 else np.zeros(8)
    q = np.cumsum(lanes * lanes, axis=0)[-1] if n8 else np.zeros(8)
    for v in d[n8:]:
        s[0] += v
        q[0] += v * v
    comb = lambda l: ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]))  # noqa: E731
    return comb(s), comb(q)


_MOMENTS_WORKER = r"""
import json
import numpy as np
import pandas as pd
from kernels import _c, depth
rng = np.random.default_rng(5)
out = []
with np.errstate(all="ignore"):
    for dt in ("float32", "float64"):
        for n in (1, 3, 7, 8, 9, 15, 16, 17, 1000, 32771):
            a = (rng.standard_normal(n) * 3 + 5).astype(dt)
            if n > 8:
                a[n // 2] = (np.nan, np.inf, -np.inf, 0.0, 1e30)[n % 5]
            for c in (0.0, 0.7):
                out.append([repr(v) for v in depth._sums(a, c)])
print(json.dumps({"isa": _c.ffi.string(_c.lib.depth_isa()).decode(), "out": out}))
"""


@pytest.mark.skipif(kernels.backends()["c"] is not None, reason="C backend not built")
def test_depth_moments_paths_agree_with_the_lane_order():
    """depth_moments' AVX2 and portable loops give the documented order's sums bit for bit (tails of
    every length, NaN and inf); DEEPPROP_DEPTH_ISA forces the portable loop and says so."""
    import os
    import pathlib
    import subprocess
    import sys

    rng = np.random.default_rng(9)
    for dt in ("float32", "float64"):
        for n in (1, 5, 8, 13, 16, 1001):
            a = (rng.standard_normal(n) * 2 - 1).astype(dt)
            for c in (0.0, -0.3):
                assert depth._sums(a, c) == _moments_in_lane_order(a, c)
    root = pathlib.Path(kernels.__file__).resolve().parent.parent
    runs = {}
    for path in ("portable", "avx2", None):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
        env.pop("DEEPPROP_DEPTH_ISA", None)
        if path:
            env["DEEPPROP_DEPTH_ISA"] = path
        proc = subprocess.run([sys.executable, "-c", _MOMENTS_WORKER], env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[path] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert runs["portable"]["isa"] == "portable (forced by DEEPPROP_DEPTH_ISA)"
    assert runs[None]["isa"] in ("avx2", "portable")
    assert runs["avx2"]["out"] == runs[None]["out"] == runs["portable"]["out"]


def test_seeds_are_seedsequence_exactly():
    """_seed's vectorised hash is numpy.random.SeedSequence's, word for word (the streams of every
    result depend on it): seeds of 1 and 2 words, layers across block edges, every stream, and the
    SeedSequence fallback beyond 64-bit seeds."""
    for seed in (0, 1, 12345, 2 ** 32 - 1, 2 ** 32, 2 ** 63 + 5, 2 ** 64 - 1, 2 ** 70 + 3):
        for layer in (0, 1, 2, 1023, 1024, 1025, 4097, 99_999, 2 ** 32 - 1, 2 ** 32):
            for stream in range(5):
                ss = np.random.SeedSequence(seed, spawn_key=(layer, stream))
                assert depth._seed(seed, layer, stream) == int(ss.generate_state(1, np.uint64)[0]), (seed, layer)


# ---- output and the command line ------------------------------------------------------------------

def _parse(argv):
    p = argparse.ArgumentParser(prog="deepprop depth")
    depth.add_arguments(p)
    return p.parse_args(argv)


@pytest.mark.parametrize("argv, words", [
    (["--activation", "swish"], "unknown value 'swish'"),
    (["--depths", "0"], "out of range"),
    (["--depths", "10,x"], "expected an integer"),
    (["--dropout", "-0.1"], "out of range"),
    (["--dropout", "1"], "out of range"),
    (["--width", "0"], "out of range"),
    (["--init", "kaiming"], "unknown value"),
    (["--sigma-w2", "-1"], "out of range"),
    (["--seeds", "a"], "expected seeds"),
    (["--format", "xml"], "invalid choice"),
    (["--threads", "0"], "out of range"),
    (["--threads", "two"], "expected an integer"),
])
def test_bad_cli_input_is_an_argparse_error(argv, words, capsys):
    with pytest.raises(SystemExit) as exc:
        _parse(argv)
    assert exc.value.code == 2
    assert words in capsys.readouterr().err


@pytest.mark.skipif("c" not in BACKENDS, reason="C backend not built")
def test_cli_threads_pin_the_gemm_and_are_restored(capsys):
    """--threads N runs the C GEMM on N threads (the same numbers) and says so; the process's setting
    is restored afterwards."""
    before = kernels.backend_info()["gemm_isa"]
    out = {}
    for n in (1, 2):
        args = _parse(["--activation", "relu", "--init", "he_normal", "--depths", "3", "--width", "256",
                       "--batch", "64", "--backend", "c", "--format", "table", "--no-progress", "--threads",
                       str(n)])
        assert depth.main(args) == 0
        text = capsys.readouterr().out
        assert text.rstrip().endswith(f"on {n} thread{'s' if n > 1 else ''}")
        out[n] = text.rsplit("\n", 2)[0].rsplit(" in ", 1)[0]
        assert kernels.backend_info()["gemm_isa"] == before
    assert out[1] == out[2]


def test_cli_defaults_are_the_canonical_table():
    a = _parse([])
    assert a.activation == list(depth.CANONICAL["activation"]) and a.init == list(depth.CANONICAL["init"])
    assert a.depths == list(depth.CANONICAL["depths"]) and a.sigma_w2 == [None]


@pytest.mark.parametrize("fmt", ["csv", "json", "table", "markdown"])
def test_cli_formats(fmt, capsys):
    args = _parse(["--activation", "relu,tanh", "--init", "he_normal", "--depths", "3", "--width", "8",
                   "--batch", "4", "--backend", "numpy", "--format", fmt, "--no-progress", "--seeds", "0:2"])
    assert depth.main(args) == 0
    out = capsys.readouterr().out
    if fmt == "csv":
        lines = out.strip().splitlines()
        assert lines[0].split(",") == depth.CSV_COLUMNS and len(lines) == 3
    elif fmt == "json":
        recs = json.loads(out)
        assert [list(r) for r in recs] == [depth.CSV_COLUMNS] * 2 and recs[0]["seeds"] == "0 1"
    else:
        assert "theory" in out and "relu" in out and "tanh" in out


def test_cli_config_error_is_reported(capsys):
    args = _parse(["--norm", "batch", "--batch", "1", "--depths", "2", "--backend", "numpy", "--no-progress"])
    assert depth.main(args) == 2
    assert "batch norm needs batch >= 2" in capsys.readouterr().err


def test_per_layer_output_has_one_row_per_layer(capsys):
    args = _parse(["--activation", "relu", "--init", "he_normal", "--depths", "4,6", "--width", "8", "--batch",
                   "4", "--backend", "numpy", "--format", "csv", "--per-layer", "--no-progress"])
    assert depth.main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 + 5 + 7
    assert "log10_grad_x" in lines[0] and "theory_log10_grad_x_rel" in lines[0]


def test_theory_matches_module_prediction():
    c = cfg(activation="sigmoid", init="xavier_uniform", depth=8)
    pred = theory.predict("sigmoid", 8, 1.0, 0.0)
    assert depth.predict(c).log_ratio == pytest.approx(pred.log_ratio)


def test_plot_without_matplotlib_is_a_clear_error(monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    args = _parse(["--depths", "2", "--backend", "numpy", "--plot", "x.png", "--no-progress"])
    assert depth.main(args) == 2
    assert "needs matplotlib" in capsys.readouterr().err


def test_plot_and_spectrum_cli(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "g.png"
    args = _parse(["--activation", "relu,tanh", "--init", "he_normal", "--depths", "5", "--width", "8",
                   "--batch", "4", "--backend", "numpy", "--plot", str(png), "--no-progress"])
    assert depth.main(args) == 0 and png.stat().st_size > 1000
    capsys.readouterr()
    args = _parse(["--activation", "tanh", "--init", "orthogonal", "--depths", "1,4", "--width", "16",
                   "--backend", "numpy", "--spectrum", "--format", "csv", "--no-progress"])
    assert depth.main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert "var_s2" in out[0] and len(out) == 3
