"""PyTorch counterparts of the kernels, for ``deepprop bench`` (torch is an optional peer, never needed).

Each counterpart uses PyTorch's own op for the job, called without autograd (``torch.no_grad`` and the
ATen backward ops), on tensors that share memory with the NumPy inputs (``torch.from_numpy``, made
outside the timing), and allocates its outputs like our kernels do:

    linear_forward      torch.addmm(b, x, W) (torch.mm without b), then the activation
    linear_backward     dz = dy * act'(z) (ATen backward op); dx = dz @ W^T, dW = x^T @ dz (torch.mm),
                        db = dz.sum(0)
    <act>_forward       torch.sigmoid / tanh / relu, F.leaky_relu / elu / gelu (erf form); identity: clone
    <act>_backward      aten sigmoid_backward / tanh_backward (on the recomputed output),
                        threshold_backward, leaky_relu_backward, elu_backward, gelu_backward
    prelu_*             F.prelu; aten._prelu_kernel_backward (+ the sum over rows for da)
    batchnorm_forward   F.batch_norm(training=True): y and the running statistics (updated in place)
    batchnorm_inference F.batch_norm(training=False)
    batchnorm_backward  aten.native_batch_norm_backward
    layernorm_forward   F.layer_norm
    layernorm_backward  aten.native_layer_norm_backward
    dropout_forward     F.dropout (torch's own random numbers: checked by properties, not values)
    dropout_backward    aten.native_dropout_backward on the unpacked mask
    qr                  torch.linalg.qr (reduced); our sign fix is applied to its result outside the timing
    orthogonal_init     nn.init.orthogonal_ (checked by properties: orthonormal rows or columns, x gain)
    clip_grad_norm      nn.utils.clip_grad_norm_(foreach=True) on parameters whose .grad are the arrays
    clip_grad_value     nn.utils.clip_grad_value_(foreach=True)
    residual_add, l2_grad, l1_grad   torch.add(a, b, alpha=...) (l1: of torch.sign(w))
    initializers        nn.init.zeros_ / constant_ / uniform_ / normal_ / xavier_* / kaiming_* on
                        torch.empty (checked by the distribution's moments and range)

Outputs a counterpart does not produce (batch norm's saved mean and rstd, the dropout mask) are
None and not compared. torch computes in the dtype, not in float64 inside, so its check against the
reference allows kernels.bench.TORCH_SLACK times our tolerance: it guards against a wrong mapping,
it does not grade torch's accuracy. This module imports torch only inside ``make``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

ACTS = ("identity", "sigmoid", "tanh", "relu", "leaky_relu", "elu", "gelu")
INITS = ("zeros_init", "constant_init", "uniform_init", "normal_init", "xavier_uniform_init",
         "xavier_normal_init", "he_uniform_init", "he_normal_init", "lecun_normal_init")


@dataclass
class Peer:
    call: object                  # call() -> result: the timed call
    outputs: object               # outputs(result) -> list of arrays (None where not produced)
    check: object = None          # check(kwargs, originals, outs, refs) -> None | message: a property check


def has_peer(name: str) -> bool:
    return name in _MAKERS


def names() -> list[str]:
    return list(_MAKERS)


def available() -> str | None:
    """None when torch is importable, else why not."""
    import importlib.util

    return None if importlib.util.find_spec("torch") is not None else "torch is not installed"


def make(name: str, kwargs: dict) -> Peer:
    """The torch counterpart of kernel `name` on these (NumPy) arguments."""
    if name not in _MAKERS:
        raise KeyError(f"no torch counterpart for kernel {name!r}")
    import torch

    return _MAKERS[name](torch, kwargs)


# ---- helpers --------------------------------------------------------------------------------------------

def _t(torch, a):
    return None if a is None else torch.from_numpy(a)


def _np(x):
    if x is None:
        return None
    if isinstance(x, float | int):
        import numpy as np

        return np.asarray(x, dtype=np.float64)
    return x.detach().numpy()


def _no_grad(torch, fn):
    def call():
        with torch.no_grad():
            return fn()
    return call


def _act_forward(torch, act, alpha):
    F = torch.nn.functional
    return {"identity": lambda x: x.clone(), "sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu,
            "leaky_relu": lambda x: F.leaky_relu(x, alpha if alpha is not None else 0.01),
            "elu": lambda x: F.elu(x, alpha if alpha is not None else 1.0),
            "gelu": lambda x: F.gelu(x)}[act]


def _act_backward(torch, act, alpha):
    """dy, x -> dx with ATen's backward ops (no autograd graph)."""
    aten = torch.ops.aten
    a = {"leaky_relu": 0.01, "elu": 1.0}.get(act) if alpha is None else alpha
    return {"identity": lambda dy, x: dy.clone(),
            "sigmoid": lambda dy, x: aten.sigmoid_backward(dy, torch.sigmoid(x)),
            "tanh": lambda dy, x: aten.tanh_backward(dy, torch.tanh(x)),
            "relu": lambda dy, x: aten.threshold_backward(dy, x, 0.0),
            "leaky_relu": lambda dy, x: aten.leaky_relu_backward(dy, x, a, False),
            "elu": lambda dy, x: aten.elu_backward(dy, a, 1.0, 1.0, False, x),
            "gelu": lambda dy, x: aten.gelu_backward(dy, x)}[act]


