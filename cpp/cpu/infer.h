// Kernels of cached GPT inference: linear layers over a few rows, and attention of new
// queries over a KV cache.
//
// Size letters: M rows (tokens), K inputs, N outputs; D head dimension, n new queries,
// past cached keys before them.
//
// Row independence: every output element of linear_rows is summed in an order that
// depends on K only (8 lanes over k, a fixed horizontal sum, then the k tail), never on
// M, N, the row's place in the batch or the thread count. So a prompt's tokens come out
// bitwise the same whether it is generated alone or in a batch, on 1 or n threads.
#pragma once

#include <cstdint>

namespace femtogpt::cpu {

// out (M,N) [row stride ldo] <- x (M,K) [row stride ldx], w (N,K), bias (N) | null
//   out[m,n] = (accumulate ? out[m,n] : 0) + (sum_k x[m,k] w[n,k] + bias[n])
// w is a torch.nn.Linear weight (out_features, in_features); `accumulate` adds a
// residual in place (x = x + linear(h)), rounding as the unfused ops do.
template <typename T>
void linear_rows(T* out, int64_t ldo, const T* x, int64_t ldx, const T* w, const T* bias, int64_t M, int64_t N,
                 int64_t K, bool accumulate);
template <typename T>
void linear_rows_reference(T* out, int64_t ldo, const T* x, int64_t ldx, const T* w, const T* bias, int64_t M,
                           int64_t N, int64_t K, bool accumulate);
// The threads linear_rows runs an (M,N,K) product on (1 inside a parallel region).
int linear_rows_threads(int64_t M, int64_t N, int64_t K);
// AVX2+FMA float32 (infer_avx2.cpp): output columns [n0, n1) only; the driver splits N.
void linear_rows_avx2(float* out, int64_t ldo, const float* x, int64_t ldx, const float* w, const float* bias,
                      int64_t M, int64_t n0, int64_t n1, int64_t K, bool accumulate);

// Decode-step weights in the order the AVX2 kernel reads them: tiles of 8 output rows,
// each tile's 8 rows interleaved in chunks of 8 inputs, so one tile's products read one
// contiguous run of 8K floats (a single stream for the hardware prefetcher, no 4 KiB page
// crossed by 8 streams at once).
//   wp (N/8, K/8, 8, 8) <- w (N,K):  wp[((n/8)*(K/8) + k/8)*64 + (n%8)*8 + k%8] = w[n*K + k]
// N and K must be multiples of kPackTile.
constexpr int64_t kPackTile = 8;
// wp 32-byte aligned.
template <typename T>
void pack_linear_tiles(T* wp, const T* w, int64_t N, int64_t K);
void pack_linear_tiles_avx2(float* wp, const float* w, int64_t N, int64_t K);
// out (M,N) [row stride ldo] <- x (M,K) [row stride ldx], wp packed w (N,K), bias (N) | null:
// linear_rows on packed weights, the same sums in the same order (the same bits). float32
// with AVX2 only (the caller falls back to linear_rows on the unpacked w otherwise).
void linear_packed(float* out, int64_t ldo, const float* x, int64_t ldx, const float* wp, const float* bias,
                   int64_t M, int64_t N, int64_t K, bool accumulate);
// output columns [n0, n1) (multiples of 8) only; the driver splits N.
void linear_packed_avx2(float* out, int64_t ldo, const float* x, int64_t ldx, const float* wp, const float* bias,
                        int64_t M, int64_t n0, int64_t n1, int64_t K, bool accumulate);

// One head of causal attention over a cache whose keys are stored transposed.
// out (n,D) [row stride ldo] <- q (n,D) [row stride ldq], kt (D, ldk), v (past+n, D)
//   key t's element j is kt[j*ldk + t] (ldk >= past+n: a cache of ldk positions), so the
//   scores of consecutive keys are vertical multiply-adds; v rows are contiguous.
//   Query i sits at position past+i and attends keys 0..past+i:
//   out[i] = sum_t softmax_t(scale * q[i].k[t]) v[t]
// scratch: at least past+n floats. Columns of kt at or after past+n are never read.
template <typename T>
void attention_cached(T* out, int64_t ldo, const T* q, int64_t ldq, const T* kt, int64_t ldk, const T* v,
                      int64_t past, int64_t n, int64_t D, T scale, T* scratch);
template <typename T>
void attention_cached_reference(T* out, int64_t ldo, const T* q, int64_t ldq, const T* kt, int64_t ldk, const T* v,
                                int64_t past, int64_t n, int64_t D, T scale);
void attention_cached_avx2(float* out, int64_t ldo, const float* q, int64_t ldq, const float* kt, int64_t ldk,
                           const float* v, int64_t past, int64_t n, int64_t D, float scale, float* scratch);

// Serial layernorm and GELU-tanh for a decode step's few rows. The shared kernels
// (cpu::layernorm_forward, cpu::gelu_forward) open an OpenMP region even when its `if`
// is false, and entering one costs a futex system call (~1.5 us here): 13 per token of a
// 4-layer model, more than its matrix products. Same formulas as those kernels.
// out (N,C) <- x (N,C), weight (C) | null, bias (C) | null
template <typename T>
void layernorm_rows(T* out, const T* x, const T* weight, const T* bias, int64_t N, int64_t C, double eps);
void layernorm_rows_avx2(float* out, const float* x, const float* weight, const float* bias, int64_t N, int64_t C,
                         double eps);
// out (n) <- 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))  (out may alias x)
template <typename T>
void gelu_tanh_rows(T* out, const T* x, int64_t n);
void gelu_tanh_rows_avx2(float* out, const float* x, int64_t n);

}  // namespace femtogpt::cpu
