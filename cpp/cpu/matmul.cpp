// The matmul driver. (Placeholder until the packed SIMD kernels land: a
// row-parallel loop over the reference.)
#include "cpu/matmul.h"

#include "parallel.h"

namespace femtogpt::cpu {

template <typename T>
void gemm(T* C, int64_t ldc, const T* A, int64_t lda, const T* B, int64_t ldb,
          int64_t M, int64_t N, int64_t K, bool trans_a, bool trans_b, T alpha, T beta) {
#pragma omp parallel for schedule(static) if (M * N * K > 32768)
    for (int64_t i = 0; i < M; i++) {
        const T* Ai = trans_a ? A + i : A + i * lda;
        int64_t lda_i = trans_a ? lda : 1;
        for (int64_t j = 0; j < N; j++) {
            T acc = 0;
            for (int64_t p = 0; p < K; p++) {
                T a = trans_a ? Ai[p * lda_i] : Ai[p];
                T b = trans_b ? B[j * ldb + p] : B[p * ldb + j];
                acc += a * b;
            }
            C[i * ldc + j] = alpha * acc + (beta == T(0) ? T(0) : beta * C[i * ldc + j]);
        }
    }
}

template <typename T>
void gemm_batched(T* C, int64_t stride_c, int64_t ldc, const T* A, int64_t stride_a, int64_t lda, const T* B,
                  int64_t stride_b, int64_t ldb, int64_t batch, int64_t M, int64_t N, int64_t K, bool trans_a,
                  bool trans_b, T alpha, T beta) {
    for (int64_t b = 0; b < batch; b++)
        gemm<T>(C + b * stride_c, ldc, A + b * stride_a, lda, B + b * stride_b, ldb, M, N, K, trans_a, trans_b,
                alpha, beta);
}

#define FG_INSTANTIATE(T)                                                                                     \
    template void gemm<T>(T*, int64_t, const T*, int64_t, const T*, int64_t, int64_t, int64_t, int64_t, bool, \
                          bool, T, T);                                                                        \
    template void gemm_batched<T>(T*, int64_t, int64_t, const T*, int64_t, int64_t, const T*, int64_t,       \
                                  int64_t, int64_t, int64_t, int64_t, int64_t, bool, bool, T, T);
FG_INSTANTIATE(float)
FG_INSTANTIATE(double)
#undef FG_INSTANTIATE

}  // namespace femtogpt::cpu
