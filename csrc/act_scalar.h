/* act_scalar.h -- the scalar activation formulas, one element in double (internal header).
 *
 * Shared by activations.c (the elementwise kernels) and linear.c (the activation fused into the GEMM's
 * store, and the backward's dz = dy * act'(z)): both compile these same static inline functions with the
 * same flags, so a fused activation is bit-identical to the elementwise kernel's. Not part of the cffi
 * cdef (only deepprop.h is). */
#ifndef DP_ACT_SCALAR_H
#define DP_ACT_SCALAR_H
#include <math.h>
#include "deepprop.h"   /* DP_ACT_* codes */
#include "isa_path.h"   /* DP_PATH_* */

#define SQRT1_2 0.7071067811865476       /* 1/sqrt(2), same literal as the Python side */
#define INV_SQRT_2PI 0.3989422804014327  /* 1/sqrt(2 pi) */

/* u * v, but 0 when one factor is 0 and the other infinite; NaN propagates: v's when v is NaN (IEEE
 * leaves open which NaN a product of two NaNs is and compilers swap the operands of a product, so this
 * one is fixed here -- the AVX2 derivative below makes the same choice, bit for bit) */
static inline double mul0(double u, double v) {
    if (v != v) return v + v;   /* v, quieted */
    if ((u == 0.0 && isinf(v)) || (isinf(u) && v == 0.0)) return 0.0;
    return u * v;
}

static inline double f_sigmoid(double x) {  /* sign-split: no overflow, exact limits 0 and 1 */
    double e = exp(-fabs(x));
    return x >= 0.0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
}
static inline double f_relu(double x) { return x < 0.0 ? 0.0 : x; }          /* NaN -> NaN */
static inline double f_leaky(double x, double s) { return x < 0.0 ? mul0(s, x) : x; }
static inline double f_elu(double x, double a) { return x > 0.0 ? x : a * expm1(x); }
static inline double f_gelu(double x) {     /* x Phi(x); Phi underflowing to 0 gives 0, not -inf*0 */
    double p = 0.5 * erfc(x * -SQRT1_2);
    return p == 0.0 ? 0.0 : x * p;
}

static inline double d_sigmoid(double x) {
    double e = exp(-fabs(x));
    return e / ((1.0 + e) * (1.0 + e));
}
static inline double d_tanh(double x) {     /* sech^2 x = 4e/(1+e)^2, e = exp(-2|x|) */
    double e = exp(-2.0 * fabs(x));
    return 4.0 * e / ((1.0 + e) * (1.0 + e));
}
static inline double d_relu(double x) { return x > 0.0 ? 1.0 : (x <= 0.0 ? 0.0 : x); }     /* 0 at 0 */
static inline double d_leaky(double x, double s) { return x > 0.0 ? 1.0 : (x <= 0.0 ? s : x); } /* s at 0 */
static inline double d_elu(double x, double a) { return x > 0.0 ? 1.0 : a * exp(x); }
static inline double d_gelu(double x) {     /* Phi(x) + x phi(x); x phi(x) = 0 where phi underflows */
    double phi = INV_SQRT_2PI * exp(-0.5 * (x * x));
    return 0.5 * erfc(x * -SQRT1_2) + (phi == 0.0 ? 0.0 : x * phi);
}

/* The one switch over activation codes, for the forward (f) and the derivative (d): LOOP(EXPR) is the
 * caller's loop (ending in break) in which v is the element in double and EXPR its activation / derivative;
 * alpha is in scope. The switch sits outside the caller's loop, and every caller gets the same
 * expression for each code. An unknown code gives NaN: never silently wrong. */
#define DP_ACT_FORWARD_SWITCH(act, LOOP)                                                             \
    switch (act) {                                                                                   \
    case DP_ACT_IDENTITY:   LOOP(v);                                                                 \
    case DP_ACT_SIGMOID:    LOOP(f_sigmoid(v));                                                      \
    case DP_ACT_TANH:       LOOP(tanh(v));                                                           \
    case DP_ACT_RELU:       LOOP(f_relu(v));                                                         \
    case DP_ACT_LEAKY_RELU: LOOP(f_leaky(v, alpha));                                                 \
    case DP_ACT_ELU:        LOOP(f_elu(v, alpha));                                                   \
    case DP_ACT_GELU:       LOOP(f_gelu(v));                                                         \
    default:                LOOP(v + NAN);                                                           \
    }
