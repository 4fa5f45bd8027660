// Layout ops (permute, slice, slice_backward, concat): validation and dispatch.
#include <new>
#include <vector>

#include "cpu/layout.h"
#include "ops/tensorops.h"
#include "ops/tensorops_util.h"

namespace femtogpt::ops {

using detail::check_cpu;
using detail::wrap_dim;

namespace {

// x viewed as (outer, shape[dim], inner)
void split_at(const Shape& s, int64_t dim, int64_t& outer, int64_t& inner) {
    outer = inner = 1;
    for (int64_t d = 0; d < int64_t(s.size()); d++) {
        if (d < dim) outer *= s[size_t(d)];
        if (d > dim) inner *= s[size_t(d)];
    }
}

}  // namespace

Tensor permute(const Tensor& x, const std::vector<int64_t>& dims) {
    detail::check_defined(x, "x");
    check_cpu(x, "permute");
    const int64_t nd = x.dim();
    FG_CHECK(nd <= cpu::kMaxPermuteDims, "permute: tensors of up to ", cpu::kMaxPermuteDims,
             " dimensions are supported, got shape ", shape_str(x.shape()));
    FG_CHECK(int64_t(dims.size()) == nd, "permute: dims has ", dims.size(), " entries for a tensor of shape ",
             shape_str(x.shape()), "; expected ", nd);
    int idims[cpu::kMaxPermuteDims];
    bool seen[cpu::kMaxPermuteDims] = {};
    Shape oshape(size_t(nd), 0);
    for (int64_t i = 0; i < nd; i++) {
        int64_t d = wrap_dim(dims[size_t(i)], nd, "permute");
        FG_CHECK(!seen[d], "permute: dims ", shape_str(Shape(dims.begin(), dims.end())),
                 " is not a permutation of 0..", nd - 1, " (", d, " repeats)");
        seen[d] = true;
        idims[i] = int(d);
        oshape[size_t(i)] = x.shape()[size_t(d)];
    }
    Tensor out = Tensor::empty(oshape, x.dtype(), x.device());
    if (out.numel() == 0) return out;
    cpu::permute(out.raw_data(), x.raw_data(), x.shape().data(), idims, int(nd), dtype_size(x.dtype()));
    return out;
}

Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t length) {
    detail::check_defined(x, "x");
    check_cpu(x, "slice");
    FG_CHECK(x.dim() >= 1, "slice: x is 0-D");
    dim = wrap_dim(dim, x.dim(), "slice");
    const int64_t D = x.shape()[size_t(dim)];
    FG_CHECK(start >= 0 && length >= 0 && start <= D - length, "slice: [", start, ", ", start, " + ", length,
             ") is out of range for dim ", dim, " of size ", D, " (x has shape ", shape_str(x.shape()), ")");
    Shape oshape = x.shape();
    oshape[size_t(dim)] = length;
    Tensor out = Tensor::empty(oshape, x.dtype(), x.device());
    int64_t outer, inner;
    split_at(x.shape(), dim, outer, inner);
    const int64_t es = int64_t(dtype_size(x.dtype()));
    cpu::copy_blocks(out.raw_data(), length * inner * es, static_cast<char*>(x.raw_data()) + start * inner * es,
                     D * inner * es, outer, length * inner * es);
    return out;
}

Tensor slice_backward(const Tensor& grad, const Shape& full_shape, int64_t dim, int64_t start) {
    detail::check_defined(grad, "grad");
    check_cpu(grad, "slice_backward");
    FG_CHECK(grad.dim() >= 1 && grad.dim() == int64_t(full_shape.size()), "slice_backward: grad of shape ",
             shape_str(grad.shape()), " does not match full_shape ", shape_str(full_shape));
    dim = wrap_dim(dim, grad.dim(), "slice_backward");
    const int64_t D = full_shape[size_t(dim)], len = grad.shape()[size_t(dim)];
    for (int64_t d = 0; d < grad.dim(); d++)
        FG_CHECK(d == dim || grad.shape()[size_t(d)] == full_shape[size_t(d)], "slice_backward: grad of shape ",
                 shape_str(grad.shape()), " differs from full_shape ", shape_str(full_shape), " outside dim ", dim);
    FG_CHECK(start >= 0 && start <= D - len, "slice_backward: [", start, ", ", start, " + ", len,
             ") is out of range for dim ", dim, " of size ", D);
    Tensor out = Tensor::zeros(full_shape, grad.dtype(), grad.device());
    int64_t outer, inner;
    split_at(full_shape, dim, outer, inner);
    const int64_t es = int64_t(dtype_size(grad.dtype()));
    cpu::copy_blocks(static_cast<char*>(out.raw_data()) + start * inner * es, D * inner * es, grad.raw_data(),
                     len * inner * es, outer, len * inner * es);
    return out;
}

Tensor concat(const std::vector<Tensor>& xs, int64_t dim) {
    FG_CHECK(!xs.empty(), "concat: needs at least one tensor");
    const Tensor& x0 = xs[0];
    for (size_t i = 0; i < xs.size(); i++) detail::check_defined(xs[i], "concat: a tensor");
    FG_CHECK(x0.dim() >= 1, "concat: tensors must be at least 1-D, got shape ", shape_str(x0.shape()));
    dim = wrap_dim(dim, x0.dim(), "concat");
    Shape oshape = x0.shape();
    oshape[size_t(dim)] = 0;
    for (size_t i = 0; i < xs.size(); i++) {
        const Tensor& x = xs[i];
        check_same_dtype(x0, x, "concat");
        check_same_device(x0, x, "concat");
        bool ok = x.dim() == x0.dim();
        for (int64_t d = 0; ok && d < x0.dim(); d++) ok = d == dim || x.shape()[size_t(d)] == x0.shape()[size_t(d)];
        FG_CHECK(ok, "concat: tensor ", i, " has shape ", shape_str(x.shape()), ", which differs from tensor 0's ",
                 shape_str(x0.shape()), " outside dim ", dim);
        if (x.shape()[size_t(dim)] > (int64_t(1) << 60) - oshape[size_t(dim)])
            throw std::bad_alloc();  // a dimension past any tensor (MemoryError, as Tensor::empty's)
        oshape[size_t(dim)] += x.shape()[size_t(dim)];
    }
    check_cpu(x0, "concat");
    Tensor out = Tensor::empty(oshape, x0.dtype(), x0.device());
    int64_t outer, inner;
    split_at(oshape, dim, outer, inner);
    const int64_t es = int64_t(dtype_size(x0.dtype())), row = oshape[size_t(dim)] * inner * es;
    int64_t offset = 0;
    for (const Tensor& x : xs) {
        int64_t block = x.shape()[size_t(dim)] * inner * es;
        cpu::copy_blocks(static_cast<char*>(out.raw_data()) + offset, row, x.raw_data(), block, outer, block);
        offset += block;
    }
    return out;
}

}  // namespace femtogpt::ops
