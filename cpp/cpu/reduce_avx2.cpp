// float32 reductions accumulated in double, 4 doubles per register (AVX2+FMA).
// Keep in step with reduce_avx512.cpp.
#include <immintrin.h>

#include "cpu/tensorops_isa.h"

namespace femtogpt::cpu {

namespace {

inline __m256i tail_mask(int64_t left) {  // lanes < left set
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(left < 0 ? 0 : left > 8 ? 8 : left)), lane);
}

template <bool Square>
inline __m256d accumulate(__m256d acc, __m256d d) {
    return Square ? _mm256_fmadd_pd(d, d, acc) : _mm256_add_pd(acc, d);
}

// Sixteen floats (two registers) into four accumulators.
template <bool Square>
inline void add16(__m256d* acc, __m256 x0, __m256 x1) {
    acc[0] = accumulate<Square>(acc[0], _mm256_cvtps_pd(_mm256_castps256_ps128(x0)));
    acc[1] = accumulate<Square>(acc[1], _mm256_cvtps_pd(_mm256_extractf128_ps(x0, 1)));
    acc[2] = accumulate<Square>(acc[2], _mm256_cvtps_pd(_mm256_castps256_ps128(x1)));
    acc[3] = accumulate<Square>(acc[3], _mm256_cvtps_pd(_mm256_extractf128_ps(x1, 1)));
}

template <bool Square>
double sum_impl(const float* x, int64_t n) {
    __m256d acc[4] = {_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd()};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) add16<Square>(acc, _mm256_loadu_ps(x + i), _mm256_loadu_ps(x + i + 8));
    if (i < n) {  // masked lanes load as 0
        add16<Square>(acc, _mm256_maskload_ps(x + i, tail_mask(n - i)),
                      _mm256_maskload_ps(x + i + 8, tail_mask(n - i - 8)));
    }
    __m256d s = _mm256_add_pd(_mm256_add_pd(acc[0], acc[1]), _mm256_add_pd(acc[2], acc[3]));
    alignas(32) double lanes[4];
    _mm256_store_pd(lanes, s);
    return (lanes[0] + lanes[2]) + (lanes[1] + lanes[3]);
}

}  // namespace

double sum_f32_avx2(const float* x, int64_t n, bool square) {
    return square ? sum_impl<true>(x, n) : sum_impl<false>(x, n);
}

// Row after row, each streamed once from start to end: a single sequential
// stream is what the hardware prefetcher serves best once x outgrows the cache
// (column strips and multi-row passes measured slower at (16384, 384)).
void accumulate_rows_f32_avx2(double* acc, const float* x, int64_t rows, int64_t K) {
    for (int64_t m = 0; m < rows; m++) {
        const float* row = x + m * K;
        int64_t j = 0;
        for (; j + 8 <= K; j += 8) {
            __m256 v = _mm256_loadu_ps(row + j);
            _mm256_storeu_pd(acc + j, _mm256_add_pd(_mm256_loadu_pd(acc + j), _mm256_cvtps_pd(_mm256_castps256_ps128(v))));
            _mm256_storeu_pd(acc + j + 4,
                             _mm256_add_pd(_mm256_loadu_pd(acc + j + 4), _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1))));
        }
        for (; j < K; j++) acc[j] += double(row[j]);  // fewer than 8 columns left
    }
}

}  // namespace femtogpt::cpu
