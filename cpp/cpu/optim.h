// The fused AdamW step over many parameter tensors at once.
//
// PyTorch's AdamW (decoupled weight decay), for each element, at step t >= 1:
//   p  = p * (1 - lr * wd)
//   m  = beta1 * m + (1 - beta1) * g
//   v  = beta2 * v + (1 - beta2) * g * g
//   p -= (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// which is p -= lr * mhat / (sqrt(vhat) + eps) with mhat = m / (1 - beta1^t),
// vhat = v / (1 - beta2^t), arranged as torch arranges it. The scalar factors
// are computed in double, the element updates in T. float32 runs the active
// ISA's kernel (optim_avx2.cpp / optim_avx512.cpp, with FMA); float64 and the
// generic ISA run the portable loop. The update is elementwise, so any thread
// count gives the same bits.
#pragma once

#include <cstdint>

namespace femtogpt::cpu {

// One parameter tensor and its state, n elements each; wd its weight decay.
template <typename T>
struct AdamWSlot {
    T* param;
    const T* grad;
    T* exp_avg;
    T* exp_avg_sq;
    int64_t n;
    double weight_decay;
};

// Updates every slot in place. All (slot, chunk) pieces run in one parallel
// loop, so many small tensors cost one OpenMP region, not one each.
template <typename T>
void adamw_step(const AdamWSlot<T>* slots, int64_t count, double lr, double beta1, double beta2, double eps,
                int64_t step);

// One slot, the formula above element by element in double.
template <typename T>
void adamw_step_reference(const AdamWSlot<T>& slot, double lr, double beta1, double beta2, double eps,
                          int64_t step);

}  // namespace femtogpt::cpu
