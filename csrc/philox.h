/* philox.h -- the Philox4x32-10 counter-based generator (Salmon, Moraes, Dror, Shaw, "Parallel random
 * numbers: as easy as 1, 2, 3", SC 2011; Random123's philox4x32 with 10 rounds), shared by dropout.c
 * and init.c. Private to the C sources: it is NOT part of deepprop.h and never seen by cffi's cdef
 * (the exported philox4x32_10 in dropout.c wraps dp_philox4x32_10 for the known-answer tests).
 *
 * One call maps a 128-bit counter and a 64-bit key to 128 random bits; there is no state, so every
 * random number is a pure function of (key, counter) - the seed contract of kernels/dropout.py and
 * kernels/init.py. The NumPy (the reference) and Numba versions are in kernels/dropout.py. */
#ifndef DEEPPROP_PHILOX_H
#define DEEPPROP_PHILOX_H
#include <stdint.h>

#define DP_PHILOX_M0 0xD2511F53u /* round multipliers */
#define DP_PHILOX_M1 0xCD9E8D57u
#define DP_PHILOX_W0 0x9E3779B9u /* Weyl key bumps: golden ratio, sqrt(3) - 1 */
#define DP_PHILOX_W1 0xBB67AE85u

/* out = philox4x32_10(counter = (c0, c1, c2, c3), key = (k0, k1)) */
static inline void dp_philox4x32_10(uint32_t out[4], uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                                    uint32_t k0, uint32_t k1) {
    for (int r = 0; r < 10; r++) {
        if (r > 0) { k0 += DP_PHILOX_W0; k1 += DP_PHILOX_W1; } /* wraps mod 2^32 (unsigned) */
        uint64_t p0 = (uint64_t)DP_PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)DP_PHILOX_M1 * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n1 = (uint32_t)p1;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        uint32_t n3 = (uint32_t)p0;
        c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

/* a double in [0, 1) from two words: 53 random bits, (a >> 5) * 2^26 + (b >> 6), times 2^-53 (exact) */
static inline double dp_u53(uint32_t a, uint32_t b) {
    return ((double)(a >> 5) * 67108864.0 + (double)(b >> 6)) * (1.0 / 9007199254740992.0);
}

/* ---- the run-time path and the AVX2 generator ------------------------------------------------------
 * The random kernels (dropout.c, init.c) run one of two paths, chosen once per process by dp_rng_path()
 * (defined in dropout.c; rng_isa() names it): DP_RNG_AVX2 when the CPU runs AVX2 + FMA (checked with
 * __builtin_cpu_supports, which also checks the OS saves the ymm registers), else DP_RNG_PORTABLE, the
 * scalar code. DEEPPROP_RNG_ISA=portable|avx2|auto overrides it (for tests; a path the CPU cannot run
 * is ignored). The vector code is compiled with __attribute__((target)), so the module builds without
 * -march and imports on any x86-64. Both paths draw the same Philox words; what may differ is named
 * where it can (init.c: the normal's log/sin/cos). */
enum { DP_RNG_PORTABLE = 0, DP_RNG_AVX2 = 1 };
int dp_rng_path(void);

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define DP_RNG_X86 1
#include <immintrin.h>
#define DP_AVX2 __attribute__((target("avx2,fma")))
#define DP_AVX2_INLINE static inline __attribute__((always_inline, target("avx2,fma")))

/* round keys of philox4x32_10: key word + r * Weyl bump (mod 2^32), r = 0..9, broadcast to 64-bit
 * lanes (high halves 0) */
typedef struct { __m256i k0[10], k1[10]; uint32_t key0, key1; } dp_philox_keys;

DP_AVX2_INLINE void dp_philox_keys_avx2(dp_philox_keys *ks, uint32_t k0, uint32_t k1) {
    ks->key0 = k0;
    ks->key1 = k1;
    for (int r = 0; r < 10; r++) {
        ks->k0[r] = _mm256_set1_epi64x((int64_t)(uint32_t)(k0 + (uint32_t)r * DP_PHILOX_W0));
        ks->k1[r] = _mm256_set1_epi64x((int64_t)(uint32_t)(k1 + (uint32_t)r * DP_PHILOX_W1));
    }
}

/* NV x 4 Philox4x32-10 at once. Layout: one counter per 64-bit lane, word c_i in the LOW half of
 * lane l of c[i][v] (counter 4v + l). _mm256_mul_epu32 reads only the low halves and gives the whole
 * 32x32 -> 64-bit product, so a round is 2 multiplies, 2 shifts and 4 xors per 4 counters: the high
 * halves of c0..c3 carry garbage (the other half of a product) that no operation moves down into a
 * low half (xor is lane-local, the shift right acts on a product, which has none). Callers read the
 * low halves of the 4 words on return. The NV independent chains hide the multiply latency. */
/* one Philox round on the 4 counters of chain v (the keys of round r) */
#define DP_PHILOX_AVX2_ROUND(c, v, m0, m1, ks, r)                                                     \
    do {                                                                                             \
        __m256i p0 = _mm256_mul_epu32(c[0][v], m0), p1 = _mm256_mul_epu32(c[2][v], m1);              \
        c[0][v] = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(p1, 32), c[1][v]), ks->k0[r]); \
        c[1][v] = p1;                                                                                \
        c[2][v] = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(p0, 32), c[3][v]), ks->k1[r]); \
        c[3][v] = p0;                                                                                \
    } while (0)
