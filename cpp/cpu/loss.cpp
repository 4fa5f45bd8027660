// Cross-entropy: generic kernels (OpenMP over rows) and references.
#include "cpu/loss.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "cpu/isa.h"
#include "parallel.h"

namespace femtogpt::cpu {

namespace {
constexpr int64_t kParallelElems = 32768;
}

// ---------------------------------------------------------------- reference (double accumulation)

// losses (N), lse (N) <- logits (N,V), targets (N)
template <typename T, typename I>
void cross_entropy_forward_reference(T* losses, T* lse, const T* logits, const I* targets, int64_t N, int64_t V,
                                     int64_t ignore_index) {
    for (int64_t n = 0; n < N; n++) {
        const T* z = logits + n * V;
        double m = -std::numeric_limits<double>::infinity(), s = 0;
        for (int64_t v = 0; v < V; v++) m = std::max(m, double(z[v]));
        for (int64_t v = 0; v < V; v++) s += std::exp(z[v] - m);
        double l = m + std::log(s);
        lse[n] = T(l);
        int64_t t = int64_t(targets[n]);
        losses[n] = t == ignore_index ? T(0) : T(l - z[t]);
    }
}

// dlogits (N,V) <- g (N, stride g_stride), logits (N,V), targets (N), lse (N)
template <typename T, typename I>
void cross_entropy_backward_reference(T* dlogits, const T* g, int64_t g_stride, const T* logits, const I* targets,
                                      const T* lse, int64_t N, int64_t V, int64_t ignore_index) {
    for (int64_t n = 0; n < N; n++) {
        int64_t t = int64_t(targets[n]);
        double gn = t == ignore_index ? 0.0 : double(g[n * g_stride]);
        for (int64_t v = 0; v < V; v++) {
            double p = std::exp(double(logits[n * V + v]) - double(lse[n]));
            dlogits[n * V + v] = T(gn * (p - (v == t ? 1.0 : 0.0)));
        }
    }
}

// ---------------------------------------------------------------- generic fast path

template <typename T, typename I>
void cross_entropy_forward(T* losses, T* lse, const T* logits, const I* targets, int64_t N, int64_t V,
                           int64_t ignore_index) {
    if constexpr (std::is_same_v<T, float>) {
        if (active_isa() != Isa::generic)
            return cross_entropy_forward_avx2<I>(losses, lse, logits, targets, N, V, ignore_index);
    }
#pragma omp parallel for schedule(static) if (N * V > kParallelElems)
    for (int64_t n = 0; n < N; n++) {
        const T* z = logits + n * V;
        T m = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : m)
        for (int64_t v = 0; v < V; v++) m = z[v] > m ? z[v] : m;
        T s = 0;
        for (int64_t v = 0; v < V; v++) s += std::exp(z[v] - m);
        T l = m + std::log(s);
        lse[n] = l;
        int64_t t = int64_t(targets[n]);
        losses[n] = t == ignore_index ? T(0) : l - z[t];
    }
}

template <typename T, typename I>
void cross_entropy_backward(T* dlogits, const T* g, int64_t g_stride, const T* logits, const I* targets, const T* lse,
                            int64_t N, int64_t V, int64_t ignore_index) {
    if constexpr (std::is_same_v<T, float>) {
        if (active_isa() != Isa::generic)
            return cross_entropy_backward_avx2<I>(dlogits, g, g_stride, logits, targets, lse, N, V, ignore_index);
    }
#pragma omp parallel for schedule(static) if (N * V > kParallelElems)
    for (int64_t n = 0; n < N; n++) {
        int64_t t = int64_t(targets[n]);
        T* d = dlogits + n * V;
        if (t == ignore_index) {
            std::fill(d, d + V, T(0));
            continue;
        }
        const T* z = logits + n * V;
        const T gn = g[n * g_stride], l = lse[n];
        for (int64_t v = 0; v < V; v++) d[v] = gn * std::exp(z[v] - l);
        d[t] -= gn;
    }
}

#define FG_INSTANTIATE(T, I)                                                                                       \
    template void cross_entropy_forward<T, I>(T*, T*, const T*, const I*, int64_t, int64_t, int64_t);              \
    template void cross_entropy_forward_reference<T, I>(T*, T*, const T*, const I*, int64_t, int64_t, int64_t);    \
    template void cross_entropy_backward<T, I>(T*, const T*, int64_t, const T*, const I*, const T*, int64_t,       \
                                               int64_t, int64_t);                                                  \
    template void cross_entropy_backward_reference<T, I>(T*, const T*, int64_t, const T*, const I*, const T*,      \
                                                         int64_t, int64_t, int64_t);
FG_INSTANTIATE(float, int32_t)
FG_INSTANTIATE(float, int64_t)
FG_INSTANTIATE(double, int32_t)
FG_INSTANTIATE(double, int64_t)
#undef FG_INSTANTIATE

}  // namespace femtogpt::cpu
