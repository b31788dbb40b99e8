/* clip.c -- gradient clipping (kernels/clip.py): the total norm of a list of arrays, scaling a list
 * of arrays in place, and clamping an array in place. The clip decision itself (max_norm, the 1e-6,
 * non-finite totals) lives in Python, shared by every backend.
 *
 * These are memory-bound sweeps (clip_grad_norm over 50M float32 values: one read pass for the norm,
 * one read + write pass for the scale), so the loops aim at streaming bandwidth: AVX2 loops chosen at
 * run time, with software prefetch. (Scaling in reverse order, to start on what the norm pass left in
 * the caches, measured slower: the backward jumps cost the hardware prefetcher more than it saved.)
 *
 * The norm is accumulated in double. The 2-norm takes one pass in the common case: per array, 16
 * lanes of sum(x*x) (element i in lane i % 16, a square then an add: no FMA, so every path rounds
 * alike) and of max|x| (ignoring NaN), the lanes combined in a fixed tree (lane_sum); the partials of
 * the arrays are combined in array order (max, and a running sum from 0). A NaN element makes the sum
 * of squares NaN (squares are >= 0: no inf - inf), so the NaN of max|x| is taken from there.
 * float32 2-norms skip max|x|: float32 squares always fit a double, the sum of 2^63 of them too.
 * Only when max|x| is beyond 1e150 or below 1e-150 (or the sum of squares overflowed) a second pass
 * sums (x / max|x|)^2, LAPACK dnrm2 style, so squares that overflow or underflow double do not
 * matter. kernels/clip.py's Numba path mirrors this order exactly (per-array jitted partials,
 * combined in Python), so the backends agree bit for bit.
 *
 * Paths, chosen once per process (clip_isa(); DEEPPROP_CLIP_ISA=portable|avx2 overrides): avx2
 * (intrinsics, __attribute__((target)), used when __builtin_cpu_supports says the CPU and OS run
 * it), and portable C that the compiler vectorises for the baseline ISA. Both do the same operations
 * in the same order: their results are bitwise equal (tests/test_clip.py checks it).
 *
 * Threads (OpenMP; team.h decides: omp_get_max_threads() threads from CLIP_THREAD_MIN_VALUES values on,
 * one below, where starting a team costs more than it saves): the norm's per-array partials are
 * computed by a team, array by array (dynamic schedule: arrays differ in size), into a buffer, and then
 * combined in array order as above; scaling and clamping split each array into contiguous slices, one
 * per thread. Nothing is split differently for a different team size, so the results are bit for bit
 * those of one thread (tests/test_clip.py checks 1 vs 2 threads). One array's norm runs on one thread:
 * splitting it would change its lane order, which the Numba path mirrors.
 */
#include <float.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include "deepprop.h"
#include "isa_path.h"
#include "team.h"

#if defined(__x86_64__) || defined(__i386__)
#define CLIP_X86 1
#include <immintrin.h>
#else
#define CLIP_X86 0
#endif

#define CLIP_BIG 1e150
#define CLIP_SMALL 1e-150
#define LANES 16
/* ~4 MB of float32, a few hundred microseconds of one core; DEEPPROP_CLIP_THREAD_MIN_VALUES overrides
 * it (the tests set 0 to thread every call) */
#define CLIP_THREAD_MIN_VALUES (1 << 20)
static atomic_llong thread_min_values = -1;
static int clip_team_size(double values) {
    return dp_team_size(values, (double)dp_team_min_work(&thread_min_values, "DEEPPROP_CLIP_THREAD_MIN_VALUES",
                                                         CLIP_THREAD_MIN_VALUES));
}

/* ---- run-time path ------------------------------------------------------------------------------ */

DP_DEFINE_ISA_PATH(clip, "DEEPPROP_CLIP_ISA", 0)

/* ---- helpers ------------------------------------------------------------------------------------ */

/* max that does not skip NaN: a NaN a makes it NaN, and a NaN m stays NaN */
static inline double nanmax(double m, double a) { return (a > m || a != a) ? a : m; }

/* the 16 lane sums combined: the tree the avx2 path's 4 x 4 registers give */
static inline double lane_sum(const double *s) {
    double t[4];
    for (int k = 0; k < 4; k++) t[k] = (s[k] + s[4 + k]) + (s[8 + k] + s[12 + k]);
    return (t[0] + t[2]) + (t[1] + t[3]);
}

static inline double lane_max(const double *m) {  /* max ignoring NaN, exact in any order */
    double r = 0.0;
    for (int k = 0; k < LANES; k++) r = m[k] > r ? m[k] : r;
    return r;
}