def _list(x):
    return list(x) if isinstance(x, tuple | list) else [x]


# ---- makers: (torch, kwargs) -> Peer ----------------------------------------------------------------------

def _linear_forward(torch, kw):
    x, W, b = _t(torch, kw["x"]), _t(torch, kw["W"]), _t(torch, kw.get("b"))
    act = _act_forward(torch, kw.get("activation", "identity"), kw.get("alpha"))
    keep = kw.get("keep_preactivation", False)
    identity = kw.get("activation", "identity") == "identity"

    def fn():
        z = torch.addmm(b, x, W) if b is not None else torch.mm(x, W)
        y = z if identity and not keep else act(z)
        return (y, z) if keep else y
    return Peer(_no_grad(torch, fn), lambda r: [_np(t) for t in _list(r)])


def _linear_backward(torch, kw):
    dy, x, W, z = (_t(torch, kw.get(k)) for k in ("dy", "x", "W", "z"))
    act = kw.get("activation", "identity")
    back = None if act == "identity" or z is None else _act_backward(torch, act, kw.get("alpha"))

    def fn():
        dz = dy if back is None else back(dy, z)
        return torch.mm(dz, W.t()), torch.mm(x.t(), dz), dz.sum(0)
    return Peer(_no_grad(torch, fn), lambda r: [_np(t) for t in r])


def _act_forward_peer(act):
    def make(torch, kw):
        x = _t(torch, kw["x"])
        f = _act_forward(torch, act, kw.get("alpha"))
        return Peer(_no_grad(torch, lambda: f(x)), lambda r: [_np(r)])
    return make


def _act_backward_peer(act):
    def make(torch, kw):
        dy, x = _t(torch, kw["dy"]), _t(torch, kw["x"])
        f = _act_backward(torch, act, kw.get("alpha"))
        return Peer(_no_grad(torch, lambda: f(dy, x)), lambda r: [_np(r)])
    return make


def _prelu_forward(torch, kw):
    x, a = _t(torch, kw["x"]), _t(torch, kw["a"])
    F = torch.nn.functional
    return Peer(_no_grad(torch, lambda: F.prelu(x, a)), lambda r: [_np(r)])


def _prelu_backward(torch, kw):
    dy, x, a = _t(torch, kw["dy"]), _t(torch, kw["x"]), _t(torch, kw["a"])
    aten = torch.ops.aten
    w = a.view(1, -1) if a.numel() > 1 else a.view(1, 1)

    def fn():
        dx, dw = aten._prelu_kernel_backward(dy, x, w.expand_as(x))
        da = dw.sum(0) if a.numel() > 1 else dw.sum().reshape(1)
        return dx, da
    return Peer(_no_grad(torch, fn), lambda r: [_np(t) for t in r])


def _batchnorm_forward(torch, kw):
    F = torch.nn.functional
    x, g, b, rm, rv = (_t(torch, kw[k]) for k in ("x", "gamma", "beta", "running_mean", "running_var"))
    m, eps = kw.get("momentum", 0.1), kw.get("eps", 1e-5)
    return Peer(_no_grad(torch, lambda: F.batch_norm(x, rm, rv, g, b, training=True, momentum=m, eps=eps)),
                lambda r: [_np(r), None, None])


