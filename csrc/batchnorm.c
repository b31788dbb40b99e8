/* batchnorm.c -- batch normalisation, statistics per column of x (N, C) (kernels/batchnorm.py).
 *
 * Statistics are stable two-pass ones (mean first, then the sum of squared deviations), accumulated
 * in double; never E[x^2] - E[x]^2. Outputs are computed in double from the double statistics and
 * rounded once. Within a column the summation order is sequential over rows, like the Numba backend
 * (the two agree bit for bit).
 *
 * Memory traffic bounds these kernels at sizes beyond the caches: the forward reads x three times
 * (mean, variance, normalise) and writes y, the backward reads x and dy twice (the two sums, then dx)
 * and writes dx. The rows are swept in order, whole: each row a contiguous run of up to MAXW columns
 * (wider batches are cut into column blocks of MAXW) added into per-column double accumulators (on
 * the stack, L1 resident), four rows per sweep of the accumulators ((((acc + x0) + x1) + x2) + x3):
 * the same sequential order, a quarter of the accumulator loads and stores. The output passes take two
 * rows per sweep of their per-column values. Every pass runs from the first row down: sweeping
 * bottom-up, to start on the rows the previous pass left in the cache, measured 5-25% slower
 * (descending streams prefetch worse than the cache saves). The output passes use per-column
 * coefficients prepared in double: y = (x - mean) * (rstd * gamma) + beta, and
 * dx = coef * ((N dy - sum dy) - xhat * sum(dy xhat)), coef = gamma * rstd / N (dx in the reference's
 * order: for small N it is a difference of near-equal terms, and any reordering shows).
 * In the cache (1024 x 1024 float32) the loops are bound by the core, not by memory: they ran as fast
 * on 64 L1-resident rows as on 1024 L3-resident ones (~4 cycles per element for forward + backward,
 * mostly the nine float <-> double conversions per element; 4-wide intrinsics or vector-extension
 * loops were no faster overall).
 * Column strips (all N rows of 32..256 columns, so x is read from memory once per call and the later
 * passes run from the cache) measured slower on the Zen 3 VM this was tuned on, with and without
 * huge pages, prefetching 8-16 rows ahead: plain strips 1.4-4x slower (1024 x 1024 and 16384 x 1024;
 * a strip's rows are short runs 4 KiB apart: every row a new page and the same cache sets), strips
 * packed into a contiguous buffer 1.2-4x slower (in double: the buffer traffic costs more than the
 * conversions it saves; in float: the strided first pass alone costs more than two full sweeps).
 * The inner loops run over columns, elementwise, so the compiler vectorises them; each body is
 * compiled twice, for AVX2 (__attribute__((target)), chosen at run time when the CPU runs it) and for
 * the baseline ISA. No FMA contraction (-std=c11): the two give the same bits, and so does the Numba
 * backend, which runs the same loops in the same order. batchnorm_isa() says which path runs;
 * DEEPPROP_BATCHNORM_ISA=portable|avx2 forces one. Large calls run on several threads (see "threads"):
 * the statistics passes split by columns, the output passes by rows, the same bits for any count.
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
    for (; i + 4 <= N; i += 4) {   /* four rows per sweep of the accumulators, in row order */       \
        const T *restrict x0 = x + i * C, *restrict x1 = x0 + C, *restrict x2 = x1 + C,              \
                *restrict x3 = x2 + C;                                                               \
        const T *restrict g0 = dy + i * C, *restrict g1 = g0 + C, *restrict g2 = g1 + C,             \
                *restrict g3 = g2 + C;                                                               \
        for (int64_t k = 0; k < nb; k++) {                                                           \
            const double m = mu[k], rk = r[k];                                                       \
            const double a0 = (double)g0[k], a1 = (double)g1[k], a2 = (double)g2[k], a3 = (double)g3[k]; \
            const double h0 = ((double)x0[k] - m) * rk, h1 = ((double)x1[k] - m) * rk;               \
            const double h2 = ((double)x2[k] - m) * rk, h3 = ((double)x3[k] - m) * rk;               \
            sdy[k] = (((sdy[k] + a0) + a1) + a2) + a3;                                               \
            sdyx[k] = (((sdyx[k] + a0 * h0) + a1 * h1) + a2 * h2) + a3 * h3;                         \
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
DEFINE_LOOPS(double, f64, portable, )

/* ---- the family --------------------------------------------------------------------------------- */

#define DEFINE_BATCHNORM(T, SFX)                                                                     \
static void fwd_block_##SFX(double *mu, double *sc, double *b, T *mean, T *rstd, T *running_mean,    \
                            T *running_var, const T *x, const T *gamma, const T *beta, int64_t N,    \
                            int64_t C, int64_t nb, double momentum, double eps) {                    \
    /* the statistics of one column block (x, gamma, ... at its first column; nb <= MAXW columns):   \
     * the two passes over x, then mean, rstd, the running statistics and y's mu, sc = rstd * gamma, \
     * b = beta in double */                                                                         \
    const double unbiased = (double)N / (double)(N - 1);                                             \
    double m2[MAXW];                                                                                 \
    for (int64_t k = 0; k < nb; k++) { mu[k] = 0.0; m2[k] = 0.0; }                                   \
    PICK(colsum_##SFX)(mu, x, N, C, nb);                                                             \
    for (int64_t k = 0; k < nb; k++) mu[k] /= (double)N;                                             \
    PICK(colssd_##SFX)(m2, mu, x, N, C, nb);                                                         \
    for (int64_t k = 0; k < nb; k++) {                                                               \
        const double var = m2[k] / (double)N;                                                        \
        const double r = 1.0 / sqrt(var + eps);                                                      \
        sc[k] = r * (double)gamma[k];                                                                \
        b[k] = (double)beta[k];                                                                      \
        mean[k] = (T)mu[k];                                                                          \
        rstd[k] = (T)r;                                                                              \
        running_mean[k] = (T)bn_momentum_update((double)running_mean[k], mu[k], momentum);           \
        running_var[k] = (T)bn_momentum_update((double)running_var[k], var * unbiased, momentum);    \
    }                                                                                                \
}                                                                                                    \
                                                                                                     \
static void bwd_block_##SFX(double *sdy, double *sdyx, double *mu, double *r, double *coef,          \
                            T *dgamma, T *dbeta, const T *dy, const T *x, const T *gamma,            \
                            const T *mean, const T *rstd, int64_t N, int64_t C, int64_t nb) {        \
    /* the sums of one column block (pointers at its first column, nb <= MAXW columns), dgamma and   \
     * dbeta, and dx's per-column mu, r, coef = gamma * r / N in double */                           \
    for (int64_t k = 0; k < nb; k++) {                                                               \
        sdy[k] = 0.0; sdyx[k] = 0.0;                                                                 \
        mu[k] = (double)mean[k];                                                                     \
        r[k] = (double)rstd[k];                                                                      \
        coef[k] = (double)gamma[k] * r[k] / (double)N;                                               \
    }                                                                                                \
    PICK(bwdsums_##SFX)(sdy, sdyx, dy, x, mu, r, N, C, nb);                                          \
    for (int64_t k = 0; k < nb; k++) {                                                               \
        dgamma[k] = (T)sdyx[k];                                                                      \
        dbeta[k] = (T)sdy[k];                                                                        \
    }                                                                                                \
}                                                                                                    \
                                                                                                     \
typedef struct {                                                                                     \
    T *y, *mean, *rstd, *running_mean, *running_var, *dx, *dgamma, *dbeta;                           \
    const T *x, *dy, *gamma, *beta, *smean, *srstd;                                                  \
    double *mu, *sc, *b, *sdy, *sdyx, *r, *coef;                                                     \
    int64_t N, C, j0, nb;                                                                            \
    double momentum, eps;                                                                            \
} ctx_##SFX;                                                                                         \
                                                                                                     \
static void fwd_stats_##SFX(void *p, int t, int nt) {   /* thread t's columns: statistics */         \
    const ctx_##SFX *c = p;                                                                          \
    int64_t c0, c1, r0, r1;                                                                          \
    bn_share(t, nt, c->N, c->C, &c0, &c1, &r0, &r1);                                                 \
    for (int64_t j0 = c0; j0 < c1; j0 += MAXW) {                                                     \
        const int64_t nb = c1 - j0 < MAXW ? c1 - j0 : MAXW;                                          \
        fwd_block_##SFX(c->mu + j0, c->sc + j0, c->b + j0, c->mean + j0, c->rstd + j0,               \
                        c->running_mean + j0, c->running_var + j0, c->x + j0, c->gamma + j0,         \
                        c->beta + j0, c->N, c->C, nb, c->momentum, c->eps);                          \
    }                                                                                                \
}                                                                                                    \
                                                                                                     \
