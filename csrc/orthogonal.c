/* orthogonal.c -- thin Householder QR (kernels/orthogonal.py: qr, and orthogonal_init on it).
 *
 * LAPACK's blocked algorithm, written out by hand (no LAPACK call), with the library's own GEMM:
 *   dgeqrf  panel by panel of nb columns: the panel is factored unblocked (dgeqr2: reflector
 *           H_j = I - tau_j v_j v_j^T, v_j[0] = 1, beta = -sign(alpha) ||x|| from dlarfg, the norm
 *           over/underflow-safe), its reflectors are put in the compact WY form
 *           H_j0 ... H_j1-1 = I - V T V^T (dlarft: T upper triangular, from G = V^T V), and the
 *           trailing columns get H^T = I - V T^T V^T in two GEMMs (dlarfb);
 *   dorgqr  Q = H_0 ... H_n-1 [I_n; 0] backwards over the blocks: each block applies its H to the
 *           columns after it (two GEMMs) and forms its own columns as [I; 0] - V (T V1^T) (V1 the
 *           top nb x nb of V: one GEMM), instead of dorg2r's reflector-by-reflector loop;
 *   sign fix  s_j = -1 if r_jj < 0 else +1 (sign(0) = +1, and NaN gives +1);
 *           q[:, j] *= s_j, r[j, :] *= s_j: diag(r) >= 0, the factorization is unique.
 * nb = QR_BLOCK. Inside a panel, reflectors come in sub-panels of QR_NB = 8: a sub-panel is
 * factored reflector by reflector (dgeqr2), then its 8 reflectors, in their own WY form, are applied
 * to each later row of the panel at once (qr_wy8: two passes over the row instead of two per
 * reflector; AVX2 + FMA when the CPU has them, two rows at a time, else portable C).
 * For n <= QR_ONE_PANEL (small matrices) the whole matrix is one panel, factored as above, and Q is
 * formed backwards over the same sub-panels with qr_wy8 (dorg2r by WY blocks of 8): no GEMM, whose
 * full-square products would triple the flops at this size. A stack of matrices is factored one
 * after another in one call, reusing the scratch.
 *
 * Layout: a is row-major (m, n), so a column is strided by n, but every step of Householder QR
 * works on columns. So a is copied TRANSPOSED into work as at (n, m): row j of at is column j of
 * a (at is a in LAPACK's column-major layout, leading dimension m), and a panel's columns are
 * contiguous rows. The GEMMs take at's row blocks with the transposes they need (gemm.h). Q is
 * formed in place in at, still transposed, and transposed back into q at the end (tile by tile).
 *
 * Precision: the panel is copied into a double buffer P and factored there (norms, dot products,
 * updates in double, rounded once to T when written back), and V^T V, T, T V^T and the block's own
 * columns of Q are double GEMMs; the one-panel path (n <= 64) is double throughout. at, and the two trailing-update GEMMs per block (W = C V,
 * C -= W Z), are in the array's type: for float32 these accumulate in float32 (with FMA), as
 * LAPACK's sgeqrf/sorgqr do -- those GEMMs are ~90% of the flops at n = 1024. The reflectors are
 * rounded to T before T is formed, so the WY form and every update use the stored V exactly.
 * dlarfg's rescaling loop for a tiny beta is replaced by dividing x by (alpha - beta) instead of
 * multiplying by its reciprocal: |x_i| <= |alpha - beta|, so the quotient cannot overflow.
 * NaN/Inf are not checked: they propagate through the arithmetic (into r, and into q unless the
 * reflectors before them are trivial). Nothing is allocated: the caller passes
 * householder_qr_work(m, n) doubles of scratch. Returns 0, or -1 for sizes it cannot factor
 * (n < 0 or m < n; the Python wrappers never pass those).
 */
#include <math.h>
#include <string.h>
#include "deepprop.h"
#include "gemm.h"

/* reflectors per sub-panel inside the unblocked panel factorization: their 8 rows stay in L1 while
 * a later row of the panel is updated */
#define QR_NB 8
/* the block size nb of the blocked algorithm (the width of a panel = the depth of the rank-nb GEMM
 * updates), and the largest n factored as one single panel (no trailing update at all) */
#define QR_BLOCK 32
#define QR_ONE_PANEL 64

