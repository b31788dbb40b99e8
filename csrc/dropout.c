/* dropout.c -- inverted dropout with a counter-based mask (kernels/dropout.py).
 * Element j = offset + i draws word (j & 3) of philox4x32_10(counter = (j >> 2 low, high, 0, 0),
 * key = (seed low, high)) and is dropped when that word < threshold (threshold = round(p * 2^32),
 * computed once in Python; 2^32 drops everything). The mask is bit-packed, little bit order
 * (element i is bit i % 8 of byte i / 8), bit set = kept, padding bits of the last byte 0.
 * Kept elements are x * scale in double, rounded once; dropped ones are exactly 0 (also when x is
 * Inf or NaN), and so is everything when scale == 0 (p = 1), so Inf * 0 never makes a NaN. */
#include "deepprop.h"
#include "philox.h"

/* keep bits of mask byte b (elements 8b .. min(8b + 8, n) - 1): one Philox call per 4-element block */
static inline unsigned dp_dropout_byte(int64_t b, int64_t n, uint32_t k0, uint32_t k1, uint64_t offset,
                                       uint64_t threshold) {
    int64_t lo = 8 * b, hi = lo + 8 < n ? lo + 8 : n;
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

void philox4x32_10(uint32_t *out, const uint32_t *ctr, const uint32_t *key) {
    dp_philox4x32_10(out, ctr[0], ctr[1], ctr[2], ctr[3], key[0], key[1]);
}

void dropout_mask(uint8_t *mask, int64_t n, uint64_t seed, uint64_t offset, uint64_t threshold) {
    /* mask: (ceil(n / 8),) */
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    int64_t nbytes = (n + 7) / 8;
    for (int64_t b = 0; b < nbytes; b++) mask[b] = (uint8_t)dp_dropout_byte(b, n, k0, k1, offset, threshold);
}

#define DEFINE_DROPOUT(T, SFX)                                                                       \
void dropout_forward_##SFX(T *y, uint8_t *mask, const T *x, int64_t n, uint64_t seed, uint64_t offset, \
                           uint64_t threshold, double scale) {                                       \
    /* y, x: (n,); mask: (ceil(n / 8),) */                                                           \
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
void dropout_backward_##SFX(T *dx, const T *dy, const uint8_t *mask, int64_t n, uint64_t seed,       \
                            uint64_t offset, uint64_t threshold, double scale) {                     \
    /* dx, dy: (n,); mask: (ceil(n / 8),) or NULL (regenerated from seed, offset, threshold) */      \
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);                                       \
    int64_t nbytes = (n + 7) / 8;                                                                    \
    for (int64_t b = 0; b < nbytes; b++) {                                                           \
        unsigned byte = mask ? (unsigned)mask[b] : dp_dropout_byte(b, n, k0, k1, offset, threshold); \
        int64_t lo = 8 * b, hi = lo + 8 < n ? lo + 8 : n;                                            \
        for (int64_t i = lo; i < hi; i++)                                                            \
            dx[i] = ((byte >> (i - lo)) & 1u) && scale != 0.0 ? (T)((double)dy[i] * scale) : (T)0;   \
    }                                                                                                \
}

DEFINE_DROPOUT(float, f32)
DEFINE_DROPOUT(double, f64)
