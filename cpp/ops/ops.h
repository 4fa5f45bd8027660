// Tensor-level ops: each validates its arguments (shapes, dtypes, devices) with
// errors a Python user can act on, allocates outputs, and runs the kernel of the
// tensors' device. The bindings call these with the GIL released.
#pragma once

#include <optional>

#include "tensor.h"

namespace femtogpt::ops {

// a (M,K) or (B,M,K) [stored transposed when trans_a], b (K,N) or (B,K,N) [same for trans_b]
// -> out (M,N) or (B,M,N). A 3-D a with a 2-D b shares b across the batch.
// With `out` given, out = alpha * a@b + beta * out in place; otherwise beta must be 0.
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b, const std::optional<Tensor>& out,
              double alpha, double beta);

}  // namespace femtogpt::ops