static int64_t qr_nb(int64_t n) { return n <= QR_ONE_PANEL ? n : QR_BLOCK; }

int64_t householder_qr_work(int64_t m, int64_t n) {
    /* doubles: at (m n, in T, rounded up to doubles), P, Zd, Qd, Vt, Zt (nb m each), W (n nb),
     * G (nb nb), tau (n), the T of every block (nblocks nb nb), V8 (8 m), the T8 of every
     * sub-panel of a panel and its transpose (nb / 8 + 1 of 2 x 8 x 8). One panel (n <= QR_ONE_PANEL) uses less. */
    if (n < 1 || m < n) return 1;
    int64_t nb = qr_nb(n), nblocks = (n + nb - 1) / nb;
    return m * n + 5 * nb * m + n * nb + nb * nb + n + nblocks * nb * nb + QR_NB * m +
           (nb / QR_NB + 1) * 2 * QR_NB * QR_NB;
}

/* ||x||_2 of x (len,), accumulated in double; scaled by max|x_i| only when the plain sum of squares
 * could have overflowed or lost digits to underflow (dnrm2 always scales). */
static double qr_nrm2(const double *x, int64_t len) {
    double s0 = 0.0, s1 = 0.0;
    int64_t i = 0;
    for (; i + 1 < len; i += 2) {
        s0 += x[i] * x[i];
        s1 += x[i + 1] * x[i + 1];
    }
    if (i < len) s0 += x[i] * x[i];
    double s = s0 + s1;
    if (s != s) return s;                                 /* NaN in x */
    if (s > 1e-280 && s < 1e280) return sqrt(s);          /* no overflow, no lost digits */
    /* 0, tiny or huge (maybe inf): scale by max|x_i|, which also tells all-zero x apart */
    double amax = 0.0;
    for (i = 0; i < len; i++) {
        double ax = fabs(x[i]);
        if (ax > amax) amax = ax;
    }
    if (amax == 0.0 || isinf(amax)) return amax;
    s = 0.0;
    for (i = 0; i < len; i++) {
        double t = x[i] / amax;
        s += t * t;
    }
    return amax * sqrt(s);
}

/* v^T c over len elements, in eight partial sums (one sum would be bound by the latency of its
 * adds) combined pairwise at the end */