def _batchnorm_inference(torch, kw):
    F = torch.nn.functional
    x, g, b, rm, rv = (_t(torch, kw[k]) for k in ("x", "gamma", "beta", "running_mean", "running_var"))
    eps = kw.get("eps", 1e-5)
    return Peer(_no_grad(torch, lambda: F.batch_norm(x, rm, rv, g, b, training=False, eps=eps)),
                lambda r: [_np(r)])


def _batchnorm_backward(torch, kw):
    dy, x, g, mean, rstd = (_t(torch, kw[k]) for k in ("dy", "x", "gamma", "mean", "rstd"))
    aten = torch.ops.aten
    return Peer(_no_grad(torch, lambda: aten.native_batch_norm_backward(dy, x, g, None, None, mean, rstd, True,
                                                                         1e-5, [True, True, True])),
                lambda r: [_np(t) for t in r])


def _layernorm_forward(torch, kw):
    F = torch.nn.functional
    x, g, b = (_t(torch, kw[k]) for k in ("x", "gamma", "beta"))
    D, eps = kw["x"].shape[-1], kw.get("eps", 1e-5)
    return Peer(_no_grad(torch, lambda: F.layer_norm(x, (D,), g, b, eps)), lambda r: [_np(r), None, None])


def _layernorm_backward(torch, kw):
    dy, x, g = (_t(torch, kw[k]) for k in ("dy", "x", "gamma"))
    N, D = kw["x"].shape
    mean, rstd = _t(torch, kw["mean"]).view(N, 1), _t(torch, kw["rstd"]).view(N, 1)
    beta = torch.zeros_like(g)
    aten = torch.ops.aten
    return Peer(_no_grad(torch, lambda: aten.native_layer_norm_backward(dy, x, [D], mean, rstd, g, beta,
                                                                         [True, True, True])),
                lambda r: [_np(t) for t in r])


def _dropout_check(kw, originals, outs, refs):
    """y is 0 or x / (1 - p) elementwise, and about a fraction 1 - p is kept."""
    import numpy as np

    x, p, y = originals["x"].astype(np.float64), float(kw["p"]), outs[0].astype(np.float64)
    kept = y != 0
    scaled = x / (1.0 - p) if p < 1 else np.zeros_like(x)
    eps = float(np.finfo(originals["x"].dtype).eps)
    if not np.all(np.abs(y[kept] - scaled[kept]) <= 4 * eps * np.abs(scaled[kept])):
        return "kept elements are not x / (1 - p)"
    frac = kept.mean() if y.size else 1 - p
    if y.size >= 1000 and abs(frac - (1 - p)) > 5 * math.sqrt(p * (1 - p) / y.size) + 1e-3:
        return f"kept fraction {frac:.4f}, expected {1 - p:.4f}"
    return None


def _dropout_forward(torch, kw):
    F = torch.nn.functional
    x, p = _t(torch, kw["x"]), float(kw["p"])
    return Peer(_no_grad(torch, lambda: F.dropout(x, p, training=True)), lambda r: [_np(r), None],
                _dropout_check)


def _dropout_backward(torch, kw):
    import numpy as np

    dy, p = kw["dy"], float(kw["p"])
    if kw.get("mask") is None:
        raise ValueError("the torch counterpart of dropout_backward needs the mask argument")
    bits = np.unpackbits(kw["mask"], bitorder="little")[: dy.size].reshape(dy.shape).astype(bool)
    mask, tdy = torch.from_numpy(bits), _t(torch, dy)
    scale = 1.0 / (1.0 - p) if p < 1 else 0.0
    aten = torch.ops.aten
    return Peer(_no_grad(torch, lambda: aten.native_dropout_backward(tdy, mask, scale)), lambda r: [_np(r)])


def _qr(torch, kw):
    import numpy as np

    a = _t(torch, kw["a"])

    def outputs(r):
        q, rr = _np(r[0]), _np(r[1])
        s = np.where(np.diagonal(rr) < 0, -1.0, 1.0).astype(q.dtype)  # our sign fix: diag(r) >= 0
        return [q * s, rr * s[:, None]]
    return Peer(_no_grad(torch, lambda: torch.linalg.qr(a, mode="reduced")), outputs)


def _torch_dtype(torch, kw):
    import numpy as np

    return {np.dtype("float32"): torch.float32, np.dtype("float64"): torch.float64}[np.dtype(kw.get("dtype",
                                                                                                   "float32"))]


