"""One generic test over the registry: every non-reference backend of every kernel against the
NumPy reference, both dtypes, every awkward size (shapes built from the size by kernels.CASES,
non-square). A new kernel is checked here with no new test code."""

import copy

import numpy as np
import pytest

import kernels
from kernels import verify

from .conftest import NON_REFERENCE


def test_every_kernel_has_every_backend_case_and_tolerance():
    for name, impls in kernels.REGISTRY.items():
        assert set(impls) == set(kernels.BACKENDS), name
        assert name in kernels.CASES, f"{name} has no verification case"
        assert name in verify.TOLERANCE, f"{name} has no tolerance entry"
        assert impls["numpy"].__doc__, f"{name}: the reference must document the kernel"


@pytest.mark.parametrize("size", verify.SIZES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("backend", NON_REFERENCE)
@pytest.mark.parametrize("name", kernels.names())
def test_backend_matches_reference(name, backend, dtype, size):
    r = verify.check_case(name, backend, dtype, size)
    assert r.ok, f"{name}[{backend}, {dtype}, n={size}]: max_error {r.max_error:.3e} > {r.tolerance:.3e} {r.message}"


def test_verifier_catches_a_wrong_backend(monkeypatch):
    """The generic check must be able to fail: a backend off by one ulp-scale bump is caught."""
    ref = kernels.REGISTRY["residual_add"]["numpy"]

    def off_by_a_little(x, fx, scale=1.0):
        y = ref(x, fx, scale)
        return y + np.asarray(np.finfo(y.dtype).eps * 64, dtype=y.dtype) * np.abs(y)

    monkeypatch.setitem(kernels.REGISTRY["residual_add"], "c", off_by_a_little)
    assert not verify.check_case("residual_add", "c", "float32", 7).ok


# ---- the argument contract, over the whole registry ------------------------------------------------

def _array_args(kwargs):
    """(path, array) for every float array argument, list elements included."""
    out = []
    for k, v in kwargs.items():
        if isinstance(v, np.ndarray) and v.dtype.kind == "f":
            out.append(((k,), v))
        elif isinstance(v, list) and v and all(isinstance(a, np.ndarray) for a in v):
            out.extend(((k, i), a) for i, a in enumerate(v))
    return out


def _replace(kwargs, path, new):
    kw = copy.deepcopy(kwargs)
    if len(path) == 1:
        kw[path[0]] = new
    else:
        kw[path[0]][path[1]] = new
    return kw


def _label(path):
    return path[0] if len(path) == 1 else f"{path[0]}[{path[1]}]"


def _call(name, backend, kwargs):
    return kernels.REGISTRY[name][backend](**kwargs)


def _same(a, b):
    fa, fb = verify._flatten(a), verify._flatten(b)
    return len(fa) == len(fb) and all(np.array_equal(x, y, equal_nan=True) for x, y in zip(fa, fb, strict=True))


CONTRACT_CASES = [(n, b) for n in kernels.names() for b in kernels.BACKENDS
                  if kernels.backends()[b] is None]


def _case(name):
    return kernels.CASES[name](np.random.default_rng(7), 7, np.dtype(np.float64))


@pytest.mark.parametrize("name,backend", CONTRACT_CASES)
def test_integer_arrays_are_refused_by_name(name, backend):
    kwargs = _case(name)
    for path, a in _array_args(kwargs):
        bad = _replace(kwargs, path, np.clip(np.where(np.isfinite(a), a, 0), -1e9, 1e9).astype(np.int64))
        with pytest.raises(TypeError, match=rf"^{path[0]}"):
            _call(name, backend, bad)


@pytest.mark.parametrize("name,backend", CONTRACT_CASES)
def test_mixed_dtypes_are_refused(name, backend):
    kwargs = _case(name)
    args = _array_args(kwargs)
    if len(args) < 2:
        pytest.skip("one array argument: nothing to mix")
    for path, a in args:
        with np.errstate(over="ignore"):  # a 1e200 case value becomes inf in float32: fine here
            bad = _replace(kwargs, path, a.astype(np.float32))
        with pytest.raises(TypeError):
            _call(name, backend, bad)


@pytest.mark.parametrize("name,backend", CONTRACT_CASES)
def test_strided_views_give_the_same_answer_or_a_named_error(name, backend):
    """Inputs may be any view (copied to C order); arrays written in place must be refused."""
    kwargs = _case(name)
    expected = _call(name, backend, copy.deepcopy(kwargs))
    for path, a in _array_args(kwargs):
        views = [np.asfortranarray(a)] if a.ndim >= 2 else []
        if a.size:
            flipped = np.flip(a.copy()).copy()
            views.append(np.flip(flipped))                      # negative strides
            wide = np.empty(a.shape + (2,), a.dtype)
            wide[..., 0] = a
            views.append(wide[..., 0])                          # every other element
        for v in views:
            kw = _replace(kwargs, path, v)
            try:
                got = _call(name, backend, kw)
            except ValueError as exc:
                assert _label(path) in str(exc), f"{name}: error does not name {_label(path)}: {exc}"
                assert "contiguous" in str(exc)
                continue
            assert _same(got, expected), f"{name}[{backend}]: a strided {_label(path)} changed the result"


@pytest.mark.parametrize("name,backend", CONTRACT_CASES)
def test_read_only_arrays_are_inputs_or_refused_by_name(name, backend):
    kwargs = _case(name)
    expected = _call(name, backend, copy.deepcopy(kwargs))
    for path, a in _array_args(kwargs):
        ro = a.copy()
        ro.flags.writeable = False
        kw = _replace(kwargs, path, ro)
        try:
            got = _call(name, backend, kw)
        except ValueError as exc:
            assert _label(path) in str(exc) and "read-only" in str(exc), exc
            continue
        assert _same(got, expected)
        assert np.array_equal(ro, a, equal_nan=True), f"{name}: wrote into read-only {_label(path)}"


@pytest.mark.parametrize("name,backend", CONTRACT_CASES)
def test_non_arrays_are_refused(name, backend):
    kwargs = _case(name)
    for path, a in _array_args(kwargs):
        with pytest.raises(TypeError):
            _call(name, backend, _replace(kwargs, path, a.tolist()))
