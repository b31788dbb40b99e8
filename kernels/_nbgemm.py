"""The Numba backend's GEMM: C = op(A) @ op(B) (+ bias) (then an activation), in the BLIS design.

Loops, outermost first, as in csrc/gemm.c (Van Zee & van de Geijn, "BLIS", ACM TOMS 2015):
  jc over n in NC columns      pack B[pc:pc+kc, jc:jc+nc] into NR-column micro-panels (Bp, L3)
  pc over k in KC
  ic over m in MC rows         pack A[ic:ic+mc, pc:pc+kc] into MR-row micro-panels (Ap, L2)
  jr over nc in NR             one kc x NR micro-panel of Bp stays in L1 across the ir loop
  ir over mc in MR             micro-kernel: an MR x NR tile in registers, kc rank-1 updates
A and B are C- or F-contiguous (x, W or their transposes): the packing reads them as flat buffers
with row and column strides, so dz @ W.T and x.T @ dz need no copies and one _gemm is compiled per
dtype for every layout. Packing pads the last micro-panels with zeros, so every tail
runs the same micro-kernel: a partial tile is computed whole into a small buffer and only its mr x nr
part is merged into C. The k blocks are balanced (k = 257 is two blocks of 129), and so are the n blocks
(rounded up to NR) and the m blocks (whole MR-row micro-panels, as equal in number as integers allow).
The bias is added in the first k block's store; the activation (float64, kernels.activations.forward1)
is applied to each finished MC x NR column of tiles of the last k block while it is in L1.

Threads: from THREAD_MIN_WORK multiply-adds on (and numba's thread count above 1), _gemm_par runs the
same loops with numba.prange (parallel=True, numba's threading layer: OpenMP here): the B panels of a
group of k blocks are packed by all threads in equal shares, then each thread claims m blocks (an
atomic counter) and packs and multiplies them, for each k block of the group, in its own A buffer (nmb
a multiple of the thread count when there are enough micro-panels, blocks of equal micro-panel
counts). k is never split: every element of C is computed by one micro-kernel call sequence in the same
k order, so the results are bit for bit those of one thread, whoever claims which block.

The micro-kernel (MR x NR = 6 x 16 float32 / 6 x 8 float64: 12 ymm accumulators with AVX2) and the
packing transposes are small intrinsics (llvmlite IR), because Numba's pipeline does not vectorise such
code: it runs LLVM's loop vectoriser, which only sees innermost loops and whose constant 16-iteration
loops are fully unrolled into scalars before it runs, and not the SLP vectoriser (NUMBA_SLP_VECTORIZE=0),
so scalar or array accumulators stay scalar (measured ~4-7 GFLOP/s). _kernel is the whole micro-kernel,
k loop included (unrolled 4 times), on raw pointers (_addr, _off): the MR accumulators are <NR x T> SSA
values, so they live in registers, and there is no reference counting nor index wraparound inside (an
earlier version, a Numba loop over per-row intrinsics on arrays, paid NRT incref/decref calls and a
stack round trip of the tile per micro-kernel call, ~5%). Each k step is one <NR x T> load of Bp and,
per row, a broadcast of Ap[r] and an llvm.fmuladd: vbroadcastss/vmovups/vfmadd231ps here, as
csrc/gemm.c's intrinsics. fmuladd is a multiply-add that LLVM may fuse into an FMA where the CPU has one
(here vfmadd231ps/pd, one rounding instead of two, as in BLAS); it is not fastmath: NaN and inf propagate
as IEEE arithmetic says. _tr_a and _tr_b pack rows of A and columns of B^T (the transposing layouts) by
8 x 8 float / 4 x 4 double in-register transposes (csrc/gemm.c's, as shufflevectors: unpck, shufps,
vperm2f128), and the plain copies of the packing go 8 source rows at a time across all micro-panels (see
_PB). The vector width is LLVM's: Numba compiles for the host CPU, so <16 x float> is two ymm with AVX2,
one zmm with AVX-512, and four xmm (multiply and add) without AVX.
Measured on this Zen 3 core (1 thread, AVX2; thread CPU time, min of 12 interleaved runs, machine shared):
linear forward 1024^3 float32 ~23.5 ms (~91 GFLOP/s; the FMA peak probe ~93), backward ~48 ms,
256x1024x1024 ~7.0 / ~13.4 ms; float64 ~50 / ~100 / ~13.1 / ~25.5 ms: 1.0-1.03x csrc/gemm.c and
1.02-1.19x torch's addmm / mm. The packing is ~2% of a 1024^3 product. 2 threads: ~1.8x one at 1024^3
float32 forward and backward (min of 40 interleaved; medians ~1.65x with one other process running; the
same as csrc/gemm.c measured alongside). When another process holds one of the two cores, 2 threads take
~2x the time of one: the OpenMP layer's idle thread spins (OMP_WAIT_POLICY unset) on the core the
working thread needs; OMP_WAIT_POLICY=passive gives one thread's time instead.
"""

from __future__ import annotations

import os
import threading

import numpy as np

from ._numba import njit

try:
    import numba
    from llvmlite import ir as llir
    from numba import prange, types
    from numba.core import cgutils
    from numba.extending import intrinsic
