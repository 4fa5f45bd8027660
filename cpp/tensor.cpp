#include "tensor.h"

#include <cstring>

#include "backend.h"

namespace femtogpt {

size_t dtype_size(DType dt) {
    switch (dt) {
        case DType::float32: return 4;
        case DType::float64: return 8;
        case DType::int32: return 4;
        case DType::int64: return 8;
    }
    return 0;
}

const char* dtype_name(DType dt) {
    switch (dt) {
        case DType::float32: return "float32";
        case DType::float64: return "float64";
        case DType::int32: return "int32";
        case DType::int64: return "int64";
    }
    return "unknown";
}

std::string Device::str() const {
    if (type == DeviceType::cpu) return "cpu";
    return fmt("opencl:", index);
}

Device Device::parse(const std::string& s) {
    if (s == "cpu") return Device{DeviceType::cpu, 0};
    if (s == "opencl") return Device{DeviceType::opencl, 0};
    if (s.rfind("opencl:", 0) == 0) {
        std::string idx = s.substr(7);
        bool digits = !idx.empty() && idx.size() <= 9 && idx.find_first_not_of("0123456789") == std::string::npos;
        FG_CHECK(digits, "unknown device '", s, "': expected 'cpu', 'opencl' or 'opencl:N'");
        return Device{DeviceType::opencl, std::stoi(idx)};
    }
    throw ValueError(fmt("unknown device '", s, "': expected 'cpu', 'opencl' or 'opencl:N'"));
}

std::string shape_str(const Shape& s) {
    std::string out = "(";
    for (size_t i = 0; i < s.size(); i++) {
        out += std::to_string(s[i]);
        if (i + 1 < s.size() || s.size() == 1) out += s.size() == 1 ? "," : ", ";
    }
    return out + ")";
}

int64_t shape_numel(const Shape& s) {
    int64_t n = 1;
    for (int64_t d : s) {
        FG_CHECK(d >= 0, "negative dimension ", d, " in shape ", shape_str(s));
        if (d != 0 && n > (int64_t(1) << 60) / d)
            throw std::bad_alloc();  // too large to address: a MemoryError in Python
        n *= d;
    }
    return n;
}

Storage::Storage(size_t nbytes_, Device device_) : nbytes(nbytes_), device(device_) {
    data = backend_for(device).allocate(nbytes);
}

Storage::~Storage() { backend_for(device).deallocate(data, nbytes); }

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
    Tensor t;
    t.numel_ = shape_numel(shape);
    t.shape_ = shape;
    t.dtype_ = dtype;
    size_t bytes = size_t(t.numel_) * dtype_size(dtype);
    t.storage_ = std::make_shared<Storage>(bytes, device);
    return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
    Tensor t = empty(shape, dtype, device);
    backend_for(device).fill_zero(t.raw_data(), t.nbytes());
    return t;
}

int64_t Tensor::size(int64_t d) const {
    int64_t n = dim();
    if (d < 0) d += n;
    if (d < 0 || d >= n) throw IndexError(fmt("dimension ", d, " out of range for a ", n, "-D tensor"));
    return shape_[size_t(d)];
}

Tensor Tensor::view(Shape shape) const {
    int64_t infer = -1, known = 1;
    for (size_t i = 0; i < shape.size(); i++) {
        if (shape[i] == -1) {
            FG_CHECK(infer < 0, "view: only one dimension can be -1, got ", shape_str(shape));
            infer = int64_t(i);
        } else {
            FG_CHECK(shape[i] >= 0, "view: invalid dimension ", shape[i], " in ", shape_str(shape));
            // bounded as shape_numel bounds a new tensor, so that the product cannot wrap
            FG_CHECK(shape[i] == 0 || known <= (int64_t(1) << 60) / shape[i], "view: shape ", shape_str(shape),
                     " has more elements than any tensor (the tensor of shape ", shape_str(shape_), " has ",
                     numel_, ")");
            known *= shape[i];
        }
    }
    if (infer >= 0) {
        FG_CHECK(known != 0 && numel_ % known == 0, "view: cannot view a tensor of shape ",
                 shape_str(shape_), " as ", shape_str(shape));
        shape[size_t(infer)] = numel_ / known;
        known *= shape[size_t(infer)];
    }
    FG_CHECK(known == numel_, "view: shape ", shape_str(shape), " has ", known, " elements, but the tensor of shape ",
             shape_str(shape_), " has ", numel_);
    Tensor t = *this;
    t.shape_ = std::move(shape);
    return t;
}

Tensor Tensor::narrow0(int64_t start, int64_t len) const {
    FG_CHECK(dim() >= 1, "narrow0: tensor is 0-D");
    FG_CHECK(start >= 0 && len >= 0 && start <= shape_[0] && len <= shape_[0] - start, "narrow0: ", len,
             " rows from row ", start, " are out of range for leading dimension ", shape_[0]);
    Tensor t = *this;
    int64_t row = shape_[0] ? numel_ / shape_[0] : 0;
    t.offset_ += size_t(start * row) * dtype_size(dtype_);
    t.shape_[0] = len;
    t.numel_ = row * len;
    return t;
}

std::string Tensor::repr() const {
    return fmt("Tensor(shape=", shape_str(shape_), ", dtype=", dtype_name(dtype_), ", device='", device().str(), "')");
}

void check_float(const Tensor& t, const char* what) {
    FG_CHECK_TYPE(is_floating(t.dtype()), what, " must be a float32 or float64 tensor, got ", dtype_name(t.dtype()));
}

void check_dtype(const Tensor& t, DType dt, const char* what) {
    FG_CHECK_TYPE(t.dtype() == dt, what, " must have dtype ", dtype_name(dt), ", got ", dtype_name(t.dtype()));
}

void check_dim(const Tensor& t, int64_t dim, const char* what) {
    FG_CHECK(t.dim() == dim, what, " must be ", dim, "-D, got shape ", shape_str(t.shape()));
}

void check_same_device(const Tensor& a, const Tensor& b, const char* what) {
    FG_CHECK(a.device() == b.device(), what, ": tensors are on different devices (", a.device().str(), " and ",
             b.device().str(), ")");
}

void check_same_dtype(const Tensor& a, const Tensor& b, const char* what) {
    FG_CHECK_TYPE(a.dtype() == b.dtype(), what, ": dtypes differ (", dtype_name(a.dtype()), " and ",
                  dtype_name(b.dtype()), ")");
}

}  // namespace femtogpt
