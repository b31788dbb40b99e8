/* batchnorm.c -- batch normalisation, statistics per column of x (N, C) (kernels/batchnorm.py).
 *
 * Statistics are stable two-pass ones (mean first, then the sum of squared deviations), accumulated
 * in double; never E[x^2] - E[x]^2. Outputs are computed in double from the double statistics and
 * rounded once.
 *
 * Loop order: x is row-major, so column sums are built by sweeping the rows and adding each row's
 * contiguous run of columns into per-column double accumulators. The header passes no scratch and
 * the outputs mean/rstd are of the dtype (float for f32, too narrow to accumulate in), so the
 * accumulators live on the stack: the columns are processed in blocks of BN_BLOCK, each block with
 * its own double arrays (2 x 64 doubles = 1 KiB). Each row then contributes one contiguous run of up
 * to 64 elements (512 bytes of floats/doubles) per pass, which streams well; for C <= 64 there is a
 * single block and the passes are plain sweeps over x. Within a column the summation order is
 * sequential over rows, like the Numba backend.
 */
#include <math.h>
#include "deepprop.h"

#define BN_BLOCK 64

/* PyTorch's (1 - m) * running + m * stat; a term of weight exactly 0 is skipped (no inf * 0 NaN) */
static inline double bn_momentum_update(double running, double stat, double momentum) {
    if (momentum == 0.0) return running;
    if (momentum == 1.0) return stat;
    return (1.0 - momentum) * running + momentum * stat;
}

#define DEFINE_BATCHNORM(T, SFX)                                                                     \
void batchnorm_forward_##SFX(T *y, T *mean, T *rstd, T *running_mean, T *running_var,                \
                             const T *x, const T *gamma, const T *beta,                              \
                             int64_t N, int64_t C, double momentum, double eps) {                    \
    /* y, x: (N, C), N >= 2 (checked in Python); mean, rstd, running_mean, running_var,              \
     * gamma, beta: (C,) */                                                                          \
    const double unbiased = (double)N / (double)(N - 1);                                             \
    for (int64_t j0 = 0; j0 < C; j0 += BN_BLOCK) {                                                   \
        const int64_t nb = C - j0 < BN_BLOCK ? C - j0 : BN_BLOCK;                                    \
        double mu[BN_BLOCK], m2[BN_BLOCK];                                                           \
        for (int64_t k = 0; k < nb; k++) { mu[k] = 0.0; m2[k] = 0.0; }                               \
        for (int64_t i = 0; i < N; i++) {                 /* pass 1: column sums */                  \
            const T *xr = x + i * C + j0;                                                            \
            for (int64_t k = 0; k < nb; k++) mu[k] += (double)xr[k];                                 \
        }                                                                                            \
        for (int64_t k = 0; k < nb; k++) mu[k] /= (double)N;                                         \
        for (int64_t i = 0; i < N; i++) {                 /* pass 2: squared deviations */           \
            const T *xr = x + i * C + j0;                                                            \
            for (int64_t k = 0; k < nb; k++) { double d = (double)xr[k] - mu[k]; m2[k] += d * d; }   \
        }                                                                                            \
        for (int64_t k = 0; k < nb; k++) {                                                           \
            const int64_t j = j0 + k;                                                                \
            const double var = m2[k] / (double)N;                                                    \
            const double r = 1.0 / sqrt(var + eps);                                                  \
            mean[j] = (T)mu[k];                                                                      \
            rstd[j] = (T)r;                                                                          \
            running_mean[j] = (T)bn_momentum_update((double)running_mean[j], mu[k], momentum);       \
            running_var[j] = (T)bn_momentum_update((double)running_var[j], var * unbiased, momentum);\
            m2[k] = r;                                    /* m2 now holds rstd in double */          \
        }                                                                                            \
        for (int64_t i = 0; i < N; i++) {                 /* pass 3: normalise */                    \
            const T *xr = x + i * C + j0;                                                            \
            T *yr = y + i * C + j0;                                                                  \
            for (int64_t k = 0; k < nb; k++)                                                         \
                yr[k] = (T)(((double)xr[k] - mu[k]) * m2[k] * (double)gamma[j0 + k]                  \
                            + (double)beta[j0 + k]);                                                 \
        }                                                                                            \
    }                                                                                                \
}                                                                                                    \
                                                                                                     \