except ImportError:     # no numba: import kernels still works, the njit functions raise when called
    numba = llir = types = cgutils = None
    prange = range

    def intrinsic(func):
        return func
from .activations import backward1, forward1

MR = 6
NR32, NR64 = 16, 8                 # one tile row = 64 bytes: two ymm registers
# KC x NR x size (the B micro-panel reused from L1) is 16 KiB; MC x KC x size (packed A, L2) ~144 KiB;
# KC x NC x size (packed B) 2 MiB, as csrc/gemm.c's avx2 blocking.
KC = 256
MC32, MC64 = 144, 72
NC32, NC64 = 2048, 1024
# A GEMM of fewer multiply-adds than this runs on the calling thread alone (csrc/gemm.c's default and
# reasons: a team waits at its joins for its slowest thread, which on a busy machine can be descheduled).
THREAD_MIN_WORK = 1 << 24
_BP_GROUP_BYTES = 8 << 20          # the threaded GEMM's packed B: up to 8 MiB of k blocks at once (see _gemm_par)
_PID = os.getpid()                 # the process that imported this module (see _team)


def _nr(dtype):
    return NR32 if dtype == types.float32 else NR64


def _vector(context, dt, lanes=None):
    # (element type, <lanes x T> (default NR), lanes, element size)
    lty = context.get_data_type(dt)
    lanes = lanes or _nr(dt)
    return lty, llir.VectorType(lty, lanes), lanes, lty.get_abi_size(context.target_data)


def _i32s(values):
    return llir.Constant(llir.VectorType(llir.IntType(32), len(values)), list(values))


def _shuffle(builder, x, y, mask):
    return builder.shuffle_vector(x, y, _i32s(mask))


def _vload(builder, ptr, vty, size):
    return builder.load(builder.bitcast(ptr, vty.as_pointer()), align=size)


def _vstore(builder, value, ptr, size):
    builder.store(value, builder.bitcast(ptr, value.type.as_pointer()), align=size)


def _gep(builder, ptr, i):
    # ptr + i elements (i an LLVM integer or a Python int)
    if isinstance(i, int):
        i = llir.Constant(llir.IntType(64), i)
    return builder.gep(ptr, [i])


def _pointers(*tys):
    # the pointer arguments share one float dtype: that dtype, else None (no match for the typer)
    if not all(isinstance(t, types.CPointer) for t in tys):
        return None
    dt = tys[0].dtype
    return dt if dt in (types.float32, types.float64) and all(t.dtype == dt for t in tys) else None


@intrinsic
def _nr_of(typingctx, like):
    """NR for like's dtype (an array or a pointer), as a constant LLVM can fold."""
    nr = _nr(like.dtype)

    def codegen(context, builder, sig, args):
        return context.get_constant(types.intp, nr)
    return types.intp(like), codegen


@intrinsic
def _lanes_of(typingctx, like):
    """The lanes of a 32-byte vector of like's dtype (8 float32, 4 float64): the packing transposes'
    block width."""
    lanes = 256 // like.dtype.bitwidth

    def codegen(context, builder, sig, args):
        return context.get_constant(types.intp, lanes)
    return types.intp(like), codegen


@intrinsic
def _addr(typingctx, ary, i):
    """A pointer to ary[i] (1-d ary, i in range: no wraparound)."""
    if not isinstance(ary, types.Array) or ary.ndim != 1:
        return None

    def codegen(context, builder, sig, args):
        a = context.make_array(sig.args[0])(context, builder, args[0])
        return cgutils.get_item_pointer(context, builder, sig.args[0], a, [args[1]], wraparound=False)
    return types.CPointer(ary.dtype)(ary, i), codegen


@intrinsic
def _addr2(typingctx, ary, i, j):
    """A pointer to ary[i, j] (2-d ary, indices in range)."""
    if not isinstance(ary, types.Array) or ary.ndim != 2:
        return None

    def codegen(context, builder, sig, args):
        a = context.make_array(sig.args[0])(context, builder, args[0])
        return cgutils.get_item_pointer(context, builder, sig.args[0], a, [args[1], args[2]], wraparound=False)
    return types.CPointer(ary.dtype)(ary, i, j), codegen


@intrinsic
def _off(typingctx, ptr, i):
    """ptr + i elements."""
    if not isinstance(ptr, types.CPointer):
        return None

    def codegen(context, builder, sig, args):
        return builder.gep(args[0], [args[1]])
    return ptr(ptr, i), codegen


