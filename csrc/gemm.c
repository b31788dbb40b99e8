/* gemm.c -- C = alpha op(A) op(B) + beta C, row-major, float and double, in the BLIS design (see gemm.h).
 *
 * Loops, outermost first (Van Zee & van de Geijn, "BLIS", ACM TOMS 2015):
 *   jc over n in NC columns      B's KC x NC panel lives in L3 (here at most 2 MiB)
 *   pc over k in KC              pack op(B)[pc:pc+kc, jc:jc+nc] into NR-column micro-panels (Bp)
 *   ic over m in MC rows         pack op(A)[ic:ic+mc, pc:pc+kc] into MR-row micro-panels (Ap), L2
 *   jr over nc in NR             one KC x NR micro-panel of Bp stays in L1 across the ir loop
 *   ir over mc in MR             micro-kernel: an MR x NR tile of C in registers, kc rank-1 updates
 * Packing makes every micro-kernel read two contiguous, aligned streams whatever the transposes, and
 * pads the last micro-panel of each with zeros, so every tail (m, n, k of 1, 7, 33, 1025, ...) runs the
 * same micro-kernel: a partial tile is computed whole into a small buffer and only its mr x nr part is
 * merged into C (on the avx2 path, a partial panel of mr < MR rows runs a kernel of just mr rows).
 * The k blocks are balanced (k = 257 is two blocks of 129, not 256 + 1), and so are the m and n
 * blocks (rounded up to MR, NR); a k block shallower than KC allows up to MC x KC values of A per m
 * block. The bias of a fused bias (gemm.h) is added in the first k block's store, the epilogue runs on
 * each tile after the last.
 * Small products (the depth harness's 128 x 256 x 256): when all of op(A) is one m block, each B
 * micro-panel is used by that block only, so it is packed in the macro-kernel just before its column
 * of tiles, into a 16 KiB buffer that stays in L1, instead of the whole panel into Bp first (written
 * out to L2/L3 and read back); on the avx2 path such an A, not transposed, is not packed at all: the
 * kernels read its MR rows where they lie (6 sequential streams, in L2 as a packed block would be).
 * A block whose last A panel would hold 1 .. MR/2 rows ends in two panels of about half instead
 * (m = 128: ... 6 + 4 + 4, not ... 6 + 6 + 2), on paths with partial-panel kernels (see tail_split).
 * None of this changes a value: every element of C is one micro-kernel's k loop in the same order.
 *
 * Micro-kernels, one per ISA, chosen once at run time (gemm_isa(); DEEPPROP_GEMM_ISA overrides):
 *   avx2      AVX2 + FMA, 6 x 16 float / 6 x 8 double: 12 ymm accumulators, 2 loads of B and one
 *             broadcast of A per k (15 of the 16 ymm registers);
 *   avx512    AVX-512F, 14 x 32 float / 14 x 16 double: 28 zmm accumulators of the 32;
 *   portable  plain C, 4 x 8 float / 4 x 4 double (vectorised by the compiler for the baseline ISA,
 *             separate multiply and add: no FMA is assumed).
 * Each vector variant is compiled with __attribute__((target(...))), so the module builds without
 * -march (csrc/build.py's flags) and runs on any x86-64; __builtin_cpu_supports (which also checks
 * that the OS saves the wide registers) picks the widest this CPU runs. One template (UKERNEL_VEC_ANY)
 * generates all the vector kernels, so they differ only in vector type, width, tile and where A is
 * read from (a packed panel, or on the avx2 path also rows of A not packed).
 * "avx2-as-avx512" (DEEPPROP_GEMM_ISA only, for tests) runs the AVX-512 blocking -- 14 x 32 / 14 x 16
 * tiles, its MC, KC, NC -- with AVX2 kernels of that shape: on a CPU without AVX-512 it exercises
 * every line of the AVX-512 path except the intrinsics' width.
 *
 * Measured on this Zen 3 core (1 thread, AVX2 path; NumPy = OpenBLAS's Haswell kernels): 1024^3 float32
 * ~86-90 GFLOP/s (peak ~100), float64 ~43-44 (peak ~50), on a par with or ahead of NumPy; 256 x 1024
 * x 1024 ~83-85 and ~41-42. At 128 x 256 x 256 (linear_forward with relu, z kept: ~193-205 us, ~84
 * GFLOP/s; linear_backward ~384-405 us; ~5% less than with every operand packed whole first) what
 * remains outside the micro-kernel is mostly reading W from L3 into the B micro-panels and writing z
 * and y (~10% of the time).
 *
 * Threads (OpenMP, see "threads" below): a GEMM large enough runs on a team of OMP_NUM_THREADS threads.
 * With several blocks of A the threads claim them (gemm_: B packed for a group of k blocks, then each
 * thread packs and multiplies whole m blocks in its own A buffer, no barrier between them); with one,
 * all of them pack each B panel and the A block (their micro-panels shared out), then the tiles of the
 * block (jr-major, shared out in equal contiguous runs); barriers between. Each element of C is still
 * computed by one micro-kernel call sequence, in the same k order, so the results are bit for bit the
 * same for any thread count (tests/test_gemm.py). At 1024^3 float32 two threads run ~1.7-1.85x one.
 *
 * Memory: no malloc (house rule). The packed panels live in thread-local static buffers (at most
 * GEMM_APACK_BYTES + GEMM_BPACK_BYTES per thread that calls a GEMM, allocated by the loader on the
 * thread's first call), so concurrent callers on different threads -- cffi releases the GIL -- never
 * share a buffer; a caller's team works in the caller's buffers. */
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "gemm.h"
#include "team.h"

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define DP_X86 1
#include <immintrin.h>
#else
#define DP_X86 0
#endif

#define ALWAYS_INLINE static inline __attribute__((always_inline))

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
static inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

/* ---- blocking, per ISA and dtype ------------------------------------------------------------------
 * MR x NR: the register tile. KC: the depth of a rank-kc update; KC x NR x sizeof(T) (the B micro-panel
 * reused from L1 by every A micro-panel) is 16 KiB, half of a 32 KiB L1d. MC x KC x sizeof(T) (the
 * packed A block, re-read from L2 for every NR columns) is ~144 KiB, well inside a 512 KiB L2 with room
 * for the B micro-panels streaming through. KC x NC x sizeof(T) = 2 MiB (the packed B panel, in L3). */
typedef struct { int mr, nr, mc, kc, nc; } blocking;

#define MAX_MR 14
#define MAX_NR 32
#define GEMM_APACK_BYTES (192 * 1024)
#define GEMM_BPACK_BYTES (4 * 1024 * 1024)   /* all of B at 1024^2 float32: claimed m blocks */
#define GEMM_BMICRO_BYTES (16 * 1024)   /* one KC x NR micro-panel of B (macro_kernel's bl) */

enum { ISA_PORTABLE = 0, ISA_AVX2 = 1, ISA_AVX512 = 2, ISA_AVX2_AS_AVX512 = 3, N_ISA = 4 };

/*                    MR  NR   MC   KC    NC */
#define PORTABLE_F32       4,  8, 128, 256, 2048
#define PORTABLE_F64       4,  4,  64, 256, 1024
#define AVX2_F32           6, 16, 144, 256, 2048
#define AVX2_F64           6,  8,  72, 256, 1024
#define AVX512_F32        14, 32, 168, 128, 4096
#define AVX512_F64        14, 16, 168, 128, 2048
/* avx2-as-avx512 (tests) uses the AVX512 rows */

static const blocking BLK_f32[N_ISA] = {{PORTABLE_F32}, {AVX2_F32}, {AVX512_F32}, {AVX512_F32}};
static const blocking BLK_f64[N_ISA] = {{PORTABLE_F64}, {AVX2_F64}, {AVX512_F64}, {AVX512_F64}};

/* every blocking fits the tile buffer and the packing buffers, and MC, NC are multiples of MR, NR */
#define BLOCKING_FITS(T, MR, NR, MC, KC, NC) ((MR) <= MAX_MR && (NR) <= MAX_NR && (MC) % (MR) == 0 &&    \
    (NC) % (NR) == 0 && (size_t)(MC) * (KC) * sizeof(T) <= GEMM_APACK_BYTES &&                            \
    (size_t)(KC) * (NC) * sizeof(T) <= GEMM_BPACK_BYTES && (size_t)(KC) * (NR) * sizeof(T) <= GEMM_BMICRO_BYTES)
#define BLOCKING_FITS_(...) BLOCKING_FITS(__VA_ARGS__)
_Static_assert(BLOCKING_FITS_(float, PORTABLE_F32) && BLOCKING_FITS_(double, PORTABLE_F64), "portable blocking");
_Static_assert(BLOCKING_FITS_(float, AVX2_F32) && BLOCKING_FITS_(double, AVX2_F64), "avx2 blocking");
_Static_assert(BLOCKING_FITS_(float, AVX512_F32) && BLOCKING_FITS_(double, AVX512_F64), "avx512 blocking");

static _Alignas(64) _Thread_local unsigned char apack[GEMM_APACK_BYTES];
static _Alignas(64) _Thread_local unsigned char bpack[GEMM_BPACK_BYTES];

