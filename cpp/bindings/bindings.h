// Each op family registers its functions on the module in its own file.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "tensor.h"

namespace femtogpt::bindings {

namespace py = pybind11;

void register_tensor(py::module_& m);     // bind_tensor.cpp: Tensor, numpy conversion, memory, threads, ISA
void register_matmul(py::module_& m);     // bind_matmul.cpp
void register_nn(py::module_& m);         // bind_nn.cpp: norm, activation, softmax, loss, embedding, dropout
void register_tensorops(py::module_& m);  // bind_tensorops.cpp: elementwise, layout, reductions, optimizer, sampling
void register_attention(py::module_& m);  // bind_attention.cpp
void register_infer(py::module_& m);      // bind_infer.cpp: GPT inference with a KV cache

// Releases the GIL for the scope: every kernel call runs inside one.
using nogil = py::gil_scoped_release;

}  // namespace femtogpt::bindings
