/* linear.c -- fully connected layer with a fused activation (kernels/linear.py), on gemm.c.
 *
 * Forward: z = x @ W + b by the BLIS-style GEMM (products accumulated in the dtype, like BLAS; the bias
 * is added in the micro-kernel's store of the first k block); the GEMM's epilogue gets every finished
 * micro-tile of z while it is still in L1 and writes y = act(z), with the same scalar formulas as the
 * elementwise kernels (act_scalar.h), so y is bit for bit the elementwise activation of z (relu and
 * leaky_relu on AVX2 CPUs by act_scalar.h's vector loop, the same values). No second pass over the output.
 * Backward: one pass over dy (and z) writes dz = dy * act'(z) and sums db = column sums of dz in
 * double (for relu and leaky_relu on AVX2 CPUs with act_scalar.h's vector derivative, bit for bit the
 * scalar loop's result, ~20x faster: the scalar loop's two data-dependent branches mispredict on
 * every other element of a random z); then dx = dz W^T and dW = x^T dz are two GEMMs whose
 * transposes are taken by the packing. */
#include <stddef.h>
#include <string.h>
#include "deepprop.h"
#include "act_scalar.h"
#include "gemm.h"

#define DB_COLS 256   /* db accumulates in a double[DB_COLS] on the stack, DB_COLS columns at a time */

/* y[r, j] = act(acc[r, j]) over an m x n block (row stride ld); one switch, then the 2-D loop */
#define EPI_ACT_LOOP(EXPR)                                                                              \
    for (int64_t r = 0; r < m; r++) {                                                                   \
        const __typeof__(*yb) *restrict ar = ab + r * ld;                                               \
        __typeof__(*yb) *restrict yr = yb + r * ld;                                                     \
        for (int64_t j = 0; j < n; j++) { double v = (double)ar[j]; yr[j] = (__typeof__(*yb))(EXPR); } \
    }                                                                                                   \
    break
/* the same in place (y is the GEMM's output when z is not kept): one pointer, so the compiler
 * vectorises it without the overlap test that sends an in-place loop down its scalar version */
#define EPI_ACT_LOOP_INPLACE(EXPR)                                                                      \
    for (int64_t r = 0; r < m; r++) {                                                                   \
        __typeof__(*yb) *yr = yb + r * ld;                                                              \
        for (int64_t j = 0; j < n; j++) { double v = (double)yr[j]; yr[j] = (__typeof__(*yb))(EXPR); } \
    }                                                                                                   \
    break
/* dz = dy * act'(z) over rows 0..N-1 of a column block, and its column sums s in double */
#define DZ_LOOP(DEXPR)                                                                                  \
    for (int64_t i = 0; i < N; i++) {                                                                   \
        const __typeof__(*dz) *g = dy + i * M + j0, *zr = z + i * M + j0;                               \
        __typeof__(*dz) *d = dz + i * M + j0;                                                           \
        for (int64_t j = 0; j < mn; j++) {                                                              \
            double v = (double)zr[j];                                                                   \
            d[j] = (__typeof__(*dz))mul0((double)g[j], (DEXPR));                                        \
            s[j] += (double)d[j];                                                                       \
        }                                                                                               \
    }                                                                                                   \
    break