def _orthogonal_check(kw, originals, outs, refs):
    import numpy as np

    W = outs[0].astype(np.float64)
    gain = float(kw.get("gain", 1.0))
    G = W @ W.T if W.shape[0] <= W.shape[1] else W.T @ W
    err = float(np.max(np.abs(G - gain * gain * np.eye(G.shape[0])))) if G.size else 0.0
    tol = 1e3 * float(np.finfo(outs[0].dtype).eps) * max(W.shape) * max(gain * gain, 1.0)
    return None if err <= tol else f"W is not orthogonal x gain: max |W W^T - gain^2 I| = {err:.3g}"


def _orthogonal_init(torch, kw):
    shape, gain, dt = tuple(kw["shape"]), float(kw.get("gain", 1.0)), _torch_dtype(torch, kw)

    def fn():
        return torch.nn.init.orthogonal_(torch.empty(shape, dtype=dt), gain=gain)
    return Peer(_no_grad(torch, fn), lambda r: [_np(r)], _orthogonal_check)


def _clip_params(torch, grads):
    params = []
    for g in grads:
        p = torch.nn.Parameter(torch.empty(g.shape, dtype=torch.from_numpy(g).dtype), requires_grad=True)
        p.grad = torch.from_numpy(g)
        params.append(p)
    return params


def _clip_grad_norm(torch, kw):
    params = _clip_params(torch, kw["grads"])
    args = (float(kw["max_norm"]), float(kw.get("norm_type", 2.0)), bool(kw.get("error_if_nonfinite", False)))

    def fn():
        return torch.nn.utils.clip_grad_norm_(params, *args, foreach=True)
    return Peer(fn, lambda r: [_np(float(r))])


def _clip_grad_value(torch, kw):
    params = _clip_params(torch, kw["grads"])
    v = float(kw["clip_value"])
    return Peer(lambda: torch.nn.utils.clip_grad_value_(params, v, foreach=True), lambda r: [])


def _binary(a_key, b_key, p_key, sign=False):
    def make(torch, kw):
        a, b, p = _t(torch, kw[a_key]), _t(torch, kw[b_key]), float(kw[p_key])
        if sign:
            return Peer(_no_grad(torch, lambda: torch.add(a, torch.sign(b), alpha=p)), lambda r: [_np(r)])
        return Peer(_no_grad(torch, lambda: torch.add(a, b, alpha=p)), lambda r: [_np(r)])
    return make


def _moments_check(kw, originals, outs, refs):
    """Same distribution as the reference's draw: mean, standard deviation and range agree."""
    import numpy as np

    if not refs or not outs or outs[0] is None:
        return "no output"
    y, r = outs[0].astype(np.float64).ravel(), refs[0].astype(np.float64).ravel()
    if y.shape != r.shape:
        return f"shape {outs[0].shape} != reference {refs[0].shape}"
    if y.size == 0:
        return None
    sr = float(r.std())
    if sr == 0.0:
        return None if np.array_equal(y, r) else "constant values differ from the reference"
    # 8 standard errors of the difference of two independent draws: a wrong mapping (a fan taken from
    # the wrong axis, a bound for a std) is off by far more at the bench sizes; chance never gets there
    se = 8 * sr * math.sqrt(2.0 / y.size)
    if abs(float(y.mean()) - float(r.mean())) > se + 1e-6 * abs(float(r.mean())):
        return f"mean {y.mean():.4g} vs reference {r.mean():.4g}"
    if abs(float(y.std()) / sr - 1.0) > 8.0 * math.sqrt(2.0 / y.size) + 1e-3:
        return f"std {y.std():.4g} vs reference {sr:.4g}"
    return None


