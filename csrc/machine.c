/* machine.c -- the probes behind `deepprop info` (kernels/machine.py): the FMA peak and STREAM-style
 * bandwidth of this machine, against which `deepprop bench` puts every speed figure.
 *
 * ISA variants are compiled side by side with __attribute__((target(...))) and one is chosen at RUN time
 * with __builtin_cpu_supports (which also checks that the OS saves the wide registers), so the module
 * keeps building without -march and still runs on a CPU without AVX2 or AVX-512.
 *
 * The FMA probe runs CHAINS independent accumulator chains, acc = acc * m + a, each a dependent chain
 * of fused multiply-adds: with CHAINS >= (FMA pipes) x (FMA latency) every pipe issues one FMA per
 * cycle, which is the peak (Zen 3: 2 x 4 = 8; Skylake-X: 2 x 4 = 8; Haswell: 2 x 5 = 10). acc
 * converges to a / (1 - m), so no value overflows or turns subnormal. 2 flops per lane per FMA.
 *
 * Threads: none here. kernels/machine.py runs the all-core figures by calling these functions from
 * one Python thread per core: cffi releases the GIL for the duration of every call, so the calls run
 * truly in parallel and the C stays free of pthreads and of any change to the shared build flags. */
#include <stdint.h>
#include "deepprop.h"

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define DP_X86 1
#include <immintrin.h>
#else
#define DP_X86 0
#endif

/* keep the compiler from merging or dropping repetitions of a loop whose result is overwritten */
#if defined(__GNUC__)
#define CLOBBER() __asm__ volatile("" ::: "memory")
#else
#define CLOBBER() ((void)0)
#endif

int machine_isa(void) {
#if DP_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
#endif
    return 0;
}

static int resolve(int isa) {
    int best = machine_isa();
    if (isa < 0) return best;
    return isa <= best ? isa : -1;
}

/* ---- FMA peak ------------------------------------------------------------------------------------- */

#define PORTABLE_CHAINS 16
#define DEFINE_FMA_PORTABLE(T, SFX)                                                             \
static double fma_portable_##SFX(double *sink, int64_t iters) {                                 \
    /* scalar C; without FMA in the baseline ISA this is a multiply and an add per step */     \
    T acc[PORTABLE_CHAINS];                                                                     \
    const T m = (T)0.999, a = (T)0.001;                                                         \
    for (int j = 0; j < PORTABLE_CHAINS; j++) acc[j] = (T)j * (T)0.01;                         \
    for (int64_t it = 0; it < iters; it++)                                                      \
        for (int j = 0; j < PORTABLE_CHAINS; j++) acc[j] = acc[j] * m + a;                      \
    double s = 0;                                                                               \
    for (int j = 0; j < PORTABLE_CHAINS; j++) s += (double)acc[j];                             \
    *sink = s;                                                                                  \
    return 2.0 * PORTABLE_CHAINS * (double)iters;                                               \
}
DEFINE_FMA_PORTABLE(float, f32)
DEFINE_FMA_PORTABLE(double, f64)

#if DP_X86
/* 12 chains of 256-bit FMAs: 12 accumulators + 2 constants fit the 16 ymm registers */
#define FMA12(OP, acc, m, a)                                                                    \
    acc##0 = OP(acc##0, m, a); acc##1 = OP(acc##1, m, a); acc##2 = OP(acc##2, m, a);            \
    acc##3 = OP(acc##3, m, a); acc##4 = OP(acc##4, m, a); acc##5 = OP(acc##5, m, a);            \
    acc##6 = OP(acc##6, m, a); acc##7 = OP(acc##7, m, a); acc##8 = OP(acc##8, m, a);            \
    acc##9 = OP(acc##9, m, a); acc##10 = OP(acc##10, m, a); acc##11 = OP(acc##11, m, a)
