/* init.c -- fill kernels of the initializers (kernels/init.py). The fan/gain/bound logic is Python;
 * these only fill. Element i draws philox4x32_10(counter = (i low, i high, stream, 0),
 * key = (seed low, high)) -> (w0, w1, w2, w3); stream 1 = uniform, 2 = normal.
 *   uniform: u = ((w0 >> 5) * 2^26 + (w1 >> 6)) * 2^-53 in [0, 1); out = low + (high - low) * u
 *   normal:  z = sqrt(-2 log(1 - u(w0, w1))) * cos(2 pi u(w2, w3)) (Box-Muller, cosine half only);
 *            out = mean + std * z
 * all in double, rounded once to the output dtype. */
#include <math.h>
#include "deepprop.h"
#include "philox.h"

#define DP_STREAM_UNIFORM 1u
#define DP_STREAM_NORMAL 2u
#define DP_TWO_PI 6.283185307179586 /* 2 * pi rounded to double, as 2 * math.pi in Python */

#define DEFINE_INIT(T, SFX)                                                                        \
void constant_fill_##SFX(T *out, int64_t n, double value) {                                         \
    /* out: (n,) */                                                                                \
    T v = (T)value;                                                                                \
    for (int64_t i = 0; i < n; i++) out[i] = v;                                                    \
}                                                                                                  \
void uniform_fill_##SFX(T *out, int64_t n, uint64_t seed, double low, double high) {               \
    /* out: (n,) */                                                                                \
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32), w[4];                               \
    double width = high - low;                                                                     \
    for (int64_t i = 0; i < n; i++) {                                                              \
        uint64_t c = (uint64_t)i;                                                                  \
        dp_philox4x32_10(w, (uint32_t)c, (uint32_t)(c >> 32), DP_STREAM_UNIFORM, 0u, k0, k1);       \
        out[i] = (T)(low + width * dp_u53(w[0], w[1]));                                            \
    }                                                                                              \
}                                                                                                  \
void normal_fill_##SFX(T *out, int64_t n, uint64_t seed, double mean, double std) {                \
    /* out: (n,) */                                                                                \
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32), w[4];                               \
    for (int64_t i = 0; i < n; i++) {                                                              \
        uint64_t c = (uint64_t)i;                                                                  \
        dp_philox4x32_10(w, (uint32_t)c, (uint32_t)(c >> 32), DP_STREAM_NORMAL, 0u, k0, k1);        \
        double r = sqrt(-2.0 * log(1.0 - dp_u53(w[0], w[1])));                                     \
        double z = r * cos(DP_TWO_PI * dp_u53(w[2], w[3]));                                        \
        out[i] = (T)(mean + std * z);                                                              \
    }                                                                                              \
}

DEFINE_INIT(float, f32)
DEFINE_INIT(double, f64)
