#include "ops/attention.h"

#include <cmath>

#include "cpu/attention.h"

namespace femtogpt::ops {

AttentionImpl parse_attention_impl(const std::string& name) {
    if (name == "flash") return AttentionImpl::flash;
    if (name == "standard") return AttentionImpl::standard;
    throw ValueError(fmt("attention: unknown impl '", name, "': expected 'flash' or 'standard'"));
}

namespace {

struct Dims {
    int64_t B, H, Tq, Tk, D;
};

// Checks q, k, v and the options; returns the sizes.
Dims check_qkv(const Tensor& q, const Tensor& k, const Tensor& v, bool is_causal, double scale, AttentionImpl impl,
               int64_t block_q, int64_t block_k) {
    check_float(q, "attention: q");
    check_same_dtype(q, k, "attention: q and k");
    check_same_dtype(q, v, "attention: q and v");
    check_same_device(q, k, "attention: q and k");
    check_same_device(q, v, "attention: q and v");
    FG_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4,
             "attention: q, k and v must be 4-D (B, H, T, D), got shapes ", shape_str(q.shape()), ", ",
             shape_str(k.shape()), " and ", shape_str(v.shape()));
    FG_CHECK(k.shape() == v.shape(), "attention: k and v must have the same shape, got ", shape_str(k.shape()),
             " and ", shape_str(v.shape()));
    FG_CHECK(q.size(0) == k.size(0) && q.size(1) == k.size(1) && q.size(3) == k.size(3),
             "attention: q ", shape_str(q.shape()), " and k ", shape_str(k.shape()),
             " must agree in batch, heads and head dimension (B, H, *, D)");
    Dims d{q.size(0), q.size(1), q.size(2), k.size(2), q.size(3)};
    FG_CHECK(block_q > 0 && block_k > 0, "attention: block sizes must be positive, got block_q=", block_q,
             ", block_k=", block_k);
    FG_CHECK(!is_causal || d.Tq <= d.Tk, "attention: causal attention needs Tq <= Tk (queries are aligned to the "
             "end of the keys), got Tq=", d.Tq, ", Tk=", d.Tk);
    FG_CHECK(std::isfinite(scale), "attention: scale must be finite, got ", scale);
    FG_CHECK(impl != AttentionImpl::flash || d.D <= cpu::kAttentionMaxHeadDim,
             "attention: head dimension D=", d.D, " exceeds the flash limit of ", cpu::kAttentionMaxHeadDim,
             " (use impl='standard')");
    FG_CHECK(q.device().type == DeviceType::cpu, "attention: no kernel for device ", q.device().str());
    return d;
}

void check_like(const Tensor& t, const Tensor& ref, const char* what) {
    check_same_dtype(ref, t, what);
    check_same_device(ref, t, what);
}

}  // namespace

std::pair<Tensor, Tensor> attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, bool is_causal,
                                            double scale, AttentionImpl impl, int64_t block_q, int64_t block_k) {
    const Dims d = check_qkv(q, k, v, is_causal, scale, impl, block_q, block_k);
    Tensor out = Tensor::empty(q.shape(), q.dtype(), q.device());
    Tensor saved = impl == AttentionImpl::flash ? Tensor::empty({d.B, d.H, d.Tq}, q.dtype(), q.device())
                                                : Tensor::empty({d.B, d.H, d.Tq, d.Tk}, q.dtype(), q.device());
    auto run = [&](auto tag) {
        using T = decltype(tag);
        if (impl == AttentionImpl::flash)
            cpu::attention_flash_forward<T>(out.data<T>(), saved.data<T>(), q.data<T>(), k.data<T>(), v.data<T>(),
                                            d.B, d.H, d.Tq, d.Tk, d.D, is_causal, T(scale), block_q, block_k);
        else
            cpu::attention_standard_forward<T>(out.data<T>(), saved.data<T>(), q.data<T>(), k.data<T>(),
                                               v.data<T>(), d.B, d.H, d.Tq, d.Tk, d.D, is_causal, T(scale));
    };
    if (q.dtype() == DType::float32) run(float{}); else run(double{});
    return {out, saved};
}

