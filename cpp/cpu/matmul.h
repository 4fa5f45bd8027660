// Matrix multiply kernels on row-major matrices.
//
// C (M,N) = alpha * op(A) (M,K) @ op(B) (K,N) + beta * C
//   A is stored (M,K) with row stride lda, or (K,M) when trans_a;
//   B is stored (K,N) with row stride ldb, or (N,K) when trans_b.
// beta == 0 means C is written without being read (it may hold garbage or NaN).
#pragma once

#include <cstdint>

#include "cpu/activation.h"
#include "cpu/isa.h"

namespace femtogpt::cpu {

// The obvious triple loop, in double accumulation; the reference every fast path is held to.
template <typename T>
void gemm_reference(T* C, int64_t ldc, const T* A, int64_t lda, const T* B, int64_t ldb,
                    int64_t M, int64_t N, int64_t K, bool trans_a, bool trans_b, T alpha, T beta);

// The fast path: float32 runs the packed, tiled kernels of the active ISA;
// float64 (used for gradient checks) runs a simple blocked loop.
template <typename T>
void gemm(T* C, int64_t ldc, const T* A, int64_t lda, const T* B, int64_t ldb,
          int64_t M, int64_t N, int64_t K, bool trans_a, bool trans_b, T alpha, T beta);

// Work fused into one product: GELU applied to op(A) and/or op(B) before the product, a
// bias row added to C after it, and the row sums of op(A) on the side,
//   C (M,N) = alpha * g(op(A)) (M,K) @ g(op(B)) (K,N) + beta * C + bias (N),
//   a_row_sums (M) = sum over k of g(op(A)) (M,K)   (a linear layer's bias gradient, with
//                                                   dweight = dout^T @ input as the product),
// with the values (bitwise) of materializing gelu_forward(A), multiplying, then adding the
// bias. float32 applies the GELU to operand blocks as it packs them, so g(op(A)) is never
// stored, adds the bias to each register tile as it is finished, and sums each packed A
// block's rows (k blocks summed in order: the same bits for any thread count); float64
// (gradient checks) materializes.
//
// gelu_grad, the backward of a GELU that feeds a linear layer, multiplies the finished
// product by GELU's derivative at G (M,N) (row stride ld_gelu_grad):
//   C (M,N) = gelu'(G) * (alpha * op(A) @ op(B))      (beta == 0, no bias),
// the values of the product followed by gelu_backward. float32 applies it to each register
// tile as the tile is finished, while it is in L1. G may be C itself (dh written over h)
// when gemm_gelu_grad_in_place(M, N, K) is true: then every tile is finished in one pass
// over K and reads its G before writing it. Otherwise G must not overlap C: the product
// is made first and the derivative applied to it afterwards.
template <typename T>
struct GemmFusion {
    bool gelu_a = false, gelu_b = false;
    GeluApprox approx = GeluApprox::tanh;
    const T* bias = nullptr;  // (N), or nullptr
    T* a_row_sums = nullptr;  // (M), written; or nullptr
    const T* gelu_grad = nullptr;  // G (M,N), or nullptr
    int64_t ld_gelu_grad = 0;
};

template <typename T>
void gemm_fused(T* C, int64_t ldc, const T* A, int64_t lda, const T* B, int64_t ldb, int64_t M, int64_t N, int64_t K,
                bool trans_a, bool trans_b, T alpha, T beta, const GemmFusion<T>& fusion);

// Whether gemm_fused<T> may take fusion.gelu_grad == C for this M x N x K product (above).
template <typename T>
bool gemm_gelu_grad_in_place(int64_t M, int64_t N, int64_t K);

// `batch` independent products; matrix i starts at A + i*stride_a (and so on).
// A stride of 0 broadcasts one matrix over the batch.
template <typename T>
void gemm_batched(T* C, int64_t stride_c, int64_t ldc,
                  const T* A, int64_t stride_a, int64_t lda,
                  const T* B, int64_t stride_b, int64_t ldb,
                  int64_t batch, int64_t M, int64_t N, int64_t K,
                  bool trans_a, bool trans_b, T alpha, T beta);

}  // namespace femtogpt::cpu
