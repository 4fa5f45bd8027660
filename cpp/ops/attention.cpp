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

}  // namespace femtogpt::ops