std::tuple<Tensor, Tensor, Tensor> attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k,
                                                      const Tensor& v, const Tensor& out, const Tensor& saved,
                                                      bool is_causal, double scale, AttentionImpl impl,
                                                      int64_t block_q, int64_t block_k) {
    const Dims d = check_qkv(q, k, v, is_causal, scale, impl, block_q, block_k);
    check_like(dout, q, "attention_backward: q and dout");
    check_like(out, q, "attention_backward: q and out");
    check_like(saved, q, "attention_backward: q and saved");
    FG_CHECK(dout.shape() == q.shape(), "attention_backward: dout has shape ", shape_str(dout.shape()),
             ", expected q's shape ", shape_str(q.shape()));
    FG_CHECK(out.shape() == q.shape(), "attention_backward: out has shape ", shape_str(out.shape()),
             ", expected q's shape ", shape_str(q.shape()));
    const Shape want = impl == AttentionImpl::flash ? Shape{d.B, d.H, d.Tq} : Shape{d.B, d.H, d.Tq, d.Tk};
    FG_CHECK(saved.shape() == want, "attention_backward: saved has shape ", shape_str(saved.shape()),
             ", expected ", shape_str(want), impl == AttentionImpl::flash
                 ? " (the log-sum-exp from attention_forward with impl='flash')"
                 : " (the probabilities from attention_forward with impl='standard')");
    Tensor dq = Tensor::empty(q.shape(), q.dtype(), q.device());
    Tensor dk = Tensor::empty(k.shape(), q.dtype(), q.device());
    Tensor dv = Tensor::empty(v.shape(), q.dtype(), q.device());
    auto run = [&](auto tag) {
        using T = decltype(tag);
        if (impl == AttentionImpl::flash)
            cpu::attention_flash_backward<T>(dq.data<T>(), dk.data<T>(), dv.data<T>(), dout.data<T>(), q.data<T>(),
                                             k.data<T>(), v.data<T>(), out.data<T>(), saved.data<T>(), d.B, d.H,
                                             d.Tq, d.Tk, d.D, is_causal, T(scale), block_q, block_k);
        else
            cpu::attention_standard_backward<T>(dq.data<T>(), dk.data<T>(), dv.data<T>(), dout.data<T>(),
                                                q.data<T>(), k.data<T>(), v.data<T>(), out.data<T>(),
                                                saved.data<T>(), d.B, d.H, d.Tq, d.Tk, d.D, is_causal, T(scale));
    };
    if (q.dtype() == DType::float32) run(float{}); else run(double{});
    return {dq, dk, dv};
}

namespace {

// The (B,T,3C) fused projection and its heads.
struct QkvDims {
    int64_t B, T, C, H, D;
};

QkvDims check_fused(const Tensor& qkv, int64_t n_head, double scale, AttentionImpl impl, int64_t block_q,
                    int64_t block_k) {
    check_float(qkv, "attention_qkv: qkv");
    FG_CHECK(qkv.dim() == 3, "attention_qkv: qkv must be 3-D (B, T, 3C), got shape ", shape_str(qkv.shape()));
    FG_CHECK(n_head > 0, "attention_qkv: n_head must be positive, got ", n_head);
    const int64_t C3 = qkv.size(2);
    FG_CHECK(C3 % 3 == 0 && (C3 / 3) % n_head == 0, "attention_qkv: the last dim of qkv ", shape_str(qkv.shape()),
             " must be 3 * C with C divisible by n_head=", n_head);
    QkvDims d{qkv.size(0), qkv.size(1), C3 / 3, n_head, C3 / 3 / n_head};
    FG_CHECK(block_q > 0 && block_k > 0, "attention_qkv: block sizes must be positive, got block_q=", block_q,
             ", block_k=", block_k);
    FG_CHECK(std::isfinite(scale), "attention_qkv: scale must be finite, got ", scale);
    FG_CHECK(impl != AttentionImpl::flash || d.D <= cpu::kAttentionMaxHeadDim, "attention_qkv: head dimension D=",
             d.D, " exceeds the flash limit of ", cpu::kAttentionMaxHeadDim, " (use impl='standard')");
    FG_CHECK(qkv.device().type == DeviceType::cpu, "attention_qkv: no kernel for device ", qkv.device().str());
    return d;
}

// Head views of q, k or v (which = 0, 1, 2) inside qkv (B,T,3,H,D), and of a (B,T,H,D) tensor.
template <typename T>
cpu::Heads<T> qkv_heads(T* qkv, const QkvDims& d, int which) {
    return {qkv + which * d.C, d.T * 3 * d.C, d.D, 3 * d.C};
}
template <typename T>
cpu::Heads<T> merged_heads(T* x, const QkvDims& d) {
    return {x, d.T * d.C, d.D, d.C};
}

}  // namespace

