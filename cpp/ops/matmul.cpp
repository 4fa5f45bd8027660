#include "backend.h"
#include "cpu/matmul.h"
#include "ops/ops.h"

namespace femtogpt::ops {

namespace {

cpu::GeluApprox parse_gelu(const std::string& s, const char* which) {
    if (s == "tanh") return cpu::GeluApprox::tanh;
    if (s == "none") return cpu::GeluApprox::none;
    throw ValueError(fmt("matmul: unknown ", which, "='", s, "': expected 'tanh' or 'none' (GELU's approximate)"));
}

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
    if (fusion.gelu_a) f.approx = parse_gelu(*fusion.gelu_a, "gelu_a");
    if (fusion.gelu_b) {
        f.approx = parse_gelu(*fusion.gelu_b, "gelu_b");
        FG_CHECK(!fusion.gelu_a || *fusion.gelu_a == *fusion.gelu_b, "matmul: gelu_a='", *fusion.gelu_a,
                 "' and gelu_b='", *fusion.gelu_b, "' differ; one GELU form per product");
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
        FG_CHECK(a.dim() == 2 && b.dim() == 2, "matmul: bias, gelu_a, gelu_b and a_row_sums need 2-D a and b, ",
                 "got shapes ", shape_str(a.shape()), " and ", shape_str(b.shape()));
    if (fusion.bias) {
        const Tensor& bias = *fusion.bias;
        check_same_dtype(a, bias, "matmul: bias");
        check_same_device(a, bias, "matmul: bias");
        FG_CHECK(bias.dim() == 1 && bias.size(0) == N, "matmul: bias has shape ", shape_str(bias.shape()),
                 ", expected (", N, ",)");
    }
    if (fusion.a_row_sums) {
        const Tensor& sums = *fusion.a_row_sums;
        check_same_dtype(a, sums, "matmul: a_row_sums");
        check_same_device(a, sums, "matmul: a_row_sums");
        FG_CHECK(sums.dim() == 1 && sums.size(0) == M, "matmul: a_row_sums has shape ", shape_str(sums.shape()),
                 ", expected (", M, ",): one sum per row of op(a)");
    }
    Shape oshape = a.dim() == 3 ? Shape{batch, M, N} : Shape{M, N};
    Tensor result;
    if (out) {
        result = *out;
        check_same_dtype(a, result, "matmul: out");
        check_same_device(a, result, "matmul: out");
        FG_CHECK(result.shape() == oshape, "matmul: out has shape ", shape_str(result.shape()), ", expected ",
                 shape_str(oshape));
    } else {
        FG_CHECK(beta == 0.0, "matmul: beta=", beta, " needs an `out` tensor to accumulate into");
        result = Tensor::empty(oshape, a.dtype(), a.device());
    }
    FG_CHECK(a.device().type == DeviceType::cpu, "matmul: no kernel for device ", a.device().str());
    if (result.numel() == 0 && !fusion.a_row_sums) return result;  // (N == 0 may still have rows of a to sum)
    if (Ka == 0 && !fusion.bias && !fusion.a_row_sums) {  // empty sum: alpha * 0 + beta * out
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