def _make_kernel(R):
    """The micro-kernel intrinsic for the first R <= MR rows of an MR-row micro-panel (R < MR: the last,
    partial micro-panel of an m block goes straight into C, as csrc/gemm.c's row kernels, instead of
    being computed whole into a buffer and merged)."""
    @intrinsic
    def kernel(typingctx, kc, a, b, c, ldc, mode, bias):
        """The micro-kernel: the R x NR tile t = sum over p < kc of a[p*MR + r] * b[p*NR + j] (kc >= 1), then
        c[r*ldc + j] = t (mode 0), t + bias[j] (mode 1) or c[r*ldc + j] + t (mode 2), r < R.

        One LLVM function body: the R accumulators are <NR x T> values (SSA, so in registers: 12 ymm with
        AVX2 for R = MR), the k loop is unrolled 4 times, each step one vector load of b and, per row, a
        broadcast of a[r] and an llvm.fmuladd (vfmadd231ps/pd here). Pointers, not arrays: no reference
        counting or index wraparound in the loop (the callers' indices are in range)."""
        dt = _pointers(a, b, c, bias)
        if dt is None:
            return None
        U = 4

        def codegen(context, builder, sig, args):
            kcv, ap, bp, cp, ldcv, modev, biasp = args
            lty, vty, nr, size = _vector(context, dt)
            i64 = llir.IntType(64)
            kcv = builder.sext(kcv, i64) if kcv.type.width < 64 else kcv
            ldcv = builder.sext(ldcv, i64) if ldcv.type.width < 64 else ldcv
            i8p = llir.IntType(8).as_pointer()
            i32 = llir.IntType(32)
            prefetch = cgutils.get_or_insert_function(
                builder.module, llir.FunctionType(llir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch.p0")
            rows = [builder.gep(cp, [builder.mul(ldcv, llir.Constant(i64, r))]) for r in range(R)]
            for row in rows:   # C's rows are a matrix row apart: rarely in L1 when the tile is stored
                for off in (0, nr - 1):
                    builder.call(prefetch, [builder.bitcast(_gep(builder, row, off), i8p), llir.Constant(i32, 1),
                                            llir.Constant(i32, 3), llir.Constant(i32, 1)])
            fmuladd = cgutils.get_or_insert_function(builder.module, llir.FunctionType(vty, [vty, vty, vty]),
                                                     f"llvm.fmuladd.v{nr}f{8 * size}")
            zero = llir.Constant(vty, None)
            undef = llir.Constant(vty, llir.Undefined)
            splat_mask = _i32s([0] * nr)

            def step(pa, pb, accs):
                bvec = _vload(builder, pb, vty, size)
                out = []
                for r in range(R):
                    s = builder.insert_element(undef, builder.load(_gep(builder, pa, r)), llir.Constant(i32, 0))
                    out.append(builder.call(fmuladd, [builder.shuffle_vector(s, undef, splat_mask), bvec, accs[r]]))
                return out

            def loop(name, count, pa0, pb0, accs0, unroll):
                # do { unroll steps } while (++i < count), count >= 1; returns the pointers and sums after
                pre = builder.basic_block
                body = builder.append_basic_block(name)
                builder.branch(body)
                builder.position_at_end(body)
                i = builder.phi(i64)
                pa = builder.phi(ap.type)
                pb = builder.phi(bp.type)
                accs = [builder.phi(vty) for _ in range(R)]
                for phi, v in zip((i, pa, pb, *accs), (llir.Constant(i64, 0), pa0, pb0, *accs0), strict=True):
                    phi.add_incoming(v, pre)
                cur = accs
                for u in range(unroll):
                    cur = step(_gep(builder, pa, u * MR), _gep(builder, pb, u * nr), cur)
                pa1, pb1 = _gep(builder, pa, unroll * MR), _gep(builder, pb, unroll * nr)
                i1 = builder.add(i, llir.Constant(i64, 1))
                end = builder.basic_block
                for phi, v in zip((i, pa, pb, *accs), (i1, pa1, pb1, *cur), strict=True):
                    phi.add_incoming(v, end)
                after = builder.append_basic_block(name + ".end")
                builder.cbranch(builder.icmp_signed("<", i1, count), body, after)
                builder.position_at_end(after)
                return pa1, pb1, cur

            def maybe_loop(name, count, pa0, pb0, accs0, unroll):
                # the loop when count > 0; the values after it (or the inputs) through phis
                pre = builder.basic_block
                with builder.if_then(builder.icmp_signed(">", count, llir.Constant(i64, 0))):
                    res = loop(name, count, pa0, pb0, accs0, unroll)
                    end = builder.basic_block
                out = []
                for before, after in zip((pa0, pb0, *accs0), (res[0], res[1], *res[2]), strict=True):
                    phi = builder.phi(before.type)
                    phi.add_incoming(before, pre)
                    phi.add_incoming(after, end)
                    out.append(phi)
                return out[0], out[1], out[2:]

            pa, pb, accs = maybe_loop("uk.main", builder.ashr(kcv, llir.Constant(i64, 2)), ap, bp, [zero] * R, U)
            pa, pb, accs = maybe_loop("uk.tail", builder.and_(kcv, llir.Constant(i64, U - 1)), pa, pb, accs, 1)

            is2 = builder.icmp_signed("==", modev, llir.Constant(modev.type, 2))
            with builder.if_else(is2) as (acc_c, first):
                with acc_c:
                    for r in range(R):
                        _vstore(builder, builder.fadd(_vload(builder, rows[r], vty, size), accs[r]), rows[r], size)
                with first:
                    is1 = builder.icmp_signed("==", modev, llir.Constant(modev.type, 1))
                    with builder.if_else(is1) as (add_b, plain):
                        with add_b:
                            bvec = _vload(builder, biasp, vty, size)
                            for r in range(R):
                                _vstore(builder, builder.fadd(accs[r], bvec), rows[r], size)
                        with plain:
                            for r in range(R):
                                _vstore(builder, accs[r], rows[r], size)
            return context.get_dummy_value()
        return types.none(kc, a, b, c, ldc, mode, bias), codegen
    return kernel


_kernel = _make_kernel(MR)
_kernel5, _kernel4, _kernel3, _kernel2, _kernel1 = (_make_kernel(r) for r in (5, 4, 3, 2, 1))


def _transpose(builder, rows):
    """The columns of a square block of rows (8 <8 x float> or 4 <4 x double>), as csrc/gemm.c's
    TRANSPOSE8_PS / TRANSPOSE4_PD: each shuffle is one unpck/shufps/vperm2f128 on AVX."""
    if len(rows) == 4:
        lo, hi = (0, 4, 2, 6), (1, 5, 3, 7)                       # unpcklpd, unpckhpd
        t0, t1 = _shuffle(builder, rows[0], rows[1], lo), _shuffle(builder, rows[0], rows[1], hi)
        t2, t3 = _shuffle(builder, rows[2], rows[3], lo), _shuffle(builder, rows[2], rows[3], hi)
        l20, l31 = (0, 1, 4, 5), (2, 3, 6, 7)                     # vperm2f128 0x20, 0x31
        return [_shuffle(builder, t0, t2, l20), _shuffle(builder, t1, t3, l20),
                _shuffle(builder, t0, t2, l31), _shuffle(builder, t1, t3, l31)]
    lo, hi = (0, 8, 1, 9, 4, 12, 5, 13), (2, 10, 3, 11, 6, 14, 7, 15)   # unpcklps, unpckhps
    t = []
    for i in range(0, 8, 2):
        t += [_shuffle(builder, rows[i], rows[i + 1], lo), _shuffle(builder, rows[i], rows[i + 1], hi)]
    s44, see = (0, 1, 8, 9, 4, 5, 12, 13), (2, 3, 10, 11, 6, 7, 14, 15)  # shufps 0x44, 0xEE
    u = []
    for i in (0, 4):
        u += [_shuffle(builder, t[i], t[i + 2], s44), _shuffle(builder, t[i], t[i + 2], see),
              _shuffle(builder, t[i + 1], t[i + 3], s44), _shuffle(builder, t[i + 1], t[i + 3], see)]
    l20, l31 = (0, 1, 2, 3, 8, 9, 10, 11), (4, 5, 6, 7, 12, 13, 14, 15)   # vperm2f128 0x20, 0x31
    return [_shuffle(builder, u[i], u[i + 4], l20) for i in range(4)] + \
           [_shuffle(builder, u[i], u[i + 4], l31) for i in range(4)]


@intrinsic
def _tr_a(typingctx, dst, src, lda):
    """One step of packing MR = 6 rows of A that are contiguous along k: dst[p*6 + r] = src[r*lda + p]
    for p < L (L = 8 float32, 4 float64), by in-register transposes as csrc/gemm.c's pack_a6_avx2."""
    dt = _pointers(dst, src)
    if dt is None:
        return None

    def codegen(context, builder, sig, args):
        dp, sp, ldv = args
        lanes = 256 // dt.bitwidth
        lty, vty, L, size = _vector(context, dt, lanes)
        r = [_vload(builder, builder.gep(sp, [builder.mul(ldv, llir.Constant(ldv.type, i))]), vty, size)
             for i in range(MR)]
        if L == 8:      # rows 6, 7 zero; column p's 8 values stored at 6p: the next column overwrites 2
            cols = _transpose(builder, r + [llir.Constant(vty, None)] * 2)
            for p in range(7):
                _vstore(builder, cols[p], _gep(builder, dp, 6 * p), size)
            _vstore(builder, _shuffle(builder, cols[7], cols[7], (0, 1, 2, 3)), _gep(builder, dp, 42), size)
            _vstore(builder, _shuffle(builder, cols[7], cols[7], (4, 5)), _gep(builder, dp, 46), size)
        else:           # rows 0-3 by a 4 x 4 transpose, rows 4-5 in pairs
            cols = _transpose(builder, r[:4])
            lo, hi = _shuffle(builder, r[4], r[5], (0, 4, 2, 6)), _shuffle(builder, r[4], r[5], (1, 5, 3, 7))
            pairs = [_shuffle(builder, lo, lo, (0, 1)), _shuffle(builder, hi, hi, (0, 1)),
                     _shuffle(builder, lo, lo, (2, 3)), _shuffle(builder, hi, hi, (2, 3))]
            for p in range(4):
                _vstore(builder, cols[p], _gep(builder, dp, 6 * p), size)
                _vstore(builder, pairs[p], _gep(builder, dp, 6 * p + 4), size)
        return context.get_dummy_value()
    return types.none(dst, src, lda), codegen


@intrinsic
def _tr_b(typingctx, dst, src, ldb):
    """One step of packing NR rows of B^T (B's columns contiguous along k): dst[p*NR + c] = src[c*ldb + p]
    for p < L, c < NR = 2L, by two L x L in-register transposes (csrc/gemm.c's pack_bt16/pack_bt8)."""
    dt = _pointers(dst, src)
    if dt is None:
        return None

    def codegen(context, builder, sig, args):
        dp, sp, ldv = args
        nr = _nr(dt)
        lty, vty, L, size = _vector(context, dt, nr // 2)
        for h in (0, L):
            r = [_vload(builder, builder.gep(sp, [builder.mul(ldv, llir.Constant(ldv.type, h + i))]), vty, size)
                 for i in range(L)]
            for p, col in enumerate(_transpose(builder, r)):
                _vstore(builder, col, _gep(builder, dp, p * nr + h), size)
        return context.get_dummy_value()
    return types.none(dst, src, ldb), codegen


def _copy_intrinsic(count_of, doc):
    @intrinsic
    def copy(typingctx, dst, src):
        dt = _pointers(dst, src)
        if dt is None:
            return None

        def codegen(context, builder, sig, args):
            lty, vty, n, size = _vector(context, dt, count_of(dt))
            _vstore(builder, _vload(builder, args[1], vty, size), args[0], size)
            return context.get_dummy_value()
        return types.none(dst, src), codegen
    copy.__doc__ = doc
    return copy


_copy_nr = _copy_intrinsic(_nr, "dst[0:NR] = src[0:NR], one <NR x T> load and store.")
_copy_mr = _copy_intrinsic(lambda dt: MR, "dst[0:MR] = src[0:MR], one <MR x T> load and store.")


# The copies of the packing (rows of B, MR-value columns of A^T) go 8 rows of the source at a time across
# all micro-panels, then the next 8: the source rows are usually a multiple of 4 KiB apart, so reading
# one micro-panel's kc rows at a time evicts its own lines from L1 (measured 2.5-4x slower at 1024^2).
_PB = 8


@njit
def _pack_a(Ap, a, ars, acs, i0, mc, pc, kc):
    # Ap[q*kc + p*MR + r] = A[i0 + q + r, pc + p] for each MR-row micro-panel q (Ap a pointer), zero past
    # row mc, where A[i, p] = a[i*ars + p*acs]
    L = _lanes_of(Ap)
    full = mc // MR * MR
    if acs == 1:                            # rows of A contiguous (x, dz): transposes along them
        for q in range(0, full, MR):
            dst = _off(Ap, q * kc)
            src = _addr(a, (i0 + q) * ars + pc)
            steps = kc // L * L
            for p in range(0, steps, L):
                _tr_a(_off(dst, p * MR), _off(src, p), ars)
            for p in range(steps, kc):
                for r in range(MR):
                    dst[p * MR + r] = src[r * ars + p]
    else:                                   # columns contiguous (x.T): MR values in a row
        for p0 in range(0, kc, _PB):
            for q in range(0, full, MR):
                dst = _off(Ap, q * kc)
                src = _addr(a, i0 + q + pc * acs)
                for p in range(p0, min(p0 + _PB, kc)):
                    _copy_mr(_off(dst, p * MR), _off(src, p * acs))
    if full < mc:                           # the last, partial micro-panel
        dst = _off(Ap, full * kc)
        for p in range(kc):
            for r in range(mc - full):
                dst[p * MR + r] = a[(i0 + full + r) * ars + (pc + p) * acs]
            for r in range(mc - full, MR):
                dst[p * MR + r] = 0


@njit
def _pack_b(Bp, b, brs, bcs, pc, kc, j0, nc):
    # Bp[q*kc + p*NR + c] = B[pc + p, j0 + q + c] for each NR-column micro-panel q (Bp a pointer), zero
    # past column nc, where B[p, j] = b[p*brs + j*bcs]
    NR = _nr_of(Bp)
    L = _lanes_of(Bp)
    full = nc // NR * NR
    if bcs == 1:                            # rows contiguous (W, dz): NR-wide copies
        for p0 in range(0, kc, _PB):
            for q in range(0, full, NR):
                dst = _off(Bp, q * kc)
                src = _addr(b, pc * brs + j0 + q)
                for p in range(p0, min(p0 + _PB, kc)):
                    _copy_nr(_off(dst, p * NR), _off(src, p * brs))
    else:                                   # columns contiguous (W.T): transposes down them
        for q in range(0, full, NR):
            dst = _off(Bp, q * kc)
            src = _addr(b, pc + (j0 + q) * bcs)
            steps = kc // L * L
            for p in range(0, steps, L):
                _tr_b(_off(dst, p * NR), _off(src, p), bcs)
            for p in range(steps, kc):
                for c in range(NR):
                    dst[p * NR + c] = src[c * bcs + p]
    if full < nc:                           # the last, partial micro-panel
        dst = _off(Bp, full * kc)
        for p in range(kc):
            for c in range(nc - full):
                dst[p * NR + c] = b[(pc + p) * brs + (j0 + full + c) * bcs]
            for c in range(nc - full, NR):
                dst[p * NR + c] = 0


@njit(inline="always")
def _act_tile_of(Y, C, i0, j0, mr, nr, code, alpha):
    for i in range(i0, i0 + mr):
        for j in range(j0, j0 + nr):
            Y[i, j] = forward1(np.float64(C[i, j]), code, alpha)


@njit
def _act_tile(Y, C, i0, j0, mr, nr, code, alpha):
    # Y[i0:i0+mr, j0:j0+nr] = act(C's tile), in float64 as kernels.activations (Y may be C). The cheap
    # activations get a loop each with the code a constant, so LLVM folds forward1's dispatch away and
    # vectorises their selects; the others are dominated by their libm call (and compile once).
    if code == 0:
        _act_tile_of(Y, C, i0, j0, mr, nr, 0, alpha)
    elif code == 3:
        _act_tile_of(Y, C, i0, j0, mr, nr, 3, alpha)
    elif code == 4:
        _act_tile_of(Y, C, i0, j0, mr, nr, 4, alpha)
    else:
        _act_tile_of(Y, C, i0, j0, mr, nr, code, alpha)


@njit
def _macro(C, Y, Ap, Bp, tile, bias, ic, mc, jc, nc, kc, first, last, code, alpha, epilogue):
    # C[ic:ic+mc, jc:jc+nc] = Ap . Bp (+ bias) when first, else C += Ap . Bp (Ap, Bp: packed, pointers);
    # when last and epilogue, Y = act(C) on each finished mc x NR column of tiles while it is in L1.
    # A tile of nr < NR columns is computed whole into tile and only its mr x nr part merged.
    NR = _nr_of(Bp)
    ldc = C.strides[0] // C.itemsize
    mode = 2 if not first else (1 if bias.size else 0)
    tp = _addr(tile, 0)
    for jr in range(0, nc, NR):
        nr = min(NR, nc - jr)
        b = _off(Bp, jr * kc)
        for ir in range(0, mc, MR):
            mr = min(MR, mc - ir)
            a = _off(Ap, ir * kc)
            if nr == NR:                    # straight into C (a kernel of mr rows)
                c = _addr2(C, ic + ir, jc + jr)
                bj = _addr(bias, jc + jr) if mode == 1 else tp
                if mr == MR:
                    _kernel(kc, a, b, c, ldc, mode, bj)
                elif mr == 5:
                    _kernel5(kc, a, b, c, ldc, mode, bj)
                elif mr == 4:
                    _kernel4(kc, a, b, c, ldc, mode, bj)
                elif mr == 3:
                    _kernel3(kc, a, b, c, ldc, mode, bj)
                elif mr == 2:
                    _kernel2(kc, a, b, c, ldc, mode, bj)
                else:
                    _kernel1(kc, a, b, c, ldc, mode, bj)
            else:
                _kernel(kc, a, b, tp, NR, 0, tp)
                for r in range(mr):
                    for j in range(nr):
                        v = tile[r * NR + j]
                        if not first:
                            v += C[ic + ir + r, jc + jr + j]
                        elif bias.size:
                            v += bias[jc + jr + j]
                        C[ic + ir + r, jc + jr + j] = v
        if last and epilogue:
            _act_tile(Y, C, ic, jc + jr, mc, nr, code, alpha)


@njit(inline="always")
def _blocks(m, n, k, NR, MC, NC, nt):
    # balanced blocks: ceil(k / KC) k blocks of (nearly) equal depth; n blocks of at most NC rounded up
    # to NR; m blocks of whole MR-row micro-panels, as equal as integers allow, and for a team at least
    # 8 per thread (of 4 micro-panels or more) and a multiple of nt (when there are enough micro-panels):
    # the threads claim them, and with 4 per thread the last one can leave a core idle for up to an
    # eighth of the run while the other is slowed by another process (csrc/gemm.c; alike when quiet)
    nkb = (k + KC - 1) // KC
    kcb = (k + nkb - 1) // nkb
    nnb = (n + NC - 1) // NC
    ncb = ((n + nnb - 1) // nnb + NR - 1) // NR * NR
    panels = (m + MR - 1) // MR
    nmb = (m + MC - 1) // MC
    if nt > 1:
        nmb = max(nmb, min(8 * nt, panels // 4))
    nmb = min((nmb + nt - 1) // nt * nt, panels)
    return kcb, ncb, panels, nmb, (panels + nmb - 1) // nmb * MR


@njit(inline="always")
def _m_block(ib, panels, nmb, m):
    # rows [ic, ic + mc) of m block ib: micro-panels panels*ib // nmb .. panels*(ib+1) // nmb
    ic = panels * ib // nmb * MR
    return ic, min(panels * (ib + 1) // nmb * MR, m) - ic


@njit(inline="always")
def _group(k, kcb, ncb, itemsize, bp_bytes):
    # (k blocks per group, k blocks) of _gemm_par: as many k blocks' packed B as fit in bp_bytes
    nkb = (k + kcb - 1) // kcb
    return max(1, min(nkb, bp_bytes // (kcb * ncb * itemsize))), nkb


@njit
def _work_size(C, m, n, k, nt, bp_bytes):
    """Elements of the workspace _gemm (nt = 1) or _gemm_par (nt > 1) takes for an m x k x n product
    into C (m, n, k >= 1): its packed B, then each thread's packed A and tile."""
    NR = _nr_of(C)
    MC, NC = (MC32, NC32) if C.itemsize == 4 else (MC64, NC64)
    kcb, ncb, panels, nmb, mcb = _blocks(m, n, k, NR, MC, NC, nt)
    group = _group(k, kcb, ncb, C.itemsize, bp_bytes)[0] if nt > 1 else 1
    return group * kcb * ncb + nt * (mcb * kcb + MR * NR)


@njit
def _gemm(C, a, ars, acs, m, k, b, brs, bcs, n, bias, Y, code, alpha, epilogue, work):
    # work: at least _work_size(m, n, k, ..., nt=1) elements of C's dtype
    NR = _nr_of(C)
    MC, NC = (MC32, NC32) if C.itemsize == 4 else (MC64, NC64)
    if m == 0 or n == 0:
        return
    if k == 0:
        for i in range(m):
            for j in range(n):
                C[i, j] = bias[j] if bias.size else 0
        if epilogue:
            _act_tile(Y, C, 0, 0, m, n, code, alpha)
        return
    kcb, ncb, panels, nmb, mcb = _blocks(m, n, k, NR, MC, NC, 1)
    Bp = work[:kcb * ncb]
    Ap = work[kcb * ncb:kcb * ncb + mcb * kcb]
    tile = work[kcb * ncb + mcb * kcb:kcb * ncb + mcb * kcb + MR * NR]
    for jc in range(0, n, ncb):
        nc = min(ncb, n - jc)
        for pc in range(0, k, kcb):
            kc = min(kcb, k - pc)
            _pack_b(_addr(Bp, 0), b, brs, bcs, pc, kc, jc, nc)
            for ib in range(nmb):
                ic, mc = _m_block(ib, panels, nmb, m)
                _pack_a(_addr(Ap, 0), a, ars, acs, ic, mc, pc, kc)
                _macro(C, Y, _addr(Ap, 0), _addr(Bp, 0), tile, bias, ic, mc, jc, nc, kc, pc == 0, pc + kc == k,
                       code, alpha, epilogue)


@intrinsic
def _claim(typingctx, counter):
    """counter[0] += 1 atomically (1-d int64 counter); returns the value before: the next m block."""
    if not isinstance(counter, types.Array) or counter.dtype != types.int64:
        return None

    def codegen(context, builder, sig, args):
        a = context.make_array(sig.args[0])(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, sig.args[0], a, [context.get_constant(types.intp, 0)],
                                       wraparound=False)
        return builder.atomic_rmw("add", ptr, llir.Constant(llir.IntType(64), 1), "monotonic")
    return types.int64(counter), codegen


@njit(parallel=True)
def _gemm_par(C, a, ars, acs, m, k, b, brs, bcs, n, bias, Y, code, alpha, epilogue, nt, bp_bytes, work):
    # _gemm on nt threads (m, n, k >= 1), two parallel regions per group of k blocks: first the B panels
    # of the group's k blocks (up to bp_bytes, all of k at 1024^2), in chunks of micro-panels the threads
    # claim (an atomic counter); then each thread claims m blocks one at a time and, in its own A
    # buffer, packs and multiplies each claimed block for each k block of the group in turn. A block's
    # rows of C belong to one thread across the group's k blocks (k is never split), so no barrier is
    # needed between k blocks, and claiming balances the load: a team waits at its joins for its slowest
    # thread, and on a busy machine one can be descheduled for milliseconds (measured under load: the
    # 2-thread median of 1024^3 float32 ~67 ms with a join per k block, ~37 with joins per group). On an
    # idle machine claiming gives the static shares' times; the results never depend on who claims what.
    NR = _nr_of(C)
    MC, NC = (MC32, NC32) if C.itemsize == 4 else (MC64, NC64)
    # work: at least _work_size(m, n, k, ..., nt, bp_bytes) elements of C's dtype
    kcb, ncb, panels, nmb, mcb = _blocks(m, n, k, NR, MC, NC, nt)
    group, nkb = _group(k, kcb, ncb, C.itemsize, bp_bytes)
    nbp, nap = group * kcb * ncb, nt * mcb * kcb
    Bp = work[:nbp]
    Ap = work[nbp:nbp + nap]
    tiles = work[nbp + nap:nbp + nap + nt * MR * NR]
    counters = np.zeros(2 * ((n + ncb - 1) // ncb) * ((nkb + group - 1) // group), np.int64)
    region = 0
    for jc in range(0, n, ncb):
        nc = min(ncb, n - jc)
        npan = (nc + NR - 1) // NR
        nch = min(npan, 4 * nt)
        for g0 in range(0, nkb, group):
            g1 = min(g0 + group, nkb)
            counter = counters[2 * region:2 * region + 1]
            for _t in prange(nt):           # B in nch chunks of micro-panels, claimed like the m blocks
                ch = _claim(counter)
                while ch < nch:
                    q0, q1 = npan * ch // nch * NR, min(npan * (ch + 1) // nch * NR, nc)
                    for kb in range(g0, g1):
                        pc = kb * kcb
                        kc = min(kcb, k - pc)
                        _pack_b(_addr(Bp, (kb - g0) * kcb * ncb + q0 * kc), b, brs, bcs, pc, kc, jc + q0, q1 - q0)
                    ch = _claim(counter)
            counter = counters[2 * region + 1:2 * region + 2]
            region += 1
            for t in prange(nt):
                ib = _claim(counter)
                while ib < nmb:
                    ic, mc = _m_block(ib, panels, nmb, m)
                    for kb in range(g0, g1):
                        pc = kb * kcb
                        kc = min(kcb, k - pc)
                        _pack_a(_addr(Ap, t * mcb * kcb), a, ars, acs, ic, mc, pc, kc)
                        _macro(C, Y, _addr(Ap, t * mcb * kcb), _addr(Bp, (kb - g0) * kcb * ncb),
                               tiles[t * MR * NR:(t + 1) * MR * NR], bias, ic, mc, jc, nc, kc, pc == 0, pc + kc == k,
                               code, alpha, epilogue)
                    ib = _claim(counter)


def _team(m, n, k):
    """The threads for an m x k x n GEMM: numba's thread count (numba.set_num_threads, NUMBA_NUM_THREADS)
    from THREAD_MIN_WORK multiply-adds on, else 1. Only in the process that imported this module: Numba's
    OpenMP threading layer kills a forked child that starts a parallel region once its parent ran one,
    so a fork runs every GEMM on its one thread (the same results: the team size never changes them)."""
    if numba is None or m * n * k < max(THREAD_MIN_WORK, 1) or numba.config.NUMBA_NUM_THREADS < 2 \
            or os.getpid() != _PID:
        return 1
    return numba.get_num_threads()


def _flat(A):
    """(buffer, row stride, column stride) in elements of a C- or F-contiguous 2-d array: a transposed
    view (x.T, W.T) is read in place, and every layout runs the one compiled _gemm."""
    if A.flags.c_contiguous:
        return A.reshape(-1), A.shape[1], 1
    if A.flags.f_contiguous:
        return A.T.reshape(-1), 1, A.shape[0]
    return np.ascontiguousarray(A).reshape(-1), A.shape[1], 1


def gemm(C, A, B, bias, Y, code, alpha, epilogue):
    """C (m, n) = A (m, k) @ B (k, n) [+ bias (n,) when bias.size], products summed in the dtype;
    then, when epilogue, Y = act(C) (the activation code, alpha; Y may be C itself). C and Y are
    C-contiguous and written whole (k = 0 gives C = bias, or 0); A and B may be transposed views.
    Large products run on numba's threads (_team), with the same results bit for bit."""
    (m, k), n = A.shape, B.shape[1]
    nt = _team(m, n, k)
    if m == 0 or n == 0 or k == 0:     # no packing (_gemm writes C = bias or 0)
        work = np.empty(0, C.dtype)
    else:
        work = _workspace(C.dtype, _work_size(C, m, n, k, nt, _BP_GROUP_BYTES))
    if nt > 1:
        _gemm_par(C, *_flat(A), m, k, *_flat(B), n, bias, Y, code, alpha, epilogue, nt, _BP_GROUP_BYTES, work)
    else:
        _gemm(C, *_flat(A), m, k, *_flat(B), n, bias, Y, code, alpha, epilogue, work)


# the packed panels' workspace, per calling thread and dtype (kept, grown to the largest product seen;
# at most _BP_GROUP_BYTES (8 MiB) of B, and ~150 KiB of A, (MC + MR) x KC, per team thread). Why kept: a
# fresh one per call is a new mapping (glibc maps blocks this large), first touched page by page inside
# the timed product, and with a team by both threads at once: at 1024^3 float32 on 2 threads ~1500 page
# faults a call, ~3-4 ms of a 13 ms product (csrc/gemm.c keeps its panels in thread-local buffers too).
_WORKSPACES = threading.local()


def _workspace(dtype, size):
    """At least ``size`` elements of ``dtype``: this thread's kept workspace, replaced by a larger one
    when too small. Its contents are scratch: every GEMM packs into it before reading."""
    key = np.dtype(dtype).char
    w = getattr(_WORKSPACES, key, None)
    if w is None or w.size < size:
        w = np.empty(size, dtype)
        setattr(_WORKSPACES, key, w)
    return w


@njit(inline="always")
def _dz_db_of(dz, acc, dy, z, code, alpha):
    N, M = dy.shape
    for i in range(N):
        for j in range(M):
            v = backward1(np.float64(dy[i, j]), np.float64(z[i, j]), code, alpha)
            dz[i, j] = v
            acc[j] += v


@njit
def dz_db(dz, db, dy, z, code, alpha):
    """dz = dy * act'(z) (rounded to the dtype) and, in the same pass, db[j] = the sum over rows of dz's
    float64 values (summed in float64). relu and leaky_relu get a loop each, as in _act_tile."""
    acc = np.zeros(dy.shape[1], np.float64)
    if code == 3:
        _dz_db_of(dz, acc, dy, z, 3, alpha)
    elif code == 4:
        _dz_db_of(dz, acc, dy, z, 4, alpha)
    else:
        _dz_db_of(dz, acc, dy, z, code, alpha)
    for j in range(db.size):
        db[j] = acc[j]


@njit
def column_sums(db, dy):
    """db[j] = the sum over rows of dy, in float64 (identity's db, where dz is dy itself)."""
    N, M = dy.shape
    acc = np.zeros(M, np.float64)
    for i in range(N):
        for j in range(M):
            acc[j] += dy[i, j]
    for j in range(M):
        db[j] = acc[j]
