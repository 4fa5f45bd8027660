#include "cpu/matmul.h"

namespace femtogpt::cpu {

template <typename T>
void gemm_reference(T* C, int64_t ldc, const T* A, int64_t lda, const T* B, int64_t ldb,
                    int64_t M, int64_t N, int64_t K, bool trans_a, bool trans_b, T alpha, T beta) {
    for (int64_t i = 0; i < M; i++) {
        for (int64_t j = 0; j < N; j++) {
            double acc = 0.0;
            for (int64_t p = 0; p < K; p++) {
                T a = trans_a ? A[p * lda + i] : A[i * lda + p];
                T b = trans_b ? B[j * ldb + p] : B[p * ldb + j];
                acc += double(a) * double(b);
            }
            T prev = beta == T(0) ? T(0) : beta * C[i * ldc + j];
            C[i * ldc + j] = T(alpha * acc) + prev;
        }
    }
}

template void gemm_reference<float>(float*, int64_t, const float*, int64_t, const float*, int64_t, int64_t,
                                    int64_t, int64_t, bool, bool, float, float);
template void gemm_reference<double>(double*, int64_t, const double*, int64_t, const double*, int64_t, int64_t,
                                     int64_t, int64_t, bool, bool, double, double);

}  // namespace femtogpt::cpu
