// Tensor-level ops: layernorm, GELU, ReLU, softmax, log-softmax, dropout.
#include "ops/nn.h"

#include <algorithm>
#include <cmath>

#include "cpu/activation.h"
#include "cpu/matmul.h"
#include "cpu/dropout.h"
#include "cpu/norm.h"
#include "cpu/softmax.h"
#include "ops/nn_common.h"
#include "pool.h"

namespace femtogpt::ops {

using namespace nn_detail;

// ---------------------------------------------------------------- layernorm

std::tuple<Tensor, Tensor, Tensor> layernorm_forward(const Tensor& x, const OptTensor& weight, const OptTensor& bias,
                                                     double eps, bool reference) {
    const char* op = "layernorm_forward";
    check_float(x, "layernorm_forward: x");
    FG_CHECK(x.dim() >= 1, op, ": x must have at least 1 dimension, got shape ", shape_str(x.shape()));
    const int64_t C = x.size(-1);
    FG_CHECK(C >= 1, op, ": x's last dimension must be at least 1, got shape ", shape_str(x.shape()));
    FG_CHECK(std::isfinite(eps) && eps >= 0, op, ": eps must be a finite number >= 0, got ", eps);
    for (const auto& [t, name] : {std::pair{&weight, "weight"}, std::pair{&bias, "bias"}}) {
        if (!*t) continue;
        check_float_like(**t, x, op, name);
        FG_CHECK((*t)->shape() == Shape{C}, op, ": ", name, " has shape ", shape_str((*t)->shape()), ", expected (",
                 C, ",) to match the last dimension of x ", shape_str(x.shape()));
    }
    check_cpu(x, op);
    const int64_t N = x.numel() / C;
    Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
    Tensor mean = Tensor::empty({N}, x.dtype(), x.device());
    Tensor rstd = Tensor::empty({N}, x.dtype(), x.device());
    dispatch_float(x.dtype(), [&](auto tag) {
        using T = decltype(tag);
        const T* w = weight ? weight->data<T>() : nullptr;
        const T* b = bias ? bias->data<T>() : nullptr;
        auto kernel = reference ? cpu::layernorm_forward_reference<T> : cpu::layernorm_forward<T>;
        kernel(out.data<T>(), mean.data<T>(), rstd.data<T>(), x.data<T>(), w, b, N, C, eps);
    });
    return {out, mean, rstd};
}

std::tuple<Tensor, OptTensor, OptTensor> layernorm_backward(const Tensor& dout, const Tensor& x,
                                                            const OptTensor& weight, const Tensor& mean,
                                                            const Tensor& rstd, std::optional<bool> has_bias,
                                                            bool reference, bool inplace) {
    const char* op = inplace ? "layernorm_backward_" : "layernorm_backward";
    check_float(x, "layernorm_backward: x");
    FG_CHECK(x.dim() >= 1 && x.size(-1) >= 1, op, ": x must have a last dimension of at least 1, got shape ",
             shape_str(x.shape()));
    const int64_t C = x.size(-1), N = x.numel() / C;
    check_float_like(dout, x, op, "dout");
    check_same_shape(dout, x, op, "dout", "x");
    if (weight) {
        check_float_like(*weight, x, op, "weight");
        FG_CHECK(weight->shape() == Shape{C}, op, ": weight has shape ", shape_str(weight->shape()), ", expected (",
                 C, ",) to match the last dimension of x ", shape_str(x.shape()));
    }
    for (const auto& [t, name] : {std::pair{&mean, "mean"}, std::pair{&rstd, "rstd"}}) {
        check_float_like(*t, x, op, name);
        FG_CHECK(t->shape() == Shape{N}, op, ": ", name, " has shape ", shape_str(t->shape()), ", expected (", N,
                 ",): one value per row of x ", shape_str(x.shape()));
    }
    check_cpu(x, op);
    const bool want_b = has_bias.value_or(weight.has_value());
    Tensor dx = inplace ? dout : Tensor::empty(x.shape(), x.dtype(), x.device());  // in place: each row of dout
    OptTensor dweight, dbias;                                                      // is read before it is written
    if (weight) dweight = Tensor::empty({C}, x.dtype(), x.device());
    if (want_b) dbias = Tensor::empty({C}, x.dtype(), x.device());
    dispatch_float(x.dtype(), [&](auto tag) {
        using T = decltype(tag);
        auto kernel = reference ? cpu::layernorm_backward_reference<T> : cpu::layernorm_backward<T>;
        kernel(dx.data<T>(), dweight ? dweight->data<T>() : nullptr, dbias ? dbias->data<T>() : nullptr,
               dout.data<T>(), x.data<T>(), weight ? weight->data<T>() : nullptr, mean.data<T>(), rstd.data<T>(),
               N, C);
    });
    return {dx, dweight, dbias};
}

// ---------------------------------------------------------------- activations

Tensor gelu_forward(const Tensor& x, const std::string& approximate, bool reference) {
    check_float(x, "gelu_forward: x");
    auto approx = parse_gelu_approx(approximate, "gelu_forward");
    check_cpu(x, "gelu_forward");
    Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
    dispatch_float(x.dtype(), [&](auto tag) {
        using T = decltype(tag);
        auto kernel = reference ? cpu::gelu_forward_reference<T> : cpu::gelu_forward<T>;
        kernel(out.data<T>(), x.data<T>(), x.numel(), approx);
    });
    return out;
}

namespace {

// dx (n) <- dout (n) * gelu'(x (n)); dx may be dout (the kernels are elementwise).
void gelu_backward_into(Tensor& dx, const Tensor& dout, const Tensor& x, const std::string& approximate,
                        bool reference, const char* op) {
    check_float(x, "gelu_backward: x");
    check_float_like(dout, x, op, "dout");
    check_same_shape(dout, x, op, "dout", "x");
    auto approx = parse_gelu_approx(approximate, op);
    check_cpu(x, op);
    dispatch_float(x.dtype(), [&](auto tag) {
        using T = decltype(tag);
        auto kernel = reference ? cpu::gelu_backward_reference<T> : cpu::gelu_backward<T>;
        kernel(dx.data<T>(), dout.data<T>(), x.data<T>(), x.numel(), approx);
    });
}

}  // namespace

Tensor gelu_backward(const Tensor& dout, const Tensor& x, const std::string& approximate, bool reference) {
    Tensor dx = Tensor::empty(x.shape(), x.dtype(), x.device());
    gelu_backward_into(dx, dout, x, approximate, reference, "gelu_backward");
    return dx;
}

Tensor gelu_backward_inplace(Tensor& dout, const Tensor& x, const std::string& approximate) {
    gelu_backward_into(dout, dout, x, approximate, false, "gelu_backward_");
    return dout;
}

Tensor gelu_linear_backward_input_(Tensor& h, const Tensor& g, const Tensor& w, const std::string& approximate) {
    const char* op = "gelu_linear_backward_input_";
    check_float(h, "gelu_linear_backward_input_: h");
    check_float_like(g, h, op, "g");
    check_float_like(w, h, op, "w");
    FG_CHECK(h.dim() == 2 && g.dim() == 2 && w.dim() == 2 && g.size(0) == h.size(0) && w.size(0) == g.size(1) &&
                 w.size(1) == h.size(1),
             op, ": expected h (N,K), g (N,O), w (O,K), got h ", shape_str(h.shape()), ", g ", shape_str(g.shape()),
             ", w ", shape_str(w.shape()));
    FG_CHECK(g.storage() != h.storage() && w.storage() != h.storage(), op,
             ": g and w must not share memory with h, which the result overwrites");
    auto approx = parse_gelu_approx(approximate, op);
    check_cpu(h, op);
    const int64_t N = h.size(0), K = h.size(1), O = g.size(1);
    if (h.numel() == 0) return h;
    dispatch_float(h.dtype(), [&](auto tag) {
        using T = decltype(tag);
        if (cpu::gemm_gelu_grad_in_place<T>(N, K, O)) {  // each tile of g @ w times gelu'(h), written over h
            cpu::GemmFusion<T> f;
            f.approx = approx;
            f.gelu_grad = h.data<T>();
            f.ld_gelu_grad = K;
            cpu::gemm_fused<T>(h.data<T>(), K, g.data<T>(), O, w.data<T>(), K, N, K, O, false, false, T(1), T(0), f);
            return;
        }
        // Otherwise in row chunks through a scratch, of equal size, about 4 MiB each: none is so
        // small that the product would take another summation order than the whole one does
        // (cpu::gemm cuts K into chunks only for a result of at most 64 Ki elements; every chunk
        // here has over 512 Ki, or is the whole).
        const int64_t most = std::max<int64_t>(1, (int64_t(4) << 20) / (K * int64_t(sizeof(T))));
        const int64_t rows = (N + (N + most - 1) / most - 1) / ((N + most - 1) / most);
        PoolBuffer da(size_t(rows * K) * sizeof(T));  // (rows, K): g @ w for the current rows
        for (int64_t r0 = 0; r0 < N; r0 += rows) {
            const int64_t n = std::min(rows, N - r0);
            T* hr = h.data<T>() + r0 * K;
            cpu::gemm<T>(da.data<T>(), K, g.data<T>() + r0 * O, O, w.data<T>(), K, n, K, O, false, false, T(1), T(0));
            cpu::gelu_backward<T>(hr, da.data<T>(), hr, n * K, approx);  // dh over h: elementwise, in place
        }
    });
    return h;
}

Tensor relu_forward(const Tensor& x) {
    check_float(x, "relu_forward: x");
    check_cpu(x, "relu_forward");
    Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
    dispatch_float(x.dtype(), [&](auto tag) {
        using T = decltype(tag);
        cpu::relu_forward<T>(out.data<T>(), x.data<T>(), x.numel());
    });
    return out;
}

Tensor relu_backward(const Tensor& dout, const Tensor& out) {
    const char* op = "relu_backward";
    check_float(out, "relu_backward: out");
    check_float_like(dout, out, op, "dout");
    check_same_shape(dout, out, op, "dout", "out");
    check_cpu(out, op);
    Tensor dx = Tensor::empty(out.shape(), out.dtype(), out.device());
    dispatch_float(out.dtype(), [&](auto tag) {
        using T = decltype(tag);
        cpu::relu_backward<T>(dx.data<T>(), dout.data<T>(), out.data<T>(), out.numel());
    });
    return dx;
}

// ---------------------------------------------------------------- softmax

namespace {

template <typename T>
using FwdFn = void (*)(T*, const T*, int64_t, int64_t);
template <typename T>
using BwdFn = void (*)(T*, const T*, const T*, int64_t, int64_t);

// x (...,C) -> out (...,C), the kernel picked per dtype by `pick(tag)`
template <typename Pick>
Tensor rowwise_forward(const Tensor& x, const char* op, Pick pick) {
    FG_CHECK_TYPE(is_floating(x.dtype()), op, ": x must be a float32 or float64 tensor, got ", dtype_name(x.dtype()));
    FG_CHECK(x.dim() >= 1, op, ": x must have at least 1 dimension, got shape ", shape_str(x.shape()));
    check_cpu(x, op);
    const int64_t C = x.size(-1), N = C ? x.numel() / C : 0;
    Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
    dispatch_float(x.dtype(), [&](auto tag) {
        using T = decltype(tag);
        FwdFn<T> kernel = pick(tag);
        kernel(out.data<T>(), x.data<T>(), N, C);
    });
    return out;
}

// dout (...,C), out (...,C) -> dx (...,C)
template <typename Pick>
Tensor rowwise_backward(const Tensor& dout, const Tensor& out, const char* op, Pick pick) {
    FG_CHECK_TYPE(is_floating(out.dtype()), op, ": out must be a float32 or float64 tensor, got ",
                  dtype_name(out.dtype()));
    check_float_like(dout, out, op, "dout");
    check_same_shape(dout, out, op, "dout", "out");
    FG_CHECK(out.dim() >= 1, op, ": out must have at least 1 dimension, got shape ", shape_str(out.shape()));
    check_cpu(out, op);
    const int64_t C = out.size(-1), N = C ? out.numel() / C : 0;
    Tensor dx = Tensor::empty(out.shape(), out.dtype(), out.device());
    dispatch_float(out.dtype(), [&](auto tag) {
        using T = decltype(tag);
        BwdFn<T> kernel = pick(tag);
        kernel(dx.data<T>(), dout.data<T>(), out.data<T>(), N, C);
    });
    return dx;
}

}  // namespace

Tensor softmax_forward(const Tensor& x, bool reference) {
    return rowwise_forward(x, "softmax_forward", [&](auto tag) {
        using T = decltype(tag);
        return reference ? cpu::softmax_forward_reference<T> : cpu::softmax_forward<T>;
    });
}

Tensor softmax_backward(const Tensor& dout, const Tensor& out, bool reference) {
    return rowwise_backward(dout, out, "softmax_backward", [&](auto tag) {
        using T = decltype(tag);
        return reference ? cpu::softmax_backward_reference<T> : cpu::softmax_backward<T>;
    });
}

Tensor log_softmax_forward(const Tensor& x, bool reference) {
    return rowwise_forward(x, "log_softmax_forward", [&](auto tag) {
        using T = decltype(tag);
        return reference ? cpu::log_softmax_forward_reference<T> : cpu::log_softmax_forward<T>;
    });
}

Tensor log_softmax_backward(const Tensor& dout, const Tensor& out, bool reference) {
    return rowwise_backward(dout, out, "log_softmax_backward", [&](auto tag) {
        using T = decltype(tag);
        return reference ? cpu::log_softmax_backward_reference<T> : cpu::log_softmax_backward<T>;
    });
}

// ---------------------------------------------------------------- dropout

namespace {

Tensor dropout_apply(const Tensor& x, double p, int64_t seed, bool reference, const char* op, const char* what) {
    FG_CHECK_TYPE(is_floating(x.dtype()), op, ": ", what, " must be a float32 or float64 tensor, got ",
                  dtype_name(x.dtype()));
    FG_CHECK(p >= 0.0 && p < 1.0, op, ": p must be in [0, 1), got ", p);
    check_cpu(x, op);
    Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
    dispatch_float(x.dtype(), [&](auto tag) {
        using T = decltype(tag);
        auto kernel = reference ? cpu::dropout_forward_reference<T> : cpu::dropout_forward<T>;
        kernel(out.data<T>(), x.data<T>(), x.numel(), p, uint64_t(seed));
    });
    return out;
}

}  // namespace

Tensor dropout_forward(const Tensor& x, double p, int64_t seed, bool reference) {
    return dropout_apply(x, p, seed, reference, "dropout_forward", "x");
}

Tensor dropout_backward(const Tensor& dout, double p, int64_t seed, bool reference) {
    return dropout_apply(dout, p, seed, reference, "dropout_backward", "dout");
}

}  // namespace femtogpt::ops
