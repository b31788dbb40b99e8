/* batchnorm.c -- batch normalisation, statistics per column of x (N, C) (kernels/batchnorm.py).
 *
 * Statistics are stable two-pass ones (mean first, then the sum of squared deviations), accumulated
 * in double; never E[x^2] - E[x]^2. Outputs are computed in double from the double statistics and
 * rounded once. Within a column the summation order is sequential over rows, like the Numba backend
 * (the two agree bit for bit).
 *
 * Memory traffic is what bounds these kernels: the forward reads x three times (mean, variance,
 * normalise) and writes y, the backward reads x and dy twice (the two sums, then dx) and writes dx.
 * The rows are swept in order, whole: each row a contiguous run of up to MAXW columns (wider batches
 * are cut into column blocks of MAXW) added into per-column double accumulators (on the stack, L1
 * resident), four rows per sweep of the accumulators ((((acc + x0) + x1) + x2) + x3): the same
 * sequential order, a quarter of the accumulator loads and stores. Every pass runs from the first
 * row down: sweeping bottom-up, to start on the rows the previous pass left in the cache, measured
 * 5-25% slower (descending streams prefetch worse than the cache saves). The output passes use
 * per-column coefficients prepared in double: y = (x - mean) * (rstd * gamma) + beta, and
 * dx = coef * ((N dy - sum dy) - xhat * sum(dy xhat)), coef = gamma * rstd / N (dx in the reference's
 * order: for small N it is a difference of near-equal terms, and any reordering shows).
 * (Column panels that fit in the cache, each read from memory once, measured 2-3x slower at
 * 16384 x 1024: a panel's rows are short runs 4 KiB apart, which memory serves poorly.)
 * The inner loops run over columns, elementwise, so the compiler vectorises them; each body is
 * compiled twice, for AVX2 (__attribute__((target)), chosen at run time when the CPU runs it) and for
 * the baseline ISA. No FMA contraction (-std=c11): the two give the same bits, and so does the Numba
 * backend, which runs the same loops in the same order. batchnorm_isa() says which path runs;
 * DEEPPROP_BATCHNORM_ISA=portable|avx2 forces one. Column blocks are independent: the unit to split
 * across threads.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include "deepprop.h"
#include "isa_path.h"

#if defined(__x86_64__) || defined(__i386__)
#define BN_X86 1
#else
#define BN_X86 0
#endif

#define MAXW 1024                  /* widest column block: 8 KiB per double accumulator array */

/* ---- run-time path ------------------------------------------------------------------------------ */

