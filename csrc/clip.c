/* clip.c -- gradient clipping (kernels/clip.py): the total norm of a list of arrays, scaling a list
 * of arrays in place, and clamping an array in place. The clip decision itself (max_norm, the 1e-6,
 * non-finite totals) lives in Python, shared by every backend.
 *
 * The norm is accumulated in double. The 2-norm takes one pass in the common case: per array, four
 * lanes of max|x| and sum(x*x) (lanes combined as (l0 + l1) + (l2 + l3), the tail going to lane 0);
 * the partials of the arrays are combined in array order (max, and a running sum from 0).
 * Only when max|x| is beyond 1e150 or below 1e-150 (or the sum of squares overflowed) a second pass
 * sums (x / max|x|)^2, LAPACK dnrm2 style, so squares that overflow or underflow double do not
 * matter; float32 inputs never need it (their squares always fit a double).
 * kernels/clip.py's Numba path mirrors this order exactly (per-array jitted partials, combined in
 * Python), so the two backends agree bit for bit. */
#include <float.h>
#include <math.h>
#include "deepprop.h"

#define CLIP_BIG 1e150
#define CLIP_SMALL 1e-150

/* max that does not skip NaN: a NaN a makes it NaN, and a NaN m stays NaN */
static inline double nanmax(double m, double a) { return (a > m || a != a) ? a : m; }

/* the total 2-norm from the combined one-pass partials; *need_scaled set when the second pass is due */
static double finish_2norm(double amax, double ssq, int *need_scaled) {
    *need_scaled = 0;
    if (amax != amax || ssq != ssq) return NAN;  /* a NaN element (its square is NaN too) */
    if (isinf(amax)) return INFINITY;
    if (amax == 0.0 || (amax >= CLIP_SMALL && amax <= CLIP_BIG && ssq <= DBL_MAX)) return sqrt(ssq);
    *need_scaled = 1;
    return 0.0;
}

#define DEFINE_CLIP(T, SFX)                                                                         \
static void partial_##SFX(double *amax, double *ssq, const T *x, int64_t n) {                       \
    /* x: (n,) -> max|x| (NaN if any NaN) and sum(x^2) in double */                                 \
    double m0 = 0.0, m1 = 0.0, m2 = 0.0, m3 = 0.0, s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;          \
    int64_t i = 0;                                                                                  \
    for (; i + 4 <= n; i += 4) {                                                                    \
        double a0 = fabs((double)x[i]), a1 = fabs((double)x[i + 1]);                                \
        double a2 = fabs((double)x[i + 2]), a3 = fabs((double)x[i + 3]);                            \
        m0 = nanmax(m0, a0); m1 = nanmax(m1, a1); m2 = nanmax(m2, a2); m3 = nanmax(m3, a3);         \
        s0 += a0 * a0; s1 += a1 * a1; s2 += a2 * a2; s3 += a3 * a3;                                 \
    }                                                                                               \
    for (; i < n; i++) {                                                                            \
        double a = fabs((double)x[i]);                                                              \
        m0 = nanmax(m0, a);                                                                         \
        s0 += a * a;                                                                                \
    }                                                                                               \
    *amax = nanmax(nanmax(m0, m1), nanmax(m2, m3));                                                 \
    *ssq = (s0 + s1) + (s2 + s3);                                                                   \
}                                                                                                   \
static double scaled_ssq_##SFX(const T *x, int64_t n, double scale) {                               \
    /* x: (n,) -> sum((x / scale)^2), scale = the max|x| of all arrays (finite, > 0) */             \
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;                                                  \
    int64_t i = 0;                                                                                  \
    for (; i + 4 <= n; i += 4) {                                                                    \
        double a0 = (double)x[i] / scale, a1 = (double)x[i + 1] / scale;                            \
        double a2 = (double)x[i + 2] / scale, a3 = (double)x[i + 3] / scale;                        \
        s0 += a0 * a0; s1 += a1 * a1; s2 += a2 * a2; s3 += a3 * a3;                                 \
    }                                                                                               \
    for (; i < n; i++) {                                                                            \
        double a = (double)x[i] / scale;                                                            \
        s0 += a * a;                                                                                \
    }                                                                                               \
    return (s0 + s1) + (s2 + s3);                                                                   \
}                                                                                                   \
void grad_norm_##SFX(double *total, const T *const *grads, const int64_t *sizes, int64_t count,     \
                     int inf_norm) {                                                                \
    /* grads[k]: (sizes[k],), k < count -> *total = 2-norm (or max|x| if inf_norm) of them all */   \
    double amax = 0.0, ssq = 0.0;                                                                   \
    for (int64_t k = 0; k < count; k++) {                                                           \
        double m, s;                                                                                \
        partial_##SFX(&m, &s, grads[k], sizes[k]);                                                  \
        amax = nanmax(amax, m);                                                                     \
        ssq += s;                                                                                   \
    }                                                                                               \
    if (inf_norm) { *total = amax; return; }                                                        \
    int need_scaled;                                                                                \
    double t = finish_2norm(amax, ssq, &need_scaled);                                               \
    if (need_scaled) {                                                                              \
        double s = 0.0;                                                                             \
        for (int64_t k = 0; k < count; k++) s += scaled_ssq_##SFX(grads[k], sizes[k], amax);        \
        t = amax * sqrt(s);                                                                         \
    }                                                                                               \
    *total = t;                                                                                     \
}                                                                                                   \
void scale_arrays_##SFX(T *const *grads, const int64_t *sizes, int64_t count, double factor) {      \
    /* grads[k]: (sizes[k],) *= factor, each element in double and rounded once */                  \
    for (int64_t k = 0; k < count; k++) {                                                           \
        T *x = grads[k];                                                                            \
        for (int64_t i = 0; i < sizes[k]; i++) x[i] = (T)((double)x[i] * factor);                   \
    }                                                                                               \
}                                                                                                   \
void clip_value_##SFX(T *x, int64_t n, double clip) {                                               \
    /* x: (n,) clamped to [-clip, clip] in place; NaN stays NaN (both comparisons are false) */     \
    const T hi = (T)clip, lo = (T)(-clip);                                                          \
    for (int64_t i = 0; i < n; i++) {                                                               \
        double v = (double)x[i];                                                                    \
        if (v > clip) x[i] = hi;                                                                    \
        else if (v < -clip) x[i] = lo;                                                              \
    }                                                                                               \
}

DEFINE_CLIP(float, f32)
DEFINE_CLIP(double, f64)
