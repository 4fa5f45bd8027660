// GELU-tanh on AVX2+FMA, float32. Same math as the generic path:
//   s = 1 / (1 + exp(-2u)) = 0.5 (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3)
//   gelu(x) = x s,  gelu'(x) = s + 2 x s (1 - s) du/dx
// with exp from vecmath_avx2.h; within ~2e-6 relative of the float64 formula
// (held by tests/test_nn_ops.py on a dense sweep).
#include <algorithm>

#include "cpu/activation.h"
#include "cpu/vecmath_avx2.h"
#include "parallel.h"

namespace femtogpt::cpu {

namespace {

constexpr int64_t kParallelElems = 32768;
constexpr int64_t kBlock = 4096;  // elements per OpenMP work item

inline __m256 gelu_u(__m256 x) {
    const __m256 x2 = _mm256_mul_ps(x, x);
    const __m256 inner = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(0.044715f), x2), x, x);
    return _mm256_mul_ps(_mm256_set1_ps(0.7978845608028654f), inner);
}

// out (8) <- x (8)
inline __m256 gelu8(__m256 x) {
    const __m256 e = avx2::exp_ps(_mm256_mul_ps(_mm256_set1_ps(-2.0f), gelu_u(x)));
    return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

// dx (8) <- dout (8), x (8)
inline __m256 gelu_grad8(__m256 g, __m256 x) {
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256 x2 = _mm256_mul_ps(x, x);
    const __m256 e = avx2::exp_ps(_mm256_mul_ps(_mm256_set1_ps(-2.0f), gelu_u(x)));
    const __m256 s = _mm256_div_ps(one, _mm256_add_ps(one, e));
    // du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2)
    const __m256 du = _mm256_mul_ps(_mm256_set1_ps(0.7978845608028654f),
                                    _mm256_fmadd_ps(_mm256_set1_ps(3 * 0.044715f), x2, one));
    const __m256 t = _mm256_mul_ps(_mm256_mul_ps(_mm256_add_ps(x, x), s), _mm256_mul_ps(_mm256_sub_ps(one, s), du));
    return _mm256_mul_ps(g, _mm256_add_ps(s, t));
}

}  // namespace

// out (n) <- x (n)
void gelu_tanh_forward_avx2(float* out, const float* x, int64_t n) {
    const int64_t nblocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (n > kParallelElems)
    for (int64_t b = 0; b < nblocks; b++) {
        const int64_t end = std::min(n, (b + 1) * kBlock);
        int64_t i = b * kBlock;
        for (; i + 8 <= end; i += 8) _mm256_storeu_ps(out + i, gelu8(_mm256_loadu_ps(x + i)));
        if (i < end) {
            const __m256i m = avx2::tail_mask(end - i);
            _mm256_maskstore_ps(out + i, m, gelu8(_mm256_maskload_ps(x + i, m)));
        }
    }
}

// dx (n) <- dout (n), x (n)
void gelu_tanh_backward_avx2(float* dx, const float* dout, const float* x, int64_t n) {
    const int64_t nblocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (n > kParallelElems)
    for (int64_t b = 0; b < nblocks; b++) {
        const int64_t end = std::min(n, (b + 1) * kBlock);
        int64_t i = b * kBlock;
        for (; i + 8 <= end; i += 8)
            _mm256_storeu_ps(dx + i, gelu_grad8(_mm256_loadu_ps(dout + i), _mm256_loadu_ps(x + i)));
        if (i < end) {
            const __m256i m = avx2::tail_mask(end - i);
            _mm256_maskstore_ps(dx + i, m, gelu_grad8(_mm256_maskload_ps(dout + i, m), _mm256_maskload_ps(x + i, m)));
        }
    }
}

}  // namespace femtogpt::cpu