DP_DEFINE_ISA_PATH(batchnorm, "DEEPPROP_BATCHNORM_ISA", 0)

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
    /* y[:, k] = (x[:, k] - mu[k]) * sc[k] + b[k], sc = rstd * gamma, row stride C */                \
    for (int64_t i = 0; i < N; i++) {                                                                \
        const T *restrict xr = x + i * C;                                                            \
        T *restrict yr = y + i * C;                                                                  \
        for (int64_t k = 0; k < nb; k++) yr[k] = (T)(((double)xr[k] - mu[k]) * sc[k] + b[k]);       \
    }                                                                                                \
}                                                                                                    \
ATTR static void bwdsums_##SFX##_##ISA(double *restrict sdy, double *restrict sdyx,                  \
                                       const T *restrict dy, const T *restrict x,                    \
                                       const double *restrict mu, const double *restrict r,          \
                                       int64_t N, int64_t C, int64_t nb) {                           \
    /* sdy[k] += sum dy[:, k], sdyx[k] += sum dy[:, k] * xhat[:, k], xhat = (x - mu) * r; row order */ \
    int64_t i = 0;                                                                                   \
    for (; i + 2 <= N; i += 2) {                                                                     \
        const T *restrict x0 = x + i * C, *restrict x1 = x0 + C;                                     \
        const T *restrict g0 = dy + i * C, *restrict g1 = g0 + C;                                    \
        for (int64_t k = 0; k < nb; k++) {                                                           \
            const double a0 = (double)g0[k], a1 = (double)g1[k];                                     \
            const double h0 = ((double)x0[k] - mu[k]) * r[k], h1 = ((double)x1[k] - mu[k]) * r[k];   \
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
     * reference's order exactly: the result is a difference of near-equal terms when N is small */  \
    for (int64_t i = 0; i < N; i++) {                                                                \
        const T *restrict xr = x + i * C, *restrict gr = dy + i * C;                                 \
        T *restrict dr = dx + i * C;                                                                 \
        for (int64_t k = 0; k < nb; k++) {                                                           \
            const double xh = ((double)xr[k] - mu[k]) * r[k];                                        \
            dr[k] = (T)(coef[k] * ((n * (double)gr[k] - sdy[k]) - xh * sdyx[k]));                    \
        }                                                                                            \
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
DEFINE_LOOPS(double, f64, portable, )

/* ---- the family --------------------------------------------------------------------------------- */

#define DEFINE_BATCHNORM(T, SFX)                                                                     \
void batchnorm_forward_##SFX(T *y, T *mean, T *rstd, T *running_mean, T *running_var,                \
                             const T *x, const T *gamma, const T *beta,                              \
                             int64_t N, int64_t C, double momentum, double eps) {                    \
    /* y, x: (N, C), N >= 2 (checked in Python); mean, rstd, running_mean, running_var,              \
     * gamma, beta: (C,) */                                                                          \
    const double unbiased = (double)N / (double)(N - 1);                                             \
    const int avx2 = batchnorm_path() == DP_PATH_AVX2;                                                      \
    for (int64_t j0 = 0; j0 < C; j0 += MAXW) {                                                       \
        const int64_t nb = C - j0 < MAXW ? C - j0 : MAXW;                                            \
        double mu[MAXW], m2[MAXW], sc[MAXW], b[MAXW];                                                \
        for (int64_t k = 0; k < nb; k++) { mu[k] = 0.0; m2[k] = 0.0; }                               \
        (avx2 ? PICK(colsum_##SFX) : colsum_##SFX##_portable)(mu, x + j0, N, C, nb);                 \
        for (int64_t k = 0; k < nb; k++) mu[k] /= (double)N;                                         \
        (avx2 ? PICK(colssd_##SFX) : colssd_##SFX##_portable)(m2, mu, x + j0, N, C, nb);             \
        for (int64_t k = 0; k < nb; k++) {                                                           \
            const int64_t j = j0 + k;                                                                \
            const double var = m2[k] / (double)N;                                                    \
            const double r = 1.0 / sqrt(var + eps);                                                  \
            sc[k] = r * (double)gamma[j];                                                            \
            b[k] = (double)beta[j];                                                                  \
            mean[j] = (T)mu[k];                                                                      \
            rstd[j] = (T)r;                                                                          \
            running_mean[j] = (T)bn_momentum_update((double)running_mean[j], mu[k], momentum);       \
            running_var[j] = (T)bn_momentum_update((double)running_var[j], var * unbiased, momentum);\
        }                                                                                            \
        (avx2 ? PICK(normalise_##SFX) : normalise_##SFX##_portable)(y + j0, x + j0, mu, sc, b, N, C, nb); \
    }                                                                                                \
}                                                                                                    \
                                                                                                     \
void batchnorm_inference_##SFX(T *y, const T *x, const T *gamma, const T *beta,                      \
                               const T *running_mean, const T *running_var,                          \
                               int64_t N, int64_t C, double eps) {                                   \
    /* y, x: (N, C); gamma, beta, running_mean, running_var: (C,); one pass in row order */          \
    const int avx2 = batchnorm_path() == DP_PATH_AVX2;                                                      \
    for (int64_t j0 = 0; j0 < C; j0 += MAXW) {                                                       \
        const int64_t nb = C - j0 < MAXW ? C - j0 : MAXW;                                            \
        double mu[MAXW], sc[MAXW], b[MAXW];                                                          \
        for (int64_t k = 0; k < nb; k++) {                                                           \
            mu[k] = (double)running_mean[j0 + k];                                                    \
            sc[k] = 1.0 / sqrt((double)running_var[j0 + k] + eps) * (double)gamma[j0 + k];          \
            b[k] = (double)beta[j0 + k];                                                             \
        }                                                                                            \
        (avx2 ? PICK(normalise_##SFX) : normalise_##SFX##_portable)(y + j0, x + j0, mu, sc, b, N, C, nb); \
    }                                                                                                \
}                                                                                                    \
                                                                                                     \
void batchnorm_backward_##SFX(T *dx, T *dgamma, T *dbeta, const T *dy, const T *x,                   \
                              const T *gamma, const T *mean, const T *rstd, int64_t N, int64_t C) {  \
    /* dx, dy, x: (N, C), N >= 1; dgamma, dbeta, gamma, mean, rstd: (C,) */                          \
    const int avx2 = batchnorm_path() == DP_PATH_AVX2;                                                      \
    for (int64_t j0 = 0; j0 < C; j0 += MAXW) {                                                       \
        const int64_t nb = C - j0 < MAXW ? C - j0 : MAXW;                                            \
        double sdy[MAXW], sdyx[MAXW], mu[MAXW], r[MAXW], coef[MAXW];                                 \
        for (int64_t k = 0; k < nb; k++) {                                                           \
            sdy[k] = 0.0; sdyx[k] = 0.0;                                                             \
            mu[k] = (double)mean[j0 + k];                                                            \
            r[k] = (double)rstd[j0 + k];                                                             \
            coef[k] = (double)gamma[j0 + k] * r[k] / (double)N;                                      \
        }                                                                                            \
        (avx2 ? PICK(bwdsums_##SFX) : bwdsums_##SFX##_portable)(sdy, sdyx, dy + j0, x + j0, mu, r, N, C, nb); \
        for (int64_t k = 0; k < nb; k++) {                                                           \
            dgamma[j0 + k] = (T)sdyx[k];                                                             \
            dbeta[j0 + k] = (T)sdy[k];                                                               \
        }                                                                                            \
        (avx2 ? PICK(bwddx_##SFX) : bwddx_##SFX##_portable)(dx + j0, dy + j0, x + j0, mu, r, coef, sdy, sdyx, \
                                                            (double)N, N, C, nb);                    \
    }                                                                                                \
}

DEFINE_BATCHNORM(float, f32)
DEFINE_BATCHNORM(double, f64)
