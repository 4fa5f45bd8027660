// _core.InferenceEngine: cached GPT inference (ops/infer.h), and its kernels for tests.
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "bindings/bindings.h"
#include "cpu/infer.h"
#include "cpu/isa.h"
#include "ops/infer.h"
#include "pool.h"

namespace femtogpt::bindings {

namespace {

void check_f32_2d(const Tensor& t, const char* what) {
    FG_CHECK_TYPE(t.dtype() == DType::float32 || t.dtype() == DType::float64, what,
                  " must be float32 or float64, got ", dtype_name(t.dtype()));
    FG_CHECK(t.dim() == 2, what, " must be 2-D, got shape ", shape_str(t.shape()));
    FG_CHECK(t.device().type == DeviceType::cpu, what, ": no kernel for device ", t.device().str());
}

}  // namespace

namespace {

// InferenceEngine's tp_new: the __new__ in its class dict (the factory above), called as Python
// would call it.
PyObject* make_engine(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
    try {
        py::object factory = py::reinterpret_borrow<py::object>(reinterpret_cast<PyObject*>(type)).attr("__new__");
        py::tuple full(PyTuple_GET_SIZE(args) + 1);
        full[0] = py::reinterpret_borrow<py::object>(reinterpret_cast<PyObject*>(type));
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(args); i++)
            full[size_t(i + 1)] = py::reinterpret_borrow<py::object>(PyTuple_GET_ITEM(args, i));
        return PyObject_Call(factory.ptr(), full.ptr(), kwargs);
    } catch (py::error_already_set& e) {
        e.restore();
        return nullptr;
    }
}

}  // namespace