#define DP_PHILOX_AVX2_NV(NV)                                                                         \
DP_AVX2_INLINE void dp_philox_avx2_x##NV(__m256i c[4][NV], const dp_philox_keys *ks) {               \
    const __m256i m0 = _mm256_set1_epi64x(DP_PHILOX_M0), m1 = _mm256_set1_epi64x(DP_PHILOX_M1);      \
    _Pragma("GCC unroll 10") for (int r = 0; r < 10; r++) {                                          \
        _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) DP_PHILOX_AVX2_ROUND(c, v, m0, m1, ks, r); \
    }                                                                                                \
}
DP_PHILOX_AVX2_NV(2)
DP_PHILOX_AVX2_NV(4)

/* the counters (q + 4v + lane_l low, high, c2, c3) of NV x 4 consecutive blocks starting at q (lane: a
 * permutation of 0, 1, 2, 3 in the 64-bit lanes) */
#define DP_PHILOX_CTR_AVX2_NV(NV)                                                                     \
DP_AVX2_INLINE void dp_philox_ctr_avx2_x##NV(__m256i c[4][NV], uint64_t q, uint32_t c2, uint32_t c3,     \
                                             __m256i lane) {                                         \
    _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) {                                           \
        __m256i j = _mm256_add_epi64(_mm256_set1_epi64x((int64_t)(q + 4u * (uint64_t)v)), lane);     \
        c[0][v] = j; /* the high half (j >> 32) is garbage to the multiply */                        \
        c[1][v] = _mm256_srli_epi64(j, 32);                                                          \
        c[2][v] = _mm256_set1_epi64x(c2);                                                            \
        c[3][v] = _mm256_set1_epi64x(c3);                                                            \
    }                                                                                                \
}
DP_PHILOX_CTR_AVX2_NV(2)
DP_PHILOX_CTR_AVX2_NV(4)

/* philox4x32_10 of the NV x 4 counters (q + 4v + lane_l low, high, c2, c3), the words left in c as by
 * dp_philox_avx2_xNV (dropout.c takes lanes (0, 2, 1, 3), whose words its unpacks put in element
 * order without a cross-lane permute). When the high word of q + 4v + l is the same in every lane
 * (always, but at a crossing of 2^32), words 1, 2, 3 of the counter are the same everywhere: round
 * 1's second product and round 2's first are then products of constants, computed once in scalar
 * code, and round 3 xors one constant less -- 10 of the 80 vector operations per 4 counters saved,
 * same words. */