/* ---- run-time ISA choice ---------------------------------------------------------------------------- */

static const char *const ISA_TEXT[N_ISA][3] = {
    /* [isa][0]: chosen automatically; [1]: forced by DEEPPROP_GEMM_ISA; [2]: asked for more than the
     * CPU runs (or an unknown value), fell back to the widest it runs */
    {"portable (4x8 f32, 4x4 f64)", "portable (4x8 f32, 4x4 f64; forced by DEEPPROP_GEMM_ISA)",
     "portable (4x8 f32, 4x4 f64; DEEPPROP_GEMM_ISA not available here or unknown, ignored)"},
    {"avx2 (6x16 f32, 6x8 f64)", "avx2 (6x16 f32, 6x8 f64; forced by DEEPPROP_GEMM_ISA)",
     "avx2 (6x16 f32, 6x8 f64; DEEPPROP_GEMM_ISA not available here or unknown, ignored)"},
    {"avx512 (14x32 f32, 14x16 f64)", "avx512 (14x32 f32, 14x16 f64; forced by DEEPPROP_GEMM_ISA)",
     "avx512 (14x32 f32, 14x16 f64; DEEPPROP_GEMM_ISA not available here or unknown, ignored)"},
    {"avx2-as-avx512 (14x32 f32, 14x16 f64 with AVX2: a test path)",
     "avx2-as-avx512 (14x32 f32, 14x16 f64 with AVX2: a test path; forced by DEEPPROP_GEMM_ISA)",
     "avx2-as-avx512 (DEEPPROP_GEMM_ISA ignored)"},
};

/* -1 until the first call; then isa * 3 + how (the ISA_TEXT indices). Idempotent: racing first calls
 * compute the same value. */
static atomic_int isa_state = -1;

static int cpu_best_isa(void) {
#if DP_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return ISA_AVX2;
#endif
    return ISA_PORTABLE;
}

static int isa_decide(void) {
    int best = cpu_best_isa();
    const char *env = getenv("DEEPPROP_GEMM_ISA");
    if (env == NULL || env[0] == '\0' || strcmp(env, "auto") == 0) return best * 3 + 0;
    int want = -1;
    if (strcmp(env, "portable") == 0) want = ISA_PORTABLE;
    else if (strcmp(env, "avx2") == 0) want = ISA_AVX2;
    else if (strcmp(env, "avx512") == 0) want = ISA_AVX512;
    else if (strcmp(env, "avx2-as-avx512") == 0) want = ISA_AVX2_AS_AVX512;
    int need = want == ISA_AVX2_AS_AVX512 ? ISA_AVX2 : want;
    if (want < 0 || need > best) return best * 3 + 2;
    return want * 3 + 1;
}

static int isa_index(void) {
    int s = atomic_load_explicit(&isa_state, memory_order_relaxed);
    if (s < 0) {
        s = isa_decide();
        atomic_store_explicit(&isa_state, s, memory_order_relaxed);
    }
    return s / 3;
}

/* ---- threads -----------------------------------------------------------------------------------------
 * With OpenMP (csrc/build.py compiles with -fopenmp) a GEMM runs on a team of omp_get_max_threads()
 * threads -- OMP_NUM_THREADS, or omp_set_num_threads / threadpoolctl in the calling thread -- when it
 * has at least DEEPPROP_GEMM_THREAD_MIN_WORK multiply-adds (default GEMM_THREAD_MIN_WORK = 256^3, ~0.2 ms
 * of one core; tests set 0 to thread every shape). Why so high: a team waits at its barriers for its
 * slowest thread, and on a machine whose cores are busy with other processes a thread can be descheduled
 * for milliseconds. Measured at 128 x 256 x 256 (the depth harness's GEMMs, ~0.1 ms each): two threads
 * ran 1.5x one on a quiet machine but 6x slower than one while other processes kept the cores busy.
 * Without OpenMP, one thread. Each element of C is computed by one thread in the same order, so the team
 * size never changes a result. */
#define GEMM_THREAD_MIN_WORK (1 << 24)
#ifdef _OPENMP
#include <omp.h>
/* a parallel region of nt threads (the local variable nt), none when nt is 1 */
#define DP_OMP_PARALLEL_NT _Pragma("omp parallel num_threads(nt) if(nt > 1)")
#define DP_OMP_BARRIER() _Pragma("omp barrier")
static inline int dp_thread_num(void) { return omp_get_thread_num(); }
static inline int dp_num_threads(void) { return omp_get_num_threads(); }
#else
#define DP_OMP_PARALLEL_NT
#define DP_OMP_BARRIER() ((void)0)
static inline int dp_thread_num(void) { return 0; }
static inline int dp_num_threads(void) { return 1; }
#endif

static atomic_llong thread_min_work = -1;   /* -1 until the first call (idempotent, like isa_state) */

/* the team for an m x n x k product; fork safety and the thread count: csrc/team.c */
static int gemm_team_size(int64_t m, int64_t n, int64_t k) {
    const long long w = dp_team_min_work(&thread_min_work, "DEEPPROP_GEMM_THREAD_MIN_WORK", GEMM_THREAD_MIN_WORK);
    return dp_team_size((double)m * (double)n * (double)k, (double)w);
}

const char *gemm_isa(void) {
    /* the path, then the threads a large GEMM called from this thread would use now, e.g.
     * "avx2 (6x16 f32, 6x8 f64); 2 threads (OpenMP)" (in a per-thread buffer: the count may change) */
    static _Thread_local char text[256];
    isa_index();
    int s = atomic_load_explicit(&isa_state, memory_order_relaxed);
    snprintf(text, sizeof text, "%s; %s", ISA_TEXT[s / 3][s % 3], dp_team_text());
    return text;
}

/* ---- micro-kernels ----------------------------------------------------------------------------------
 * kernel(kc, a, b, c, ldc, alpha, beta, bias): c[0:MR, 0:NR] (row stride ldc) = alpha * a.b + bias + beta * c,
 * with a = MR-row micro-panel (kc columns of MR values), b = NR-column micro-panel (kc rows of NR values,
 * 64-byte aligned), bias = NULL (none) or NR values added to every row. beta == 0: c is only written. */

#define UKERNEL_PORTABLE(NAME, T, MR, NR)                                                               \
static void NAME(int64_t kc, const T *restrict a, const T *restrict b, T *restrict c, int64_t ldc,      \
                 T alpha, T beta, const T *restrict bias) {                                             \
    T acc[MR][NR];                                                                                      \
    for (int r = 0; r < MR; r++)                                                                        \
        for (int j = 0; j < NR; j++) acc[r][j] = (T)0;                                                  \
    for (int64_t p = 0; p < kc; p++, a += MR, b += NR)                                                  \
        for (int r = 0; r < MR; r++) {                                                                  \
            const T ar = a[r];                                                                          \
            for (int j = 0; j < NR; j++) acc[r][j] += ar * b[j];                                        \
        }                                                                                               \
    for (int r = 0; r < MR; r++)                                                                        \
        for (int j = 0; j < NR; j++) {                                                                  \
            T t = alpha == (T)1 ? acc[r][j] : alpha * acc[r][j];                                        \
            if (bias) t += bias[j];                                                                     \
            T *cj = c + r * ldc + j;                                                                    \
            *cj = beta == (T)0 ? t : (beta == (T)1 ? *cj + t : beta * *cj + t);                         \
        }                                                                                               \
}
UKERNEL_PORTABLE(uk_portable_f32, float, 4, 8)
UKERNEL_PORTABLE(uk_portable_f64, double, 4, 4)

#if DP_X86
/* NV vectors of L lanes per row (NR = NV * L), MR rows. The arrays are fully unrolled, so the compiler
 * keeps them in registers (checked: no spills in the avx2 and avx512 kernels' k loop). */
#define UKERNEL_VEC(NAME, TARGET, T, VT, L, MR, NV, LOAD, LOADU, STOREU, SET1, FMA, MUL, ADD, ZERO)     \
    UKERNEL_VEC_ROWS(NAME, TARGET, T, VT, L, MR, MR, NV, LOAD, LOADU, STOREU, SET1, FMA, MUL, ADD, ZERO)
/* ROWS <= MR of the rows of an MR-row micro-panel (the last, partial panel of a block): only those
 * rows are computed and stored (c has ROWS rows) */
#define UKERNEL_VEC_ROWS(NAME, TARGET, T, VT, L, MR_, MR, NV, LOAD, LOADU, STOREU, SET1, FMA, MUL, ADD, \
                         ZERO)                                                                          \
    UKERNEL_VEC_ANY(NAME, TARGET, T, VT, L, MR_, 1, (), MR, NV, LOAD, LOADU, STOREU, SET1, FMA, MUL, ADD,   \
                    ZERO)
/* the same kernels reading A where it lies, not packed: MR rows of A side by side, a[r * lda + p] (A
 * not transposed, row stride lda) -- the same values in the same order as from a packed panel */