void register_infer(py::module_& m) {
    using ops::InferenceEngine;
    py::class_<InferenceEngine> engine_class(m, "InferenceEngine",
                                             "A GPT forward pass with a KV cache, for generation (see "
                                             "cpp/ops/infer.h).",
                                             py::is_final());
    // The engine is made whole by __new__ (a py::init would leave InferenceEngine.__new__(cls), with
    // no __init__ after it, an object with no engine constructed inside: reading it crashed), and
    // __init__ has nothing left to do. Same call as before: InferenceEngine(params, n_head, batch, ...).
    engine_class.attr("__new__") = py::staticmethod(py::cpp_function(
        [](const py::object& /*cls*/, const std::map<std::string, Tensor>& params, int64_t n_head, int64_t batch,
           int64_t slide, double eps) {
            std::unique_ptr<InferenceEngine> engine;
            {
                nogil release;
                engine = std::make_unique<InferenceEngine>(params, n_head, batch, slide, eps);
            }
            return py::cast(std::move(engine));
        },
        py::name("__new__"), py::arg("cls"), py::arg("params"), py::arg("n_head"), py::arg("batch"),
        py::arg("slide") = 1, py::arg("eps") = 1e-5,
        "params: name -> float32 Tensor (GPT.named_parameters(), shared, not copied); batch rows; "
        "slide: tokens a full row drops before its next one (1 = nanoGPT's crop)."));
    // The C slots too: with only the Python-level __new__, pybind11_object.__new__(InferenceEngine),
    // by the base class, still counted as safe and made the empty object; a C tp_new that is not
    // Python's slot function makes it "not safe". tp_init does nothing (pybind11's would refuse).
    auto* type = reinterpret_cast<PyTypeObject*>(engine_class.ptr());
    type->tp_new = make_engine;
    type->tp_init = [](PyObject*, PyObject*, PyObject*) { return 0; };
    PyType_Modified(type);
    engine_class
        .def_property_readonly("batch", &InferenceEngine::batch)
        .def_property_readonly("block_size", &InferenceEngine::block_size)
        .def_property_readonly("vocab_size", &InferenceEngine::vocab_size)
        .def_property_readonly("slide", &InferenceEngine::slide)
        .def("lengths", [](InferenceEngine& e) {
            nogil release;
            std::lock_guard<std::mutex> one_call(e.calls());
            return e.lengths();
        }, "(B,) int64: tokens in each row's context")
        .def("context", [](InferenceEngine& e) {
            nogil release;
            std::lock_guard<std::mutex> one_call(e.calls());
            return e.context();
        }, "(B, block_size) int64: each row's context, -1 after its length")
        .def("logits", [](InferenceEngine& e) {
            nogil release;
            std::lock_guard<std::mutex> one_call(e.calls());
            return e.logits();
        }, "(B, V) float32: logits after each row's last token")
        .def("prefill", [](InferenceEngine& e, const Tensor& tokens, const Tensor& lengths) {
            nogil release;
            std::lock_guard<std::mutex> one_call(e.calls());
            return e.prefill(tokens, lengths);
        }, py::arg("tokens"), py::arg("lengths"),
           "tokens (B, T) int64 right-padded, lengths (B,) int64 -> logits (B, V); starts every row afresh")
        .def("step", [](InferenceEngine& e, const Tensor& tokens) {
            nogil release;
            std::lock_guard<std::mutex> one_call(e.calls());
            return e.step(tokens);
        }, py::arg("tokens"), "tokens (B,) int64 appended to the rows -> logits (B, V)")
        .def("generate", [](InferenceEngine& e, int64_t n, double temperature, int64_t top_k, double top_p,
                            std::optional<Tensor> rng_state) {
            nogil release;
            std::lock_guard<std::mutex> one_call(e.calls());
            return e.generate(n, temperature, top_k, top_p, rng_state);
        }, py::arg("n"), py::arg("temperature") = 1.0, py::arg("top_k") = 0, py::arg("top_p") = 1.0,
           py::arg("rng_state") = py::none(),
           "-> (B, n) int64: n tokens per row drawn as sample_tokens does and appended; rng_state advances");

    m.def("set_decode_team", [](const std::string& policy) {
        FG_CHECK(policy == "auto" || policy == "always" || policy == "never",
                 "set_decode_team: policy must be 'auto', 'always' or 'never', got '", policy, "'");
        ops::set_decode_team(policy == "auto" ? ops::DecodeTeam::automatic
                             : policy == "always" ? ops::DecodeTeam::always : ops::DecodeTeam::never);
    }, py::arg("policy"),
       "Whether decode steps may use a team of threads: 'auto' (timed against one thread), 'always' or "
       "'never' (for tests and comparisons). Process-wide.");
    m.def("get_decode_team", []() {
        const ops::DecodeTeam p = ops::decode_team();
        return std::string(p == ops::DecodeTeam::automatic ? "auto" : p == ops::DecodeTeam::always ? "always" : "never");
    });
    m.def("linear_rows", [](const Tensor& x, const Tensor& w, std::optional<Tensor> bias, bool reference,
                            bool packed) {
        check_f32_2d(x, "linear_rows: x");
        check_f32_2d(w, "linear_rows: w");
        check_same_dtype(x, w, "linear_rows");
        FG_CHECK(x.size(1) == w.size(1), "linear_rows: x ", shape_str(x.shape()), " and w ", shape_str(w.shape()),
                 " need the same number of columns (w is (out, in))");
        const int64_t M = x.size(0), N = w.size(0), K = x.size(1);
        if (bias) {
            check_same_dtype(*bias, x, "linear_rows: bias");
            FG_CHECK(bias->shape() == Shape{N}, "linear_rows: bias has shape ", shape_str(bias->shape()),
                     ", expected (", N, ",)");
        }
        Tensor out = Tensor::empty({M, N}, x.dtype());
        if (packed) {
            FG_CHECK(!reference && x.dtype() == DType::float32 && cpu::active_isa() != cpu::Isa::generic,
                     "linear_rows: packed=True runs the float32 AVX2 kernel only");
            FG_CHECK(N % cpu::kPackTile == 0 && K % cpu::kPackTile == 0, "linear_rows: packed=True needs N and K ",
                     "multiples of ", cpu::kPackTile, ", got ", N, " and ", K);
            nogil release;
            PoolBuffer wp(size_t(N * K) * sizeof(float));  // 64-byte aligned
            cpu::pack_linear_tiles<float>(wp.data<float>(), w.data<float>(), N, K);
            cpu::linear_packed(out.data<float>(), N, x.data<float>(), K, wp.data<float>(),
                               bias ? bias->data<float>() : nullptr, M, N, K, false);
            return out;
        }
        nogil release;
        auto run = [&](auto z) {
            using T = decltype(z);
            auto k = reference ? cpu::linear_rows_reference<T> : cpu::linear_rows<T>;
            k(out.data<T>(), N, x.data<T>(), K, w.data<T>(), bias ? bias->data<T>() : nullptr, M, N, K, false);
        };
        if (x.dtype() == DType::float32) run(float{}); else run(double{});
        return out;
    }, py::arg("x"), py::arg("w"), py::arg("bias") = py::none(), py::arg("reference") = false,
       py::arg("packed") = false,
       "x (M,K) @ w (N,K)^T + bias -> (M,N): the decode-step kernel (row-independent sums); packed: "
       "the same on w in pack_linear_tiles' layout (float32, AVX2, N and K multiples of 8).");
}

}  // namespace femtogpt::bindings
