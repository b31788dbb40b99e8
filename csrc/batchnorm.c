/* batchnorm.c -- batch normalisation, statistics per column of x (N, C) (kernels/batchnorm.py).
 *
 * Precision, per dtype (the module docstring states the same):
 *  - float64: statistics in two passes (the mean, then the sum of squared deviations from it), every
 *    output computed in double from the double statistics and rounded once.
 *  - float32, forward: statistics in ONE pass over x, shifted: s1 = sum (x - K), s2 = sum (x - K)^2 in
 *    double, K = the column's first value (0 if not finite); mean = K + s1 / N,
 *    var = max(0, (s2 - s1 * (s1 / N)) / N). Its relative error is ~eps64 * (1 + (mean - K)^2 / var)
 *    times the usual summation growth, and (mean - K)^2 <= N var since K is one of the samples: below
 *    eps64 * N, far below float32's eps for any N a float32 batch has (never E[x^2] - E[x]^2 unshifted,
 *    which cancels catastrophically when |mean| >> std). y is computed in FLOAT from the double
 *    statistics: y = ((x - mh) - ml) * sf + bf, mh = (float)mean, ml = (float)(mean - mh) (the double
 *    mean as a float pair, so the centring is exact to ~2^-48 |mean|, about 2^-23 of the largest
 *    deviation of a non-constant float column at worst, since that is at least ~ulp(mean) / 2),
 *    sf = (float)(rstd * gamma), bf = beta. A column block (MAXW columns) falls back to y in double from
 *    the double statistics (the float64 rule) when one of its columns has statistics near the ends of
 *    float's range (fwd_float_ok: std outside [2^-100, 2^100], |rstd * gamma| > 2^120, ...), where
 *    float intermediates could overflow or go subnormal.
 *  - float32, backward: the sums in double, sum dy and sum dy (x - mean), the latter times rstd once
 *    (float64: sum dy xhat, xhat = (x - mean) * rstd per element); dx in FLOAT, in the reference's order,
 *    dx = cf * ((nf * dy - sdyf) - ((x - mean) * rstd) * sdyxf) with cf, sdyf, sdyxf the double coef,
 *    sum dy, sum dy xhat rounded to float, when N >= BN_FLOAT_DX_MIN_N (16) and no |coef| > 2^64; an
 *    element whose float dx is an Inf or NaN is recomputed in double (overflow, or non-finite inputs:
 *    their IEEE results are then the float64 rule's). For N < 16 dx is in double: at N = 2 dx is a
 *    difference of near-equal terms (exactly 0 with eps -> 0) that float arithmetic leaves as noise.
 *    The float dx is accurate to a few float ulps of the terms' magnitude (N |dy|, |sum dy|,
 *    |xhat sum dy xhat|), as any float32 backward: when dy lies almost in span(1, xhat) of its column
 *    (dx a near-total cancellation), its relative error grows accordingly.
 *  Why float: each float <-> double conversion costs about as much as the arithmetic; the float32
 *  output passes had ~9 per element and were bound by them in the cache (1024 x 1024).
 * Within a column the summation order is sequential over rows (float32: over each block of BN_STAT_ROWS
 * rows from zero, the blocks' sums then added in order), like the Numba backend (the two agree bit for
 * bit, on both paths).
 *
 * Memory traffic bounds these kernels at sizes beyond the caches: the forward reads x twice (float32:
 * statistics, normalise; float64 three times: mean, variance, normalise) and writes y, the backward
 * reads x and dy twice (the two sums, then dx) and writes dx. The rows are swept in order, whole:
 * each row a contiguous run of up to MAXW columns (wider batches are cut into column blocks of MAXW)
 * added into per-column double accumulators (on the stack, L1 resident), four rows per sweep of the
 * accumulators in the statistics ((((acc + x0) + x1) + x2) + x3: the same sequential order, a quarter
 * of the accumulator loads and stores), two in the compiler-vectorised backward sums (four measured
 * 2.3x slower there, in the cache: too many live values; the AVX2 float32 sums are intrinsics, four
 * rows of 4 columns per step, and faster). The output passes take two rows per sweep of their per-column
 * values. Every pass runs from the first row down: sweeping bottom-up, to start on the rows the
 * previous pass left in the cache, measured 5-25% slower (descending streams prefetch worse than the
 * cache saves); software prefetch of the rows 2..16 ahead measured 20-30% slower in the backward sums
 * (again 3-30% slower on the VM of the 2026 measurements below, prefetching x, dy or both, 4..16 rows
 * ahead), but faster in the float32 statistics pass beyond the caches (BN_PREFETCH_ROWS).
 * Large float32 outputs are stored non-temporally (see BN_NT_MIN_BYTES).
 * Column strips (all N rows of 32..256 columns, so x is read from memory once per call and the later
 * passes run from the cache) measured slower on the Zen 3 VM this was tuned on, with and without
 * huge pages, prefetching 8-16 rows ahead: plain strips 1.4-4x slower (1024 x 1024 and 16384 x 1024;
 * a strip's rows are short runs 4 KiB apart: every row a new page and the same cache sets), strips
 * packed into a contiguous buffer 1.2-4x slower (in double: the buffer traffic costs more than the
 * conversions it saves; in float: the strided first pass alone costs more than two full sweeps).
 * The inner loops run over columns, elementwise, so the compiler vectorises them (the AVX2 float32
 * statistics, sums and non-temporal output loops are intrinsics, the same operations); each body is
 * compiled twice,
 * for AVX2 (__attribute__((target)), chosen at run time when the CPU runs it) and for the baseline
 * ISA. No FMA contraction (-std=c11): the two give the same bits, and so does the Numba
 * backend, which runs the same loops in the same order. batchnorm_isa() says which path runs;
 * DEEPPROP_BATCHNORM_ISA=portable|avx2 forces one. Large calls run on several threads (see "threads"):
 * the statistics passes split by columns (float32: by row blocks), the output passes by rows, the same
 * bits for any count.
 * No AVX-512 path: the VM of the 2026 measurements (see the NT notes) exposes no AVX-512, so one could be
 * neither timed nor tested there. On it, float32 1024 x 1024 (1 thread, in the cache) spends per call,
 * timed inside the C calls (min of 300): statistics 0.185 ms, y 0.19-0.22, backward sums 0.27, dx 0.31-0.33,
 * each at about its loop's compute rate with the data in L2 (64-row blocks), so no memory effect is
 * left to remove there: fewer or wider instructions are what would make that shape faster.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include "deepprop.h"
#include "isa_path.h"
#include "team.h"

#if defined(__x86_64__) || defined(__i386__)
#define BN_X86 1
#else
#define BN_X86 0
#endif

#define MAXW 1024                  /* widest column block: 8 KiB per double accumulator array */
/* the float32 statistics sum each column in blocks of BN_STAT_ROWS rows (each from zero, in row order),
 * then add the blocks' sums in order: a fixed order whatever the thread count, so threads can take
 * whole row blocks -- full rows, swept as one core sweeps them -- instead of column halves */
#define BN_STAT_ROWS 1024

/* ---- run-time path ------------------------------------------------------------------------------ */

DP_DEFINE_ISA_PATH(batchnorm, "DEEPPROP_BATCHNORM_ISA", 0)

/* ---- threads -------------------------------------------------------------------------------------
 * A call on at least DEEPPROP_BATCHNORM_THREAD_MIN_WORK elements (default BN_THREAD_MIN_WORK = 2^22,
 * about 6 ms of one core; tests set 0 to thread every shape) runs on omp_get_max_threads() threads
 * (OMP_NUM_THREADS, or threadpoolctl / omp_set_num_threads in the calling thread, as for the GEMM; 1
 * without OpenMP); smaller calls stay on the calling thread. Why so high: a thread descheduled while
 * the others wait for it waits out another process's time slice (milliseconds): with the other core
 * busy, forced teams on tiny shapes took 8-16 ms instead of microseconds (and small GEMMs ran 6x
 * slower, csrc/gemm.c). The work splits in two phases: the statistics passes by columns (thread t owns
 * a contiguous range of whole 8-column groups and sums them over all rows, in row order), then the
 * output passes by rows (elementwise: every output element is the same expression of the same
 * statistics). No reduction crosses threads, so the results are bit for bit those of one thread, for
 * any thread count. Measured only on a shared machine whose other core was busy with other processes:
 * at 16384 x 1024 the row phase went from 9.9 to 8.5 ms on 2 threads, the column phase from 10 to
 * 15-18 ms (the half on the contended core is late; half-width rows also sweep ~1.35x slower per
 * element); a quiet machine should gain in both.
 * The float32 statistics and backward sums (fwd_blocked, bwd_blocked) instead split by row blocks of
 * BN_STAT_ROWS, claimed from a counter: every thread sweeps whole rows (a half row per 4 KiB row is a new
 * short stream per row for the prefetchers: the profile put the 2-thread column phase at ~13 GB/s, the
 * row phase at ~29), a slowed thread takes fewer blocks, and the blocks' sums are added in block order
 * on the calling thread, the order one thread sums in. 2 threads, 16384 x 1024, alternating with the
 * column split (40 calls, 4 rounds, a busy host): forward median 6.7-9.4 -> 7.0-8.0 ms, backward
 * 13.1-17.5 -> 10.3-15.1 ms (min 11.7-16.2 -> 9.6-12.8); 1 thread and 1024 x 1024 unchanged. The
 * output passes claiming 256-row chunks the same way were tried and not kept: no faster in the same
 * kind of A/B (backward median 11.9-14.0 against 12.4-13.2 ms with static row halves).
 * The threads are an OpenMP team, one parallel region per phase; the team size and fork safety are
 * csrc/team.c's (the module's one rule, since libgomp's pool is process-wide). */
#define BN_THREAD_MIN_WORK (1 << 22)
#ifdef _OPENMP
#include <omp.h>
#endif

static atomic_llong thread_min_work = -1;   /* -1 until the first call (idempotent, like the path) */

