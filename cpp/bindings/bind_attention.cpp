// Attention: standard (reference) and flash, forward and backward.
#include "bindings/bindings.h"
#include "ops/attention.h"

namespace femtogpt::bindings {

void register_attention(py::module_& m) {
    m.def("attention_forward", [](const Tensor& q, const Tensor& k, const Tensor& v, bool is_causal, double scale,
                                  const std::string& impl, int64_t block_q, int64_t block_k) {
        ops::AttentionImpl which = ops::parse_attention_impl(impl);
        nogil release;
        auto [out, saved] = ops::attention_forward(q, k, v, is_causal, scale, which, block_q, block_k);
        return std::make_tuple(out, saved);
    }, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("is_causal"), py::arg("scale"),
       py::arg("impl") = "flash", py::arg("block_q") = 64, py::arg("block_k") = 64,
       "Scaled dot-product attention. q (B,H,Tq,D), k and v (B,H,Tk,D) -> (out (B,H,Tq,D), saved).\n"
       "saved is the log-sum-exp (B,H,Tq) for impl='flash', the probabilities (B,H,Tq,Tk) for 'standard'.\n"
       "Causal attention aligns the queries to the end of the keys (needs Tq <= Tk).");
    m.def("attention_backward", [](const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                                   const Tensor& out, const Tensor& saved, bool is_causal, double scale,
                                   const std::string& impl, int64_t block_q, int64_t block_k) {
        ops::AttentionImpl which = ops::parse_attention_impl(impl);
        nogil release;
        return ops::attention_backward(dout, q, k, v, out, saved, is_causal, scale, which, block_q, block_k);
    }, py::arg("dout"), py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"), py::arg("saved"),
       py::arg("is_causal"), py::arg("scale"), py::arg("impl") = "flash", py::arg("block_q") = 64,
       py::arg("block_k") = 64,
       "Gradients of attention_forward: (dq, dk, dv) from dout and what the forward returned.");
    m.def("attention_qkv_forward", [](const Tensor& qkv, int64_t n_head, double scale, const std::string& impl,
                                      int64_t block_q, int64_t block_k) {
        ops::AttentionImpl which = ops::parse_attention_impl(impl);
        nogil release;
        auto [out, saved] = ops::attention_qkv_forward(qkv, n_head, scale, which, block_q, block_k);
        return std::make_tuple(out, saved);
    }, py::arg("qkv"), py::arg("n_head"), py::arg("scale"), py::arg("impl") = "flash", py::arg("block_q") = 64,
       py::arg("block_k") = 64,
       "Causal attention on a fused projection, heads read in place: qkv (B,T,3C) (q, k, v side by side,\n"
       "each (B,T,H,D)) -> (out (B,T,C) with the heads merged, saved as attention_forward's).");
    m.def("attention_qkv_backward", [](const Tensor& dout, const Tensor& qkv, const Tensor& out,
                                       const Tensor& saved, int64_t n_head, double scale, const std::string& impl,
                                       int64_t block_q, int64_t block_k) {
        ops::AttentionImpl which = ops::parse_attention_impl(impl);
        nogil release;
        return ops::attention_qkv_backward(dout, qkv, out, saved, n_head, scale, which, block_q, block_k);
    }, py::arg("dout"), py::arg("qkv"), py::arg("out"), py::arg("saved"), py::arg("n_head"), py::arg("scale"),
       py::arg("impl") = "flash", py::arg("block_q") = 64, py::arg("block_k") = 64,
       "Gradient of attention_qkv_forward: dqkv (B,T,3C) from dout (B,T,C) and what the forward returned.");
}

}  // namespace femtogpt::bindings
