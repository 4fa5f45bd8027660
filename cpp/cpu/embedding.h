// Token (or position) embedding: a row lookup and its scatter-add gradient.
//
// Sizes: n indices (any shape, flattened), V rows in the table, C channels.
// Indices must already be in [0, V): the tensor-level op checks them first.
#pragma once

#include <cstdint>

namespace femtogpt::cpu {

// out (n,C) <- idx (n), weight (V,C): out[i] = weight[idx[i]]
template <typename T, typename I>
void embedding_forward(T* out, const I* idx, const T* weight, int64_t n, int64_t C);

// dweight (V,C) <- dout (n,C), idx (n): dweight[v] = sum over i with idx[i] == v of dout[i]
// Written (zeros where no index points), not accumulated. Threads split the
// channels; every thread walks all indices in order, so each dweight element is
// summed in index order by one thread: race-free, and bitwise the same for any
// thread count, repeated indices included.
template <typename T, typename I>
void embedding_backward(T* dweight, const T* dout, const I* idx, int64_t n, int64_t V, int64_t C);
template <typename T, typename I>
void embedding_backward_reference(T* dweight, const T* dout, const I* idx, int64_t n, int64_t V, int64_t C);

}  // namespace femtogpt::cpu
