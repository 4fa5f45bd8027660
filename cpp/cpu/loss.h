// Cross-entropy of logits against integer targets, fused with log-softmax.
//
// Sizes: N rows, V classes (the vocabulary). Only the logits are ever
// materialized: forward saves the per-row log-sum-exp (lse), and backward
// recomputes softmax = exp(logit - lse) on the fly. Targets must already be
// valid (in [0, V) or equal to ignore_index): the tensor-level op checks them
// before any kernel runs. Rows whose target is ignore_index get loss 0 and
// gradient 0; their lse is still computed.
#pragma once

#include <cstdint>

namespace femtogpt::cpu {

// losses (N), lse (N) <- logits (N,V), targets (N)
// losses[i] = lse[i] - logits[i, targets[i]] (0 where targets[i] == ignore_index)
template <typename T, typename I>
void cross_entropy_forward(T* losses, T* lse, const T* logits, const I* targets, int64_t N, int64_t V,
                           int64_t ignore_index);
template <typename T, typename I>
void cross_entropy_forward_reference(T* losses, T* lse, const T* logits, const I* targets, int64_t N, int64_t V,
                                     int64_t ignore_index);

// dlogits (N,V) <- g (N, row stride g_stride: 0 repeats g[0]), logits (N,V), targets (N), lse (N)
// dlogits[i, j] = g[i] * (exp(logits[i, j] - lse[i]) - [j == targets[i]]); 0 in ignored rows.
// g is the loss gradient of each row (dloss, dloss / count for mean).
template <typename T, typename I>
void cross_entropy_backward(T* dlogits, const T* g, int64_t g_stride, const T* logits, const I* targets, const T* lse,
                            int64_t N, int64_t V, int64_t ignore_index);
template <typename T, typename I>
void cross_entropy_backward_reference(T* dlogits, const T* g, int64_t g_stride, const T* logits, const I* targets,
                                      const T* lse, int64_t N, int64_t V, int64_t ignore_index);

// AVX2+FMA float32 kernels (loss_avx2.cpp); same contract.
template <typename I>
void cross_entropy_forward_avx2(float* losses, float* lse, const float* logits, const I* targets, int64_t N,
                                int64_t V, int64_t ignore_index);
template <typename I>
void cross_entropy_backward_avx2(float* dlogits, const float* g, int64_t g_stride, const float* logits,
                                 const I* targets, const float* lse, int64_t N, int64_t V, int64_t ignore_index);

}  // namespace femtogpt::cpu