/* the total 2-norm from the combined one-pass partials; *need_scaled set when the second pass is due */
static double finish_2norm(double amax, double ssq, int *need_scaled) {
    *need_scaled = 0;
    if (amax != amax || ssq != ssq) return NAN;  /* a NaN element (its square is NaN too) */
    if (isinf(amax)) return INFINITY;
    if (amax == 0.0 || (amax >= CLIP_SMALL && amax <= CLIP_BIG && ssq <= DBL_MAX)) return sqrt(ssq);
    *need_scaled = 1;
    return 0.0;
}

/* ---- portable loops: s[16] += x^2 lane-wise, m[16] = max(m, |x|) ignoring NaN ------------------- */

#define DEFINE_PORTABLE(T, SFX)                                                                     \
static void ssq_portable_##SFX(double *s, const T *x, int64_t n) {                                  \
    /* x: (n,), n a multiple of 16 -> s[l] += sum of x[i]^2 over i % 16 == l */                     \
    for (int64_t i = 0; i < n; i += LANES)                                                          \
        for (int l = 0; l < LANES; l++) { const double d = (double)x[i + l]; s[l] += d * d; }       \
}                                                                                                   \
static void maxssq_portable_##SFX(double *m, double *s, const T *x, int64_t n) {                    \
    /* x: (n,), n a multiple of 16 -> s as above, m[l] = max(m[l], |x[i]|) (NaN x skipped) */       \
    for (int64_t i = 0; i < n; i += LANES)                                                          \
        for (int l = 0; l < LANES; l++) {                                                           \
            const double d = (double)x[i + l], a = fabs(d);                                         \
            s[l] += d * d;                                                                          \
            m[l] = a > m[l] ? a : m[l];                                                             \
        }                                                                                           \
}                                                                                                   \
static void scale_portable_##SFX(T *x, int64_t n, double factor) {                                  \
    /* x: (n,) *= factor in double, rounded once */                                                 \
    for (int64_t i = 0; i < n; i++) x[i] = (T)((double)x[i] * factor);                              \
}                                                                                                   \
static void clamp_portable_##SFX(T *x, int64_t n, double clip) {                                    \
    /* x: (n,) clamped to [-clip, clip]; NaN and values inside are stored back unchanged */         \
    const T hi = (T)clip, lo = (T)(-clip);                                                          \
    for (int64_t i = 0; i < n; i++) {                                                               \
        const double v = (double)x[i];                                                              \
        x[i] = v > clip ? hi : (v < -clip ? lo : x[i]);                                             \
    }                                                                                               \
}
DEFINE_PORTABLE(float, f32)
DEFINE_PORTABLE(double, f64)

/* ---- avx2 loops: the same operations, 4 ymm registers of 4 double lanes each -------------------- */

#if CLIP_X86
#define AVX2 __attribute__((target("avx2")))
/* software prefetch PF_AHEAD bytes ahead, once per 64-byte line: a single core's memory bandwidth is
 * bounded by the misses it keeps in flight, and the conversion-heavy loops fill the out-of-order
 * window with fewer lines than a plain copy would (measured: ~10% faster streaming) */
#define PF_AHEAD 2048
#define PREFETCH(p) _mm_prefetch((const char *)(p) + PF_AHEAD, _MM_HINT_T0)

/* 16 elements at x as 4 x 4 doubles (lanes 0-3, 4-7, 8-11, 12-15) */
AVX2 static inline void load16_f32(__m256d *d, const float *x) {
    const __m256 a = _mm256_loadu_ps(x), b = _mm256_loadu_ps(x + 8);
    d[0] = _mm256_cvtps_pd(_mm256_castps256_ps128(a));
    d[1] = _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1));
    d[2] = _mm256_cvtps_pd(_mm256_castps256_ps128(b));
    d[3] = _mm256_cvtps_pd(_mm256_extractf128_ps(b, 1));
}
AVX2 static inline void load16_f64(__m256d *d, const double *x) {
    for (int k = 0; k < 4; k++) d[k] = _mm256_loadu_pd(x + 4 * k);
}

