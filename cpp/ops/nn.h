// Tensor-level neural-network ops: layernorm, activations, softmax, cross-entropy,
// embedding, dropout. Each validates its tensors (dtype, shape, device) with an
// error naming what it got and what it expected, allocates its outputs, and runs
// the kernel of the tensors' device (cpu/ kernels). Backward functions return
// fresh gradient tensors; they never accumulate.
//
// `reference = true` runs the plain reference kernel instead of the fast one
// (for tests and benchmarks; bound as _core.nn_reference).
#pragma once

#include <optional>
#include <string>
#include <tuple>
#include <utility>

#include "tensor.h"

namespace femtogpt::ops {

using OptTensor = std::optional<Tensor>;

// x (...,C), weight (C) | None, bias (C) | None -> out (...,C), mean (N), rstd (N); N = numel / C
std::tuple<Tensor, Tensor, Tensor> layernorm_forward(const Tensor& x, const OptTensor& weight, const OptTensor& bias,
                                                     double eps, bool reference = false);
// dout (...,C), x (...,C), weight (C) | None, mean (N), rstd (N) -> dx (...,C), dweight (C) | None, dbias (C) | None
// dbias is computed iff has_bias (default: iff weight is given); dweight iff weight is given.
std::tuple<Tensor, OptTensor, OptTensor> layernorm_backward(const Tensor& dout, const Tensor& x,
                                                            const OptTensor& weight, const Tensor& mean,
                                                            const Tensor& rstd, std::optional<bool> has_bias,
                                                            bool reference = false, bool inplace = false);
// inplace: dx is written over dout (a gradient the caller owns alone), which is returned as dx.

// x (any) -> out (same); approximate: "tanh" | "none"
Tensor gelu_forward(const Tensor& x, const std::string& approximate, bool reference = false);
// dout (any), x (same) -> dx (same)
Tensor gelu_backward(const Tensor& dout, const Tensor& x, const std::string& approximate, bool reference = false);
// The same, writing dx over dout (which must own its memory alone: the caller's fresh gradient); returns dout.
Tensor gelu_backward_inplace(Tensor& dout, const Tensor& x, const std::string& approximate);
// The input gradient of out (N,O) = gelu(h) (N,K) @ w^T, w (O,K): dh = (g (N,O) @ w) * gelu'(h),
// written over h, which the caller gives up (nothing else may read it). Where the product is
// made in one pass over O (cpu::gemm_gelu_grad_in_place), each finished tile of g @ w is
// multiplied by gelu'(h) and written over h's tile at once; otherwise g @ w is made a few
// rows at a time (about 4 MiB) into a scratch. No (N,K) temporary ever exists; bitwise the
// values of gelu_backward(g @ w, h) either way. Returns h.
Tensor gelu_linear_backward_input_(Tensor& h, const Tensor& g, const Tensor& w, const std::string& approximate);

// x (any) -> out (same)
Tensor relu_forward(const Tensor& x);
// dout (any), out (same: relu's output) -> dx (same)
Tensor relu_backward(const Tensor& dout, const Tensor& out);

// x (...,C) -> out (...,C), over the last dimension
Tensor softmax_forward(const Tensor& x, bool reference = false);
Tensor softmax_backward(const Tensor& dout, const Tensor& out, bool reference = false);
Tensor log_softmax_forward(const Tensor& x, bool reference = false);
Tensor log_softmax_backward(const Tensor& dout, const Tensor& out, bool reference = false);

// logits (N,V), targets (N) int32|int64 -> loss (() for mean/sum, (N) for none), lse (N)
// mean divides by the number of non-ignored targets; with none, the mean is 0 (torch gives NaN).
std::pair<Tensor, Tensor> cross_entropy_forward(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                                                const std::string& reduction, bool reference = false);
// dloss (() or (N)), logits (N,V), targets (N), lse (N) -> dlogits (N,V)
Tensor cross_entropy_backward(const Tensor& dloss, const Tensor& logits, const Tensor& targets, const Tensor& lse,
                              int64_t ignore_index, const std::string& reduction, bool reference = false);

// idx (any) int32|int64, weight (V,C) -> out (*idx.shape, C)
Tensor embedding_forward(const Tensor& idx, const Tensor& weight);
// dout (*idx.shape, C), idx (any) -> dweight (V,C)
Tensor embedding_backward(const Tensor& dout, const Tensor& idx, int64_t V, bool reference = false);

// x (any) -> out (same); p in [0, 1); the mask is a pure function of (seed, element index)
Tensor dropout_forward(const Tensor& x, double p, int64_t seed, bool reference = false);
Tensor dropout_backward(const Tensor& dout, double p, int64_t seed, bool reference = false);

}  // namespace femtogpt::ops