#define DP_ACT_BACKWARD_SWITCH(act, LOOP)                                                            \
    switch (act) {                                                                                   \
    case DP_ACT_IDENTITY:   LOOP(v != v ? v : 1.0);  /* NaN x gives NaN too */                       \
    case DP_ACT_SIGMOID:    LOOP(d_sigmoid(v));                                                      \
    case DP_ACT_TANH:       LOOP(d_tanh(v));                                                         \
    case DP_ACT_RELU:       LOOP(d_relu(v));                                                         \
    case DP_ACT_LEAKY_RELU: LOOP(d_leaky(v, alpha));                                                 \
    case DP_ACT_ELU:        LOOP(d_elu(v, alpha));                                                   \
    case DP_ACT_GELU:       LOOP(d_gelu(v));                                                         \
    default:                LOOP(v + NAN);                                                           \
    }

/* ---- the piecewise-linear derivatives on 4 doubles (AVX2) ------------------------------------------
 * relu and leaky_relu have act'(v) = v > 0 ? 1 : (v <= 0 ? lo : v) with lo = 0 and alpha (d_relu,
 * d_leaky), so dy * act'(z) is one compare-and-blend and mul0 on whole vectors instead of two
 * unpredictable branches per element (GCC does not if-convert them: the compares may trap). The same
 * double operations as the scalar code in the same order -- the factor, then mul0(g, f) as g * f with
 * its zero-times-infinity case blended to +0 and a NaN f passed on -- so every result is bit for bit
 * the scalar one, NaN and signed zeros included (NaN payloads too: mul0 fixes which NaN a product of
 * two NaNs gives; a signalling NaN comes out quieted, as from the scalar product). identity stays
 * scalar: there GCC folds dy * 1.0 to dy, which keeps a signalling NaN signalling. The other
 * activations need exp / erfc per element and keep the scalar loop too. dp_act_path() (activations.c)
 * says whether this CPU runs it (DEEPPROP_ACTIVATION_ISA overrides: csrc/isa_path.h). */
int dp_act_path(void);   /* DP_PATH_AVX2 or DP_PATH_PORTABLE (isa_path.h), decided once per process */

/* lo for the codes with a vector derivative, or NAN (a NaN is never a valid lo: alpha is finite) */
static inline double dp_act_lo(int act, double alpha) {
    return act == DP_ACT_RELU ? 0.0 : act == DP_ACT_LEAKY_RELU ? alpha : NAN;
}
/* the scalar twin of dp_dz4_avx2, for the tails: mul0(g, v > 0 ? 1 : (v <= 0 ? lo : v)) */
static inline double dp_dz1(double g, double v, double lo) { return mul0(g, v > 0.0 ? 1.0 : (v <= 0.0 ? lo : v)); }

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define DP_ACT_X86 1
#include <immintrin.h>
#define DP_ACT_AVX2_INLINE static inline __attribute__((always_inline, target("avx2")))
/* mul0(g, f) with f = v > 0 ? 1 : (v <= 0 ? lo : v), 4 lanes (ordered, non-signalling compares: the
 * same answers as C's > and <= on every input, NaN included) */
DP_ACT_AVX2_INLINE __m256d dp_dz4_avx2(__m256d g, __m256d v, __m256d lo) {
    const __m256d zero = _mm256_setzero_pd(), one = _mm256_set1_pd(1.0), inf = _mm256_set1_pd(INFINITY);
    const __m256d absmask = _mm256_castsi256_pd(_mm256_set1_epi64x(0x7fffffffffffffffLL));
    __m256d f = _mm256_blendv_pd(v, lo, _mm256_cmp_pd(v, zero, _CMP_LE_OQ));
    f = _mm256_blendv_pd(f, one, _mm256_cmp_pd(v, zero, _CMP_GT_OQ));
    /* mul0: 0 where (g == 0 and f is infinite) or (g is infinite and f == 0) */
    __m256d zi = _mm256_and_pd(_mm256_cmp_pd(g, zero, _CMP_EQ_OQ),
                               _mm256_cmp_pd(_mm256_and_pd(f, absmask), inf, _CMP_EQ_OQ));
    __m256d iz = _mm256_and_pd(_mm256_cmp_pd(_mm256_and_pd(g, absmask), inf, _CMP_EQ_OQ),
                               _mm256_cmp_pd(f, zero, _CMP_EQ_OQ));
    const __m256d p = _mm256_andnot_pd(_mm256_or_pd(zi, iz), _mm256_mul_pd(g, f));
    return _mm256_blendv_pd(p, _mm256_add_pd(f, f), _mm256_cmp_pd(f, f, _CMP_UNORD_Q));   /* f NaN: f */
}

/* dz[i M + j] = dy[i M + j] * act'(z[i M + j]) for rows i < N, columns j < mn (dz may be dy: every
 * vector is loaded before it is stored), and when s is not NULL s[j] += (double)dz[i M + j], the
 * rounded value, row after row as the scalar loops (so the column sums are theirs too). f32: each
 * half of 8 floats widened to double (exact), the derivative in double, rounded once. */
