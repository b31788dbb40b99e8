/* team.c -- the module's one OpenMP team rule (see team.h).
 *
 * fork: libgomp's thread pool does not survive it -- a forked child that starts a team after its parent
 * ran one hangs for ever (Python's default "fork" start method on Linux does exactly that). So, like
 * OpenBLAS and PyTorch, a pthread_atfork handler notes the fork, and such a child runs every kernel on
 * its one thread. Every threaded kernel gives the same result on any number of threads, so this changes
 * speed only. The handler is registered before the first team starts. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include "team.h"
#ifdef _OPENMP
#include <omp.h>
#endif

static atomic_int team_started = 0, forked_after_team = 0;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static void on_fork_child(void) {
    if (atomic_load(&team_started)) atomic_store(&forked_after_team, 1);
}
static void register_atfork(void) { pthread_atfork(NULL, NULL, on_fork_child); }

static int max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

int dp_team_forked(void) { return atomic_load_explicit(&forked_after_team, memory_order_relaxed); }

int dp_team_size(double work, double min_work) {
    const int nt = max_threads();
    if (nt <= 1 || dp_team_forked() || work < min_work) return 1;
    pthread_once(&atfork_once, register_atfork);
    atomic_store(&team_started, 1);
    return nt;
}

const char *dp_team_text(void) {
    /* in a per-thread buffer: the count may change between calls */
    static _Thread_local char text[128];
    const int forked = dp_team_forked(), nt = forked ? 1 : max_threads();
#ifdef _OPENMP
    const char *how = forked ? "OpenMP; a fork of a process that ran a team: one thread" : "OpenMP";
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