#define UKERNEL_VEC_UNPACKED(NAME, TARGET, T, VT, L, MR, NV, LOAD, LOADU, STOREU, SET1, FMA, MUL, ADD,      \
                             ZERO)                                                                      \
    UKERNEL_VEC_ANY(NAME, TARGET, T, VT, L, 1, lda, (int64_t lda,), MR, NV, LOAD, LOADU, STOREU, SET1, FMA, \
                    MUL, ADD, ZERO)
#define DP_ID(...) __VA_ARGS__
/* a[r * ALD] is row r of A at step p (a advances by ASTEP a step); LDA_PARAM: the parameter list's
 * (int64_t lda,) or () */
#define UKERNEL_VEC_ANY(NAME, TARGET, T, VT, L, ASTEP, ALD, LDA_PARAM, MR, NV, LOAD, LOADU, STOREU, SET1, \
                        FMA, MUL, ADD, ZERO)                                                            \
__attribute__((target(TARGET))) static void NAME(int64_t kc, const T *restrict a, DP_ID LDA_PARAM       \
                                                 const T *restrict b, T *restrict c, int64_t ldc,        \
                                                 T alpha, T beta, const T *restrict bias) {             \
    VT acc[MR][NV];                                                                                     \
    _Pragma("GCC unroll 16") for (int r = 0; r < MR; r++) {                                            \
        __builtin_prefetch(c + r * ldc, 1, 3);                                                          \
        __builtin_prefetch(c + r * ldc + NV * L - 1, 1, 3);                                             \
        _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) acc[r][v] = ZERO();                       \
    }                                                                                                   \
    _Pragma("GCC unroll 4") for (int64_t p = 0; p < kc; p++) {                                         \
        VT bv[NV];                                                                                      \
        _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) bv[v] = LOAD(b + v * L);                  \
        _Pragma("GCC unroll 16") for (int r = 0; r < MR; r++) {                                        \
            const VT ar = SET1(a[r * (ALD)]);                                                           \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) acc[r][v] = FMA(ar, bv[v], acc[r][v]); \
        }                                                                                               \
        a += ASTEP;                                                                                     \
        b += NV * L;                                                                                    \
    }                                                                                                   \
    if (alpha != (T)1) {                                                                                \
        const VT va = SET1(alpha);                                                                      \
        _Pragma("GCC unroll 16") for (int r = 0; r < MR; r++)                                          \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) acc[r][v] = MUL(acc[r][v], va);       \
    }                                                                                                   \
    if (bias) {                                                                                         \
        VT bb[NV];                                                                                      \
        _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) bb[v] = LOADU(bias + v * L);              \
        _Pragma("GCC unroll 16") for (int r = 0; r < MR; r++)                                          \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) acc[r][v] = ADD(acc[r][v], bb[v]);    \
    }                                                                                                   \
    if (beta == (T)0) {                                                                                 \
        _Pragma("GCC unroll 16") for (int r = 0; r < MR; r++)                                          \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) STOREU(c + r * ldc + v * L, acc[r][v]); \
    } else if (beta == (T)1) {                                                                          \
        _Pragma("GCC unroll 16") for (int r = 0; r < MR; r++)                                          \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) {                                     \
                T *cv = c + r * ldc + v * L;                                                            \
                STOREU(cv, ADD(LOADU(cv), acc[r][v]));                                                  \
            }                                                                                           \
    } else {                                                                                            \
        const VT vb = SET1(beta);                                                                       \
        _Pragma("GCC unroll 16") for (int r = 0; r < MR; r++)                                          \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) {                                     \
                T *cv = c + r * ldc + v * L;                                                            \
                STOREU(cv, FMA(vb, LOADU(cv), acc[r][v]));                                              \
            }                                                                                           \
    }                                                                                                   \
}

#define AVX2_PS "avx2,fma", float, __m256, 8
#define AVX2_PS_OPS _mm256_load_ps, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_set1_ps, _mm256_fmadd_ps, \
                    _mm256_mul_ps, _mm256_add_ps, _mm256_setzero_ps
#define AVX2_PD "avx2,fma", double, __m256d, 4
#define AVX2_PD_OPS _mm256_load_pd, _mm256_loadu_pd, _mm256_storeu_pd, _mm256_set1_pd, _mm256_fmadd_pd, \
                    _mm256_mul_pd, _mm256_add_pd, _mm256_setzero_pd
#define AVX512_PS "avx512f", float, __m512, 16
#define AVX512_PS_OPS _mm512_load_ps, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_set1_ps, _mm512_fmadd_ps, \
                      _mm512_mul_ps, _mm512_add_ps, _mm512_setzero_ps
#define AVX512_PD "avx512f", double, __m512d, 8
#define AVX512_PD_OPS _mm512_load_pd, _mm512_loadu_pd, _mm512_storeu_pd, _mm512_set1_pd, _mm512_fmadd_pd, \
                      _mm512_mul_pd, _mm512_add_pd, _mm512_setzero_pd
#define UKERNEL_VEC_(...) UKERNEL_VEC(__VA_ARGS__)

UKERNEL_VEC_(uk_avx2_f32, AVX2_PS, 6, 2, AVX2_PS_OPS)
UKERNEL_VEC_(uk_avx2_f64, AVX2_PD, 6, 2, AVX2_PD_OPS)
UKERNEL_VEC_(uk_avx512_f32, AVX512_PS, 14, 2, AVX512_PS_OPS)
UKERNEL_VEC_(uk_avx512_f64, AVX512_PD, 14, 2, AVX512_PD_OPS)
UKERNEL_VEC_(uk_avx2w_f32, AVX2_PS, 14, 4, AVX2_PS_OPS)   /* avx2-as-avx512: 14 x 32 in ymm (tests) */
UKERNEL_VEC_(uk_avx2w_f64, AVX2_PD, 14, 4, AVX2_PD_OPS)   /* 14 x 16 */
/* the avx2 path's last partial panels: 1 .. 5 of the 6 rows (m = 133 is 22 panels and 1 row: computing
 * all 6 there would cost ~3% more; m = 128 ends in two panels of 4, see tail_split) */
#define UKERNEL_VEC_ROWS_(...) UKERNEL_VEC_ROWS(__VA_ARGS__)
UKERNEL_VEC_ROWS_(uk_avx2_f32_r1, AVX2_PS, 6, 1, 2, AVX2_PS_OPS)
UKERNEL_VEC_ROWS_(uk_avx2_f32_r2, AVX2_PS, 6, 2, 2, AVX2_PS_OPS)
UKERNEL_VEC_ROWS_(uk_avx2_f32_r3, AVX2_PS, 6, 3, 2, AVX2_PS_OPS)
UKERNEL_VEC_ROWS_(uk_avx2_f32_r4, AVX2_PS, 6, 4, 2, AVX2_PS_OPS)
UKERNEL_VEC_ROWS_(uk_avx2_f32_r5, AVX2_PS, 6, 5, 2, AVX2_PS_OPS)
UKERNEL_VEC_ROWS_(uk_avx2_f64_r1, AVX2_PD, 6, 1, 2, AVX2_PD_OPS)
UKERNEL_VEC_ROWS_(uk_avx2_f64_r2, AVX2_PD, 6, 2, 2, AVX2_PD_OPS)
UKERNEL_VEC_ROWS_(uk_avx2_f64_r3, AVX2_PD, 6, 3, 2, AVX2_PD_OPS)
UKERNEL_VEC_ROWS_(uk_avx2_f64_r4, AVX2_PD, 6, 4, 2, AVX2_PD_OPS)
UKERNEL_VEC_ROWS_(uk_avx2_f64_r5, AVX2_PD, 6, 5, 2, AVX2_PD_OPS)
/* the avx2 path's kernels on A not packed (one block of A not transposed, see the driver): 1 .. 6 rows */
#define UKERNEL_VEC_UNPACKED_(...) UKERNEL_VEC_UNPACKED(__VA_ARGS__)
UKERNEL_VEC_UNPACKED_(uku_avx2_f32_r1, AVX2_PS, 1, 2, AVX2_PS_OPS)
UKERNEL_VEC_UNPACKED_(uku_avx2_f32_r2, AVX2_PS, 2, 2, AVX2_PS_OPS)
UKERNEL_VEC_UNPACKED_(uku_avx2_f32_r3, AVX2_PS, 3, 2, AVX2_PS_OPS)
UKERNEL_VEC_UNPACKED_(uku_avx2_f32_r4, AVX2_PS, 4, 2, AVX2_PS_OPS)
UKERNEL_VEC_UNPACKED_(uku_avx2_f32_r5, AVX2_PS, 5, 2, AVX2_PS_OPS)
UKERNEL_VEC_UNPACKED_(uku_avx2_f32_r6, AVX2_PS, 6, 2, AVX2_PS_OPS)
UKERNEL_VEC_UNPACKED_(uku_avx2_f64_r1, AVX2_PD, 1, 2, AVX2_PD_OPS)
UKERNEL_VEC_UNPACKED_(uku_avx2_f64_r2, AVX2_PD, 2, 2, AVX2_PD_OPS)
UKERNEL_VEC_UNPACKED_(uku_avx2_f64_r3, AVX2_PD, 3, 2, AVX2_PD_OPS)
UKERNEL_VEC_UNPACKED_(uku_avx2_f64_r4, AVX2_PD, 4, 2, AVX2_PD_OPS)
UKERNEL_VEC_UNPACKED_(uku_avx2_f64_r5, AVX2_PD, 5, 2, AVX2_PD_OPS)
UKERNEL_VEC_UNPACKED_(uku_avx2_f64_r6, AVX2_PD, 6, 2, AVX2_PD_OPS)
#endif

