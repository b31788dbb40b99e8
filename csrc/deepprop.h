/* deepprop.h -- the C API of every kernel, and the cffi cdef (csrc/build.py feeds this file,
 * minus its preprocessor lines, to ffibuilder.cdef). Keep it plain C declarations only.
 *
 * Conventions (llm.c style):
 *   - names are <kernel>_<f32|f64>; one .c file per kernel family, same stem as kernels/<family>.py
 *   - outputs first, then const inputs, then sizes, then scalar parameters
 *   - every array is C-contiguous, aligned and of the suffix's dtype: the Python wrappers in
 *     kernels/ check that before a pointer is made; the C code trusts it and never allocates
 *   - sizes are int64_t element counts; a size of 0 is legal and does nothing
 *   - activation codes (act) are the DP_ACT_* values below; alpha is the slope of leaky_relu
 *     and the alpha of elu, ignored by the others
 */
#ifndef DEEPPROP_H
#define DEEPPROP_H
#include <stdint.h>

enum { DP_ACT_IDENTITY = 0, DP_ACT_SIGMOID = 1, DP_ACT_TANH = 2, DP_ACT_RELU = 3,
       DP_ACT_LEAKY_RELU = 4, DP_ACT_ELU = 5, DP_ACT_GELU = 6 };

/* build.c: compile flags and compiler, recorded at build time */
const char *deepprop_build_info(void);

/* activations.c: elementwise, n = number of elements */
const char *activation_isa(void);  /* the derivative loops chosen at run time: "avx2" or "portable" (+ why) */
void activation_forward_f32(float *y, const float *x, int64_t n, int act, double alpha);
void activation_forward_f64(double *y, const double *x, int64_t n, int act, double alpha);
void activation_backward_f32(float *dx, const float *dy, const float *x, int64_t n, int act, double alpha);
void activation_backward_f64(double *dx, const double *dy, const double *x, int64_t n, int act, double alpha);
/* prelu: x (N, C), slope a (na,) with na == C (per channel) or na == 1 (shared) */
void prelu_forward_f32(float *y, const float *x, const float *a, int64_t N, int64_t C, int64_t na);
void prelu_forward_f64(double *y, const double *x, const double *a, int64_t N, int64_t C, int64_t na);
void prelu_backward_f32(float *dx, float *da, const float *dy, const float *x, const float *a, int64_t N, int64_t C, int64_t na);
void prelu_backward_f64(double *dx, double *da, const double *dy, const double *x, const double *a, int64_t N, int64_t C, int64_t na);

/* linear.c: y = act(z), z = x @ W + b.  x (N, K), W (K, M), b (M,) or NULL, y and z (N, M); z may be NULL */
void linear_forward_f32(float *y, float *z, const float *x, const float *W, const float *b,
                        int64_t N, int64_t K, int64_t M, int act, double alpha);
void linear_forward_f64(double *y, double *z, const double *x, const double *W, const double *b,
                        int64_t N, int64_t K, int64_t M, int act, double alpha);
/* dz = dy * act'(z) (z may be NULL when act is identity); dx = dz @ W^T (N, K), dW = x^T @ dz (K, M),
 * db = sum over rows of dz (M,); work is scratch of N*M elements */
void linear_backward_f32(float *dx, float *dW, float *db, float *work, const float *dy, const float *x,
                         const float *W, const float *z, int64_t N, int64_t K, int64_t M, int act, double alpha);
void linear_backward_f64(double *dx, double *dW, double *db, double *work, const double *dy, const double *x,
                         const double *W, const double *z, int64_t N, int64_t K, int64_t M, int act, double alpha);
/* gemm.c (the GEMM behind linear.c): the micro-kernel path dispatched at run time, e.g.
 * "avx2 (6x16 f32, 6x8 f64)"; the first word is portable, avx2 or avx512 (DEEPPROP_GEMM_ISA overrides) */
const char *gemm_isa(void);

/* batchnorm.c: x (N, C), statistics per column; mean, rstd (C,) saved for the backward;
 * running_mean, running_var (C,) updated in place with momentum (unbiased variance, N >= 2) */
const char *batchnorm_isa(void);  /* the loops chosen at run time: "avx2" or "portable" (+ why) */
void batchnorm_forward_f32(float *y, float *mean, float *rstd, float *running_mean, float *running_var,
                           const float *x, const float *gamma, const float *beta,
                           int64_t N, int64_t C, double momentum, double eps);
void batchnorm_forward_f64(double *y, double *mean, double *rstd, double *running_mean, double *running_var,
                           const double *x, const double *gamma, const double *beta,
                           int64_t N, int64_t C, double momentum, double eps);
void batchnorm_inference_f32(float *y, const float *x, const float *gamma, const float *beta,
                             const float *running_mean, const float *running_var, int64_t N, int64_t C, double eps);
