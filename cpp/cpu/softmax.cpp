// Softmax and log-softmax: generic kernels (OpenMP over rows) and references.
#include "cpu/softmax.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "cpu/isa.h"
#include "parallel.h"

namespace femtogpt::cpu {

namespace {
constexpr int64_t kParallelElems = 32768;

template <typename T>
inline T row_max(const T* x, int64_t C) {
    T m = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : m)
    for (int64_t c = 0; c < C; c++) m = x[c] > m ? x[c] : m;
    return m;
}
}  // namespace

// ---------------------------------------------------------------- reference (double accumulation)

// out (N,C) <- x (N,C)
template <typename T>
void softmax_forward_reference(T* out, const T* x, int64_t N, int64_t C) {
    for (int64_t n = 0; n < N; n++) {
        const T* xr = x + n * C;
        double m = -std::numeric_limits<double>::infinity(), s = 0;
        for (int64_t c = 0; c < C; c++) m = std::max(m, double(xr[c]));
        for (int64_t c = 0; c < C; c++) s += std::exp(xr[c] - m);
        for (int64_t c = 0; c < C; c++) out[n * C + c] = T(std::exp(xr[c] - m) / s);
    }
}

// dx (N,C) <- dout (N,C), out (N,C)
template <typename T>
void softmax_backward_reference(T* dx, const T* dout, const T* out, int64_t N, int64_t C) {
    for (int64_t n = 0; n < N; n++) {
        double dot = 0;
        for (int64_t c = 0; c < C; c++) dot += double(dout[n * C + c]) * out[n * C + c];
        for (int64_t c = 0; c < C; c++) dx[n * C + c] = T(out[n * C + c] * (dout[n * C + c] - dot));
    }
}

// out (N,C) <- x (N,C)
template <typename T>
void log_softmax_forward_reference(T* out, const T* x, int64_t N, int64_t C) {
    for (int64_t n = 0; n < N; n++) {
        const T* xr = x + n * C;
        double m = -std::numeric_limits<double>::infinity(), s = 0;
        for (int64_t c = 0; c < C; c++) m = std::max(m, double(xr[c]));
        for (int64_t c = 0; c < C; c++) s += std::exp(xr[c] - m);
        double lse = m + std::log(s);
        for (int64_t c = 0; c < C; c++) out[n * C + c] = T(xr[c] - lse);
    }
}

// dx (N,C) <- dout (N,C), out (N,C)
template <typename T>
void log_softmax_backward_reference(T* dx, const T* dout, const T* out, int64_t N, int64_t C) {
    for (int64_t n = 0; n < N; n++) {
        double s = 0;
        for (int64_t c = 0; c < C; c++) s += dout[n * C + c];
        for (int64_t c = 0; c < C; c++) dx[n * C + c] = T(dout[n * C + c] - std::exp(double(out[n * C + c])) * s);
    }
}

// ---------------------------------------------------------------- generic fast path

// out (N,C) <- x (N,C)
template <typename T>
void softmax_forward(T* out, const T* x, int64_t N, int64_t C) {
    if constexpr (std::is_same_v<T, float>) {
        if (active_isa() != Isa::generic) return softmax_forward_avx2(out, x, N, C);
    }
#pragma omp parallel for schedule(static) if (N * C > kParallelElems)
    for (int64_t n = 0; n < N; n++) {
        const T* xr = x + n * C;
        T* o = out + n * C;
        T m = row_max(xr, C), s = 0;
        for (int64_t c = 0; c < C; c++) {
            o[c] = std::exp(xr[c] - m);
            s += o[c];
        }
        T inv = T(1) / s;
#pragma omp simd
        for (int64_t c = 0; c < C; c++) o[c] *= inv;
    }
}

// dx (N,C) <- dout (N,C), out (N,C)
template <typename T>
void softmax_backward(T* dx, const T* dout, const T* out, int64_t N, int64_t C) {
    if constexpr (std::is_same_v<T, float>) {
        if (active_isa() != Isa::generic) return softmax_backward_avx2(dx, dout, out, N, C);
    }
#pragma omp parallel for schedule(static) if (N * C > kParallelElems)
    for (int64_t n = 0; n < N; n++) {
        const T* g = dout + n * C;
        const T* y = out + n * C;
        T dot = 0;
#pragma omp simd reduction(+ : dot)
        for (int64_t c = 0; c < C; c++) dot += g[c] * y[c];
#pragma omp simd
        for (int64_t c = 0; c < C; c++) dx[n * C + c] = y[c] * (g[c] - dot);
    }
}

// out (N,C) <- x (N,C)
template <typename T>
void log_softmax_forward(T* out, const T* x, int64_t N, int64_t C) {
    if constexpr (std::is_same_v<T, float>) {
        if (active_isa() != Isa::generic) return log_softmax_forward_avx2(out, x, N, C);
    }
#pragma omp parallel for schedule(static) if (N * C > kParallelElems)
    for (int64_t n = 0; n < N; n++) {
        const T* xr = x + n * C;
        T m = row_max(xr, C), s = 0;
        for (int64_t c = 0; c < C; c++) s += std::exp(xr[c] - m);
        T lse = m + std::log(s);
#pragma omp simd
        for (int64_t c = 0; c < C; c++) out[n * C + c] = xr[c] - lse;
    }
}

// dx (N,C) <- dout (N,C), out (N,C)
template <typename T>
void log_softmax_backward(T* dx, const T* dout, const T* out, int64_t N, int64_t C) {
    if constexpr (std::is_same_v<T, float>) {
        if (active_isa() != Isa::generic) return log_softmax_backward_avx2(dx, dout, out, N, C);
    }
#pragma omp parallel for schedule(static) if (N * C > kParallelElems)
    for (int64_t n = 0; n < N; n++) {
        const T* g = dout + n * C;
        T s = 0;
#pragma omp simd reduction(+ : s)
        for (int64_t c = 0; c < C; c++) s += g[c];
        for (int64_t c = 0; c < C; c++) dx[n * C + c] = g[c] - std::exp(out[n * C + c]) * s;
    }
}

#define FG_INSTANTIATE(T)                                                              \
    template void softmax_forward<T>(T*, const T*, int64_t, int64_t);                  \
    template void softmax_forward_reference<T>(T*, const T*, int64_t, int64_t);        \
    template void softmax_backward<T>(T*, const T*, const T*, int64_t, int64_t);       \
    template void softmax_backward_reference<T>(T*, const T*, const T*, int64_t, int64_t); \
    template void log_softmax_forward<T>(T*, const T*, int64_t, int64_t);              \
    template void log_softmax_forward_reference<T>(T*, const T*, int64_t, int64_t);    \
    template void log_softmax_backward<T>(T*, const T*, const T*, int64_t, int64_t);   \
    template void log_softmax_backward_reference<T>(T*, const T*, const T*, int64_t, int64_t);
FG_INSTANTIATE(float)
FG_INSTANTIATE(double)
#undef FG_INSTANTIATE

}  // namespace femtogpt::cpu
