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
// AVX2+FMA float32 (infer_avx2.cpp): output columns [n0, n1) only; the driver splits N.
void linear_rows_avx2(float* out, int64_t ldo, const float* x, int64_t ldx, const float* w, const float* bias,
                      int64_t M, int64_t n0, int64_t n1, int64_t K, bool accumulate);

// One head of causal attention over a cache.
// out (n,D) [row stride ldo] <- q (n,D) [row stride ldq], k (past+n,D), v (past+n,D) (rows contiguous)
//   query i sits at position past+i and attends keys 0..past+i:
//   out[i] = sum_t softmax_t(scale * q[i].k[t]) v[t]
// scratch: at least past+n floats.
template <typename T>
void attention_cached(T* out, int64_t ldo, const T* q, int64_t ldq, const T* k, const T* v, int64_t past, int64_t n,
                      int64_t D, T scale, T* scratch);
template <typename T>
void attention_cached_reference(T* out, int64_t ldo, const T* q, int64_t ldq, const T* k, const T* v, int64_t past,
                                int64_t n, int64_t D, T scale);
void attention_cached_avx2(float* out, int64_t ldo, const float* q, int64_t ldq, const float* k, const float* v,
                           int64_t past, int64_t n, int64_t D, float scale, float* scratch);

}  // namespace femtogpt::cpu
