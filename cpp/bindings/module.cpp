// femtogpt._core: the pybind11 module. C++ errors become Python exceptions:
// ValueError (femtogpt::ValueError, std::invalid_argument), TypeError
// (femtogpt::TypeError), IndexError (std::out_of_range), MemoryError (std::bad_alloc).
#include "bindings/bindings.h"

#ifndef FEMTOGPT_VERSION
#define FEMTOGPT_VERSION "0.0.0+dev"
#endif

namespace py = pybind11;

PYBIND11_MODULE(_core, m) {
    m.doc() = "femtogpt's C++ core: pooled tensors and the kernels of a GPT";
    m.attr("__version__") = FEMTOGPT_VERSION;

    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const femtogpt::TypeError& e) {
            PyErr_SetString(PyExc_TypeError, e.what());
        } catch (const std::bad_alloc&) {
            PyErr_SetString(PyExc_MemoryError, "out of memory: the allocation could not be satisfied");
        }
    });

    femtogpt::bindings::register_tensor(m);
    femtogpt::bindings::register_matmul(m);
    femtogpt::bindings::register_nn(m);
    femtogpt::bindings::register_tensorops(m);
    femtogpt::bindings::register_attention(m);
    femtogpt::bindings::register_infer(m);
}
