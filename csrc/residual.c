/* residual.c -- residual connection and weight-decay gradient terms (kernels/residual.py).
 * Each element is computed in double and rounded once, like the NumPy reference. */
#include <math.h>
#include "deepprop.h"

#define DEFINE_RESIDUAL(T, SFX)                                                              \
void residual_add_##SFX(T *y, const T *x, const T *fx, int64_t n, double scale) {            \
    /* y, x, fx: (n,) */                                                                     \
    for (int64_t i = 0; i < n; i++) y[i] = (T)((double)x[i] + scale * (double)fx[i]);        \
}                                                                                            \
void l2_grad_##SFX(T *out, const T *grad, const T *w, int64_t n, double weight_decay) {      \
    for (int64_t i = 0; i < n; i++) out[i] = (T)((double)grad[i] + weight_decay * (double)w[i]); \
}                                                                                            \
void l1_grad_##SFX(T *out, const T *grad, const T *w, int64_t n, double l1) {                \
    for (int64_t i = 0; i < n; i++) {                                                        \
        double wi = (double)w[i];                                                            \
        double s = wi > 0 ? 1.0 : (wi < 0 ? -1.0 : wi * 0.0); /* sign: 0 -> 0, NaN -> NaN */ \
        out[i] = (T)((double)grad[i] + l1 * s);                                              \
    }                                                                                        \
}

DEFINE_RESIDUAL(float, f32)
DEFINE_RESIDUAL(double, f64)
