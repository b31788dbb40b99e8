/* team.c -- the module's one OpenMP team rule (see team.h).
 *
 * fork: libgomp's thread pool does not survive it -- a forked child that starts a team after its parent
 * ran one hangs for ever (Python's default "fork" start method on Linux does exactly that). The pool is
 * process-wide and shared: Numba's OpenMP threading layer links the same libgomp, so the parent's team
 * may be Numba's, which this module cannot see. So, like OpenBLAS and PyTorch, a pthread_atfork handler
 * (registered when the module loads) marks every forked child, and a forked child runs every kernel on
 * its one thread -- as kernels/_nbgemm.py does for Numba's. Every threaded kernel gives the same result
 * on any number of threads, so this changes speed only; spawn (what deepprop uses) is unaffected. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include "team.h"
#ifdef _OPENMP
#include <omp.h>
#endif

static atomic_int forked = 0;
static void on_fork_child(void) { atomic_store(&forked, 1); }
__attribute__((constructor)) static void register_atfork(void) { pthread_atfork(NULL, NULL, on_fork_child); }

static int max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

int dp_team_forked(void) { return atomic_load_explicit(&forked, memory_order_relaxed); }

int dp_team_size(double work, double min_work) {
    const int nt = max_threads();
    if (nt <= 1 || dp_team_forked() || work < min_work) return 1;
    return nt;
}

const char *dp_team_text(void) {
    /* in a per-thread buffer: the count may change between calls */
    static _Thread_local char text[128];
    const int in_fork = dp_team_forked(), nt = in_fork ? 1 : max_threads();
#ifdef _OPENMP
    const char *how = in_fork ? "OpenMP; a forked process: one thread" : "OpenMP";
#else
    const char *how = "built without OpenMP";
#endif
    snprintf(text, sizeof text, "%d thread%s (%s)", nt, nt == 1 ? "" : "s", how);
    return text;
}

long long dp_team_min_work(_Atomic long long *cache, const char *env, long long dflt) {
    long long w = atomic_load_explicit(cache, memory_order_relaxed);
    if (w < 0) {   /* racing first calls compute the same value */
        const char *text = getenv(env);
        char *end = NULL;
        w = text && text[0] ? strtoll(text, &end, 10) : dflt;
        if (end && (*end != '\0' || w < 0)) w = dflt;   /* not a number >= 0: ignored */
        atomic_store_explicit(cache, w, memory_order_relaxed);
    }
    return w;
}
