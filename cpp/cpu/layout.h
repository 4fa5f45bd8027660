// Layout kernels: permute (a transposing copy), strided block copies (slice,
// its gradient, concat). They move elements without looking at them, so they
// work on any dtype through its element size (4 or 8 bytes).
#pragma once

#include <cstddef>
#include <cstdint>

namespace femtogpt::cpu {

constexpr int kMaxPermuteDims = 6;

// out (shape[dims[0]], ..., shape[dims[ndim-1]]) <- in (shape), contiguous both;
// dims a permutation of 0..ndim-1, ndim <= kMaxPermuteDims, elem_size 4 or 8.
// Size-1 axes are dropped and axes that stay adjacent are merged first. When the
// last axis stays last (the attention swap (B,T,H,D) <-> (B,H,T,D) of axes 1 and
// 2) the copy is a sequence of contiguous row copies; otherwise it transposes
// 32x32 tiles between the input's and the output's contiguous axes.
void permute(void* out, const void* in, const int64_t* shape, const int* dims, int ndim, size_t elem_size);
void permute_reference(void* out, const void* in, const int64_t* shape, const int* dims, int ndim,
                       size_t elem_size);

// For b in [0, nblocks): dst[b*dst_stride : +block_bytes] <- src[b*src_stride : +block_bytes]
// (strides in bytes), in parallel for large copies. slice, slice_backward and
// concat are all this, on a tensor viewed as (outer, D, inner).
void copy_blocks(void* dst, int64_t dst_stride, const void* src, int64_t src_stride, int64_t nblocks,
                 int64_t block_bytes);

}  // namespace femtogpt::cpu
