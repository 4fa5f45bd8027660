// Elementwise activations of a GPT's MLP: GELU (exact or tanh approximation) and ReLU.
//
// Sizes: n elements (any shape, flattened). Backward RETURNS dx (written, not accumulated).
#pragma once

#include <cstdint>

namespace femtogpt::cpu {

// GELU(x) = x * Phi(x). `tanh`: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), as GPT-2;
// `none`: the exact 0.5 x (1 + erf(x / sqrt(2))).
enum class GeluApprox { none, tanh };

// out (n) <- x (n)
template <typename T>
void gelu_forward(T* out, const T* x, int64_t n, GeluApprox approx);
template <typename T>
void gelu_forward_reference(T* out, const T* x, int64_t n, GeluApprox approx);

// x (n) <- gelu(x) on the calling thread alone, for kernels that run it inside parallel regions
// of their own (the matmul applies it to operand blocks as it packs them, cpu::GemmFusion).
// Element for element the values of gelu_forward: the same per-element code.
template <typename T>
void gelu_inplace_serial(T* x, int64_t n, GeluApprox approx);

// dx (n) <- dout (n), x (n)
template <typename T>
void gelu_backward(T* dx, const T* dout, const T* x, int64_t n, GeluApprox approx);

// The same on `rows` rows of n elements (row strides lddx, lddout, ldx), on the calling thread
// alone: the matmul's GELU-gradient epilogue on a finished register tile (cpu::GemmFusion).
// Element for element the values of gelu_backward. dx may be dout or x.
template <typename T>
void gelu_backward_rows(T* dx, int64_t lddx, const T* dout, int64_t lddout, const T* x, int64_t ldx, int64_t rows,
                        int64_t n, GeluApprox approx);
template <typename T>
void gelu_backward_reference(T* dx, const T* dout, const T* x, int64_t n, GeluApprox approx);

// out (n) <- x (n): max(x, 0)
template <typename T>
void relu_forward(T* out, const T* x, int64_t n);
// dx (n) <- dout (n), out (n): dout where out > 0, else 0 (the forward output suffices)
template <typename T>
void relu_backward(T* dx, const T* dout, const T* out, int64_t n);

// AVX2+FMA float32 GELU, both forms (activation_avx2.cpp): built on a vector exp,
// within ~2e-6 relative of the float64 formulas; same contract as the generic kernels.
void gelu_forward_avx2(float* out, const float* x, int64_t n, GeluApprox approx);
void gelu_inplace_serial_avx2(float* x, int64_t n, GeluApprox approx);
// AVX-512 (activation_avx512.cpp): the tanh form on 16 lanes, the erf form handed to AVX2.
void gelu_forward_avx512(float* out, const float* x, int64_t n, GeluApprox approx);
void gelu_inplace_serial_avx512(float* x, int64_t n, GeluApprox approx);
void gelu_backward_avx512(float* dx, const float* dout, const float* x, int64_t n, GeluApprox approx);
void gelu_backward_avx2(float* dx, const float* dout, const float* x, int64_t n, GeluApprox approx);
void gelu_backward_rows_avx512(float* dx, int64_t lddx, const float* dout, int64_t lddout, const float* x, int64_t ldx,
                               int64_t rows, int64_t n, GeluApprox approx);
void gelu_backward_rows_avx2(float* dx, int64_t lddx, const float* dout, int64_t lddout, const float* x, int64_t ldx,
                             int64_t rows, int64_t n, GeluApprox approx);

}  // namespace femtogpt::cpu