#define DEFINE_AVX2(T, SFX)                                                                         \
AVX2 static void ssq_avx2_##SFX(double *s, const T *x, int64_t n) {                                 \
    __m256d acc[4], d[4];                                                                           \
    for (int k = 0; k < 4; k++) acc[k] = _mm256_loadu_pd(s + 4 * k);                                \
    for (int64_t i = 0; i < n; i += LANES) {                                                        \
        PREFETCH(x + i);                                                                            \
        load16_##SFX(d, x + i);                                                                     \
        for (int k = 0; k < 4; k++) acc[k] = _mm256_add_pd(acc[k], _mm256_mul_pd(d[k], d[k]));     \
    }                                                                                               \
    for (int k = 0; k < 4; k++) _mm256_storeu_pd(s + 4 * k, acc[k]);                                \
}                                                                                                   \
AVX2 static void maxssq_avx2_##SFX(double *m, double *s, const T *x, int64_t n) {                   \
    const __m256d absmask = _mm256_castsi256_pd(_mm256_set1_epi64x(0x7fffffffffffffffLL));          \
    __m256d acc[4], mx[4], d[4];                                                                    \
    for (int k = 0; k < 4; k++) { acc[k] = _mm256_loadu_pd(s + 4 * k); mx[k] = _mm256_loadu_pd(m + 4 * k); } \
    for (int64_t i = 0; i < n; i += LANES) {                                                        \
        PREFETCH(x + i);                                                                            \
        load16_##SFX(d, x + i);                                                                     \
        for (int k = 0; k < 4; k++) {                                                               \
            acc[k] = _mm256_add_pd(acc[k], _mm256_mul_pd(d[k], d[k]));                              \
            /* maxpd(a, m) returns m when a is NaN: the portable a > m ? a : m */                   \
            mx[k] = _mm256_max_pd(_mm256_and_pd(d[k], absmask), mx[k]);                             \
        }                                                                                           \
    }                                                                                               \
    for (int k = 0; k < 4; k++) { _mm256_storeu_pd(s + 4 * k, acc[k]); _mm256_storeu_pd(m + 4 * k, mx[k]); } \
}
DEFINE_AVX2(float, f32)
DEFINE_AVX2(double, f64)

AVX2 static void scale_avx2_f32(float *x, int64_t n, double factor) {
    const __m256d f = _mm256_set1_pd(factor);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        PREFETCH(x + i);
        __m256d d[4];
        for (int k = 0; k < 4; k++) d[k] = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 4 * k));
        for (int k = 0; k < 4; k++) _mm_storeu_ps(x + i + 4 * k, _mm256_cvtpd_ps(_mm256_mul_pd(d[k], f)));
    }
    scale_portable_f32(x + i, n - i, factor);
}
AVX2 static void scale_avx2_f64(double *x, int64_t n, double factor) {
    const __m256d f = _mm256_set1_pd(factor);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        PREFETCH(x + i);
        const __m256d a = _mm256_loadu_pd(x + i), b = _mm256_loadu_pd(x + i + 4);
        _mm256_storeu_pd(x + i, _mm256_mul_pd(a, f));
        _mm256_storeu_pd(x + i + 4, _mm256_mul_pd(b, f));
    }
    scale_portable_f64(x + i, n - i, factor);
}
/* clamping compares in the dtype: for v of the dtype, v > clip (double) <=> v > hi unless clip
 * rounded down to hi (then v == hi is not > clip, and storing hi changes nothing); likewise below */
AVX2 static void clamp_avx2_f32(float *x, int64_t n, double clip) {
    const __m256 hi = _mm256_set1_ps((float)clip), lo = _mm256_set1_ps((float)(-clip));
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        if (i % 16 == 0) PREFETCH(x + i);
        const __m256 v = _mm256_loadu_ps(x + i);
        __m256 r = _mm256_blendv_ps(v, hi, _mm256_cmp_ps(v, hi, _CMP_GT_OQ));
        r = _mm256_blendv_ps(r, lo, _mm256_cmp_ps(v, lo, _CMP_LT_OQ));
        _mm256_storeu_ps(x + i, r);
    }
    clamp_portable_f32(x + i, n - i, clip);
}
AVX2 static void clamp_avx2_f64(double *x, int64_t n, double clip) {
    const __m256d hi = _mm256_set1_pd(clip), lo = _mm256_set1_pd(-clip);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        if (i % 8 == 0) PREFETCH(x + i);
        const __m256d v = _mm256_loadu_pd(x + i);
        __m256d r = _mm256_blendv_pd(v, hi, _mm256_cmp_pd(v, hi, _CMP_GT_OQ));
        r = _mm256_blendv_pd(r, lo, _mm256_cmp_pd(v, lo, _CMP_LT_OQ));
        _mm256_storeu_pd(x + i, r);
    }
    clamp_portable_f64(x + i, n - i, clip);
}
#define PICK(avx2, portable) (clip_path() == DP_PATH_AVX2 ? (avx2) : (portable))
#else
#define PICK(avx2, portable) (portable)
#endif

/* ---- threads: this thread's slot in the team, and its slice of n elements ------------------------ */

#ifdef _OPENMP
#include <omp.h>
static inline void team_slot(int64_t *t, int64_t *tn) { *t = omp_get_thread_num(); *tn = omp_get_num_threads(); }
#else
static inline void team_slot(int64_t *t, int64_t *tn) { *t = 0; *tn = 1; }
#endif
/* contiguous slices, cut at multiples of 16 elements (whole cache lines of float32 when x is aligned) */
static inline void slice(int64_t *lo, int64_t *hi, int64_t n, int64_t t, int64_t tn) {
    const int64_t blocks = (n + 15) / 16;
    *lo = blocks * t / tn * 16;
    *hi = blocks * (t + 1) / tn * 16;
    if (*lo > n) *lo = n;
    if (*hi > n) *hi = n;
}