typedef void (*ukernel_f32)(int64_t, const float *, const float *, float *, int64_t, float, float, const float *);
typedef void (*ukernel_f64)(int64_t, const double *, const double *, double *, int64_t, double, double,
                            const double *);

#if DP_X86
static const ukernel_f32 UK_f32[N_ISA] = {uk_portable_f32, uk_avx2_f32, uk_avx512_f32, uk_avx2w_f32};
static const ukernel_f64 UK_f64[N_ISA] = {uk_portable_f64, uk_avx2_f64, uk_avx512_f64, uk_avx2w_f64};
/* [isa][mr]: a kernel for the first mr rows of a partial panel, NULL where the full kernel runs */
static const ukernel_f32 UKROWS_f32[N_ISA][MAX_MR] = {
    [ISA_AVX2] = {NULL, uk_avx2_f32_r1, uk_avx2_f32_r2, uk_avx2_f32_r3, uk_avx2_f32_r4, uk_avx2_f32_r5}};
static const ukernel_f64 UKROWS_f64[N_ISA][MAX_MR] = {
    [ISA_AVX2] = {NULL, uk_avx2_f64_r1, uk_avx2_f64_r2, uk_avx2_f64_r3, uk_avx2_f64_r4, uk_avx2_f64_r5}};
#else
static const ukernel_f32 UK_f32[N_ISA] = {uk_portable_f32, uk_portable_f32, uk_portable_f32, uk_portable_f32};
static const ukernel_f64 UK_f64[N_ISA] = {uk_portable_f64, uk_portable_f64, uk_portable_f64, uk_portable_f64};
static const ukernel_f32 UKROWS_f32[N_ISA][MAX_MR];
static const ukernel_f64 UKROWS_f64[N_ISA][MAX_MR];
#endif
typedef void (*ukernel_u_f32)(int64_t, const float *, int64_t, const float *, float *, int64_t, float, float,
                              const float *);
typedef void (*ukernel_u_f64)(int64_t, const double *, int64_t, const double *, double *, int64_t, double, double,
                              const double *);
/* [isa][mr]: the kernel for mr rows of A not packed; all NULL where the path has none (A is packed) */
#if DP_X86
static const ukernel_u_f32 UKU_f32[N_ISA][MAX_MR + 1] = {
    [ISA_AVX2] = {NULL, uku_avx2_f32_r1, uku_avx2_f32_r2, uku_avx2_f32_r3, uku_avx2_f32_r4, uku_avx2_f32_r5,
                  uku_avx2_f32_r6}};
static const ukernel_u_f64 UKU_f64[N_ISA][MAX_MR + 1] = {
    [ISA_AVX2] = {NULL, uku_avx2_f64_r1, uku_avx2_f64_r2, uku_avx2_f64_r3, uku_avx2_f64_r4, uku_avx2_f64_r5,
                  uku_avx2_f64_r6}};
#else
static const ukernel_u_f32 UKU_f32[N_ISA][MAX_MR + 1];
static const ukernel_u_f64 UKU_f64[N_ISA][MAX_MR + 1];
#endif

/* ---- packing -----------------------------------------------------------------------------------------
 * pack_a: op(A)[0:mc, 0:kc] (A already offset to the block) into ceil(mc / MR) micro-panels of kc x MR:
 *   dst[q * MR * kc + p * MR + r] = op(A)(q * MR + r, p), zero for rows q * MR + r >= mc.
 * pack_b: op(B)[0:kc, 0:nc] into ceil(nc / NR) micro-panels of kc x NR:
 *   dst[q * NR * kc + p * NR + j] = op(B)(p, q * NR + j), zero for columns >= nc.
 * MR / NR are compile-time constants in each specialisation (the switch in pack_a / pack_b). */
#define DEFINE_PACK(T, SFX)                                                                             \
ALWAYS_INLINE void pack_a_body_##SFX(const int MR, T *restrict dst, const T *restrict A, int64_t lda,    \
                                     int trans, int64_t mc, int64_t kc) {                               \
    for (int64_t i = 0; i < mc; i += MR, dst += MR * kc) {                                              \
        const int64_t mr = min64(MR, mc - i);                                                           \
        if (!trans) {               /* op(A)(i + r, p) = A[(i + r) lda + p]: MR rows side by side */    \
            const T *src = A + i * lda;                                                                 \
            if (mr == MR) {                                                                             \
                for (int64_t p = 0; p < kc; p++)                                                        \
                    for (int r = 0; r < MR; r++) dst[p * MR + r] = src[r * lda + p];                    \
            } else {                                                                                    \
                for (int64_t p = 0; p < kc; p++)                                                        \
                    for (int r = 0; r < MR; r++) dst[p * MR + r] = r < mr ? src[r * lda + p] : (T)0;    \
            }                                                                                           \
        } else {                    /* op(A)(i + r, p) = A[p lda + i + r]: MR contiguous values */      \
            const T *src = A + i;                                                                       \
            if (mr == MR) {                                                                             \
                for (int64_t p = 0; p < kc; p++)                                                        \
                    for (int r = 0; r < MR; r++) dst[p * MR + r] = src[p * lda + r];                    \
            } else {                                                                                    \
                for (int64_t p = 0; p < kc; p++)                                                        \
                    for (int r = 0; r < MR; r++) dst[p * MR + r] = r < mr ? src[p * lda + r] : (T)0;    \
            }                                                                                           \
        }                                                                                               \
    }                                                                                                   \
}                                                                                                       \
ALWAYS_INLINE void pack_b_body_##SFX(const int NR, T *restrict dst, const T *restrict B, int64_t ldb,    \
                                     int trans, int64_t kc, int64_t nc) {                               \
    if (!trans) {   /* op(B)(p, j) = B[p ldb + j]: row p of B read once, left to right, NR values to    \
                     * each micro-panel (reading along the rows keeps the hardware prefetcher busy) */  \
        const int64_t nfull = nc / NR * NR, nr = nc - nfull;                                            \
        for (int64_t p = 0; p < kc; p++) {                                                              \
            const T *src = B + p * ldb;                                                                 \
            T *d = dst + p * NR;                                                                        \
            for (int64_t j = 0; j < nfull; j += NR, d += NR * kc)                                       \
                for (int c = 0; c < NR; c++) d[c] = src[j + c];                                         \
            if (nr)                                                                                     \
                for (int c = 0; c < NR; c++) d[c] = c < nr ? src[nfull + c] : (T)0;                     \
        }                                                                                               \
        return;                                                                                         \
    }                                                                                                   \
    for (int64_t j = 0; j < nc; j += NR, dst += NR * kc) {                                              \
        const int64_t nr = min64(NR, nc - j);                                                           \
        {                           /* op(B)(p, j + c) = B[(j + c) ldb + p]: NR rows side by side */    \
            const T *src = B + j * ldb;                                                                 \
            if (nr == NR) {                                                                             \
                for (int64_t p = 0; p < kc; p++)                                                        \
                    for (int c = 0; c < NR; c++) dst[p * NR + c] = src[c * ldb + p];                    \
            } else {                                                                                    \
                for (int64_t p = 0; p < kc; p++)                                                        \
                    for (int c = 0; c < NR; c++) dst[p * NR + c] = c < nr ? src[c * ldb + p] : (T)0;    \
            }                                                                                           \
        }                                                                                               \
    }                                                                                                   \
}                                                                                                       \
static void pack_a_##SFX(int MR, T *dst, const T *A, int64_t lda, int trans, int64_t mc, int64_t kc) {   \
    switch (MR) {                                                                                       \
    case 4: pack_a_body_##SFX(4, dst, A, lda, trans, mc, kc); break;                                    \
    case 6: pack_a_body_##SFX(6, dst, A, lda, trans, mc, kc); break;                                    \
    case 14: pack_a_body_##SFX(14, dst, A, lda, trans, mc, kc); break;                                  \
    default: pack_a_body_##SFX(MR, dst, A, lda, trans, mc, kc); break;                                  \
    }                                                                                                   \
}                                                                                                       \
static void pack_b_##SFX(int NR, T *dst, const T *B, int64_t ldb, int trans, int64_t kc, int64_t nc) {   \
    switch (NR) {                                                                                       \
    case 4: pack_b_body_##SFX(4, dst, B, ldb, trans, kc, nc); break;                                    \
    case 8: pack_b_body_##SFX(8, dst, B, ldb, trans, kc, nc); break;                                    \
    case 16: pack_b_body_##SFX(16, dst, B, ldb, trans, kc, nc); break;                                  \
    case 32: pack_b_body_##SFX(32, dst, B, ldb, trans, kc, nc); break;                                  \
    default: pack_b_body_##SFX(NR, dst, B, ldb, trans, kc, nc); break;                                  \
    }                                                                                                   \
}
DEFINE_PACK(float, f32)
DEFINE_PACK(double, f64)

