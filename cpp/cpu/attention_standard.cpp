// Standard attention: the reference the flash path is held to. It materializes the
// probabilities P (Tq,Tk) of every head, saves them for backward, and does its products
// with cpu::gemm. With at least as many heads as threads, threads take whole heads (one
// parallel region; gemm runs single-threaded inside it); otherwise heads go one after the
// other and gemm and the row-wise softmax parallelize within each. cpu::gemm sums every
// element in the same order whatever its thread count and the softmax is per row, so the
// results are bitwise the same for any thread count and either schedule.
#include <algorithm>
#include <cmath>
#include <limits>

#include "cpu/attention.h"
#include "cpu/matmul.h"
#include "parallel.h"
#include "pool.h"

namespace femtogpt::cpu {

// out (B,H,Tq,D), probs (B,H,Tq,Tk) <- q (B,H,Tq,D), k (B,H,Tk,D), v (B,H,Tk,D)
template <typename T>
void attention_standard_forward(Heads<T> out, T* probs, Heads<const T> q, Heads<const T> k, Heads<const T> v,
                                int64_t B, int64_t H, int64_t Tq, int64_t Tk, int64_t D, bool causal, T scale) {
    if (Tq == 0 || (Tk == 0 && D == 0)) return;  // nothing to write (and B*H may be any size)
    const int64_t off = Tk - Tq;  // causal: query i sees keys 0..off+i
    auto head = [&](int64_t bh) {
        const int64_t b = bh / H, h = bh % H;
        const T* qh = q.at(b, h);
        const T* kh = k.at(b, h);
        const T* vh = v.at(b, h);
        T* oh = out.at(b, h);
        T* ph = probs + bh * Tq * Tk;
        if (Tk == 0) {
            for (int64_t i = 0; i < Tq; i++) std::fill_n(oh + i * out.row, D, T(0));
            return;
        }
        // S = scale * Q K^T
        gemm<T>(ph, Tk, qh, q.row, kh, k.row, Tq, Tk, D, false, true, scale, T(0));
        // P = softmax(S) over the visible keys; masked entries are exactly 0
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < Tq; i++) {
            T* row = ph + i * Tk;
            int64_t n = causal ? off + i + 1 : Tk;
            T mx = -std::numeric_limits<T>::infinity();
            for (int64_t j = 0; j < n; j++) mx = row[j] > mx ? row[j] : mx;
            T sum = 0;
            for (int64_t j = 0; j < n; j++) {
                row[j] = std::exp(row[j] - mx);
                sum += row[j];
            }
            T inv = T(1) / sum;
            for (int64_t j = 0; j < n; j++) row[j] *= inv;
            for (int64_t j = n; j < Tk; j++) row[j] = T(0);
        }
        // O = P V
        gemm<T>(oh, out.row, ph, Tk, vh, v.row, Tq, D, Tk, false, false, T(1), T(0));
    };
    const int64_t BH = B * H;
    if (BH >= num_threads() && num_threads() > 1) {
#pragma omp parallel for schedule(dynamic, 1)
        for (int64_t bh = 0; bh < BH; bh++) head(bh);
    } else {
        for (int64_t bh = 0; bh < BH; bh++) head(bh);
    }
}

// dq (B,H,Tq,D), dk, dv (B,H,Tk,D) <- dout, q, out (B,H,Tq,D), k, v (B,H,Tk,D), probs (B,H,Tq,Tk)
template <typename T>
void attention_standard_backward(Heads<T> dq, Heads<T> dk, Heads<T> dv, Heads<const T> dout, Heads<const T> q,
                                 Heads<const T> k, Heads<const T> v, Heads<const T> out, const T* probs, int64_t B,
                                 int64_t H, int64_t Tq, int64_t Tk, int64_t D, bool causal, T scale) {
    (void)causal;  // masked probabilities are 0, so the mask needs no second look
    const int64_t BH = B * H;
    if (Tq == 0 || Tk == 0) {  // every gradient is zero; the loop is as long as what it writes
        if (D == 0 || (Tq == 0 && Tk == 0)) return;
        for (int64_t bh = 0; bh < BH; bh++) {
            const int64_t b = bh / H, h = bh % H;
            for (int64_t i = 0; i < Tq; i++) std::fill_n(dq.at(b, h) + i * dq.row, D, T(0));
            for (int64_t i = 0; i < Tk; i++) std::fill_n(dk.at(b, h) + i * dk.row, D, T(0));
            for (int64_t i = 0; i < Tk; i++) std::fill_n(dv.at(b, h) + i * dv.row, D, T(0));
        }
        return;
    }
    const bool by_head = BH >= num_threads() && num_threads() > 1;
    PoolBuffer ds_buf(size_t((by_head ? num_threads() : 1) * Tq * Tk) * sizeof(T));  // dP, then dS, per thread
    auto head = [&](int64_t bh, T* ds) {
        const int64_t b = bh / H, h = bh % H;
        const T* qh = q.at(b, h);
        const T* kh = k.at(b, h);
        const T* vh = v.at(b, h);
        const T* oh = out.at(b, h);
        const T* doh = dout.at(b, h);
        const T* ph = probs + bh * Tq * Tk;
        // O = P V  ->  dV = P^T dO, dP = dO V^T
        gemm<T>(dv.at(b, h), dv.row, ph, Tk, doh, dout.row, Tk, D, Tq, true, false, T(1), T(0));
        gemm<T>(ds, Tk, doh, dout.row, vh, v.row, Tq, Tk, D, false, true, T(1), T(0));
        // P = softmax(S)  ->  dS = P * (dP - rowsum(dO * O))
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < Tq; i++) {
            T drow = 0;
            for (int64_t d = 0; d < D; d++) drow += doh[i * dout.row + d] * oh[i * out.row + d];
            T* r = ds + i * Tk;
            const T* p = ph + i * Tk;
            for (int64_t j = 0; j < Tk; j++) r[j] = p[j] * (r[j] - drow);
        }
        // S = scale * Q K^T  ->  dQ = scale * dS K, dK = scale * dS^T Q
        gemm<T>(dq.at(b, h), dq.row, ds, Tk, kh, k.row, Tq, D, Tk, false, false, scale, T(0));
        gemm<T>(dk.at(b, h), dk.row, ds, Tk, qh, q.row, Tk, D, Tq, true, false, scale, T(0));
    };
    if (by_head) {
#pragma omp parallel for schedule(dynamic, 1)
        for (int64_t bh = 0; bh < BH; bh++) head(bh, ds_buf.data<T>() + thread_id() * Tq * Tk);
    } else {
        for (int64_t bh = 0; bh < BH; bh++) head(bh, ds_buf.data<T>());
    }
}

#define FG_INSTANTIATE(T)                                                                                        \
    template void attention_standard_forward<T>(Heads<T>, T*, Heads<const T>, Heads<const T>, Heads<const T>,    \
                                                int64_t, int64_t, int64_t, int64_t, int64_t, bool, T);           \
    template void attention_standard_backward<T>(Heads<T>, Heads<T>, Heads<T>, Heads<const T>, Heads<const T>,   \
                                                 Heads<const T>, Heads<const T>, Heads<const T>, const T*,       \
                                                 int64_t, int64_t, int64_t, int64_t, int64_t, bool, T);
FG_INSTANTIATE(float)
FG_INSTANTIATE(double)
#undef FG_INSTANTIATE

}  // namespace femtogpt::cpu
