/* dropout.c -- inverted dropout with a counter-based mask (kernels/dropout.py), and the run-time choice
 * of the random kernels' path (philox.h: dp_rng_path, rng_isa).
 * Element j = offset + i draws word (j & 3) of philox4x32_10(counter = (j >> 2 low, high, 0, 0),
 * key = (seed low, high)) and is dropped when that word < threshold (threshold = round(p * 2^32),
 * computed once in Python; 2^32 drops everything). The mask is bit-packed, little bit order
 * (element i is bit i % 8 of byte i / 8), bit set = kept, padding bits of the last byte 0.
 * Kept elements are x * scale in double, rounded once; dropped ones are exactly 0 (also when x is
 * Inf or NaN), and so is everything when scale == 0 (p = 1), so Inf * 0 never makes a NaN.
 *
 * Two paths, bit-identical (the mask is integer arithmetic, the scaling one double multiply and one
 * rounding on both -- or, for float32 and a scale that is a float, the float multiply, which is that):
 *   portable  scalar: one Philox call per 4-element block, a byte of the mask at a time;
 *   avx2      one pass, 64 elements at a time: 16 Philox calls on 4 64-bit lanes x 4 (philox.h), the 64
 *             words put in element order and compared with the threshold in 32-bit lanes (xor of the
 *             sign bit turns the unsigned compare into a signed one); the compare's lane masks select
 *             x * scale or 0 for y straight from the registers, and movemask gathers them into the 64
 *             keep bits of the mask (shifted by offset % 4: the mask need not start on a block).
 *             Measured on this Zen 3 core (1 thread, float32, an L2-resident 16K elements in a loop):
 *             forward ~0.68 ns/element (was 0.90 as a mask pass, then an apply pass, in blocks), mask
 *             only ~0.63 (the Philox is the cost, ~2 cycles/element: ~90 vector operations per 16
 *             elements on 4 vector pipes), the apply from a mask ~0.12 (was 0.27: the float multiply);
 *             the portable path ~9.5, 4.8, 4.5. At 16M elements (64 MB in, 64 MB out): ~13.5 ms into a
 *             preallocated y, ~20 ms into a fresh one -- the page faults of a fresh 64 MB (the kernel
 *             zeroing 2 MB huge pages) take ~7.5 ms of that on this machine, whoever touches them.
 *             Streaming stores of y were tried: ~0.8 ms slower into a fresh array (its lines were just
 *             zeroed through the cache), faster only into a preallocated one; not used.
 *             Zen 5 VM (so named; CPUID: family 19h model 01h, a Zen 3 EPYC under KVM, AVX2 + FMA, NO
 *             AVX-512 -- XCR0 has no zmm state, so no AVX-512 path can run or be timed on it), busy,
 *             1 thread, 16M float32, p = 0.5, one process alternating builds, min / median of 30:
 *             ~15 / 19 ms into a preallocated y (1.1 / 0.87 G elements/s), ~21 / 25 ms into a fresh one;
 *             16K elements (L2, called from C, min of 200, a quiet moment): forward 1.59 TSC ticks
 *             (2.445 GHz) = 0.65 ns/element, mask only 1.50, the Philox alone (16 blocks a step, no
 *             output) ~1.4: the rounds are the cost, ~280 of the ~370 vector operations per 64 elements.
 *             Kept: the blocks in lanes (0, 2, 1, 3) (dp_philox_run_avx2_lanes_x4), so the unpacks give
 *             element order without the two cross-lane permutes: forward 1.57-1.58, mask only 1.46 (in
 *             the same quiet moment, interleaved; under load within the noise). Tried, no change (A/B
 *             at 16K): the key xor first (c1 ^ key, off the multiply chain); two runs of 8 blocks
 *             instead of one of 16 (register pressure); vpshufd instead of the shifts of the products
 *             (another pipe). Streaming stores again: preallocated 14.9 vs 15.4 ms min, fresh 22.3 vs
 *             21.3 -- still not serving both.
 * Large calls run on OpenMP threads (see "threads" below), bit-identical for every team size.
 * threshold 0 (p = 0) keeps and 2^32 (p = 1) drops everything without drawing a word, on both paths. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include "deepprop.h"
#include "philox.h"
#include "isa_path.h"
#include "team.h"

/* ---- the path (philox.h) ------------------------------------------------------------------------- */

DP_DEFINE_ISA_PATH(rng, "DEEPPROP_RNG_ISA", 1)  /* the AVX2 Box-Muller math uses FMA */

