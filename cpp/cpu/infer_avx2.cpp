// AVX2+FMA float32 kernels of cached inference (contracts in infer.h).
//
// linear_rows: inner-product form. A tile of MB rows of x and NB rows of w keeps MB*NB
// accumulators of 8 lanes; lane l sums k = l mod 8 in order, then the lanes are added as
// ((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7)) (horizontal adds, 8, 4 or 1 accumulators at a
// time, all in that association), then the k tail in order (explicit FMAs): the same
// sequence for every tile shape, so a row's result never depends on the rows beside it. Output columns go outermost (a block
// of NB weight rows stays in L1 while every row of x passes over it): weights, the large
// operand, stream from memory once per call.
#include <cmath>

#include "cpu/infer.h"

#if defined(__AVX2__) && defined(__FMA__)
#include "cpu/vecmath_avx2.h"

namespace femtogpt::cpu {

namespace {

// s[j] <- the sum of the 8 lanes of a[j], j < NB (1, 4 or 8), each as
// ((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7)).
template <int NB>
inline void reduce_lanes(const __m256* a, float* s) {
    if constexpr (NB == 8) {
        const __m256 g0 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
        const __m256 g1 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
        _mm256_store_ps(s, _mm256_add_ps(_mm256_permute2f128_ps(g0, g1, 0x20), _mm256_permute2f128_ps(g0, g1, 0x31)));
    } else if constexpr (NB == 4) {
        const __m256 g = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
        _mm_store_ps(s, _mm_add_ps(_mm256_castps256_ps128(g), _mm256_extractf128_ps(g, 1)));
    } else {
        static_assert(NB == 1, "tiles are 1, 4 or 8 columns wide");
        const __m256 h = _mm256_hadd_ps(a[0], a[0]);
        const __m256 g = _mm256_hadd_ps(h, h);
        s[0] = _mm_cvtss_f32(_mm_add_ss(_mm256_castps256_ps128(g), _mm256_extractf128_ps(g, 1)));
    }
}

// out (MB, NB) at columns n.. <- x (MB,K), w rows n..n+NB-1.
// Packed: w is pack_linear_tiles' layout (K a multiple of 8) and rows n..n+NB-1 lie in
// one tile of 8 (NB 8, or 4 from row 0 or 4 of it); the sums are the same either way.
template <int MB, int NB, bool Packed = false>
inline void linear_tile(float* out, int64_t ldo, const float* x, int64_t ldx, const float* w, const float* bias,
                        int64_t n, int64_t K, bool accumulate) {
    __m256 acc[MB][NB];
#pragma GCC unroll 4
    for (int i = 0; i < MB; i++)
#pragma GCC unroll 8
        for (int j = 0; j < NB; j++) acc[i][j] = _mm256_setzero_ps();
    // packed: the tile's chunk of k..k+7 is 64 floats at wn + 8k, row j of the tile at 8j
    const float* wn = Packed ? w + (n & ~int64_t(7)) * K + (n & 7) * 8 : w + n * K;
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) {
        __m256 wv[NB];
#pragma GCC unroll 8
        for (int j = 0; j < NB; j++)
            wv[j] = Packed ? _mm256_load_ps(wn + 8 * k + 8 * j) : _mm256_loadu_ps(wn + j * K + k);
#pragma GCC unroll 4
        for (int i = 0; i < MB; i++) {
            const __m256 xv = _mm256_loadu_ps(x + i * ldx + k);
#pragma GCC unroll 8
            for (int j = 0; j < NB; j++) acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < MB; i++) {
        alignas(32) float s[8];
        reduce_lanes<NB>(acc[i], s);
        if (!Packed && k < K)
            for (int j = 0; j < NB; j++)
                for (int64_t kk = k; kk < K; kk++) s[j] = std::fma(x[i * ldx + kk], wn[j * K + kk], s[j]);
        float* o = out + i * ldo + n;
        if constexpr (NB == 8) {
            __m256 r = _mm256_load_ps(s);
            if (bias) r = _mm256_add_ps(r, _mm256_loadu_ps(bias + n));
            if (accumulate) r = _mm256_add_ps(_mm256_loadu_ps(o), r);
            _mm256_storeu_ps(o, r);
        } else {
            for (int j = 0; j < NB; j++) {
                float r = s[j];
                if (bias) r += bias[n + j];
                o[j] = accumulate ? o[j] + r : r;
            }
        }
    }
}

template <int NB, bool Packed = false>
inline void linear_block(float* out, int64_t ldo, const float* x, int64_t ldx, const float* w, const float* bias,
                         int64_t M, int64_t n, int64_t K, bool accumulate) {
    int64_t m = 0;
    for (; m + 3 <= M; m += 3)
        linear_tile<3, NB, Packed>(out + m * ldo, ldo, x + m * ldx, ldx, w, bias, n, K, accumulate);
    if (M - m == 2) linear_tile<2, NB, Packed>(out + m * ldo, ldo, x + m * ldx, ldx, w, bias, n, K, accumulate);
    if (M - m == 1) linear_tile<1, NB, Packed>(out + m * ldo, ldo, x + m * ldx, ldx, w, bias, n, K, accumulate);
}

// out (D) <- scratch (tk) probabilities (unnormalized), v (tk,D); divides by z.
template <int NCH>
inline void weighted_sum(float* out, const float* p, const float* v, int64_t tk, int64_t D, float inv_z) {
    __m256 acc[NCH];
#pragma GCC unroll 8
    for (int c = 0; c < NCH; c++) acc[c] = _mm256_setzero_ps();
    for (int64_t t = 0; t < tk; t++) {
        const __m256 pt = _mm256_broadcast_ss(p + t);
        const float* vt = v + t * D;
#pragma GCC unroll 8
        for (int c = 0; c < NCH; c++) acc[c] = _mm256_fmadd_ps(pt, _mm256_loadu_ps(vt + 8 * c), acc[c]);
    }
    const __m256 s = _mm256_set1_ps(inv_z);
#pragma GCC unroll 8
    for (int c = 0; c < NCH; c++) _mm256_storeu_ps(out + 8 * c, _mm256_mul_ps(acc[c], s));
}

}  // namespace

void linear_rows_avx2(float* out, int64_t ldo, const float* x, int64_t ldx, const float* w, const float* bias,
                      int64_t M, int64_t n0, int64_t n1, int64_t K, bool accumulate) {
    int64_t n = n0;
    if (M == 1) {
        for (; n + 8 <= n1; n += 8) linear_tile<1, 8>(out, ldo, x, ldx, w, bias, n, K, accumulate);
    } else {
        for (; n + 4 <= n1; n += 4) linear_block<4>(out, ldo, x, ldx, w, bias, M, n, K, accumulate);
    }
    for (; n < n1; n++) linear_block<1>(out, ldo, x, ldx, w, bias, M, n, K, accumulate);
}

void pack_linear_tiles_avx2(float* wp, const float* w, int64_t N, int64_t K) {
    // streaming stores: the packed copy (~40 MB for a small GPT) skips the caches, whose
    // lines it would only evict, and its writes need no reads for ownership
    for (int64_t t = 0; t < N / 8; t++) {
        const float* src = w + t * 8 * K;
        float* dst = wp + t * 8 * K;
        for (int64_t k = 0; k < K; k += 8, dst += 64)
#pragma GCC unroll 8
            for (int j = 0; j < 8; j++) _mm256_stream_ps(dst + 8 * j, _mm256_loadu_ps(src + j * K + k));
    }
    _mm_sfence();
}

void linear_packed_avx2(float* out, int64_t ldo, const float* x, int64_t ldx, const float* wp, const float* bias,
                        int64_t M, int64_t n0, int64_t n1, int64_t K, bool accumulate) {
    // the tiles linear_rows_avx2 would use (8 columns for one row, 4 for several)
    if (M == 1) {
        for (int64_t n = n0; n < n1; n += 8) linear_tile<1, 8, true>(out, ldo, x, ldx, wp, bias, n, K, accumulate);
    } else {
        for (int64_t n = n0; n < n1; n += 4) linear_block<4, true>(out, ldo, x, ldx, wp, bias, M, n, K, accumulate);
    }
}

void attention_cached_avx2(float* out, int64_t ldo, const float* q, int64_t ldq, const float* kt, int64_t ldk,
                           const float* v, int64_t past, int64_t n, int64_t D, float scale, float* scratch) {
    const int64_t D8 = D / 8 * 8;
    const __m256 vscale = _mm256_set1_ps(scale);
    for (int64_t i = 0; i < n; i++) {
        const int64_t tk = past + i + 1;
        const float* qi = q + i * ldq;
        float* o = out + i * ldo;
        // scores of 8 consecutive keys are D vertical multiply-adds on the transposed keys;
        // four such blocks at a time keep four independent chains in flight
        __m256 vmax = _mm256_set1_ps(-INFINITY);
        int64_t t = 0;
        for (; t + 32 <= tk; t += 32) {
            __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(),
                   a3 = _mm256_setzero_ps();
            const float* kj = kt + t;
            for (int64_t j = 0; j < D; j++, kj += ldk) {
                const __m256 qj = _mm256_broadcast_ss(qi + j);
                a0 = _mm256_fmadd_ps(qj, _mm256_loadu_ps(kj), a0);
                a1 = _mm256_fmadd_ps(qj, _mm256_loadu_ps(kj + 8), a1);
                a2 = _mm256_fmadd_ps(qj, _mm256_loadu_ps(kj + 16), a2);
                a3 = _mm256_fmadd_ps(qj, _mm256_loadu_ps(kj + 24), a3);
            }
            a0 = _mm256_mul_ps(a0, vscale);
            a1 = _mm256_mul_ps(a1, vscale);
            a2 = _mm256_mul_ps(a2, vscale);
            a3 = _mm256_mul_ps(a3, vscale);
            _mm256_storeu_ps(scratch + t, a0);
            _mm256_storeu_ps(scratch + t + 8, a1);
            _mm256_storeu_ps(scratch + t + 16, a2);
            _mm256_storeu_ps(scratch + t + 24, a3);
            vmax = _mm256_max_ps(vmax, _mm256_max_ps(_mm256_max_ps(a0, a1), _mm256_max_ps(a2, a3)));
        }
        for (; t < tk; t += 8) {  // the rest, 8 keys (or fewer: masked) at a time
            const __m256i m = avx2::tail_mask(tk - t);
            __m256 a = _mm256_setzero_ps();
            const float* kj = kt + t;
            for (int64_t j = 0; j < D; j++, kj += ldk)
                a = _mm256_fmadd_ps(_mm256_broadcast_ss(qi + j), _mm256_maskload_ps(kj, m), a);
            a = _mm256_mul_ps(a, vscale);
            _mm256_maskstore_ps(scratch + t, m, a);
            vmax = _mm256_max_ps(vmax, _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), a, _mm256_castsi256_ps(m)));
        }
        const float mx = avx2::hmax_ps(vmax);
        // p = exp(s - max), z = sum p
        const __m256 vmx = _mm256_set1_ps(mx);
        __m256 zacc = _mm256_setzero_ps();
        t = 0;
        for (; t + 8 <= tk; t += 8) {
            const __m256 e = avx2::exp_ps(_mm256_sub_ps(_mm256_loadu_ps(scratch + t), vmx));
            _mm256_storeu_ps(scratch + t, e);
            zacc = _mm256_add_ps(zacc, e);
        }
        if (t < tk) {
            const __m256i m = avx2::tail_mask(tk - t);
            const __m256 e = _mm256_and_ps(_mm256_castsi256_ps(m),
                                           avx2::exp_ps(_mm256_sub_ps(_mm256_maskload_ps(scratch + t, m), vmx)));
            _mm256_maskstore_ps(scratch + t, m, e);
            zacc = _mm256_add_ps(zacc, e);
        }
        const float inv_z = 1.0f / avx2::hsum_ps(zacc);
        // out = sum_t p_t v_t / z, in groups of 64 columns held in registers
        int64_t j = 0;
        for (; j + 64 <= D8; j += 64) weighted_sum<8>(o + j, scratch, v + j, tk, D, inv_z);
        switch ((D8 - j) / 8) {
            case 7: weighted_sum<7>(o + j, scratch, v + j, tk, D, inv_z); break;
            case 6: weighted_sum<6>(o + j, scratch, v + j, tk, D, inv_z); break;
            case 5: weighted_sum<5>(o + j, scratch, v + j, tk, D, inv_z); break;
            case 4: weighted_sum<4>(o + j, scratch, v + j, tk, D, inv_z); break;
            case 3: weighted_sum<3>(o + j, scratch, v + j, tk, D, inv_z); break;
            case 2: weighted_sum<2>(o + j, scratch, v + j, tk, D, inv_z); break;
            case 1: weighted_sum<1>(o + j, scratch, v + j, tk, D, inv_z); break;
            default: break;
        }
        for (j = D8; j < D; j++) {
            float s = 0;
            for (int64_t tt = 0; tt < tk; tt++) s = std::fma(scratch[tt], v[tt * D + j], s);
            o[j] = s * inv_z;
        }
    }
}

