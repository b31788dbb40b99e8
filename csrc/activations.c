/* activations.c -- elementwise activations and PReLU (kernels/activations.py).
 * Each element is computed in double with the same formula and libm functions as the NumPy
 * reference, and rounded once. Special values (see the Python module docstring): NaN propagates;
 * a zero times an infinity is taken as 0; finite limits at +-inf without overflow. The backward of
 * relu and leaky_relu runs act_scalar.h's AVX2 loop where the CPU has AVX2 (the same results, bit for
 * bit). */
#include <math.h>
#include "deepprop.h"
#include "act_scalar.h"   /* mul0, f_* (forward) and d_* (derivative) of one double */
#include "isa_path.h"

/* the derivative's vector path (act_scalar.h, used here and by linear.c): AVX2 where the CPU runs it;
 * DEEPPROP_ACTIVATION_ISA=portable|avx2|auto overrides; activation_isa() says which */
DP_DEFINE_ISA_PATH(activation, "DEEPPROP_ACTIVATION_ISA", 0)
int dp_act_path(void) { return activation_path(); }

/* one loop per activation (DP_ACT_*_SWITCH puts the switch outside it); v is the element in double */
#define ACT_LOOP(EXPR) \
    for (int64_t i = 0; i < n; i++) { double v = (double)x[i]; y[i] = (__typeof__(*y))(EXPR); } break
#define BACK_LOOP(DEXPR) \
    for (int64_t i = 0; i < n; i++) {                                                              \
        double v = (double)x[i]; dx[i] = (__typeof__(*dx))mul0((double)dy[i], (DEXPR));            \
    }                                                                                              \
    break

#define DEFINE_ACTIVATIONS(T, SFX)                                                                 \
void activation_forward_##SFX(T *y, const T *x, int64_t n, int act, double alpha) {                \
    /* y, x: (n,); y may be x (in place) */                                                        \
    DP_ACT_FORWARD_SWITCH(act, ACT_LOOP)                                                           \
}                                                                                                  \
void activation_backward_##SFX(T *dx, const T *dy, const T *x, int64_t n, int act, double alpha) { \
    /* dx, dy, x: (n,); dx = dy * act'(x), x the forward input; dx may be dy */                    \
    const double lo = dp_act_lo(act, alpha);                                                       \
    if (DP_DZ_VEC(lo)) {    /* relu, leaky_relu: the AVX2 loop, the same results */                \
        DP_DZ_AVX2(SFX, dx, NULL, dy, x, 1, n, n, lo);                                             \
        return;                                                                                    \
    }                                                                                              \
    DP_ACT_BACKWARD_SWITCH(act, BACK_LOOP)                                                         \
}                                                                                                  \
void prelu_forward_##SFX(T *y, const T *x, const T *a, int64_t N, int64_t C, int64_t na) {         \
    /* y, x: (N, C); a: (na,), na == C (per channel) or 1 (shared) */                              \
    for (int64_t i = 0; i < N; i++)                                                                \
        for (int64_t c = 0; c < C; c++) {                                                          \
            double v = (double)x[i * C + c];                                                       \
            double s = (double)a[na == 1 ? 0 : c];                                                 \
            y[i * C + c] = (T)(v < 0.0 ? mul0(s, v) : v);                                          \
        }                                                                                          \
}                                                                                                  \
void prelu_backward_##SFX(T *dx, T *da, const T *dy, const T *x, const T *a,                       \
                          int64_t N, int64_t C, int64_t na) {                                      \
    /* dx, dy, x: (N, C); da, a: (na,); da = sum dy * min(x, 0) in double, over rows (and over     \
     * channels when na == 1), in channel blocks of PRELU_CB so the rows are read in order */      \
    double total = 0.0;                                                                            \
    for (int64_t c0 = 0; c0 < C; c0 += PRELU_CB) {                                                 \
        int64_t cn = C - c0 < PRELU_CB ? C - c0 : PRELU_CB;                                        \
        double acc[PRELU_CB];                                                                      \
        for (int64_t c = 0; c < cn; c++) acc[c] = 0.0;                                             \
        for (int64_t i = 0; i < N; i++)                                                            \
            for (int64_t c = 0; c < cn; c++) {                                                     \
                int64_t ic = i * C + c0 + c;                                                       \
                double v = (double)x[ic], g = (double)dy[ic];                                      \
                double s = (double)a[na == 1 ? 0 : c0 + c];                                        \
                dx[ic] = (T)mul0(g, v > 0.0 ? 1.0 : (v <= 0.0 ? s : v));                           \
                acc[c] += mul0(g, v > 0.0 ? 0.0 : v);  /* min(v, 0), NaN kept */                   \
            }                                                                                      \
        if (na == 1) for (int64_t c = 0; c < cn; c++) total += acc[c];                             \
        else for (int64_t c = 0; c < cn; c++) da[c0 + c] = (T)acc[c];                              \
    }                                                                                              \
    if (na == 1) da[0] = (T)total;                                                                 \
}

#define PRELU_CB 256
DEFINE_ACTIVATIONS(float, f32)
DEFINE_ACTIVATIONS(double, f64)