/* The two transposing packs -- A not transposed (MR rows side by side) and B transposed (NR rows side
 * by side) -- read one value per row per step in plain C (~2 values a cycle). On the avx2 path their
 * full micro-panels are packed with in-register transposes instead: 8 x 8 blocks of float, 4 x 4 of
 * double, read along the rows and written along the packed panel (2-4x faster; the same values). */
#if DP_X86
#define TRANSPOSE8_PS(r0, r1, r2, r3, r4, r5, r6, r7)                                                   \
    do {                                                                                                \
        __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);                        \
        __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);                        \
        __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);                        \
        __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);                        \
        __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);              \
        __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);              \
        __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);              \
        __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);              \
        r0 = _mm256_permute2f128_ps(u0, u4, 0x20); r1 = _mm256_permute2f128_ps(u1, u5, 0x20);           \
        r2 = _mm256_permute2f128_ps(u2, u6, 0x20); r3 = _mm256_permute2f128_ps(u3, u7, 0x20);           \
        r4 = _mm256_permute2f128_ps(u0, u4, 0x31); r5 = _mm256_permute2f128_ps(u1, u5, 0x31);           \
        r6 = _mm256_permute2f128_ps(u2, u6, 0x31); r7 = _mm256_permute2f128_ps(u3, u7, 0x31);           \
    } while (0)
#define TRANSPOSE4_PD(r0, r1, r2, r3)                                                                   \
    do {                                                                                                \
        __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1);                       \
        __m256d t2 = _mm256_unpacklo_pd(r2, r3), t3 = _mm256_unpackhi_pd(r2, r3);                       \
        r0 = _mm256_permute2f128_pd(t0, t2, 0x20); r1 = _mm256_permute2f128_pd(t1, t3, 0x20);           \
        r2 = _mm256_permute2f128_pd(t0, t2, 0x31); r3 = _mm256_permute2f128_pd(t1, t3, 0x31);           \
    } while (0)

/* one micro-panel of 6 rows of A (row stride lda): dst[p * 6 + r] = A[r * lda + p] */
__attribute__((target("avx2"))) static void pack_a6_avx2_f32(float *restrict dst, const float *restrict A,
                                                             int64_t lda, int64_t kc) {
    int64_t p = 0;
    for (; p + 8 <= kc; p += 8) {
        const float *s = A + p;
        __m256 r0 = _mm256_loadu_ps(s), r1 = _mm256_loadu_ps(s + lda), r2 = _mm256_loadu_ps(s + 2 * lda);
        __m256 r3 = _mm256_loadu_ps(s + 3 * lda), r4 = _mm256_loadu_ps(s + 4 * lda);
        __m256 r5 = _mm256_loadu_ps(s + 5 * lda), r6 = _mm256_setzero_ps(), r7 = _mm256_setzero_ps();
        TRANSPOSE8_PS(r0, r1, r2, r3, r4, r5, r6, r7);
        float *d = dst + p * 6;   /* each 8-wide store spills 2 lanes into the next step, rewritten by it */
        _mm256_storeu_ps(d, r0); _mm256_storeu_ps(d + 6, r1); _mm256_storeu_ps(d + 12, r2);
        _mm256_storeu_ps(d + 18, r3); _mm256_storeu_ps(d + 24, r4); _mm256_storeu_ps(d + 30, r5);
        _mm256_storeu_ps(d + 36, r6);
        _mm_storeu_ps(d + 42, _mm256_castps256_ps128(r7));                     /* the last: exactly 6 */
        _mm_storel_pi((__m64 *)(d + 46), _mm256_extractf128_ps(r7, 1));
    }
    for (; p < kc; p++)
        for (int r = 0; r < 6; r++) dst[p * 6 + r] = A[r * lda + p];
}
/* one micro-panel of 6 rows of A, double: rows 0-3 by 4 x 4 transposes, rows 4-5 in pairs */
__attribute__((target("avx2"))) static void pack_a6_avx2_f64(double *restrict dst, const double *restrict A,
                                                             int64_t lda, int64_t kc) {
    int64_t p = 0;
    for (; p + 4 <= kc; p += 4) {
        const double *s = A + p;
        __m256d r0 = _mm256_loadu_pd(s), r1 = _mm256_loadu_pd(s + lda), r2 = _mm256_loadu_pd(s + 2 * lda);
        __m256d r3 = _mm256_loadu_pd(s + 3 * lda), r4 = _mm256_loadu_pd(s + 4 * lda);
        __m256d r5 = _mm256_loadu_pd(s + 5 * lda);
        TRANSPOSE4_PD(r0, r1, r2, r3);
        __m256d lo = _mm256_unpacklo_pd(r4, r5), hi = _mm256_unpackhi_pd(r4, r5);  /* (4,5) at p, p+2 | p+1, p+3 */
        double *d = dst + p * 6;
        _mm256_storeu_pd(d, r0); _mm_storeu_pd(d + 4, _mm256_castpd256_pd128(lo));
        _mm256_storeu_pd(d + 6, r1); _mm_storeu_pd(d + 10, _mm256_castpd256_pd128(hi));
        _mm256_storeu_pd(d + 12, r2); _mm_storeu_pd(d + 16, _mm256_extractf128_pd(lo, 1));
        _mm256_storeu_pd(d + 18, r3); _mm_storeu_pd(d + 22, _mm256_extractf128_pd(hi, 1));
    }
    for (; p < kc; p++)
        for (int r = 0; r < 6; r++) dst[p * 6 + r] = A[r * lda + p];
}
/* one micro-panel of B transposed: dst[p * 16 + c] = B[c * ldb + p], 16 rows of B side by side */
__attribute__((target("avx2"))) static void pack_bt16_avx2_f32(float *restrict dst, const float *restrict B,
                                                               int64_t ldb, int64_t kc) {
    int64_t p = 0;
    for (; p + 8 <= kc; p += 8)
        for (int h = 0; h < 16; h += 8) {
            const float *s = B + h * ldb + p;
            __m256 r0 = _mm256_loadu_ps(s), r1 = _mm256_loadu_ps(s + ldb), r2 = _mm256_loadu_ps(s + 2 * ldb);
            __m256 r3 = _mm256_loadu_ps(s + 3 * ldb), r4 = _mm256_loadu_ps(s + 4 * ldb);
            __m256 r5 = _mm256_loadu_ps(s + 5 * ldb), r6 = _mm256_loadu_ps(s + 6 * ldb);
            __m256 r7 = _mm256_loadu_ps(s + 7 * ldb);
            TRANSPOSE8_PS(r0, r1, r2, r3, r4, r5, r6, r7);
            float *d = dst + p * 16 + h;
            _mm256_store_ps(d, r0); _mm256_store_ps(d + 16, r1); _mm256_store_ps(d + 32, r2);
            _mm256_store_ps(d + 48, r3); _mm256_store_ps(d + 64, r4); _mm256_store_ps(d + 80, r5);
            _mm256_store_ps(d + 96, r6); _mm256_store_ps(d + 112, r7);
        }
    for (; p < kc; p++)
        for (int c = 0; c < 16; c++) dst[p * 16 + c] = B[c * ldb + p];
}
__attribute__((target("avx2"))) static void pack_bt8_avx2_f64(double *restrict dst, const double *restrict B,
                                                              int64_t ldb, int64_t kc) {
    int64_t p = 0;
    for (; p + 4 <= kc; p += 4)
        for (int h = 0; h < 8; h += 4) {
            const double *s = B + h * ldb + p;
            __m256d r0 = _mm256_loadu_pd(s), r1 = _mm256_loadu_pd(s + ldb), r2 = _mm256_loadu_pd(s + 2 * ldb);
            __m256d r3 = _mm256_loadu_pd(s + 3 * ldb);
            TRANSPOSE4_PD(r0, r1, r2, r3);
            double *d = dst + p * 8 + h;
            _mm256_store_pd(d, r0); _mm256_store_pd(d + 8, r1); _mm256_store_pd(d + 16, r2);
            _mm256_store_pd(d + 24, r3);
        }
    for (; p < kc; p++)
        for (int c = 0; c < 8; c++) dst[p * 8 + c] = B[c * ldb + p];
}
/* The two copying packs -- A transposed (MR contiguous values of a row of A per step) and B not
 * transposed (NR contiguous values of a row of B to each micro-panel) -- in 256-bit loads and stores
 * (the plain C loops compile to 128-bit or scalar moves: csrc/build.py has no -march). */
/* one micro-panel of A^T: dst[p * 6 + r] = A[p * lda + r]. An 8-wide store writes 2 lanes of the next
 * step, rewritten by it; the 8-wide load of step p < kc - 1 reads 2 values past the 6, still inside
 * the matrix (row p + 1 follows: lda >= 6); the last step moves exactly 6 */