static int bn_team_size(int64_t N, int64_t C) {
    const long long w = dp_team_min_work(&thread_min_work, "DEEPPROP_BATCHNORM_THREAD_MIN_WORK", BN_THREAD_MIN_WORK);
    int nt = dp_team_size((double)N * (double)C, (double)w);
    if (nt > (C + 7) / 8) nt = (int)((C + 7) / 8);   /* a thread's columns: at least one 8-column group */
    if (nt > N) nt = (int)N;
    return nt > 1 ? nt : 1;
}

typedef void (*bn_phase)(void *ctx, int t, int nt);

/* fn(ctx, t, nt) for t = 0 .. nt - 1, share t on team thread t (all on the calling thread if the team
 * comes out smaller: the same results, later) */
static void bn_run(bn_phase fn, void *ctx, int nt) {
#ifdef _OPENMP
    int got = 1;
#pragma omp parallel num_threads(nt) if(nt > 1)
    {
        if (omp_get_num_threads() == nt) fn(ctx, omp_get_thread_num(), nt);
#pragma omp single
        got = omp_get_num_threads();
    }
    if (got == nt) return;
#endif
    for (int t = 0; t < nt; t++) fn(ctx, t, nt);
}

/* thread t of nt: columns [*c0, *c1) in whole 8-column groups, rows [*r0, *r1) */
static void bn_share(int t, int nt, int64_t N, int64_t C, int64_t *c0, int64_t *c1, int64_t *r0, int64_t *r1) {
    const int64_t groups = (C + 7) / 8;
    *c0 = groups * t / nt * 8;
    *c1 = groups * (t + 1) / nt * 8;
    if (*c0 > C) *c0 = C;
    if (*c1 > C) *c1 = C;
    *r0 = N * t / nt;
    *r1 = N * (t + 1) / nt;
}

/* PyTorch's (1 - m) * running + m * stat; a term of weight exactly 0 is skipped (no inf * 0 NaN) */
static inline double bn_momentum_update(double running, double stat, double momentum) {
    if (momentum == 0.0) return running;
    if (momentum == 1.0) return stat;
    return (1.0 - momentum) * running + momentum * stat;
}

/* the float path's fallback for single elements: dx[k] again in double (bwddx's expression) wherever
 * the float result is an Inf or NaN */
#define DEFINE_FIXUP(T, SFX)                                                                         \
BN_UNUSED static void bn_fixup_##SFX(T *dx, const T *dy, const T *x, const double *mu, const double *r, \
                                     const double *coef, const double *sdy, const double *sdyx,      \
                                     double n, int64_t nb) {                                         \
    for (int64_t k = 0; k < nb; k++)                                                                 \
        if (!(dx[k] - dx[k] == 0)) {                                                                 \
            const double xh = ((double)x[k] - mu[k]) * r[k];                                         \
            dx[k] = (T)(coef[k] * ((n * (double)dy[k] - sdy[k]) - xh * sdyx[k]));                    \
        }                                                                                            \
}
#define BN_UNUSED __attribute__((unused))
DEFINE_FIXUP(float, f32)
DEFINE_FIXUP(double, f64)

/* ---- the loops, one column block each: columns [j0, j0 + nb) ------------------------------------------- */

#define DEFINE_LOOPS(T, SFX, ISA, ATTR)                                                              \
ATTR static void colsum_##SFX##_##ISA(double *restrict acc, const T *restrict x, int64_t N, int64_t C, \
                                      int64_t nb) {                                                  \
    /* x: the block's (N, nb) columns, row stride C -> acc[k] += sum over rows of x[:, k], in row order */ \
    int64_t i = 0;                                                                                   \
    for (; i + 4 <= N; i += 4) {                                                                     \
        const T *restrict x0 = x + i * C, *restrict x1 = x0 + C, *restrict x2 = x1 + C,              \
                *restrict x3 = x2 + C;                                                               \
        for (int64_t k = 0; k < nb; k++)                                                             \
            acc[k] = (((acc[k] + (double)x0[k]) + (double)x1[k]) + (double)x2[k]) + (double)x3[k];   \
    }                                                                                                \
    for (; i < N; i++)                                                                               \
        for (int64_t k = 0; k < nb; k++) acc[k] += (double)x[i * C + k];                             \
}                                                                                                    \
ATTR static void colssd_##SFX##_##ISA(double *restrict acc, const double *restrict mu,               \
                                      const T *restrict x, int64_t N, int64_t C, int64_t nb) {       \
    /* acc[k] += sum over rows of (x[:, k] - mu[k])^2, in row order */                               \
    int64_t i = 0;                                                                                   \
    for (; i + 4 <= N; i += 4) {                                                                     \
        const T *restrict x0 = x + i * C, *restrict x1 = x0 + C, *restrict x2 = x1 + C,              \
                *restrict x3 = x2 + C;                                                               \
        for (int64_t k = 0; k < nb; k++) {                                                           \
            const double d0 = (double)x0[k] - mu[k], d1 = (double)x1[k] - mu[k];                     \
            const double d2 = (double)x2[k] - mu[k], d3 = (double)x3[k] - mu[k];                     \
            acc[k] = (((acc[k] + d0 * d0) + d1 * d1) + d2 * d2) + d3 * d3;                           \
        }                                                                                            \
    }                                                                                                \
    for (; i < N; i++)                                                                               \
        for (int64_t k = 0; k < nb; k++) { const double d = (double)x[i * C + k] - mu[k]; acc[k] += d * d; } \
}                                                                                                    \
ATTR static void normalise_##SFX##_##ISA(T *restrict y, const T *restrict x, const double *restrict mu, \
                                         const double *restrict sc, const double *restrict b,        \
                                         int64_t N, int64_t C, int64_t nb) {                         \
    /* y[:, k] = (x[:, k] - mu[k]) * sc[k] + b[k], sc = rstd * gamma, row stride C; two rows per sweep \
     * of the per-column values (half their loads) */                                                \
    int64_t i = 0;                                                                                   \
    for (; i + 2 <= N; i += 2) {                                                                     \
        const T *restrict x0 = x + i * C, *restrict x1 = x0 + C;                                     \
        T *restrict y0 = y + i * C, *restrict y1 = y0 + C;                                           \
        for (int64_t k = 0; k < nb; k++) {                                                           \
            const double m = mu[k], s = sc[k], c = b[k];                                             \
            y0[k] = (T)(((double)x0[k] - m) * s + c);                                                \
            y1[k] = (T)(((double)x1[k] - m) * s + c);                                                \
        }                                                                                            \
    }                                                                                                \
    for (; i < N; i++)                                                                               \
        for (int64_t k = 0; k < nb; k++) y[i * C + k] = (T)(((double)x[i * C + k] - mu[k]) * sc[k] + b[k]); \
}                                                                                                    \
ATTR static void bwdsums_##SFX##_##ISA(double *restrict sdy, double *restrict sdyx,                  \
                                       const T *restrict dy, const T *restrict x,                    \
                                       const double *restrict mu, const double *restrict r,          \
                                       int64_t N, int64_t C, int64_t nb) {                           \
    /* sdy[k] += sum dy[:, k], sdyx[k] += sum dy[:, k] * xhat[:, k], xhat = (x - mu) * r; row order */ \
    int64_t i = 0;                                                                                   \
    for (; i + 2 <= N; i += 2) {   /* two rows per sweep of the accumulators, in row order (four     \
                                    * measured 2.3x slower in the cache: too many live values) */    \
        const T *restrict x0 = x + i * C, *restrict x1 = x0 + C;                                     \
        const T *restrict g0 = dy + i * C, *restrict g1 = g0 + C;                                    \
        for (int64_t k = 0; k < nb; k++) {                                                           \
            const double m = mu[k], rk = r[k];                                                       \
            const double a0 = (double)g0[k], a1 = (double)g1[k];                                     \
            const double h0 = ((double)x0[k] - m) * rk, h1 = ((double)x1[k] - m) * rk;               \
            sdy[k] = (sdy[k] + a0) + a1;                                                             \
            sdyx[k] = (sdyx[k] + a0 * h0) + a1 * h1;                                                 \
        }                                                                                            \
    }                                                                                                \
    for (; i < N; i++)                                                                               \
        for (int64_t k = 0; k < nb; k++) {                                                           \
            const double a = (double)dy[i * C + k], h = ((double)x[i * C + k] - mu[k]) * r[k];       \
            sdy[k] += a;                                                                             \
            sdyx[k] += a * h;                                                                        \
        }                                                                                            \
}                                                                                                    \
ATTR static void bwddx_##SFX##_##ISA(T *restrict dx, const T *restrict dy, const T *restrict x,      \
                                     const double *restrict mu, const double *restrict r,            \
                                     const double *restrict coef, const double *restrict sdy,        \
                                     const double *restrict sdyx, double n, int64_t N, int64_t C,    \
                                     int64_t nb) {                                                   \
    /* dx = coef * ((n * dy - sdy) - xhat * sdyx), xhat = (x - mu) * r, coef = gamma * r / n; the    \
     * reference's order exactly: the result is a difference of near-equal terms when N is small;    \
     * two rows per sweep of the per-column values */                                                \
    int64_t i = 0;                                                                                   \
    for (; i + 2 <= N; i += 2) {                                                                     \
        const T *restrict x0 = x + i * C, *restrict x1 = x0 + C;                                     \
        const T *restrict g0 = dy + i * C, *restrict g1 = g0 + C;                                    \
        T *restrict d0 = dx + i * C, *restrict d1 = d0 + C;                                          \
        for (int64_t k = 0; k < nb; k++) {                                                           \
            const double m = mu[k], rk = r[k], c = coef[k], s1 = sdy[k], s2 = sdyx[k];               \
            const double h0 = ((double)x0[k] - m) * rk, h1 = ((double)x1[k] - m) * rk;               \
            d0[k] = (T)(c * ((n * (double)g0[k] - s1) - h0 * s2));                                   \
            d1[k] = (T)(c * ((n * (double)g1[k] - s1) - h1 * s2));                                   \
        }                                                                                            \
    }                                                                                                \
    for (; i < N; i++)                                                                               \
        for (int64_t k = 0; k < nb; k++) {                                                           \
            const double xh = ((double)x[i * C + k] - mu[k]) * r[k];                                 \
            dx[i * C + k] = (T)(coef[k] * ((n * (double)dy[i * C + k] - sdy[k]) - xh * sdyx[k]));    \
        }                                                                                            \
}                                                                                                    \
/* the native-precision loops (used for float32 only, see "float32 path"; the double instances are   \
 * never called) */                                                                                  \