void batchnorm_inference_f64(double *y, const double *x, const double *gamma, const double *beta,
                             const double *running_mean, const double *running_var, int64_t N, int64_t C, double eps);
void batchnorm_backward_f32(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                            const float *gamma, const float *mean, const float *rstd, int64_t N, int64_t C);
void batchnorm_backward_f64(double *dx, double *dgamma, double *dbeta, const double *dy, const double *x,
                            const double *gamma, const double *mean, const double *rstd, int64_t N, int64_t C);

/* layernorm.c: x (N, D), statistics per row; mean, rstd (N,); gamma, beta (D,) */
void layernorm_forward_f32(float *y, float *mean, float *rstd, const float *x, const float *gamma,
                           const float *beta, int64_t N, int64_t D, double eps);
void layernorm_forward_f64(double *y, double *mean, double *rstd, const double *x, const double *gamma,
                           const double *beta, int64_t N, int64_t D, double eps);
void layernorm_backward_f32(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                            const float *gamma, const float *mean, const float *rstd, int64_t N, int64_t D);
void layernorm_backward_f64(double *dx, double *dgamma, double *dbeta, const double *dy, const double *x,
                            const double *gamma, const double *mean, const double *rstd, int64_t N, int64_t D);

/* dropout.c: element j = offset + i is dropped when its 32-bit uniform < threshold (threshold =
 * round(p * 2^32), so 2^32 drops all); the uniform's high 16 bits are half (j & 1) of word ((j >> 1) & 3)
 * of philox4x32_10(counter = (j >> 3 low, high, 0, 0), key = (seed low, high)), its low 16 bits the same
 * half with counter word 2 = 3. mask is bit-packed, little bit order, bit set = kept, ceil(n / 8) bytes.
 * dropout_backward takes mask, or regenerates it from (seed, offset, threshold) when mask is NULL. */
void dropout_mask(uint8_t *mask, int64_t n, uint64_t seed, uint64_t offset, uint64_t threshold);
void dropout_forward_f32(float *y, uint8_t *mask, const float *x, int64_t n, uint64_t seed, uint64_t offset,
                         uint64_t threshold, double scale);
void dropout_forward_f64(double *y, uint8_t *mask, const double *x, int64_t n, uint64_t seed, uint64_t offset,
                         uint64_t threshold, double scale);
void dropout_backward_f32(float *dx, const float *dy, const uint8_t *mask, int64_t n, uint64_t seed,
                          uint64_t offset, uint64_t threshold, double scale);
void dropout_backward_f64(double *dx, const double *dy, const uint8_t *mask, int64_t n, uint64_t seed,
                          uint64_t offset, uint64_t threshold, double scale);
/* the raw generator, for known-answer tests: out[4] = philox4x32_10(ctr[4], key[2]) */
void philox4x32_10(uint32_t *out, const uint32_t *ctr, const uint32_t *key);
/* the path the random kernels (dropout.c, init.c) run, dispatched at run time: "portable" or "avx2" as
 * the first word (DEEPPROP_RNG_ISA=portable|avx2|auto overrides) */
const char *rng_isa(void);

/* init.c: uniform element i draws philox4x32_10(counter = (i low, i high, 1, 0), key = (seed low, high))
 * -> u = ((w0 >> 5) * 2^26 + (w1 >> 6)) * 2^-53 in [0, 1). normal ("stream v2"): elements 2j, 2j + 1 draw
 * counter (j low, j high, 2, 0) -> r = sqrt(-2 log(1 - u(w0, w1))), theta = 2 pi u(w2, w3),
 * z_2j = r cos(theta), z_2j+1 = r sin(theta) (Box-Muller), computed in double */
void constant_fill_f32(float *out, int64_t n, double value);
void constant_fill_f64(double *out, int64_t n, double value);
void uniform_fill_f32(float *out, int64_t n, uint64_t seed, double low, double high);
void uniform_fill_f64(double *out, int64_t n, uint64_t seed, double low, double high);
void normal_fill_f32(float *out, int64_t n, uint64_t seed, double mean, double std);
void normal_fill_f64(double *out, int64_t n, uint64_t seed, double mean, double std);
/* the normal fill's math on the path running (rng_isa), for tests: lg = log(v) (v in (0, 1]),
 * cs, sn = cos, sin of 2 pi t (t in [0, 1)) */
void rng_math_check(double *lg, double *cs, double *sn, const double *v, const double *t, int64_t n);
void rng_math_f32_check(float *lg, float *cs, float *sn, const double *v, const double *t, int64_t n);
/* orthogonal.c: thin Householder QR of each of batch matrices a (batch, m, n), m >= n: q (batch, m, n),
 * r (batch, n, n) upper triangular with diag(r) >= 0 (the sign fix); work is scratch of
 * householder_qr_work(m, n) doubles (for either dtype, reused by every matrix). Returns 0 on success. */
