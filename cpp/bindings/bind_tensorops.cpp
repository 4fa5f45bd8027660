// Elementwise, layout, reductions, the AdamW step and sampling (ops/tensorops.h).
#include "bindings/bindings.h"
#include "ops/tensorops.h"

namespace femtogpt::bindings {

void register_tensorops(py::module_& m) {
    using TensorList = std::vector<Tensor>;

    // ---- elementwise ----
    m.def("add", [](const Tensor& a, const Tensor& b, double alpha) {
        nogil release;
        return ops::add(a, b, alpha);
    }, py::arg("a"), py::arg("b"), py::arg("alpha") = 1.0,
       "a + alpha * b; b has a's shape, a suffix of it, or one element.");
    m.def("mul", [](const Tensor& a, const Tensor& b) {
        nogil release;
        return ops::mul(a, b);
    }, py::arg("a"), py::arg("b"), "a * b; b has a's shape, a suffix of it, or one element.");
    m.def("scale", [](const Tensor& a, double s) {
        nogil release;
        return ops::scale(a, s);
    }, py::arg("a"), py::arg("s"), "a * s");
    m.def("add_", [](const Tensor& dst, const Tensor& src, double alpha) {
        nogil release;
        ops::add_(dst, src, alpha);
    }, py::arg("dst"), py::arg("src"), py::arg("alpha") = 1.0, "dst += alpha * src in place; src has dst's shape, a suffix of it, or one element.");
    m.def("fill_", [](const Tensor& dst, double value) {
        nogil release;
        ops::fill_(dst, value);
    }, py::arg("dst"), py::arg("value"), "Set every element of dst to value, in place.");
    m.def("copy_", [](const Tensor& dst, const Tensor& src) {
        nogil release;
        ops::copy_(dst, src);
    }, py::arg("dst"), py::arg("src"), "dst <- src in place (same shapes and dtypes).");

    // ---- reductions ----
    m.def("sum_to_suffix", [](const Tensor& x, const Shape& shape) {
        nogil release;
        return ops::sum_to_suffix(x, shape);
    }, py::arg("x"), py::arg("shape"),
       "Sum x over leading dimensions so the result has `shape`, a suffix of x.shape (() sums all).");
    m.def("sum_all", [](const Tensor& x) {
        nogil release;
        return ops::sum_all(x);
    }, py::arg("x"), "Sum of all elements as a 0-D tensor (double accumulation, deterministic).");
    m.def("mean_all", [](const Tensor& x) {
        nogil release;
        return ops::mean_all(x);
    }, py::arg("x"), "Mean of all elements as a 0-D tensor (NaN when x is empty).");

    // ---- layout ----
    m.def("permute", [](const Tensor& x, const std::vector<int64_t>& dims) {
        nogil release;
        return ops::permute(x, dims);
    }, py::arg("x"), py::arg("dims"), "Contiguous copy of x with axes in the order dims (up to 6-D).");
    m.def("slice", [](const Tensor& x, int64_t dim, int64_t start, int64_t length) {
        nogil release;
        return ops::slice(x, dim, start, length);
    }, py::arg("x"), py::arg("dim"), py::arg("start"), py::arg("length"),
       "Contiguous copy of x[..., start:start+length, ...] along dim.");
    m.def("slice_backward", [](const Tensor& grad, const Shape& full_shape, int64_t dim, int64_t start) {
        nogil release;
        return ops::slice_backward(grad, full_shape, dim, start);
    }, py::arg("grad"), py::arg("full_shape"), py::arg("dim"), py::arg("start"),
       "Zeros of full_shape with grad placed at the slice starting at start along dim.");
    m.def("concat", [](const TensorList& xs, int64_t dim) {
        nogil release;
        return ops::concat(xs, dim);
    }, py::arg("tensors"), py::arg("dim"), "The tensors joined along dim.");

    // ---- optimizer ----
    m.def("adamw_step", [](const TensorList& params, const TensorList& grads, const TensorList& exp_avg,
                           const TensorList& exp_avg_sq, double lr, double beta1, double beta2, double eps,
                           const std::vector<double>& weight_decays, int64_t step) {
        nogil release;
        ops::adamw_step(params, grads, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decays, step);
    }, py::arg("params"), py::arg("grads"), py::arg("exp_avg"), py::arg("exp_avg_sq"), py::arg("lr"),
       py::arg("beta1"), py::arg("beta2"), py::arg("eps"), py::arg("weight_decays"), py::arg("step"),
       "One in-place AdamW step (PyTorch semantics) over every parameter; step >= 1.");
    m.def("grad_norm_sq", [](const TensorList& tensors) {
        nogil release;
        return ops::grad_norm_sq(tensors);
    }, py::arg("tensors"), "Sum of squares of all elements of all tensors, in double (deterministic).");
    m.def("scale_all_", [](const TensorList& tensors, double s) {
        nogil release;
        ops::scale_all_(tensors, s);
    }, py::arg("tensors"), py::arg("s"), "Multiply every tensor by s in place.");

    // ---- sampling ----
    m.def("sample_tokens", [](const Tensor& logits, double temperature, int64_t top_k, double top_p,
                              std::optional<Tensor> rng_state) {
        nogil release;
        return ops::sample_tokens(logits, temperature, top_k, top_p, rng_state);
    }, py::arg("logits"), py::arg("temperature") = 1.0, py::arg("top_k") = 0, py::arg("top_p") = 1.0,
       py::arg("rng_state") = py::none(),
       "Tokens (B,) int64 drawn from logits (B,V): temperature (0 = argmax), top_k (0 = off), "
       "top_p (1 = off); rng_state (B,) int64 advances by one draw per row.");
    m.def("argmax", [](const Tensor& x) {
        nogil release;
        return ops::argmax(x);
    }, py::arg("x"), "Index of the largest element of each row of x (B,V), lowest on ties.");
    m.def("rng_state", [](const py::int_& seed, int64_t n) {
        uint64_t s = PyLong_AsUnsignedLongLongMask(seed.ptr());
        if (PyErr_Occurred()) throw py::error_already_set();
        return ops::rng_state(s, n);
    }, py::arg("seed"), py::arg("n"), "(n,) int64 starting states for sample_tokens from one integer seed.");
}

}  // namespace femtogpt::bindings