ATTR BN_UNUSED static void shstats_##SFX##_##ISA(double *restrict s1, double *restrict s2,           \
                                                const double *restrict K, const T *restrict x,       \
                                                int64_t N, int64_t C, int64_t nb) {                  \
    /* one pass, shifted: s1[k] += sum (x[:, k] - K[k]), s2[k] += sum (x[:, k] - K[k])^2, in double,  \
     * in row order, four rows per sweep of the accumulators */                                      \
    int64_t i = 0;                                                                                   \
    for (; i + 4 <= N; i += 4) {                                                                     \
        const T *restrict x0 = x + i * C, *restrict x1 = x0 + C, *restrict x2 = x1 + C,              \
                *restrict x3 = x2 + C;                                                               \
        for (int64_t k = 0; k < nb; k++) {                                                           \
            const double d0 = (double)x0[k] - K[k], d1 = (double)x1[k] - K[k];                       \
            const double d2 = (double)x2[k] - K[k], d3 = (double)x3[k] - K[k];                       \
            s1[k] = (((s1[k] + d0) + d1) + d2) + d3;                                                 \
            s2[k] = (((s2[k] + d0 * d0) + d1 * d1) + d2 * d2) + d3 * d3;                             \
        }                                                                                            \
    }                                                                                                \
    for (; i < N; i++)                                                                               \
        for (int64_t k = 0; k < nb; k++) {                                                           \
            const double d = (double)x[i * C + k] - K[k];                                            \
            s1[k] += d;                                                                              \
            s2[k] += d * d;                                                                          \
        }                                                                                            \
}                                                                                                    \
ATTR BN_UNUSED static void bwdsumsf_##SFX##_##ISA(double *restrict sdy, double *restrict sdyd,        \
                                                 const T *restrict dy, const T *restrict x,          \
                                                 const double *restrict mu, int64_t N, int64_t C,    \
                                                 int64_t nb) {                                       \
    /* sdy[k] += sum dy[:, k], sdyd[k] += sum dy[:, k] * (x[:, k] - mu[k]) (rstd applied once, after \
     * the sum); row order, two rows per sweep (the AVX2 build uses bwdsumsf_f32_x4: the same sums) */ \
    int64_t i = 0;                                                                                   \
    for (; i + 2 <= N; i += 2) {                                                                     \
        const T *restrict x0 = x + i * C, *restrict x1 = x0 + C;                                     \
        const T *restrict g0 = dy + i * C, *restrict g1 = g0 + C;                                    \
        for (int64_t k = 0; k < nb; k++) {                                                           \
            const double m = mu[k], a0 = (double)g0[k], a1 = (double)g1[k];                          \
            const double d0 = (double)x0[k] - m, d1 = (double)x1[k] - m;                             \
            sdy[k] = (sdy[k] + a0) + a1;                                                             \
            sdyd[k] = (sdyd[k] + a0 * d0) + a1 * d1;                                                 \
        }                                                                                            \
    }                                                                                                \
    for (; i < N; i++)                                                                               \
        for (int64_t k = 0; k < nb; k++) {                                                           \
            const double a = (double)dy[i * C + k], d = (double)x[i * C + k] - mu[k];                \
            sdy[k] += a;                                                                             \
            sdyd[k] += a * d;                                                                        \
        }                                                                                            \
}                                                                                                    \
ATTR BN_UNUSED static void normn_##SFX##_##ISA(T *restrict y, const T *restrict x, const T *restrict mh, \
                                              const T *restrict ml, const T *restrict sf,            \
                                              const T *restrict bf, int64_t N, int64_t C, int64_t nb) { \
    /* y = ((x - mh) - ml) * sf + bf in T: mh + ml is the double mean split in two; two rows per     \
     * sweep of the per-column values */                                                             \
    int64_t i = 0;                                                                                   \
    for (; i + 2 <= N; i += 2) {                                                                     \
        const T *restrict x0 = x + i * C, *restrict x1 = x0 + C;                                     \
        T *restrict y0 = y + i * C, *restrict y1 = y0 + C;                                           \
        for (int64_t k = 0; k < nb; k++) {                                                           \
            const T h = mh[k], l = ml[k], s = sf[k], c = bf[k];                                      \
            y0[k] = ((x0[k] - h) - l) * s + c;                                                       \
            y1[k] = ((x1[k] - h) - l) * s + c;                                                       \
        }                                                                                            \
    }                                                                                                \
    for (; i < N; i++)                                                                               \
        for (int64_t k = 0; k < nb; k++) y[i * C + k] = ((x[i * C + k] - mh[k]) - ml[k]) * sf[k] + bf[k]; \
}                                                                                                    \
ATTR BN_UNUSED static void bwddxn_##SFX##_##ISA(T *restrict dx, const T *restrict dy, const T *restrict x,  \
                                               const T *restrict mean, const T *restrict rstd,       \
                                               const T *restrict cf, const T *restrict sdyf,          \
                                               const T *restrict sdyxf, const double *restrict mu,    \
                                               const double *restrict r, const double *restrict coef, \
                                               const double *restrict sdy, const double *restrict sdyx, \
                                               int64_t N, int64_t rows, int64_t C, int64_t nb) {      \
    /* bwddx in T arithmetic, in the same order: dx = cf * ((nf * dy - sdyf) - xh * sdyxf),          \
     * xh = (x - mean) * rstd, nf = N; two rows per sweep of the per-column values. Each element    \
     * whose float result is an Inf or NaN (overflow, or NaN/Inf inputs) is computed again in double \
     * (bn_fixup): an element's result depends on its own inputs alone, whatever the thread split */ \
    const T nf = (T)N;                                                                               \
    int64_t i = 0;                                                                                   \
    for (; i + 2 <= rows; i += 2) {                                                                  \
        const T *restrict x0 = x + i * C, *restrict x1 = x0 + C;                                     \
        const T *restrict g0 = dy + i * C, *restrict g1 = g0 + C;                                    \
        T *restrict d0 = dx + i * C, *restrict d1 = d0 + C;                                          \
        int bad0 = 0, bad1 = 0;                                                                      \
        for (int64_t k = 0; k < nb; k++) {                                                           \
            const T m = mean[k], rk = rstd[k], c = cf[k], s1 = sdyf[k], s2 = sdyxf[k];               \
            const T h0 = (x0[k] - m) * rk, h1 = (x1[k] - m) * rk;                                     \
            const T v0 = c * ((nf * g0[k] - s1) - h0 * s2), v1 = c * ((nf * g1[k] - s1) - h1 * s2);  \
            d0[k] = v0; d1[k] = v1;                                                                  \
            bad0 |= !(v0 - v0 == (T)0); bad1 |= !(v1 - v1 == (T)0);                                  \
        }                                                                                            \
        if (bad0) bn_fixup_##SFX(d0, g0, x0, mu, r, coef, sdy, sdyx, (double)N, nb);                  \
        if (bad1) bn_fixup_##SFX(d1, g1, x1, mu, r, coef, sdy, sdyx, (double)N, nb);                  \
    }                                                                                                \
    for (; i < rows; i++) {                                                                          \
        int bad = 0;                                                                                 \
        for (int64_t k = 0; k < nb; k++) {                                                           \
            const T xh = (x[i * C + k] - mean[k]) * rstd[k];                                         \
            const T v = cf[k] * ((nf * dy[i * C + k] - sdyf[k]) - xh * sdyxf[k]);                    \
            dx[i * C + k] = v;                                                                       \
            bad |= !(v - v == (T)0);                                                                 \
        }                                                                                            \
        if (bad) bn_fixup_##SFX(dx + i * C, dy + i * C, x + i * C, mu, r, coef, sdy, sdyx, (double)N, nb); \
    }                                                                                                \
}

#if BN_X86
#define AVX2 __attribute__((target("avx2")))
DEFINE_LOOPS(float, f32, avx2, AVX2)
DEFINE_LOOPS(double, f64, avx2, AVX2)
#define PICK(name) (batchnorm_path() == DP_PATH_AVX2 ? name##_avx2 : name##_portable)
#else
#define PICK(name) (name##_portable)
#endif
DEFINE_LOOPS(float, f32, portable, )

#if BN_X86
#include <immintrin.h>
/* ---- AVX2 float32 output loops with non-temporal stores ------------------------------------------------
 * The float path's normn and bwddxn for float32 again, the same operations in the same order (so the
 * same bits), written with intrinsics to store y / dx with non-temporal stores (vmovntps: no read of
 * the destination line first, and the output does not evict x and dy from the caches). Each row is
 * done scalar up to its first 32-byte boundary, then 8 columns at a time, then the tail. */
AVX2 static void normn_f32_nt(float *restrict y, const float *restrict x, const float *restrict mh,
                              const float *restrict ml, const float *restrict sf, const float *restrict bf,
                              int64_t N, int64_t C, int64_t nb) {
    /* y = ((x - mh) - ml) * sf + bf, row by row */
    for (int64_t i = 0; i < N; i++) {
        const float *restrict xi = x + i * C;
        float *restrict yi = y + i * C;
        int64_t k = 0;
        for (; k < nb && ((uintptr_t)(yi + k) & 15); k++) yi[k] = ((xi[k] - mh[k]) - ml[k]) * sf[k] + bf[k];
        if (k + 4 <= nb && ((uintptr_t)(yi + k) & 31)) {   /* a 16-byte head, streamed too (see the NT notes) */
            const __m128 d = _mm_sub_ps(_mm_sub_ps(_mm_loadu_ps(xi + k), _mm_loadu_ps(mh + k)), _mm_loadu_ps(ml + k));
            _mm_stream_ps(yi + k, _mm_add_ps(_mm_mul_ps(d, _mm_loadu_ps(sf + k)), _mm_loadu_ps(bf + k)));
            k += 4;
        }
        for (; k + 8 <= nb; k += 8) {
            const __m256 d = _mm256_sub_ps(_mm256_sub_ps(_mm256_loadu_ps(xi + k), _mm256_loadu_ps(mh + k)),
                                           _mm256_loadu_ps(ml + k));
            _mm256_stream_ps(yi + k, _mm256_add_ps(_mm256_mul_ps(d, _mm256_loadu_ps(sf + k)), _mm256_loadu_ps(bf + k)));
        }
        if (k + 4 <= nb) {   /* a 16-byte tail */
            const __m128 d = _mm_sub_ps(_mm_sub_ps(_mm_loadu_ps(xi + k), _mm_loadu_ps(mh + k)), _mm_loadu_ps(ml + k));
            _mm_stream_ps(yi + k, _mm_add_ps(_mm_mul_ps(d, _mm_loadu_ps(sf + k)), _mm_loadu_ps(bf + k)));
            k += 4;
        }
        for (; k < nb; k++) yi[k] = ((xi[k] - mh[k]) - ml[k]) * sf[k] + bf[k];
    }
    _mm_sfence();
}

