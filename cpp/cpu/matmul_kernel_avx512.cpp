// AVX-512 float32 micro-kernel: a 14x32 register tile (28 zmm accumulators,
// 2 for the B row, 1 for the broadcast A element: 31 of 32 registers).
// The same structure as the AVX2 6x16 kernel, twice as wide and more than twice as tall.
#include "cpu/matmul_kernels.h"

#include <algorithm>

#if defined(__AVX512F__)
#include <immintrin.h>

#include "cpu/matmul_pack_avx2.h"

namespace femtogpt::cpu::gemm_detail {

namespace {

constexpr int MR = 14, NR = 32;
// Prefetch distances, in k steps. On the 2-core AVX-512 Xeon (a quiet host: FMA peak 278 to 284
// GFLOP/s; 2 threads; medians of 3 alternated rounds of the dev harness), GFLOP/s before / after:
// 4096x384x1536 (B^T) 232 / 236, 4096x1536x384 (B^T) 242 / 243, 4096x384x1152 (B^T) 226 / 228,
// 4096x1536x384 240 / 245, 384x4096x1536 (A^T) 207 / 216, 2048x64x256 (B^T) 231 / 239: +2% over
// the six. Prefetching A and B 16 steps ahead with C's rows asked for first measured the same.
constexpr int kPrefetchSteps = 8;
constexpr int kPrefetchCSteps = 16;

inline void store_row(float* c, __m512 lo, __m512 hi, __m512 va, __m512 vb, int mode, const float* bias) {
    // mode 0: c = alpha*acc; 1: c = alpha*acc + c; 2: c = alpha*acc + beta*c; then + bias
    if (mode == 0) {
        lo = _mm512_mul_ps(va, lo);
        hi = _mm512_mul_ps(va, hi);
    } else if (mode == 1) {
        lo = _mm512_fmadd_ps(va, lo, _mm512_loadu_ps(c));
        hi = _mm512_fmadd_ps(va, hi, _mm512_loadu_ps(c + 16));
    } else {
        lo = _mm512_fmadd_ps(va, lo, _mm512_mul_ps(vb, _mm512_loadu_ps(c)));
        hi = _mm512_fmadd_ps(va, hi, _mm512_mul_ps(vb, _mm512_loadu_ps(c + 16)));
    }
    if (bias) {  // not + 0 when there is none: that would turn -0 into +0
        lo = _mm512_add_ps(lo, _mm512_loadu_ps(bias));
        hi = _mm512_add_ps(hi, _mm512_loadu_ps(bias + 16));
    }
    _mm512_storeu_ps(c, lo);
    _mm512_storeu_ps(c + 16, hi);
}

#define FG_ROW(i)                                  \
    ai = _mm512_set1_ps(a[(i) * rs]);              \
    c##i##0 = _mm512_fmadd_ps(ai, b0, c##i##0);    \
    c##i##1 = _mm512_fmadd_ps(ai, b1, c##i##1);

// C (14,32) = alpha * op(A) (14,kc) @ Bp (kc,32) + beta * C (+ bias (32)), with element (i, p) of
// op(A) at a[p*14 + i] from a packed panel (kPacked), or at a[i*rs + p*cs] straight
// from A (rs = lda, cs = 1 as stored; rs = 1, cs = lda transposed). Both run the same
// FMAs in the same order.
template <bool kPacked>
inline void kernel_14x32(int64_t kc, const float* a, int64_t rs_, int64_t cs_, const float* b, float* C, int64_t ldc,
                         float alpha, float beta, const float* bias) {
    __m512 c00 = _mm512_setzero_ps(), c01 = _mm512_setzero_ps(), c10 = _mm512_setzero_ps(), c11 = _mm512_setzero_ps();
    __m512 c20 = _mm512_setzero_ps(), c21 = _mm512_setzero_ps(), c30 = _mm512_setzero_ps(), c31 = _mm512_setzero_ps();
    __m512 c40 = _mm512_setzero_ps(), c41 = _mm512_setzero_ps(), c50 = _mm512_setzero_ps(), c51 = _mm512_setzero_ps();
    __m512 c60 = _mm512_setzero_ps(), c61 = _mm512_setzero_ps(), c70 = _mm512_setzero_ps(), c71 = _mm512_setzero_ps();
    __m512 c80 = _mm512_setzero_ps(), c81 = _mm512_setzero_ps(), c90 = _mm512_setzero_ps(), c91 = _mm512_setzero_ps();
    __m512 c100 = _mm512_setzero_ps(), c101 = _mm512_setzero_ps(), c110 = _mm512_setzero_ps();
    __m512 c111 = _mm512_setzero_ps(), c120 = _mm512_setzero_ps(), c121 = _mm512_setzero_ps();
    __m512 c130 = _mm512_setzero_ps(), c131 = _mm512_setzero_ps();
    const int64_t rs = kPacked ? 1 : rs_, cs = kPacked ? MR : cs_;  // op(A)(i, p) at a[i*rs + p*cs]
    // kc steps. The B panel (kc, 32) is larger than L1 at kc = 512, and comes from L2: each step
    // asks for the B row (and packed A column) kPrefetchSteps ahead. Prefetches past a panel's end
    // touch nothing that matters (they never fault).
    auto steps = [&](int64_t n) {
#pragma GCC unroll 2
        for (int64_t p = 0; p < n; p++) {
            _mm_prefetch(reinterpret_cast<const char*>(b + kPrefetchSteps * NR), _MM_HINT_T0);
            _mm_prefetch(reinterpret_cast<const char*>(b + kPrefetchSteps * NR + 16), _MM_HINT_T0);
            if constexpr (kPacked) _mm_prefetch(reinterpret_cast<const char*>(a + kPrefetchSteps * MR), _MM_HINT_T0);
            const __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
            __m512 ai;
            FG_ROW(0) FG_ROW(1) FG_ROW(2) FG_ROW(3) FG_ROW(4) FG_ROW(5) FG_ROW(6)
            FG_ROW(7) FG_ROW(8) FG_ROW(9) FG_ROW(10) FG_ROW(11) FG_ROW(12) FG_ROW(13)
            a += cs;
            b += NR;
        }
    };
    // C's rows are asked for during the last steps, so that the panels streaming through L1 do
    // not evict them before the stores
    const int64_t tail = std::min<int64_t>(kc, kPrefetchCSteps);
    steps(kc - tail);
    for (int i = 0; i < MR; i++) _mm_prefetch(reinterpret_cast<const char*>(C + i * ldc), _MM_HINT_T0);
    steps(tail);
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    const int mode = beta == 0.0f ? 0 : beta == 1.0f ? 1 : 2;
    store_row(C + 0 * ldc, c00, c01, va, vb, mode, bias);
    store_row(C + 1 * ldc, c10, c11, va, vb, mode, bias);
    store_row(C + 2 * ldc, c20, c21, va, vb, mode, bias);
    store_row(C + 3 * ldc, c30, c31, va, vb, mode, bias);
    store_row(C + 4 * ldc, c40, c41, va, vb, mode, bias);
    store_row(C + 5 * ldc, c50, c51, va, vb, mode, bias);
    store_row(C + 6 * ldc, c60, c61, va, vb, mode, bias);
    store_row(C + 7 * ldc, c70, c71, va, vb, mode, bias);
    store_row(C + 8 * ldc, c80, c81, va, vb, mode, bias);
    store_row(C + 9 * ldc, c90, c91, va, vb, mode, bias);
    store_row(C + 10 * ldc, c100, c101, va, vb, mode, bias);
    store_row(C + 11 * ldc, c110, c111, va, vb, mode, bias);
    store_row(C + 12 * ldc, c120, c121, va, vb, mode, bias);
    store_row(C + 13 * ldc, c130, c131, va, vb, mode, bias);
}

#undef FG_ROW

void kernel_packed(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc, float alpha, float beta,
                   const float* bias) {
    kernel_14x32<true>(kc, Ap, 1, MR, Bp, C, ldc, alpha, beta, bias);
}

void kernel_strided(int64_t kc, const float* A, int64_t rs, int64_t cs, const float* Bp, float* C, int64_t ldc,
                    float alpha, float beta, const float* bias) {
    kernel_14x32<false>(kc, A, rs, cs, Bp, C, ldc, alpha, beta, bias);
}

// A block (168, 512) = 336 KiB in L2. kc = 512 rather than a B panel that fits L1 (kc = 192:
// (192, 32) = 24 KiB): each k block past the first reads and writes all of C once more, and
// for products the size of a GPT's layers (C of 6 to 32 MB) that traffic cost more than
// streaming the B panel from L2. On the 2-core AVX-512 Xeon (48 KiB L1d, 2 MiB L2), medians
// of 3x9 runs of the dev harness, 2 threads, GFLOP/s at kc 192 / 512: 4096x384x1536 281 / 310,
// 4096x1536x384 322 / 347, 384x4096x1536 (A^T, a weight gradient) 261 / 283, 4096x512x2048
// 265 / 321, 4096x384x1152 303 / 293 (the one loss); 1 thread 4096x512x2048 141 / 174;
// kc 768 and 1024 were no better than 512.
const KernelF32 kAvx512 = {"avx512", MR, NR, 168, 512, 4064, kernel_packed, kernel_strided, pack_avx2<MR>, pack_avx2<NR>};

}  // namespace

const KernelF32* kernel_f32_avx512() { return &kAvx512; }

}  // namespace femtogpt::cpu::gemm_detail

#else

namespace femtogpt::cpu::gemm_detail {
const KernelF32* kernel_f32_avx512() { return nullptr; }
}  // namespace femtogpt::cpu::gemm_detail

#endif