static void fwd_rows_##SFX(void *p, int t, int nt) {   /* thread t's rows: y (columns j0 .. j0 + nb  \
                                                        * of the batch, or all of them: nb = 0) */   \
    const ctx_##SFX *c = p;                                                                          \
    const int64_t C = c->C, end = c->nb ? c->j0 + c->nb : C;                                         \
    int64_t c0, c1, r0, r1;                                                                          \
    bn_share(t, nt, c->N, C, &c0, &c1, &r0, &r1);                                                    \
    for (int64_t j0 = c->j0; j0 < end; j0 += MAXW) {                                                 \
        const int64_t nb = end - j0 < MAXW ? end - j0 : MAXW, o = j0 - c->j0;                        \
        PICK(normalise_##SFX)(c->y + r0 * C + j0, c->x + r0 * C + j0, c->mu + o, c->sc + o, c->b + o, \
                              r1 - r0, C, nb);                                                       \
    }                                                                                                \
}                                                                                                    \
                                                                                                     \
static void bwd_sums_##SFX(void *p, int t, int nt) {   /* thread t's columns: sums, dgamma, dbeta */ \
    const ctx_##SFX *c = p;                                                                          \
    int64_t c0, c1, r0, r1;                                                                          \
    bn_share(t, nt, c->N, c->C, &c0, &c1, &r0, &r1);                                                 \
    for (int64_t j0 = c0; j0 < c1; j0 += MAXW) {                                                     \
        const int64_t nb = c1 - j0 < MAXW ? c1 - j0 : MAXW;                                          \
        bwd_block_##SFX(c->sdy + j0, c->sdyx + j0, c->mu + j0, c->r + j0, c->coef + j0,              \
                        c->dgamma + j0, c->dbeta + j0, c->dy + j0, c->x + j0, c->gamma + j0,         \
                        c->smean + j0, c->srstd + j0, c->N, c->C, nb);                               \
    }                                                                                                \
}                                                                                                    \
                                                                                                     \
