/* orthogonal.c -- thin Householder QR (kernels/orthogonal.py: qr, and orthogonal_init on it).
 *
 * LAPACK's unblocked algorithm, written out by hand (no LAPACK call):
 *   dgeqr2  for j = 0..n-1 a reflector H_j = I - tau_j v_j v_j^T (dlarfg: v_j[0] = 1,
 *           beta = -sign(alpha) ||x||, the norm over/underflow-safe) zeroes column j below
 *           the diagonal and is applied to the trailing columns j+1..n-1;
 *   dorg2r  Q = H_0 H_1 ... H_{n-1} [I_n; 0], accumulated backwards in place over the reflectors;
 *   sign fix  s_j = -1 if r_jj < 0 else +1 (sign(0) = +1, and NaN gives +1);
 *           q[:, j] *= s_j, r[j, :] *= s_j: diag(r) >= 0, the factorization is unique.
 *
 * Layout: a is row-major (m, n), so a column is strided by n, but every step of Householder
 * QR works on columns (a reflector comes from one column and is applied to every later one).
 * So a is copied TRANSPOSED into work as at (n, m): row j of at is column j of a, and every
 * inner loop (the norm, the dot product v^T c, the update c -= tau (v^T c) v) runs over
 * contiguous memory. Q is formed in place over the reflectors, still transposed, and
 * transposed back into q at the end. work = at (m*n elements), then tau (n), later the signs.
 *
 * Precision: work has the array's own type (m*n + n elements of T), so float32 is STORED in
 * float32; but every reduction (norms, dot products) is accumulated in double, and every update
 * is computed in double and rounded once to T. The dot products use eight partial sums in a
 * fixed order (not a fast-math reassociation: the order is the code's, the same on every run).
 * The trailing updates are grouped in panels of QR_NB reflectors for cache reuse, without
 * changing any row's operations or their order: the results are those of the unblocked loops
 * (and of the Numba backend, which runs the same loops).
 * dlarfg's rescaling loop for a tiny beta is replaced by dividing x by (alpha - beta) instead
 * of multiplying by its reciprocal: |x_i| <= |alpha - beta|, so the quotient cannot overflow.
 * NaN/Inf are not checked: they propagate through the arithmetic (into r, and into q unless
 * the reflectors before them are trivial). Nothing is allocated. Returns 0, or -1 for sizes
 * it cannot factor (n < 0 or m < n; the Python wrappers never pass those).
 */
#include <math.h>
#include "deepprop.h"

/* reflectors per panel: their 8 rows of at (8 * m elements) stay in cache while a row is updated */
#define QR_NB 8

#define DEFINE_ORTHOGONAL(T, SFX)                                                              \
/* ||x||_2 of x (len,), accumulated in double; scaled by max|x_i| only when the plain sum      \
 * of squares could have overflowed or lost digits to underflow (dnrm2 always scales). */      \
static double qr_nrm2_##SFX(const T *x, int64_t len) {                                         \
    double s0 = 0.0, s1 = 0.0;                                                                 \
    int64_t i = 0;                                                                             \
    for (; i + 1 < len; i += 2) {                                                              \
        double x0 = (double)x[i], x1 = (double)x[i + 1];                                       \
        s0 += x0 * x0;                                                                         \
        s1 += x1 * x1;                                                                         \
    }                                                                                          \
    if (i < len) s0 += (double)x[i] * (double)x[i];                                            \
    double s = s0 + s1;                                                                        \
    if (s != s) return s;                                 /* NaN in x */                       \
    if (s > 1e-280 && s < 1e280) return sqrt(s);          /* no overflow, no lost digits */    \
    /* 0, tiny or huge (maybe inf): scale by max|x_i|, which also tells all-zero x apart */    \
    double amax = 0.0;                                                                         \
    for (i = 0; i < len; i++) {                                                                \
        double ax = fabs((double)x[i]);                                                        \
        if (ax > amax) amax = ax;                                                              \
    }                                                                                          \
    if (amax == 0.0 || isinf(amax)) return amax;                                               \
    s = 0.0;                                                                                   \
    for (i = 0; i < len; i++) {                                                                \
        double t = (double)x[i] / amax;                                                        \
        s += t * t;                                                                            \
    }                                                                                          \
    return amax * sqrt(s);                                                                     \
}                                                                                              \
                                                                                               \
/* v^T c over len elements in double, in eight partial sums (one sum would be bound by the     \
 * latency of its adds) combined pairwise at the end */                                        \
static double qr_dot_##SFX(const T *v, const T *c, int64_t len) {                              \
    double s[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};                                    \
    int64_t i = 0;                                                                             \
    for (; i + 7 < len; i += 8)                                                                \
        for (int u = 0; u < 8; u++) s[u] += (double)v[i + u] * (double)c[i + u];               \
    for (; i < len; i++) s[0] += (double)v[i] * (double)c[i];                                  \
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));                  \
}                                                                                              \
                                                                                               \
/* c = H c for H = I - tau v v^T, v = (1, vt[0..len-2]), c (len,): dlarf on one column */      \
static void qr_reflect_##SFX(T *c, const T *vt, double tau, int64_t len) {                     \
    double w = tau * ((double)c[0] + qr_dot_##SFX(vt, c + 1, len - 1));                        \
    c[0] = (T)((double)c[0] - w);                                                              \
    for (int64_t i = 1; i < len; i++) c[i] = (T)((double)c[i] - w * (double)vt[i - 1]);        \
}                                                                                              \
                                                                                               \