_Static_assert((int)DP_RNG_AVX2 == (int)DP_PATH_AVX2 && (int)DP_RNG_PORTABLE == (int)DP_PATH_PORTABLE,
               "philox.h and isa_path.h number the paths alike");
int dp_rng_path(void) { return rng_path(); }

/* ---- portable ------------------------------------------------------------------------------------- */

/* keep bits of mask byte b (elements 8b .. min(8b + 8, n) - 1): one Philox call per 4-element block */
static inline unsigned dp_dropout_byte(int64_t b, int64_t n, uint32_t k0, uint32_t k1, uint64_t offset,
                                       uint64_t threshold) {
    int64_t lo = 8 * b, hi = lo + 8 < n ? lo + 8 : n;
    if (threshold == 0 || threshold >= 4294967296u) /* keep all / drop all: no word needed */
        return threshold == 0 ? (1u << (hi - lo)) - 1u : 0u;
    uint32_t w[4];
    uint64_t block = 0;
    int have = 0;
    unsigned byte = 0;
    for (int64_t i = lo; i < hi; i++) {
        uint64_t j = offset + (uint64_t)i;
        if (!have || (j >> 2) != block) {
            block = j >> 2;
            dp_philox4x32_10(w, (uint32_t)block, (uint32_t)(block >> 32), 0u, 0u, k0, k1);
            have = 1;
        }
        if ((uint64_t)w[j & 3] >= threshold) byte |= 1u << (i - lo);
    }
    return byte;
}

/* ---- avx2 ------------------------------------------------------------------------------------------ */
#if DP_RNG_X86

/* keep bits of the 64 elements j = 4q .. 4q + 63 (bit t: element 4q + t), 1 <= threshold < 2^32, and
 * their lane masks in element order (lanes[k], 32-bit lane l: element 4q + 8k + l, all ones = kept) */
DP_AVX2_INLINE uint64_t dp_keep64_avx2(uint64_t q, const dp_philox_keys *ks, __m256i tflip, __m256i lanes[8]) {
    __m256i c[4][4];
    /* blocks q + 4v + (0, 2, 1, 3) in the 4 lanes: the unpacks below then give element order */
    dp_philox_run_avx2_lanes_x4(c, ks, q, 0u, 0u, _mm256_setr_epi64x(0, 2, 1, 3));
    const __m256i sign = _mm256_set1_epi32((int)0x80000000u);
    uint64_t bits = 0;
    for (int v = 0; v < 4; v++) {
        /* lane l of a = (w0, w1) of its block: elements +0, +1; of b = (w2, w3): +2, +3 */
        __m256i a = _mm256_blend_epi32(c[0][v], _mm256_slli_epi64(c[1][v], 32), 0xAA);
        __m256i b = _mm256_blend_epi32(c[2][v], _mm256_slli_epi64(c[3][v], 32), 0xAA);
        /* 128-bit lanes: e0 = blocks 0, 1 (elements 0-3 | 4-7), e1 = blocks 2, 3 (8-11 | 12-15): no
         * cross-lane permute, as the blocks sit in lanes 0, 2, 1, 3 */
        __m256i e0 = _mm256_unpacklo_epi64(a, b), e1 = _mm256_unpackhi_epi64(a, b);
        /* kept: w >= t, i.e. w > t - 1 unsigned, i.e. (w ^ 2^31) > (t - 1) ^ 2^31 signed */
        lanes[2 * v] = _mm256_cmpgt_epi32(_mm256_xor_si256(e0, sign), tflip);
        lanes[2 * v + 1] = _mm256_cmpgt_epi32(_mm256_xor_si256(e1, sign), tflip);
        unsigned m0 = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(lanes[2 * v]));
        unsigned m1 = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(lanes[2 * v + 1]));
        bits |= (uint64_t)(m0 | m1 << 8) << (16 * v);
    }
    return bits;
}

/* mask word g (bits = keep flags of elements 64g .. 64g + 63) to its bytes; padding bits past n are 0 */
static inline void dp_store_word(uint8_t *mask, int64_t g, uint64_t bits, int64_t n) {
    int64_t left = n - 64 * g;
    if (left >= 64) {
        memcpy(mask + 8 * g, &bits, 8); /* little-endian x86: byte k = bits 8k .. 8k + 7 */
        return;
    }
    bits &= (UINT64_C(1) << left) - 1u;
    for (int64_t k = 0; 8 * k < left; k++) mask[8 * g + k] = (uint8_t)(bits >> (8 * k));
}

