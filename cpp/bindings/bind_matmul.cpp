#include "bindings/bindings.h"
#include "ops/ops.h"

namespace femtogpt::bindings {

void register_matmul(py::module_& m) {
    m.def("matmul", [](const Tensor& a, const Tensor& b, bool trans_a, bool trans_b, std::optional<Tensor> out,
                       double alpha, double beta, std::optional<Tensor> bias, std::optional<std::string> gelu_a,
                       std::optional<std::string> gelu_b, std::optional<Tensor> a_row_sums,
                       std::optional<std::string> gelu_grad, std::optional<Tensor> gelu_grad_of) {
        nogil release;
        return ops::matmul(a, b, trans_a, trans_b, out, alpha, beta,
                           ops::MatmulFusion{bias, gelu_a, gelu_b, a_row_sums, gelu_grad, gelu_grad_of});
    }, py::arg("a"), py::arg("b"), py::arg("trans_a") = false, py::arg("trans_b") = false,
       py::arg("out") = py::none(), py::arg("alpha") = 1.0, py::arg("beta") = 0.0, py::arg("bias") = py::none(),
       py::arg("gelu_a") = py::none(), py::arg("gelu_b") = py::none(), py::arg("a_row_sums") = py::none(),
       py::arg("gelu_grad") = py::none(), py::arg("gelu_grad_of") = py::none(),
       "out = alpha * op(a) @ op(b) + beta * out. 2-D only: bias (N,) is added after the product;\n"
       "gelu_a / gelu_b ('tanh' or 'none') apply GELU to a / b first, as the product packs them\n"
       "(the GELU'd operand is never stored), values bitwise those of the unfused ops; a_row_sums (M,)\n"
       "receives the row sums of op(a) (dout^T as a: a linear layer's bias gradient beside its weight's);\n"
       "gelu_grad ('tanh' or 'none') with gelu_grad_of (M,N) gives gelu'(gelu_grad_of) * op(a) @ op(b),\n"
       "a GELU's input gradient, applied to each tile as it is finished (no beta, no bias); out may be\n"
       "gelu_grad_of itself where the product is made in one pass over K (else a ValueError).");
}

}  // namespace femtogpt::bindings
