// Embedding: lookup and scatter-add gradient (OpenMP over rows / channel blocks).
#include "cpu/embedding.h"

#include <algorithm>
#include <cstring>

#include "parallel.h"

namespace femtogpt::cpu {

namespace {
constexpr int64_t kParallelElems = 32768;
constexpr int64_t kChannelBlock = 16;  // one 64-byte line of float32: threads never share a line of dweight rows
}

// out (n,C) <- idx (n), weight (V,C)
template <typename T, typename I>
void embedding_forward(T* out, const I* idx, const T* weight, int64_t n, int64_t C) {
#pragma omp parallel for schedule(static) if (n * C > kParallelElems)
    for (int64_t i = 0; i < n; i++) std::memcpy(out + i * C, weight + int64_t(idx[i]) * C, size_t(C) * sizeof(T));
}

// dweight (V,C) <- dout (n,C), idx (n)
template <typename T, typename I>
void embedding_backward_reference(T* dweight, const T* dout, const I* idx, int64_t n, int64_t V, int64_t C) {
    std::fill(dweight, dweight + V * C, T(0));
    for (int64_t i = 0; i < n; i++) {
        T* row = dweight + int64_t(idx[i]) * C;
        for (int64_t c = 0; c < C; c++) row[c] += dout[i * C + c];
    }
}

// dweight (V,C) <- dout (n,C), idx (n)
template <typename T, typename I>
void embedding_backward(T* dweight, const T* dout, const I* idx, int64_t n, int64_t V, int64_t C) {
    const int64_t nblocks = (C + kChannelBlock - 1) / kChannelBlock;
#pragma omp parallel for schedule(static) if (n * C > kParallelElems)
    for (int64_t b = 0; b < nblocks; b++) {
        const int64_t c0 = b * kChannelBlock, c1 = std::min(C, c0 + kChannelBlock);
        for (int64_t v = 0; v < V; v++) std::fill(dweight + v * C + c0, dweight + v * C + c1, T(0));
        for (int64_t i = 0; i < n; i++) {
            T* row = dweight + int64_t(idx[i]) * C;
            const T* g = dout + i * C;
#pragma omp simd
            for (int64_t c = c0; c < c1; c++) row[c] += g[c];
        }
    }
}

#define FG_INSTANTIATE(T, I)                                                                                 \
    template void embedding_forward<T, I>(T*, const I*, const T*, int64_t, int64_t);                         \
    template void embedding_backward<T, I>(T*, const T*, const I*, int64_t, int64_t, int64_t);               \
    template void embedding_backward_reference<T, I>(T*, const T*, const I*, int64_t, int64_t, int64_t);
FG_INSTANTIATE(float, int32_t)
FG_INSTANTIATE(float, int64_t)
FG_INSTANTIATE(double, int32_t)
FG_INSTANTIATE(double, int64_t)
#undef FG_INSTANTIATE

}  // namespace femtogpt::cpu
