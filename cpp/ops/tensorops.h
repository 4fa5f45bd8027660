// Tensor-level plumbing ops: elementwise arithmetic with suffix broadcasting,
// reductions, layout (permute, slice, concat), the fused AdamW step, gradient
// clipping helpers, and token sampling. Each validates its arguments (ValueError
// for shapes and values, TypeError for dtypes), allocates its output from the
// pool and runs the kernel of its tensors' device (only the CPU has kernels).
//
// Broadcasting (add, mul): b's shape equals a's shape, or, after dropping its
// leading 1s, is a suffix of a's shape (bias (C) onto (N,C); (T,C) onto
// (B,T,C)), or b has one element (of any shape). The result has a's shape. Anything else is a ValueError naming both shapes (the Python side
// falls back to numpy for general broadcasting).
#pragma once

#include <optional>
#include <vector>

#include "tensor.h"

namespace femtogpt::ops {

// ---- elementwise (float32 / float64) ----
Tensor add(const Tensor& a, const Tensor& b, double alpha);  // a + alpha * b
Tensor mul(const Tensor& a, const Tensor& b);                // a * b
Tensor scale(const Tensor& a, double s);                     // a * s
void add_(const Tensor& dst, const Tensor& src, double alpha);  // dst += alpha * src, same shapes
// ---- any dtype ----
void fill_(const Tensor& dst, double value);      // every element = value (cast to dst's dtype)
void copy_(const Tensor& dst, const Tensor& src);  // same shapes and dtypes

// ---- reductions (float32 / float64; deterministic, double accumulation) ----
// Sums x over its leading dimensions so the result has `shape`, which (after
// dropping its leading 1s) must be a suffix of x's shape; () sums everything.
Tensor sum_to_suffix(const Tensor& x, const Shape& shape);
Tensor sum_all(const Tensor& x);   // 0-D
Tensor mean_all(const Tensor& x);  // 0-D; NaN for an empty x

// ---- layout (any dtype; results contiguous copies) ----
// out.shape[i] = x.shape[dims[i]]; dims a permutation of 0..ndim-1 (negative
// entries count from the end), ndim <= 6.
Tensor permute(const Tensor& x, const std::vector<int64_t>& dims);
// x[..., start:start+length, ...] along dim (negative counts from the end);
// 0 <= start, 0 <= length, start + length <= x.shape[dim].
Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t length);
// zeros of full_shape with grad at [..., start:start+grad.shape[dim], ...]: the gradient of slice.
Tensor slice_backward(const Tensor& grad, const Shape& full_shape, int64_t dim, int64_t start);
// The tensors joined along dim; same dtype, rank, and shape except along dim.
Tensor concat(const std::vector<Tensor>& xs, int64_t dim);

// ---- optimizer ----
// One AdamW step (see cpu/optim.h for the formula) over every parameter, in place.
// params[i], grads[i], exp_avg[i], exp_avg_sq[i] share shape and float dtype;
// weight_decays[i] is param i's decay; step >= 1 is the step being taken (1 first).
void adamw_step(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                const std::vector<Tensor>& exp_avg, const std::vector<Tensor>& exp_avg_sq, double lr, double beta1,
                double beta2, double eps, const std::vector<double>& weight_decays, int64_t step);
// Sum of the squares of every element of every tensor, in double (deterministic).
double grad_norm_sq(const std::vector<Tensor>& tensors);
// Every tensor *= s, in place.
void scale_all_(const std::vector<Tensor>& tensors, double s);

// ---- sampling (see cpu/sampling.h for the exact semantics) ----
// logits (B,V) float -> tokens (B) int64; rng_state (B) int64, advanced in place,
// may be absent only when temperature == 0.
Tensor sample_tokens(const Tensor& logits, double temperature, int64_t top_k, double top_p,
                     const std::optional<Tensor>& rng_state);
Tensor argmax(const Tensor& x);  // x (B,V) float -> (B) int64
// (n) int64 starting states for sample_tokens: row b gets the (b+1)-th output of splitmix64 seeded with seed.
Tensor rng_state(uint64_t seed, int64_t n);

}  // namespace femtogpt::ops
