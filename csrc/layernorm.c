/* layernorm.c -- layer normalisation, statistics per row of x (N, D) (kernels/layernorm.py).
 *
 * Row statistics are stable two-pass ones (mean first, then the sum of squared deviations) in double;
 * never E[x^2] - E[x]^2. Outputs are computed in double from the double statistics, rounded once.
 *
 * dgamma and dbeta are sums over the rows (per column). The header passes no scratch and, for f32,
 * the outputs are too narrow to accumulate in, so as in batchnorm.c the columns are processed in
 * blocks of LN_BLOCK with double accumulators on the stack, each block sweeping the rows (one
 * contiguous run of up to 64 elements per row: row-major friendly).
 */
#include <math.h>
#include "deepprop.h"

#define LN_BLOCK 64

#define DEFINE_LAYERNORM(T, SFX)                                                                     \
void layernorm_forward_##SFX(T *y, T *mean, T *rstd, const T *x, const T *gamma, const T *beta,      \
                             int64_t N, int64_t D, double eps) {                                     \
    /* y, x: (N, D), D >= 1 (checked in Python); gamma, beta: (D,); mean, rstd: (N,) */              \
    for (int64_t i = 0; i < N; i++) {                                                                \
        const T *xr = x + i * D;                                                                     \
        T *yr = y + i * D;                                                                           \
        double s = 0.0;                                                                              \
        for (int64_t j = 0; j < D; j++) s += (double)xr[j];                                          \
        const double mu = s / (double)D;                                                             \
        double m2 = 0.0;                                                                             \
        for (int64_t j = 0; j < D; j++) { double d = (double)xr[j] - mu; m2 += d * d; }              \
        const double r = 1.0 / sqrt(m2 / (double)D + eps);                                           \
        mean[i] = (T)mu;                                                                             \
        rstd[i] = (T)r;                                                                              \
        for (int64_t j = 0; j < D; j++)                                                              \
            yr[j] = (T)(((double)xr[j] - mu) * r * (double)gamma[j] + (double)beta[j]);              \
    }                                                                                                \
}                                                                                                    \
                                                                                                     \
void layernorm_backward_##SFX(T *dx, T *dgamma, T *dbeta, const T *dy, const T *x,                   \
                              const T *gamma, const T *mean, const T *rstd, int64_t N, int64_t D) {  \
    /* dx, dy, x: (N, D); dgamma, dbeta, gamma: (D,); mean, rstd: (N,) */                            \
    for (int64_t i = 0; i < N; i++) {                     /* dx, row by row */                       \
        const T *xr = x + i * D, *gr = dy + i * D;                                                   \
        T *dr = dx + i * D;                                                                          \
        const double mu = (double)mean[i], r = (double)rstd[i];                                      \
        double sg = 0.0, sgx = 0.0;                                                                  \
        for (int64_t j = 0; j < D; j++) {                                                            \
            const double g = (double)gr[j] * (double)gamma[j];                                       \
            sg += g;                                                                                 \
            sgx += g * (((double)xr[j] - mu) * r);                                                   \
        }                                                                                            \
        for (int64_t j = 0; j < D; j++) {                                                            \
            const double g = (double)gr[j] * (double)gamma[j];                                       \
            const double xh = ((double)xr[j] - mu) * r;                                              \
            dr[j] = (T)((r / (double)D) * ((double)D * g - sg - xh * sgx));                          \
        }                                                                                            \
    }                                                                                                \
    for (int64_t j0 = 0; j0 < D; j0 += LN_BLOCK) {        /* dgamma, dbeta: column sums */           \
        const int64_t nb = D - j0 < LN_BLOCK ? D - j0 : LN_BLOCK;                                    \
        double sdyx[LN_BLOCK], sdy[LN_BLOCK];                                                        \
        for (int64_t k = 0; k < nb; k++) { sdyx[k] = 0.0; sdy[k] = 0.0; }                            \
        for (int64_t i = 0; i < N; i++) {                                                            \
            const T *xr = x + i * D + j0, *gr = dy + i * D + j0;                                     \
            const double mu = (double)mean[i], r = (double)rstd[i];                                  \
            for (int64_t k = 0; k < nb; k++) {                                                       \
                const double d = (double)gr[k];                                                      \
                sdyx[k] += d * (((double)xr[k] - mu) * r);                                           \
                sdy[k] += d;                                                                         \
            }                                                                                        \
        }                                                                                            \
        for (int64_t k = 0; k < nb; k++) { dgamma[j0 + k] = (T)sdyx[k]; dbeta[j0 + k] = (T)sdy[k]; } \
    }                                                                                                \
}

DEFINE_LAYERNORM(float, f32)
DEFINE_LAYERNORM(double, f64)
