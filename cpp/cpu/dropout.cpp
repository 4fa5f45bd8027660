// Dropout: the mask is recomputed from (seed, index) by a counter-based hash.
#include "cpu/dropout.h"

#include <type_traits>

#include "cpu/isa.h"
#include "parallel.h"

namespace femtogpt::cpu {

namespace {
constexpr int64_t kParallelElems = 32768;
}

// out (n) <- x (n)
template <typename T>
void dropout_forward_reference(T* out, const T* x, int64_t n, double p, uint64_t seed) {
    const uint64_t thr = dropout_threshold(p);
    const double scale = 1.0 / (1.0 - p);
    for (int64_t i = 0; i < n; i++)
        out[i] = (dropout_hash(seed, uint64_t(i)) >> 11) >= thr ? T(double(x[i]) * scale) : T(0);
}

// out (n) <- x (n)
template <typename T>
void dropout_forward(T* out, const T* x, int64_t n, double p, uint64_t seed) {
    if constexpr (std::is_same_v<T, float>) {
        if (active_isa() != Isa::generic) return dropout_forward_avx2(out, x, n, p, seed);
    }
    const uint64_t thr = dropout_threshold(p);
    const T scale = T(1.0 / (1.0 - p));
#pragma omp parallel for simd schedule(static) if (n > kParallelElems)
    for (int64_t i = 0; i < n; i++) {
        const T v = x[i] * scale;  // computed unconditionally: a select, not a mispredicted branch
        out[i] = (dropout_hash(seed, uint64_t(i)) >> 11) >= thr ? v : T(0);
    }
}

template void dropout_forward<float>(float*, const float*, int64_t, double, uint64_t);
template void dropout_forward<double>(double*, const double*, int64_t, double, uint64_t);
template void dropout_forward_reference<float>(float*, const float*, int64_t, double, uint64_t);
template void dropout_forward_reference<double>(double*, const double*, int64_t, double, uint64_t);

}  // namespace femtogpt::cpu
