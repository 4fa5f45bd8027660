#include "bindings/bindings.h"
#include "ops/ops.h"

namespace femtogpt::bindings {

void register_matmul(py::module_& m) {
    m.def("matmul", [](const Tensor& a, const Tensor& b, bool trans_a, bool trans_b, std::optional<Tensor> out,
                       double alpha, double beta) {
        nogil release;
        return ops::matmul(a, b, trans_a, trans_b, out, alpha, beta);
    }, py::arg("a"), py::arg("b"), py::arg("trans_a") = false, py::arg("trans_b") = false,
       py::arg("out") = py::none(), py::arg("alpha") = 1.0, py::arg("beta") = 0.0);
}

}  // namespace femtogpt::bindings
