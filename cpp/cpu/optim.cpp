#include "cpu/optim.h"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "cpu/chunking.h"
#include "cpu/isa.h"
#include "cpu/tensorops_isa.h"

namespace femtogpt::cpu {

namespace {

// The per-step scalars, computed once in double.
struct AdamWScalars {
    double beta1, beta2, one_minus_beta1, one_minus_beta2, step_size, inv_bc2_sqrt, eps;
};

AdamWScalars make_scalars(double lr, double beta1, double beta2, double eps, int64_t step) {
    double bc1 = 1.0 - std::pow(beta1, double(step));
    double bc2 = 1.0 - std::pow(beta2, double(step));
    return {beta1, beta2, 1.0 - beta1, 1.0 - beta2, lr / bc1, 1.0 / std::sqrt(bc2), eps};
}

template <typename T>
void adamw_range(T* __restrict p, const T* __restrict g, T* __restrict m, T* __restrict v, int64_t n, T decay,
                 const AdamWScalars& s) {
    const T b1 = T(s.beta1), b2 = T(s.beta2), c1 = T(s.one_minus_beta1), c2 = T(s.one_minus_beta2);
    const T step_size = T(s.step_size), inv_bc2_sqrt = T(s.inv_bc2_sqrt), eps = T(s.eps);
    for (int64_t i = 0; i < n; i++) {
        T gi = g[i];
        T mi = b1 * m[i] + c1 * gi;
        T vi = b2 * v[i] + c2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        T denom = std::sqrt(vi) * inv_bc2_sqrt + eps;
        p[i] = p[i] * decay - step_size * mi / denom;
    }
}

// One piece with the active ISA's kernel (float32) or the portable loop.
template <typename T>
void adamw_piece(Isa isa, T* p, const T* g, T* m, T* v, int64_t n, T decay, const AdamWScalars& s) {
    if constexpr (std::is_same_v<T, float>) {
        if (isa != Isa::generic) {
            const AdamWConstsF32 c{float(s.beta1),     float(s.beta2),        float(s.one_minus_beta1),
                                   float(s.one_minus_beta2), float(s.step_size), float(s.inv_bc2_sqrt),
                                   float(s.eps),       decay};
            if (isa == Isa::avx512)
                adamw_f32_avx512(p, g, m, v, n, c);
            else
                adamw_f32_avx2(p, g, m, v, n, c);
            return;
        }
    }
    adamw_range(p, g, m, v, n, decay, s);
}

}  // namespace

template <typename T>
void adamw_step(const AdamWSlot<T>* slots, int64_t count, double lr, double beta1, double beta2, double eps,
                int64_t step) {
    const AdamWScalars s = make_scalars(lr, beta1, beta2, eps, step);
    const Isa isa = active_isa();
    // (slot, first element) of every piece
    std::vector<std::pair<int64_t, int64_t>> pieces;
    for (int64_t k = 0; k < count; k++)
        for (int64_t b = 0; b < slots[k].n; b += kChunk) pieces.emplace_back(k, b);
    const int64_t np = int64_t(pieces.size());
#pragma omp parallel for schedule(static) if (np > 1)
    for (int64_t i = 0; i < np; i++) {
        const AdamWSlot<T>& sl = slots[pieces[size_t(i)].first];
        int64_t b = pieces[size_t(i)].second, len = std::min(kChunk, sl.n - b);
        T decay = T(1.0 - lr * sl.weight_decay);
        adamw_piece(isa, sl.param + b, sl.grad + b, sl.exp_avg + b, sl.exp_avg_sq + b, len, decay, s);
    }
}

template <typename T>
void adamw_step_reference(const AdamWSlot<T>& sl, double lr, double beta1, double beta2, double eps, int64_t step) {
    double bc1 = 1.0 - std::pow(beta1, double(step));
    double bc2 = 1.0 - std::pow(beta2, double(step));
    for (int64_t i = 0; i < sl.n; i++) {
        double p = double(sl.param[i]) * (1.0 - lr * sl.weight_decay), g = double(sl.grad[i]);
        double m = beta1 * double(sl.exp_avg[i]) + (1.0 - beta1) * g;
        double v = beta2 * double(sl.exp_avg_sq[i]) + (1.0 - beta2) * g * g;
        double mhat = m / bc1, vhat = v / bc2;
        sl.param[i] = T(p - lr * mhat / (std::sqrt(vhat) + eps));
        sl.exp_avg[i] = T(m);
        sl.exp_avg_sq[i] = T(v);
    }
}

template void adamw_step<float>(const AdamWSlot<float>*, int64_t, double, double, double, double, int64_t);
template void adamw_step<double>(const AdamWSlot<double>*, int64_t, double, double, double, double, int64_t);
template void adamw_step_reference<float>(const AdamWSlot<float>&, double, double, double, double, int64_t);
template void adamw_step_reference<double>(const AdamWSlot<double>&, double, double, double, double, int64_t);

}  // namespace femtogpt::cpu
