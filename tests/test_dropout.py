"""dropout_mask, dropout_forward, dropout_backward and the Philox4x32-10 generator (kernels/dropout.py):
known answers, mask statistics, the seed contract (backends, thread counts, offsets), the p = 0 and p = 1
limits, special values, the gradient, and bad input. All seeds are fixed, so every test is deterministic.
"""

import hashlib
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import scipy.stats

import kernels
from kernels import dropout

BACKENDS = ["numpy", "numba", "c"]
DTYPES = [np.float32, np.float64]

# Random123's known answers for philox4x32_10: (counter, key) -> output
KAT = [
    ((0x00000000, 0x00000000, 0x00000000, 0x00000000), (0x00000000, 0x00000000),
     (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF),
     (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]

# the first 64 keep flags (element 0 first) of dropout_mask(64, p=0.5, seed=42), pinned: a change of
# the counter layout, word order, threshold rule or bit order changes this string
SEED42_P05_BITS = "1100001001000100010101110101010000110000101010000001101010000000"


def get(name, backend):
    try:
        return kernels.get(name, backend)
    except kernels.BackendUnavailable as exc:
        pytest.skip(str(exc))


def philox_backend(backend):
    if kernels.backends()[backend] is not None:
        pytest.skip(kernels.backends()[backend])
    return lambda ctr, key: dropout.philox4x32_10(ctr, key, backend=backend)


def bits(mask, n):
    return np.unpackbits(mask, count=n, bitorder="little").astype(bool)


@pytest.fixture
def numba_threads():
    """numba.set_num_threads, restored afterwards."""
    numba = pytest.importorskip("numba")
    before = numba.get_num_threads()
    yield numba
    numba.set_num_threads(before)


# ---- the generator ---------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ctr,key,expected", KAT, ids=["zeros", "ones", "pi"])
def test_philox_known_answers(backend, ctr, key, expected):
    out = philox_backend(backend)(ctr, key)
    assert out.dtype == np.uint32
    assert [int(v) for v in out] == list(expected)


def test_philox_numpy_is_vectorised_over_counters():
    """The reference's array form gives, element by element, the scalar answers."""
    ctr = np.array([k[0] for k in KAT], dtype=np.uint64).T
    key = np.array([k[1] for k in KAT], dtype=np.uint64).T
    out = np.stack(dropout._philox_np(*ctr, *key), axis=1)
    assert out.tolist() == [list(k[2]) for k in KAT]


@pytest.mark.parametrize("backend", BACKENDS)
def test_philox_rejects_bad_words(backend):
    f = philox_backend(backend)
    with pytest.raises(ValueError, match="ctr"):
        f((0, 0, 0), (0, 0))
    with pytest.raises(ValueError, match=r"key\[1\]"):
        f((0, 0, 0, 0), (0, 2**32))
    with pytest.raises(TypeError, match="ctr"):
        f(5, (0, 0))


def _u32(j, seed, offset=0):
    """Element j's 32-bit uniform, by hand from the raw generator (module docstring of kernels.dropout):
    the high 16 bits from stream 0, the low from stream 3, half (j & 1) of word ((j >> 1) & 3) of the
    call with counter j >> 3."""
    j += offset
    ctr, key = (j >> 3) & 0xFFFFFFFF, (seed & 0xFFFFFFFF, seed >> 32)
    hi, lo = ((int(dropout.philox4x32_10((ctr, j >> 35, stream, 0), key)[(j >> 1) & 3]) >> (16 * (j & 1))) & 0xFFFF
              for stream in (0, 3))
    return hi << 16 | lo


def test_pinned_mask_seed42():
    expected = np.array([c == "1" for c in SEED42_P05_BITS])
    # the pinned string is the raw generator's: p = 0.5 keeps u >= 2**31
    assert "".join("1" if _u32(j, 42) >= 2**31 else "0" for j in range(64)) == SEED42_P05_BITS
    for backend in BACKENDS:
        m = get("dropout_mask", backend)(64, 0.5, 42)
        assert m.dtype == np.uint8 and m.shape == (8,)
        np.testing.assert_array_equal(bits(m, 64), expected, err_msg=backend)


def _tie_ps(seed, offset, k):
    """Two drop probabilities whose thresholds tie element k's high 16 bits: u_k itself (k kept, as
    u_k >= threshold) and u_k + 1 (k dropped) -- the low halves decide (or u_k - 1 and u_k, if u_k + 1
    would not tie)."""
    u = _u32(k, seed, offset)
    t = u if (u & 0xFFFF) != 0xFFFF else u - 1
    return [t / 2**32, (t + 1) / 2**32]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_tie_of_the_high_halves_is_decided_by_the_low_ones(backend):
    """Element k's high half equals the threshold's: its low half (stream 3) decides, on every path, and
    elements that do not tie are unchanged between the two thresholds."""
    n, seed, offset, k = 3000, 9, 3, 1234
    f = get("dropout_mask", backend)
    ps = _tie_ps(seed, offset, k)
    kept_at = [bits(f(n, p, seed, offset), n) for p in ps]
    u = _u32(k, seed, offset)
    assert u & 0xFFFF != 0xFFFF  # so the two thresholds are u and u + 1 (a fact of this seed)
    assert [dropout.dropout_threshold(p) for p in ps] == [u, u + 1]  # both tie k's high half
    assert [kk[k] for kk in kept_at] == [True, False]
    assert np.flatnonzero(kept_at[0] != kept_at[1]).tolist() == [k]
    for p in ps:
        np.testing.assert_array_equal(f(n, p, seed, offset), dropout.dropout_mask(n, p, seed, offset))
        want = [_u32(j, seed, offset) >= dropout.dropout_threshold(p) for j in range(0, n, 97)]
        np.testing.assert_array_equal(bits(dropout.dropout_mask(n, p, seed, offset), n)[::97], want)


def test_threshold_is_one_rounded_integer():
    t = dropout.dropout_threshold
    assert t(0.0) == 0 and t(1.0) == 2**32 and t(0.5) == 2**31
    assert t(0.1) == 429496730  # round(429496729.6)
    assert all(isinstance(t(p), int) for p in (0.0, 0.3, 1.0))


# ---- statistics ------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_rate_within_five_sigma(backend, p):
    n = 200_000
    kept = int(bits(get("dropout_mask", backend)(n, p, 2024), n).sum())
    q = 1.0 - dropout.dropout_threshold(p) / 2**32
    sigma = np.sqrt(n * q * (1 - q))
    assert abs(kept - n * q) < 5 * sigma, f"kept {kept}, expected {n * q:.0f} +- {5 * sigma:.0f}"


def _masks_over_seeds(p, n=64, seeds=2000):
    f = get("dropout_mask", "c") if kernels.backends()["c"] is None else dropout.dropout_mask
    return np.array([bits(f(n, p, s), n) for s in range(seeds)])


@pytest.mark.parametrize("p", [0.5, 0.1])
def test_per_position_chi_square_over_seeds(p):
    """2000 masks of 64 positions (seeds 0..1999): every position keeps with probability 1 - p."""
    keep = _masks_over_seeds(p)
    S = keep.shape[0]
    q = 1.0 - p
    kept = keep.sum(axis=0)
    obs = np.concatenate([kept, S - kept])
    exp = np.concatenate([np.full(64, S * q), np.full(64, S * p)])
    # 128 cells, 64 constraints (kept + dropped = S per position): 64 degrees of freedom
    res = scipy.stats.chisquare(obs, exp, ddof=63)
    assert res.pvalue > 1e-4, res


def test_words_of_one_block_are_jointly_uniform():
    """Elements sharing a Philox call (8 per call, 2 per word) are independent: the 16 joint keep
    patterns of positions 0..3 (two words), 4..7, over 2000 seeds are uniform at p = 0.5; so are those
    of positions 6..9, across a block."""
    keep = _masks_over_seeds(0.5, n=16)
    for lo in (0, 4, 6):
        code = keep[:, lo:lo + 4] @ np.array([1, 2, 4, 8])
        res = scipy.stats.chisquare(np.bincount(code, minlength=16))
        assert res.pvalue > 1e-4, (lo, res)


def test_chi_square_catches_a_biased_position():
    """The per-position test can fail: one position forced to keep 60% of the time is caught."""
    keep = _masks_over_seeds(0.5)
    keep[:1200, 5] = True
    keep[1200:, 5] = False
    kept = keep.sum(axis=0)
    obs = np.concatenate([kept, 2000 - kept])
    assert scipy.stats.chisquare(obs, np.full(128, 1000.0), ddof=63).pvalue < 1e-4


# ---- the seed contract: backends, threads, offsets -------------------------------------------------

CONTRACT = [  # (n, p, seed, offset): unaligned offsets, a counter high word, seeds >= 2**63
    (10_001, 0.3, 0, 0),
    (4097, 0.5, 2**64 - 1, 5),
    (1029, 0.77, 2**63 + 12345, 8 * 2**32 + 3),
    (13, 0.5, 99, 2**64 - 13),
    (9000, 0.4, 17, 8 * 2**32 - 4094),  # Numba: 3 chunks, unaligned, the block counter crosses 2^32
] + [(9000, p, 17, 8 * 2**32 - 4094) for p in _tie_ps(17, 8 * 2**32 - 4094, 5000)]  # a tie, in chunk 2


@pytest.mark.parametrize("n,p,seed,offset", CONTRACT)
def test_masks_bit_identical_across_backends_and_threads(numba_threads, n, p, seed, offset):
    ref = dropout.dropout_mask(n, p, seed, offset)
    for backend in ("c", "numba"):
        np.testing.assert_array_equal(get("dropout_mask", backend)(n, p, seed, offset), ref, err_msg=backend)
    x = np.random.default_rng(n).standard_normal(n)
    y_ref, m_ref = dropout.dropout_forward(x, p, seed, offset)
    np.testing.assert_array_equal(m_ref, ref)
    for threads in (1, 2):
        numba_threads.set_num_threads(threads)
        np.testing.assert_array_equal(dropout.dropout_mask_numba(n, p, seed, offset), ref, err_msg=threads)
        y, m = dropout.dropout_forward_numba(x, p, seed, offset)
        np.testing.assert_array_equal(m, ref)
        np.testing.assert_array_equal(y, y_ref)
        dx = dropout.dropout_backward_numba(x, p, seed=seed, offset=offset)
        np.testing.assert_array_equal(dx, y_ref)


@pytest.mark.parametrize("backend", BACKENDS)
def test_padding_bits_are_zero(backend):
    m = get("dropout_mask", backend)(13, 0.0, 3)
    assert m.tolist() == [0xFF, 0x1F]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n1,n2", [(8, 13), (64, 1), (1024, 777), (3, 10), (21, 6)])
def test_offset_continues_the_stream(backend, n1, n2):
    f = get("dropout_mask", backend)
    seed, p, base = 7, 0.4, 2**33 + 1
    whole = f(n1 + n2, p, seed, base)
    first, second = f(n1, p, seed, base), f(n2, p, seed, base + n1)
    if n1 % 8 == 0:
        np.testing.assert_array_equal(whole, np.concatenate([first, second]))
    np.testing.assert_array_equal(bits(whole, n1 + n2), np.concatenate([bits(first, n1), bits(second, n2)]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_seeds_and_offsets_change_the_mask(backend):
    f = get("dropout_mask", backend)
    a = f(256, 0.5, 1)
    assert not np.array_equal(a, f(256, 0.5, 2))
    assert not np.array_equal(a, f(256, 0.5, 1 + 2**32))  # the key's high word matters
    assert not np.array_equal(a, f(256, 0.5, 1, offset=1))
    np.testing.assert_array_equal(a, f(256, 0.5, 1))


# ---- forward / backward semantics ------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_scales_kept_and_zeroes_dropped(backend, dtype):
    x = np.random.default_rng(1).standard_normal((37, 5, 3)).astype(dtype)
    p = 0.3
    y, m = get("dropout_forward", backend)(x, p, 11, 2)
    assert y.shape == x.shape and y.dtype == x.dtype and m.shape == ((x.size + 7) // 8,)
    keep = bits(m, x.size).reshape(x.shape)
    expected = (x.astype(np.float64) * (1.0 / (1.0 - p))).astype(dtype)
    np.testing.assert_array_equal(y[keep], expected[keep])
    assert np.all(y[~keep] == 0) and not np.any(np.signbit(y[~keep]))
    np.testing.assert_array_equal(m, dropout.dropout_mask(x.size, p, 11, 2))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_special_values(backend, dtype):
    """Kept Inf/NaN propagate; dropped ones become exactly 0 (no NaN from Inf * 0)."""
    n = 64
    keep = bits(dropout.dropout_mask(n, 0.5, 5), n)
    x = np.where(np.arange(n) % 2 == 0, np.inf, np.nan).astype(dtype)
    y, _ = get("dropout_forward", backend)(x, 0.5, 5)
    assert np.all(y[~keep] == 0)
    np.testing.assert_array_equal(y[keep], x[keep])
    dx = get("dropout_backward", backend)(x, 0.5, seed=5)
    np.testing.assert_array_equal(dx, y)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_p0_is_the_identity(backend, dtype):
    x = np.random.default_rng(2).standard_normal(45).astype(dtype)
    x[[0, 1, 2, 3]] = np.inf, -np.inf, -0.0, np.finfo(dtype).max
    y, m = get("dropout_forward", backend)(x, 0.0, 9)
    np.testing.assert_array_equal(y.view(np.uint8), x.view(np.uint8))  # bit for bit, -0.0 included
    assert np.all(bits(m, 45)) and m[-1] == 0x1F
    dx = get("dropout_backward", backend)(x, 0.0, mask=m)
    np.testing.assert_array_equal(dx.view(np.uint8), x.view(np.uint8))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_p1_drops_everything(backend, dtype):
    x = np.array([1.0, -2.0, np.inf, np.nan, 1e30, 0.5, -np.inf, 3.0, 4.0], dtype=dtype)
    y, m = get("dropout_forward", backend)(x, 1.0, 123)
    assert np.all(y == 0) and not np.any(m)
    back = get("dropout_backward", backend)
    assert np.all(back(x, 1.0, seed=123) == 0)
    assert np.all(back(x, 1.0, mask=m) == 0)
    # even a mask that keeps everything: the scale is 0 and Inf * 0 must not give NaN
    assert np.all(back(x, 1.0, mask=np.full(2, 0xFF, dtype=np.uint8)) == 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_rounds_once_from_float64(backend):
    """p = 1/3: 1/(1 - p) = 1.5 (inexact in float64); float32 y is x * scale in double, rounded once."""
    x = np.random.default_rng(4).standard_normal(4000).astype(np.float32)
    p = 1.0 / 3.0
    y, m = get("dropout_forward", backend)(x, p, 8)
    keep = bits(m, x.size)
    expected = (x[keep].astype(np.float64) * (1.0 / (1.0 - p))).astype(np.float32)
    np.testing.assert_array_equal(y[keep], expected)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("p", [0.5, 0.75, 0.2, 2**-40, 0.3])
def test_float32_with_a_float_scale_is_bit_identical(backend, p):
    """Numba and C multiply float32 data in float32 when 1 / (1 - p) is a float (2, 4, 1.25; 2**-40
    gives threshold 0 with a scale just above 1, not a float: the double path, as for 0.3); the result
    must be the reference's float64 multiply rounded once, bit for bit, overflow to Inf, subnormals,
    Inf and NaN included, forward and both backwards, over several chunks and a tail."""
    n = 9000
    x = np.random.default_rng(6).standard_normal(n).astype(np.float32)
    x[::9] = 3e38
    x[1::9] = -3.3e38
    x[2::9] = 1e-45
    x[3::9] = -2.5e-40
    x[4::17] = np.inf
    x[5::19] = np.nan
    y_ref, m_ref = dropout.dropout_forward(x, p, 31, 5)
    y, m = get("dropout_forward", backend)(x, p, 31, 5)
    np.testing.assert_array_equal(m, m_ref)
    assert y.tobytes() == y_ref.tobytes()
    back = get("dropout_backward", backend)
    assert back(x, p, mask=m_ref).tobytes() == y_ref.tobytes()
    assert back(x, p, seed=31, offset=5).tobytes() == y_ref.tobytes()


@pytest.mark.parametrize("backend", ["numba", "c"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("offset", [0, 8 * 2**32 + 2])
def test_large_calls_are_bit_identical(backend, dtype, offset):
    """A million elements (over the C threading threshold, many Numba chunks), on the team of threads
    the process has, offsets aligned to a block and not: forward, backward with the mask and
    regenerated, bit for bit with the reference."""
    n = (1 << 20) + 77
    x = np.random.default_rng(8).standard_normal(n).astype(dtype)
    x[::1001] = np.inf
    x[7::999] = np.nan
    y_ref, m_ref = dropout.dropout_forward(x, 0.5, 2**63 + 9, offset)
    y, m = get("dropout_forward", backend)(x, 0.5, 2**63 + 9, offset)
    np.testing.assert_array_equal(m, m_ref)
    assert y.tobytes() == y_ref.tobytes()
    back = get("dropout_backward", backend)
    assert back(x, 0.5, mask=m_ref).tobytes() == y_ref.tobytes()
    assert back(x, 0.5, seed=2**63 + 9, offset=offset).tobytes() == y_ref.tobytes()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_with_mask_equals_regeneration(backend, dtype):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((19, 7)).astype(dtype)
    dy = rng.standard_normal((19, 7)).astype(dtype)
    _, m = get("dropout_forward", backend)(x, 0.6, 2**40 + 1, 3)
    back = get("dropout_backward", backend)
    a = back(dy, 0.6, mask=m)
    b = back(dy, 0.6, seed=2**40 + 1, offset=3)
    np.testing.assert_array_equal(a, b)
    assert a.shape == dy.shape and a.dtype == dtype
    # a strided (non-contiguous) view of the mask gives the same answer
    wide = np.zeros(2 * m.size, dtype=np.uint8)
    wide[::2] = m
    np.testing.assert_array_equal(back(dy, 0.6, mask=wide[::2]), a)


@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_against_central_differences(backend):
    """For a fixed (seed, offset) dropout is linear in x: the gradient of L = sum(w * y) is
    dropout_backward(w), checked by central differences in float64."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((5, 4))
    w = rng.standard_normal((5, 4))
    fwd = get("dropout_forward", backend)
    p, seed, h = 0.35, 17, 1e-6
    dx = get("dropout_backward", backend)(w, p, seed=seed)
    num = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[idx] = h
        num[idx] = (np.sum(w * fwd(x + e, p, seed)[0]) - np.sum(w * fwd(x - e, p, seed)[0])) / (2 * h)
    np.testing.assert_allclose(dx, num, rtol=1e-7, atol=1e-9)
    assert np.any(dx == 0) and np.any(dx != 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_inputs(backend):
    assert get("dropout_mask", backend)(0, 0.5, 1).shape == (0,)
    y, m = get("dropout_forward", backend)(np.zeros((0, 3), dtype=np.float32), 0.5, 1)
    assert y.shape == (0, 3) and m.shape == (0,) and m.dtype == np.uint8
    dx = get("dropout_backward", backend)(np.zeros((4, 0)), 0.5, mask=np.zeros(0, dtype=np.uint8))
    assert dx.shape == (4, 0)


# ---- bad input -------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("p", [-0.1, 1.0000001, np.nan, np.inf])
def test_bad_p(backend, p):
    x = np.ones(10)
    with pytest.raises(ValueError, match="^p"):
        get("dropout_mask", backend)(10, p, 0)
    with pytest.raises(ValueError, match="^p"):
        get("dropout_forward", backend)(x, p, 0)
    with pytest.raises(ValueError, match="^p"):
        get("dropout_backward", backend)(x, p, seed=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_seed_offset_n(backend):
    mask, fwd = get("dropout_mask", backend), get("dropout_forward", backend)
    x = np.ones(10)
    for bad in (-1, 2**64):
        with pytest.raises(ValueError, match="^seed"):
            mask(10, 0.5, bad)
        with pytest.raises(ValueError, match="^seed"):
            fwd(x, 0.5, bad)
        with pytest.raises(ValueError, match="^seed"):
            get("dropout_backward", backend)(x, 0.5, seed=bad)
    for bad in (1.5, "3", True):
        with pytest.raises(TypeError, match="^seed"):
            mask(10, 0.5, bad)
    with pytest.raises(ValueError, match="^offset"):
        mask(10, 0.5, 0, offset=-1)
    with pytest.raises(ValueError, match="^offset"):
        fwd(x, 0.5, 0, offset=2**64 - 9)  # the last element would be 2**64
    with pytest.raises(ValueError, match="^n"):
        mask(-1, 0.5, 0)
    with pytest.raises(TypeError, match="^n"):
        mask(3.0, 0.5, 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_needs_exactly_one_of_mask_and_seed(backend):
    back = get("dropout_backward", backend)
    dy = np.ones(10)
    m = dropout.dropout_mask(10, 0.5, 0)
    with pytest.raises(ValueError, match="exactly one"):
        back(dy, 0.5)
    with pytest.raises(ValueError, match="exactly one"):
        back(dy, 0.5, mask=m, seed=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_bad_mask(backend):
    back = get("dropout_backward", backend)
    dy = np.ones(10, dtype=np.float32)  # needs 2 bytes
    with pytest.raises(ValueError, match="^mask.*\\(2,\\)"):
        back(dy, 0.5, mask=np.zeros(1, dtype=np.uint8))
    with pytest.raises(ValueError, match="^mask"):
        back(dy, 0.5, mask=np.zeros(3, dtype=np.uint8))
    with pytest.raises(ValueError, match="^mask"):
        back(dy, 0.5, mask=np.zeros((2, 1), dtype=np.uint8))
    with pytest.raises(TypeError, match="^mask.*uint8"):
        back(dy, 0.5, mask=np.zeros(2, dtype=np.int8))
    with pytest.raises(TypeError, match="^mask.*uint8"):
        back(dy, 0.5, mask=np.zeros(2, dtype=bool))
    with pytest.raises(TypeError, match="^mask"):
        back(dy, 0.5, mask=[255, 3])


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_arrays(backend):
    with pytest.raises(TypeError, match="^x"):
        get("dropout_forward", backend)(np.ones(4, dtype=np.int32), 0.5, 0)
    with pytest.raises(TypeError, match="^x"):
        get("dropout_forward", backend)([1.0, 2.0], 0.5, 0)
    with pytest.raises(TypeError, match="^dy"):
        get("dropout_backward", backend)(np.ones(4, dtype=np.float16), 0.5, seed=0)


# ---- the C backend's paths (csrc/dropout.c): AVX2 and portable, forced per process ------------------

_PATH_CASES = [(n, p, seed, offset)
               for n in (1, 7, 8, 31, 32, 33, 63, 64, 65, 100, 1025)
               for p, seed, offset in ((0.5, 3, 0), (0.3, 2**64 - 1, 1), (0.9, 2**63 + 7, 2),
                                       (0.1, 12345, 3), (0.0, 5, 6), (1.0, 5, 7),
                                       (0.6, 77, 8 * (2**32 - 5) + 1))]  # the block crosses 2^32 mid-vector
# longer runs (many 64-element groups, split between threads), p = 0.75 and 0.2: scales 4 and 1.25 are
# floats (the float32 multiply), 0.9 and 1/3 are not (the double one)
_PATH_CASES += [(n, p, seed, offset) for n in (10_001, 70_000)
                for p, seed, offset in ((0.75, 1, 0), (0.2, 2, 8 * (2**32 - 300) + 3), (0.9, 3, 2), (1 / 3, 4, 1))]
# ties of the high halves (the low ones decide, drawn in scalar code from a vector group): at the first and
# last element (partial groups), inside a group, and at the last element of a group, both outcomes each
_PATH_CASES += [(n, p, 6, offset) for n, offset, k in ((1025, 5, 0), (1025, 5, 1024), (10_001, 3, 4000),
                                                        (10_001, 0, 127), (70_000, 8 * (2**32 - 300) + 3, 69_000))
                for p in _tie_ps(6, offset, k)]

_PATH_CODE = """
import json, numpy as np
from kernels import dropout, init
cases = json.loads(%r)
from kernels import _c
out = {"isa": init.rng_isa(), "team": _c.ffi.string(_c.lib.gemm_isa()).decode(), "r": []}
for n, p, seed, offset in cases:
    x = np.random.default_rng(n).standard_normal(n)
    x[::5] = np.inf
    x[1::7] = np.nan
    x[2::11] = 3e38   # float32: x * 2 (p = 0.5) or x * 4 overflows to Inf
    x[3::13] = 1e-45  # float32: a subnormal
    row = {"mask": dropout.dropout_mask_c(n, p, seed, offset).tolist()}
    for dt in ("float32", "float64"):
        xd = x.astype(dt)
        y, m = dropout.dropout_forward_c(xd, p, seed, offset)
        row["fmask" + dt] = m.tolist()
        row["y" + dt] = y.astype(np.float64).tobytes().hex()
        row["dxm" + dt] = dropout.dropout_backward_c(xd, p, mask=m).astype(np.float64).tobytes().hex()
        row["dxs" + dt] = dropout.dropout_backward_c(xd, p, seed=seed, offset=offset).astype(np.float64).tobytes().hex()
    out["r"].append(row)
print(json.dumps(out))
"""


def _run_c_child(code: str, threads: int, **env) -> dict:
    """code in a fresh process on `threads` OpenMP threads, every dropout call threaded
    (DEEPPROP_DROPOUT_THREAD_MIN=0); the JSON its last line prints."""
    root = pathlib.Path(kernels.__file__).resolve().parent.parent
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), DEEPPROP_DROPOUT_THREAD_MIN="0",
               PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]), **env)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("path,threads", [("portable", 1), ("avx2", 1), ("portable", 2), ("avx2", 2)])
def test_each_c_path_is_bit_identical_to_the_reference(path, threads):
    """Each path, forced with DEEPPROP_RNG_ISA in a fresh process, on 1 and 2 OpenMP threads (every
    call of more than 64 elements threaded: DEEPPROP_DROPOUT_THREAD_MIN=0): masks, forward, backward
    (mask and regenerated) bit for bit, on every tail length, unaligned offsets, a counter crossing
    2^32, p = 0 and 1, float and non-float scales, Inf/NaN/overflow/subnormal inputs, both dtypes."""
    if kernels.backends()["c"] is not None:
        pytest.skip(kernels.backends()["c"])
    if path == "avx2" and kernels._c.lib.machine_isa() < 1:
        pytest.skip("this CPU does not run the avx2 path")
    res = _run_c_child(_PATH_CODE % json.dumps(_PATH_CASES), threads, DEEPPROP_RNG_ISA=path)
    assert res["isa"].startswith(f"{path} (forced"), res["isa"]
    assert f"; {threads} thread" in res["team"], res["team"]  # OMP_NUM_THREADS reached the C module
    for (n, p, seed, offset), row in zip(_PATH_CASES, res["r"], strict=True):
        what = f"n={n} p={p} seed={seed} offset={offset}"
        ref = dropout.dropout_mask(n, p, seed, offset)
        assert row["mask"] == ref.tolist(), what
        x = np.random.default_rng(n).standard_normal(n)
        x[::5] = np.inf
        x[1::7] = np.nan
        x[2::11] = 3e38
        x[3::13] = 1e-45
        for dt in ("float32", "float64"):
            y_ref, m_ref = dropout.dropout_forward(x.astype(dt), p, seed, offset)
            assert row["fmask" + dt] == m_ref.tolist(), what
            hexed = y_ref.astype(np.float64).tobytes().hex()
            assert row["y" + dt] == hexed, what + " " + dt
            assert row["dxm" + dt] == hexed and row["dxs" + dt] == hexed, what + " " + dt


_CHUNKS_CODE = """
import hashlib, json, numpy as np
from kernels import dropout
n, p, seed, offset = json.loads(%r)
x = np.random.default_rng(1).standard_normal(n)
out = {"mask": dropout.dropout_mask_c(n, p, seed, offset).tobytes().hex()}
for dt in ("float32", "float64"):
    y, m = dropout.dropout_forward_c(x.astype(dt), p, seed, offset)
    dx = dropout.dropout_backward_c(x.astype(dt), p, seed=seed, offset=offset)
    out[dt] = [m.tobytes().hex(), hashlib.sha256(y.tobytes()).hexdigest(), hashlib.sha256(dx.tobytes()).hexdigest()]
print(json.dumps(out))
"""


def test_a_team_claiming_chunks_gives_the_one_thread_bits():
    """A large call on a team is cut into chunks (csrc/dropout.c: 2^19 elements) that the threads claim:
    several chunks and a partial last one, an unaligned offset, 1 and 2 threads, must give the same
    mask (the reference's) and the same outputs (the reference's)."""
    if kernels.backends()["c"] is not None:
        pytest.skip(kernels.backends()["c"])
    case = (3 * 2**19 + 77, 0.3, 5, 3)
    runs = [_run_c_child(_CHUNKS_CODE % json.dumps(case), threads) for threads in (1, 2)]
    assert runs[0] == runs[1]
    n, p, seed, offset = case
    assert runs[0]["mask"] == dropout.dropout_mask(n, p, seed, offset).tobytes().hex()
    x = np.random.default_rng(1).standard_normal(n)
    for dt in ("float32", "float64"):
        y, m = dropout.dropout_forward(x.astype(dt), p, seed, offset)
        assert runs[0][dt][0] == m.tobytes().hex(), dt
        assert runs[0][dt][1] == hashlib.sha256(y.tobytes()).hexdigest(), dt
        assert runs[0][dt][2] == hashlib.sha256(y.tobytes()).hexdigest(), dt  # dx of dy = x: y again
