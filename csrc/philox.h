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

#endif
