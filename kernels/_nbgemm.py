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
runs the same micro-kernel, and only the tile's mr x nr part is stored. The k blocks are balanced
(k = 257 is two blocks of 129), and so are the m and n blocks (rounded up to MR, NR). The bias is added
in the first k block's store; the activation (float64, kernels.activations.forward1) is applied to
each finished MC x NR column of tiles of the last k block while it is in L1.

The micro-kernel (MR x NR = 6 x 16 float32 / 6 x 8 float64: 12 ymm accumulators with AVX2) needs
what Numba's pipeline does not give plain loops: Numba runs LLVM's loop vectoriser, which only sees
innermost loops and whose constant 16-iteration loops are fully unrolled into scalars before it runs,
and not the SLP vectoriser (NUMBA_SLP_VECTORIZE=0), so scalar or array accumulators stay scalar
(measured ~4-7 GFLOP/s). So a few small intrinsics (llvmlite IR) give it vector types: _tile allocates
the MR x NR accumulator on the stack (an alloca, which LLVM's SROA promotes to registers once the row
loop is unrolled) and _fmadd_row does one row's rank-1 update, acc[r, :] += a * Bp[bo:bo+NR], as a
single <NR x T> llvm.fmuladd; _store_row, _copy_row and _prefetch_row store a tile row to C, copy a
row of B into its panel and prefetch C's rows, a vector at a time and without Numba's index
wraparound. fmuladd is a multiply-add that LLVM may fuse into an FMA where the CPU has one (here
vfmadd231ps/pd on ymm, one rounding instead of two, as in BLAS); it is not fastmath: NaN and inf
propagate as IEEE arithmetic says. The vector width is LLVM's: Numba compiles for the host CPU, so
<16 x float> is two ymm with AVX2, one zmm with AVX-512, and four xmm (multiply and add) without AVX.
Measured on this Zen 3 core (1 thread, AVX2): the micro-kernel alone ~85 GFLOP/s float32; linear
forward and backward at 1024^3 and 256x1024x1024 run at ~0.8-0.9x NumPy on OpenBLAS in float32
(~65-70 GFLOP/s) and ~0.9-1.0x in float64 (~33-36 GFLOP/s).
"""

from __future__ import annotations

import numpy as np

from ._numba import njit

try:
    import numba
    from llvmlite import ir as llir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic
except ImportError:     # no numba: import kernels still works, the njit functions raise when called
    numba = llir = types = cgutils = None

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


def _nr(dtype):
    return NR32 if dtype == types.float32 else NR64


def _vector(context, dt):
    lty = context.get_data_type(dt)
    nr = _nr(dt)
    return lty, llir.VectorType(lty, nr), nr, lty.get_abi_size(context.target_data)


def _vptr(context, builder, aryty, ary, inds, vty):
    # a <NR x T>* at ary[inds] (no wraparound: the callers' indices are in range)
    ptr = cgutils.get_item_pointer(context, builder, aryty, context.make_array(aryty)(context, builder, ary), inds)
    return builder.bitcast(ptr, vty.as_pointer())


@intrinsic
def _nr_of(typingctx, like):
    """NR for like's dtype, as a constant LLVM can fold (array.itemsize is a run-time field)."""
    nr = _nr(like.dtype)

    def codegen(context, builder, sig, args):
        return context.get_constant(types.intp, nr)
    return types.intp(like), codegen


@intrinsic
def _tile(typingctx, like):
    """A pointer to MR x NR elements of like's dtype on the caller's stack (uninitialised)."""
    dt = like.dtype

    def codegen(context, builder, sig, args):
        return cgutils.alloca_once(builder, context.get_data_type(dt), size=MR * _nr(dt))
    return types.CPointer(dt)(like), codegen


@intrinsic
def _fmadd_row(typingctx, acc, r, Ap, ai, Bp, bo):
    """acc[r*NR : (r+1)*NR] += Ap[ai] * Bp[bo : bo+NR], one <NR x T> llvm.fmuladd (1-d Ap, Bp)."""
    dt = Bp.dtype
    if acc != types.CPointer(dt) or Ap.dtype != dt:
        return None

    def codegen(context, builder, sig, args):
        accp, rv, apv, aiv, bpv, bov = args
        lty, vty, nr, align = _vector(context, dt)
        a = builder.load(cgutils.get_item_pointer(context, builder, sig.args[2],
                                                  context.make_array(sig.args[2])(context, builder, apv), [aiv]))
        bvec = builder.load(_vptr(context, builder, sig.args[4], bpv, [bov], vty), align=align)
        splat = builder.insert_element(llir.Constant(vty, llir.Undefined), a, llir.Constant(llir.IntType(32), 0))
        splat = builder.shuffle_vector(splat, llir.Constant(vty, llir.Undefined),
                                       llir.Constant(llir.VectorType(llir.IntType(32), nr), [0] * nr))
        cptr = builder.bitcast(builder.gep(accp, [builder.mul(rv, llir.Constant(rv.type, nr))]), vty.as_pointer())
        fmuladd = cgutils.get_or_insert_function(builder.module, llir.FunctionType(vty, [vty, vty, vty]),
                                                 f"llvm.fmuladd.v{nr}f{8 * align}")
        builder.store(builder.call(fmuladd, [splat, bvec, builder.load(cptr, align=align)]), cptr, align=align)
        return context.get_dummy_value()
    return types.none(acc, r, Ap, ai, Bp, bo), codegen