__attribute__((target("avx2"))) static void dp_dz_avx2_f32(float *dz, double *s, const float *dy, const float *z,
                                                       int64_t N, int64_t M, int64_t mn, double lo) {
    const __m256d vlo = _mm256_set1_pd(lo);
    /* lo = +0 (relu, leaky_relu of slope +0): every product is exact (g * 1, g * 0), so the factor and
     * the product need no double: z > 0 gives g, z <= 0 gives g * 0 (+0 for an infinite g), a NaN z
     * gives z, NaNs quieted (bit 22) as the trip through double quiets them -- ~3x fewer operations */
    const int relu = lo == 0.0 && !signbit(lo);
    const __m256 zero = _mm256_setzero_ps(), inf = _mm256_set1_ps(INFINITY);
    const __m256 quiet = _mm256_castsi256_ps(_mm256_set1_epi32(0x00400000));
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    for (int64_t i = 0; i < N; i++) {
        const float *g = dy + i * M, *zr = z + i * M;
        float *d = dz + i * M;
        int64_t j = 0;
        for (; relu && j + 8 <= mn; j += 8) {
            const __m256 g8 = _mm256_loadu_ps(g + j), z8 = _mm256_loadu_ps(zr + j);
            const __m256 gq = _mm256_or_ps(g8, _mm256_and_ps(_mm256_cmp_ps(g8, g8, _CMP_UNORD_Q), quiet));
            const __m256 g0 = _mm256_andnot_ps(_mm256_cmp_ps(_mm256_and_ps(g8, absmask), inf, _CMP_EQ_OQ),
                                               _mm256_mul_ps(g8, zero));
            __m256 r = _mm256_blendv_ps(_mm256_or_ps(z8, quiet), g0, _mm256_cmp_ps(z8, zero, _CMP_LE_OQ));
            r = _mm256_blendv_ps(r, gq, _mm256_cmp_ps(z8, zero, _CMP_GT_OQ));
            _mm256_storeu_ps(d + j, r);
            if (s) {
                _mm256_storeu_pd(s + j, _mm256_add_pd(_mm256_loadu_pd(s + j),
                                                      _mm256_cvtps_pd(_mm256_castps256_ps128(r))));
                _mm256_storeu_pd(s + j + 4, _mm256_add_pd(_mm256_loadu_pd(s + j + 4),
                                                          _mm256_cvtps_pd(_mm256_extractf128_ps(r, 1))));
            }
        }
        for (; j + 8 <= mn; j += 8) {
            const __m256 g8 = _mm256_loadu_ps(g + j), z8 = _mm256_loadu_ps(zr + j);
            const __m128 r0 = _mm256_cvtpd_ps(dp_dz4_avx2(_mm256_cvtps_pd(_mm256_castps256_ps128(g8)),
                                                          _mm256_cvtps_pd(_mm256_castps256_ps128(z8)), vlo));
            const __m128 r1 = _mm256_cvtpd_ps(dp_dz4_avx2(_mm256_cvtps_pd(_mm256_extractf128_ps(g8, 1)),
                                                          _mm256_cvtps_pd(_mm256_extractf128_ps(z8, 1)), vlo));
            _mm256_storeu_ps(d + j, _mm256_set_m128(r1, r0));
            if (s) {
                _mm256_storeu_pd(s + j, _mm256_add_pd(_mm256_loadu_pd(s + j), _mm256_cvtps_pd(r0)));
                _mm256_storeu_pd(s + j + 4, _mm256_add_pd(_mm256_loadu_pd(s + j + 4), _mm256_cvtps_pd(r1)));
            }
        }
        for (; j < mn; j++) {
            d[j] = (float)dp_dz1((double)g[j], (double)zr[j], lo);
            if (s) s[j] += (double)d[j];
        }
    }
}
__attribute__((target("avx2"))) static void dp_dz_avx2_f64(double *dz, double *s, const double *dy, const double *z,
                                                       int64_t N, int64_t M, int64_t mn, double lo) {
    const __m256d vlo = _mm256_set1_pd(lo);
    for (int64_t i = 0; i < N; i++) {
        const double *g = dy + i * M, *zr = z + i * M;
        double *d = dz + i * M;
        int64_t j = 0;
        for (; j + 4 <= mn; j += 4) {
            const __m256d r = dp_dz4_avx2(_mm256_loadu_pd(g + j), _mm256_loadu_pd(zr + j), vlo);
            _mm256_storeu_pd(d + j, r);
            if (s) _mm256_storeu_pd(s + j, _mm256_add_pd(_mm256_loadu_pd(s + j), r));
        }
        for (; j < mn; j++) {
            d[j] = dp_dz1(g[j], zr[j], lo);
            if (s) s[j] += d[j];
        }
    }
}
#define DP_DZ_AVX2(SFX, ...) dp_dz_avx2_##SFX(__VA_ARGS__)

