// Softmax and log-softmax over the last dimension.
//
// Sizes: N rows, C entries per row. Each row is reduced by one thread, with the
// max subtracted first (no overflow). Backward takes the forward OUTPUT (which
// is all it needs) and RETURNS dx.
#pragma once

#include <cstdint>

namespace femtogpt::cpu {

// out (N,C) <- x (N,C): exp(x - max) / sum exp(x - max)
template <typename T>
void softmax_forward(T* out, const T* x, int64_t N, int64_t C);
template <typename T>
void softmax_forward_reference(T* out, const T* x, int64_t N, int64_t C);

// dx (N,C) <- dout (N,C), out (N,C): out * (dout - sum(dout * out))
template <typename T>
void softmax_backward(T* dx, const T* dout, const T* out, int64_t N, int64_t C);
template <typename T>
void softmax_backward_reference(T* dx, const T* dout, const T* out, int64_t N, int64_t C);

// out (N,C) <- x (N,C): x - max - log(sum exp(x - max))
template <typename T>
void log_softmax_forward(T* out, const T* x, int64_t N, int64_t C);
template <typename T>
void log_softmax_forward_reference(T* out, const T* x, int64_t N, int64_t C);

// dx (N,C) <- dout (N,C), out (N,C): dout - exp(out) * sum(dout)
template <typename T>
void log_softmax_backward(T* dx, const T* dout, const T* out, int64_t N, int64_t C);
template <typename T>
void log_softmax_backward_reference(T* dx, const T* dout, const T* out, int64_t N, int64_t C);

// AVX2+FMA float32 kernels (softmax_avx2.cpp); same contracts.
void softmax_forward_avx2(float* out, const float* x, int64_t N, int64_t C);
void softmax_backward_avx2(float* dx, const float* dout, const float* out, int64_t N, int64_t C);
void log_softmax_forward_avx2(float* out, const float* x, int64_t N, int64_t C);
void log_softmax_backward_avx2(float* dx, const float* dout, const float* out, int64_t N, int64_t C);

}  // namespace femtogpt::cpu
