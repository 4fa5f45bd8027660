// Dropout on AVX2, float32: the splitmix64 mask of dropout.h, 4 counters per
// 64-bit vector (the 64-bit multiplies built from 32-bit ones, AVX2 having no
// vpmullq), two vectors per 8 floats. Bit-identical to the scalar hash.
#include <algorithm>

#include "cpu/dropout.h"
#include "cpu/vecmath_avx2.h"
#include "parallel.h"

namespace femtogpt::cpu {

namespace {

constexpr int64_t kParallelElems = 32768;
constexpr int64_t kBlock = 4096;  // elements per OpenMP work item
constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;

// Low 64 bits of a * c per lane, for a constant c.
inline __m256i mul64(__m256i a, uint64_t c) {
    const __m256i clo = _mm256_set1_epi64x(int64_t(c & 0xffffffffu)), chi = _mm256_set1_epi64x(int64_t(c >> 32));
    const __m256i lo = _mm256_mul_epu32(a, clo);  // a_lo * c_lo, full 64 bits
    const __m256i cross = _mm256_add_epi64(_mm256_mul_epu32(_mm256_srli_epi64(a, 32), clo), _mm256_mul_epu32(a, chi));
    return _mm256_add_epi64(lo, _mm256_slli_epi64(cross, 32));
}

// splitmix64 finalizer of the counter states z; returns (hash >> 11) per lane (< 2^53).
inline __m256i mix53(__m256i z) {
    z = mul64(_mm256_xor_si256(z, _mm256_srli_epi64(z, 30)), 0xBF58476D1CE4E5B9ull);
    z = mul64(_mm256_xor_si256(z, _mm256_srli_epi64(z, 27)), 0x94D049BB133111EBull);
    z = _mm256_xor_si256(z, _mm256_srli_epi64(z, 31));
    return _mm256_srli_epi64(z, 11);
}

}  // namespace

// out (n) <- x (n)
void dropout_forward_avx2(float* out, const float* x, int64_t n, double p, uint64_t seed) {
    const uint64_t thr = dropout_threshold(p);
    const __m256i vthr = _mm256_set1_epi64x(int64_t(thr));  // < 2^53: signed compares are exact
    const __m256 scale = _mm256_set1_ps(float(1.0 / (1.0 - p)));
    const float sscale = float(1.0 / (1.0 - p));
    const __m256i lane = _mm256_setr_epi64x(int64_t(kGolden), int64_t(2 * kGolden), int64_t(3 * kGolden),
                                            int64_t(4 * kGolden));  // counters i+1 .. i+4
    const __m256i step4 = _mm256_set1_epi64x(int64_t(4 * kGolden));
    const __m256i order = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);
    const int64_t nblocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (n > kParallelElems)
    for (int64_t b = 0; b < nblocks; b++) {
        const int64_t end = std::min(n, (b + 1) * kBlock);
        int64_t i = b * kBlock;
        // z = seed + (i + 1) * golden for the 4 lanes i .. i+3; the next 4 one step on
        __m256i z0 = _mm256_add_epi64(_mm256_set1_epi64x(int64_t(seed + uint64_t(i) * kGolden)), lane);
        for (; i + 8 <= end; i += 8) {
            const __m256i z1 = _mm256_add_epi64(z0, step4);
            // drop where thr > hash53: 64-bit masks of lanes 0-3 and 4-7 packed into one 8 x 32-bit mask
            const __m256i d0 = _mm256_cmpgt_epi64(vthr, mix53(z0));
            const __m256i d1 = _mm256_cmpgt_epi64(vthr, mix53(z1));
            const __m256 packed = _mm256_shuffle_ps(_mm256_castsi256_ps(d0), _mm256_castsi256_ps(d1), 0x88);
            const __m256 drop = _mm256_castsi256_ps(_mm256_permutevar8x32_epi32(_mm256_castps_si256(packed), order));
            _mm256_storeu_ps(out + i, _mm256_andnot_ps(drop, _mm256_mul_ps(_mm256_loadu_ps(x + i), scale)));
            z0 = _mm256_add_epi64(z1, step4);
        }
        for (; i < end; i++) out[i] = (dropout_hash(seed, uint64_t(i)) >> 11) >= thr ? x[i] * sscale : 0.0f;
    }
}

}  // namespace femtogpt::cpu
