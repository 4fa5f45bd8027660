// Tensor-level ops: each validates its arguments (shapes, dtypes, devices) with
// errors a Python user can act on, allocates outputs, and runs the kernel of the
// tensors' device. The bindings call these with the GIL released.
#pragma once

#include <optional>
#include <string>

#include "tensor.h"

namespace femtogpt::ops {

// a (M,K) or (B,M,K) [stored transposed when trans_a], b (K,N) or (B,K,N) [same for trans_b]
// -> out (M,N) or (B,M,N). A 3-D a with a 2-D b shares b across the batch.
// With `out` given, out = alpha * a@b + beta * out in place; otherwise beta must be 0.
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b, const std::optional<Tensor>& out,
              double alpha, double beta);

// Work fused into a 2-D matmul (cpu::GemmFusion): GELU ("tanh" or "none", as F.gelu's
// approximate) applied to a and/or b before the product, a bias (N) added after it, the
// row sums of op(a) (M) written into a_row_sums, and the product multiplied by GELU's
// derivative (form gelu_grad) at gelu_grad_of (M,N): a GELU's backward, which may write
// over gelu_grad_of itself (out = gelu_grad_of) where cpu::gemm_gelu_grad_in_place allows.
struct MatmulFusion {
    std::optional<Tensor> bias;
    std::optional<std::string> gelu_a, gelu_b;
    std::optional<Tensor> a_row_sums;
    std::optional<std::string> gelu_grad;
    std::optional<Tensor> gelu_grad_of;
    bool any() const { return bias || gelu_a || gelu_b || a_row_sums || gelu_grad || gelu_grad_of; }
};

// out (M,N) = alpha * gelu?(a) @ gelu?(b) + beta * out + bias: matmul's contract, 2-D only.
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b, const std::optional<Tensor>& out,
              double alpha, double beta, const MatmulFusion& fusion);

}  // namespace femtogpt::ops