/* y = relu(z) or leaky_relu(z) (act; s the slope) on an m x n block, row stride ld (y may be z): the
 * scalar f_relu / f_leaky, bit for bit. relu in float: z < 0 gives +0, anything else z itself, a NaN
 * quieted as the scalar code's round trip through double quiets it (bit 22); leaky_relu in double. */
__attribute__((target("avx2"))) static inline void dp_act_fwd_avx2_f32(float *y, const float *z, int64_t ld,
                                                                   int64_t m, int64_t n, int act, double s) {
    const __m256 zero = _mm256_setzero_ps(), quiet = _mm256_castsi256_ps(_mm256_set1_epi32(0x00400000));
    const __m256d sv = _mm256_set1_pd(s), zd = _mm256_setzero_pd();
    for (int64_t r = 0; r < m; r++) {
        const float *zr = z + r * ld;
        float *yr = y + r * ld;
        int64_t j = 0;
        if (act == DP_ACT_RELU) {
            for (; j + 8 <= n; j += 8) {
                const __m256 v = _mm256_loadu_ps(zr + j);
                const __m256 t = _mm256_andnot_ps(_mm256_cmp_ps(v, zero, _CMP_LT_OQ), v);
                _mm256_storeu_ps(yr + j, _mm256_or_ps(t, _mm256_and_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q), quiet)));
            }
            for (; j < n; j++) yr[j] = (float)f_relu((double)zr[j]);
        } else {
            for (; j + 4 <= n; j += 4) {
                const __m256d v = _mm256_cvtps_pd(_mm_loadu_ps(zr + j));
                /* mul0(s, v) where v < 0: s * v, or 0 for s = 0 and v = -inf */
                const __m256d zi = _mm256_and_pd(_mm256_cmp_pd(sv, zd, _CMP_EQ_OQ),
                                                 _mm256_cmp_pd(v, _mm256_set1_pd(-INFINITY), _CMP_EQ_OQ));
                const __m256d p = _mm256_andnot_pd(zi, _mm256_mul_pd(sv, v));
                _mm_storeu_ps(yr + j, _mm256_cvtpd_ps(_mm256_blendv_pd(v, p, _mm256_cmp_pd(v, zd, _CMP_LT_OQ))));
            }
            for (; j < n; j++) yr[j] = (float)f_leaky((double)zr[j], s);
        }
    }
}
__attribute__((target("avx2"))) static inline void dp_act_fwd_avx2_f64(double *y, const double *z, int64_t ld,
                                                                   int64_t m, int64_t n, int act, double s) {
    const __m256d sv = _mm256_set1_pd(s), zd = _mm256_setzero_pd();
    for (int64_t r = 0; r < m; r++) {
        const double *zr = z + r * ld;
        double *yr = y + r * ld;
        int64_t j = 0;
        for (; j + 4 <= n; j += 4) {
            const __m256d v = _mm256_loadu_pd(zr + j), lt = _mm256_cmp_pd(v, zd, _CMP_LT_OQ);
            if (act == DP_ACT_RELU) {
                _mm256_storeu_pd(yr + j, _mm256_andnot_pd(lt, v));
            } else {
                const __m256d zi = _mm256_and_pd(_mm256_cmp_pd(sv, zd, _CMP_EQ_OQ),
                                                 _mm256_cmp_pd(v, _mm256_set1_pd(-INFINITY), _CMP_EQ_OQ));
                _mm256_storeu_pd(yr + j, _mm256_blendv_pd(v, _mm256_andnot_pd(zi, _mm256_mul_pd(sv, v)), lt));
            }
        }
        for (; j < n; j++) yr[j] = act == DP_ACT_RELU ? f_relu(zr[j]) : f_leaky(zr[j], s);
    }
}
#define DP_ACT_FWD_AVX2(SFX, ...) dp_act_fwd_avx2_##SFX(__VA_ARGS__)
#else
#define DP_ACT_X86 0
#define DP_DZ_AVX2(SFX, ...) ((void)0)   /* never reached: DP_ACT_X86 is 0 in the callers' condition */
#define DP_ACT_FWD_AVX2(SFX, ...) ((void)0)
#endif
/* the vector derivative applies: this CPU's path is AVX2 and act has a vector derivative (lo not NaN) */
#define DP_DZ_VEC(lo) (DP_ACT_X86 && (lo) == (lo) && dp_act_path() == DP_PATH_AVX2)
/* the forward's vector loop applies (linear.c's epilogue): relu or leaky_relu on an AVX2 path */
#define DP_ACT_FWD_VEC(act) (DP_ACT_X86 && ((act) == DP_ACT_RELU || (act) == DP_ACT_LEAKY_RELU) && \
                             dp_act_path() == DP_PATH_AVX2)

#endif
