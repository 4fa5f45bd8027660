// OpenMP helpers. Every pragma in the core is guarded so that a build without
// OpenMP still compiles and runs (single-threaded).
#pragma once

#ifdef _OPENMP
#include <omp.h>
#endif

namespace femtogpt {

// The most threads set_num_threads accepts: far past any core count a user means. (The OpenMP
// runtime ends the process when it cannot create its threads: 100000 did on a 2-core machine;
// under a limit on processes or address space even 1024 might.)
constexpr int kMaxThreads = 1024;

inline int num_threads() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

inline int thread_id() {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

// Threads in the current team (1 outside a parallel region).
inline int team_size() {
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

// True inside an active parallel region (a nested one would run on one thread).
inline bool in_parallel() {
#ifdef _OPENMP
    return omp_in_parallel();
#else
    return false;
#endif
}

inline void set_num_threads(int n) {
#ifdef _OPENMP
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}

inline bool openmp_enabled() {
#ifdef _OPENMP
    return true;
#else
    return false;
#endif
}

}  // namespace femtogpt