#define DP_PHILOX_RUN_AVX2_NV(NV)                                                                     \
DP_AVX2_INLINE void dp_philox_run_avx2_lanes_x##NV(__m256i c[4][NV], const dp_philox_keys *ks, uint64_t q, \
                                                  uint32_t c2, uint32_t c3, __m256i lane) {          \
    uint32_t c1 = (uint32_t)(q >> 32);                                                               \
    if (c1 != (uint32_t)((q + 4u * NV - 1u) >> 32)) { /* the high word changes across the lanes */   \
        dp_philox_ctr_avx2_x##NV(c, q, c2, c3, lane);                                                \
        dp_philox_avx2_x##NV(c, ks);                                                                 \
        return;                                                                                      \
    }                                                                                                \
    const uint32_t k0 = ks->key0, k1 = ks->key1;                                                     \
    uint64_t p1 = (uint64_t)DP_PHILOX_M1 * c2;                                                       \
    uint32_t A = (uint32_t)(p1 >> 32) ^ c1 ^ k0, B = (uint32_t)p1; /* round 1's words 0, 1 */        \
    uint64_t pA = (uint64_t)DP_PHILOX_M0 * A;                      /* round 2's first product */    \
    uint32_t G = (uint32_t)pA;                                     /* round 2's word 3 */           \
    const __m256i D1 = _mm256_set1_epi64x(c3 ^ k1);                                                  \
    const __m256i E = _mm256_set1_epi64x(B ^ (uint32_t)(k0 + DP_PHILOX_W0));                         \
    const __m256i F = _mm256_set1_epi64x((uint32_t)(pA >> 32) ^ (uint32_t)(k1 + DP_PHILOX_W1));      \
    const __m256i H = _mm256_set1_epi64x(G ^ (uint32_t)(k1 + 2u * DP_PHILOX_W1));                    \
    const __m256i m0 = _mm256_set1_epi64x(DP_PHILOX_M0), m1 = _mm256_set1_epi64x(DP_PHILOX_M1);      \
    _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) {                                           \
        __m256i j = _mm256_add_epi64(_mm256_set1_epi64x((int64_t)(q + 4u * (uint64_t)v)), lane);     \
        /* round 1: word 0 = j's low half times M0; words 0, 1 out are A, B */                       \
        __m256i p0 = _mm256_mul_epu32(j, m0);                                                        \
        __m256i n2 = _mm256_xor_si256(_mm256_srli_epi64(p0, 32), D1), n3 = p0;                       \
        /* round 2: word 0 = A (product pA), word 1 = B; word 3 out is G */                          \
        __m256i q1 = _mm256_mul_epu32(n2, m1);                                                       \
        c[0][v] = _mm256_xor_si256(_mm256_srli_epi64(q1, 32), E);                                    \
        c[1][v] = q1;                                                                                \
        c[2][v] = _mm256_xor_si256(n3, F);                                                           \
        /* round 3: word 3 = G */                                                                    \
        __m256i r0 = _mm256_mul_epu32(c[0][v], m0), r1 = _mm256_mul_epu32(c[2][v], m1);              \
        c[0][v] = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(r1, 32), c[1][v]), ks->k0[2]); \
        c[1][v] = r1;                                                                                \
        c[2][v] = _mm256_xor_si256(_mm256_srli_epi64(r0, 32), H);                                    \
        c[3][v] = r0;                                                                                \
    }                                                                                                \
    _Pragma("GCC unroll 7") for (int r = 3; r < 10; r++) {                                           \
        _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) DP_PHILOX_AVX2_ROUND(c, v, m0, m1, ks, r); \
    }                                                                                                \
}                                                                                                    \
/* the same in lane order: lane l of c[i][v] holds block q + 4v + l */                               \
DP_AVX2_INLINE void dp_philox_run_avx2_x##NV(__m256i c[4][NV], const dp_philox_keys *ks, uint64_t q,  \
                                            uint32_t c2, uint32_t c3) {                              \
    dp_philox_run_avx2_lanes_x##NV(c, ks, q, c2, c3, _mm256_setr_epi64x(0, 1, 2, 3));                \
}
DP_PHILOX_RUN_AVX2_NV(2)
DP_PHILOX_RUN_AVX2_NV(4)

/* dp_u53 on 4 lanes: words a, b in the low halves (high halves ignored); exact, as dp_u53 */
DP_AVX2_INLINE __m256d dp_u53_avx2(__m256i a, __m256i b) {
    const __m256i magic = _mm256_set1_epi64x(0x4330000000000000); /* 2^52: its low bits take an int */
    const __m256d magicd = _mm256_set1_pd(4503599627370496.0);
    const __m256i lo27 = _mm256_set1_epi64x(0x7FFFFFF), lo26 = _mm256_set1_epi64x(0x3FFFFFF);
    __m256i ha = _mm256_and_si256(_mm256_srli_epi64(a, 5), lo27); /* (a >> 5) < 2^27 */
    __m256i hb = _mm256_and_si256(_mm256_srli_epi64(b, 6), lo26); /* (b >> 6) < 2^26 */
    __m256d da = _mm256_sub_pd(_mm256_castsi256_pd(_mm256_or_si256(ha, magic)), magicd);
    __m256d db = _mm256_sub_pd(_mm256_castsi256_pd(_mm256_or_si256(hb, magic)), magicd);
    /* da * 2^26 + db < 2^53 is exact (fused or not), and so is the power-of-two scaling */
    return _mm256_mul_pd(_mm256_fmadd_pd(da, _mm256_set1_pd(67108864.0), db),
                         _mm256_set1_pd(1.0 / 9007199254740992.0));
}
#else
#define DP_RNG_X86 0
#endif

#endif