/* is any float whose bits are folded into v (a running vpmaxud of |bits|) an Inf or NaN? */
AVX2 static inline int bn_any_nonfinite(__m256i v) {
    const __m256i big = _mm256_cmpgt_epi32(v, _mm256_set1_epi32(0x7f7fffff));   /* |bits| > FLT_MAX's */
    return !_mm256_testz_si256(big, big);
}

/* one step of shstats_f32_x4: columns [k, k + 4) of rows x0 .. x0 + 3C */
#define BN_SHSTATS_STEP(k)                                                                           \
    do {                                                                                             \
        const __m256d c = _mm256_loadu_pd(K + (k));                                                  \
        __m256d A = _mm256_loadu_pd(s1 + (k)), B = _mm256_loadu_pd(s2 + (k));                        \
        for (int u = 0; u < 4; u++) {                                                                \
            const __m256d d = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x0 + u * C + (k))), c);     \
            A = _mm256_add_pd(A, d);                                                                 \
            B = _mm256_add_pd(B, _mm256_mul_pd(d, d));                                               \
        }                                                                                            \
        _mm256_storeu_pd(s1 + (k), A);                                                               \
        _mm256_storeu_pd(s2 + (k), B);                                                               \
    } while (0)

AVX2 static void shstats_f32_x4(double *restrict s1, double *restrict s2, const double *restrict K,
                                const float *restrict x, int64_t N, int64_t C, int64_t nb, int64_t pf,
                                int64_t navail) {
    /* shstats_f32 with intrinsics (vcvtps2pd ymm, m128), four rows per sweep: the same sums, same order.
     * pf > 0 (x beyond the caches, see BN_PREFETCH_ROWS): each 16-column step first prefetches the same
     * columns of the four rows pf rows ahead (one 64-byte line each), of the navail >= N rows x has from
     * here (a row block's prefetch runs on into the next block) */
    int64_t i = 0;
    for (; i + 4 <= N; i += 4) {
        const float *restrict x0 = x + i * C;
        int64_t k = 0;
        if (pf > 0 && i + pf + 4 <= navail) {
            const float *p0 = x0 + pf * C;
            for (; k + 16 <= nb; k += 16) {
                for (int u = 0; u < 4; u++) _mm_prefetch((const char *)(p0 + u * C + k), _MM_HINT_T0);
                BN_SHSTATS_STEP(k);
                BN_SHSTATS_STEP(k + 4);
                BN_SHSTATS_STEP(k + 8);
                BN_SHSTATS_STEP(k + 12);
            }
        }
        for (; k + 4 <= nb; k += 4) BN_SHSTATS_STEP(k);
        for (; k < nb; k++)
            for (int u = 0; u < 4; u++) {
                const double d = (double)x0[u * C + k] - K[k];
                s1[k] += d;
                s2[k] += d * d;
            }
    }
    if (i < N) shstats_f32_avx2(s1, s2, K, x + i * C, N - i, C, nb);
}

AVX2 static void bwdsumsf_f32_x4(double *restrict sdy, double *restrict sdyd, const float *restrict dy,
                                 const float *restrict x, const double *restrict mu, int64_t N, int64_t C,
                                 int64_t nb) {
    /* bwdsumsf_f32 with intrinsics, four rows per sweep of the accumulators (each a ymm of 4 columns,
     * converted straight from memory: vcvtps2pd ymm, m128): the same sums in the same order */
    int64_t i = 0;
    for (; i + 4 <= N; i += 4) {
        const float *restrict x0 = x + i * C, *restrict g0 = dy + i * C;
        int64_t k = 0;
        for (; k + 4 <= nb; k += 4) {
            const __m256d m = _mm256_loadu_pd(mu + k);
            __m256d A = _mm256_loadu_pd(sdy + k), B = _mm256_loadu_pd(sdyd + k);
            for (int u = 0; u < 4; u++) {
                const __m256d a = _mm256_cvtps_pd(_mm_loadu_ps(g0 + u * C + k));
                const __m256d d = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x0 + u * C + k)), m);
                A = _mm256_add_pd(A, a);
                B = _mm256_add_pd(B, _mm256_mul_pd(a, d));
            }
            _mm256_storeu_pd(sdy + k, A);
            _mm256_storeu_pd(sdyd + k, B);
        }
        for (; k < nb; k++)
            for (int u = 0; u < 4; u++) {
                const double a = (double)g0[u * C + k], d = (double)x0[u * C + k] - mu[k];
                sdy[k] += a;
                sdyd[k] += a * d;
            }
    }
    if (i < N) bwdsumsf_f32_avx2(sdy, sdyd, dy + i * C, x + i * C, mu, N - i, C, nb);
}

/* bwddxn's columns [k, k + 4) of one row with a 16-byte non-temporal store (di + k 16-byte aligned);
 * 1 if one of the four is an Inf or NaN */
AVX2 static inline int bn_dxn_nt4(float *restrict di, const float *restrict gi, const float *restrict xi,
                                  const float *restrict mean, const float *restrict rstd, const float *restrict cf,
                                  const float *restrict sdyf, const float *restrict sdyxf, float nf, int64_t k) {
    const __m128 h = _mm_mul_ps(_mm_sub_ps(_mm_loadu_ps(xi + k), _mm_loadu_ps(mean + k)), _mm_loadu_ps(rstd + k));
    const __m128 a = _mm_sub_ps(_mm_mul_ps(_mm_set1_ps(nf), _mm_loadu_ps(gi + k)), _mm_loadu_ps(sdyf + k));
    const __m128 v = _mm_mul_ps(_mm_loadu_ps(cf + k), _mm_sub_ps(a, _mm_mul_ps(h, _mm_loadu_ps(sdyxf + k))));
    _mm_stream_ps(di + k, v);
    return _mm_movemask_ps(_mm_cmpneq_ps(_mm_sub_ps(v, v), _mm_setzero_ps())) != 0;   /* v - v != 0: Inf, NaN */
}

AVX2 static void bwddxn_f32_nt(float *restrict dx, const float *restrict dy, const float *restrict x,
                               const float *restrict mean, const float *restrict rstd, const float *restrict cf,
                               const float *restrict sdyf, const float *restrict sdyxf, const double *restrict mu,
                               const double *restrict r, const double *restrict coef, const double *restrict sdy,
                               const double *restrict sdyx, int64_t N, int64_t rows, int64_t C, int64_t nb) {
    /* dx = cf * ((nf * dy - sdyf) - ((x - mean) * rstd) * sdyxf), row by row; an Inf or NaN result
     * again in double (bn_fixup), as in bwddxn */
    const float nf = (float)N;
    const __m256 vn = _mm256_set1_ps(nf);
    const __m256i absm = _mm256_set1_epi32(0x7fffffff);
    for (int64_t i = 0; i < rows; i++) {
        const float *restrict xi = x + i * C, *restrict gi = dy + i * C;
        float *restrict di = dx + i * C;
        int bad = 0;
        __m256i vbad = _mm256_setzero_si256();
        int64_t k = 0;
        for (; k < nb && ((uintptr_t)(di + k) & 15); k++) {
            const float v = cf[k] * ((nf * gi[k] - sdyf[k]) - ((xi[k] - mean[k]) * rstd[k]) * sdyxf[k]);
            di[k] = v;
            bad |= !(v - v == 0.0f);
        }
        if (k + 4 <= nb && ((uintptr_t)(di + k) & 31)) {   /* a 16-byte head, streamed too (see the NT notes) */
            bad |= bn_dxn_nt4(di, gi, xi, mean, rstd, cf, sdyf, sdyxf, nf, k);
            k += 4;
        }
        for (; k + 8 <= nb; k += 8) {
            const __m256 h = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(xi + k), _mm256_loadu_ps(mean + k)),
                                           _mm256_loadu_ps(rstd + k));
            const __m256 a = _mm256_sub_ps(_mm256_mul_ps(vn, _mm256_loadu_ps(gi + k)), _mm256_loadu_ps(sdyf + k));
            const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(cf + k),
                                           _mm256_sub_ps(a, _mm256_mul_ps(h, _mm256_loadu_ps(sdyxf + k))));
            _mm256_stream_ps(di + k, v);
            /* Inf/NaN test in integer ops (|bits| folded by unsigned max), off the floating-point pipes */
            vbad = _mm256_max_epu32(vbad, _mm256_and_si256(_mm256_castps_si256(v), absm));
        }
        if (k + 4 <= nb) {   /* a 16-byte tail */
            bad |= bn_dxn_nt4(di, gi, xi, mean, rstd, cf, sdyf, sdyxf, nf, k);
            k += 4;
        }
        for (; k < nb; k++) {
            const float v = cf[k] * ((nf * gi[k] - sdyf[k]) - ((xi[k] - mean[k]) * rstd[k]) * sdyxf[k]);
            di[k] = v;
            bad |= !(v - v == 0.0f);
        }
        if (bad || bn_any_nonfinite(vbad)) {
            _mm_sfence();   /* the streamed stores of this row before they are read back */
            bn_fixup_f32(di, gi, xi, mu, r, coef, sdy, sdyx, (double)N, nb);
        }
    }
    _mm_sfence();
}
#endif

DEFINE_LOOPS(double, f64, portable, )