#define DEFINE_LINEAR(T, SFX)                                                                          \
typedef struct { T *y; const T *z; int64_t ld; int act; double alpha; int vec; } fwd_ctx_##SFX;        \
static void fwd_store_##SFX(const void *ctx, int64_t i0, int64_t j0, int64_t m, int64_t n) {           \
    /* the finished block [i0:i0+m, j0:j0+n] of z (or of y itself, when z is not kept): y = act(z) */  \
    const fwd_ctx_##SFX *cx = ctx;                                                                     \
    const int64_t ld = cx->ld;                                                                         \
    const double alpha = cx->alpha;                                                                    \
    const T *ab = cx->z + i0 * ld + j0;                                                                \
    T *yb = cx->y + i0 * ld + j0;                                                                      \
    if (cx->act == DP_ACT_IDENTITY) {   /* z kept: y is a copy */                                      \
        for (int64_t r = 0; r < m; r++) memcpy(yb + r * ld, ab + r * ld, (size_t)n * sizeof(T));       \
        return;                                                                                        \
    }                                                                                                  \
    if (cx->vec) { DP_ACT_FWD_AVX2(SFX, yb, ab, ld, m, n, cx->act, alpha); return; }                  \
    if (yb == ab) { DP_ACT_FORWARD_SWITCH(cx->act, EPI_ACT_LOOP_INPLACE) }                              \
    else { DP_ACT_FORWARD_SWITCH(cx->act, EPI_ACT_LOOP) }                                              \
}                                                                                                      \
void linear_forward_##SFX(T *y, T *z, const T *x, const T *W, const T *b,                              \
                          int64_t N, int64_t K, int64_t M, int act, double alpha) {                    \
    /* y, z: (N, M) (z may be NULL); x: (N, K); W: (K, M); b: (M,) or NULL.                            \
     * z = x @ W + b into z, or into y when z is NULL; y = act(z) in the GEMM's epilogue */            \
    T *acc = z ? z : y;                                                                                \
    const fwd_ctx_##SFX cx = {y, acc, M, act, alpha, DP_ACT_FWD_VEC(act)};                             \
    const gemm_epilogue ep = {fwd_store_##SFX, &cx};                                                   \
    const int none = z == NULL && act == DP_ACT_IDENTITY;   /* y = z is the GEMM's result */          \
    gemm_##SFX(GEMM_NOTRANS, GEMM_NOTRANS, N, M, K, (T)1, x, K, W, M, (T)0, acc, M, b, none ? NULL : &ep); \
}                                                                                                      \
void linear_backward_##SFX(T *dx, T *dW, T *db, T *work, const T *dy, const T *x,                      \
                           const T *W, const T *z, int64_t N, int64_t K, int64_t M,                    \
                           int act, double alpha) {                                                    \
    /* dx: (N, K); dW: (K, M); db: (M,); work: (N*M,) scratch for dz; dy, z: (N, M) (z may be          \
     * NULL for identity); x: (N, K); W: (K, M).                                                       \
     * dz = dy * act'(z) and db = column sums of dz (in double) in one pass; dx = dz @ W^T;            \
     * dW = x^T @ dz */                                                                                \
    T *dz = act == DP_ACT_IDENTITY ? (T *)dy : work;  /* identity: dz is dy, read only */              \
    const double lo = dp_act_lo(act, alpha);                                                           \
    const int vec = DP_DZ_VEC(lo);    /* relu, leaky_relu: the AVX2 pass (act_scalar.h) */             \
    for (int64_t j0 = 0; j0 < M; j0 += DB_COLS) {                                                      \
        const int64_t mn = M - j0 < DB_COLS ? M - j0 : DB_COLS;                                        \
        double s[DB_COLS];                                                                             \
        for (int64_t j = 0; j < mn; j++) s[j] = 0.0;                                                   \
        if (act == DP_ACT_IDENTITY) {                                                                  \
            for (int64_t i = 0; i < N; i++)                                                            \
                for (int64_t j = 0; j < mn; j++) s[j] += (double)dy[i * M + j0 + j];                   \
        } else if (vec) {                                                                              \
            DP_DZ_AVX2(SFX, dz + j0, s, dy + j0, z + j0, N, M, mn, lo);                                 \
        } else {                                                                                       \
            DP_ACT_BACKWARD_SWITCH(act, DZ_LOOP)                                                       \
        }                                                                                              \
        /* a sum that met a NaN gives the canonical quiet NaN: which of its NaN terms an addition      \
         * carries is the first operand's on x86, and C leaves the compiler free to swap the operands, \
         * so the AVX2 and portable loops (or one loop built at -O1 and at -O3: tox -e sanitize) gave  \
         * different NaN bits */                                                                       \
        for (int64_t j = 0; j < mn; j++) db[j0 + j] = s[j] == s[j] ? (T)s[j] : (T)NAN;                  \
    }                                                                                                  \
    /* dx (N, K) = dz (N, M) . W^T: op(B)(j, k) = W[k M + j] */                                        \
    gemm_##SFX(GEMM_NOTRANS, GEMM_TRANS, N, K, M, (T)1, dz, M, W, M, (T)0, dx, K, NULL, NULL);         \
    /* dW (K, M) = x^T . dz (N, M): op(A)(k, i) = x[i K + k] */                                        \
    gemm_##SFX(GEMM_TRANS, GEMM_NOTRANS, K, M, N, (T)1, x, K, dz, M, (T)0, dW, M, NULL, NULL);         \
}

DEFINE_LINEAR(float, f32)
DEFINE_LINEAR(double, f64)
