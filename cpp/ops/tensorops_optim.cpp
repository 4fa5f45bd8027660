// The optimizer step, gradient-clipping helpers and sampling: validation and dispatch.
#include <algorithm>
#include <functional>
#include <cmath>
#include <initializer_list>
#include <utility>
#include <vector>

#include "cpu/elementwise.h"
#include "cpu/optim.h"
#include "cpu/reduce.h"
#include "cpu/sampling.h"
#include "ops/tensorops.h"
#include "ops/tensorops_util.h"

namespace femtogpt::ops {

using detail::check_cpu;
using detail::dispatch_float;

namespace {

template <typename T>
void run_adamw(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, const std::vector<Tensor>& m,
               const std::vector<Tensor>& v, const std::vector<double>& wds, double lr, double beta1, double beta2,
               double eps, int64_t step) {
    std::vector<cpu::AdamWSlot<T>> slots;
    for (size_t i = 0; i < params.size(); i++) {
        if (params[i].dtype() != dtype_of<T>() || params[i].numel() == 0) continue;
        slots.push_back({params[i].data<T>(), grads[i].data<T>(), m[i].data<T>(), v[i].data<T>(), params[i].numel(),
                         wds[i]});
    }
    if (!slots.empty()) cpu::adamw_step<T>(slots.data(), int64_t(slots.size()), lr, beta1, beta2, eps, step);
}

// ValueError when a tensor the kernel writes shares memory with any other tensor of the lists
// (the same tensor twice, or overlapping views): the kernels update them in place, piece by piece
// in parallel, so shared memory would be read after it was written, or written by two threads.
// Tensors only read (`written` false: gradients) may share memory with each other. One sort by
// address.
struct TensorList {
    const std::vector<Tensor>* tensors;
    const char* name;
    bool written;
};
void check_disjoint(std::initializer_list<TensorList> lists, const char* op) {
    struct Range {
        const char *begin, *end;
        const TensorList* list;
        size_t index;
    };
    std::vector<Range> ranges;
    for (const TensorList& l : lists)
        for (size_t i = 0; i < l.tensors->size(); i++) {
            const Tensor& t = (*l.tensors)[i];
            if (t.nbytes() == 0) continue;
            const char* p = static_cast<const char*>(t.raw_data());
            ranges.push_back({p, p + t.nbytes(), &l, i});
        }
    const std::less<const char*> before;  // a total order even across allocations
    std::sort(ranges.begin(), ranges.end(), [&](const Range& a, const Range& b) { return before(a.begin, b.begin); });
    // of the ranges so far, the one that ends last, and the written one that ends last: any range
    // overlapping an earlier one overlaps that earlier one's furthest-reaching peer too
    const Range *reach = nullptr, *reach_written = nullptr;
    for (const Range& r : ranges) {
        const Range* hit = r.list->written ? reach : reach_written;
        FG_CHECK(!hit || !before(r.begin, hit->end), op, ": ", hit ? hit->list->name : "", "[",
                 hit ? hit->index : 0, "] and ", r.list->name, "[", r.index,
                 "] share memory; the tensors must be distinct (not the same tensor twice, nor overlapping views)");
        if (!reach || before(reach->end, r.end)) reach = &r;
        if (r.list->written && (!reach_written || before(reach_written->end, r.end))) reach_written = &r;
    }
}

std::vector<cpu::FloatSpan> float_spans(const std::vector<Tensor>& tensors) {
    std::vector<cpu::FloatSpan> spans;
    for (const Tensor& t : tensors) spans.push_back({t.raw_data(), t.numel(), t.dtype() == DType::float64});
    return spans;
}

}  // namespace

void adamw_step(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                const std::vector<Tensor>& exp_avg, const std::vector<Tensor>& exp_avg_sq, double lr, double beta1,
                double beta2, double eps, const std::vector<double>& weight_decays, int64_t step) {
    const size_t n = params.size();
    FG_CHECK(grads.size() == n && exp_avg.size() == n && exp_avg_sq.size() == n && weight_decays.size() == n,
             "adamw_step: list lengths differ: ", n, " params, ", grads.size(), " grads, ", exp_avg.size(),
             " exp_avg, ", exp_avg_sq.size(), " exp_avg_sq, ", weight_decays.size(), " weight_decays");
    FG_CHECK(step >= 1, "adamw_step: step must be >= 1 (the first step is 1), got ", step);
    FG_CHECK(std::isfinite(lr) && lr >= 0, "adamw_step: lr must be a finite number >= 0, got ", lr);
    FG_CHECK(beta1 >= 0 && beta1 < 1, "adamw_step: beta1 must be in [0, 1), got ", beta1);
    FG_CHECK(beta2 >= 0 && beta2 < 1, "adamw_step: beta2 must be in [0, 1), got ", beta2);
    FG_CHECK(eps >= 0 && std::isfinite(eps), "adamw_step: eps must be a finite number >= 0, got ", eps);
    for (size_t i = 0; i < n; i++) {
        const Tensor& p = params[i];
        detail::check_defined(p, "adamw_step: a parameter");
        FG_CHECK_TYPE(is_floating(p.dtype()), "adamw_step: params[", i, "] must be float32 or float64, got ",
                      dtype_name(p.dtype()));
        check_cpu(p, "adamw_step");
        FG_CHECK(std::isfinite(weight_decays[i]) && weight_decays[i] >= 0, "adamw_step: weight_decays[", i,
                 "] must be a finite number >= 0, got ", weight_decays[i]);
        const Tensor* others[3] = {&grads[i], &exp_avg[i], &exp_avg_sq[i]};
        const char* names[3] = {"grads", "exp_avg", "exp_avg_sq"};
        for (int k = 0; k < 3; k++) {
            const Tensor& t = *others[k];
            detail::check_defined(t, names[k]);
            FG_CHECK_TYPE(t.dtype() == p.dtype(), "adamw_step: ", names[k], "[", i, "] has dtype ",
                          dtype_name(t.dtype()), ", but params[", i, "] has ", dtype_name(p.dtype()));
            FG_CHECK(t.shape() == p.shape(), "adamw_step: ", names[k], "[", i, "] has shape ", shape_str(t.shape()),
                     ", but params[", i, "] has ", shape_str(p.shape()));
            FG_CHECK(t.device() == p.device(), "adamw_step: ", names[k], "[", i, "] is on ", t.device().str(),
                     ", but params[", i, "] is on ", p.device().str());
        }
    }
    check_disjoint({{&params, "params", true},
                    {&grads, "grads", false},
                    {&exp_avg, "exp_avg", true},
                    {&exp_avg_sq, "exp_avg_sq", true}},
                   "adamw_step");
    run_adamw<float>(params, grads, exp_avg, exp_avg_sq, weight_decays, lr, beta1, beta2, eps, step);
    run_adamw<double>(params, grads, exp_avg, exp_avg_sq, weight_decays, lr, beta1, beta2, eps, step);
}

double grad_norm_sq(const std::vector<Tensor>& tensors) {
    for (size_t i = 0; i < tensors.size(); i++) {
        detail::check_defined(tensors[i], "grad_norm_sq: a tensor");
        FG_CHECK_TYPE(is_floating(tensors[i].dtype()), "grad_norm_sq: tensors[", i,
                      "] must be float32 or float64, got ", dtype_name(tensors[i].dtype()));
        check_cpu(tensors[i], "grad_norm_sq");
    }
    std::vector<cpu::FloatSpan> spans = float_spans(tensors);
    return cpu::sum_squares_many(spans.data(), int64_t(spans.size()));
}

void scale_all_(const std::vector<Tensor>& tensors, double s) {
    for (size_t i = 0; i < tensors.size(); i++) {
        detail::check_defined(tensors[i], "scale_all_: a tensor");
        FG_CHECK_TYPE(is_floating(tensors[i].dtype()), "scale_all_: tensors[", i,
                      "] must be float32 or float64, got ", dtype_name(tensors[i].dtype()));
        check_cpu(tensors[i], "scale_all_");
    }
    check_disjoint({{&tensors, "tensors", true}}, "scale_all_");
    std::vector<cpu::FloatSpan> spans = float_spans(tensors);
    cpu::scale_many(spans.data(), int64_t(spans.size()), s);
}

Tensor sample_tokens(const Tensor& logits, double temperature, int64_t top_k, double top_p,
                     const std::optional<Tensor>& rng_state) {
    detail::check_defined(logits, "logits");
    check_float(logits, "sample_tokens: logits");
    check_dim(logits, 2, "sample_tokens: logits (B,V)");
    check_cpu(logits, "sample_tokens");
    const int64_t B = logits.size(0), V = logits.size(1);
    FG_CHECK(V >= 1, "sample_tokens: logits of shape ", shape_str(logits.shape()), " has an empty vocabulary");
    FG_CHECK(temperature >= 0 && std::isfinite(temperature), "sample_tokens: temperature must be a finite number >= 0, got ",
             temperature);
    FG_CHECK(top_k >= 0, "sample_tokens: top_k must be >= 0 (0 turns it off), got ", top_k);
    FG_CHECK(top_p > 0 && top_p <= 1, "sample_tokens: top_p must be in (0, 1] (1 turns it off), got ", top_p);
    uint64_t* state = nullptr;
    if (rng_state) {
        const Tensor& s = *rng_state;
        detail::check_defined(s, "rng_state");
        check_dtype(s, DType::int64, "sample_tokens: rng_state");
        FG_CHECK(s.shape() == Shape{B}, "sample_tokens: rng_state has shape ", shape_str(s.shape()), ", expected (",
                 B, ",) for logits of shape ", shape_str(logits.shape()));
        check_cpu(s, "sample_tokens");
        state = reinterpret_cast<uint64_t*>(s.data<int64_t>());
    } else {
        FG_CHECK(temperature == 0, "sample_tokens: temperature ", temperature,
                 " > 0 needs an rng_state tensor (see rng_state(seed, n))");
    }
    Tensor out = Tensor::empty({B}, DType::int64, logits.device());
    dispatch_float(logits.dtype(), [&](auto z) {
        using T = decltype(z);
        cpu::sample_tokens<T>(out.data<int64_t>(), state, logits.data<T>(), B, V, temperature, top_k, top_p);
    });
    return out;
}

Tensor argmax(const Tensor& x) {
    detail::check_defined(x, "x");
    check_float(x, "argmax: x");
    check_dim(x, 2, "argmax: x (B,V)");
    check_cpu(x, "argmax");
    const int64_t B = x.size(0), V = x.size(1);
    FG_CHECK(V >= 1, "argmax: x of shape ", shape_str(x.shape()), " has empty rows");
    Tensor out = Tensor::empty({B}, DType::int64, x.device());
    dispatch_float(x.dtype(), [&](auto z) {
        using T = decltype(z);
        cpu::argmax_rows<T>(out.data<int64_t>(), x.data<T>(), B, V);
    });
    return out;
}

Tensor rng_state(uint64_t seed, int64_t n) {
    FG_CHECK(n >= 0, "rng_state: n must be >= 0, got ", n);
    Tensor out = Tensor::empty({n}, DType::int64);
    uint64_t s = seed;
    for (int64_t i = 0; i < n; i++) out.data<int64_t>()[i] = int64_t(cpu::splitmix64_next(&s));
    return out;
}

}  // namespace femtogpt::ops
