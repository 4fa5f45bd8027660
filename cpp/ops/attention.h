// Tensor-level attention: argument checks, output allocation, dispatch to the CPU kernels
// (cpu/attention.h). The bindings call these with the GIL released.
#pragma once

#include <string>
#include <tuple>
#include <utility>

#include "tensor.h"

namespace femtogpt::ops {

enum class AttentionImpl { standard, flash };

// "standard" | "flash"; anything else is a ValueError naming both.
AttentionImpl parse_attention_impl(const std::string& name);

// q (B,H,Tq,D), k, v (B,H,Tk,D) -> out (B,H,Tq,D) and what backward needs:
// flash: lse (B,H,Tq); standard: probabilities (B,H,Tq,Tk).
std::pair<Tensor, Tensor> attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, bool is_causal,
                                            double scale, AttentionImpl impl, int64_t block_q, int64_t block_k);

// dout, q, out (B,H,Tq,D), k, v (B,H,Tk,D), saved (from attention_forward) -> dq, dk, dv
std::tuple<Tensor, Tensor, Tensor> attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k,
                                                      const Tensor& v, const Tensor& out, const Tensor& saved,
                                                      bool is_causal, double scale, AttentionImpl impl,
                                                      int64_t block_q, int64_t block_k);

// The attention of a GPT block on its fused projection, heads read and written in place:
// qkv (B,T,3C) holding q, k, v side by side, each (B,T,H,D) with C = H*D -> out (B,T,C) with
// the heads merged, and saved as attention_forward's. Causal; the same kernels (and bits) as
// attention_forward on the permuted q, k, v, without the copies.
std::pair<Tensor, Tensor> attention_qkv_forward(const Tensor& qkv, int64_t n_head, double scale, AttentionImpl impl,
                                                int64_t block_q, int64_t block_k);

// dout, out (B,T,C), qkv (B,T,3C), saved -> dqkv (B,T,3C)
Tensor attention_qkv_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& saved,
                              int64_t n_head, double scale, AttentionImpl impl, int64_t block_q, int64_t block_k);

}  // namespace femtogpt::ops