static void bwd_rows_##SFX(void *p, int t, int nt) {   /* thread t's rows: dx */                     \
    const ctx_##SFX *c = p;                                                                          \
    const int64_t C = c->C;                                                                          \
    int64_t c0, c1, r0, r1;                                                                          \
    bn_share(t, nt, c->N, C, &c0, &c1, &r0, &r1);                                                    \
    for (int64_t j0 = 0; j0 < C; j0 += MAXW) {                                                       \
        const int64_t nb = C - j0 < MAXW ? C - j0 : MAXW;                                            \
        PICK(bwddx_##SFX)(c->dx + r0 * C + j0, c->dy + r0 * C + j0, c->x + r0 * C + j0, c->mu + j0,  \
                          c->r + j0, c->coef + j0, c->sdy + j0, c->sdyx + j0, (double)c->N, r1 - r0, \
                          C, nb);                                                                    \
    }                                                                                                \
}                                                                                                    \
                                                                                                     \
void batchnorm_forward_##SFX(T *y, T *mean, T *rstd, T *running_mean, T *running_var,                \
                             const T *x, const T *gamma, const T *beta,                              \
                             int64_t N, int64_t C, double momentum, double eps) {                    \
    /* y, x: (N, C), N >= 2 (checked in Python); mean, rstd, running_mean, running_var,              \
     * gamma, beta: (C,) */                                                                          \
    const int nt = bn_team_size(N, C);                                                               \
    double *par = nt > 1 ? malloc(3 * (size_t)C * sizeof(double)) : NULL;                            \
    if (par == NULL) {   /* one thread: column block by column block, statistics then y */           \
        for (int64_t j0 = 0; j0 < C; j0 += MAXW) {                                                   \
            const int64_t nb = C - j0 < MAXW ? C - j0 : MAXW;                                        \
            double mu[MAXW], sc[MAXW], b[MAXW];                                                      \
            fwd_block_##SFX(mu, sc, b, mean + j0, rstd + j0, running_mean + j0, running_var + j0,    \
                            x + j0, gamma + j0, beta + j0, N, C, nb, momentum, eps);                 \
            PICK(normalise_##SFX)(y + j0, x + j0, mu, sc, b, N, C, nb);                              \
        }                                                                                            \
        return;                                                                                      \
    }                                                                                                \
    ctx_##SFX c = {.y = y, .mean = mean, .rstd = rstd, .running_mean = running_mean,                 \
                   .running_var = running_var, .x = x, .gamma = gamma, .beta = beta, .mu = par,      \
                   .sc = par + C, .b = par + 2 * C, .N = N, .C = C, .momentum = momentum, .eps = eps}; \
    bn_run(fwd_stats_##SFX, &c, nt);                                                                 \
    bn_run(fwd_rows_##SFX, &c, nt);                                                                  \
    free(par);                                                                                       \
}                                                                                                    \
                                                                                                     \
void batchnorm_inference_##SFX(T *y, const T *x, const T *gamma, const T *beta,                      \
                               const T *running_mean, const T *running_var,                          \
                               int64_t N, int64_t C, double eps) {                                   \
    /* y, x: (N, C); gamma, beta, running_mean, running_var: (C,); one pass in row order (threads:   \
     * each its rows) */                                                                             \
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
            bn_run(fwd_rows_##SFX, &c, nt);                                                          \
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
    double *par = nt > 1 ? malloc(5 * (size_t)C * sizeof(double)) : NULL;                            \
    if (par == NULL) {   /* one thread: column block by column block, sums then dx */                \
        for (int64_t j0 = 0; j0 < C; j0 += MAXW) {                                                   \
            const int64_t nb = C - j0 < MAXW ? C - j0 : MAXW;                                        \
            double sdy[MAXW], sdyx[MAXW], mu[MAXW], r[MAXW], coef[MAXW];                             \
            bwd_block_##SFX(sdy, sdyx, mu, r, coef, dgamma + j0, dbeta + j0, dy + j0, x + j0,        \
                            gamma + j0, mean + j0, rstd + j0, N, C, nb);                             \
            PICK(bwddx_##SFX)(dx + j0, dy + j0, x + j0, mu, r, coef, sdy, sdyx, (double)N, N, C, nb); \
        }                                                                                            \
        return;                                                                                      \
    }                                                                                                \
    ctx_##SFX c = {.dx = dx, .dgamma = dgamma, .dbeta = dbeta, .dy = dy, .x = x, .gamma = gamma,     \
                   .smean = mean, .srstd = rstd, .sdy = par, .sdyx = par + C, .mu = par + 2 * C,     \
                   .r = par + 3 * C, .coef = par + 4 * C, .N = N, .C = C};                           \
    bn_run(bwd_sums_##SFX, &c, nt);                                                                  \
    bn_run(bwd_rows_##SFX, &c, nt);                                                                  \
    free(par);                                                                                       \
}

DEFINE_BATCHNORM(float, f32)
DEFINE_BATCHNORM(double, f64)
