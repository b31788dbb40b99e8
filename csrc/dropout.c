/* dropout.c -- inverted dropout with a counter-based mask (kernels/dropout.py), and the run-time choice
 * of the random kernels' path (philox.h: dp_rng_path, rng_isa).
 * Element j = offset + i has the 32-bit uniform u_j = hi_j * 2^16 + lo_j and is dropped when u_j <
 * threshold (threshold = round(p * 2^32), computed once in Python; 2^32 drops everything). hi_j is half
 * (j & 1) of word ((j >> 1) & 3) of philox4x32_10(counter = (j >> 3 low, high, 0, 0), key = (seed low,
 * high)), lo_j the same half of the call with counter word 2 = 3 (stream 3). Only a tie, hi_j ==
 * threshold >> 16, needs lo_j (probability 2^-16; never when threshold % 2^16 == 0, as for p = 0.5):
 * so one Philox call serves 8 elements, and lo_j is drawn on a tie only. The mask is bit-packed, little
 * bit order (element i is bit i % 8 of byte i / 8), bit set = kept, padding bits of the last byte 0.
 * Kept elements are x * scale in double, rounded once; dropped ones are exactly 0 (also when x is
 * Inf or NaN), and so is everything when scale == 0 (p = 1), so Inf * 0 never makes a NaN.
 *
 * Two paths, bit-identical (the mask is integer arithmetic, the scaling one double multiply and one
 * rounding on both -- or, for float32 and a scale that is a float, the float multiply, which is that):
 *   portable  scalar: one Philox call per 8-element block (and one per tie), a byte of the mask at a time;
 *   avx2      one pass, 128 elements at a time: 16 Philox calls on 4 64-bit lanes x 4 (philox.h), the 64
 *             words put in element order, their 128 16-bit halves compared with the threshold's high
 *             half in 16-bit lanes (xor of the sign bit turns the unsigned compare into a signed one),
 *             ties found by one more compare (a group with one is decided by the portable code,
 *             dp_ties128); the compare's lane masks, widened to 32 bits, select x * scale or 0 for y
 *             straight from the registers,
 *             and pack + movemask gather them into the 128 keep bits of the mask (shifted by offset % 8:
 *             the mask need not start on a block).
 *             The Philox rounds are the cost. Each element used to take a whole 32-bit word
 *             (64 elements per 16 calls): 16K elements (L2, called from C, min of 200): forward
 *             0.65 ns/element, mask only 0.61, the Philox alone ~0.57 (~280 of ~370 vector operations
 *             per 64 elements). 16 bits per element with the tie drawn apart halves the rounds for the
 *             same comparison of a 32-bit uniform. Measured (Zen 3 VM, 1 thread, float32, alternating
 *             processes, min / median): 16K elements forward 0.68 / 0.95 -> 0.43 / 0.60 ns/element,
 *             mask only 0.65 / 0.82 -> 0.34 / 0.47; 16M elements into a preallocated y 14.7 / 18.4 ->
 *             12.0 / 15.4 ms (a quieter minute: 10.0 / 11.9), into a fresh y 21.1 / 25.2 -> 17.9 / 22.0
 *             ms; 2 threads preallocated 7.6 / 10.9 -> 7.3 / 8.8. At 16M the pass is now near the
 *             memory's pace: x read, y written (and read first, write-allocate), ~192 MB.
 *             Keeping the 16-bit halves in registers for the tie path cost ~40% (spills inside the
 *             Philox rounds); the tie path draws its group's high halves again instead.
 *             Streaming stores of y, tried again on the new path: slower into a fresh y (20.6 against
 *             17.4 ms median) and into a preallocated one (13.4 against 11.9); not used. The fresh
 *             output's page faults (the kernel zeroing 2 MB huge pages) take ~6-7 ms of a fresh call.
 *             Zen 5 VM (so named; CPUID: family 19h model 01h, a Zen 3 EPYC under KVM, AVX2 + FMA, NO
 *             AVX-512 -- XCR0 has no zmm state, so no AVX-512 path can run or be timed on it).
 *             Kept from the 32-bit layout: the blocks in lanes (0, 2, 1, 3) (dp_philox_run_avx2_lanes_x4),
 *             so the unpacks give element order without cross-lane permutes. Tried then, no change: the
 *             key xor first (c1 ^ key, off the multiply chain); two runs of 8 blocks instead of one of 16
 *             (register pressure); vpshufd instead of the shifts of the products (another pipe).
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

#define DP_STREAM_DROPOUT_LOW 3u /* the low 16 bits of an element's uniform (kernels/dropout.py) */

