// The nn op pairs (forward returns what backward needs; backward returns fresh
// gradients): layernorm, gelu, relu, softmax, log_softmax, cross_entropy,
// embedding, dropout. The same functions on the plain reference kernels live in
// the submodule _core.nn_reference (for tests and benchmarks).
#include "bindings/bindings.h"
#include "ops/nn.h"

namespace femtogpt::bindings {

namespace {

// Registers the ops with a reference switch on `m`, running the reference kernels when `ref`.
void register_pairs(py::module_& m, bool ref) {
    m.def("layernorm_forward", [ref](const Tensor& x, std::optional<Tensor> weight, std::optional<Tensor> bias,
                                     double eps) {
        nogil release;
        return ops::layernorm_forward(x, weight, bias, eps, ref);
    }, py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("eps") = 1e-5,
       "x (...,C), weight (C) | None, bias (C) | None -> (out (...,C), mean (N,), rstd (N,)), N = numel / C");
    m.def("layernorm_backward", [ref](const Tensor& dout, const Tensor& x, std::optional<Tensor> weight,
                                      const Tensor& mean, const Tensor& rstd, std::optional<bool> has_bias) {
        nogil release;
        return ops::layernorm_backward(dout, x, weight, mean, rstd, has_bias, ref);
    }, py::arg("dout"), py::arg("x"), py::arg("weight"), py::arg("mean"), py::arg("rstd"),
       py::arg("has_bias") = py::none(),
       "-> (dx, dweight | None, dbias | None); dbias is computed iff has_bias (default: iff weight is given)");
    m.def("gelu_forward", [ref](const Tensor& x, const std::string& approximate) {
        nogil release;
        return ops::gelu_forward(x, approximate, ref);
    }, py::arg("x"), py::arg("approximate") = "tanh", "approximate: 'tanh' (GPT-2) or 'none' (exact erf)");
    m.def("gelu_backward", [ref](const Tensor& dout, const Tensor& x, const std::string& approximate) {
        nogil release;
        return ops::gelu_backward(dout, x, approximate, ref);
    }, py::arg("dout"), py::arg("x"), py::arg("approximate") = "tanh");
    if (!ref) {
        m.def("layernorm_backward_", [](const Tensor& dout, const Tensor& x, std::optional<Tensor> weight,
                                        const Tensor& mean, const Tensor& rstd, std::optional<bool> has_bias) {
            nogil release;
            return ops::layernorm_backward(dout, x, weight, mean, rstd, has_bias, false, true);
        }, py::arg("dout"), py::arg("x"), py::arg("weight"), py::arg("mean"), py::arg("rstd"),
           py::arg("has_bias") = py::none(),
           "layernorm_backward writing dx over dout (a gradient the caller owns alone); dx is dout");
        m.def("gelu_backward_", [](Tensor& dout, const Tensor& x, const std::string& approximate) {
            nogil release;
            return ops::gelu_backward_inplace(dout, x, approximate);
        }, py::arg("dout"), py::arg("x"), py::arg("approximate") = "tanh",
           "gelu_backward writing dx over dout (a gradient the caller owns alone); returns dout");
        m.def("gelu_linear_backward_input_", [](Tensor& h, const Tensor& g, const Tensor& w,
                                                const std::string& approximate) {
            nogil release;
            return ops::gelu_linear_backward_input_(h, g, w, approximate);
        }, py::arg("h"), py::arg("g"), py::arg("w"), py::arg("approximate") = "tanh",
           "dh = (g (N,O) @ w (O,K)) * gelu'(h (N,K)) written over h (which the caller gives up), tile by\n"
           "tile or a few rows at a time: the input gradient of gelu(h) @ w^T without an (N,K) temporary;\n"
           "returns h");
    }
    m.def("softmax_forward", [ref](const Tensor& x) {
        nogil release;
        return ops::softmax_forward(x, ref);
    }, py::arg("x"), "softmax over the last dimension");
    m.def("softmax_backward", [ref](const Tensor& dout, const Tensor& out) {
        nogil release;
        return ops::softmax_backward(dout, out, ref);
    }, py::arg("dout"), py::arg("out"));
    m.def("log_softmax_forward", [ref](const Tensor& x) {
        nogil release;
        return ops::log_softmax_forward(x, ref);
    }, py::arg("x"), "log-softmax over the last dimension");
    m.def("log_softmax_backward", [ref](const Tensor& dout, const Tensor& out) {
        nogil release;
        return ops::log_softmax_backward(dout, out, ref);
    }, py::arg("dout"), py::arg("out"));
    m.def("cross_entropy_forward", [ref](const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                                         const std::string& reduction) {
        nogil release;
        return ops::cross_entropy_forward(logits, targets, ignore_index, reduction, ref);
    }, py::arg("logits"), py::arg("targets"), py::arg("ignore_index") = -100, py::arg("reduction") = "mean",
       "logits (N,V), targets (N,) int32|int64 -> (loss (() or (N,)), lse (N,)); mean over no targets is 0");
    m.def("cross_entropy_backward", [ref](const Tensor& dloss, const Tensor& logits, const Tensor& targets,
                                          const Tensor& lse, int64_t ignore_index, const std::string& reduction) {
        nogil release;
        return ops::cross_entropy_backward(dloss, logits, targets, lse, ignore_index, reduction, ref);
    }, py::arg("dloss"), py::arg("logits"), py::arg("targets"), py::arg("lse"), py::arg("ignore_index") = -100,
       py::arg("reduction") = "mean", "-> dlogits (N,V)");
    m.def("embedding_backward", [ref](const Tensor& dout, const Tensor& idx, int64_t V) {
        nogil release;
        return ops::embedding_backward(dout, idx, V, ref);
    }, py::arg("dout"), py::arg("idx"), py::arg("V"), "dout (*idx.shape, C), idx -> dweight (V,C)");
    m.def("dropout_forward", [ref](const Tensor& x, double p, int64_t seed) {
        nogil release;
        return ops::dropout_forward(x, p, seed, ref);
    }, py::arg("x"), py::arg("p"), py::arg("seed"),
       "keeps element i iff splitmix64(seed, i) >= p * 2^53 (scaled by 1/(1-p)); no mask is stored");
    m.def("dropout_backward", [ref](const Tensor& dout, double p, int64_t seed) {
        nogil release;
        return ops::dropout_backward(dout, p, seed, ref);
    }, py::arg("dout"), py::arg("p"), py::arg("seed"));
}

}  // namespace

void register_nn(py::module_& m) {
    register_pairs(m, false);
    m.def("relu_forward", [](const Tensor& x) {
        nogil release;
        return ops::relu_forward(x);
    }, py::arg("x"));
    m.def("relu_backward", [](const Tensor& dout, const Tensor& out) {
        nogil release;
        return ops::relu_backward(dout, out);
    }, py::arg("dout"), py::arg("out"), "dout, out (relu's output) -> dx");
    m.def("embedding_forward", [](const Tensor& idx, const Tensor& weight) {
        nogil release;
        return ops::embedding_forward(idx, weight);
    }, py::arg("idx"), py::arg("weight"), "idx (any) int32|int64, weight (V,C) -> out (*idx.shape, C)");
    py::module_ ref = m.def_submodule("nn_reference", "the nn ops on their plain reference kernels");
    register_pairs(ref, true);
}

}  // namespace femtogpt::bindings