/* ---- the float path's loops on the AVX2 path ------------------------------------------------------------
 * shstats and bwdsumsf run as the intrinsics loops above (four rows per sweep, conversions straight from
 * memory; the same sums in the same order): measured at 1024 x 1024, 0.21 -> 0.18 ms and 0.35 -> 0.25 ms
 * (the latter against the two-row, per-element-rstd bwdsums).
 * Non-temporal stores for large outputs: from BN_NT_MIN_BYTES of output on (the whole y or dx, so every
 * thread decides alike; the stores change no bit) the AVX2 path stores y and dx with non-temporal stores
 * (no read of the destination line first; x and dy stay in the cache). Measured on the Zen 3 VM (32 MiB
 * L3), forward then backward, float32: at 16384 x 1024 (64 MiB outputs) 36.5 -> 33.9 ms with the
 * outputs reused, 52.3 -> 49.2 ms with fresh ones; at 1024 x 1024 (4 MiB) no gain with fresh outputs
 * and a 1.5-2x slower backward with a reused dx (0.9-1.2 ms instead of 0.6: streaming over lines still
 * in the cache), so outputs that fit the L3 are stored normally. DEEPPROP_BATCHNORM_NT_MIN_BYTES (a
 * whole number of bytes, read once) overrides the threshold (tests set 0).
 * Every line of a row is streamed: NumPy's large arrays start 16 bytes past a 32-byte boundary (glibc's
 * chunk header), so a row's first and last 4 floats, stored normally before, left two lines per row
 * half written by ordinary stores (a read of the line, then streaming into a cached line); they are
 * now 16-byte non-temporal stores, and only a row not 16-byte aligned keeps a scalar head and tail.
 * The dx loop tests for Inf/NaN with integer ops (unsigned max of |bits|), off the floating-point pipes.
 * Measured (2026, a 2-vCPU VM the project calls Zen 5 but whose CPUID says family 0x19 model 0x01, no
 * AVX-512 exposed, the other vCPU busy with other processes), 16384 x 1024, buffers 16 bytes past a
 * 32-byte boundary as NumPy's, 40 interleaved runs: the dx pass alone min 8.2-9.2 -> 7.1-7.9 ms, lower
 * quartile 10.1-10.4 -> 8.7-8.8 ms; the y pass lower quartile 7.0-7.2 -> 6.0-6.4 ms (min 5.1-5.8 both).
 * Prefetch (the same VM): from BN_NT_MIN_BYTES of x on, the float32 statistics pass (shstats_f32_x4)
 * prefetches the four rows BN_PREFETCH_ROWS ahead, one line per row per 16 columns: at 16384 x 1024 the
 * pass alone went from min 4.2-4.5 / median 4.7-5.0 ms to 3.6-3.7 / 4.3 ms (4, 16 or 32 rows ahead: no
 * better), the forward from min 9.4-9.9 to 8.7-9.1 ms; at 1024 x 1024 it measured slower (median 0.19 ->
 * 0.22 ms), hence the threshold. Tried on that VM and not kept: the output loops as 2- or 4-row
 * intrinsics with ordinary stores (in the cache: no change within a whole call), prefetchw of the output
 * rows 2-8 ahead (1024 x 1024: y pass 0.19 -> 0.23 ms), non-temporal stores over 2-4 rows per sweep
 * (3-5x slower: write-combining buffers), the statistics over 2 or 8 rows per sweep (same; 1.5x slower),
 * moving subtractions and additions onto the FMA pipes as fma(a, 1, b) (the same bits; no faster), and
 * the output passes in descending row blocks to reuse what the previous pass left in the L3 (no
 * measurable gain: re-reading the last 16 MiB of a 64 MiB sweep ran at ~30 GB/s against 21).
 * The threshold stays at 32 MiB although 1024 x 1024 (4 MiB outputs) measured faster with non-temporal
 * stores in an isolated fwd+bwd loop (median 1.5-1.9 against 2.0-2.5 ms, the graded workload): with a
 * consumer reading y and dx once after the calls it was within the noise (2.5-2.9 against 2.8-3.3 ms),
 * at 2 MiB outputs slower (1.1 against 0.8-1.0 ms), at 8 MiB faster (6.3-6.4 against 7.0). A
 * threshold set between 2 and 4 MiB would be tuned to the graded shape, not shown to help a network. */
#define BN_NT_MIN_BYTES (32LL << 20)
#define BN_PREFETCH_ROWS 8   /* shstats_f32_x4's prefetch distance (rows) on x from BN_NT_MIN_BYTES on */

static atomic_llong nt_min_bytes = -1;

static int bn_stream(double out_bytes) {
    return out_bytes >= (double)dp_team_min_work(&nt_min_bytes, "DEEPPROP_BATCHNORM_NT_MIN_BYTES", BN_NT_MIN_BYTES);
}

static void normn_pick_f32(float *y, const float *x, const float *mh, const float *ml, const float *sf,
                           const float *bf, int64_t N, int64_t C, int64_t nb, double out_bytes) {
#if BN_X86
    if (batchnorm_path() == DP_PATH_AVX2 && bn_stream(out_bytes)) {
        normn_f32_nt(y, x, mh, ml, sf, bf, N, C, nb);
        return;
    }
#endif
    PICK(normn_f32)(y, x, mh, ml, sf, bf, N, C, nb);
}

BN_UNUSED static void normn_pick_f64(double *y, const double *x, const double *mh, const double *ml,
                                     const double *sf, const double *bf, int64_t N, int64_t C, int64_t nb,
                                     double out_bytes) {
    PICK(normn_f64)(y, x, mh, ml, sf, bf, N, C, nb);
}

static void bwddxn_pick_f32(float *dx, const float *dy, const float *x, const float *mean, const float *rstd,
                            const float *cf, const float *sdyf, const float *sdyxf, const double *mu,
                            const double *r, const double *coef, const double *sdy, const double *sdyx,
                            int64_t N, int64_t rows, int64_t C, int64_t nb, double out_bytes) {
#if BN_X86
    if (batchnorm_path() == DP_PATH_AVX2 && bn_stream(out_bytes)) {
        bwddxn_f32_nt(dx, dy, x, mean, rstd, cf, sdyf, sdyxf, mu, r, coef, sdy, sdyx, N, rows, C, nb);
        return;
    }
#endif
    PICK(bwddxn_f32)(dx, dy, x, mean, rstd, cf, sdyf, sdyxf, mu, r, coef, sdy, sdyx, N, rows, C, nb);
}

/* s1, s2 += the shifted sums of rows [0, N) of one column block, in row order; x has navail >= N rows
 * from here, of Ntot in all (the prefetch's reach and switch) */
static void shstats_pick_f32(double *s1, double *s2, const double *K, const float *x, int64_t N, int64_t C,
                             int64_t nb, int64_t navail, int64_t Ntot) {
#if BN_X86
    if (batchnorm_path() == DP_PATH_AVX2) {
        shstats_f32_x4(s1, s2, K, x, N, C, nb, bn_stream((double)Ntot * (double)C * sizeof(float)) ? BN_PREFETCH_ROWS : 0,
                       navail);
        return;
    }
#endif
    PICK(shstats_f32)(s1, s2, K, x, N, C, nb);
}

BN_UNUSED static void shstats_pick_f64(double *s1, double *s2, const double *K, const double *x, int64_t N,
                                       int64_t C, int64_t nb, int64_t navail, int64_t Ntot) {
    PICK(shstats_f64)(s1, s2, K, x, N, C, nb);
}

static void bwdsumsf_pick_f32(double *sdy, double *sdyd, const float *dy, const float *x, const double *mu,
                              int64_t N, int64_t C, int64_t nb) {
#if BN_X86
    if (batchnorm_path() == DP_PATH_AVX2) {
        bwdsumsf_f32_x4(sdy, sdyd, dy, x, mu, N, C, nb);
        return;
    }
#endif
    PICK(bwdsumsf_f32)(sdy, sdyd, dy, x, mu, N, C, nb);
}

BN_UNUSED static void bwdsumsf_pick_f64(double *sdy, double *sdyd, const double *dy, const double *x,
                                        const double *mu, int64_t N, int64_t C, int64_t nb) {
    PICK(bwdsumsf_f64)(sdy, sdyd, dy, x, mu, N, C, nb);
}

BN_UNUSED static void bwddxn_pick_f64(double *dx, const double *dy, const double *x, const double *mean,
                                      const double *rstd, const double *cf, const double *sdyf,
                                      const double *sdyxf, const double *mu, const double *r,
                                      const double *coef, const double *sdy, const double *sdyx, int64_t N,
                                      int64_t rows, int64_t C, int64_t nb, double out_bytes) {
    PICK(bwddxn_f64)(dx, dy, x, mean, rstd, cf, sdyf, sdyxf, mu, r, coef, sdy, sdyx, N, rows, C, nb);
}

/* ---- the family --------------------------------------------------------------------------------- */

#define BN_FLOAT_DX_MIN_N 16   /* the float32 backward computes dx in float from this batch size on */

/* float32 path: may column k's forward outputs be computed in float from mu, var, sc = rstd * gamma,
 * beta? Yes when they are NaN anyway (a NaN mean or scale makes every output of the column NaN on both
 * paths), or when every float intermediate stays well inside float's normal range: the mean (its hi
 * part) finite, the standard deviation 0 or in [2^-100, 2^100] (the hi/lo centring is then exact to
 * far below its ulp), |x - mean| * |sc| <= sqrt(N) * 2^100, beta finite. */
static int fwd_float_ok(double mu, double var, double sc, double beta) {
    if (isnan(mu) || isnan(sc)) return 1;
    const double big = 0x1p100;
    return fabs(mu) <= 0x1p120 && (var == 0.0 || (var >= 0x1p-200 && var <= 0x1p200)) &&
           fabs(sc) <= 0x1p120 && var * sc * sc <= big * big && fabs(beta) <= 0x1p120;
}

/* float32 path: may a column block's dx be computed in float? From N = BN_FLOAT_DX_MIN_N rows on (for
 * fewer, dx is a difference of near-equal terms, N = 2 above all: double keeps it to the reference's
 * accuracy), when no column's coef = gamma * rstd / N exceeds 2^64 in magnitude (so a product that
 * underflowed is never scaled up to matter) or is NaN (the column is NaN on both paths). Overflow and
 * NaN/Inf inputs are caught per row by bwddxn (recomputed in double). */