#define ADD12(ADD, acc)                                                                         \
    ADD(ADD(ADD(ADD(acc##0, acc##1), ADD(acc##2, acc##3)), ADD(ADD(acc##4, acc##5), ADD(acc##6, acc##7))), \
        ADD(ADD(acc##8, acc##9), ADD(acc##10, acc##11)))

#define DEFINE_FMA_VEC(NAME, TARGET, VT, SET1, FMA, ADD, STORE, T, LANES, CHAINS)              \
__attribute__((target(TARGET))) static double NAME(double *sink, int64_t iters) {              \
    const VT m = SET1((T)0.999), a = SET1((T)0.001);                                            \
    VT c0 = SET1((T)0.00), c1 = SET1((T)0.01), c2 = SET1((T)0.02), c3 = SET1((T)0.03);          \
    VT c4 = SET1((T)0.04), c5 = SET1((T)0.05), c6 = SET1((T)0.06), c7 = SET1((T)0.07);          \
    VT c8 = SET1((T)0.08), c9 = SET1((T)0.09), c10 = SET1((T)0.10), c11 = SET1((T)0.11);        \
    for (int64_t it = 0; it < iters; it++) { FMA12(FMA, c, m, a); }                             \
    T lanes[LANES];                                                                             \
    STORE(lanes, ADD12(ADD, c));                                                                \
    double s = 0;                                                                               \
    for (int j = 0; j < LANES; j++) s += (double)lanes[j];                                      \
    *sink = s;                                                                                  \
    return 2.0 * (CHAINS) * (LANES) * (double)iters;                                            \
}
DEFINE_FMA_VEC(fma_avx2_f32, "avx2,fma", __m256, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps,
               _mm256_storeu_ps, float, 8, 12)
DEFINE_FMA_VEC(fma_avx2_f64, "avx2,fma", __m256d, _mm256_set1_pd, _mm256_fmadd_pd, _mm256_add_pd,
               _mm256_storeu_pd, double, 4, 12)

/* 16 chains of 512-bit FMAs (32 zmm registers): twice the 8 that 2 pipes x latency 4 need */
#define DEFINE_FMA_512(NAME, VT, SET1, FMA, ADD, STORE, T, LANES)                               \
__attribute__((target("avx512f"))) static double NAME(double *sink, int64_t iters) {            \
    const VT m = SET1((T)0.999), a = SET1((T)0.001);                                            \
    VT c0 = SET1((T)0.00), c1 = SET1((T)0.01), c2 = SET1((T)0.02), c3 = SET1((T)0.03);          \
    VT c4 = SET1((T)0.04), c5 = SET1((T)0.05), c6 = SET1((T)0.06), c7 = SET1((T)0.07);          \
    VT c8 = SET1((T)0.08), c9 = SET1((T)0.09), c10 = SET1((T)0.10), c11 = SET1((T)0.11);        \
    VT d0 = SET1((T)0.12), d1 = SET1((T)0.13), d2 = SET1((T)0.14), d3 = SET1((T)0.15);          \
    for (int64_t it = 0; it < iters; it++) {                                                    \
        FMA12(FMA, c, m, a);                                                                    \
        d0 = FMA(d0, m, a); d1 = FMA(d1, m, a); d2 = FMA(d2, m, a); d3 = FMA(d3, m, a);         \
    }                                                                                           \
    T lanes[LANES];                                                                             \
    STORE(lanes, ADD(ADD12(ADD, c), ADD(ADD(d0, d1), ADD(d2, d3))));                            \
    double s = 0;                                                                               \
    for (int j = 0; j < LANES; j++) s += (double)lanes[j];                                      \
    *sink = s;                                                                                  \
    return 2.0 * 16 * (LANES) * (double)iters;                                                  \
}
DEFINE_FMA_512(fma_avx512_f32, __m512, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps, _mm512_storeu_ps,
               float, 16)
DEFINE_FMA_512(fma_avx512_f64, __m512d, _mm512_set1_pd, _mm512_fmadd_pd, _mm512_add_pd, _mm512_storeu_pd,
               double, 8)
#endif

double machine_fma_f32(double *sink, int64_t iters, int isa) {
    switch (resolve(isa)) {
#if DP_X86
    case 2: return fma_avx512_f32(sink, iters);
    case 1: return fma_avx2_f32(sink, iters);
#endif
    case 0: return fma_portable_f32(sink, iters);
    default: return -1;
    }
}

double machine_fma_f64(double *sink, int64_t iters, int isa) {
    switch (resolve(isa)) {
#if DP_X86
    case 2: return fma_avx512_f64(sink, iters);
    case 1: return fma_avx2_f64(sink, iters);
#endif
    case 0: return fma_portable_f64(sink, iters);
    default: return -1;
    }
}

/* ---- STREAM copy and triad ------------------------------------------------------------------------
 * The same plain loops, compiled once per ISA so the vectoriser uses the widest loads and stores the
 * CPU has (in-cache bandwidth depends on it; DRAM bandwidth hardly does). reps repetitions over the
 * same arrays, so a cache-resident working set is timed over many passes in one call. */

#define DEFINE_STREAM(SUFFIX, ATTR)                                                              \
ATTR static void copy_##SUFFIX(double *restrict a, const double *restrict b, int64_t n, int64_t reps) { \
    for (int64_t r = 0; r < reps; r++) {                                                        \
        for (int64_t i = 0; i < n; i++) a[i] = b[i];                                            \
        CLOBBER();                                                                              \
    }                                                                                           \
}                                                                                               \
ATTR static void triad_##SUFFIX(double *restrict a, const double *restrict b, const double *restrict c, \
                                int64_t n, int64_t reps, double s) {                            \
    for (int64_t r = 0; r < reps; r++) {                                                        \
        for (int64_t i = 0; i < n; i++) a[i] = b[i] + s * c[i];                                 \
        CLOBBER();                                                                              \
    }                                                                                           \
}

DEFINE_STREAM(portable, )
#if DP_X86
DEFINE_STREAM(avx2, __attribute__((target("avx2"))))
DEFINE_STREAM(avx512, __attribute__((target("avx512f,prefer-vector-width=512"))))
#endif

double machine_stream_copy(double *a, const double *b, int64_t n, int64_t reps, int isa) {
    switch (resolve(isa)) {
#if DP_X86
    case 2: copy_avx512(a, b, n, reps); break;
    case 1: copy_avx2(a, b, n, reps); break;
#endif
    case 0: copy_portable(a, b, n, reps); break;
    default: return -1;
    }
    return 2.0 * sizeof(double) * (double)n * (double)reps;
}

double machine_stream_triad(double *a, const double *b, const double *c, int64_t n, int64_t reps, double s,
                            int isa) {
    switch (resolve(isa)) {
#if DP_X86
    case 2: triad_avx512(a, b, c, n, reps, s); break;
    case 1: triad_avx2(a, b, c, n, reps, s); break;
#endif
    case 0: triad_portable(a, b, c, n, reps, s); break;
    default: return -1;
    }
    return 3.0 * sizeof(double) * (double)n * (double)reps;
}
