// Tensor-level ops: cross-entropy (fused with log-softmax) and embedding.
#include <cstring>
#include <vector>

#include "cpu/embedding.h"
#include "cpu/loss.h"
#include "ops/nn.h"
#include "ops/nn_common.h"
#include "pool.h"

namespace femtogpt::ops {

using namespace nn_detail;

namespace {

enum class Reduction { mean, sum, none };

Reduction parse_reduction(const std::string& s, const char* op) {
    if (s == "mean") return Reduction::mean;
    if (s == "sum") return Reduction::sum;
    if (s == "none") return Reduction::none;
    throw ValueError(fmt(op, ": unknown reduction='", s, "': expected 'mean', 'sum' or 'none'"));
}

// Every index must lie in [0, V), or equal `ignore` when allow_ignore. Checked
// before any kernel runs, so a bad index is an IndexError, never a memory error.
template <typename I>
int64_t check_indices(const I* idx, int64_t n, int64_t V, bool allow_ignore, int64_t ignore, const char* op,
                      const char* what) {
    int64_t count = 0;  // indices that are not ignored
    for (int64_t i = 0; i < n; i++) {
        const int64_t t = int64_t(idx[i]);
        if (allow_ignore && t == ignore) continue;
        if (t < 0 || t >= V) {
            if (allow_ignore)
                throw IndexError(fmt(op, ": ", what, " ", t, " at position ", i, " is out of range for V=", V,
                                     " classes (expected 0 <= ", what, " < ", V, ", or ignore_index=", ignore, ")"));
            throw IndexError(fmt(op, ": ", what, " ", t, " at position ", i, " is out of range for V=", V,
                                 " rows (expected 0 <= ", what, " < ", V, ")"));
        }
        count++;
    }
    return count;
}

int64_t check_indices(const Tensor& idx, int64_t V, bool allow_ignore, int64_t ignore, const char* op,
                      const char* what) {
    int64_t count = 0;
    dispatch_index(idx.dtype(), [&](auto tag) {
        using I = decltype(tag);
        count = check_indices(idx.data<I>(), idx.numel(), V, allow_ignore, ignore, op, what);
    });
    return count;
}

// A private copy of an index tensor (a few bytes per index, beside a kernel that moves a row of
// floats per index). The checks and the kernel must read the same indices: the GIL is released
// while they run, and another Python thread may write to idx's memory through a numpy view.
Tensor private_indices(const Tensor& idx) {
    Tensor copy = Tensor::empty(idx.shape(), idx.dtype(), idx.device());
    if (idx.nbytes()) std::memcpy(copy.raw_data(), idx.raw_data(), idx.nbytes());
    return copy;
}

// logits (N,V), targets (N): the shared checks of forward and backward; returns the non-ignored
// count, and in `checked` the targets that were checked (private_indices).
int64_t check_ce_args(const Tensor& logits, const Tensor& targets, int64_t ignore_index, const char* op,
                      Tensor& checked) {
    FG_CHECK_TYPE(is_floating(logits.dtype()), op, ": logits must be a float32 or float64 tensor, got ",
                  dtype_name(logits.dtype()));
    FG_CHECK(logits.dim() == 2, op, ": logits must be 2-D (N, V), got shape ", shape_str(logits.shape()));
    check_index_tensor(targets, op, "targets");
    FG_CHECK(targets.dim() == 1 && targets.size(0) == logits.size(0), op, ": targets has shape ",
             shape_str(targets.shape()), ", expected (", logits.size(0), ",): one per row of logits ",
             shape_str(logits.shape()));
    check_same_device(logits, targets, op);
    check_cpu(logits, op);
    const int64_t N = logits.size(0), V = logits.size(1);
    FG_CHECK(V >= 1 || N == 0, op, ": logits ", shape_str(logits.shape()), " has no classes (V = 0)");
    checked = private_indices(targets);
    return check_indices(checked, V, true, ignore_index, op, "target");
}

}  // namespace

// ---------------------------------------------------------------- cross-entropy

std::pair<Tensor, Tensor> cross_entropy_forward(const Tensor& logits, const Tensor& targets_arg, int64_t ignore_index,
                                                const std::string& reduction, bool reference) {
    const char* op = "cross_entropy_forward";
    const Reduction red = parse_reduction(reduction, op);
    Tensor targets;
    const int64_t count = check_ce_args(logits, targets_arg, ignore_index, op, targets);
    const int64_t N = logits.size(0), V = logits.size(1);
    Tensor lse = Tensor::empty({N}, logits.dtype(), logits.device());
    Tensor loss = Tensor::empty(red == Reduction::none ? Shape{N} : Shape{}, logits.dtype(), logits.device());
    dispatch_float(logits.dtype(), [&](auto ttag) {
        using T = decltype(ttag);
        dispatch_index(targets.dtype(), [&](auto itag) {
            using I = decltype(itag);
            auto kernel = reference ? cpu::cross_entropy_forward_reference<T, I> : cpu::cross_entropy_forward<T, I>;
            if (red == Reduction::none) {
                kernel(loss.data<T>(), lse.data<T>(), logits.data<T>(), targets.data<I>(), N, V, ignore_index);
                return;
            }
            PoolBuffer rows(size_t(N) * sizeof(T));
            kernel(rows.data<T>(), lse.data<T>(), logits.data<T>(), targets.data<I>(), N, V, ignore_index);
            double total = 0;  // in row order: deterministic
            for (int64_t n = 0; n < N; n++) total += double(rows.data<T>()[n]);
            // mean over zero targets is 0 (torch gives NaN): a batch of only padding contributes nothing
            if (red == Reduction::mean) total = count ? total / double(count) : 0.0;
            loss.data<T>()[0] = T(total);
        });
    });
    return {loss, lse};
}

Tensor cross_entropy_backward(const Tensor& dloss, const Tensor& logits, const Tensor& targets_arg, const Tensor& lse,
                              int64_t ignore_index, const std::string& reduction, bool reference) {
    const char* op = "cross_entropy_backward";
    const Reduction red = parse_reduction(reduction, op);
    Tensor targets;
    const int64_t count = check_ce_args(logits, targets_arg, ignore_index, op, targets);
    const int64_t N = logits.size(0), V = logits.size(1);
    check_float_like(dloss, logits, op, "dloss");
    const Shape dshape = red == Reduction::none ? Shape{N} : Shape{};
    FG_CHECK(dloss.shape() == dshape, op, ": dloss has shape ", shape_str(dloss.shape()), ", expected ",
             shape_str(dshape), " for reduction='", reduction, "' and logits ", shape_str(logits.shape()));
    check_float_like(lse, logits, op, "lse");
    FG_CHECK(lse.shape() == Shape{N}, op, ": lse has shape ", shape_str(lse.shape()), ", expected (", N,
             ",): one per row of logits ", shape_str(logits.shape()));
    Tensor dlogits = Tensor::empty(logits.shape(), logits.dtype(), logits.device());
    dispatch_float(logits.dtype(), [&](auto ttag) {
        using T = decltype(ttag);
        dispatch_index(targets.dtype(), [&](auto itag) {
            using I = decltype(itag);
            auto kernel = reference ? cpu::cross_entropy_backward_reference<T, I> : cpu::cross_entropy_backward<T, I>;
            T g = 0;
            const T* gp = dloss.data<T>();
            int64_t stride = 1;
            if (red != Reduction::none) {
                double d = double(dloss.data<T>()[0]);
                if (red == Reduction::mean) d = count ? d / double(count) : 0.0;
                g = T(d);
                gp = &g;
                stride = 0;
            }
            kernel(dlogits.data<T>(), gp, stride, logits.data<T>(), targets.data<I>(), lse.data<T>(), N, V,
                   ignore_index);
        });
    });
    return dlogits;
}

// ---------------------------------------------------------------- embedding

Tensor embedding_forward(const Tensor& idx_arg, const Tensor& weight) {
    const char* op = "embedding_forward";
    check_index_tensor(idx_arg, op, "idx");
    FG_CHECK_TYPE(is_floating(weight.dtype()), op, ": weight must be a float32 or float64 tensor, got ",
                  dtype_name(weight.dtype()));
    FG_CHECK(weight.dim() == 2, op, ": weight must be 2-D (V, C), got shape ", shape_str(weight.shape()));
    check_same_device(idx_arg, weight, op);
    check_cpu(weight, op);
    const int64_t V = weight.size(0), C = weight.size(1), n = idx_arg.numel();
    const Tensor idx = private_indices(idx_arg);
    check_indices(idx, V, false, 0, op, "index");
    Shape oshape = idx.shape();
    oshape.push_back(C);
    Tensor out = Tensor::empty(oshape, weight.dtype(), weight.device());
    dispatch_float(weight.dtype(), [&](auto ttag) {
        using T = decltype(ttag);
        dispatch_index(idx.dtype(), [&](auto itag) {
            using I = decltype(itag);
            cpu::embedding_forward<T, I>(out.data<T>(), idx.data<I>(), weight.data<T>(), n, C);
        });
    });
    return out;
}

Tensor embedding_backward(const Tensor& dout, const Tensor& idx_arg, int64_t V, bool reference) {
    const char* op = "embedding_backward";
    check_index_tensor(idx_arg, op, "idx");
    FG_CHECK_TYPE(is_floating(dout.dtype()), op, ": dout must be a float32 or float64 tensor, got ",
                  dtype_name(dout.dtype()));
    FG_CHECK(V >= 0, op, ": V must be >= 0, got ", V);
    FG_CHECK(dout.dim() == idx_arg.dim() + 1, op, ": dout has shape ", shape_str(dout.shape()),
             " but idx has shape ", shape_str(idx_arg.shape()), "; expected dout of shape (*idx.shape, C)");
    for (int64_t d = 0; d < idx_arg.dim(); d++)
        FG_CHECK(dout.size(d) == idx_arg.size(d), op, ": dout has shape ", shape_str(dout.shape()),
                 " but idx has shape ", shape_str(idx_arg.shape()), "; expected dout of shape (*idx.shape, C)");
    check_same_device(idx_arg, dout, op);
    check_cpu(dout, op);
    const int64_t C = dout.size(-1), n = idx_arg.numel();
    const Tensor idx = private_indices(idx_arg);
    check_indices(idx, V, false, 0, op, "index");
    Tensor dweight = Tensor::empty({V, C}, dout.dtype(), dout.device());
    dispatch_float(dout.dtype(), [&](auto ttag) {
        using T = decltype(ttag);
        dispatch_index(idx.dtype(), [&](auto itag) {
            using I = decltype(itag);
            auto kernel = reference ? cpu::embedding_backward_reference<T, I> : cpu::embedding_backward<T, I>;
            kernel(dweight.data<T>(), dout.data<T>(), idx.data<I>(), n, V, C);
        });
    });
    return dweight;
}

}  // namespace femtogpt::ops