/* half (j & 1) of word ((j >> 1) & 3) of w: element j's 16 bits of its block's Philox call */
static inline uint32_t dp_half16(const uint32_t w[4], uint64_t j) {
    return (w[(j >> 1) & 3u] >> (16u * (unsigned)(j & 1u))) & 0xFFFFu;
}

/* lo_j, element j's low 16 bits: its own Philox call in stream 3, made only on a tie of its high ones */
static inline uint32_t dp_dropout_low16(uint64_t j, uint32_t k0, uint32_t k1) {
    uint32_t w[4];
    dp_philox4x32_10(w, (uint32_t)(j >> 3), (uint32_t)(j >> 35), DP_STREAM_DROPOUT_LOW, 0u, k0, k1);
    return dp_half16(w, j);
}

/* keep bits of mask byte b (elements 8b .. min(8b + 8, n) - 1): one Philox call per 8-element block
 * (stream 0, the high halves), one more per tie (hi == threshold >> 16 with low bits to compare) */
static inline unsigned dp_dropout_byte(int64_t b, int64_t n, uint32_t k0, uint32_t k1, uint64_t offset,
                                       uint64_t threshold) {
    int64_t lo = 8 * b, hi = lo + 8 < n ? lo + 8 : n;
    if (threshold == 0 || threshold >= 4294967296u) /* keep all / drop all: no word needed */
        return threshold == 0 ? (1u << (hi - lo)) - 1u : 0u;
    const uint32_t t_hi = (uint32_t)(threshold >> 16), t_lo = (uint32_t)(threshold & 0xFFFFu);
    uint32_t w[4];
    uint64_t block = 0;
    int have = 0;
    unsigned byte = 0;
    for (int64_t i = lo; i < hi; i++) {
        uint64_t j = offset + (uint64_t)i;
        if (!have || (j >> 3) != block) {
            block = j >> 3;
            dp_philox4x32_10(w, (uint32_t)block, (uint32_t)(block >> 32), 0u, 0u, k0, k1);
            have = 1;
        }
        /* u_j >= threshold: hi_j > t_hi, or hi_j == t_hi and lo_j >= t_lo (always when t_lo == 0) */
        uint32_t h = dp_half16(w, j);
        if (h > t_hi || (h == t_hi && (t_lo == 0 || dp_dropout_low16(j, k0, k1) >= t_lo))) byte |= 1u << (i - lo);
    }
    return byte;
}

/* ---- avx2 ------------------------------------------------------------------------------------------ */
#if DP_RNG_X86

/* the threshold as the 16-bit compares take it: keep iff hi >= TH, TH = t_hi + (t_lo > 0) (a tie, hi ==
 * t_hi, then decided by lo_j >= t_lo); 1 <= threshold < 2^32 */
typedef struct {
    __m256i thflip; /* (TH - 1) ^ 2^15 in 16-bit lanes: hi >= TH iff (hi ^ 2^15) > (TH - 1) ^ 2^15 signed */
    __m256i thi;    /* t_hi in 16-bit lanes, for the ties */
    uint64_t threshold;
    uint32_t t_lo, k0, k1;
} dp_dropout_cut;

/* a group with a tie (below, ~128 / 2^16 of the groups): its 128 keep flags from the portable decision,
 * whose scalar Philox calls draw the high halves again -- cheaper than keeping them in registers
 * through the vector code -- and the low half of each tie */