@intrinsic
def _store_row(typingctx, acc, r, C, i, j, mode, bias):
    """C[i, j:j+NR] = acc[r*NR : (r+1)*NR] (mode 0), that + bias[j:j+NR] (mode 1) or C[i, j:j+NR] + that
    (mode 2), as <NR x T> vectors (2-d C, 1-d bias)."""
    dt = C.dtype
    if acc != types.CPointer(dt) or bias.dtype != dt:
        return None

    def codegen(context, builder, sig, args):
        accp, rv, cv, iv, jv, modev, biasv = args
        lty, vty, nr, align = _vector(context, dt)
        v = builder.load(builder.bitcast(builder.gep(accp, [builder.mul(rv, llir.Constant(rv.type, nr))]),
                                         vty.as_pointer()), align=align)
        cptr = _vptr(context, builder, sig.args[2], cv, [iv, jv], vty)
        with builder.if_else(builder.icmp_signed("==", modev, llir.Constant(modev.type, 2))) as (acc_c, first):
            with acc_c:
                builder.store(builder.fadd(builder.load(cptr, align=align), v), cptr, align=align)
            with first:
                with builder.if_else(builder.icmp_signed("==", modev, llir.Constant(modev.type, 1))) as (add_b, plain):
                    with add_b:
                        bvec = builder.load(_vptr(context, builder, sig.args[6], biasv, [jv], vty), align=align)
                        builder.store(builder.fadd(v, bvec), cptr, align=align)
                    with plain:
                        builder.store(v, cptr, align=align)
        return context.get_dummy_value()
    return types.none(acc, r, C, i, j, mode, bias), codegen


@intrinsic
def _copy_row(typingctx, dst, di, src, si):
    """dst[di : di+NR] = src[si : si+NR] as one <NR x T> load and store (1-d dst and src)."""
    dt = dst.dtype
    if src.dtype != dt:
        return None

    def codegen(context, builder, sig, args):
        dstv, div, srcv, siv = args
        lty, vty, nr, align = _vector(context, dt)
        v = builder.load(_vptr(context, builder, sig.args[2], srcv, [siv], vty), align=align)
        builder.store(v, _vptr(context, builder, sig.args[0], dstv, [div], vty), align=align)
        return context.get_dummy_value()
    return types.none(dst, di, src, si), codegen


