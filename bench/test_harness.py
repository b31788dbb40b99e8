"""The depth harness against PyTorch eager + autograd: one forward+backward of the same plain ReLU net
(depth 1000, width 256, batch 128, float32, He-normal weights drawn layer by layer, no bias), on the same
number of threads.

    pytest bench/test_harness.py --benchmark-only               both, side by side (one group)
    DEEPPROP_HARNESS_DEPTH=100 pytest bench/test_harness.py --benchmark-only
    DEEPPROP_HARNESS_THREADS=1 pytest bench/test_harness.py --benchmark-only   (default: every usable core)

deepprop: kernels.depth.run_config(cfg, (0,), stats=False) on the C backend, as `deepprop bench --harness`
times it: weights drawn layer by layer, the forward storing z, the backward recomputing each layer's
input, and every number the harness reports (per-layer gradient norms, activation variances, the
log-scale tracking, the theory).
torch: the same network, y = relu(x W^T) per layer with torch.nn.init.kaiming_normal_ weights drawn inside
the timing too (the harness draws its own), x^0 requiring grad (the harness measures dl/dx^0), the loss
sum(g * x^L) / batch and loss.backward() filling every W.grad and x^0.grad. It computes no per-layer
norms: a handicap for deepprop. Issue 5's target: deepprop >= 1.5x faster (torch median / deepprop median).
A plain `pytest` run (benchmarks disabled) runs each once at depth 20, so the suite cannot rot.
"""

import os

import numpy as np
import pytest

import kernels
from kernels import depth
from kernels.machine import usable_cores

WIDTH, BATCH = 256, 128
DEPTH = int(os.environ.get("DEEPPROP_HARNESS_DEPTH", "1000"))
THREADS = int(os.environ.get("DEEPPROP_HARNESS_THREADS", "0")) or usable_cores()


def _depth(benchmark):
    return 20 if benchmark.disabled else DEPTH


def _setup(benchmark, who, d):
    benchmark.group = f"harness relu he_normal depth {d} width {WIDTH} batch {BATCH} float32, {THREADS} threads"
    benchmark.extra_info.update(who=who, depth=d, width=WIDTH, batch=BATCH, dtype="float32", threads=THREADS,
                                gemm=kernels.backend_info()["gemm_isa"])


@pytest.mark.skipif(kernels.backends().get("c") is not None, reason="C backend not built")
def test_harness_deepprop_c(benchmark):
    d = _depth(benchmark)
    _setup(benchmark, "deepprop c", d)
    cfg = depth.Config(activation="relu", init="he_normal", width=WIDTH, batch=BATCH, depth=d, backend="c")
    limiter = depth.set_threads(THREADS)
    try:
        run = benchmark.pedantic(lambda: depth.run_config(cfg, (0,), stats=False), rounds=5, iterations=1,
                                 warmup_rounds=1)
    finally:
        limiter.restore_original_limits()
    assert run.summary["status"] == "ok"


def _torch_net(torch, d, seed=0):
    torch.manual_seed(seed)
    x0 = torch.randn(BATCH, WIDTH, requires_grad=True)
    g = torch.randn(BATCH, WIDTH)
    x = x0
    for _ in range(d):
        W = torch.empty(WIDTH, WIDTH)          # (out, in), as nn.Linear stores it
        torch.nn.init.kaiming_normal_(W, mode="fan_in", nonlinearity="relu")
        W.requires_grad_()
        x = torch.relu(torch.nn.functional.linear(x, W))
    loss = (g * x).sum() / BATCH
    loss.backward()
    return x0.grad


def test_harness_torch_eager(benchmark):
    torch = pytest.importorskip("torch")
    d = _depth(benchmark)
    _setup(benchmark, "torch eager", d)
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        grad = benchmark.pedantic(lambda: _torch_net(torch, d), rounds=5, iterations=1, warmup_rounds=1)
    finally:
        torch.set_num_threads(before)
    # He init keeps the gradient's scale: the input gradient is finite and not vanishing
    ratio = float(grad.norm()) / float(np.sqrt(BATCH * WIDTH) / BATCH)
    assert np.isfinite(ratio) and ratio > 1e-3