/* y[0:8] = x * scale where lane l of keep is all ones, +0 elsewhere. f32 with a scale that is a float
 * (FEXACT: 2 for p = 0.5, 1 for p = 0, 4, 1.25, ...): one float multiply, which IS the double multiply
 * rounded once -- the exact product of two 24-bit significands has 48 bits, so the double product is
 * exact (no overflow or underflow in double either) and both round that exact value once, to the same
 * float, Inf on overflow included; otherwise the double multiply, as the portable path. */
DP_AVX2_INLINE void dp_apply8_avx2_f32(float *y, const float *x, __m256i keep, __m256 sf, __m256d sd, int fexact) {
    __m256 xv = _mm256_loadu_ps(x), yv;
    if (fexact) {
        yv = _mm256_mul_ps(xv, sf);
    } else {
        __m128 lo = _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(xv)), sd));
        __m128 hi = _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(xv, 1)), sd));
        yv = _mm256_set_m128(hi, lo);
    }
    _mm256_storeu_ps(y, _mm256_and_ps(yv, _mm256_castsi256_ps(keep)));
}
DP_AVX2_INLINE void dp_apply8_avx2_f64(double *y, const double *x, __m256i keep, __m256 sf, __m256d sd, int fexact) {
    __m256i k0 = _mm256_cvtepi32_epi64(_mm256_castsi256_si128(keep));      /* 32-bit lanes 0-3 -> 64-bit */
    __m256i k1 = _mm256_cvtepi32_epi64(_mm256_extracti128_si256(keep, 1)); /* lanes 4-7 */
    _mm256_storeu_pd(y, _mm256_and_pd(_mm256_mul_pd(_mm256_loadu_pd(x), sd), _mm256_castsi256_pd(k0)));
    _mm256_storeu_pd(y + 4, _mm256_and_pd(_mm256_mul_pd(_mm256_loadu_pd(x + 4), sd), _mm256_castsi256_pd(k1)));
}

/* lane masks of 8 keep bits: lane l all ones iff bit l */
DP_AVX2_INLINE __m256i dp_lanes8_avx2(unsigned bits8) {
    const __m256i pat = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    return _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32((int)bits8), pat), pat);
}

/* One pass, 64 elements at a time: a group's 16 Philox calls give its 64 keep bits (the mask) and its
 * lane masks, which select x * scale or 0 for y straight from the registers -- no second pass over a
 * mask. Group G holds the elements j = 4q .. 4q + 63, q = offset / 4 + 16G, i.e. i = 64G - s ..
 * 64G - s + 63 with s = offset % 4 (a mask need not start on a block): groups inside [0, n) are applied
 * from the lane masks, the first and last ones element by element from the bits; mask word g (elements
 * 64g .. 64g + 63) is (K_g >> s) | (K_(g+1) << (64 - s)), written one group late. y == NULL: the mask
 * only; mask == NULL: y only (the backward regenerating the mask). scale == 0: y = 0. */
DP_AVX2_INLINE void dp_dropout_avx2(void *yv, uint8_t *mask, const void *xv, int64_t n, uint64_t seed,
                                    uint64_t offset, uint64_t threshold, double scale, int dbl, int fexact) {
    float *yf = (float *)yv;
    double *yd = (double *)yv;
    const float *xf = (const float *)xv;
    const double *xd = (const double *)xv;
    dp_philox_keys ks;
    dp_philox_keys_avx2(&ks, (uint32_t)seed, (uint32_t)(seed >> 32));
    const __m256i tflip = _mm256_set1_epi32((int)((uint32_t)(threshold - 1u) ^ 0x80000000u));
    const __m256 sf = _mm256_set1_ps((float)scale);
    const __m256d sd = _mm256_set1_pd(scale);
    const unsigned s = (unsigned)(offset & 3u);
    const uint64_t q0 = offset >> 2;
    const int64_t ng = (n + (int64_t)s + 63) / 64;
    uint64_t prev = 0;
    for (int64_t G = 0; G < ng; G++) {
        __m256i lanes[8];
        const uint64_t bits = dp_keep64_avx2(q0 + 16u * (uint64_t)G, &ks, tflip, lanes);
        const int64_t base = 64 * G - (int64_t)s;
        if (yv && base >= 0 && base + 64 <= n) {
            for (int k = 0; k < 8; k++) {
                if (dbl) dp_apply8_avx2_f64(yd + base + 8 * k, xd + base + 8 * k, lanes[k], sf, sd, fexact);
                else dp_apply8_avx2_f32(yf + base + 8 * k, xf + base + 8 * k, lanes[k], sf, sd, fexact);
            }
        } else if (yv) {
            int64_t lo = base > 0 ? base : 0, hi = base + 64 < n ? base + 64 : n;
            for (int64_t i = lo; i < hi; i++) {
                int kept = (int)((bits >> (i - base)) & 1u);
                if (dbl) yd[i] = kept ? xd[i] * scale : 0.0;
                else yf[i] = kept ? (float)((double)xf[i] * scale) : 0.0f;
            }
        }
        if (mask && G > 0) dp_store_word(mask, G - 1, s ? (prev >> s) | (bits << (64 - s)) : prev, n);
        prev = bits;
    }
    /* the last word, unless the loop wrote it: its bits from group ng lie past n (64 ng - s >= n) */
    if (mask && ng > 0 && 64 * (ng - 1) < n) dp_store_word(mask, ng - 1, prev >> s, n);
}

