"""The Numba backend's decorator. Compiled lazily on first call and cached on disk (cache=True),
so ``import kernels`` compiles nothing and a second process pays no compile time.

fastmath stays off by default: it lets LLVM drop NaN/Inf checks and reorder reductions. A kernel
may opt in only with a comment saying why and a test that pins its NaN behaviour.
"""

from __future__ import annotations

try:
    import numba

    UNAVAILABLE: str | None = None
except ImportError as exc:
    numba = None
    UNAVAILABLE = f"numba is not importable ({exc})"


def njit(*args, **kwargs):
    """numba.njit(cache=True, ...) or, without numba, a decorator whose functions raise when called."""
    kwargs.setdefault("cache", True)
    if numba is not None:
        return numba.njit(*args, **kwargs)

    def missing(func):
        def raiser(*a, **k):
            from ._c import BackendUnavailable
            raise BackendUnavailable(f"backend 'numba' is unavailable: {UNAVAILABLE}")
        return raiser

    if args and callable(args[0]):
        return missing(args[0])
    return missing


def require() -> None:
    if numba is None:
        from ._c import BackendUnavailable
        raise BackendUnavailable(f"backend 'numba' is unavailable: {UNAVAILABLE}")
