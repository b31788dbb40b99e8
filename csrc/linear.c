/* linear.c -- fully connected layer with a fused activation (kernels/linear.py).
 *
 * Plain i-k-j GEMM loops with the inner loop over a contiguous output row (vectorised by gcc -O3),
 * products accumulated in the dtype like BLAS, and a simple cache blocking: a KB x MB panel of W
 * (64 x 256, 128 KiB in double) is reused by every row before the next panel. The blocking changes
 * the speed only: each z_ij is still b_j + x_i0 W_0j + x_i1 W_1j + ... in order of k.
 * The activation comes from activations.c (activation_forward_* on each finished row segment,
 * activation_backward_* for dz), so it is computed exactly as in the elementwise kernels.
 * A faster, BLIS-style GEMM is a separate piece of work. */
#include <stddef.h>
#include "deepprop.h"

#define KB 64
#define MB 256

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

#define DEFINE_LINEAR(T, SFX)                                                              \
void linear_forward_##SFX(T *y, T *z, const T *x, const T *W, const T *b,                          \
                          int64_t N, int64_t K, int64_t M, int act, double alpha) {                \
    /* y, z: (N, M) (z may be NULL); x: (N, K); W: (K, M); b: (M,) or NULL.                        \
     * z = x @ W + b accumulated in T (into z, or into y when z is NULL); y = act(z) */            \
    T *acc = z ? z : y;                                                                            \
    for (int64_t j0 = 0; j0 < M; j0 += MB) {                                                       \
        int64_t mn = min64(MB, M - j0);                                                            \
        for (int64_t i = 0; i < N; i++) {                                                          \
            T *restrict a = acc + i * M + j0;                                                      \
            for (int64_t j = 0; j < mn; j++) a[j] = b ? b[j0 + j] : (T)0;                          \
        }                                                                                          \
        for (int64_t k0 = 0; k0 < K; k0 += KB) {                                                   \
            int64_t kn = min64(KB, K - k0);                                                        \
            for (int64_t i = 0; i < N; i++) {                                                      \
                T *restrict a = acc + i * M + j0;                                                  \
                const T *xi = x + i * K + k0;                                                      \
                for (int64_t k = 0; k < kn; k++) {                                                 \
                    const T xik = xi[k];                                                           \
                    const T *restrict w = W + (k0 + k) * M + j0;                                   \
                    for (int64_t j = 0; j < mn; j++) a[j] += xik * w[j];                           \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
        if (act != DP_ACT_IDENTITY || z)                                                           \
            for (int64_t i = 0; i < N; i++)                                                        \
                activation_forward_##SFX(y + i * M + j0, acc + i * M + j0, mn, act, alpha);        \
    }                                                                                              \
}                                                                                                  \
void linear_backward_##SFX(T *dx, T *dW, T *db, T *work, const T *dy, const T *x,                  \
                           const T *W, const T *z, int64_t N, int64_t K, int64_t M,                \
                           int act, double alpha) {                                                \
    /* dx: (N, K); dW: (K, M); db: (M,); work: (N*M,) scratch for dz; dy, z: (N, M) (z may be      \
     * NULL for identity); x: (N, K); W: (K, M).                                                   \
     * dz = dy * act'(z); dx = dz @ W^T; dW = x^T @ dz; db = column sums of dz (in double) */      \
    const T *dz = dy;                                                                              \
    if (act != DP_ACT_IDENTITY) {                                                                  \
        activation_backward_##SFX(work, dy, z, N * M, act, alpha);                                 \
        dz = work;                                                                                 \
    }                                                                                              \
    /* dx[i,k] = sum_j dz[i,j] W[k,j]: dot products of two contiguous rows, j in blocks of MB */   \
    for (int64_t i = 0; i < N * K; i++) dx[i] = (T)0;                                              \
    for (int64_t j0 = 0; j0 < M; j0 += MB) {                                                       \
        int64_t mn = min64(MB, M - j0);                                                            \
        for (int64_t k0 = 0; k0 < K; k0 += KB) {                                                   \
            int64_t kn = min64(KB, K - k0);                                                        \
            for (int64_t i = 0; i < N; i++) {                                                      \
                const T *d = dz + i * M + j0;                                                      \
                for (int64_t k = k0; k < k0 + kn; k++) {                                           \
                    const T *w = W + k * M + j0;                                                   \
                    T s = dx[i * K + k];                                                           \
                    for (int64_t j = 0; j < mn; j++) s += d[j] * w[j];                             \
                    dx[i * K + k] = s;                                                             \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    }                                                                                              \
    /* dW[k,:] += x[i,k] * dz[i,:]: i-k-j over KB x MB blocks of dW */                             \
    for (int64_t i = 0; i < K * M; i++) dW[i] = (T)0;                                              \
    for (int64_t j0 = 0; j0 < M; j0 += MB) {                                                       \
        int64_t mn = min64(MB, M - j0);                                                            \
        for (int64_t k0 = 0; k0 < K; k0 += KB) {                                                   \
            int64_t kn = min64(KB, K - k0);                                                        \
            for (int64_t i = 0; i < N; i++) {                                                      \
                const T *restrict d = dz + i * M + j0;                                             \
                for (int64_t k = k0; k < k0 + kn; k++) {                                           \
                    const T xik = x[i * K + k];                                                    \
                    T *restrict g = dW + k * M + j0;                                               \
                    for (int64_t j = 0; j < mn; j++) g[j] += xik * d[j];                           \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    }                                                                                              \
    /* db: column sums in double, MB columns at a time */                                          \
    for (int64_t j0 = 0; j0 < M; j0 += MB) {                                                       \
        int64_t mn = min64(MB, M - j0);                                                            \
        double s[MB];                                                                              \
        for (int64_t j = 0; j < mn; j++) s[j] = 0.0;                                               \
        for (int64_t i = 0; i < N; i++) {                                                          \
            const T *d = dz + i * M + j0;                                                          \
            for (int64_t j = 0; j < mn; j++) s[j] += (double)d[j];                                 \
        }                                                                                          \
        for (int64_t j = 0; j < mn; j++) db[j0 + j] = (T)s[j];                                     \
    }                                                                                              \
}

DEFINE_LINEAR(float, f32)
DEFINE_LINEAR(double, f64)