int64_t householder_qr_work(int64_t m, int64_t n);
int householder_qr_f32(float *q, float *r, double *work, const float *a, int64_t batch, int64_t m, int64_t n);
int householder_qr_f64(double *q, double *r, double *work, const double *a, int64_t batch, int64_t m,
                       int64_t n);

/* clip.c: grads is an array of count pointers, sizes their element counts */
const char *clip_isa(void);  /* the loops chosen at run time: "avx2" or "portable" (+ why) */
void grad_norm_f32(double *total, const float *const *grads, const int64_t *sizes, int64_t count, int inf_norm);
void grad_norm_f64(double *total, const double *const *grads, const int64_t *sizes, int64_t count, int inf_norm);
void scale_arrays_f32(float *const *grads, const int64_t *sizes, int64_t count, double factor);
void scale_arrays_f64(double *const *grads, const int64_t *sizes, int64_t count, double factor);
void clip_value_f32(float *x, int64_t n, double clip);
void clip_value_f64(double *x, int64_t n, double clip);

/* residual.c: y = x + scale * fx; L2: out = grad + wd * w; L1: out = grad + l1 * sign(w) */
void residual_add_f32(float *y, const float *x, const float *fx, int64_t n, double scale);
void residual_add_f64(double *y, const double *x, const double *fx, int64_t n, double scale);
void l2_grad_f32(float *out, const float *grad, const float *w, int64_t n, double weight_decay);
void l2_grad_f64(double *out, const double *grad, const double *w, int64_t n, double weight_decay);
void l1_grad_f32(float *out, const float *grad, const float *w, int64_t n, double l1);
void l1_grad_f64(double *out, const double *grad, const double *w, int64_t n, double l1);

/* machine.c: probes of the machine's limits behind `deepprop info` (not kernels: no reference, no
 * Numba twin, no _f32/_f64 pair for the bandwidth loops). isa: -1 = the widest this CPU runs,
 * 0 = portable C, 1 = AVX2+FMA, 2 = AVX-512F; chosen at run time, the module runs on any x86-64.
 * Each probe returns the floating-point operations (fma) or bytes (stream, counted STREAM's way:
 * each array read or written once, no write-allocate) it did, or -1 when the CPU lacks that isa.
 * sink receives a checksum so that no work can be optimised away. */
int machine_isa(void);
double machine_fma_f32(double *sink, int64_t iters, int isa);
double machine_fma_f64(double *sink, int64_t iters, int isa);
double machine_stream_copy(double *a, const double *b, int64_t n, int64_t reps, int isa);
double machine_stream_triad(double *a, const double *b, const double *c, int64_t n, int64_t reps, double s,
                            int isa);

/* depth.c: the depth harness's per-layer statistics (not a kernel: no reference, no Numba twin).
 * out[0] = sum(x - c), out[1] = sum((x - c)^2) in double, in a fixed order */
const char *depth_isa(void);  /* the loop chosen at run time: "avx2" or "portable" (+ why) */
void depth_moments_f32(double *out, const float *x, int64_t n, double c);
void depth_moments_f64(double *out, const double *x, int64_t n, double c);
/* one layer of the harness's C fast path (kernels/depth.py _FastC): fill (0 none, 1 uniform_fill, 2
 * normal_fill with seed, a, b) W, linear_forward without bias, then moments = (sum(y), sum((y - mean)^2));
 * backward: xin = act(zprev) when zprev is not NULL (the layer's input, else x), linear_backward, then
 * sumsq = (sum(dW^2), sum(dx^2)). The same calls as the separate kernels, in the same order. */
void depth_layer_forward_f32(double *moments, float *y, float *z, float *W, const float *x, int fill,
                             uint64_t seed, double a, double b, int64_t N, int64_t K, int64_t M, int act,
                             double alpha);
void depth_layer_forward_f64(double *moments, double *y, double *z, double *W, const double *x, int fill,
                             uint64_t seed, double a, double b, int64_t N, int64_t K, int64_t M, int act,
                             double alpha);
void depth_layer_backward_f32(double *sumsq, float *dx, float *dW, float *db, float *work, float *xin,
                              const float *dy, const float *x, const float *zprev, const float *W, const float *z,
                              int64_t N, int64_t K, int64_t M, int act, double alpha);
void depth_layer_backward_f64(double *sumsq, double *dx, double *dW, double *db, double *work, double *xin,
                              const double *dy, const double *x, const double *zprev, const double *W,
                              const double *z, int64_t N, int64_t K, int64_t M, int act, double alpha);

#endif
