"""deepprop kernels: every kernel in a NumPy reference, a Numba and a C (cffi) backend.

    import kernels
    kernels.names()                          # every kernel name
    kernels.backends()                       # {'numpy': None, 'numba': None, 'c': None or why not}
    kernels.get("relu_forward", "c")(x)      # a kernel by name and backend
    kernels.REGISTRY["relu_forward"]["numba"]

The NumPy backend is the reference (float64 inside): its docstring is the kernel's documentation
and every other backend shares its signature and semantics. ``kernels.<family>.<kernel>`` is the
reference under the kernel's own name.
"""

from __future__ import annotations

from . import _c, _numba, activations, batchnorm, clip, dropout, init, layernorm, linear, orthogonal, residual
from ._c import BackendUnavailable

__all__ = ["REGISTRY", "CASES", "BACKENDS", "BackendUnavailable", "names", "backends", "get", "backend_info"]

FAMILIES = (linear, activations, batchnorm, layernorm, dropout, init, orthogonal, clip, residual)
BACKENDS = ("numpy", "numba", "c")

#: kernel name -> {backend name: function}. Plain dict: a new kernel is a new entry, nothing more.
REGISTRY: dict[str, dict] = {}
#: kernel name -> make(rng, n, dtype) -> kwargs: the inputs kernels.verify checks it on.
CASES: dict[str, object] = {}
#: kernel name -> family module
FAMILY: dict[str, object] = {}

for _family in FAMILIES:
    for _name, _impls in _family.KERNELS.items():
        for _backend, _fn in _impls.items():
            if _backend != "numpy" and _fn.__doc__ is None:
                _fn.__doc__ = f"[{_backend} backend] " + (_impls["numpy"].__doc__ or "")
        REGISTRY[_name] = _impls
        FAMILY[_name] = _family
    CASES.update(_family.CASES)


def names() -> list[str]:
    """Every registered kernel name, in family order."""
    return list(REGISTRY)


def backends() -> dict[str, str | None]:
    """Backend name -> None when available, else the reason it is not."""
    return {"numpy": None, "numba": _numba.UNAVAILABLE, "c": _c.UNAVAILABLE}


def get(name: str, backend: str = "numpy"):
    """The kernel ``name`` on ``backend``; KeyError/BackendUnavailable with a clear message."""
    if name not in REGISTRY:
        raise KeyError(f"unknown kernel {name!r}; kernels.names() lists them")
    if backend not in BACKENDS:
        raise KeyError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    reason = backends()[backend]
    if reason is not None:
        raise BackendUnavailable(f"backend {backend!r} is unavailable: {reason}")
    return REGISTRY[name][backend]


def backend_info() -> dict[str, str | None]:
    """Versions and build details of each backend, for stamping results."""
    import numpy

    info = {"numpy": numpy.__version__, "numba": None, "numba_threading_layer": None,
            "c_build": _c.build_info(),
            # the paths the C kernels dispatched to at run time (each honours a DEEPPROP_*_ISA override)
            **{f"{fam}_isa": None if _c.lib is None or not hasattr(_c.lib, f"{fam}_isa")
               else _c.ffi.string(getattr(_c.lib, f"{fam}_isa")()).decode()
               for fam in ("gemm", "rng", "batchnorm", "clip", "activation", "depth")}}
    if _numba.numba is not None:
        info["numba"] = _numba.numba.__version__
    return info