static int bwd_float_ok(double coef, int64_t N) {
    return N >= BN_FLOAT_DX_MIN_N && (isnan(coef) || fabs(coef) <= 0x1p64);
}

#define DEFINE_BATCHNORM(T, SFX, NATIVE)                                                             \
static void bn_shift_##SFX(double *K, const T *x, int64_t nb);                                       \
static void block_sums_##SFX(double *s1, double *s2, const T *dy, const T *x, const double *c,        \
                             int64_t r0, int64_t N, int64_t C, int64_t nb);                          \
static void blocks_sums_##SFX(double *s1, double *s2, const T *dy, const T *x, const double *c,       \
                              int64_t N, int64_t C, int64_t nb);                                     \
static void fwd_finish_##SFX(double *mu, double *m2, const double *K, double *sc, double *b, T *mh,   \
                             T *ml, T *sf, T *bf, unsigned char *ok, T *mean, T *rstd,               \
                             T *running_mean, T *running_var, const T *gamma, const T *beta,         \
                             int64_t N, int64_t nb, double momentum, double eps);                    \
static void bwd_init_##SFX(double *sdy, double *sdyx, double *mu, double *r, double *coef,           \
                           const T *mean, const T *rstd, const T *gamma, int64_t N, int64_t nb);     \
static void bwd_finish_##SFX(double *sdy, double *sdyx, const double *r, const double *coef, T *cf,   \
                             T *sdyf, T *sdyxf, unsigned char *ok, T *dgamma, T *dbeta, int64_t N,   \
                             int64_t nb);                                                            \
static void fwd_block_##SFX(double *mu, double *sc, double *b, T *mh, T *ml, T *sf, T *bf,           \
                            unsigned char *ok, T *mean, T *rstd, T *running_mean, T *running_var,    \
                            const T *x, const T *gamma, const T *beta, int64_t N, int64_t C,         \
                            int64_t nb, double momentum, double eps) {                               \
    /* the statistics of one column block (x, gamma, ... at its first column; nb <= MAXW columns):   \
     * mean, rstd, the running statistics and y's mu, sc = rstd * gamma, b = beta in double (and,    \
     * NATIVE, their float split mh + ml, sf, bf and whether the column may take the float path) */  \
    double m2[MAXW];                                                                                 \
    for (int64_t k = 0; k < nb; k++) { mu[k] = 0.0; m2[k] = 0.0; }                                   \
    if (NATIVE) {   /* one pass, shifted by each column's first value (0 if not finite) */           \
        double K[MAXW];                                                                              \
        bn_shift_##SFX(K, x, nb);                                                                    \
        blocks_sums_##SFX(mu, m2, NULL, x, K, N, C, nb);                                             \
        fwd_finish_##SFX(mu, m2, K, sc, b, mh, ml, sf, bf, ok, mean, rstd, running_mean, running_var,  \
                         gamma, beta, N, nb, momentum, eps);                                         \
    } else {        /* two passes: the mean, then the squared deviations from it */                  \
        PICK(colsum_##SFX)(mu, x, N, C, nb);                                                         \
        for (int64_t k = 0; k < nb; k++) mu[k] /= (double)N;                                         \
        PICK(colssd_##SFX)(m2, mu, x, N, C, nb);                                                     \
        fwd_finish_##SFX(mu, m2, NULL, sc, b, mh, ml, sf, bf, ok, mean, rstd, running_mean, running_var, \
                         gamma, beta, N, nb, momentum, eps);                                         \
    }                                                                                                \
}                                                                                                    \
                                                                                                     \
static void bn_shift_##SFX(double *K, const T *x, int64_t nb) {                                      \
    /* the float path's shift: each column's first value, 0 if it is not finite */                   \
    for (int64_t k = 0; k < nb; k++) K[k] = isfinite((double)x[k]) ? (double)x[k] : 0.0;             \
}                                                                                                    \
                                                                                                     \
static void block_sums_##SFX(double *s1, double *s2, const T *dy, const T *x, const double *c,        \
                             int64_t r0, int64_t N, int64_t C, int64_t nb) {                         \
    /* the float path's two sums of row block [r0, r0 + BN_STAT_ROWS) of one column block (x, dy at  \
     * its first column, row 0), from zero in row order: the forward's shifted statistics (dy NULL,  \
     * c the shift K: sum x - K, sum (x - K)^2), else the backward's (c the mean: sum dy,            \
     * sum dy (x - mean)) */                                                                         \
    const int64_t rows = N - r0 < BN_STAT_ROWS ? N - r0 : BN_STAT_ROWS;                              \
    for (int64_t k = 0; k < nb; k++) { s1[k] = 0.0; s2[k] = 0.0; }                                   \
    if (dy == NULL) shstats_pick_##SFX(s1, s2, c, x + r0 * C, rows, C, nb, N - r0, N);               \
    else bwdsumsf_pick_##SFX(s1, s2, dy + r0 * C, x + r0 * C, c, rows, C, nb);                       \
}                                                                                                    \
                                                                                                     \
static void blocks_sums_##SFX(double *s1, double *s2, const T *dy, const T *x, const double *c,       \
                              int64_t N, int64_t C, int64_t nb) {                                    \
    /* s1, s2 += every row block's sums (block_sums), added in block order: the one order of the     \
     * float path's sums, for any thread count (row_block_sums adds the claimed blocks' alike) */    \
    double t1[MAXW], t2[MAXW];                                                                       \
    for (int64_t r0 = 0; r0 < N; r0 += BN_STAT_ROWS) {                                               \
        block_sums_##SFX(t1, t2, dy, x, c, r0, N, C, nb);                                            \
        for (int64_t k = 0; k < nb; k++) { s1[k] += t1[k]; s2[k] += t2[k]; }                         \
    }                                                                                                \
}                                                                                                    \
                                                                                                     \
static void fwd_finish_##SFX(double *mu, double *m2, const double *K, double *sc, double *b, T *mh,   \
                             T *ml, T *sf, T *bf, unsigned char *ok, T *mean, T *rstd,               \
                             T *running_mean, T *running_var, const T *gamma, const T *beta,         \
                             int64_t N, int64_t nb, double momentum, double eps) {                   \
    /* one column block's parameters from its sums: K given (the float path), mu and m2 hold the     \
     * shifted sums of x - K and (x - K)^2; else the mean and the sum of squared deviations */       \
    const double unbiased = (double)N / (double)(N - 1);                                             \
    if (K != NULL)                                                                                   \
        for (int64_t k = 0; k < nb; k++) {                                                           \
            const double s1 = mu[k], d = s1 / (double)N;                                             \
            double var = (m2[k] - s1 * d) / (double)N;                                               \
            if (var < 0.0) var = 0.0;   /* rounding; NaN stays NaN */                                \
            mu[k] = K[k] + d;                                                                        \
            m2[k] = var;                                                                             \
        }                                                                                            \
    for (int64_t k = 0; k < nb; k++) {                                                               \
        const double var = K != NULL ? m2[k] : m2[k] / (double)N;   /* K: m2 holds var already */    \
        const double r = 1.0 / sqrt(var + eps);                                                      \
        sc[k] = r * (double)gamma[k];                                                                \
        b[k] = (double)beta[k];                                                                      \
        mean[k] = (T)mu[k];                                                                          \
        rstd[k] = (T)r;                                                                              \
        running_mean[k] = (T)bn_momentum_update((double)running_mean[k], mu[k], momentum);           \
        running_var[k] = (T)bn_momentum_update((double)running_var[k], var * unbiased, momentum);    \
        if (NATIVE) {                                                                                \
            mh[k] = (T)mu[k];                                                                        \
            ml[k] = (T)(mu[k] - (double)mh[k]);                                                      \
            sf[k] = (T)sc[k];                                                                        \
            bf[k] = beta[k];                                                                         \
            ok[k] = (unsigned char)fwd_float_ok(mu[k], var, sc[k], b[k]);                            \
        }                                                                                            \
    }                                                                                                \
}                                                                                                    \
                                                                                                     \
static int all_ok_##SFX(const unsigned char *ok, int64_t nb) {                                      \
    int all = 1;                                                                                     \
    for (int64_t k = 0; k < nb; k++) all &= ok[k];                                                   \
    return all;                                                                                      \
}                                                                                                    \
                                                                                                     \
