// float32 reductions accumulated in double, 8 doubles per register (AVX-512F).
// Keep in step with reduce_avx2.cpp.
#include <immintrin.h>

#include "cpu/tensorops_isa.h"

namespace femtogpt::cpu {

namespace {

inline __mmask16 tail_mask(int64_t left) {  // lanes < left set
    return left <= 0 ? __mmask16(0) : left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1);
}

template <bool Square>
inline __m512d accumulate(__m512d acc, __m512d d) {
    return Square ? _mm512_fmadd_pd(d, d, acc) : _mm512_add_pd(acc, d);
}

// Thirty-two floats (two registers) into four accumulators.
template <bool Square>
inline void add32(__m512d* acc, __m512 x0, __m512 x1) {
    acc[0] = accumulate<Square>(acc[0], _mm512_cvtps_pd(_mm512_castps512_ps256(x0)));
    acc[1] = accumulate<Square>(acc[1], _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x0), 1))));
    acc[2] = accumulate<Square>(acc[2], _mm512_cvtps_pd(_mm512_castps512_ps256(x1)));
    acc[3] = accumulate<Square>(acc[3], _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x1), 1))));
}

template <bool Square>
double sum_impl(const float* x, int64_t n) {
    __m512d acc[4] = {_mm512_setzero_pd(), _mm512_setzero_pd(), _mm512_setzero_pd(), _mm512_setzero_pd()};
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) add32<Square>(acc, _mm512_loadu_ps(x + i), _mm512_loadu_ps(x + i + 16));
    if (i < n) {  // masked lanes load as 0
        add32<Square>(acc, _mm512_maskz_loadu_ps(tail_mask(n - i), x + i),
                      _mm512_maskz_loadu_ps(tail_mask(n - i - 16), x + i + 16));
    }
    __m512d s = _mm512_add_pd(_mm512_add_pd(acc[0], acc[1]), _mm512_add_pd(acc[2], acc[3]));
    alignas(64) double lanes[8];
    _mm512_store_pd(lanes, s);
    return ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6])) + ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]));
}

}  // namespace

double sum_f32_avx512(const float* x, int64_t n, bool square) {
    return square ? sum_impl<true>(x, n) : sum_impl<false>(x, n);
}

// Row after row, each streamed once from start to end (see reduce_avx2.cpp).
void accumulate_rows_f32_avx512(double* acc, const float* x, int64_t rows, int64_t K) {
    for (int64_t m = 0; m < rows; m++) {
        const float* row = x + m * K;
        int64_t j = 0;
        for (; j + 16 <= K; j += 16) {
            __m512 v = _mm512_loadu_ps(row + j);
            _mm512_storeu_pd(acc + j, _mm512_add_pd(_mm512_loadu_pd(acc + j), _mm512_cvtps_pd(_mm512_castps512_ps256(v))));
            _mm512_storeu_pd(acc + j + 8,
                             _mm512_add_pd(_mm512_loadu_pd(acc + j + 8),
                                           _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)))));
        }
        for (; j < K; j++) acc[j] += double(row[j]);  // fewer than 16 columns left
    }
}

}  // namespace femtogpt::cpu
