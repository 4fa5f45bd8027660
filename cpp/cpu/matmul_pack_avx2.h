// Private to the float32 matmul: packing with AVX2, shared by the AVX2 and
// AVX-512 kernel files (include it only from files compiled with -mavx2).
//
// The costly layout is along_k (A as stored, B transposed): each k step takes
// one float from each of R source rows. Eight rows at a time are loaded eight
// k steps wide and transposed in registers (8x8 transpose: 24 shuffles for 64
// floats), instead of 64 scalar gathers.
#pragma once

#include <immintrin.h>

#include "cpu/matmul_kernels.h"

namespace femtogpt::cpu::gemm_detail {

namespace {

// r[i] (row i, 8 columns) -> r[q] (column q, 8 rows).
inline void transpose8x8(__m256 r[8]) {
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

// Stores the first n (compile-time after inlining) floats of v, touching nothing past them.
inline void store_first(float* d, __m256 v, int n) {
    if (n == 8) {
        _mm256_storeu_ps(d, v);
        return;
    }
    __m128 x = _mm256_castps256_ps128(v);
    if (n >= 4) {
        _mm_storeu_ps(d, x);
        d += 4;
        n -= 4;
        x = _mm256_extractf128_ps(v, 1);
    }
    if (n >= 2) {
        _mm_storel_pi(reinterpret_cast<__m64*>(d), x);
        d += 2;
        n -= 2;
        x = _mm_movehl_ps(x, x);
    }
    if (n >= 1) _mm_store_ss(d, x);
}

// One full panel, along_k: dst[p*R + r] = src[r*ld + p] for r < R, p < k.
template <int R>
inline void pack_panel_along_k_avx2(float* dst, const float* src, int64_t ld, int64_t k) {
    constexpr int G = (R + 7) / 8;
    int64_t p = 0;
    for (; p + 8 <= k; p += 8) {
#pragma GCC unroll 4
        for (int g = 0; g < G; g++) {
            const int rows = R - 8 * g < 8 ? R - 8 * g : 8;
            __m256 r[8];
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++)
                r[i] = i < rows ? _mm256_loadu_ps(src + (8 * g + i) * ld + p) : _mm256_setzero_ps();
            transpose8x8(r);
#pragma GCC unroll 8
            for (int q = 0; q < 8; q++) store_first(dst + (p + q) * R + 8 * g, r[q], rows);
        }
    }
    for (; p < k; p++)
        for (int r = 0; r < R; r++) dst[p * R + r] = src[r * ld + p];
}

// Copies R (a compile-time constant) floats, in 8-, 4-, 2- and 1-float moves.
template <int R>
inline void copy_lanes(float* d, const float* s) {
    int r = 0;
    for (; r + 8 <= R; r += 8) _mm256_storeu_ps(d + r, _mm256_loadu_ps(s + r));
    if (R - r >= 4) {
        _mm_storeu_ps(d + r, _mm_loadu_ps(s + r));
        r += 4;
    }
    if (R - r >= 2) {
        // two floats as one 64-bit move (loadl/storel_epi64: no alignment asked, unlike load_sd on a double*)
        _mm_storel_epi64(reinterpret_cast<__m128i*>(d + r), _mm_loadl_epi64(reinterpret_cast<const __m128i*>(s + r)));
        r += 2;
    }
    if (R - r >= 1) _mm_store_ss(d + r, _mm_load_ss(s + r));
}

// Full panels, !along_k: dst[q*R*k + p*R + r] = src[p*ld + q*R + r]. The k step is the
// outer loop so each source row is read once, front to back.
template <int R>
inline void pack_panels_across_k_avx2(float* dst, const float* src, int64_t ld, int64_t panels, int64_t k) {
    for (int64_t p = 0; p < k; p++) {
        const float* s = src + p * ld;
        float* d = dst + p * R;
        for (int64_t q = 0; q < panels; q++) copy_lanes<R>(d + q * R * k, s + q * R);
    }
}

template <int R>
void pack_avx2(float* dst, const float* src, int64_t ld, bool along_k, int64_t lanes, int64_t k) {
    if (!along_k) {
        const int64_t full = lanes / R;
        pack_panels_across_k_avx2<R>(dst, src, ld, full, k);
        if (full * R < lanes) pack_plain<R>(dst + full * R * k, src + full * R, ld, false, lanes - full * R, k);
        return;
    }
    int64_t l0 = 0;
    for (; l0 + R <= lanes; l0 += R, dst += R * k) pack_panel_along_k_avx2<R>(dst, src + l0 * ld, ld, k);
    if (l0 < lanes) pack_plain<R>(dst, src + l0 * ld, ld, true, lanes - l0, k);
}

}  // namespace

}  // namespace femtogpt::cpu::gemm_detail
