// Elementwise ops and reductions: validation and dispatch.
#include "ops/tensorops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "cpu/elementwise.h"
#include "cpu/reduce.h"
#include "ops/tensorops_util.h"

namespace femtogpt::ops {

using detail::check_cpu;
using detail::dispatch_float;

namespace {

// Drops leading 1s: (1, 1, C) -> (C).
Shape strip_leading_ones(const Shape& s) {
    size_t i = 0;
    while (i < s.size() && s[i] == 1) i++;
    return Shape(s.begin() + int64_t(i), s.end());
}

bool is_suffix(const Shape& suffix, const Shape& s) {
    if (suffix.size() > s.size()) return false;
    return std::equal(suffix.begin(), suffix.end(), s.end() - int64_t(suffix.size()));
}

// The number of elements after which b repeats over a (see the header's broadcasting rule).
int64_t broadcast_period(const Tensor& a, const Tensor& b, const char* op) {
    if (b.shape() == a.shape()) return a.numel();
    bool ok = b.numel() == 1 || is_suffix(strip_leading_ones(b.shape()), a.shape());
    FG_CHECK(ok, op, ": cannot broadcast b of shape ", shape_str(b.shape()), " onto a of shape ",
             shape_str(a.shape()), "; b must have a's shape, a suffix of it, or one element");
    return b.numel();
}

void check_binary(const Tensor& a, const Tensor& b, const char* op) {
    detail::check_defined(a, "a");
    detail::check_defined(b, "b");
    check_float(a, fmt(op, ": a").c_str());
    check_float(b, fmt(op, ": b").c_str());
    check_same_dtype(a, b, op);
    check_same_device(a, b, op);
    check_cpu(a, op);
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b, double alpha) {
    check_binary(a, b, "add");
    int64_t nb = broadcast_period(a, b, "add");
    Tensor out = Tensor::empty(a.shape(), a.dtype(), a.device());
    if (out.numel() == 0) return out;
    dispatch_float(a.dtype(), [&](auto t) {
        using T = decltype(t);
        cpu::add<T>(out.data<T>(), a.data<T>(), b.data<T>(), a.numel(), nb, T(alpha));
    });
    return out;
}

Tensor mul(const Tensor& a, const Tensor& b) {
    check_binary(a, b, "mul");
    int64_t nb = broadcast_period(a, b, "mul");
    Tensor out = Tensor::empty(a.shape(), a.dtype(), a.device());
    if (out.numel() == 0) return out;
    dispatch_float(a.dtype(), [&](auto t) {
        using T = decltype(t);
        cpu::mul<T>(out.data<T>(), a.data<T>(), b.data<T>(), a.numel(), nb);
    });
    return out;
}

Tensor scale(const Tensor& a, double s) {
    detail::check_defined(a, "a");
    check_float(a, "scale: a");
    check_cpu(a, "scale");
    Tensor out = Tensor::empty(a.shape(), a.dtype(), a.device());
    dispatch_float(a.dtype(), [&](auto t) {
        using T = decltype(t);
        cpu::scale<T>(out.data<T>(), a.data<T>(), T(s), a.numel());
    });
    return out;
}

void add_(const Tensor& dst, const Tensor& src, double alpha) {
    check_binary(dst, src, "add_");
    FG_CHECK(!detail::partial_overlap(dst, src), "add_: dst and src are different but overlapping views of one storage");
    if (dst.shape() != src.shape()) {  // src broadcast as a suffix of dst's shape (a bias): the kernel of add
        int64_t nb = broadcast_period(dst, src, "add_");
        // src is read again for every row of dst: it must not be among the bytes being written
        FG_CHECK(!detail::overlap(dst, src), "add_: a broadcast src must not share memory with dst");
        if (dst.numel() == 0) return;
        dispatch_float(dst.dtype(), [&](auto t) {
            using T = decltype(t);
            cpu::add<T>(dst.data<T>(), dst.data<T>(), src.data<T>(), dst.numel(), nb, T(alpha));
        });
        return;
    }
    dispatch_float(dst.dtype(), [&](auto t) {
        using T = decltype(t);
        if (dst.raw_data() == src.raw_data()) {  // x += alpha * x
            cpu::scale<T>(dst.data<T>(), dst.data<T>(), T(1 + alpha), dst.numel());
        } else {
            cpu::axpy<T>(dst.data<T>(), src.data<T>(), T(alpha), dst.numel());
        }
    });
}

void fill_(const Tensor& dst, double value) {
    detail::check_defined(dst, "dst");
    check_cpu(dst, "fill_");
    switch (dst.dtype()) {
        case DType::float32: cpu::fill<float>(dst.data<float>(), float(value), dst.numel()); break;
        case DType::float64: cpu::fill<double>(dst.data<double>(), value, dst.numel()); break;
        case DType::int32:
            FG_CHECK(value == std::floor(value) && std::fabs(value) <= 2147483647.0, "fill_: value ", value,
                     " is not representable in int32");
            cpu::fill<int32_t>(dst.data<int32_t>(), int32_t(value), dst.numel());
            break;
        case DType::int64:
            FG_CHECK(value == std::floor(value) && std::fabs(value) <= 9.2e18, "fill_: value ", value,
                     " is not representable in int64");
            cpu::fill<int64_t>(dst.data<int64_t>(), int64_t(value), dst.numel());
            break;
    }
}

void copy_(const Tensor& dst, const Tensor& src) {
    detail::check_defined(dst, "dst");
    detail::check_defined(src, "src");
    check_same_dtype(dst, src, "copy_");
    check_same_device(dst, src, "copy_");
    check_cpu(dst, "copy_");
    FG_CHECK(dst.shape() == src.shape(), "copy_: shapes differ: dst ", shape_str(dst.shape()), ", src ",
             shape_str(src.shape()));
    if (dst.raw_data() == src.raw_data() || dst.nbytes() == 0) return;
    if (detail::partial_overlap(dst, src)) {
        std::memmove(dst.raw_data(), src.raw_data(), dst.nbytes());
        return;
    }
    cpu::copy_bytes(dst.raw_data(), src.raw_data(), dst.nbytes());
}

Tensor sum_to_suffix(const Tensor& x, const Shape& shape) {
    detail::check_defined(x, "x");
    check_float(x, "sum_to_suffix: x");
    check_cpu(x, "sum_to_suffix");
    Shape suffix = strip_leading_ones(shape);
    FG_CHECK(is_suffix(suffix, x.shape()), "sum_to_suffix: shape ", shape_str(shape), " is not a suffix of x's shape ",
             shape_str(x.shape()));
    Tensor out = Tensor::empty(shape, x.dtype(), x.device());
    int64_t K = out.numel(), M = K ? x.numel() / K : 0;
    if (K == 0) return out;
    dispatch_float(x.dtype(), [&](auto t) {
        using T = decltype(t);
        cpu::sum_rows<T>(out.data<T>(), x.data<T>(), M, K);
    });
    return out;
}

Tensor sum_all(const Tensor& x) {
    detail::check_defined(x, "x");
    check_float(x, "sum_all: x");
    check_cpu(x, "sum_all");
    Tensor out = Tensor::empty({}, x.dtype(), x.device());
    dispatch_float(x.dtype(), [&](auto t) {
        using T = decltype(t);
        out.data<T>()[0] = T(cpu::sum_all<T>(x.data<T>(), x.numel()));
    });
    return out;
}

Tensor mean_all(const Tensor& x) {
    detail::check_defined(x, "x");
    check_float(x, "mean_all: x");
    check_cpu(x, "mean_all");
    Tensor out = Tensor::empty({}, x.dtype(), x.device());
    dispatch_float(x.dtype(), [&](auto t) {
        using T = decltype(t);
        double n = double(x.numel());
        out.data<T>()[0] = n == 0 ? std::numeric_limits<T>::quiet_NaN() : T(cpu::sum_all<T>(x.data<T>(), x.numel()) / n);
    });
    return out;
}

}  // namespace femtogpt::ops
