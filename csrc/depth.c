/* depth.c -- the depth harness's per-layer statistics (kernels/depth.py: _norm, _var), and one layer of
 * its C fast path in one call (depth_layer_forward / depth_layer_backward, at the end); not kernels.
 *
 * depth_moments: out[0] = sum(x - c), out[1] = sum((x - c)^2), in double, for the harness's gradient norms
 * (c = 0) and activation variances (two passes: c = 0 for the mean, then c = the mean). Eight independent
 * accumulators per sum, element i going to lane i % 8 (the tail to lane 0), combined as
 * ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)): a fixed order, so the result is the same on every
 * machine, and the lanes vectorise without -ffast-math (NumPy's float32 -> float64 reductions, einsum
 * and var, cost ~10x more at the harness's sizes). NaN and Inf propagate as in any IEEE sum; squares of
 * float64 values beyond 1e154 overflow to inf, which the caller checks (kernels/depth.py's _norm then
 * takes its scaled path). */
#include <string.h>
#include "deepprop.h"
#include "isa_path.h"

/* the AVX2 loop (4-double vectors: the same eight lanes in two registers, the same operations, so the
 * same result bit for bit; ~2x fewer instructions than the SSE2 vectors) where the CPU runs it;
 * DEEPPROP_DEPTH_ISA=portable|avx2|auto overrides, depth_isa() says which. Plain AVX2, no FMA: the
 * square and the add stay two roundings, as in the portable loop. */
DP_DEFINE_ISA_PATH(depth, "DEEPPROP_DEPTH_ISA", 0)

/* the eight lanes as four 2-double vectors (GCC vector extensions: one SSE2 register each on the
 * baseline x86-64, which keeps all eight accumulators in registers); lane j of vector k holds the
 * elements i + 2k + j */
typedef double v2d __attribute__((vector_size(16)));
typedef float v2f __attribute__((vector_size(8)));

static inline v2d load2_f32(const float *x) { v2f a; memcpy(&a, x, sizeof a); return __builtin_convertvector(a, v2d); }
static inline v2d load2_f64(const double *x) { v2d a; memcpy(&a, x, sizeof a); return a; }

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#include <immintrin.h>
#define DEPTH_X86 1
#define DEPTH_AVX2 __attribute__((target("avx2")))
DEPTH_AVX2 static inline __m256d load4_f32(const float *x) { return _mm256_cvtps_pd(_mm_loadu_ps(x)); }
DEPTH_AVX2 static inline __m256d load4_f64(const double *x) { return _mm256_loadu_pd(x); }
/* lanes 0-3 in s0, q0 and 4-7 in s1, q1 (the portable loop's v2d pairs (0,1), (2,3) | (4,5), (6,7)) */
#define DEFINE_MOMENTS_AVX2(T, SFX)                                                                     \
DEPTH_AVX2 static void moments_avx2_##SFX(double *out, const T *x, int64_t n, double c) {               \
    const __m256d cv = _mm256_set1_pd(c);                                                               \
    __m256d s0 = _mm256_setzero_pd(), s1 = s0, q0 = s0, q1 = s0;                                        \
    int64_t i = 0;                                                                                      \
    for (; i + 8 <= n; i += 8) {                                                                        \
        const __m256d d0 = _mm256_sub_pd(load4_##SFX(x + i), cv), d1 = _mm256_sub_pd(load4_##SFX(x + i + 4), cv); \
        s0 = _mm256_add_pd(s0, d0); s1 = _mm256_add_pd(s1, d1);                                         \
        q0 = _mm256_add_pd(q0, _mm256_mul_pd(d0, d0)); q1 = _mm256_add_pd(q1, _mm256_mul_pd(d1, d1));   \
    }                                                                                                   \
    double l[4][4];                                                                                     \
    _mm256_storeu_pd(l[0], s0); _mm256_storeu_pd(l[1], s1); _mm256_storeu_pd(l[2], q0); _mm256_storeu_pd(l[3], q1); \
    for (; i < n; i++) {                                                                                \
        const double d = (double)x[i] - c;                                                              \
        l[0][0] += d;                                                                                   \
        l[2][0] += d * d;                                                                               \
    }                                                                                                   \
    out[0] = ((l[0][0] + l[0][1]) + (l[0][2] + l[0][3])) + ((l[1][0] + l[1][1]) + (l[1][2] + l[1][3])); \
    out[1] = ((l[2][0] + l[2][1]) + (l[2][2] + l[2][3])) + ((l[3][0] + l[3][1]) + (l[3][2] + l[3][3])); \
}
DEFINE_MOMENTS_AVX2(float, f32)
DEFINE_MOMENTS_AVX2(double, f64)
#define MOMENTS_AVX2(SFX, ...) moments_avx2_##SFX(__VA_ARGS__)
#else
#define DEPTH_X86 0
#define MOMENTS_AVX2(SFX, ...) ((void)0)
#endif