def _init(name):
    """nn.init on torch.empty(shape): our (fan_in, fan_out) = (rows, cols) shape is torch's weight
    transposed, so the torch tensor is made (cols, rows) and returned transposed."""
    def make(torch, kw):
        shape, dt = tuple(kw["shape"]), _torch_dtype(torch, kw)
        init = torch.nn.init
        tshape = tuple(reversed(shape)) if len(shape) == 2 else shape
        gain = float(kw.get("gain", 1.0))
        mode, nonlin = kw.get("mode", "fan_in"), kw.get("nonlinearity", "relu")
        slope = float(kw.get("slope", 0.01)) if nonlin == "leaky_relu" else 0.0
        fns = {
            "zeros_init": lambda t: init.zeros_(t),
            "constant_init": lambda t: init.constant_(t, float(kw.get("value", 0.0))),
            "uniform_init": lambda t: init.uniform_(t, float(kw.get("low", 0.0)), float(kw.get("high", 1.0))),
            "normal_init": lambda t: init.normal_(t, float(kw.get("mean", 0.0)), float(kw.get("std", 1.0))),
            "xavier_uniform_init": lambda t: init.xavier_uniform_(t, gain),
            "xavier_normal_init": lambda t: init.xavier_normal_(t, gain),
            "he_uniform_init": lambda t: init.kaiming_uniform_(t, a=slope, mode=mode, nonlinearity=nonlin),
            "he_normal_init": lambda t: init.kaiming_normal_(t, a=slope, mode=mode, nonlinearity=nonlin),
            "lecun_normal_init": lambda t: init.normal_(t, 0.0, 1.0 / math.sqrt(t.shape[1] if t.ndim == 2
                                                                               else max(t.numel(), 1))),
        }
        f = fns[name]

        def fn():
            return f(torch.empty(tshape, dtype=dt))
        return Peer(_no_grad(torch, fn), lambda r: [_np(r.t() if r.ndim == 2 else r)], _moments_check)
    return make


_MAKERS = {
    "linear_forward": _linear_forward, "linear_backward": _linear_backward,
    **{f"{a}_forward": _act_forward_peer(a) for a in ACTS},
    **{f"{a}_backward": _act_backward_peer(a) for a in ACTS},
    "prelu_forward": _prelu_forward, "prelu_backward": _prelu_backward,
    "batchnorm_forward": _batchnorm_forward, "batchnorm_inference": _batchnorm_inference,
    "batchnorm_backward": _batchnorm_backward,
    "layernorm_forward": _layernorm_forward, "layernorm_backward": _layernorm_backward,
    "dropout_forward": _dropout_forward, "dropout_backward": _dropout_backward,
    "qr": _qr, "orthogonal_init": _orthogonal_init,
    "clip_grad_norm": _clip_grad_norm, "clip_grad_value": _clip_grad_value,
    "residual_add": _binary("x", "fx", "scale"), "l2_grad": _binary("grad", "w", "weight_decay"),
    "l1_grad": _binary("grad", "w", "l1", sign=True),
    **{name: _init(name) for name in INITS},
}


def depth_net(depth: int, width: int, batch: int, activation: str = "relu", init: str = "he_normal",
              dtype: str = "float32", seed: int = 0):
    """The depth harness's plain net in PyTorch eager mode with autograd, for kernels.targets: draw
    x ~ N(0, 1) (batch, width); per layer W ~ N(0, 2 / width) (He normal, fan_in), b = 0, h = relu(h @ W + b)
    (torch.addmm), the variance of every h recorded; backward from g / batch, g ~ N(0, 1), with every
    hidden gradient retained and the norms of dl/dh and dl/dW read. The same work as one
    ``kernels.depth.run_config(..., stats=False)`` of that net: weights drawn in the timing, per-layer
    statistics. Returns log10(||dl/dx^0|| / ||dl/dx^L||)."""
    import torch

    if activation != "relu" or init != "he_normal":
        raise ValueError("depth_net: only the benchmark's net (relu, he_normal) is written")
    dt = {"float32": torch.float32, "float64": torch.float64}[dtype]
    gen = torch.Generator().manual_seed(seed)
    std = math.sqrt(2.0 / width)
    x = torch.randn(batch, width, generator=gen, dtype=dt, requires_grad=True)
    h, hs, ws, var = x, [], [], []
    for _ in range(depth):
        W = (torch.randn(width, width, generator=gen, dtype=dt) * std).requires_grad_()
        b = torch.zeros(width, dtype=dt, requires_grad=True)
        h = torch.relu(torch.addmm(b, h, W))
        h.retain_grad()
        hs.append(h)
        ws.append(W)
        var.append(float(h.detach().var()))
    g = torch.randn(batch, width, generator=gen, dtype=dt) / batch
    h.backward(g)
    norms = [float(t.grad.norm()) for t in hs] + [float(W.grad.norm()) for W in ws]
    return math.log10(float(x.grad.norm()) / norms[depth - 1]) if norms[depth - 1] > 0 else math.nan