static double qr_dot(const double *v, const double *c, int64_t len) {
    double s[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
    int64_t i = 0;
    for (; i + 7 < len; i += 8)
        for (int u = 0; u < 8; u++) s[u] += v[i + u] * c[i + u];
    for (; i < len; i++) s[0] += v[i] * c[i];
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

/* c = H c for H = I - tau v v^T, v = (1, vt[0..len-2]), c (len,): dlarf on one column */
static void qr_reflect(double *c, const double *vt, double tau, int64_t len) {
    double w = tau * (c[0] + qr_dot(vt, c + 1, len - 1));
    c[0] -= w;
    for (int64_t i = 1; i < len; i++) c[i] -= w * vt[i - 1];
}

/* ---- sub-panels of QR_NB = 8 reflectors in the compact WY form, applied row by row -------------
 * V8 (8, len) is V^T of a sub-panel (row a = v_a, zero before a, 1 at a), zero rows padding a
 * shorter one to 8; T8 (8, 8) upper triangular with H_0 ... H_7 = I - V T V^T (zero-padded too).
 * Applying it to one row c (len,) of the panel (a column of a) costs two passes over c instead of
 * two per reflector: w = V8 c (8 dot products at once: c is loaded once), w = op(T8) w, c -= V8^T w
 * (8 multiply-adds per element, c stored once). op = T8^T applies H^T (the factorization), T8
 * applies H (forming Q). The padding rows are zero, so the loops are always 8 wide. */

static void qr_v8(double *V8, const double *src, int64_t ld, int64_t ks, int64_t len) {
    /* src: row j0 of the panel from column j0 on (row stride ld), ks reflectors */
    for (int64_t a = 0; a < QR_NB; a++) {
        double *v = V8 + a * len;
        if (a >= ks) {
            for (int64_t i = 0; i < len; i++) v[i] = 0.0;
            continue;
        }
        const double *x = src + a * ld;
        for (int64_t i = 0; i < a; i++) v[i] = 0.0;
        v[a] = 1.0;
        for (int64_t i = a + 1; i < len; i++) v[i] = x[i];
    }
}

static void qr_t8(double *T8, const double *V8, const double *tau, int64_t ks, int64_t len) {
    /* dlarft: T_ii = tau_i, T[0:i, i] = -tau_i T[0:i, 0:i] (V^T v_i); v_i is zero before i.
     * T8 is followed by its transpose (T8 + 64), so both products below read rows. */
    for (int64_t a = 0; a < 2 * QR_NB * QR_NB; a++) T8[a] = 0.0;
    for (int64_t i = 0; i < ks; i++) {
        double g[QR_NB];
        for (int64_t c = 0; c < i; c++) g[c] = qr_dot(V8 + c * len + i, V8 + i * len + i, len - i);
        for (int64_t r = 0; r < i; r++) {
            double t = 0.0;
            for (int64_t c = r; c < i; c++) t += T8[r * QR_NB + c] * g[c];
            T8[r * QR_NB + i] = -tau[i] * t;
        }
        T8[i * QR_NB + i] = tau[i];
    }
    for (int a = 0; a < QR_NB; a++)
        for (int b = 0; b < QR_NB; b++) T8[QR_NB * QR_NB + a * QR_NB + b] = T8[b * QR_NB + a];
}

/* c = c - V8^T (M^T (V8 c)) for c (len,): M = T8 applies H^T (the factorization), M = T8^T applies H
 * (forming Q). y = M^T w is a sum of rows of M: y = sum_b w_b M[b, :]. */
static void qr_wy8_row(double *c, const double *V8, const double *M, int64_t len) {
    double w[QR_NB], y[QR_NB] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
    for (int a = 0; a < QR_NB; a++) w[a] = qr_dot(V8 + a * len, c, len);
    for (int b = 0; b < QR_NB; b++)
        for (int a = 0; a < QR_NB; a++) y[a] += w[b] * M[b * QR_NB + a];
    for (int64_t i = 0; i < len; i++) {
        double t = c[i];
        for (int a = 0; a < QR_NB; a++) t -= V8[a * len + i] * y[a];
        c[i] = t;
    }
}

/* the same on rows c + k ldc, k < rows, of a panel */
static void qr_wy8_portable(double *c, int64_t ldc, int64_t rows, const double *V8, const double *M,
                            int64_t len) {
    for (int64_t k = 0; k < rows; k++) qr_wy8_row(c + k * ldc, V8, M, len);
}

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#include <immintrin.h>
#define QR_X86 1
/* the same with AVX2 + FMA, 4 doubles a vector, on R = 1 or 2 rows c_r = c + r ldc at once (two
 * rows share every load of V8). Reflectors in two halves of 4, so the accumulators (4 R) and the
 * broadcasts of y (4 R) stay in registers: the dot products (w = V8 c, 4 R accumulators reduced by
 * hadd + lane swaps), y = M^T w in vectors, then the fused multiply-subtracts c -= V8^T y. The
 * last len % 4 elements go through masked loads and stores (zeros beyond the end), so every
 * element takes the same vector path. */
#define QR_WY8_AVX2(NAME, R)                                                                          \
__attribute__((target("avx2,fma"))) static void NAME(double *c, int64_t ldc, const double *V8,         \
                                                    const double *M, int64_t len) {                   \
    const int64_t full = len & ~(int64_t)3, rem = len - full;                                         \
    const __m256i mask = _mm256_cmpgt_epi64(_mm256_set1_epi64x(rem), _mm256_setr_epi64x(0, 1, 2, 3)); \
    __m256d w[R][2], y[R][2];                                                                         \
    for (int h = 0; h < 2; h++) {                                                                     \
        const double *v = V8 + 4 * h * len;                                                           \
        __m256d acc[R][4];                                                                            \
        for (int r = 0; r < R; r++)                                                                   \
            for (int a = 0; a < 4; a++) acc[r][a] = _mm256_setzero_pd();                              \
        for (int64_t i = 0; i <= full; i += 4) {                                                      \
            if (i == full && !rem) break;                                                             \
            __m256d x[R];                                                                             \
            for (int r = 0; r < R; r++)                                                               \
                x[r] = i < full ? _mm256_loadu_pd(c + r * ldc + i) : _mm256_maskload_pd(c + r * ldc + i, mask); \
            for (int a = 0; a < 4; a++) {                                                             \
                const __m256d va = i < full ? _mm256_loadu_pd(v + a * len + i)                       \
                                            : _mm256_maskload_pd(v + a * len + i, mask);              \
                for (int r = 0; r < R; r++) acc[r][a] = _mm256_fmadd_pd(va, x[r], acc[r][a]);         \
            }                                                                                         \
        }                                                                                             \
        for (int r = 0; r < R; r++) {                                                                 \
            const __m256d t0 = _mm256_hadd_pd(acc[r][0], acc[r][1]);                                  \
            const __m256d t1 = _mm256_hadd_pd(acc[r][2], acc[r][3]);                                  \
            w[r][h] = _mm256_add_pd(_mm256_permute2f128_pd(t0, t1, 0x20),                             \
                                    _mm256_permute2f128_pd(t0, t1, 0x31));                            \
        }                                                                                             \
    }                                                                                                 \
    for (int r = 0; r < R; r++) {                                                                     \
        __m256d wb[QR_NB];                                                                            \
        for (int h = 0; h < 2; h++) {                                                                 \
            wb[4 * h] = _mm256_permute4x64_pd(w[r][h], 0x00);                                         \
            wb[4 * h + 1] = _mm256_permute4x64_pd(w[r][h], 0x55);                                     \
            wb[4 * h + 2] = _mm256_permute4x64_pd(w[r][h], 0xAA);                                     \
            wb[4 * h + 3] = _mm256_permute4x64_pd(w[r][h], 0xFF);                                     \
        }                                                                                             \
        y[r][0] = y[r][1] = _mm256_setzero_pd();                                                      \
        for (int b = 0; b < QR_NB; b++) {                                                             \
            y[r][0] = _mm256_fmadd_pd(wb[b], _mm256_loadu_pd(M + b * QR_NB), y[r][0]);                \
            y[r][1] = _mm256_fmadd_pd(wb[b], _mm256_loadu_pd(M + b * QR_NB + 4), y[r][1]);            \
        }                                                                                             \
    }                                                                                                 \
    for (int h = 0; h < 2; h++) {                                                                     \
        const double *v = V8 + 4 * h * len;                                                           \
        __m256d yb[R][4];                                                                             \
        for (int r = 0; r < R; r++) {                                                                 \
            yb[r][0] = _mm256_permute4x64_pd(y[r][h], 0x00);                                          \
            yb[r][1] = _mm256_permute4x64_pd(y[r][h], 0x55);                                          \
            yb[r][2] = _mm256_permute4x64_pd(y[r][h], 0xAA);                                          \
            yb[r][3] = _mm256_permute4x64_pd(y[r][h], 0xFF);                                          \
        }                                                                                             \
        for (int64_t i = 0; i <= full; i += 4) {                                                      \
            if (i == full && !rem) break;                                                             \
            __m256d x[R];                                                                             \
            for (int r = 0; r < R; r++)                                                               \
                x[r] = i < full ? _mm256_loadu_pd(c + r * ldc + i) : _mm256_maskload_pd(c + r * ldc + i, mask); \
            for (int a = 0; a < 4; a++) {                                                             \
                const __m256d va = i < full ? _mm256_loadu_pd(v + a * len + i)                        \
                                            : _mm256_maskload_pd(v + a * len + i, mask);              \
                for (int r = 0; r < R; r++) x[r] = _mm256_fnmadd_pd(va, yb[r][a], x[r]);              \
            }                                                                                         \
            for (int r = 0; r < R; r++) {                                                             \
                if (i < full) _mm256_storeu_pd(c + r * ldc + i, x[r]);                                \
                else _mm256_maskstore_pd(c + r * ldc + i, mask, x[r]);                                \
            }                                                                                         \
        }                                                                                             \
    }                                                                                                 \
}
QR_WY8_AVX2(qr_wy8_avx2_1, 1)
QR_WY8_AVX2(qr_wy8_avx2_2, 2)

/* rows k0..k1-1 of a panel (row stride ldc), two at a time */
__attribute__((target("avx2,fma"))) static void qr_wy8_avx2(double *c, int64_t ldc, int64_t rows,
                                                           const double *V8, const double *M, int64_t len) {
    int64_t k = 0;
    for (; k + 2 <= rows; k += 2) qr_wy8_avx2_2(c + k * ldc, ldc, V8, M, len);
    if (k < rows) qr_wy8_avx2_1(c + k * ldc, ldc, V8, M, len);
}
#else
#define QR_X86 0
#endif

typedef void (*qr_wy8_fn)(double *, int64_t, int64_t, const double *, const double *, int64_t);

/* AVX2 + FMA when the CPU has them and the GEMM was not forced to its portable path
 * (DEEPPROP_GEMM_ISA=portable runs every vector path of the library portable, for the tests).
 * Chosen on every call: the check is a few instructions next to a QR. */
static qr_wy8_fn qr_wy8_choose(void) {
#if QR_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        strncmp(gemm_isa(), "portable", 8) != 0)
        return qr_wy8_avx2;
#endif
    return qr_wy8_portable;
}

/* dgeqr2 on a panel P (nb, L), L >= nb, row-major: row j of P is column j of the panel, so every
 * inner loop runs over contiguous memory. Afterwards row j holds r_0j .. r_j-1,j, beta_j = r_jj,
 * then v_j below the diagonal; tau (nb,); T8s the T8 of every sub-panel (8 x 8 each, and its transpose); V8 scratch
 * (8, L). Sub-panel by sub-panel: its reflectors come from its rows one after another (dgeqr2),
 * then every later row of the panel gets all 8 at once in the WY form. */
static void qr_panel(qr_wy8_fn wy8, double *P, double *tau, double *T8s, double *V8, int64_t nb, int64_t L) {
    for (int64_t j0 = 0; j0 < nb; j0 += QR_NB) {
        int64_t j1 = j0 + QR_NB < nb ? j0 + QR_NB : nb;
        for (int64_t j = j0; j < j1; j++) {
            double *x = P + j * L + j;
            int64_t len = L - j;
            double alpha = x[0];
            double xnorm = qr_nrm2(x + 1, len - 1);
            double t = 0.0;                         /* xnorm == 0: H = I, beta = alpha */
            if (xnorm != 0.0) {
                double beta = -copysign(hypot(alpha, xnorm), alpha);
                t = (beta - alpha) / beta;
                /* dlarfg rescales x when beta is tiny; dividing by alpha - beta instead of
                 * multiplying by its reciprocal cannot overflow, as |x_i| <= |alpha - beta| */
                double d = alpha - beta;
                for (int64_t i = 1; i < len; i++) x[i] /= d;
                x[0] = beta;
            }
            tau[j] = t;
            if (t != 0.0)
                for (int64_t k = j + 1; k < j1; k++) qr_reflect(P + k * L + j, x + 1, t, len);
        }
        double *T8 = T8s + (j0 / QR_NB) * 2 * QR_NB * QR_NB;
        qr_v8(V8, P + j0 * L + j0, L, j1 - j0, L - j0);
        qr_t8(T8, V8, tau + j0, j1 - j0, L - j0);
        if (j1 < nb) wy8(P + j1 * L + j0, L, nb - j1, V8, T8, L - j0);
    }
}

/* dorg2r for a matrix factored as one panel P (n, L) by qr_panel: P becomes Q^T (row k = column k
 * of Q = H_0 ... H_n-1 [I_n; 0]), backwards over the sub-panels: a sub-panel's rows start as e_k,
 * then it and every row after it (columns of Q already formed, zero before its column j1) get
 * its H in the WY form. */
static void qr_org_panel(qr_wy8_fn wy8, double *P, const double *T8s, double *V8, int64_t n, int64_t L) {
    for (int64_t j0 = (n - 1) / QR_NB * QR_NB; j0 >= 0; j0 -= QR_NB) {
        int64_t j1 = j0 + QR_NB < n ? j0 + QR_NB : n;
        qr_v8(V8, P + j0 * L + j0, L, j1 - j0, L - j0);
        for (int64_t k = j0; k < j1; k++) {
            double *row = P + k * L;
            for (int64_t i = 0; i < L; i++) row[i] = 0.0;
            row[k] = 1.0;
        }
        const double *T8 = T8s + (j0 / QR_NB) * 2 * QR_NB * QR_NB;
        wy8(P + j0 * L + j0, L, n - j0, V8, T8 + QR_NB * QR_NB, L - j0);
    }
}

/* the compact WY form H_0 ... H_nb-1 = I - V T V^T (dlarft, forward, columnwise), T upper
 * triangular, from G = V^T V: T_ii = tau_i, T[0:i, i] = -tau_i T[0:i, 0:i] G[0:i, i]. Stored
 * TRANSPOSED, as Lt = T^T (nb, nb) lower triangular: row i of Lt is column i of T, so the product
 * is a sum of earlier rows of Lt (contiguous, independent lanes) rather than strided dot products
 * each bound by the latency of its adds. G is symmetric: its row i is its column i. */
static void qr_larft(double *Lt, const double *G, const double *tau, int64_t nb) {
    for (int64_t i = 0; i < nb; i++) {
        double *y = Lt + i * nb;
        for (int64_t r = 0; r < nb; r++) y[r] = 0.0;
        for (int64_t c = 0; c < i; c++) {
            const double g = G[i * nb + c], *lc = Lt + c * nb;
            for (int64_t r = 0; r <= c; r++) y[r] += lc[r] * g;
        }
        for (int64_t r = 0; r < i; r++) y[r] *= -tau[i];
        y[i] = tau[i];
    }
}

/* the GEMM operands in the array's type: a float copy for f32, the double buffer itself for f64 */
static const float *qr_as_f32(float *dst, const double *src, int64_t len) {
    for (int64_t i = 0; i < len; i++) dst[i] = (float)src[i];
    return dst;
}
static const double *qr_as_f64(double *dst, const double *src, int64_t len) {
    (void)dst, (void)len;
    return src;
}

#define QR_TILE 32   /* the transposing copies go tile by tile, so both sides stay in cache */

#define DEFINE_ORTHOGONAL(T, SFX)                                                                   \
static void qr_one_##SFX(T *q, T *r, double *work, const T *a, int64_t m, int64_t n) {             \
    /* q (m, n), r (n, n), a (m, n) with m >= n >= 1; work (householder_qr_work(m, n) doubles) */   \
    const int64_t nb = qr_nb(n), nblocks = (n + nb - 1) / nb;                                       \
    const qr_wy8_fn wy8 = qr_wy8_choose();                                                          \
    if (n <= QR_ONE_PANEL) {                                                                        \
        /* one panel, all in double: P (n, m) = a transposed; factor; r; Q^T in place; q */         \
        double *P = work, *tau = P + m * n, *V8 = tau + n, *T8s = V8 + QR_NB * m;                   \
        for (int64_t i = 0; i < m; i++)                                                             \
            for (int64_t k = 0; k < n; k++) P[k * m + i] = (double)a[i * n + k];                    \
        qr_panel(wy8, P, tau, T8s, V8, n, m);                                                       \
        for (int64_t i = 0; i < n; i++) {                                                           \
            const double s = P[i * m + i] < 0 ? -1.0 : 1.0;      /* the sign fix, s_i */          \
            for (int64_t k = 0; k < n; k++) r[i * n + k] = k >= i ? (T)(s * P[k * m + i]) : (T)0;   \
            tau[i] = s;                                                                             \
        }                                                                                           \
        qr_org_panel(wy8, P, T8s, V8, n, m);                                                        \
        for (int64_t i = 0; i < m; i++)                                                             \
            for (int64_t k = 0; k < n; k++) q[i * n + k] = (T)(tau[k] * P[k * m + i]);             \
        return;                                                                                     \
    }                                                                                               \
    T *at = (T *)work;                                  /* (n, m): a transposed, then Q^T */        \
    double *P = work + m * n, *Zd = P + nb * m, *Qd = Zd + nb * m;      /* (nb, m) each */          \
    T *Vt = (T *)(Qd + nb * m), *Zt = (T *)(Qd + 2 * nb * m);           /* (nb, m) each */          \
    T *W = (T *)(Qd + 3 * nb * m);                                      /* (n, nb) */               \
    double *G = Qd + 3 * nb * m + n * nb, *tau = G + nb * nb, *Tall = tau + n;                      \
    double *V8 = Tall + nblocks * nb * nb, *T8s = V8 + QR_NB * m;                                   \
    for (int64_t i0 = 0; i0 < m; i0 += QR_TILE)                                                     \
        for (int64_t k0 = 0; k0 < n; k0 += QR_TILE)                                                 \
            for (int64_t i = i0; i < m && i < i0 + QR_TILE; i++)                                    \
                for (int64_t k = k0; k < n && k < k0 + QR_TILE; k++) at[k * m + i] = a[i * n + k];  \
                                                                                                    \
    /* dgeqrf: panel by panel. Block b covers columns j0..j1-1 of a (rows j0..j1-1 of at) and       \
     * rows j0..m-1 of a, so its panel is P (kb, L = m - j0) */                                     \
    for (int64_t b = 0; b < nblocks; b++) {                                                         \
        const int64_t j0 = b * nb, kb = n - j0 < nb ? n - j0 : nb, j1 = j0 + kb, L = m - j0;        \
        for (int64_t j = 0; j < kb; j++)                                                            \
            for (int64_t i = 0; i < L; i++) P[j * L + i] = (double)at[(j0 + j) * m + j0 + i];       \
        qr_panel(wy8, P, tau + j0, T8s, V8, kb, L);                                                               \
        /* back into at (r and the reflectors, in T), and P becomes V^T with its zeros and ones;   \
         * the reflectors rounded to T, so T below and every update use the stored V exactly */    \
        for (int64_t j = 0; j < kb; j++) {                                                          \
            double *p = P + j * L;                                                                  \
            T *dst = at + (j0 + j) * m + j0;                                                        \
            for (int64_t i = 0; i < L; i++) dst[i] = (T)p[i];                                       \
            for (int64_t i = 0; i < j; i++) p[i] = 0.0;                                             \
            p[j] = 1.0;                                                                             \
            for (int64_t i = j + 1; i < L; i++) p[i] = (double)dst[i];                              \
        }                                                                                           \
        double *Tm = Tall + b * nb * nb;                                                            \
        gemm_f64(GEMM_NOTRANS, GEMM_TRANS, kb, kb, L, 1.0, P, L, P, L, 0.0, G, kb, NULL, NULL);     \
        qr_larft(Tm, G, tau + j0, kb);                                                              \
        if (j1 < n) {                                                                               \
            /* trailing columns: A2 = H^T A2 = A2 - V T^T V^T A2, i.e. on the rows C = A2^T of      \
             * at: C -= (C V) (T V^T), two GEMMs in T (W = C V, then C -= W Z) */                   \
            gemm_f64(GEMM_TRANS, GEMM_NOTRANS, kb, L, kb, 1.0, Tm, kb, P, L, 0.0, Zd, L, NULL,    \
                     NULL);                                                                         \
            const T *vt = qr_as_##SFX(Vt, P, kb * L), *zt = qr_as_##SFX(Zt, Zd, kb * L);            \
            T *C = at + j1 * m + j0;                                                                \
            gemm_##SFX(GEMM_NOTRANS, GEMM_TRANS, n - j1, kb, L, (T)1, C, m, vt, L, (T)0, W, kb,     \
                       NULL, NULL);                                                                 \
            gemm_##SFX(GEMM_NOTRANS, GEMM_NOTRANS, n - j1, L, kb, (T)-1, W, kb, zt, L, (T)1, C, m, \
                       NULL, NULL);                                                                 \
        }                                                                                           \
    }                                                                                               \
                                                                                                    \
    /* r = the upper triangle (sign fixed below), tile by tile like the other transposing copies */ \
    for (int64_t i0 = 0; i0 < n; i0 += QR_TILE)                                                     \
        for (int64_t k0 = 0; k0 < n; k0 += QR_TILE)                                                 \
            for (int64_t i = i0; i < n && i < i0 + QR_TILE; i++)                                    \
                for (int64_t k = k0; k < n && k < k0 + QR_TILE; k++)                                \
                    r[i * n + k] = k >= i ? at[k * m + i] : (T)0;                                   \
                                                                                                    \
    /* dorgqr: Q = H_0 ... H_n-1 [I_n; 0], backwards over the blocks, in place in at (row k of     \
     * at becomes column k of Q). Block b applies H = I - V T V^T to the columns after it          \
     * (which are zero in its rows j0..j1-1 and above), C2 -= (C2 V) (T^T V^T), and forms its own  \
     * columns as H [I; 0] = [I; 0] - V T V1^T (V1 = the top kb x kb of V), all with GEMMs */       \
    for (int64_t b = nblocks - 1; b >= 0; b--) {                                                    \
        const int64_t j0 = b * nb, kb = n - j0 < nb ? n - j0 : nb, j1 = j0 + kb, L = m - j0;        \
        for (int64_t j = 0; j < kb; j++) {                                                          \
            double *p = P + j * L;                                                                  \
            const T *src = at + (j0 + j) * m + j0;                                                  \
            for (int64_t i = 0; i < j; i++) p[i] = 0.0;                                             \
            p[j] = 1.0;                                                                             \
            for (int64_t i = j + 1; i < L; i++) p[i] = (double)src[i];                              \
        }                                                                                           \
        const double *Tm = Tall + b * nb * nb;                                                      \
        gemm_f64(GEMM_NOTRANS, GEMM_NOTRANS, kb, L, kb, 1.0, Tm, kb, P, L, 0.0, Zd, L, NULL, NULL);   \
        if (j1 < n) {                                                                               \
            const T *vt = qr_as_##SFX(Vt, P, kb * L), *zt = qr_as_##SFX(Zt, Zd, kb * L);            \
            T *C = at + j1 * m + j0;                                                                \
            gemm_##SFX(GEMM_NOTRANS, GEMM_TRANS, n - j1, kb, L, (T)1, C, m, vt, L, (T)0, W, kb,     \
                       NULL, NULL);                                                                 \
            gemm_##SFX(GEMM_NOTRANS, GEMM_NOTRANS, n - j1, L, kb, (T)-1, W, kb, zt, L, (T)1, C, m, \
                       NULL, NULL);                                                                 \
        }                                                                                           \
        memset(Qd, 0, (size_t)(kb * L) * sizeof(double));                                          \
        for (int64_t j = 0; j < kb; j++) Qd[j * L + j] = 1.0;                                       \
        gemm_f64(GEMM_TRANS, GEMM_NOTRANS, kb, L, kb, -1.0, P, L, Zd, L, 1.0, Qd, L, NULL, NULL);   \
        for (int64_t j = 0; j < kb; j++) {                                                          \
            T *row = at + (j0 + j) * m;                                                             \
            for (int64_t i = 0; i < j0; i++) row[i] = (T)0;                                         \
            for (int64_t i = 0; i < L; i++) row[j0 + i] = (T)Qd[j * L + i];                         \
        }                                                                                           \
    }                                                                                               \
                                                                                                    \
    /* sign fix: s_j = -1 if r_jj < 0 else +1 (tau is no longer needed: reuse it for s) */          \
    double *s = tau;                                                                                \
    for (int64_t j = 0; j < n; j++) {                                                               \
        s[j] = r[j * n + j] < 0 ? -1.0 : 1.0;                                                       \
        for (int64_t k = j; k < n; k++) r[j * n + k] = (T)(s[j] * r[j * n + k]);                    \
    }                                                                                               \
    for (int64_t i0 = 0; i0 < m; i0 += QR_TILE)                                                     \
        for (int64_t k0 = 0; k0 < n; k0 += QR_TILE)                                                 \
            for (int64_t i = i0; i < m && i < i0 + QR_TILE; i++)                                    \
                for (int64_t k = k0; k < n && k < k0 + QR_TILE; k++)                                \
                    q[i * n + k] = (T)(s[k] * at[k * m + i]);                                       \
}                                                                                                   \
                                                                                                    \
int householder_qr_##SFX(T *q, T *r, double *work, const T *a, int64_t batch, int64_t m, int64_t n) { \
    /* q (batch, m, n), r (batch, n, n), a (batch, m, n): one QR after another, work reused */      \
    if (batch < 0 || n < 0 || m < n) return -1;                                                     \
    if (n == 0) return 0;                                                                           \
    for (int64_t b = 0; b < batch; b++)                                                             \
        qr_one_##SFX(q + b * m * n, r + b * n * n, work, a + b * m * n, m, n);                      \
    return 0;                                                                                       \
}

DEFINE_ORTHOGONAL(float, f32)
DEFINE_ORTHOGONAL(double, f64)
