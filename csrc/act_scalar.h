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

#endif
