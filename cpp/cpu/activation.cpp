// Activations: generic kernels (OpenMP over blocks of elements) and references.
#include "cpu/activation.h"

#include <cmath>
#include <type_traits>

#include "cpu/isa.h"
#include "parallel.h"

namespace femtogpt::cpu {

namespace {

constexpr int64_t kParallelElems = 32768;
constexpr double kSqrt2OverPi = 0.7978845608028654;   // sqrt(2/pi)
constexpr double kGeluCubic = 0.044715;
constexpr double kInvSqrt2 = 0.7071067811865476;      // 1/sqrt(2)
constexpr double kInvSqrt2Pi = 0.3989422804014327;    // 1/sqrt(2 pi)

// GELU-tanh and its derivative as the reference writes them (double precision).
inline double gelu_tanh_ref(double x) {
    double u = kSqrt2OverPi * (x + kGeluCubic * x * x * x);
    return 0.5 * x * (1.0 + std::tanh(u));
}
inline double gelu_tanh_grad_ref(double x) {
    double u = kSqrt2OverPi * (x + kGeluCubic * x * x * x);
    double t = std::tanh(u);
    // d/dx 0.5 x (1 + tanh(u)) = 0.5 (1 + t) + 0.5 x (1 - t^2) du/dx
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * kSqrt2OverPi * (1.0 + 3.0 * kGeluCubic * x * x);
}

// The same in T, through 0.5 (1 + tanh(u)) = s = 1 / (1 + exp(-2u)) and
// 1 - tanh(u)^2 = 4 s (1 - s): no cancellation in 1 + tanh(u) for x << 0,
// where float32 would lose all digits of the tail.
template <typename T>
inline T gelu_tanh(T x) {
    T u = T(kSqrt2OverPi) * (x + T(kGeluCubic) * x * x * x);
    return x / (T(1) + std::exp(T(-2) * u));
}
template <typename T>
inline T gelu_tanh_grad(T x) {
    // Past |x| = 1e18 the derivative is exactly 1 (or 0) in either precision, as at 1e18; beyond
    // ~1.8e19 float32's x^2 would be inf, and 2 x s (1 - s) du/dx then 0 * inf = NaN. (Written as
    // comparisons, not std::clamp, so that a NaN x stays NaN.)
    if (x > T(1e18)) x = T(1e18);
    if (x < T(-1e18)) x = T(-1e18);
    T x2 = x * x;
    T u = T(kSqrt2OverPi) * (x + T(kGeluCubic) * x2 * x);
    T s = T(1) / (T(1) + std::exp(T(-2) * u));
    // d/dx x s(2u) = s + x * 2 s (1 - s) du/dx
    return s + T(2) * x * s * (T(1) - s) * T(kSqrt2OverPi) * (T(1) + T(3 * kGeluCubic) * x2);
}
// Exact GELU through Phi(x) = 0.5 (1 + erf(x/sqrt 2)) = 0.5 erfc(-x/sqrt 2): erfc keeps
// the tail x << 0 relative-accurate where 1 + erf cancels.
template <typename T>
inline T gelu_erf(T x) {
    return T(0.5) * x * std::erfc(-x * T(kInvSqrt2));
}
template <typename T>
inline T gelu_erf_grad(T x) {
    // d/dx x Phi(x) = Phi(x) + x phi(x)
    return T(0.5) * std::erfc(-x * T(kInvSqrt2)) + x * T(kInvSqrt2Pi) * std::exp(T(-0.5) * x * x);
}

}  // namespace

// ---------------------------------------------------------------- reference (double precision math)

// out (n) <- x (n)
template <typename T>
void gelu_forward_reference(T* out, const T* x, int64_t n, GeluApprox approx) {
    for (int64_t i = 0; i < n; i++)
        out[i] = T(approx == GeluApprox::tanh ? gelu_tanh_ref(x[i]) : gelu_erf<double>(x[i]));
}

// dx (n) <- dout (n), x (n)
template <typename T>
void gelu_backward_reference(T* dx, const T* dout, const T* x, int64_t n, GeluApprox approx) {
    for (int64_t i = 0; i < n; i++)
        dx[i] = T(double(dout[i]) * (approx == GeluApprox::tanh ? gelu_tanh_grad_ref(x[i])
                                                                 : gelu_erf_grad<double>(x[i])));
}

// ---------------------------------------------------------------- generic fast path

// out (n) <- x (n)
template <typename T>
void gelu_forward(T* out, const T* x, int64_t n, GeluApprox approx) {
    if constexpr (std::is_same_v<T, float>) {
        if (active_isa() == Isa::avx512) return gelu_forward_avx512(out, x, n, approx);
        if (active_isa() == Isa::avx2) return gelu_forward_avx2(out, x, n, approx);
    }
    if (approx == GeluApprox::tanh) {
#pragma omp parallel for simd schedule(static) if (n > kParallelElems)
        for (int64_t i = 0; i < n; i++) out[i] = gelu_tanh<T>(x[i]);
    } else {
#pragma omp parallel for simd schedule(static) if (n > kParallelElems)
        for (int64_t i = 0; i < n; i++) out[i] = gelu_erf<T>(x[i]);
    }
}

// x (n) <- gelu(x (n)), no OpenMP: the loops of gelu_forward without the parallel for
template <typename T>
void gelu_inplace_serial(T* x, int64_t n, GeluApprox approx) {
    if constexpr (std::is_same_v<T, float>) {
        if (active_isa() == Isa::avx512) return gelu_inplace_serial_avx512(x, n, approx);
        if (active_isa() == Isa::avx2) return gelu_inplace_serial_avx2(x, n, approx);
    }
    if (approx == GeluApprox::tanh) {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) x[i] = gelu_tanh<T>(x[i]);
    } else {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) x[i] = gelu_erf<T>(x[i]);
    }
}

