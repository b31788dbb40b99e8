/* team.h -- whether a kernel call runs on an OpenMP team, private to the C sources (not in deepprop.h).
 * gemm.c, clip.c (and any kernel that threads) ask dp_team_size() before opening a parallel region, so
 * the fork rule below is kept once for the whole module: libgomp's thread pool is process-wide. */
#ifndef DEEPPROP_TEAM_H
#define DEEPPROP_TEAM_H

/* The team size for a call of `work` units that threads from `min_work` units on: omp_get_max_threads()
 * (OMP_NUM_THREADS, or omp_set_num_threads / threadpoolctl in the calling thread), or 1 when the call is
 * too small, the module was built without OpenMP, or this process is a forked child. */
int dp_team_size(double work, double min_work);

/* the minimum work for a team from the environment variable env (a whole number >= 0; unset, empty or
 * anything else: dflt), read on the first call and kept in *cache (initialised to -1 by the caller) */
long long dp_team_min_work(_Atomic long long *cache, const char *env, long long dflt);

/* 1 in a forked child (its kernels then run on one thread: team.c says why) */
int dp_team_forked(void);

/* the threads a large call would use now, and how they are chosen, as text for the *_isa() strings */
const char *dp_team_text(void);

#endif