#define DEFINE_MOMENTS(T, SFX)                                                                          \
void depth_moments_##SFX(double *out, const T *x, int64_t n, double c) {                               \
    /* out: (2,); x: (n,) */                                                                            \
    if (DEPTH_X86 && depth_path() == DP_PATH_AVX2) {                                                    \
        MOMENTS_AVX2(SFX, out, x, n, c);                                                                \
        return;                                                                                         \
    }                                                                                                   \
    const v2d cv = {c, c};                                                                              \
    v2d s0 = {0, 0}, s1 = s0, s2 = s0, s3 = s0, q0 = s0, q1 = s0, q2 = s0, q3 = s0;                     \
    int64_t i = 0;                                                                                      \
    for (; i + 8 <= n; i += 8) {                                                                        \
        const v2d d0 = load2_##SFX(x + i) - cv, d1 = load2_##SFX(x + i + 2) - cv;                      \
        const v2d d2 = load2_##SFX(x + i + 4) - cv, d3 = load2_##SFX(x + i + 6) - cv;                  \
        s0 += d0; s1 += d1; s2 += d2; s3 += d3;                                                         \
        q0 += d0 * d0; q1 += d1 * d1; q2 += d2 * d2; q3 += d3 * d3;                                     \
    }                                                                                                   \
    for (; i < n; i++) {                                                                                \
        const double d = (double)x[i] - c;                                                              \
        s0[0] += d;                                                                                     \
        q0[0] += d * d;                                                                                 \
    }                                                                                                   \
    out[0] = ((s0[0] + s0[1]) + (s1[0] + s1[1])) + ((s2[0] + s2[1]) + (s3[0] + s3[1]));                 \
    out[1] = ((q0[0] + q0[1]) + (q1[0] + q1[1])) + ((q2[0] + q2[1]) + (q3[0] + q3[1]));                 \
}

DEFINE_MOMENTS(float, f32)
DEFINE_MOMENTS(double, f64)

/* ---- one layer of the harness's C fast path in one call (kernels/depth.py, _FastC.layer_forward and
 * layer_backward): the same kernel calls, in the same order, that the Python loop makes one by one,
 * so every number is theirs bit for bit (tests/test_depth.py compares). Why: at the harness's shapes
 * (width 256, batch 128) a layer is ~0.8 ms of kernels and the Python around four separate calls per
 * pass (argument unpacking, pointers, the moments' scratch) ~40-60 us more. */

/* fill: DEPTH_FILL_NONE (W is already drawn), DEPTH_FILL_UNIFORM (uniform_fill(W, seed, a, b)) or
 * DEPTH_FILL_NORMAL (normal_fill(W, seed, a, b)) -- kernels.init's C fills, as _FastC replays them */
enum { DEPTH_FILL_NONE = 0, DEPTH_FILL_UNIFORM = 1, DEPTH_FILL_NORMAL = 2 };

#define DEFINE_LAYER(T, SFX)                                                                            \
void depth_layer_forward_##SFX(double *moments, T *y, T *z, T *W, const T *x, int fill, uint64_t seed,  \
                               double a, double b, int64_t N, int64_t K, int64_t M, int act, double alpha) { \
    /* moments: (2,) = (sum(y), sum((y - mean)^2)), mean = sum(y) / (N M) (_var's two passes);          \
     * y, z: (N, M); W: (K, M), drawn first unless fill is DEPTH_FILL_NONE; x: (N, K); no bias */       \
    if (fill == DEPTH_FILL_UNIFORM) uniform_fill_##SFX(W, K * M, seed, a, b);                            \
    else if (fill == DEPTH_FILL_NORMAL) normal_fill_##SFX(W, K * M, seed, a, b);                         \
    linear_forward_##SFX(y, z, x, W, NULL, N, K, M, act, alpha);                                        \
    double s[2];                                                                                        \
    depth_moments_##SFX(s, y, N * M, 0.0);                                                              \
    moments[0] = s[0];                                                                                  \
    depth_moments_##SFX(s, y, N * M, s[0] / (double)(N * M));                                           \
    moments[1] = s[1];                                                                                  \
}                                                                                                       \
void depth_layer_backward_##SFX(double *sumsq, T *dx, T *dW, T *db, T *work, T *xin, const T *dy,        \
                                const T *x, const T *zprev, const T *W, const T *z, int64_t N, int64_t K, \
                                int64_t M, int act, double alpha) {                                     \
    /* sumsq: (2,) = (sum(dW^2), sum(dx^2)); dx, xin: (N, K); dW: (K, M); db: (M,); work, dy, z: (N, M); \
     * W: (K, M). The layer's input is act(zprev) (zprev (N, K), written to xin) when zprev is given,   \
     * else x (N, K) */                                                                                 \
    if (zprev != NULL) {                                                                                \
        activation_forward_##SFX(xin, zprev, N * K, act, alpha);                                        \
        x = xin;                                                                                        \
    }                                                                                                   \
    linear_backward_##SFX(dx, dW, db, work, dy, x, W, z, N, K, M, act, alpha);                          \
    double s[2];                                                                                        \
    depth_moments_##SFX(s, dW, K * M, 0.0);                                                             \
    sumsq[0] = s[1];                                                                                    \
    depth_moments_##SFX(s, dx, N * K, 0.0);                                                             \
    sumsq[1] = s[1];                                                                                    \
}
DEFINE_LAYER(float, f32)
DEFINE_LAYER(double, f64)