__attribute__((target("avx2"))) static void pack_at6_avx2_f32(float *restrict dst, const float *restrict A,
                                                              int64_t lda, int64_t kc) {
    int64_t p = 0;
    for (; p + 1 < kc; p++) _mm256_storeu_ps(dst + p * 6, _mm256_loadu_ps(A + p * lda));
    _mm_storeu_ps(dst + p * 6, _mm_loadu_ps(A + p * lda));
    _mm_storel_pi((__m64 *)(dst + p * 6 + 4), _mm_loadl_pi(_mm_setzero_ps(), (const __m64 *)(A + p * lda + 4)));
}
__attribute__((target("avx2"))) static void pack_at6_avx2_f64(double *restrict dst, const double *restrict A,
                                                              int64_t lda, int64_t kc) {
    for (int64_t p = 0; p < kc; p++) {
        _mm256_storeu_pd(dst + p * 6, _mm256_loadu_pd(A + p * lda));
        _mm_storeu_pd(dst + p * 6 + 4, _mm_loadu_pd(A + p * lda + 4));
    }
}
/* nq full micro-panels of B: dst[q * 16 * kc + p * 16 + c] = B[p * ldb + q * 16 + c], row p of B read
 * once, left to right, like pack_b (64-byte aligned stores: dst and 16 * kc floats are) */
__attribute__((target("avx2"))) static void pack_b16_avx2_f32(float *restrict dst, const float *restrict B,
                                                              int64_t ldb, int64_t kc, int64_t nq) {
    for (int64_t p = 0; p < kc; p++) {
        const float *s = B + p * ldb;
        float *d = dst + p * 16;
        for (int64_t q = 0; q < nq; q++, s += 16, d += 16 * kc) {
            _mm256_store_ps(d, _mm256_loadu_ps(s));
            _mm256_store_ps(d + 8, _mm256_loadu_ps(s + 8));
        }
    }
}
__attribute__((target("avx2"))) static void pack_b8_avx2_f64(double *restrict dst, const double *restrict B,
                                                             int64_t ldb, int64_t kc, int64_t nq) {
    for (int64_t p = 0; p < kc; p++) {
        const double *s = B + p * ldb;
        double *d = dst + p * 8;
        for (int64_t q = 0; q < nq; q++, s += 8, d += 8 * kc) {
            _mm256_store_pd(d, _mm256_loadu_pd(s));
            _mm256_store_pd(d + 4, _mm256_loadu_pd(s + 4));
        }
    }
}
#define PACK_AT6_AVX2_f32 pack_at6_avx2_f32
#define PACK_AT6_AVX2_f64 pack_at6_avx2_f64
#define PACK_B_AVX2_f32 pack_b16_avx2_f32
#define PACK_B_AVX2_f64 pack_b8_avx2_f64
#define PACK_A6_AVX2_f32 pack_a6_avx2_f32
#define PACK_A6_AVX2_f64 pack_a6_avx2_f64
#define PACK_BT_AVX2_f32 pack_bt16_avx2_f32
#define PACK_BT_AVX2_f64 pack_bt8_avx2_f64
#define PACK_BT_NR_f32 16
#define PACK_BT_NR_f64 8
#endif

/* pack_a / pack_b on the blocking's path: the avx2 transposes for their full micro-panels there */
#define DEFINE_PACK_DISPATCH(T, SFX)                                                                    \
static void pack_a_isa_##SFX(int isa, int MR, T *dst, const T *A, int64_t lda, int trans, int64_t mc,    \
                             int64_t kc) {                                                              \
    if (DP_X86 && isa == ISA_AVX2 && MR == 6 && !trans) {                                               \
        const int64_t mfull = mc / 6 * 6;                                                               \
        for (int64_t i = 0; i < mfull; i += 6) PACK_A6(SFX)(dst + i * kc, A + i * lda, lda, kc);       \
        if (mc > mfull) pack_a_##SFX(MR, dst + mfull * kc, A + mfull * lda, lda, trans, mc - mfull, kc); \
        return;                                                                                         \
    }                                                                                                   \
    if (DP_X86 && isa == ISA_AVX2 && MR == 6 && trans) {                                                \
        const int64_t mfull = mc / 6 * 6;                                                               \
        for (int64_t i = 0; i < mfull; i += 6) PACK_AT6(SFX)(dst + i * kc, A + i, lda, kc);             \
        if (mc > mfull) pack_a_##SFX(MR, dst + mfull * kc, A + mfull, lda, trans, mc - mfull, kc);      \
        return;                                                                                         \
    }                                                                                                   \
    pack_a_##SFX(MR, dst, A, lda, trans, mc, kc);                                                       \
}                                                                                                       \
static void pack_b_isa_##SFX(int isa, int NR, T *dst, const T *B, int64_t ldb, int trans, int64_t kc,    \
                             int64_t nc) {                                                              \
    if (DP_X86 && isa == ISA_AVX2 && NR == PACK_BT_NR(SFX) && trans) {                                  \
        const int64_t nfull = nc / NR * NR;                                                             \
        for (int64_t j = 0; j < nfull; j += NR) PACK_BT(SFX)(dst + j * kc, B + j * ldb, ldb, kc);      \
        if (nc > nfull) pack_b_##SFX(NR, dst + nfull * kc, B + nfull * ldb, ldb, trans, kc, nc - nfull); \
        return;                                                                                         \
    }                                                                                                   \
    if (DP_X86 && isa == ISA_AVX2 && NR == PACK_BT_NR(SFX) && !trans) {                                 \
        const int64_t nfull = nc / NR * NR;                                                             \
        PACK_B(SFX)(dst, B, ldb, kc, nfull / NR);                                                       \
        if (nc > nfull) pack_b_##SFX(NR, dst + nfull * kc, B + nfull, ldb, trans, kc, nc - nfull);      \
        return;                                                                                         \
    }                                                                                                   \
    pack_b_##SFX(NR, dst, B, ldb, trans, kc, nc);                                                       \
}
#if DP_X86
#define PACK_A6(SFX) PACK_A6_AVX2_##SFX
#define PACK_BT(SFX) PACK_BT_AVX2_##SFX
#define PACK_AT6(SFX) PACK_AT6_AVX2_##SFX
#define PACK_B(SFX) PACK_B_AVX2_##SFX
#define PACK_BT_NR(SFX) PACK_BT_NR_##SFX
#else   /* never called (DP_X86 is 0 in the condition), only named */
static void pack_none_f32(float *d, const float *s, int64_t ld, int64_t kc) { (void)d, (void)s, (void)ld, (void)kc; }
static void pack_none_f64(double *d, const double *s, int64_t ld, int64_t kc) { (void)d, (void)s, (void)ld, (void)kc; }
static void pack_none_q_f32(float *d, const float *s, int64_t ld, int64_t kc, int64_t nq) { (void)d, (void)s, (void)ld, (void)kc, (void)nq; }
static void pack_none_q_f64(double *d, const double *s, int64_t ld, int64_t kc, int64_t nq) { (void)d, (void)s, (void)ld, (void)kc, (void)nq; }
#define PACK_A6(SFX) pack_none_##SFX
#define PACK_BT(SFX) pack_none_##SFX
#define PACK_AT6(SFX) pack_none_##SFX
#define PACK_B(SFX) pack_none_q_##SFX
#define PACK_BT_NR(SFX) 0
#endif
DEFINE_PACK_DISPATCH(float, f32)
DEFINE_PACK_DISPATCH(double, f64)

/* ---- macro-kernel and driver ------------------------------------------------------------------------ */

/* [*lo, *hi): part th of nth of 0 .. count, the parts as equal as integers allow (static, in order) */
static inline void share(int64_t count, int th, int nth, int64_t *lo, int64_t *hi) {
    *lo = count * th / nth;
    *hi = count * (th + 1) / nth;
}

#define DEFINE_GEMM(T, SFX)                                                                             \
/* A block of mc rows whose last micro-panel would hold only 1 .. MR/2 rows (m = 128 with MR = 6: 21    \
 * panels and 2 rows) ends instead in two panels of about (MR + mc % MR) / 2 rows each (4 and 4), on    \
 * a path with kernels for partial panels: a 2-row kernel has only 4 accumulator chains, too few to     \
 * hide the FMA latency, and takes about as long per k as a 4-row one; two 4-row tiles (8 chains        \
 * each) cost ~8 cycles per k where a 6-row and a 2-row tile cost ~10. Returns the rows of the first    \
 * of the two panels, 0 for no split. */                                                                \
static inline int64_t tail_split_##SFX(int64_t mc, int MR, const ukernel_##SFX *rows_kernel) {          \
    const int64_t rem = mc % MR, h1 = (MR + rem + 1) / 2;                                               \
    if (mc < MR || rem == 0 || rem > MR / 2) return 0;                                                  \
    return rows_kernel[h1] && rows_kernel[MR + rem - h1] ? h1 : 0;                                      \
}                                                                                                       \
/* pack the micro-panels q0 .. q1-1 of op(A)'s block of mc rows at (ic, pc) into Ap (kc deep); h1 > 0:  \
 * the block's last two panels hold h1 and mc % MR + MR - h1 rows (tail_split) */                       \