void layernorm_rows_avx2(float* out, const float* x, const float* weight, const float* bias, int64_t N, int64_t C,
                         double eps) {
    const int64_t Cv = C / 8 * 8;
    const __m256i tm = avx2::tail_mask(C - Cv);
    const __m256 tmf = _mm256_castsi256_ps(tm);
    for (int64_t n = 0; n < N; n++) {
        const float* xr = x + n * C;
        float* o = out + n * C;
        __m256 acc = _mm256_setzero_ps();
        for (int64_t c = 0; c < Cv; c += 8) acc = _mm256_add_ps(acc, _mm256_loadu_ps(xr + c));
        if (Cv < C) acc = _mm256_add_ps(acc, _mm256_maskload_ps(xr + Cv, tm));
        const __m256 vm = _mm256_set1_ps(avx2::hsum_ps(acc) / float(C));
        acc = _mm256_setzero_ps();
        for (int64_t c = 0; c < Cv; c += 8) {
            const __m256 d = _mm256_sub_ps(_mm256_loadu_ps(xr + c), vm);
            acc = _mm256_fmadd_ps(d, d, acc);
        }
        if (Cv < C) {
            const __m256 d = _mm256_and_ps(_mm256_sub_ps(_mm256_maskload_ps(xr + Cv, tm), vm), tmf);
            acc = _mm256_fmadd_ps(d, d, acc);
        }
        const __m256 vs = _mm256_set1_ps(1.0f / std::sqrt(avx2::hsum_ps(acc) / float(C) + float(eps)));
        for (int64_t c = 0; c < C; c += 8) {
            const bool last = c == Cv;  // the masked tail
            __m256 y = _mm256_mul_ps(_mm256_sub_ps(last ? _mm256_maskload_ps(xr + c, tm) : _mm256_loadu_ps(xr + c), vm),
                                     vs);
            if (weight) y = _mm256_mul_ps(y, last ? _mm256_maskload_ps(weight + c, tm) : _mm256_loadu_ps(weight + c));
            if (bias) y = _mm256_add_ps(y, last ? _mm256_maskload_ps(bias + c, tm) : _mm256_loadu_ps(bias + c));
            if (last)
                _mm256_maskstore_ps(o + c, tm, y);
            else
                _mm256_storeu_ps(o + c, y);
        }
    }
}