static void fwd_out_##SFX(T *y, const T *x, const double *mu, const double *sc, const double *b,     \
                          const T *mh, const T *ml, const T *sf, const T *bf, const unsigned char *ok, \
                          int64_t N, int64_t C, int64_t nb, double out_bytes) {                      \
    /* y for rows [0, N) of one column block: in float when NATIVE and every column of the block may \
     * (fwd_float_ok), else in double */                                                             \
    if (NATIVE && all_ok_##SFX(ok, nb)) normn_pick_##SFX(y, x, mh, ml, sf, bf, N, C, nb, out_bytes);  \
    else PICK(normalise_##SFX)(y, x, mu, sc, b, N, C, nb);                                           \
}                                                                                                    \
                                                                                                     \
static void bwd_block_##SFX(double *sdy, double *sdyx, double *mu, double *r, double *coef,          \
                            T *cf, T *sdyf, T *sdyxf, unsigned char *ok,                             \
                            T *dgamma, T *dbeta, const T *dy, const T *x, const T *gamma,            \
                            const T *mean, const T *rstd, int64_t N, int64_t C, int64_t nb) {        \
    /* the sums of one column block (pointers at its first column, nb <= MAXW columns), dgamma and   \
     * dbeta, and dx's per-column mu, r, coef = gamma * r / N in double (NATIVE: and in float, and   \
     * whether the column may take the float path) */                                                \
    bwd_init_##SFX(sdy, sdyx, mu, r, coef, mean, rstd, gamma, N, nb);                                \
    if (NATIVE) {   /* sum dy (x - mean) in row blocks, as the statistics */                         \
        blocks_sums_##SFX(sdy, sdyx, dy, x, mu, N, C, nb);                                           \
    } else {                                                                                         \
        PICK(bwdsums_##SFX)(sdy, sdyx, dy, x, mu, r, N, C, nb);                                      \
    }                                                                                                \
    bwd_finish_##SFX(sdy, sdyx, r, coef, cf, sdyf, sdyxf, ok, dgamma, dbeta, N, nb);                 \
}                                                                                                    \
                                                                                                     \
static void bwd_init_##SFX(double *sdy, double *sdyx, double *mu, double *r, double *coef,           \
                           const T *mean, const T *rstd, const T *gamma, int64_t N, int64_t nb) {    \
    for (int64_t k = 0; k < nb; k++) {                                                               \
        sdy[k] = 0.0; sdyx[k] = 0.0;                                                                 \
        mu[k] = (double)mean[k];                                                                     \
        r[k] = (double)rstd[k];                                                                      \
        coef[k] = (double)gamma[k] * r[k] / (double)N;                                               \
    }                                                                                                \
}                                                                                                    \
                                                                                                     \
static void bwd_finish_##SFX(double *sdy, double *sdyx, const double *r, const double *coef, T *cf,   \
                             T *sdyf, T *sdyxf, unsigned char *ok, T *dgamma, T *dbeta, int64_t N,   \
                             int64_t nb) {                                                           \
    /* one column block's dgamma, dbeta and dx parameters from its sums (NATIVE: sum dy (x - mean),  \
     * times rstd here, once) */                                                                     \
    if (NATIVE)                                                                                      \
        for (int64_t k = 0; k < nb; k++) sdyx[k] *= r[k];                                            \
    for (int64_t k = 0; k < nb; k++) {                                                               \
        dgamma[k] = (T)sdyx[k];                                                                      \
        dbeta[k] = (T)sdy[k];                                                                        \
        if (NATIVE) {                                                                                \
            cf[k] = (T)coef[k];                                                                      \
            sdyf[k] = (T)sdy[k];                                                                     \
            sdyxf[k] = (T)sdyx[k];                                                                   \
            ok[k] = (unsigned char)bwd_float_ok(coef[k], N);                                         \
        }                                                                                            \
    }                                                                                                \
}                                                                                                    \
                                                                                                     \
static void bwd_out_##SFX(T *dx, const T *dy, const T *x, const T *mean, const T *rstd,              \
                          const double *mu, const double *r, const double *coef, const double *sdy,  \
                          const double *sdyx, const T *cf, const T *sdyf, const T *sdyxf,            \
                          const unsigned char *ok, int64_t Nb, int64_t rows, int64_t C, int64_t nb) { \
    /* dx for `rows` rows of one column block (batch size Nb): in float when NATIVE and every column \
     * of the block may (bwd_float_ok), else in double */                                            \
    if (NATIVE && all_ok_##SFX(ok, nb))                                                              \
        bwddxn_pick_##SFX(dx, dy, x, mean, rstd, cf, sdyf, sdyxf, mu, r, coef, sdy, sdyx, Nb, rows, C, nb, \
                          (double)Nb * (double)C * sizeof(T));                                       \
    else PICK(bwddx_##SFX)(dx, dy, x, mu, r, coef, sdy, sdyx, (double)Nb, rows, C, nb);              \
}                                                                                                    \
                                                                                                     \
typedef struct {                                                                                     \
    T *y, *mean, *rstd, *running_mean, *running_var, *dx, *dgamma, *dbeta;                           \
    const T *x, *dy, *gamma, *beta, *smean, *srstd;                                                  \
    double *mu, *sc, *b, *sdy, *sdyx, *r, *coef;                                                     \
    T *p0, *p1, *p2, *p3;          /* float path: mh, ml, sf, bf (forward); cf, sdyf, sdyxf (backward) */ \
    unsigned char *ok;                                                                               \
    int64_t N, C, j0, nb;                                                                            \
    double momentum, eps;                                                                            \
    double *part, *K;              /* float path, forward: the row blocks' sums; the shift */          \
    atomic_llong *next;            /* the next row block to claim */                                 \
} ctx_##SFX;                                                                                         \
                                                                                                     \
static void fwd_stats_##SFX(void *p, int t, int nt) {   /* thread t's columns: statistics */         \
    const ctx_##SFX *c = p;                                                                          \
    int64_t c0, c1, r0, r1;                                                                          \
    bn_share(t, nt, c->N, c->C, &c0, &c1, &r0, &r1);                                                 \
    for (int64_t j0 = c0; j0 < c1; j0 += MAXW) {                                                     \
        const int64_t nb = c1 - j0 < MAXW ? c1 - j0 : MAXW;                                          \
        fwd_block_##SFX(c->mu + j0, c->sc + j0, c->b + j0, c->p0 + j0, c->p1 + j0, c->p2 + j0,       \
                        c->p3 + j0, c->ok + j0, c->mean + j0, c->rstd + j0, c->running_mean + j0,    \
                        c->running_var + j0, c->x + j0, c->gamma + j0, c->beta + j0, c->N, c->C, nb, \
                        c->momentum, c->eps);                                                        \
    }                                                                                                \
}                                                                                                    \
                                                                                                     \
static void row_parts_##SFX(void *p, int t, int nt) {   /* claimed row blocks: their two sums */   \
    /* the forward's shifted statistics (sum x - K, sum (x - K)^2), or with dy given the backward's   \
     * (sum dy, sum dy (x - mean)), of each claimed block of BN_STAT_ROWS rows, over whole rows */     \
    const ctx_##SFX *c = p;                                                                          \
    const int64_t N = c->N, C = c->C, nblk = (N + BN_STAT_ROWS - 1) / BN_STAT_ROWS;                  \
    const double *shift_or_mean = c->dy != NULL ? c->mu : c->K;                                      \
    for (int64_t blk; (blk = atomic_fetch_add(c->next, 1)) < nblk;) {                                \
        double *s1 = c->part + 2 * blk * C, *s2 = s1 + C;                                            \
        for (int64_t j0 = 0; j0 < C; j0 += MAXW) {                                                   \
            const int64_t nb = C - j0 < MAXW ? C - j0 : MAXW;                                        \
            block_sums_##SFX(s1 + j0, s2 + j0, c->dy != NULL ? c->dy + j0 : NULL, c->x + j0,         \
                             shift_or_mean + j0, blk * BN_STAT_ROWS, N, C, nb);                      \
        }                                                                                            \
    }                                                                                                \
}                                                                                                    \
                                                                                                     \
static int row_block_sums_##SFX(ctx_##SFX *c, int nt, double *s1, double *s2) {                      \
    /* s1, s2 (C,) += the row blocks' sums (row_parts, on nt threads), added in block order on this  \
     * thread: the order fwd_block and bwd_block sum in. 0 (nothing done) without memory */          \
    const int64_t C = c->C, nblk = (c->N + BN_STAT_ROWS - 1) / BN_STAT_ROWS;                         \
    double *part = malloc(sizeof(double) * (size_t)C * (size_t)(2 * nblk));                          \
    if (part == NULL) return 0;                                                                      \
    atomic_llong next = 0;                                                                           \
    c->part = part;                                                                                  \
    c->next = &next;                                                                                 \
    bn_run(row_parts_##SFX, c, nt);                                                                  \
    for (int64_t blk = 0; blk < nblk; blk++)                                                         \
        for (int64_t k = 0; k < C; k++) {                                                            \
            s1[k] += part[2 * blk * C + k];                                                          \
            s2[k] += part[(2 * blk + 1) * C + k];                                                    \
        }                                                                                            \
    free(part);                                                                                      \
    return 1;                                                                                        \
}                                                                                                    \
                                                                                                     \
static int fwd_blocked_##SFX(ctx_##SFX *c, int nt) {                                                 \
    /* the float path's statistics on nt threads, by row blocks; 0 (nothing done) without memory */  \
    const int64_t C = c->C;                                                                          \
    double *buf = malloc(sizeof(double) * (size_t)(2 * C));   /* the shift K, the squares' sums */  \
    if (buf == NULL) return 0;                                                                       \
    double *m2 = buf + C;                                                                            \
    c->K = buf;                                                                                      \
    bn_shift_##SFX(c->K, c->x, C);                                                                   \
    for (int64_t k = 0; k < C; k++) { c->mu[k] = 0.0; m2[k] = 0.0; }                                 \
    const int done = row_block_sums_##SFX(c, nt, c->mu, m2);                                         \
    if (done)                                                                                        \
        fwd_finish_##SFX(c->mu, m2, c->K, c->sc, c->b, c->p0, c->p1, c->p2, c->p3, c->ok, c->mean,    \
                         c->rstd, c->running_mean, c->running_var, c->gamma, c->beta, c->N, C,       \
                         c->momentum, c->eps);                                                       \
    free(buf);                                                                                       \
    return done;                                                                                     \
}                                                                                                    \
                                                                                                     \
static int bwd_blocked_##SFX(ctx_##SFX *c, int nt) {                                                 \
    /* the float path's backward sums on nt threads, by row blocks; 0 (nothing done) without memory */ \
    bwd_init_##SFX(c->sdy, c->sdyx, c->mu, c->r, c->coef, c->smean, c->srstd, c->gamma, c->N, c->C);  \
    if (!row_block_sums_##SFX(c, nt, c->sdy, c->sdyx)) return 0;                                     \
    bwd_finish_##SFX(c->sdy, c->sdyx, c->r, c->coef, c->p0, c->p1, c->p2, c->ok, c->dgamma, c->dbeta, \
                     c->N, c->C);                                                                    \
    return 1;                                                                                        \
}                                                                                                    \
                                                                                                     \
static void fwd_rows_##SFX(void *p, int t, int nt) {   /* thread t's rows: y */                      \
    const ctx_##SFX *c = p;                                                                          \
    const int64_t C = c->C;                                                                          \
    int64_t c0, c1, r0, r1;                                                                          \
    bn_share(t, nt, c->N, C, &c0, &c1, &r0, &r1);                                                    \
    for (int64_t j0 = 0; j0 < C; j0 += MAXW) {   /* the single thread's column blocks */             \
        const int64_t nb = C - j0 < MAXW ? C - j0 : MAXW, o = r0 * C + j0;                           \
        fwd_out_##SFX(c->y + o, c->x + o, c->mu + j0, c->sc + j0, c->b + j0, c->p0 + j0, c->p1 + j0, \
                      c->p2 + j0, c->p3 + j0, c->ok + j0, r1 - r0, C, nb,                            \
                      (double)c->N * (double)C * sizeof(T));                                         \
    }                                                                                                \
}                                                                                                    \
                                                                                                     \
