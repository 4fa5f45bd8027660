#include "backend.h"
#include "cpu/matmul.h"
#include "ops/nn_common.h"
#include "ops/ops.h"
#include "ops/tensorops_util.h"

namespace femtogpt::ops {

namespace {

template <typename T>
void run_gemm(const Tensor& a, const Tensor& b, Tensor& out, int64_t batch, int64_t M, int64_t N, int64_t K,
              bool ta, bool tb, bool b_shared, double alpha, double beta, const ops::MatmulFusion& fusion) {
    int64_t lda = ta ? M : K, ldb = tb ? K : N;
    if (!fusion.any()) {
        cpu::gemm_batched<T>(out.data<T>(), M * N, N, a.data<T>(), M * K, lda, b.data<T>(), b_shared ? 0 : K * N,
                             ldb, batch, M, N, K, ta, tb, T(alpha), T(beta));
        return;
    }
    cpu::GemmFusion<T> f;
    f.gelu_a = bool(fusion.gelu_a);
    f.gelu_b = bool(fusion.gelu_b);
    if (fusion.gelu_a) f.approx = nn_detail::parse_gelu_approx(*fusion.gelu_a, "matmul", "gelu_a");
    if (fusion.gelu_b) {
        f.approx = nn_detail::parse_gelu_approx(*fusion.gelu_b, "matmul", "gelu_b");
        FG_CHECK(!fusion.gelu_a || *fusion.gelu_a == *fusion.gelu_b, "matmul: gelu_a='", *fusion.gelu_a,
                 "' and gelu_b='", *fusion.gelu_b, "' differ; one GELU form per product");
    }
    if (fusion.gelu_grad) {
        f.approx = nn_detail::parse_gelu_approx(*fusion.gelu_grad, "matmul", "gelu_grad");
        FG_CHECK((!fusion.gelu_a || *fusion.gelu_a == *fusion.gelu_grad) &&
                     (!fusion.gelu_b || *fusion.gelu_b == *fusion.gelu_grad),
                 "matmul: gelu_grad='", *fusion.gelu_grad, "' differs from the gelu_a/gelu_b form; one GELU form "
                 "per product");
        f.gelu_grad = fusion.gelu_grad_of->data<T>();
        f.ld_gelu_grad = N;
    }
    f.bias = fusion.bias ? fusion.bias->data<T>() : nullptr;
    f.a_row_sums = fusion.a_row_sums ? fusion.a_row_sums->data<T>() : nullptr;
    cpu::gemm_fused<T>(out.data<T>(), N, a.data<T>(), lda, b.data<T>(), ldb, M, N, K, ta, tb, T(alpha), T(beta), f);
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b, bool ta, bool tb, const std::optional<Tensor>& out, double alpha,
              double beta) {
    return matmul(a, b, ta, tb, out, alpha, beta, MatmulFusion{});
}

Tensor matmul(const Tensor& a, const Tensor& b, bool ta, bool tb, const std::optional<Tensor>& out, double alpha,
              double beta, const MatmulFusion& fusion) {
    check_float(a, "matmul: a");
    check_float(b, "matmul: b");
    check_same_dtype(a, b, "matmul");
    check_same_device(a, b, "matmul");
    FG_CHECK((a.dim() == 2 && b.dim() == 2) || (a.dim() == 3 && (b.dim() == 3 || b.dim() == 2)),
             "matmul: expected 2-D x 2-D, 3-D x 3-D or 3-D x 2-D tensors, got shapes ", shape_str(a.shape()), " and ",
             shape_str(b.shape()));
    int64_t batch = a.dim() == 3 ? a.size(0) : 1;
    bool b_shared = b.dim() == 2;
    if (a.dim() == 3 && b.dim() == 3)
        FG_CHECK(b.size(0) == batch, "matmul: batch sizes differ: a ", shape_str(a.shape()), ", b ",
                 shape_str(b.shape()));
    int64_t M = ta ? a.size(-1) : a.size(-2), Ka = ta ? a.size(-2) : a.size(-1);
    int64_t Kb = tb ? b.size(-1) : b.size(-2), N = tb ? b.size(-2) : b.size(-1);
    FG_CHECK(Ka == Kb, "matmul: inner dimensions differ: a ", shape_str(a.shape()), (ta ? " (transposed)" : ""),
             " has K=", Ka, ", b ", shape_str(b.shape()), (tb ? " (transposed)" : ""), " has K=", Kb);
    if (fusion.any())
        FG_CHECK(a.dim() == 2 && b.dim() == 2, "matmul: bias, gelu_a, gelu_b, a_row_sums and gelu_grad need 2-D a ",
                 "and b, got shapes ", shape_str(a.shape()), " and ", shape_str(b.shape()));
    // bias (N) and a_row_sums (M): vectors of a's dtype and device
    auto check_vector = [&](const std::optional<Tensor>& t, const char* what, int64_t n, const char* meaning) {
        if (!t) return;
        check_same_dtype(a, *t, what);
        check_same_device(a, *t, what);
        FG_CHECK(t->dim() == 1 && t->size(0) == n, what, " has shape ", shape_str(t->shape()), ", expected (", n,
                 ",)", meaning);
    };
    check_vector(fusion.bias, "matmul: bias", N, "");
    check_vector(fusion.a_row_sums, "matmul: a_row_sums", M, ": one sum per row of op(a)");
    Shape oshape = a.dim() == 3 ? Shape{batch, M, N} : Shape{M, N};
    if (fusion.gelu_grad || fusion.gelu_grad_of) {
        FG_CHECK(fusion.gelu_grad && fusion.gelu_grad_of, "matmul: gelu_grad (the GELU form) and gelu_grad_of ",
                 "(where its derivative is taken) go together");
        const Tensor& g = *fusion.gelu_grad_of;
        check_same_dtype(a, g, "matmul: gelu_grad_of");
        check_same_device(a, g, "matmul: gelu_grad_of");
        FG_CHECK(g.shape() == oshape, "matmul: gelu_grad_of has shape ", shape_str(g.shape()), ", expected ",
                 shape_str(oshape), " (the product's)");
        FG_CHECK(beta == 0.0 && !fusion.bias, "matmul: gelu_grad takes neither beta nor a bias (it multiplies the ",
                 "product alone)");
        if (out && detail::overlap(*out, g)) {
            FG_CHECK(out->raw_data() == g.raw_data(), "matmul: out shares memory with gelu_grad_of without being the same ",
                     "tensor (it may be gelu_grad_of itself, or separate memory)");
            FG_CHECK(a.dtype() == DType::float32 ? cpu::gemm_gelu_grad_in_place<float>(M, N, Ka)
                                                 : cpu::gemm_gelu_grad_in_place<double>(M, N, Ka),
                     "matmul: out is gelu_grad_of; that works only where the product is made in one pass over K, ",
                     "not for (M, N, K) = (", M, ", ", N, ", ", Ka, ")");
        }
    }
    Tensor result;
    if (out) {
        result = *out;
        check_same_dtype(a, result, "matmul: out");
        check_same_device(a, result, "matmul: out");
        FG_CHECK(result.shape() == oshape, "matmul: out has shape ", shape_str(result.shape()), ", expected ",
                 shape_str(oshape));
        // the product is written in tiles while a, b and bias are still being read
        FG_CHECK(!detail::overlap(result, a) && !detail::overlap(result, b) &&
                     !(fusion.bias && detail::overlap(result, *fusion.bias)),
                 "matmul: out shares memory with a, b or bias; it must be a separate tensor");
    } else {
        FG_CHECK(beta == 0.0, "matmul: beta=", beta, " needs an `out` tensor to accumulate into");
        result = Tensor::empty(oshape, a.dtype(), a.device());
    }
    if (fusion.a_row_sums) {  // written as a is packed
        const Tensor& sums = *fusion.a_row_sums;
        FG_CHECK(!detail::overlap(sums, a) && !detail::overlap(sums, b) && !detail::overlap(sums, result) &&
                     !(fusion.bias && detail::overlap(sums, *fusion.bias)) &&
                     !(fusion.gelu_grad_of && detail::overlap(sums, *fusion.gelu_grad_of)),
                 "matmul: a_row_sums shares memory with another operand; it must be a separate tensor");
    }
    FG_CHECK(a.device().type == DeviceType::cpu, "matmul: no kernel for device ", a.device().str());
    if (result.numel() == 0 && !fusion.a_row_sums) return result;  // (N == 0 may still have rows of a to sum)
    if (Ka == 0 && !fusion.bias && !fusion.a_row_sums && !fusion.gelu_grad) {  // empty sum: alpha * 0 + beta * out
        if (beta == 0.0) {
            backend_for(result.device()).fill_zero(result.raw_data(), result.nbytes());
        } else if (a.dtype() == DType::float32) {
            for (int64_t i = 0; i < result.numel(); i++) result.data<float>()[i] *= float(beta);
        } else {
            for (int64_t i = 0; i < result.numel(); i++) result.data<double>()[i] *= beta;
        }
        return result;
    }
    if (a.dtype() == DType::float32)
        run_gemm<float>(a, b, result, batch, M, N, Ka, ta, tb, b_shared, alpha, beta, fusion);
    else
        run_gemm<double>(a, b, result, batch, M, N, Ka, ta, tb, b_shared, alpha, beta, fusion);
    return result;
}

}  // namespace femtogpt::ops