// dx <- dout, x: rows of n, on the calling thread
template <typename T>
void gelu_backward_rows(T* dx, int64_t lddx, const T* dout, int64_t lddout, const T* x, int64_t ldx, int64_t rows,
                        int64_t n, GeluApprox approx) {
    if constexpr (std::is_same_v<T, float>) {
        if (active_isa() == Isa::avx512)
            return gelu_backward_rows_avx512(dx, lddx, dout, lddout, x, ldx, rows, n, approx);
        if (active_isa() == Isa::avx2) return gelu_backward_rows_avx2(dx, lddx, dout, lddout, x, ldx, rows, n, approx);
    }
    for (int64_t r = 0; r < rows; r++) {
        T* d = dx + r * lddx;
        const T* g = dout + r * lddout;
        const T* v = x + r * ldx;
        if (approx == GeluApprox::tanh) {
#pragma omp simd
            for (int64_t i = 0; i < n; i++) d[i] = g[i] * gelu_tanh_grad<T>(v[i]);
        } else {
#pragma omp simd
            for (int64_t i = 0; i < n; i++) d[i] = g[i] * gelu_erf_grad<T>(v[i]);
        }
    }
}

// dx (n) <- dout (n), x (n)
template <typename T>
void gelu_backward(T* dx, const T* dout, const T* x, int64_t n, GeluApprox approx) {
    if constexpr (std::is_same_v<T, float>) {
        if (active_isa() == Isa::avx512) return gelu_backward_avx512(dx, dout, x, n, approx);
        if (active_isa() == Isa::avx2) return gelu_backward_avx2(dx, dout, x, n, approx);
    }
    if (approx == GeluApprox::tanh) {
#pragma omp parallel for simd schedule(static) if (n > kParallelElems)
        for (int64_t i = 0; i < n; i++) dx[i] = dout[i] * gelu_tanh_grad<T>(x[i]);
    } else {
#pragma omp parallel for simd schedule(static) if (n > kParallelElems)
        for (int64_t i = 0; i < n; i++) dx[i] = dout[i] * gelu_erf_grad<T>(x[i]);
    }
}

// out (n) <- x (n)
template <typename T>
void relu_forward(T* out, const T* x, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > kParallelElems)
    for (int64_t i = 0; i < n; i++) out[i] = x[i] > T(0) ? x[i] : T(0);
}

// dx (n) <- dout (n), out (n)
template <typename T>
void relu_backward(T* dx, const T* dout, const T* out, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > kParallelElems)
    for (int64_t i = 0; i < n; i++) {
        const T g = dout[i];  // loaded unconditionally: a select, not a branch (which mispredicts half the time)
        dx[i] = out[i] > T(0) ? g : T(0);
    }
}

#define FG_INSTANTIATE(T)                                                                       \
    template void gelu_forward<T>(T*, const T*, int64_t, GeluApprox);                           \
    template void gelu_forward_reference<T>(T*, const T*, int64_t, GeluApprox);                 \
    template void gelu_inplace_serial<T>(T*, int64_t, GeluApprox);                              \
    template void gelu_backward<T>(T*, const T*, const T*, int64_t, GeluApprox);                \
    template void gelu_backward_rows<T>(T*, int64_t, const T*, int64_t, const T*, int64_t, int64_t, int64_t,  \
                                        GeluApprox);                                                    \
    template void gelu_backward_reference<T>(T*, const T*, const T*, int64_t, GeluApprox);      \
    template void relu_forward<T>(T*, const T*, int64_t);                                       \
    template void relu_backward<T>(T*, const T*, const T*, int64_t);
FG_INSTANTIATE(float)
FG_INSTANTIATE(double)
#undef FG_INSTANTIATE

}  // namespace femtogpt::cpu