/* the mask of elements offset .. offset + n - 1; threshold 0 keeps and 2^32 drops all, no word drawn */
DP_AVX2 static void dropout_mask_avx2(uint8_t *mask, int64_t n, uint64_t seed, uint64_t offset, uint64_t threshold) {
    int64_t nbytes = (n + 7) / 8;
    if (threshold == 0 || threshold >= 4294967296u) {
        memset(mask, threshold == 0 ? 0xFF : 0x00, (size_t)nbytes);
        if (threshold == 0 && n % 8) mask[nbytes - 1] = (uint8_t)((1u << (n % 8)) - 1u);
        return;
    }
    dp_dropout_avx2(NULL, mask, NULL, n, seed, offset, threshold, 0.0, 0, 0);
}

/* y = x * scale where the packed mask keeps, 0 elsewhere (0 everywhere for scale == 0); MASK == NULL:
 * every element kept (threshold 0) */
#define DEFINE_DROPOUT_AVX2(T, SFX, DBL)                                                               \
DP_AVX2_INLINE void dropout_apply_avx2_##SFX##_(T *y, const T *x, const uint8_t *mask, int64_t n,     \
                                               double scale, int fexact) {                           \
    const __m256 sf = _mm256_set1_ps((float)scale);                                                  \
    const __m256d sd = _mm256_set1_pd(scale);                                                        \
    int64_t full = n / 8;                                                                            \
    for (int64_t b = 0; b < full; b++)                                                               \
        dp_apply8_avx2_##SFX(y + 8 * b, x + 8 * b, dp_lanes8_avx2(mask ? mask[b] : 0xFFu), sf, sd, fexact); \
    for (int64_t i = 8 * full; i < n; i++)                                                           \
        y[i] = !mask || (mask[i / 8] >> (i % 8)) & 1u ? (T)((double)x[i] * scale) : (T)0;            \
}                                                                                                    \
DP_AVX2 static void dropout_apply_avx2_##SFX(T *y, const T *x, const uint8_t *mask, int64_t n, double scale) { \
    if (scale == 0.0) memset(y, 0, (size_t)n * sizeof(T));                                           \
    else if (!(DBL) && (double)(float)scale == scale) dropout_apply_avx2_##SFX##_(y, x, mask, n, scale, 1); \
    else dropout_apply_avx2_##SFX##_(y, x, mask, n, scale, 0);                                       \
}                                                                                                    \
/* forward (mask != NULL) or backward regenerating the mask (mask == NULL) */                        \
DP_AVX2 static void dropout_regen_avx2_##SFX(T *y, uint8_t *mask, const T *x, int64_t n, uint64_t seed, \
                                             uint64_t offset, uint64_t threshold, double scale) {    \
    if (threshold == 0 || threshold >= 4294967296u || scale == 0.0) { /* no word needed for y */     \
        if (mask) dropout_mask_avx2(mask, n, seed, offset, threshold);                               \
        if (threshold == 0 && scale != 0.0) dropout_apply_avx2_##SFX(y, x, NULL, n, scale);          \
        else memset(y, 0, (size_t)n * sizeof(T));                                                    \
    } else if (!(DBL) && (double)(float)scale == scale) {                                            \
        dp_dropout_avx2(y, mask, x, n, seed, offset, threshold, scale, DBL, 1);                      \
    } else {                                                                                         \
        dp_dropout_avx2(y, mask, x, n, seed, offset, threshold, scale, DBL, 0);                      \
    }                                                                                                \
}
DEFINE_DROPOUT_AVX2(float, f32, 0)
DEFINE_DROPOUT_AVX2(double, f64, 1)
#endif