void batchnorm_inference_##SFX(T *y, const T *x, const T *gamma, const T *beta,                      \
                               const T *running_mean, const T *running_var,                          \
                               int64_t N, int64_t C, double eps) {                                   \
    /* y, x: (N, C); gamma, beta, running_mean, running_var: (C,) */                                 \
    for (int64_t j0 = 0; j0 < C; j0 += BN_BLOCK) {                                                   \
        const int64_t nb = C - j0 < BN_BLOCK ? C - j0 : BN_BLOCK;                                    \
        double r[BN_BLOCK];                                                                          \
        for (int64_t k = 0; k < nb; k++) r[k] = 1.0 / sqrt((double)running_var[j0 + k] + eps);       \
        for (int64_t i = 0; i < N; i++) {                                                            \
            const T *xr = x + i * C + j0;                                                            \
            T *yr = y + i * C + j0;                                                                  \
            for (int64_t k = 0; k < nb; k++)                                                         \
                yr[k] = (T)(((double)xr[k] - (double)running_mean[j0 + k]) * r[k]                    \
                            * (double)gamma[j0 + k] + (double)beta[j0 + k]);                         \
        }                                                                                            \
    }                                                                                                \
}                                                                                                    \
                                                                                                     \
void batchnorm_backward_##SFX(T *dx, T *dgamma, T *dbeta, const T *dy, const T *x,                   \
                              const T *gamma, const T *mean, const T *rstd, int64_t N, int64_t C) {  \
    /* dx, dy, x: (N, C), N >= 1; dgamma, dbeta, gamma, mean, rstd: (C,) */                          \
    for (int64_t j0 = 0; j0 < C; j0 += BN_BLOCK) {                                                   \
        const int64_t nb = C - j0 < BN_BLOCK ? C - j0 : BN_BLOCK;                                    \
        double sdy[BN_BLOCK], sdyx[BN_BLOCK];                                                        \
        for (int64_t k = 0; k < nb; k++) { sdy[k] = 0.0; sdyx[k] = 0.0; }                            \
        for (int64_t i = 0; i < N; i++) {                 /* pass 1: sum(dy), sum(dy * xhat) */      \
            const T *xr = x + i * C + j0, *gr = dy + i * C + j0;                                     \
            for (int64_t k = 0; k < nb; k++) {                                                       \
                const double g = (double)gr[k];                                                      \
                const double xh = ((double)xr[k] - (double)mean[j0 + k]) * (double)rstd[j0 + k];     \
                sdy[k] += g;                                                                         \
                sdyx[k] += g * xh;                                                                   \
            }                                                                                        \
        }                                                                                            \
        for (int64_t k = 0; k < nb; k++) { dgamma[j0 + k] = (T)sdyx[k]; dbeta[j0 + k] = (T)sdy[k]; } \
        for (int64_t i = 0; i < N; i++) {                 /* pass 2: dx */                           \
            const T *xr = x + i * C + j0, *gr = dy + i * C + j0;                                     \
            T *dr = dx + i * C + j0;                                                                 \
            for (int64_t k = 0; k < nb; k++) {                                                       \
                const double r = (double)rstd[j0 + k];                                               \
                const double xh = ((double)xr[k] - (double)mean[j0 + k]) * r;                        \
                dr[k] = (T)(((double)gamma[j0 + k] * r / (double)N)                                  \
                            * ((double)N * (double)gr[k] - sdy[k] - xh * sdyx[k]));                  \
            }                                                                                        \
        }                                                                                            \
    }                                                                                                \
}

DEFINE_BATCHNORM(float, f32)
DEFINE_BATCHNORM(double, f64)
