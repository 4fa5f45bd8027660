// Matrix multiply kernels on row-major matrices.
//
// C (M,N) = alpha * op(A) (M,K) @ op(B) (K,N) + beta * C
//   A is stored (M,K) with row stride lda, or (K,M) when trans_a;
//   B is stored (K,N) with row stride ldb, or (N,K) when trans_b.
// beta == 0 means C is written without being read (it may hold garbage or NaN).
#pragma once

#include <cstdint>

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

// `batch` independent products; matrix i starts at A + i*stride_a (and so on).
// A stride of 0 broadcasts one matrix over the batch.
template <typename T>
void gemm_batched(T* C, int64_t stride_c, int64_t ldc,
                  const T* A, int64_t stride_a, int64_t lda,
                  const T* B, int64_t stride_b, int64_t ldb,
                  int64_t batch, int64_t M, int64_t N, int64_t K,
                  bool trans_a, bool trans_b, T alpha, T beta);

}  // namespace femtogpt::cpu
