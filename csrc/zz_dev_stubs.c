/* TEMPORARY development stubs: weak definitions overridden by the real kernels. Removed at integration. */
#include <stdlib.h>
#include "deepprop.h"
__attribute__((weak)) void activation_forward_f32(float *y, const float *x, int64_t n, int act, double alpha) { abort(); }
__attribute__((weak)) void activation_forward_f64(double *y, const double *x, int64_t n, int act, double alpha) { abort(); }
__attribute__((weak)) void activation_backward_f32(float *dx, const float *dy, const float *x, int64_t n, int act, double alpha) { abort(); }
__attribute__((weak)) void activation_backward_f64(double *dx, const double *dy, const double *x, int64_t n, int act, double alpha) { abort(); }
__attribute__((weak)) void prelu_forward_f32(float *y, const float *x, const float *a, int64_t N, int64_t C, int64_t na) { abort(); }
__attribute__((weak)) void prelu_forward_f64(double *y, const double *x, const double *a, int64_t N, int64_t C, int64_t na) { abort(); }
__attribute__((weak)) void prelu_backward_f32(float *dx, float *da, const float *dy, const float *x, const float *a, int64_t N, int64_t C, int64_t na) { abort(); }
__attribute__((weak)) void prelu_backward_f64(double *dx, double *da, const double *dy, const double *x, const double *a, int64_t N, int64_t C, int64_t na) { abort(); }
__attribute__((weak)) void linear_forward_f32(float *y, float *z, const float *x, const float *W, const float *b, int64_t N, int64_t K, int64_t M, int act, double alpha) { abort(); }
__attribute__((weak)) void linear_forward_f64(double *y, double *z, const double *x, const double *W, const double *b, int64_t N, int64_t K, int64_t M, int act, double alpha) { abort(); }
__attribute__((weak)) void linear_backward_f32(float *dx, float *dW, float *db, float *work, const float *dy, const float *x, const float *W, const float *z, int64_t N, int64_t K, int64_t M, int act, double alpha) { abort(); }
__attribute__((weak)) void linear_backward_f64(double *dx, double *dW, double *db, double *work, const double *dy, const double *x, const double *W, const double *z, int64_t N, int64_t K, int64_t M, int act, double alpha) { abort(); }
__attribute__((weak)) void batchnorm_forward_f32(float *y, float *mean, float *rstd, float *running_mean, float *running_var, const float *x, const float *gamma, const float *beta, int64_t N, int64_t C, double momentum, double eps) { abort(); }
__attribute__((weak)) void batchnorm_forward_f64(double *y, double *mean, double *rstd, double *running_mean, double *running_var, const double *x, const double *gamma, const double *beta, int64_t N, int64_t C, double momentum, double eps) { abort(); }
__attribute__((weak)) void batchnorm_inference_f32(float *y, const float *x, const float *gamma, const float *beta, const float *running_mean, const float *running_var, int64_t N, int64_t C, double eps) { abort(); }
__attribute__((weak)) void batchnorm_inference_f64(double *y, const double *x, const double *gamma, const double *beta, const double *running_mean, const double *running_var, int64_t N, int64_t C, double eps) { abort(); }
__attribute__((weak)) void batchnorm_backward_f32(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x, const float *gamma, const float *mean, const float *rstd, int64_t N, int64_t C) { abort(); }
__attribute__((weak)) void batchnorm_backward_f64(double *dx, double *dgamma, double *dbeta, const double *dy, const double *x, const double *gamma, const double *mean, const double *rstd, int64_t N, int64_t C) { abort(); }
__attribute__((weak)) void layernorm_forward_f32(float *y, float *mean, float *rstd, const float *x, const float *gamma, const float *beta, int64_t N, int64_t D, double eps) { abort(); }
__attribute__((weak)) void layernorm_forward_f64(double *y, double *mean, double *rstd, const double *x, const double *gamma, const double *beta, int64_t N, int64_t D, double eps) { abort(); }
__attribute__((weak)) void layernorm_backward_f32(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x, const float *gamma, const float *mean, const float *rstd, int64_t N, int64_t D) { abort(); }
__attribute__((weak)) void layernorm_backward_f64(double *dx, double *dgamma, double *dbeta, const double *dy, const double *x, const double *gamma, const double *mean, const double *rstd, int64_t N, int64_t D) { abort(); }
__attribute__((weak)) void dropout_mask(uint8_t *mask, int64_t n, uint64_t seed, uint64_t offset, uint64_t threshold) { abort(); }
__attribute__((weak)) void dropout_forward_f32(float *y, uint8_t *mask, const float *x, int64_t n, uint64_t seed, uint64_t offset, uint64_t threshold, double scale) { abort(); }
__attribute__((weak)) void dropout_forward_f64(double *y, uint8_t *mask, const double *x, int64_t n, uint64_t seed, uint64_t offset, uint64_t threshold, double scale) { abort(); }
__attribute__((weak)) void dropout_backward_f32(float *dx, const float *dy, const uint8_t *mask, int64_t n, uint64_t seed, uint64_t offset, uint64_t threshold, double scale) { abort(); }
__attribute__((weak)) void dropout_backward_f64(double *dx, const double *dy, const uint8_t *mask, int64_t n, uint64_t seed, uint64_t offset, uint64_t threshold, double scale) { abort(); }
__attribute__((weak)) void philox4x32_10(uint32_t *out, const uint32_t *ctr, const uint32_t *key) { abort(); }
__attribute__((weak)) void constant_fill_f32(float *out, int64_t n, double value) { abort(); }
__attribute__((weak)) void constant_fill_f64(double *out, int64_t n, double value) { abort(); }
__attribute__((weak)) void uniform_fill_f32(float *out, int64_t n, uint64_t seed, double low, double high) { abort(); }
__attribute__((weak)) void uniform_fill_f64(double *out, int64_t n, uint64_t seed, double low, double high) { abort(); }
__attribute__((weak)) void normal_fill_f32(float *out, int64_t n, uint64_t seed, double mean, double std) { abort(); }
__attribute__((weak)) void normal_fill_f64(double *out, int64_t n, uint64_t seed, double mean, double std) { abort(); }
__attribute__((weak)) int householder_qr_f32(float *q, float *r, float *work, const float *a, int64_t m, int64_t n) { abort(); }
__attribute__((weak)) int householder_qr_f64(double *q, double *r, double *work, const double *a, int64_t m, int64_t n) { abort(); }
__attribute__((weak)) void grad_norm_f32(double *total, const float *const *grads, const int64_t *sizes, int64_t count, int inf_norm) { abort(); }
__attribute__((weak)) void grad_norm_f64(double *total, const double *const *grads, const int64_t *sizes, int64_t count, int inf_norm) { abort(); }
__attribute__((weak)) void scale_arrays_f32(float *const *grads, const int64_t *sizes, int64_t count, double factor) { abort(); }
__attribute__((weak)) void scale_arrays_f64(double *const *grads, const int64_t *sizes, int64_t count, double factor) { abort(); }
__attribute__((weak)) void clip_value_f32(float *x, int64_t n, double clip) { abort(); }
__attribute__((weak)) void clip_value_f64(double *x, int64_t n, double clip) { abort(); }
__attribute__((weak)) void residual_add_f32(float *y, const float *x, const float *fx, int64_t n, double scale) { abort(); }
__attribute__((weak)) void residual_add_f64(double *y, const double *x, const double *fx, int64_t n, double scale) { abort(); }
__attribute__((weak)) void l2_grad_f32(float *out, const float *grad, const float *w, int64_t n, double weight_decay) { abort(); }
__attribute__((weak)) void l2_grad_f64(double *out, const double *grad, const double *w, int64_t n, double weight_decay) { abort(); }
__attribute__((weak)) void l1_grad_f32(float *out, const float *grad, const float *w, int64_t n, double l1) { abort(); }
__attribute__((weak)) void l1_grad_f64(double *out, const double *grad, const double *w, int64_t n, double l1) { abort(); }