int householder_qr_##SFX(T *q, T *r, T *work, const T *a, int64_t m, int64_t n) {              \
    /* q (m, n), r (n, n), work (m*n + n,): at (n, m) then tau (n,); a (m, n), m >= n */       \
    if (n < 0 || m < n) return -1;                                                             \
    if (n == 0) return 0;                                                                      \
    T *at = work, *tau = work + m * n;                                                         \
    for (int64_t i = 0; i < m; i++)                                                            \
        for (int64_t j = 0; j < n; j++) at[j * m + i] = a[i * n + j];                          \
                                                                                               \
    /* dgeqr2 in panels of QR_NB reflectors: reflector j comes from at[j, j:m] and is          \
     * applied to rows j+1..n-1. Inside a panel that happens as in dgeqr2; each later row      \
     * then gets the panel's reflectors one after another while it sits in L1 cache. Each      \
     * row sees dgeqr2's operations in dgeqr2's order (same results), but the trailing         \
     * matrix is swept once per panel instead of once per reflector. */                        \
    for (int64_t j0 = 0; j0 < n; j0 += QR_NB) {                                                \
        int64_t j1 = j0 + QR_NB < n ? j0 + QR_NB : n;                                          \
        for (int64_t j = j0; j < j1; j++) {                                                    \
            T *x = at + j * m + j;                                                             \
            int64_t len = m - j;                                                               \
            double alpha = (double)x[0];                                                       \
            double xnorm = qr_nrm2_##SFX(x + 1, len - 1);                                      \
            double t = 0.0;                         /* xnorm == 0: H = I, beta = alpha */      \
            if (xnorm != 0.0) {                                                                \
                double beta = -copysign(hypot(alpha, xnorm), alpha);                           \
                t = (beta - alpha) / beta;                                                     \
                double d = alpha - beta;                                                       \
                for (int64_t i = 1; i < len; i++) x[i] = (T)((double)x[i] / d);                \
                x[0] = (T)beta;                                                                \
            }                                                                                  \
            tau[j] = (T)t;                                                                     \
            if (tau[j] != 0)                                                                   \
                for (int64_t k = j + 1; k < j1; k++)                                           \
                    qr_reflect_##SFX(at + k * m + j, x + 1, (double)tau[j], len);              \
        }                                                                                      \
        for (int64_t k = j1; k < n; k++)                                                       \
            for (int64_t j = j0; j < j1; j++)                                                  \
                if (tau[j] != 0)                                                               \
                    qr_reflect_##SFX(at + k * m + j, at + j * m + j + 1, (double)tau[j],       \
                                     m - j);                                                   \
    }                                                                                          \
                                                                                               \
    /* r = the upper triangle (sign fixed below) */                                            \
    for (int64_t i = 0; i < n; i++)                                                            \
        for (int64_t k = 0; k < n; k++) r[i * n + k] = k >= i ? at[k * m + i] : (T)0;          \
                                                                                               \
    /* dorg2r: Q^T built backwards in place over the reflectors. Step j applies H_j to         \
     * rows k > j (which then hold columns of H_{j+1}...H_{n-1} [I; 0], zero in elements       \
     * 0..j) and turns row j from v_j into H_j e_j. Same panels, walked backwards: the rows    \
     * after a panel get its reflectors (last to first) before the panel's own rows are        \
     * turned, which overwrites the v_j they need; each row again sees dorg2r's order. */      \
    for (int64_t j1 = n; j1 > 0; j1 = j1 > QR_NB ? j1 - QR_NB : 0) {                           \
        int64_t j0 = j1 > QR_NB ? j1 - QR_NB : 0;                                              \
        for (int64_t k = j1; k < n; k++)                                                       \
            for (int64_t j = j1 - 1; j >= j0; j--)                                             \
                if (tau[j] != 0)                                                               \
                    qr_reflect_##SFX(at + k * m + j, at + j * m + j + 1, (double)tau[j],       \
                                     m - j);                                                   \
        for (int64_t j = j1 - 1; j >= j0; j--) {                                               \
            T *x = at + j * m + j;                                                             \
            int64_t len = m - j;                                                               \
            double tj = (double)tau[j];                                                        \
            if (tj != 0.0)                                                                     \
                for (int64_t k = j + 1; k < j1; k++)                                           \
                    qr_reflect_##SFX(at + k * m + j, x + 1, tj, len);                          \
            for (int64_t i = 1; i < len; i++) x[i] = (T)(-tj * (double)x[i]);                  \
            x[0] = (T)(1.0 - tj);                                                              \
            for (int64_t l = 0; l < j; l++) at[j * m + l] = (T)0;                              \
        }                                                                                      \
    }                                                                                          \
                                                                                               \
    /* sign fix: s_j = -1 if r_jj < 0 else +1 (tau is no longer needed: reuse it for s) */     \
    T *s = tau;                                                                                \
    for (int64_t j = 0; j < n; j++) {                                                          \
        s[j] = r[j * n + j] < 0 ? (T)-1 : (T)1;                                                \
        for (int64_t k = j; k < n; k++) r[j * n + k] *= s[j];                                  \
    }                                                                                          \
    for (int64_t i = 0; i < m; i++)                                                            \
        for (int64_t j = 0; j < n; j++) q[i * n + j] = s[j] * at[j * m + i];                   \
    return 0;                                                                                  \
}

DEFINE_ORTHOGONAL(float, f32)
DEFINE_ORTHOGONAL(double, f64)
