import numpy as np
import pytest

import kernels

AVAILABLE = [b for b, why in kernels.backends().items() if why is None]
NON_REFERENCE = [b for b in AVAILABLE if b != "numpy"]
DTYPES = [np.float32, np.float64]


@pytest.fixture(params=AVAILABLE)
def backend(request):
    """Each available backend, the reference included."""
    return request.param


@pytest.fixture(params=DTYPES, ids=["f32", "f64"])
def dtype(request):
    return np.dtype(request.param)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def central_diff(f, a, h=1e-5):
    """d f() / d a by central differences, perturbing a in place."""
    g = np.zeros_like(a)
    for idx in np.ndindex(a.shape):
        old = a[idx]
        a[idx] = old + h
        fp = f()
        a[idx] = old - h
        fm = f()
        a[idx] = old
        g[idx] = (fp - fm) / (2 * h)
    return g