/* ---- threads ----------------------------------------------------------------------------------------
 * A call of at least DEEPPROP_DROPOUT_THREAD_MIN elements (default DROPOUT_THREAD_MIN = 2^18, ~0.15 ms
 * of one core; tests set 0 to thread every call) runs on a team of omp_get_max_threads() threads
 * (OMP_NUM_THREADS, or omp_set_num_threads / threadpoolctl in the calling thread), as csrc/gemm.c does;
 * smaller calls never start a team. The threads claim chunks of whole 64-element groups (below) and
 * run the one-thread code on each with the offset moved along: every element is still the same function
 * of (seed, offset + i), so the results are bit for bit the same for every team size (and each thread
 * first-touches the fresh output of its chunks, so the page faults are split too). fork: csrc/team.c,
 * a forked child of a process that ran a team runs on one thread (libgomp's pool does not survive
 * fork). */
#define DROPOUT_THREAD_MIN (INT64_C(1) << 18)
#ifdef _OPENMP
#include <omp.h>
#define DP_OMP_PARALLEL_NT _Pragma("omp parallel num_threads(nt) if(nt > 1)")
#else
#define DP_OMP_PARALLEL_NT
#endif

static atomic_llong thread_min = -1; /* -1 until the first call (idempotent, like the path) */

/* the team for n elements; the thread count and fork safety: csrc/team.c */
static int dropout_team_size(int64_t n) {
    if (n <= 64) return 1;
    return dp_team_size((double)n, (double)dp_team_min_work(&thread_min, "DEEPPROP_DROPOUT_THREAD_MIN",
                                                             DROPOUT_THREAD_MIN));
}

/* A team's threads claim chunks of DROPOUT_CHUNK elements (a multiple of 64: whole mask words, so no
 * two threads write one byte) from an atomic counter until none is left. Static halves made the team
 * wait for its slower core: on this shared VM one core often runs slower than the other for a while.
 * 2^19 elements (2 MB of float32 output, ~0.4 ms of one core; 32 chunks at 16M): 2 threads at 16M
 * float32 into warm outputs, median of 64 calls, ~8.2-9.1 ms claimed vs ~9.4 static. Smaller chunks
 * (2^15) balanced as well into warm outputs but were slower into fresh ones (17.4 vs 15.0 ms): two
 * threads then fault in the same 2 MB huge pages and wait for each other's page zeroing. */
#define DROPOUT_CHUNK (INT64_C(1) << 19)
_Static_assert(DROPOUT_CHUNK % 64 == 0, "chunks of whole mask words");

/* BODY on the elements [lo, hi) of N: all of them on one thread, or chunk by chunk on a team */
#define DP_DROPOUT_SHARED(N, BODY)                                                                   \
    do {                                                                                             \
        const int nt = dropout_team_size(N);                                                         \
        if (nt <= 1) {                                                                               \
            const int64_t lo = 0, hi = N;                                                            \
            BODY;                                                                                    \
            break;                                                                                   \
        }                                                                                            \
        const int64_t nch = (N + DROPOUT_CHUNK - 1) / DROPOUT_CHUNK;                                 \
        atomic_llong next_chunk = 0;                                                                 \
        DP_OMP_PARALLEL_NT                                                                           \
        for (int64_t c; (c = atomic_fetch_add_explicit(&next_chunk, 1, memory_order_relaxed)) < nch;) { \
            const int64_t lo = c * DROPOUT_CHUNK, hi = lo + DROPOUT_CHUNK < N ? lo + DROPOUT_CHUNK : N; \
            BODY;                                                                                    \
        }                                                                                            \
    } while (0)

/* ---- one thread's range: the path ------------------------------------------------------------------ */

static void dropout_mask_one(uint8_t *mask, int64_t n, uint64_t seed, uint64_t offset, uint64_t threshold) {
#if DP_RNG_X86
    if (dp_rng_path() == DP_RNG_AVX2) {
        dropout_mask_avx2(mask, n, seed, offset, threshold);
        return;
    }
#endif
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    int64_t nbytes = (n + 7) / 8;
    for (int64_t b = 0; b < nbytes; b++) mask[b] = (uint8_t)dp_dropout_byte(b, n, k0, k1, offset, threshold);
}

