// Checks shared by the tensorops files.
#pragma once

#include "tensor.h"

namespace femtogpt::ops::detail {

// ValueError unless t lives on the CPU (the only device with these kernels).
inline void check_cpu(const Tensor& t, const char* op) {
    FG_CHECK(t.device().type == DeviceType::cpu, op, ": no kernel for device ", t.device().str());
}

// ValueError for an undefined tensor (a default-constructed one).
inline void check_defined(const Tensor& t, const char* what) { FG_CHECK(t.defined(), what, " is an empty handle"); }

// Normalizes a dimension index (negative counts from the end); ValueError if out of range.
inline int64_t wrap_dim(int64_t dim, int64_t ndim, const char* op) {
    FG_CHECK(dim >= -ndim && dim < ndim, op, ": dim ", dim, " is out of range for a ", ndim, "-D tensor");
    return dim < 0 ? dim + ndim : dim;
}

// True when a and b share bytes without being the same view.
inline bool partial_overlap(const Tensor& a, const Tensor& b) {
    if (a.storage() != b.storage() || a.raw_data() == b.raw_data()) return false;
    const char* a0 = static_cast<const char*>(a.raw_data());
    const char* b0 = static_cast<const char*>(b.raw_data());
    return a0 < b0 + b.nbytes() && b0 < a0 + a.nbytes();
}

// True when a and b share any byte.
inline bool overlap(const Tensor& a, const Tensor& b) {
    if (a.storage() != b.storage() || a.nbytes() == 0 || b.nbytes() == 0) return false;
    const char* a0 = static_cast<const char*>(a.raw_data());
    const char* b0 = static_cast<const char*>(b.raw_data());
    return a0 < b0 + b.nbytes() && b0 < a0 + a.nbytes();
}

// Calls f(T{}) with T = float or double, the dtype of a float tensor (checked before).
template <typename F>
void dispatch_float(DType dt, F&& f) {
    if (dt == DType::float32)
        f(float{});
    else
        f(double{});
}

}  // namespace femtogpt::ops::detail