@intrinsic
def _prefetch_row(typingctx, C, i, j):
    """Prefetch (for writing) the NR elements at C[i, j:j+NR] (2-d C): the tile's rows are a matrix row
    apart, so they are rarely in L1 when the micro-kernel stores them."""
    def codegen(context, builder, sig, args):
        cv, iv, jv = args
        lty, vty, nr, align = _vector(context, C.dtype)
        i8p = llir.IntType(8).as_pointer()
        first = builder.bitcast(_vptr(context, builder, sig.args[0], cv, [iv, jv], vty), i8p)
        i32 = llir.IntType(32)
        prefetch = cgutils.get_or_insert_function(
            builder.module, llir.FunctionType(llir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch.p0")
        for off in (0, nr * align - 1):   # the row's first and last byte: one or two cache lines
            builder.call(prefetch, [builder.gep(first, [llir.Constant(llir.IntType(64), off)]),
                                    llir.Constant(i32, 1), llir.Constant(i32, 3), llir.Constant(i32, 1)])
        return context.get_dummy_value()
    return types.none(C, i, j), codegen


@njit(inline="always")
def _ukernel(kc, Ap, ao, Bp, bo, C, i0, j0, mr, nr, first, bias):
    # C[i0:i0+mr, j0:j0+nr] (=, or += unless first) the MR x NR tile sum_p Ap[ao + p*MR + r] * Bp[bo + p*NR + j],
    # plus bias[j0:j0+nr] when first and bias.size. Inlined into the caller, whose stack holds the tile.
    NR = _nr_of(Bp)
    accp = _tile(Bp)
    acc = numba.carray(accp, (MR * NR,))
    for t in range(MR * NR):
        acc[t] = 0
    if mr == MR and nr == NR:
        for r in range(MR):
            _prefetch_row(C, i0 + r, j0)
    for p in range(kc):
        a = ao + p * MR
        b = bo + p * NR
        for r in range(MR):
            _fmadd_row(accp, r, Ap, a + r, Bp, b)
    if mr == MR and nr == NR:
        mode = 2 if not first else (1 if bias.size else 0)
        for r in range(MR):
            _store_row(accp, r, C, i0 + r, j0, mode, bias)
    else:
        for r in range(mr):
            for j in range(nr):
                v = acc[r * NR + j]
                if not first:
                    v += C[i0 + r, j0 + j]
                elif bias.size:
                    v += bias[j0 + j]
                C[i0 + r, j0 + j] = v


@njit
def _pack_a(Ap, a, ars, acs, ic, mc, pc, kc):
    # Ap[q*kc + p*MR + r] = A[ic + q + r, pc + p] for each MR-row micro-panel q, zero past row mc,
    # where A[i, p] = a[i*ars + p*acs]
    for q in range(0, mc, MR):
        base = q * kc
        rows = min(MR, mc - q)
        if acs == 1:                        # rows of A contiguous (x, dz): read along them
            for r in range(rows):
                row = (ic + q + r) * ars + pc
                for p in range(kc):
                    Ap[base + p * MR + r] = a[row + p]
        else:                               # columns contiguous (x.T): read down them
            for p in range(kc):
                col = (ic + q) * ars + (pc + p) * acs
                for r in range(rows):
                    Ap[base + p * MR + r] = a[col + r * ars]
        for r in range(rows, MR):
            for p in range(kc):
                Ap[base + p * MR + r] = 0


@njit
def _pack_b(Bp, b, brs, bcs, pc, kc, jc, nc):
    # Bp[q*kc + p*NR + c] = B[pc + p, jc + q + c] for each NR-column micro-panel q, zero past column nc,
    # where B[p, j] = b[p*brs + j*bcs]
    NR = _nr_of(Bp)
    for q in range(0, nc, NR):
        base = q * kc
        cols = min(NR, nc - q)
        if bcs == 1 and cols == NR:         # rows contiguous (W, dz), a whole panel: NR-wide copies
            for p in range(kc):
                _copy_row(Bp, base + p * NR, b, (pc + p) * brs + jc + q)
        elif bcs == 1:
            for p in range(kc):
                for c in range(cols):
                    Bp[base + p * NR + c] = b[(pc + p) * brs + jc + q + c]
        else:                               # columns contiguous (W.T): read down them
            for c in range(cols):
                col = pc * brs + (jc + q + c) * bcs
                for p in range(kc):
                    Bp[base + p * NR + c] = b[col + p * brs]
        for c in range(cols, NR):
            for p in range(kc):
                Bp[base + p * NR + c] = 0


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
    C-contiguous and written whole (k = 0 gives C = bias, or 0); A and B may be transposed views."""
    _gemm(C, *_flat(A), A.shape[0], A.shape[1], *_flat(B), B.shape[1], bias, Y, code, alpha, epilogue)


@njit
def _gemm(C, a, ars, acs, m, k, b, brs, bcs, n, bias, Y, code, alpha, epilogue):
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
    # balanced blocks: ceil(k / KC) blocks of (nearly) equal depth, m and n alike rounded up to MR, NR
    nkb = (k + KC - 1) // KC
    kcb = (k + nkb - 1) // nkb
    nnb = (n + NC - 1) // NC
    ncb = ((n + nnb - 1) // nnb + NR - 1) // NR * NR
    nmb = (m + MC - 1) // MC
    mcb = ((m + nmb - 1) // nmb + MR - 1) // MR * MR
    Bp = np.empty(kcb * ncb, C.dtype)
    Ap = np.empty(mcb * kcb, C.dtype)
    for jc in range(0, n, ncb):
        nc = min(ncb, n - jc)
        for pc in range(0, k, kcb):
            kc = min(kcb, k - pc)
            first = pc == 0
            last = pc + kc == k
            _pack_b(Bp, b, brs, bcs, pc, kc, jc, nc)
            for ic in range(0, m, mcb):
                mc = min(mcb, m - ic)
                _pack_a(Ap, a, ars, acs, ic, mc, pc, kc)
                for jr in range(0, nc, NR):
                    nr = min(NR, nc - jr)
                    for ir in range(0, mc, MR):
                        mr = min(MR, mc - ir)
                        _ukernel(kc, Ap, ir * kc, Bp, jr * kc, C, ic + ir, jc + jr, mr, nr, first, bias)
                    if last and epilogue:   # the mc x NR column of finished tiles, still in L1
                        _act_tile(Y, C, ic, jc + jr, mc, nr, code, alpha)


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
