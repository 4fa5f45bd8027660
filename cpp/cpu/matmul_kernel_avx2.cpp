// AVX2+FMA float32 micro-kernel: a 6x16 register tile (12 ymm accumulators,
// 2 for the B row, 1 for the broadcast A element: 15 of 16 registers).
// Per k step: 2 loads of B, 6 broadcasts of A, 12 FMAs -- the two FMA pipes
// of Zen/Haswell stay busy while the loads fit the load ports.
#include "cpu/matmul_kernels.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

#include "cpu/matmul_pack_avx2.h"

namespace femtogpt::cpu::gemm_detail {

namespace {

constexpr int MR = 6, NR = 16;

inline void store_row(float* c, __m256 lo, __m256 hi, __m256 va, __m256 vb, int mode, const float* bias) {
    // mode 0: c = alpha*acc; 1: c = alpha*acc + c; 2: c = alpha*acc + beta*c; then + bias
    if (mode == 0) {
        lo = _mm256_mul_ps(va, lo);
        hi = _mm256_mul_ps(va, hi);
    } else if (mode == 1) {
        lo = _mm256_fmadd_ps(va, lo, _mm256_loadu_ps(c));
        hi = _mm256_fmadd_ps(va, hi, _mm256_loadu_ps(c + 8));
    } else {
        lo = _mm256_fmadd_ps(va, lo, _mm256_mul_ps(vb, _mm256_loadu_ps(c)));
        hi = _mm256_fmadd_ps(va, hi, _mm256_mul_ps(vb, _mm256_loadu_ps(c + 8)));
    }
    if (bias) {  // not + 0 when there is none: that would turn -0 into +0
        lo = _mm256_add_ps(lo, _mm256_loadu_ps(bias));
        hi = _mm256_add_ps(hi, _mm256_loadu_ps(bias + 8));
    }
    _mm256_storeu_ps(c, lo);
    _mm256_storeu_ps(c + 8, hi);
}

// C (6,16) = alpha * op(A) (6,kc) @ Bp (kc,16) + beta * C (+ bias (16)), with element (i, p) of
// op(A) at a[p*6 + i] from a packed panel (kPacked), or at a[i*rs + p*cs] straight
// from A (rs = lda, cs = 1 as stored; rs = 1, cs = lda transposed). Both run the same
// FMAs in the same order.
template <bool kPacked>
inline void kernel_6x16(int64_t kc, const float* a, int64_t rs_, int64_t cs_, const float* b, float* C, int64_t ldc,
                        float alpha, float beta, const float* bias) {
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
    __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
    __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
    __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
    __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
    for (int i = 0; i < MR; i++) _mm_prefetch(reinterpret_cast<const char*>(C + i * ldc), _MM_HINT_T0);
    const int64_t rs = kPacked ? 1 : rs_, cs = kPacked ? MR : cs_;  // op(A)(i, p) at a[i*rs + p*cs]
#pragma GCC unroll 4
    for (int64_t p = 0; p < kc; p++) {
        const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
        __m256 ai = _mm256_broadcast_ss(a);
        c00 = _mm256_fmadd_ps(ai, b0, c00);
        c01 = _mm256_fmadd_ps(ai, b1, c01);
        ai = _mm256_broadcast_ss(a + rs);
        c10 = _mm256_fmadd_ps(ai, b0, c10);
        c11 = _mm256_fmadd_ps(ai, b1, c11);
        ai = _mm256_broadcast_ss(a + 2 * rs);
        c20 = _mm256_fmadd_ps(ai, b0, c20);
        c21 = _mm256_fmadd_ps(ai, b1, c21);
        ai = _mm256_broadcast_ss(a + 3 * rs);
        c30 = _mm256_fmadd_ps(ai, b0, c30);
        c31 = _mm256_fmadd_ps(ai, b1, c31);
        ai = _mm256_broadcast_ss(a + 4 * rs);
        c40 = _mm256_fmadd_ps(ai, b0, c40);
        c41 = _mm256_fmadd_ps(ai, b1, c41);
        ai = _mm256_broadcast_ss(a + 5 * rs);
        c50 = _mm256_fmadd_ps(ai, b0, c50);
        c51 = _mm256_fmadd_ps(ai, b1, c51);
        a += cs;
        b += NR;
    }
    const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
    const int mode = beta == 0.0f ? 0 : beta == 1.0f ? 1 : 2;
    store_row(C + 0 * ldc, c00, c01, va, vb, mode, bias);
    store_row(C + 1 * ldc, c10, c11, va, vb, mode, bias);
    store_row(C + 2 * ldc, c20, c21, va, vb, mode, bias);
    store_row(C + 3 * ldc, c30, c31, va, vb, mode, bias);
    store_row(C + 4 * ldc, c40, c41, va, vb, mode, bias);
    store_row(C + 5 * ldc, c50, c51, va, vb, mode, bias);
}

void kernel_packed(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc, float alpha, float beta,
                   const float* bias) {
    kernel_6x16<true>(kc, Ap, 1, MR, Bp, C, ldc, alpha, beta, bias);
}

void kernel_strided(int64_t kc, const float* A, int64_t rs, int64_t cs, const float* Bp, float* C, int64_t ldc,
                    float alpha, float beta, const float* bias) {
    kernel_6x16<false>(kc, A, rs, cs, Bp, C, ldc, alpha, beta, bias);
}

const KernelF32 kAvx2 = {"avx2", MR, NR, 144, 256, 4080, kernel_packed, kernel_strided, pack_avx2<MR>, pack_avx2<NR>};

}  // namespace

const KernelF32* kernel_f32_avx2() { return &kAvx2; }

}  // namespace femtogpt::cpu::gemm_detail

#else

namespace femtogpt::cpu::gemm_detail {
const KernelF32* kernel_f32_avx2() { return nullptr; }
}  // namespace femtogpt::cpu::gemm_detail

#endif
