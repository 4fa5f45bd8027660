// Helpers shared by the nn op files (nn.cpp, nn_loss.cpp, and matmul.cpp's GELU fusion): argument checks and
// dtype dispatch. Internal to cpp/ops.
#pragma once

#include <string>

#include "cpu/activation.h"
#include "ops/tensorops_util.h"
#include "tensor.h"

namespace femtogpt::ops::nn_detail {

using detail::dispatch_float;  // f(float{}) or f(double{}), from the dtype of a float tensor

// Calls f(I{}) with I = int32_t or int64_t, the dtype of an index tensor (checked before).
template <typename F>
void dispatch_index(DType dt, F&& f) {
    if (dt == DType::int32)
        f(int32_t{});
    else
        f(int64_t{});
}

// GELU's form from its Python spelling (F.gelu's `approximate`); `arg` names the argument in
// the error, which lists the forms.
inline cpu::GeluApprox parse_gelu_approx(const std::string& s, const char* op, const char* arg = "approximate") {
    if (s == "tanh") return cpu::GeluApprox::tanh;
    if (s == "none") return cpu::GeluApprox::none;
    throw ValueError(fmt(op, ": unknown ", arg, "='", s, "': expected 'tanh' or 'none' (GELU's approximate)"));
}

inline void check_cpu(const Tensor& t, const char* op) {
    FG_CHECK(t.device().type == DeviceType::cpu, op, ": no kernel for device ", t.device().str());
}

// `t` is a float tensor like `ref` (same dtype and device).
inline void check_float_like(const Tensor& t, const Tensor& ref, const char* op, const char* what) {
    FG_CHECK_TYPE(is_floating(t.dtype()), op, ": ", what, " must be a float32 or float64 tensor, got ",
                  dtype_name(t.dtype()));
    FG_CHECK_TYPE(t.dtype() == ref.dtype(), op, ": ", what, " has dtype ", dtype_name(t.dtype()), ", expected ",
                  dtype_name(ref.dtype()), " (the dtype of the input)");
    check_same_device(t, ref, op);
}

inline void check_index_tensor(const Tensor& t, const char* op, const char* what) {
    FG_CHECK_TYPE(t.dtype() == DType::int32 || t.dtype() == DType::int64, op, ": ", what,
                  " must be an int32 or int64 tensor, got ", dtype_name(t.dtype()));
}

inline void check_same_shape(const Tensor& a, const Tensor& b, const char* op, const char* an, const char* bn) {
    FG_CHECK(a.shape() == b.shape(), op, ": ", an, " has shape ", shape_str(a.shape()), " but ", bn, " has shape ",
             shape_str(b.shape()), "; expected the same shape");
}

}  // namespace femtogpt::ops::nn_detail
