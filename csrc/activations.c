/* activations.c -- elementwise activations and PReLU (kernels/activations.py).
 * Each element is computed in double with the same formula and libm functions as the NumPy
 * reference, and rounded once. Special values (see the Python module docstring): NaN propagates;
 * a zero times an infinity is taken as 0; finite limits at +-inf without overflow. */
#include <math.h>
#include "deepprop.h"

#define SQRT1_2 0.7071067811865476       /* 1/sqrt(2), same literal as the Python side */
#define INV_SQRT_2PI 0.3989422804014327  /* 1/sqrt(2 pi) */

/* u * v, but 0 when one factor is 0 and the other infinite; NaN propagates */
static inline double mul0(double u, double v) {
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

/* one loop per activation (the switch is outside the loop); v is the element in double */
#define ACT_LOOP(T, EXPR) \
    for (int64_t i = 0; i < n; i++) { double v = (double)x[i]; y[i] = (T)(EXPR); } break
#define BACK_LOOP(T, DEXPR) \
    for (int64_t i = 0; i < n; i++) { double v = (double)x[i]; dx[i] = (T)mul0((double)dy[i], (DEXPR)); } \
    break

#define DEFINE_ACTIVATIONS(T, SFX)                                                                 \
void activation_forward_##SFX(T *y, const T *x, int64_t n, int act, double alpha) {                \
    /* y, x: (n,); y may be x (in place) */                                                        \
    switch (act) {                                                                                 \
    case DP_ACT_IDENTITY:   ACT_LOOP(T, v);                                                        \
    case DP_ACT_SIGMOID:    ACT_LOOP(T, f_sigmoid(v));                                             \
    case DP_ACT_TANH:       ACT_LOOP(T, tanh(v));                                                  \
    case DP_ACT_RELU:       ACT_LOOP(T, f_relu(v));                                                \
    case DP_ACT_LEAKY_RELU: ACT_LOOP(T, f_leaky(v, alpha));                                        \
    case DP_ACT_ELU:        ACT_LOOP(T, f_elu(v, alpha));                                          \
    case DP_ACT_GELU:       ACT_LOOP(T, f_gelu(v));                                                \
    default:                ACT_LOOP(T, v + NAN);  /* unknown code: never silently wrong */        \
    }                                                                                              \
}                                                                                                  \
void activation_backward_##SFX(T *dx, const T *dy, const T *x, int64_t n, int act, double alpha) { \
    /* dx, dy, x: (n,); dx = dy * act'(x), x the forward input; dx may be dy */                    \
    switch (act) {                                                                                 \
    case DP_ACT_IDENTITY:   BACK_LOOP(T, v != v ? v : 1.0);  /* NaN x gives NaN too */             \
    case DP_ACT_SIGMOID:    BACK_LOOP(T, d_sigmoid(v));                                            \
    case DP_ACT_TANH:       BACK_LOOP(T, d_tanh(v));                                               \
    case DP_ACT_RELU:       BACK_LOOP(T, d_relu(v));                                               \
    case DP_ACT_LEAKY_RELU: BACK_LOOP(T, d_leaky(v, alpha));                                       \
    case DP_ACT_ELU:        BACK_LOOP(T, d_elu(v, alpha));                                         \
    case DP_ACT_GELU:       BACK_LOOP(T, d_gelu(v));                                               \
    default:                BACK_LOOP(T, v + NAN);                                                 \
    }                                                                                              \
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
