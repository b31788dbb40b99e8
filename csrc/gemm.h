/* gemm.h -- the library's own GEMM (BLIS design), internal: used by linear.c, not part of the cffi cdef
 * (only deepprop.h is; of this file only gemm_isa() is declared there too, for kernels.backend_info()).
 *
 *   C = alpha op(A) op(B) + beta C (+ 1 bias^T)     row-major, C (m, n), op(A) (m, k), op(B) (k, n)
 *
 * op(X) is X (GEMM_NOTRANS) or X^T (GEMM_TRANS), taken by the packing routines straight from the
 * caller's matrix: with A stored row-major with leading dimension lda,
 *   op(A)(i, p) = A[i * lda + p]  (NOTRANS, A is m x k)      op(A)(i, p) = A[p * lda + i]  (TRANS, A is k x m)
 * and the same for B with ldb. beta == 0 means C is not read (NaN or garbage in C does not propagate);
 * alpha == 0 or k == 0 means A and B are not read (C = beta C). bias, when not NULL, holds n values
 * added to every row of C, in the micro-kernel's store of the first k block (a fused bias: no pass
 * over C of its own). Products accumulate in the dtype, in fused multiply-adds on the vector paths,
 * like BLAS; no -ffast-math.
 *
 * The epilogue, when not NULL, is called once for every block of C as soon as that block holds its
 * final value (after the last k block), while it is still in L1: rows i0 .. i0+m-1, columns
 * j0 .. j0+n-1 of C. The blocks tile C exactly once. linear.c adds the bias and applies the activation
 * there, so z and y are written while the micro-tile is in cache instead of in a second pass over C. */
#ifndef DP_GEMM_H
#define DP_GEMM_H
#include <stdint.h>

enum { GEMM_NOTRANS = 0, GEMM_TRANS = 1 };

typedef struct {
    void (*fn)(const void *ctx, int64_t i0, int64_t j0, int64_t m, int64_t n);
    const void *ctx;
} gemm_epilogue;

void gemm_f32(int transa, int transb, int64_t m, int64_t n, int64_t k, float alpha, const float *A, int64_t lda,
              const float *B, int64_t ldb, float beta, float *C, int64_t ldc, const float *bias,
              const gemm_epilogue *ep);
void gemm_f64(int transa, int transb, int64_t m, int64_t n, int64_t k, double alpha, const double *A,
              int64_t lda, const double *B, int64_t ldb, double beta, double *C, int64_t ldc,
              const double *bias, const gemm_epilogue *ep);

/* the micro-kernel path this process dispatched to: "portable", "avx2" or "avx512" first, then the
 * micro-tiles and whether DEEPPROP_GEMM_ISA forced it (chosen once, on the first call) */
const char *gemm_isa(void);

#endif