void gelu_tanh_rows_avx2(float* out, const float* x, int64_t n) {
    // 0.5 x (1 + tanh(u)) = x / (1 + exp(-2u))
    auto gelu8 = [](__m256 v) {
        const __m256 u = _mm256_mul_ps(_mm256_set1_ps(0.7978845608028654f),
                                       _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(0.044715f), _mm256_mul_ps(v, v)), v, v));
        return _mm256_div_ps(v, _mm256_add_ps(_mm256_set1_ps(1.0f), avx2::exp_ps(_mm256_mul_ps(_mm256_set1_ps(-2.0f), u))));
    };
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, gelu8(_mm256_loadu_ps(x + i)));
    if (i < n) {
        const __m256i m = avx2::tail_mask(n - i);
        _mm256_maskstore_ps(out + i, m, gelu8(_mm256_maskload_ps(x + i, m)));
    }
}

}  // namespace femtogpt::cpu

#else  // no AVX2 in this compiler: never selected at run time, defined for the linker

namespace femtogpt::cpu {
void linear_rows_avx2(float*, int64_t, const float*, int64_t, const float*, const float*, int64_t, int64_t, int64_t,
                      int64_t, bool) {}
void pack_linear_tiles_avx2(float*, const float*, int64_t, int64_t) {}
void linear_packed_avx2(float*, int64_t, const float*, int64_t, const float*, const float*, int64_t, int64_t, int64_t,
                        int64_t, bool) {}
void attention_cached_avx2(float*, int64_t, const float*, int64_t, const float*, int64_t, const float*, int64_t,
                           int64_t, int64_t, float, float*) {}
void layernorm_rows_avx2(float*, const float*, const float*, const float*, int64_t, int64_t, double) {}
void gelu_tanh_rows_avx2(float*, const float*, int64_t) {}
}  // namespace femtogpt::cpu

#endif
