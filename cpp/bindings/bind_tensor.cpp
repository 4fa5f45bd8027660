// Tensor (with the buffer protocol, so numpy views it without a copy), memory
// statistics, threads and ISA.
#include <cstring>

#include "backend.h"
#include "bindings/bindings.h"
#include "cpu/isa.h"
#include "cpu/peak.h"
#include "ops/infer.h"
#include "parallel.h"
#include "pool.h"

namespace femtogpt::bindings {

namespace {

DType dtype_from_numpy(const py::dtype& dt) {
    // By kind and size, not identity: numpy has several dtype objects for one type
    // (an int64 array may carry type code 'l' or 'q').
    // numpy reports native byte order as '=' (an explicit '<' on a little-endian machine too).
    if (dt.byteorder() == '=' || dt.byteorder() == '|') {
        char kind = dt.kind();
        auto size = dt.itemsize();
        if (kind == 'f' && size == 4) return DType::float32;
        if (kind == 'f' && size == 8) return DType::float64;
        if (kind == 'i' && size == 4) return DType::int32;
        if (kind == 'i' && size == 8) return DType::int64;
    }
    throw TypeError(fmt("unsupported dtype ", std::string(py::str(dt)),
                        ": expected float32, float64, int32 or int64"));
}

py::dtype numpy_dtype(DType dt) {
    switch (dt) {
        case DType::float32: return py::dtype::of<float>();
        case DType::float64: return py::dtype::of<double>();
        case DType::int32: return py::dtype::of<int32_t>();
        case DType::int64: return py::dtype::of<int64_t>();
    }
    throw TypeError("unknown dtype");
}

DType parse_dtype(const py::object& obj) {
    return dtype_from_numpy(py::dtype::from_args(obj));
}

// Copies a numpy array (any layout; made contiguous first) into a new tensor.
Tensor from_numpy(const py::array& arr, const std::string& device) {
    DType dt = dtype_from_numpy(arr.dtype());
    // numpy makes the contiguous copy, and a failure keeps numpy's own message (a MemoryError that
    // gives the size; py::array::ensure would clear it)
    py::array c = (arr.flags() & py::array::c_style)
                      ? arr
                      : py::array(py::module_::import("numpy").attr("ascontiguousarray")(arr));
    Shape shape(c.shape(), c.shape() + c.ndim());
    Device dev = Device::parse(device);
    Tensor cpu_t = Tensor::empty(shape, dt);
    if (cpu_t.nbytes()) std::memcpy(cpu_t.raw_data(), c.data(), cpu_t.nbytes());
    if (dev.type == DeviceType::cpu) return cpu_t;
    return to_device(cpu_t, dev);
}

constexpr const char* kNoTensorNew =
    "_core.Tensor cannot be created directly: use femtogpt.tensor, _core.from_numpy, _core.zeros or _core.empty";

PyObject* no_tensor_new(PyTypeObject*, PyObject*, PyObject*) {
    PyErr_SetString(PyExc_TypeError, kNoTensorNew);
    return nullptr;
}

// Tensor's tp_new: no object without a Tensor constructed inside is ever made from Python (the
// core's own results are made by pybind11 through tp_alloc, not tp_new).
void refuse_new(py::class_<Tensor>& cls) {
    reinterpret_cast<PyTypeObject*>(cls.ptr())->tp_new = no_tensor_new;
    PyType_Modified(reinterpret_cast<PyTypeObject*>(cls.ptr()));
}

py::dict stats_dict(const PoolStats& s) {
    py::dict d;
    d["current_bytes"] = s.current_bytes;
    d["peak_bytes"] = s.peak_bytes;
    d["reserved_bytes"] = s.reserved_bytes;
    d["alloc_requests"] = s.alloc_requests;
    d["pool_hits"] = s.pool_hits;
    d["os_allocations"] = s.os_allocations;
    d["os_frees"] = s.os_frees;
    d["pooling"] = Pool::instance().caching();
    return d;
}

// A thread count given from Python: any integer (an int, numpy's, anything with __index__), however
// large, in [1, kMaxThreads]; the errors name `what` and the limits (an int argument gave
// pybind11's "incompatible function arguments" past its range).
int thread_count(const py::object& n, const char* what) {
    FG_CHECK_TYPE(PyIndex_Check(n.ptr()) && !PyBool_Check(n.ptr()), what, " must be an integer, got ",
                  std::string(py::str(py::type::of(n).attr("__name__"))));
    PyObject* index = PyNumber_Index(n.ptr());
    if (!index) throw py::error_already_set();  // an __index__ that raised
    const py::int_ value = py::reinterpret_steal<py::int_>(index);
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(value.ptr(), &overflow);
    auto shown = [&]() -> std::string {  // the number, or its size where Python will not print it
        if (overflow == 0) return std::to_string(v);
        try {
            return std::string(py::str(value));
        } catch (py::error_already_set&) {  // past sys.get_int_max_str_digits()
            return "an integer of " + std::string(py::str(value.attr("bit_length")())) + " bits";
        }
    };
    FG_CHECK(overflow == 0 && v >= 1 && v <= kMaxThreads, what, " must be between 1 and ", kMaxThreads, ", got ",
             shown());
    return int(v);
}

}  // namespace

void register_tensor(py::module_& m) {
    py::class_<Tensor> tensor_class(m, "Tensor", py::buffer_protocol(), py::is_final());
    // Tensors come from the core's functions only: an object made by Tensor.__new__ would have no
    // Tensor inside (pybind11 never constructs one without an __init__), and reading it crashed.
    // The core's own results are made without __new__, so this refuses only Python's calls.
    tensor_class.attr("__new__") = py::staticmethod(py::cpp_function([](py::args, py::kwargs) -> py::object {
        throw TypeError(kNoTensorNew);
    }));
    // and the C slot too: with only the Python-level __new__, pybind11_object.__new__(Tensor), by
    // the base class, still counted as safe and made the same empty object
    refuse_new(tensor_class);
    tensor_class
        .def_buffer([](Tensor& t) -> py::buffer_info {
            FG_CHECK(t.device().type == DeviceType::cpu, "a tensor on ", t.device().str(),
                     " has no host buffer; copy it to the cpu first");
            std::vector<py::ssize_t> shape(t.shape().begin(), t.shape().end());
            std::vector<py::ssize_t> strides(shape.size());
            py::ssize_t s = py::ssize_t(dtype_size(t.dtype()));
            for (size_t i = shape.size(); i-- > 0;) {
                strides[i] = s;
                s *= shape[i];
            }
            std::string format = py::format_descriptor<float>::format();
            switch (t.dtype()) {
                case DType::float32: format = py::format_descriptor<float>::format(); break;
                case DType::float64: format = py::format_descriptor<double>::format(); break;
                case DType::int32: format = py::format_descriptor<int32_t>::format(); break;
                case DType::int64: format = py::format_descriptor<int64_t>::format(); break;
            }
            return py::buffer_info(t.raw_data(), py::ssize_t(dtype_size(t.dtype())), format,
                                   py::ssize_t(shape.size()), shape, strides);
        })
        .def_property_readonly("shape", [](const Tensor& t) { return py::tuple(py::cast(t.shape())); })
        .def_property_readonly("dtype", [](const Tensor& t) { return numpy_dtype(t.dtype()); })
        .def_property_readonly("device", [](const Tensor& t) { return t.device().str(); })
        .def_property_readonly("nbytes", &Tensor::nbytes)
        .def_property_readonly("ndim", &Tensor::dim)
        .def("numel", &Tensor::numel)
        .def("view", [](const Tensor& t, const Shape& s) { return t.view(s); }, py::arg("shape"))
        .def("narrow0", &Tensor::narrow0, py::arg("start"), py::arg("length"))
        .def("same_storage", [](const Tensor& a, const Tensor& b) { return a.storage() == b.storage(); })
        .def_property_readonly("storage_id", [](const Tensor& t) {  // equal for views of one storage
            return reinterpret_cast<uintptr_t>(t.storage().get());
        })
        .def("to", [](const Tensor& t, const std::string& device) {
            Device dev = Device::parse(device);
            nogil release;
            return to_device(t, dev);
        }, py::arg("device"))
        .def("clone", [](const Tensor& t) {
            nogil release;
            return to_device(t, t.device());
        })
        .def("__repr__", &Tensor::repr);

    m.def("from_numpy", &from_numpy, py::arg("array"), py::arg("device") = "cpu",
          "Copy a numpy array (float32, float64, int32 or int64) into a new tensor.");
    m.def("empty", [](const Shape& shape, const py::object& dtype, const std::string& device) {
        return Tensor::empty(shape, parse_dtype(dtype), Device::parse(device));
    }, py::arg("shape"), py::arg("dtype") = py::dtype::of<float>(), py::arg("device") = "cpu");
    m.def("zeros", [](const Shape& shape, const py::object& dtype, const std::string& device) {
        return Tensor::zeros(shape, parse_dtype(dtype), Device::parse(device));
    }, py::arg("shape"), py::arg("dtype") = py::dtype::of<float>(), py::arg("device") = "cpu");

    m.def("memory_stats", []() { return stats_dict(Pool::instance().stats()); });
    m.def("reset_peak_memory_stats", []() { Pool::instance().reset_peak(); });
    m.def("empty_cache", []() {  // the pool's free blocks, and the packed weights a generation engine left
        Pool::instance().empty_cache();
        ops::release_packed_weights_cache();
    });

    m.def("set_num_threads", [](const py::object& n) { set_num_threads(thread_count(n, "set_num_threads: n")); },
          py::arg("n"));
    m.def("get_num_threads", &num_threads);
    m.def("openmp_enabled", &openmp_enabled);

    m.def("cpu_isa", []() { return std::string(cpu::isa_name(cpu::active_isa())); });
    m.def("available_isas", []() {
        std::vector<std::string> out;
        for (auto isa : cpu::available_isas()) out.push_back(cpu::isa_name(isa));
        return out;
    });
    m.def("set_cpu_isa", [](const std::string& name) { cpu::set_active_isa(cpu::parse_isa(name)); },
          py::arg("name"));
    m.def("fma_peak_gflops", [](const py::object& threads, double seconds) {
        const int n = thread_count(threads, "fma_peak_gflops: threads");
        nogil release;
        return cpu::fma_peak_gflops(n, seconds);
    }, py::arg("threads"), py::arg("seconds") = 0.2,
       "GFLOP/s of independent multiply-add chains in registers on `threads` threads for about `seconds`,\n"
       "with the active kernel family's vectors (FMA counts 2 flops a lane): the arithmetic peak that a\n"
       "kernel's or a training step's GFLOP/s is set against.");
    m.def("opencl_compiled", []() { return false; });
}

}  // namespace femtogpt::bindings
