// Fixed partitions of a flat range for the memory-bound tensor kernels.
//
// A range of n elements is cut into chunks of kChunk elements (the last one
// shorter). The cut depends only on n, never on the number of threads, so a
// reduction that combines per-chunk partials in chunk order gives the same bits
// on 1 thread as on 16.
#pragma once

#include <algorithm>
#include <cstdint>

namespace femtogpt::cpu {

// 32K elements: 128 KiB of float32 per operand, large enough that OpenMP's
// per-chunk overhead is noise, small enough to balance a few threads.
constexpr int64_t kChunk = int64_t(1) << 15;

inline int64_t num_chunks(int64_t n, int64_t chunk = kChunk) { return n <= 0 ? 0 : (n + chunk - 1) / chunk; }

// Runs body(begin, end) over the chunks of [0, n), in parallel when there is more than one.
template <typename F>
void for_chunks(int64_t n, F&& body, int64_t chunk = kChunk) {
    int64_t nc = num_chunks(n, chunk);
#pragma omp parallel for schedule(static) if (nc > 1)
    for (int64_t c = 0; c < nc; c++) {
        int64_t begin = c * chunk;
        body(begin, std::min(n, begin + chunk));
    }
}

}  // namespace femtogpt::cpu