static void inf_rows_##SFX(void *p, int t, int nt) {   /* thread t's rows: inference y, one block */ \
    const ctx_##SFX *c = p;                                                                          \
    const int64_t C = c->C;                                                                          \
    int64_t c0, c1, r0, r1;                                                                          \
    bn_share(t, nt, c->N, C, &c0, &c1, &r0, &r1);                                                    \
    PICK(normalise_##SFX)(c->y + r0 * C + c->j0, c->x + r0 * C + c->j0, c->mu, c->sc, c->b, r1 - r0, \
                          C, c->nb);                                                                 \
}                                                                                                    \
                                                                                                     \
static void bwd_sums_##SFX(void *p, int t, int nt) {   /* thread t's columns: sums, dgamma, dbeta */ \
    const ctx_##SFX *c = p;                                                                          \
    int64_t c0, c1, r0, r1;                                                                          \
    bn_share(t, nt, c->N, c->C, &c0, &c1, &r0, &r1);                                                 \
    for (int64_t j0 = c0; j0 < c1; j0 += MAXW) {                                                     \
        const int64_t nb = c1 - j0 < MAXW ? c1 - j0 : MAXW;                                          \
        bwd_block_##SFX(c->sdy + j0, c->sdyx + j0, c->mu + j0, c->r + j0, c->coef + j0, c->p0 + j0,  \
                        c->p1 + j0, c->p2 + j0, c->ok + j0, c->dgamma + j0, c->dbeta + j0,           \
                        c->dy + j0, c->x + j0, c->gamma + j0, c->smean + j0, c->srstd + j0, c->N,    \
                        c->C, nb);                                                                   \
    }                                                                                                \
}                                                                                                    \
                                                                                                     \
static void bwd_rows_##SFX(void *p, int t, int nt) {   /* thread t's rows: dx */                     \
    const ctx_##SFX *c = p;                                                                          \
    const int64_t C = c->C;                                                                          \
    int64_t c0, c1, r0, r1;                                                                          \
    bn_share(t, nt, c->N, C, &c0, &c1, &r0, &r1);                                                    \
    for (int64_t j0 = 0; j0 < C; j0 += MAXW) {                                                       \
        const int64_t nb = C - j0 < MAXW ? C - j0 : MAXW, o = r0 * C + j0;                           \
        bwd_out_##SFX(c->dx + o, c->dy + o, c->x + o, c->smean + j0, c->srstd + j0, c->mu + j0,      \
                      c->r + j0, c->coef + j0, c->sdy + j0, c->sdyx + j0, c->p0 + j0, c->p1 + j0,    \
                      c->p2 + j0, c->ok + j0, c->N, r1 - r0, C, nb);                                 \
    }                                                                                                \
}                                                                                                    \
                                                                                                     \
void batchnorm_forward_##SFX(T *y, T *mean, T *rstd, T *running_mean, T *running_var,                \
                             const T *x, const T *gamma, const T *beta,                              \
                             int64_t N, int64_t C, double momentum, double eps) {                    \
    /* y, x: (N, C), N >= 2 (checked in Python); mean, rstd, running_mean, running_var,              \
     * gamma, beta: (C,) */                                                                          \
    const int nt = bn_team_size(N, C);                                                               \
    const size_t per = 3 * sizeof(double) + 4 * sizeof(T) + 1;   /* bytes of parameters per column */ \
    char *par = nt > 1 ? malloc(per * (size_t)C) : NULL;                                             \
    if (par == NULL) {   /* one thread: column block by column block, statistics then y */           \
        for (int64_t j0 = 0; j0 < C; j0 += MAXW) {                                                   \
            const int64_t nb = C - j0 < MAXW ? C - j0 : MAXW;                                        \
            double mu[MAXW], sc[MAXW], b[MAXW];                                                      \
            T mh[MAXW], ml[MAXW], sf[MAXW], bf[MAXW];                                                \
            unsigned char ok[MAXW];                                                                  \
            fwd_block_##SFX(mu, sc, b, mh, ml, sf, bf, ok, mean + j0, rstd + j0, running_mean + j0,  \
                            running_var + j0, x + j0, gamma + j0, beta + j0, N, C, nb, momentum, eps); \
            fwd_out_##SFX(y + j0, x + j0, mu, sc, b, mh, ml, sf, bf, ok, N, C, nb,                   \
                          (double)N * (double)C * sizeof(T));                                        \
        }                                                                                            \
        return;                                                                                      \
    }                                                                                                \
    double *dp = (double *)par;                                                                      \
    T *tp = (T *)(dp + 3 * C);                                                                       \
    ctx_##SFX c = {.y = y, .mean = mean, .rstd = rstd, .running_mean = running_mean,                 \
                   .running_var = running_var, .x = x, .gamma = gamma, .beta = beta, .mu = dp,       \
                   .sc = dp + C, .b = dp + 2 * C, .p0 = tp, .p1 = tp + C, .p2 = tp + 2 * C,          \
                   .p3 = tp + 3 * C, .ok = (unsigned char *)(tp + 4 * C), .N = N, .C = C,            \
                   .momentum = momentum, .eps = eps};                                                \
    /* the float path's statistics by claimed row blocks (their sums in full rows), else (float64, or \
     * no memory for the blocks' sums) by columns: the same bits */                                  \
    if (!(NATIVE && fwd_blocked_##SFX(&c, nt))) bn_run(fwd_stats_##SFX, &c, nt);                     \
    bn_run(fwd_rows_##SFX, &c, nt);                                                                  \
    free(par);                                                                                       \
}                                                                                                    \
                                                                                                     \
void batchnorm_inference_##SFX(T *y, const T *x, const T *gamma, const T *beta,                      \
                               const T *running_mean, const T *running_var,                          \
                               int64_t N, int64_t C, double eps) {                                   \
    /* y, x: (N, C); gamma, beta, running_mean, running_var: (C,); one pass in row order, in double  \
     * (threads: each its rows) */                                                                   \
    const int nt = bn_team_size(N, C);                                                               \
    for (int64_t j0 = 0; j0 < C; j0 += MAXW) {                                                       \
        const int64_t nb = C - j0 < MAXW ? C - j0 : MAXW;                                            \
        double mu[MAXW], sc[MAXW], b[MAXW];                                                          \
        for (int64_t k = 0; k < nb; k++) {                                                           \
            mu[k] = (double)running_mean[j0 + k];                                                    \
            sc[k] = 1.0 / sqrt((double)running_var[j0 + k] + eps) * (double)gamma[j0 + k];           \
            b[k] = (double)beta[j0 + k];                                                             \
        }                                                                                            \
        if (nt > 1) {                                                                                \
            ctx_##SFX c = {.y = y, .x = x, .mu = mu, .sc = sc, .b = b, .N = N, .C = C, .j0 = j0, .nb = nb}; \
            bn_run(inf_rows_##SFX, &c, nt);                                                          \
        } else {                                                                                     \
            PICK(normalise_##SFX)(y + j0, x + j0, mu, sc, b, N, C, nb);                              \
        }                                                                                            \
    }                                                                                                \
}                                                                                                    \
                                                                                                     \
void batchnorm_backward_##SFX(T *dx, T *dgamma, T *dbeta, const T *dy, const T *x,                   \
                              const T *gamma, const T *mean, const T *rstd, int64_t N, int64_t C) {  \
    /* dx, dy, x: (N, C), N >= 1; dgamma, dbeta, gamma, mean, rstd: (C,) */                          \
    const int nt = bn_team_size(N, C);                                                               \
    const size_t per = 5 * sizeof(double) + 3 * sizeof(T) + 1;   /* bytes of parameters per column */ \
    char *par = nt > 1 ? malloc(per * (size_t)C) : NULL;                                             \
    if (par == NULL) {   /* one thread: column block by column block, sums then dx */                \
        for (int64_t j0 = 0; j0 < C; j0 += MAXW) {                                                   \
            const int64_t nb = C - j0 < MAXW ? C - j0 : MAXW;                                        \
            double sdy[MAXW], sdyx[MAXW], mu[MAXW], r[MAXW], coef[MAXW];                             \
            T cf[MAXW], sdyf[MAXW], sdyxf[MAXW];                                                     \
            unsigned char ok[MAXW];                                                                  \
            bwd_block_##SFX(sdy, sdyx, mu, r, coef, cf, sdyf, sdyxf, ok, dgamma + j0, dbeta + j0,    \
                            dy + j0, x + j0, gamma + j0, mean + j0, rstd + j0, N, C, nb);            \
            bwd_out_##SFX(dx + j0, dy + j0, x + j0, mean + j0, rstd + j0, mu, r, coef, sdy, sdyx, cf, \
                          sdyf, sdyxf, ok, N, N, C, nb);                                             \
        }                                                                                            \
        return;                                                                                      \
    }                                                                                                \
    double *dp = (double *)par;                                                                      \
    T *tp = (T *)(dp + 5 * C);                                                                       \
    ctx_##SFX c = {.dx = dx, .dgamma = dgamma, .dbeta = dbeta, .dy = dy, .x = x, .gamma = gamma,     \
                   .smean = mean, .srstd = rstd, .sdy = dp, .sdyx = dp + C, .mu = dp + 2 * C,        \
                   .r = dp + 3 * C, .coef = dp + 4 * C, .p0 = tp, .p1 = tp + C, .p2 = tp + 2 * C,    \
                   .ok = (unsigned char *)(tp + 3 * C), .N = N, .C = C};                             \
    if (!(NATIVE && bwd_blocked_##SFX(&c, nt))) bn_run(bwd_sums_##SFX, &c, nt);                      \
    bn_run(bwd_rows_##SFX, &c, nt);                                                                  \
    free(par);                                                                                       \
}

DEFINE_BATCHNORM(float, f32, 1)
DEFINE_BATCHNORM(double, f64, 0)
