/* isa_path.h -- the run-time choice between a family's portable path and its AVX2 path, private to the
 * C sources (not in deepprop.h): batchnorm.c, clip.c and dropout.c (for the random kernels) define one
 * each with DP_DEFINE_ISA_PATH. gemm.c has its own (more paths, micro-tile sizes).
 *
 * The path is decided once per process, on the first call: AVX2 where the CPU runs it
 * (__builtin_cpu_supports, which also checks the OS saves the ymm registers; FMA too when the family
 * asks), else portable. The environment variable ENV overrides it: "portable" forces the portable path,
 * "avx2" the AVX2 path where the CPU has it, "auto" or empty the automatic choice; anything else, or a
 * path this CPU cannot run, is ignored and says so in the text <family>_isa() returns. Racing first
 * calls compute the same answer, so a relaxed atomic is enough. */
#ifndef DEEPPROP_ISA_PATH_H
#define DEEPPROP_ISA_PATH_H
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

enum { DP_PATH_PORTABLE = 0, DP_PATH_AVX2 = 1 };

static inline int dp_cpu_runs_avx2(int need_fma) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && (!need_fma || __builtin_cpu_supports("fma"));
#else
    (void)need_fma;
    return 0;
#endif
}

/* path * 3 + how: how 0 = chosen automatically, 1 = forced by env, 2 = env ignored */
static inline int dp_isa_decide(const char *env_name, int need_fma) {
    int best = dp_cpu_runs_avx2(need_fma) ? DP_PATH_AVX2 : DP_PATH_PORTABLE;
    const char *env = getenv(env_name);
    if (env == NULL || env[0] == '\0' || strcmp(env, "auto") == 0) return best * 3;
    int want = strcmp(env, "portable") == 0 ? DP_PATH_PORTABLE : strcmp(env, "avx2") == 0 ? DP_PATH_AVX2 : -1;
    if (want < 0 || want > best) return best * 3 + 2;
    return want * 3 + 1;
}

/* defines static int FAMILY##_path(void) (DP_PATH_*) and the exported const char *FAMILY##_isa(void) */
#define DP_DEFINE_ISA_PATH(FAMILY, ENV, NEED_FMA)                                                          \
    static const char *const FAMILY##_path_text[2][3] = {                                                  \
        {"portable", "portable (forced by " ENV ")", "portable (" ENV " not available here or unknown, ignored)"}, \
        {"avx2", "avx2 (forced by " ENV ")", "avx2 (" ENV " not available here or unknown, ignored)"},     \
    };                                                                                                     \
    static atomic_int FAMILY##_path_state = -1;                                                            \
    static int FAMILY##_path_decided(void) {                                                               \
        int s = atomic_load_explicit(&FAMILY##_path_state, memory_order_relaxed);                          \
        if (s < 0) {                                                                                       \
            s = dp_isa_decide(ENV, NEED_FMA);                                                              \
            atomic_store_explicit(&FAMILY##_path_state, s, memory_order_relaxed);                          \
        }                                                                                                  \
        return s;                                                                                          \
    }                                                                                                      \
    static inline int FAMILY##_path(void) { return FAMILY##_path_decided() / 3; }                          \
    const char *FAMILY##_isa(void) {                                                                       \
        int s = FAMILY##_path_decided();                                                                   \
        return FAMILY##_path_text[s / 3][s % 3];                                                           \
    }

#endif