static void dp_ties128(uint64_t q, const dp_dropout_cut *cut, __m256i keep16[8]) {
    uint16_t kv[128];
    for (int b = 0; b < 16; b++) {
        unsigned byte = dp_dropout_byte(b, 128, cut->k0, cut->k1, 8 * q, cut->threshold);
        for (int r = 0; r < 8; r++) kv[8 * b + r] = (byte >> r) & 1u ? 0xFFFFu : 0u;
    }
    memcpy(keep16, kv, sizeof kv);
}

/* keep bits of the 128 elements j = 8q .. 8q + 127 (bits[0] bit t: element 8q + t, bits[1]: 8q + 64 + t)
 * and their 16-bit lane masks in element order (keep16[k], lane l: element 8q + 16k + l, all ones =
 * kept). 16 Philox calls (stream 0), each word 2 elements' high halves; a tie draws its element's
 * low half in scalar code (stream 3; ~128 / 2^16 of the groups, none when t_lo == 0). */
DP_AVX2_INLINE void dp_keep128_avx2(uint64_t q, const dp_philox_keys *ks, const dp_dropout_cut *cut,
                                    __m256i keep16[8], uint64_t bits[2]) {
    __m256i c[4][4];
    /* blocks q + 4v + (0, 2, 1, 3) in the 4 lanes: the unpacks below then give element order */
    dp_philox_run_avx2_lanes_x4(c, ks, q, 0u, 0u, _mm256_setr_epi64x(0, 2, 1, 3));
    const __m256i sign = _mm256_set1_epi16((short)0x8000);
    __m256i tie = _mm256_setzero_si256();
    for (int v = 0; v < 4; v++) {
        /* lane l of a = (w0, w1) of its block, of b = (w2, w3); 128-bit lanes of e[2v] = blocks 4v, 4v + 1
         * (words 0-3 | 4-7), e[2v + 1] = blocks 4v + 2, 4v + 3: no cross-lane permute, as the blocks sit
         * in lanes 0, 2, 1, 3; as 16-bit lanes, half (j & 1) of word j >> 1: elements 32v + 0..15, 16..31 */
        __m256i a = _mm256_blend_epi32(c[0][v], _mm256_slli_epi64(c[1][v], 32), 0xAA);
        __m256i b = _mm256_blend_epi32(c[2][v], _mm256_slli_epi64(c[3][v], 32), 0xAA);
        const __m256i e[2] = {_mm256_unpacklo_epi64(a, b), _mm256_unpackhi_epi64(a, b)};
        for (int h = 0; h < 2; h++) {
            keep16[2 * v + h] = _mm256_cmpgt_epi16(_mm256_xor_si256(e[h], sign), cut->thflip);
            if (cut->t_lo) tie = _mm256_or_si256(tie, _mm256_cmpeq_epi16(e[h], cut->thi));
        }
    }
    if (cut->t_lo && !_mm256_testz_si256(tie, tie)) dp_ties128(q, cut, keep16); /* rare */
    for (int w = 0; w < 2; w++) {
        uint64_t word = 0;
        for (int v = 0; v < 2; v++) {
            /* 32 elements to 32 bits: the pack interleaves 128-bit lanes (0-7, 16-23 | 8-15, 24-31), the
             * permute puts them in order */
            __m256i k8 = _mm256_permute4x64_epi64(_mm256_packs_epi16(keep16[4 * w + 2 * v], keep16[4 * w + 2 * v + 1]), 0xD8);
            word |= (uint64_t)(uint32_t)_mm256_movemask_epi8(k8) << (32 * v);
        }
        bits[w] = word;
    }
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

/* One pass, 128 elements at a time: a group's 16 Philox calls give its 128 keep bits (the mask) and its
 * lane masks, which select x * scale or 0 for y straight from the registers -- no second pass over a
 * mask. Group G holds the elements j = 8q .. 8q + 127, q = offset / 8 + 16G, i.e. i = 128G - s ..
 * 128G - s + 127 with s = offset % 8 (a mask need not start on a block): groups inside [0, n) are
 * applied from the lane masks, the first and last ones element by element from the bits. The groups'
 * bits are a sequence of 64-bit words K_0, K_1, ... (two per group); mask word g (elements 64g ..
 * 64g + 63) is (K_g >> s) | (K_(g+1) << (64 - s)), written one word late. y == NULL: the mask only;
 * mask == NULL: y only (the backward regenerating the mask). scale == 0: y = 0. */
DP_AVX2_INLINE void dp_dropout_avx2(void *yv, uint8_t *mask, const void *xv, int64_t n, uint64_t seed,
                                    uint64_t offset, uint64_t threshold, double scale, int dbl, int fexact) {
    float *yf = (float *)yv;
    double *yd = (double *)yv;
    const float *xf = (const float *)xv;
    const double *xd = (const double *)xv;
    dp_philox_keys ks;
    dp_philox_keys_avx2(&ks, (uint32_t)seed, (uint32_t)(seed >> 32));
    const uint32_t t_hi = (uint32_t)(threshold >> 16), t_lo = (uint32_t)(threshold & 0xFFFFu);
    const uint32_t th = t_hi + (t_lo > 0);
    const dp_dropout_cut cut = {_mm256_set1_epi16((short)(uint16_t)((th - 1u) ^ 0x8000u)),
                                _mm256_set1_epi16((short)(uint16_t)t_hi), threshold, t_lo, (uint32_t)seed,
                                (uint32_t)(seed >> 32)};
    const __m256 sf = _mm256_set1_ps((float)scale);
    const __m256d sd = _mm256_set1_pd(scale);
    const unsigned s = (unsigned)(offset & 7u);
    const uint64_t q0 = offset >> 3;
    const int64_t ng = (n + (int64_t)s + 127) / 128;
    uint64_t prev = 0;
    int64_t g = -1; /* the mask word whose first bits prev holds */
    for (int64_t G = 0; G < ng; G++) {
        __m256i keep16[8];
        uint64_t bits[2];
        dp_keep128_avx2(q0 + 16u * (uint64_t)G, &ks, &cut, keep16, bits);
        const int64_t base = 128 * G - (int64_t)s;
        if (yv && base >= 0 && base + 128 <= n) {
            for (int k = 0; k < 16; k++) {
                /* 8 elements' lanes: a half of keep16[k / 2], 16-bit lanes widened to 32 */
                __m128i k16 = k & 1 ? _mm256_extracti128_si256(keep16[k / 2], 1) : _mm256_castsi256_si128(keep16[k / 2]);
                __m256i lanes = _mm256_cvtepi16_epi32(k16);
                if (dbl) dp_apply8_avx2_f64(yd + base + 8 * k, xd + base + 8 * k, lanes, sf, sd, fexact);
                else dp_apply8_avx2_f32(yf + base + 8 * k, xf + base + 8 * k, lanes, sf, sd, fexact);
            }
        } else if (yv) {
            int64_t lo = base > 0 ? base : 0, hi = base + 128 < n ? base + 128 : n;
            for (int64_t i = lo; i < hi; i++) {
                int64_t t = i - base;
                int kept = (int)((bits[t >> 6] >> (t & 63)) & 1u);
                if (dbl) yd[i] = kept ? xd[i] * scale : 0.0;
                else yf[i] = kept ? (float)((double)xf[i] * scale) : 0.0f;
            }
        }
        for (int w = 0; mask && w < 2; w++) {
            if (g >= 0 && 64 * g < n) dp_store_word(mask, g, s ? (prev >> s) | (bits[w] << (64 - s)) : prev, n);
            prev = bits[w];
            g++;
        }
    }
    /* the last word, unless the loop wrote it: its bits from the word after lie past n */
    if (mask && g >= 0 && 64 * g < n) dp_store_word(mask, g, prev >> s, n);
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
 * smaller calls never start a team. The threads claim chunks of whole mask words (below) and
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