std::pair<Tensor, Tensor> attention_qkv_forward(const Tensor& qkv, int64_t n_head, double scale, AttentionImpl impl,
                                                int64_t block_q, int64_t block_k) {
    const QkvDims d = check_fused(qkv, n_head, scale, impl, block_q, block_k);
    Tensor out = Tensor::empty({d.B, d.T, d.C}, qkv.dtype(), qkv.device());
    Tensor saved = impl == AttentionImpl::flash ? Tensor::empty({d.B, d.H, d.T}, qkv.dtype(), qkv.device())
                                                : Tensor::empty({d.B, d.H, d.T, d.T}, qkv.dtype(), qkv.device());
    auto run = [&](auto tag) {
        using T = decltype(tag);
        const T* x = qkv.data<T>();
        auto q = qkv_heads(x, d, 0), k = qkv_heads(x, d, 1), v = qkv_heads(x, d, 2);
        auto o = merged_heads(out.data<T>(), d);
        if (impl == AttentionImpl::flash)
            cpu::attention_flash_forward<T>(o, saved.data<T>(), q, k, v, d.B, d.H, d.T, d.T, d.D, true, T(scale),
                                            block_q, block_k);
        else
            cpu::attention_standard_forward<T>(o, saved.data<T>(), q, k, v, d.B, d.H, d.T, d.T, d.D, true, T(scale));
    };
    if (qkv.dtype() == DType::float32) run(float{}); else run(double{});
    return {out, saved};
}

Tensor attention_qkv_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& saved,
                              int64_t n_head, double scale, AttentionImpl impl, int64_t block_q, int64_t block_k) {
    const QkvDims d = check_fused(qkv, n_head, scale, impl, block_q, block_k);
    check_like(dout, qkv, "attention_qkv_backward: qkv and dout");
    check_like(out, qkv, "attention_qkv_backward: qkv and out");
    check_like(saved, qkv, "attention_qkv_backward: qkv and saved");
    const Shape merged{d.B, d.T, d.C};
    FG_CHECK(dout.shape() == merged, "attention_qkv_backward: dout has shape ", shape_str(dout.shape()),
             ", expected ", shape_str(merged));
    FG_CHECK(out.shape() == merged, "attention_qkv_backward: out has shape ", shape_str(out.shape()), ", expected ",
             shape_str(merged));
    const Shape want = impl == AttentionImpl::flash ? Shape{d.B, d.H, d.T} : Shape{d.B, d.H, d.T, d.T};
    FG_CHECK(saved.shape() == want, "attention_qkv_backward: saved has shape ", shape_str(saved.shape()),
             ", expected ", shape_str(want));
    Tensor dqkv = Tensor::empty(qkv.shape(), qkv.dtype(), qkv.device());
    auto run = [&](auto tag) {
        using T = decltype(tag);
        const T* x = qkv.data<T>();
        T* dx = dqkv.data<T>();
        auto q = qkv_heads(x, d, 0), k = qkv_heads(x, d, 1), v = qkv_heads(x, d, 2);
        auto dq = qkv_heads(dx, d, 0), dk = qkv_heads(dx, d, 1), dv = qkv_heads(dx, d, 2);
        auto o = merged_heads<const T>(out.data<T>(), d), g = merged_heads<const T>(dout.data<T>(), d);
        if (impl == AttentionImpl::flash)
            cpu::attention_flash_backward<T>(dq, dk, dv, g, q, k, v, o, saved.data<T>(), d.B, d.H, d.T, d.T, d.D,
                                             true, T(scale), block_q, block_k);
        else
            cpu::attention_standard_backward<T>(dq, dk, dv, g, q, k, v, o, saved.data<T>(), d.B, d.H, d.T, d.T, d.D,
                                                true, T(scale));
    };
    if (qkv.dtype() == DType::float32) run(float{}); else run(double{});
    return dqkv;
}

}  // namespace femtogpt::ops