static void pack_a_block_##SFX(int isa, int MR, T *Ap, const T *A, int64_t lda, int transa, int64_t ic, \
                               int64_t pc, int64_t mc, int64_t kc, int64_t h1, int64_t q0, int64_t q1) {\
    const int64_t qs = ceil_div(mc, MR) - (h1 ? 2 : 0);   /* the panels before the split */             \
    if (min64(q1, qs) > q0) {                                                                           \
        const int64_t i = ic + q0 * MR;                                                                 \
        pack_a_isa_##SFX(isa, MR, Ap + q0 * MR * kc, transa ? A + pc * lda + i : A + i * lda + pc, lda, transa,\
                         min64(mc, min64(q1, qs) * MR) - q0 * MR, kc);                                  \
    }                                                                                                   \
    for (int64_t q = q0 > qs ? q0 : qs; q < q1; q++) {   /* the split ones */                           \
        const int64_t i = ic + qs * MR + (q == qs ? 0 : h1);                                            \
        pack_a_isa_##SFX(isa, MR, Ap + q * MR * kc, transa ? A + pc * lda + i : A + i * lda + pc, lda, transa,\
                         q == qs ? h1 : mc - qs * MR - h1, kc);                                         \
    }                                                                                                   \
}                                                                                                       \
static void macro_kernel_##SFX(const blocking *bk, ukernel_##SFX kernel, const ukernel_##SFX *rows_kernel, \
                               int isa, int64_t mc, int64_t h1, int64_t nc,                             \
                               int64_t kc, const T *Ap, const T *Bp, T *C, int64_t ldc, T alpha, T beta,  \
                               const T *bias, const gemm_epilogue *ep, int64_t i0, int64_t j0,          \
                               int64_t t0, int64_t t1, const T *Bs, int64_t ldb, int transb,            \
                               const T *As, int64_t lda_a, const ukernel_u_##SFX *uku) {                \
    /* C (mc, nc) block at (i0, j0) = alpha Ap (mc x kc) . Bp (kc x nc) + bias (nc,) + beta C;          \
     * bias != NULL on the first k block only, ep != NULL on the last. Only the tiles t0 .. t1-1 of     \
     * the block, numbered jr-major (t = jr / NR * n_ir + ir / MR: one B micro-panel stays in L1 across \
     * the consecutive ir), are computed: a thread's share. Bs != NULL (one block of A, see the driver):\
     * Bp is not packed; op(B) (kc x nc, transb, ldb) starts at Bs and each NR-column micro-panel is    \
     * packed here, when the first tile of its column is reached, into bl (stays in L1 for the ir loop).\
     * As != NULL: Ap is not packed either; op(A) = A (not transposed, row stride lda_a) starts at As   \
     * and the kernels uku[rows] read it there. */                                                      \
    const int MR = bk->mr, NR = bk->nr;                                                                 \
    const int64_t n_ir = ceil_div(mc, MR);                                                              \
    _Alignas(64) T ct[MAX_MR * MAX_NR];   /* a partial tile, computed whole */                          \
    T bt[MAX_NR];                         /* the bias of a partial tile, zero-padded to NR */           \
    int64_t jr_bt = -1;                   /* the column panel bt holds */                               \
    _Alignas(64) unsigned char blb[GEMM_BMICRO_BYTES];   /* Bs's micro-panel jr_bl */                   \
    T *const bl = (T *)blb;                                                                             \
    int64_t jr_bl = -1;                                                                                 \
    int64_t q = t0 % n_ir, jr = t0 / n_ir * NR;   /* tile t's panel of Ap and column; counted on,       \
                                                 * not divided out of t at every tile */                \
    for (int64_t t = t0; t < t1; t++, q = q + 1 < n_ir ? q + 1 : 0, jr += q ? 0 : NR) {                 \
        /* rows ir .. ir+mr-1; h1 > 0: the last two panels hold h1 and mc % MR + MR - h1 rows */        \
        const int64_t ir = h1 && q == n_ir - 1 ? (q - 1) * MR + h1 : q * MR;                            \
        const int64_t nr = min64(NR, nc - jr);                                                          \
        const T *b = Bp + jr * kc;                                                                      \
        if (Bs) {                                                                                       \
            if (jr_bl != jr)                                                                            \
                pack_b_isa_##SFX(isa, NR, bl, transb ? Bs + jr * ldb : Bs + jr, ldb, transb, kc, nr);   \
            jr_bl = jr;                                                                                 \
            b = bl;                                                                                     \
        }                                                                                               \
        const T *bj = bias ? bias + jr : NULL;                                                          \
        if (bias && nr < NR) {                                                                          \
            if (jr_bt != jr)                                                                            \
                for (int64_t j = 0; j < NR; j++) bt[j] = j < nr ? bias[jr + j] : (T)0;                  \
            jr_bt = jr;                                                                                 \
            bj = bt;                                                                                    \
        }                                                                                               \
        {                                                                                               \
            const int64_t mr = h1 && q == n_ir - 2 ? h1 : min64(MR, mc - ir);                           \
            const T *a = Ap + q * MR * kc;                                                              \
            T *c = C + ir * ldc + jr;                                                                   \
            const ukernel_##SFX uk = mr < MR && rows_kernel[mr] ? rows_kernel[mr] : kernel;            \
            /* straight into C, or (a partial tile) whole into ct, then merged */                       \
            const int direct = nr == NR && (As || mr == MR || uk != kernel);                            \
            if (As)                                                                                     \
                uku[mr](kc, As + ir * lda_a, lda_a, b, direct ? c : ct, direct ? ldc : NR, alpha,       \
                        direct ? beta : (T)0, bj);                                                      \
            else                                                                                        \
                uk(kc, a, b, direct ? c : ct, direct ? ldc : NR, alpha, direct ? beta : (T)0, bj);      \
            if (!direct) {                                                                              \
                for (int64_t r = 0; r < mr; r++)                                                        \
                    for (int64_t j = 0; j < nr; j++) {                                                  \
                        T *cj = c + r * ldc + j;                                                        \
                        const T t_ = ct[r * NR + j];                                                    \
                        *cj = beta == (T)0 ? t_ : (beta == (T)1 ? *cj + t_ : beta * *cj + t_);          \
                    }                                                                                   \
            }                                                                                           \
            if (ep) ep->fn(ep->ctx, i0 + ir, j0 + jr, mr, nr);                                          \
        }                                                                                               \
    }                                                                                                   \
}                                                                                                       \
void gemm_##SFX(int transa, int transb, int64_t m, int64_t n, int64_t k, T alpha, const T *A,           \
                int64_t lda, const T *B, int64_t ldb, T beta, T *C, int64_t ldc, const T *bias,         \
                const gemm_epilogue *ep) {                                                              \
    /* C (m, n) row stride ldc; op(A) (m, k); op(B) (k, n) -- see gemm.h */                             \
    if (m <= 0 || n <= 0) return;                                                                       \
    if (k <= 0 || alpha == (T)0) {      /* C = beta C + bias; A and B are not read */                   \
        for (int64_t i = 0; i < m; i++)                                                                 \
            for (int64_t j = 0; j < n; j++) {                                                           \
                T *cij = C + i * ldc + j;                                                               \
                *cij = (beta == (T)0 ? (T)0 : beta * *cij) + (bias ? bias[j] : (T)0);                   \
            }                                                                                           \
        if (ep)                                                                                         \
            for (int64_t i = 0; i < m; i += 16) ep->fn(ep->ctx, i, 0, min64(16, m - i), n);             \
        return;                                                                                         \
    }                                                                                                   \
    const int isa = isa_index();                                                                        \
    const blocking *bk = &BLK_##SFX[isa];                                                               \
    const ukernel_##SFX kernel = UK_##SFX[isa];                                                         \
    const int MR = bk->mr, NR = bk->nr;                                                                 \
    /* the calling thread's packing buffers, shared by its team */                                     \
    T *const Ap = (T *)apack, *const Bp = (T *)bpack;                                                   \
    /* balanced blocks: the fewest of at most KC (MC, NC), equal up to the rounding to MR (NR) */       \
    const int64_t kb = ceil_div(k, ceil_div(k, bk->kc));                                                \
    /* a k block shallower than KC leaves room in L2 for more rows of A: up to MC x KC values (dW = x^T dz\
     * at N = 128, k = 128: all 256 rows in one block, so B is packed once and in the macro-kernel) */  \
    const int64_t mcap = bk->mc * bk->kc / kb / bk->mr * bk->mr;                                        \
    const int64_t mb = round_up(ceil_div(m, ceil_div(m, mcap > bk->mc ? mcap : bk->mc)), bk->mr);       \
    const int64_t nb = round_up(ceil_div(n, ceil_div(n, bk->nc)), bk->nr);                              \
    /* one block of A (m <= mb): each micro-panel of B is used by that block only, so it is packed      \
     * in the macro-kernel, just before its tiles, into a buffer that stays in L1, instead of the       \
     * whole panel into Bp first (written out to L2 / L3 and read back: ~8% of the time at 128 x 256    \
     * x 256). The same values reach the same micro-kernel calls. */                                    \
    const int one_a = m <= mb;                                                                          \
    /* and on the avx2 path, one block of A not transposed is not packed at all: the kernels read its   \
     * rows where they lie (UKU; 6 sequential streams, in L2 like a packed block would be). */          \
    const int a_direct = one_a && !transa && UKU_##SFX[isa][MR] != NULL;                                \
    const int nt = gemm_team_size(m, n, k);                                                             \
    /* Claimed m blocks (a team, more than one block of A): the B panels of a group of k blocks (as     \
     * many as Bp holds: all of k at 1024^2 float32) are packed by all threads, in chunks of micro-panels\
     * they claim (an atomic counter); barrier; then each thread claims m blocks one at a time and, in  \
     * its own A buffer (its thread's apack), packs and multiplies a claimed block for every k block of \
     * the group in turn; barrier before the next group's packing. A block's rows of C belong to one    \
     * thread across the group, so no barrier is needed between k blocks nor between m blocks, and      \
     * claiming balances the load: a team waits at a barrier for its slowest thread, and on a shared    \
     * machine one core is often slower than the other for a while (a busy neighbour), or its thread    \
     * is descheduled. The static shares further down have two barriers per (k, m) block (64 at 1024^3  \
     * float32 on the avx2 path): with another process busy on one of the two cores, 2 threads took     \
     * ~240 ms there (median; 1 thread ~32 ms), claimed ~35 ms. nmb blocks of whole micro-panels, at    \
     * least 8 per thread (and 4 micro-panels per block) for the claiming to balance, a multiple of the \
     * team size so that equal cores finish together: with 4 per thread the last block can leave one    \
     * core idle for up to an eighth of the run when the other is slowed (2 threads, 1024^3 float32,    \
     * another process busy: min ~14.4 ms against ~12.3 with 8 per thread; on a quieter machine 4, 8    \
     * and the static shares measured alike, ~12.6-13.7 ms min, ~16-18 ms median). Each element of C is \
     * still one micro-kernel call sequence in the same k order: the results are those                  \
     * of one thread. */                                                                                \
    const int64_t panels_m = ceil_div(m, MR);                                                           \
    const int claim = nt > 1 && !one_a && panels_m >= 2 * (int64_t)nt;                                  \
    int64_t nmb = ceil_div(m, mb);                                                                      \
    if (claim) {                                                                                        \
        const int64_t want = min64(8 * (int64_t)nt, panels_m / 4);                                      \
        nmb = min64(round_up(nmb > want ? nmb : want, nt), panels_m);                                   \
    }                                                                                                   \
    const int64_t nkb = ceil_div(k, kb);                                                                \
    const int64_t group_max = (int64_t)(GEMM_BPACK_BYTES / ((size_t)kb * (size_t)nb * sizeof(T)));      \
    const int64_t group = group_max < 1 ? 1 : min64(group_max, nkb);                                    \
    /* the claim counters, never reset: each group's claims are numbered on from the last group's */    \
    atomic_llong next_b = 0, next_m = 0;                                                                \
    /* Else one team for the whole product. Each B panel's micro-panels are packed by all threads, then \
     * each A block's likewise; barrier (B and A packed); the block's tiles are shared out (macro_kernel's\
     * t0 .. t1); barrier, unless nothing is packed after (before the next packing overwrites Ap or Bp; \
     * the region's end waits for all). A small product (one block) costs one barrier and the join. Every\
     * element of C is computed by one thread, by the same micro-kernel call sequence in the same k     \
     * order whatever the team size: the results are bit for bit those of one thread. */                \
    DP_OMP_PARALLEL_NT                                                                                  \
    {                                                                                                   \
        const int th = dp_thread_num(), nth = dp_num_threads();                                         \
        int64_t bbase = 0, mbase = 0;   /* the first claim number of this group's B chunks, m blocks */ \
        for (int64_t jc = 0; claim && jc < n; jc += nb) {                                               \
            const int64_t nc = min64(nb, n - jc), npan = ceil_div(nc, NR), nch = min64(npan, 4 * (int64_t)nth);\
            for (int64_t g0 = 0; g0 < nkb; g0 += group) {                                               \
                const int64_t g1 = min64(g0 + group, nkb);                                              \
                /* B: nch chunks of micro-panels, each packed for every k block of the group */         \
                for (int64_t ch; (ch = atomic_fetch_add_explicit(&next_b, 1, memory_order_relaxed) - bbase) < nch;) {\
                    const int64_t q0 = npan * ch / nch, q1 = npan * (ch + 1) / nch;                     \
                    for (int64_t g = g0; g < g1; g++) {                                                 \
                        const int64_t pc = g * kb, kc = min64(kb, k - pc), j = jc + q0 * NR;            \
                        pack_b_isa_##SFX(isa, NR, Bp + (g - g0) * kb * nb + q0 * NR * kc,               \
                                         transb ? B + j * ldb + pc : B + pc * ldb + j, ldb, transb, kc, \
                                         min64(nc, q1 * NR) - q0 * NR);                                 \
                    }                                                                                   \
                }                                                                                       \
                DP_OMP_BARRIER();   /* B packed */                                                      \
                T *const Am = (T *)apack;   /* this thread's own A buffer */                            \
                for (int64_t ib; (ib = atomic_fetch_add_explicit(&next_m, 1, memory_order_relaxed) - mbase) < nmb;) {\
                    const int64_t ic = panels_m * ib / nmb * MR, mc = min64(panels_m * (ib + 1) / nmb * MR, m) - ic;\
                    const int64_t h1 = tail_split_##SFX(mc, MR, UKROWS_##SFX[isa]), nq = ceil_div(mc, MR);\
                    for (int64_t g = g0; g < g1; g++) {                                                 \
                        const int64_t pc = g * kb, kc = min64(kb, k - pc);                              \
                        pack_a_block_##SFX(isa, MR, Am, A, lda, transa, ic, pc, mc, kc, h1, 0, nq);     \
                        macro_kernel_##SFX(bk, kernel, UKROWS_##SFX[isa], isa, mc, h1, nc, kc, Am,      \
                                           Bp + (g - g0) * kb * nb, C + ic * ldc + jc, ldc, alpha,      \
                                           pc == 0 ? beta : (T)1, pc == 0 && bias ? bias + jc : NULL,   \
                                           pc + kc >= k ? ep : NULL, ic, jc, 0, nq * npan, NULL, ldb, transb,\
                                           NULL, lda, UKU_##SFX[isa]);                                  \
                    }                                                                                   \
                }                                                                                       \
                /* every thread stopped at its first claim past the end: nth claims past each range */  \
                bbase += nch + nth;                                                                     \
                mbase += nmb + nth;                                                                     \
                if (g1 < nkb || jc + nc < n) { DP_OMP_BARRIER(); }  /* before the next packing of Bp */ \
            }                                                                                           \
        }                                                                                               \
        for (int64_t jc = 0; !claim && jc < n; jc += nb) {                                              \
            const int64_t nc = min64(nb, n - jc);                                                       \
            for (int64_t pc = 0; pc < k; pc += kb) {                                                    \
                const int64_t kc = min64(kb, k - pc);                                                   \
                const T beta_pc = pc == 0 ? beta : (T)1;     /* later k blocks accumulate into C */    \
                const gemm_epilogue *ep_pc = pc + kc >= k ? ep : NULL;                                  \
                int64_t q0, q1;                                                                         \
                share(ceil_div(nc, NR), th, nth, &q0, &q1);  /* my micro-panels of op(B) */             \
                if (q1 > q0 && !one_a) {                                                                \
                    const int64_t j = jc + q0 * NR;                                                     \
                    pack_b_isa_##SFX(isa, NR, Bp + q0 * NR * kc, transb ? B + j * ldb + pc : B + pc * ldb + j, \
                                     ldb, transb, kc, min64(nc, q1 * NR) - q0 * NR);                    \
                }                                                                                       \
                for (int64_t ic = 0; ic < m; ic += mb) {                                                \
                    const int64_t mc = min64(mb, m - ic);                                               \
                    const int64_t h1 = tail_split_##SFX(mc, MR, UKROWS_##SFX[isa]);                     \
                    share(ceil_div(mc, MR), th, nth, &q0, &q1);  /* my micro-panels of op(A) */         \
                    if (!a_direct) pack_a_block_##SFX(isa, MR, Ap, A, lda, transa, ic, pc, mc, kc, h1, q0, q1);\
                    DP_OMP_BARRIER();                                                                   \
                    int64_t t0, t1;                                                                     \
                    share(ceil_div(mc, MR) * ceil_div(nc, NR), th, nth, &t0, &t1);  /* my tiles */      \
                    macro_kernel_##SFX(bk, kernel, UKROWS_##SFX[isa], isa, mc, h1, nc, kc, Ap, Bp, C + ic * ldc + jc, \
                                       ldc, alpha, beta_pc, pc == 0 && bias ? bias + jc : NULL, ep_pc, ic, jc, \
                                       t0, t1, one_a ? (transb ? B + jc * ldb + pc : B + pc * ldb + jc) : NULL, \
                                       ldb, transb, a_direct ? A + ic * lda + pc : NULL, lda, UKU_##SFX[isa]);\
                    if (ic + mc < m || pc + kc < k || jc + nc < n) { DP_OMP_BARRIER(); }  /* packing follows */ \
                }                                                                                       \
            }                                                                                           \
        }                                                                                               \
    }                                                                                                   \
}

DEFINE_GEMM(float, f32)
DEFINE_GEMM(double, f64)