#if DP_RNG_X86
#define DP_DROPOUT_AVX2_CALL(SFX, Y, MASK, IN, X)                                                    \
    if (dp_rng_path() == DP_RNG_AVX2) {                                                              \
        if (IN) dropout_apply_avx2_##SFX(Y, X, IN, n, scale);                                        \
        else dropout_regen_avx2_##SFX(Y, MASK, X, n, seed, offset, threshold, scale);                \
        return;                                                                                      \
    }
#else
#define DP_DROPOUT_AVX2_CALL(SFX, Y, MASK, IN, X)
#endif

#define DEFINE_DROPOUT_ONE(T, SFX)                                                                   \
static void dropout_forward_one_##SFX(T *y, uint8_t *mask, const T *x, int64_t n, uint64_t seed,     \
                                      uint64_t offset, uint64_t threshold, double scale) {           \
    DP_DROPOUT_AVX2_CALL(SFX, y, mask, NULL, x)                                                      \
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);                                       \
    int64_t nbytes = (n + 7) / 8;                                                                    \
    for (int64_t b = 0; b < nbytes; b++) {                                                           \
        unsigned byte = dp_dropout_byte(b, n, k0, k1, offset, threshold);                            \
        mask[b] = (uint8_t)byte;                                                                     \
        int64_t lo = 8 * b, hi = lo + 8 < n ? lo + 8 : n;                                            \
        for (int64_t i = lo; i < hi; i++)                                                            \
            y[i] = ((byte >> (i - lo)) & 1u) && scale != 0.0 ? (T)((double)x[i] * scale) : (T)0;     \
    }                                                                                                \
}                                                                                                    \
static void dropout_backward_one_##SFX(T *dx, const T *dy, const uint8_t *mask, int64_t n, uint64_t seed, \
                                       uint64_t offset, uint64_t threshold, double scale) {          \
    DP_DROPOUT_AVX2_CALL(SFX, dx, NULL, mask, dy)                                                    \
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);                                       \
    int64_t nbytes = (n + 7) / 8;                                                                    \
    for (int64_t b = 0; b < nbytes; b++) {                                                           \
        unsigned byte = mask ? (unsigned)mask[b] : dp_dropout_byte(b, n, k0, k1, offset, threshold); \
        int64_t lo = 8 * b, hi = lo + 8 < n ? lo + 8 : n;                                            \
        for (int64_t i = lo; i < hi; i++)                                                            \
            dx[i] = ((byte >> (i - lo)) & 1u) && scale != 0.0 ? (T)((double)dy[i] * scale) : (T)0;   \
    }                                                                                                \
}
DEFINE_DROPOUT_ONE(float, f32)
DEFINE_DROPOUT_ONE(double, f64)

/* ---- the exported kernels ------------------------------------------------------------------------- */

void philox4x32_10(uint32_t *out, const uint32_t *ctr, const uint32_t *key) {
    dp_philox4x32_10(out, ctr[0], ctr[1], ctr[2], ctr[3], key[0], key[1]);
}

void dropout_mask(uint8_t *mask, int64_t n, uint64_t seed, uint64_t offset, uint64_t threshold) {
    /* mask: (ceil(n / 8),) */
    DP_DROPOUT_SHARED(n, dropout_mask_one(mask + lo / 8, hi - lo, seed, offset + (uint64_t)lo, threshold));
}

#define DEFINE_DROPOUT(T, SFX)                                                                       \
void dropout_forward_##SFX(T *y, uint8_t *mask, const T *x, int64_t n, uint64_t seed, uint64_t offset, \
                           uint64_t threshold, double scale) {                                       \
    /* y, x: (n,); mask: (ceil(n / 8),) */                                                           \
    DP_DROPOUT_SHARED(n, dropout_forward_one_##SFX(y + lo, mask + lo / 8, x + lo, hi - lo, seed,     \
                                                   offset + (uint64_t)lo, threshold, scale));        \
}                                                                                                    \
void dropout_backward_##SFX(T *dx, const T *dy, const uint8_t *mask, int64_t n, uint64_t seed,       \
                            uint64_t offset, uint64_t threshold, double scale) {                     \
    /* dx, dy: (n,); mask: (ceil(n / 8),) or NULL (regenerated from seed, offset, threshold) */      \
    DP_DROPOUT_SHARED(n, dropout_backward_one_##SFX(dx + lo, dy + lo, mask ? mask + lo / 8 : NULL,   \
                                                    hi - lo, seed, offset + (uint64_t)lo, threshold, scale)); \
}
DEFINE_DROPOUT(float, f32)
DEFINE_DROPOUT(double, f64)