/* ---- the family --------------------------------------------------------------------------------- */

#define DEFINE_CLIP(T, SFX)                                                                         \
static void partial_##SFX(double *amax, double *ssq, const T *x, int64_t n, int want_max) {         \
    /* x: (n,) -> max|x| (NaN if any NaN; 0 if !want_max) and sum(x^2) in double, 16 lanes */       \
    double s[LANES] = {0.0}, m[LANES] = {0.0};                                                      \
    const int64_t body = n - n % LANES;                                                             \
    if (want_max) PICK(maxssq_avx2_##SFX, maxssq_portable_##SFX)(m, s, x, body);                    \
    else PICK(ssq_avx2_##SFX, ssq_portable_##SFX)(s, x, body);                                      \
    for (int64_t i = body; i < n; i++) {        /* the tail, lane i % 16 as in the body */          \
        const double d = (double)x[i], a = fabs(d);                                                 \
        s[i - body] += d * d;                                                                       \
        m[i - body] = a > m[i - body] ? a : m[i - body];                                            \
    }                                                                                               \
    *ssq = lane_sum(s);                                                                             \
    *amax = *ssq != *ssq ? NAN : want_max ? lane_max(m) : 0.0;                                      \
}                                                                                                   \
static double scaled_ssq_##SFX(const T *x, int64_t n, double scale) {                               \
    /* x: (n,) -> sum((x / scale)^2), scale = the max|x| of all arrays (finite, > 0); rare: scalar */ \
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
    const int want_max = inf_norm || sizeof(T) != sizeof(float);                                    \
    double amax = 0.0, ssq = 0.0, values = 0.0;                                                     \
    for (int64_t k = 0; k < count; k++) values += (double)sizes[k];                                 \
    const int nt = count > 1 ? clip_team_size(values) : 1;                                          \
    double *part = nt > 1 ? malloc(2 * (size_t)count * sizeof(double)) : NULL;                      \
    if (part) {               /* partials by a team, combined below in array order as on one thread */ \
        _Pragma("omp parallel for num_threads(nt) schedule(dynamic, 1)")                            \
        for (int64_t k = 0; k < count; k++)                                                         \
            partial_##SFX(&part[2 * k], &part[2 * k + 1], grads[k], sizes[k], want_max);            \
        for (int64_t k = 0; k < count; k++) { amax = nanmax(amax, part[2 * k]); ssq += part[2 * k + 1]; } \
    } else {                                                                                        \
        for (int64_t k = 0; k < count; k++) {                                                       \
            double m, s;                                                                            \
            partial_##SFX(&m, &s, grads[k], sizes[k], want_max);                                    \
            amax = nanmax(amax, m);                                                                 \
            ssq += s;                                                                               \
        }                                                                                           \
    }                                                                                               \
    free(part);                                                                                     \
    if (inf_norm) { *total = amax; return; }                                                        \
    if (!want_max) { *total = sqrt(ssq); return; }  /* float32: NaN, inf and all else from ssq */   \
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
    void (*scale)(T *, int64_t, double) = PICK(scale_avx2_##SFX, scale_portable_##SFX);             \
    double values = 0.0;                                                                            \
    for (int64_t k = 0; k < count; k++) values += (double)sizes[k];                                 \
    const int nt = clip_team_size(values);                                                          \
    _Pragma("omp parallel num_threads(nt) if(nt > 1)")                                              \
    {                                                                                               \
        int64_t t, tn;                                                                              \
        team_slot(&t, &tn);                                                                         \
        for (int64_t k = 0; k < count; k++) {                                                       \
            int64_t lo, hi;                                                                         \
            slice(&lo, &hi, sizes[k], t, tn);                                                       \
            if (hi > lo) scale(grads[k] + lo, hi - lo, factor);                                     \
        }                                                                                           \
    }                                                                                               \
}                                                                                                   \
void clip_value_##SFX(T *x, int64_t n, double clip) {                                               \
    /* x: (n,) clamped to [-clip, clip] in place; NaN stays NaN (both comparisons are false) */     \
    void (*clamp)(T *, int64_t, double) = PICK(clamp_avx2_##SFX, clamp_portable_##SFX);             \
    const int nt = clip_team_size((double)n);                                                       \
    _Pragma("omp parallel num_threads(nt) if(nt > 1)")                                              \
    {                                                                                               \
        int64_t t, tn, lo, hi;                                                                      \
        team_slot(&t, &tn);                                                                         \
        slice(&lo, &hi, n, t, tn);                                                                  \
        if (hi > lo) clamp(x + lo, hi - lo, clip);                                                  \
    }                                                                                               \
}

DEFINE_CLIP(float, f32)
DEFINE_CLIP(double, f64)
