#include "cpu/layout.h"

#include <algorithm>
#include <cstring>

#include "cpu/chunking.h"

namespace femtogpt::cpu {

namespace {

// The output's axes after simplification: size and input stride (elements) of each.
struct Plan {
    int r = 0;
    int64_t size[kMaxPermuteDims];
    int64_t istride[kMaxPermuteDims];
};

Plan make_plan(const int64_t* shape, const int* dims, int ndim) {
    int64_t st[kMaxPermuteDims];
    int64_t s = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        st[d] = s;
        s *= shape[d];
    }
    Plan p;
    for (int i = 0; i < ndim; i++) {
        int64_t n = shape[dims[i]], is = st[dims[i]];
        if (n == 1) continue;
        // merge into the previous axis when the pair is contiguous in the input as well
        if (p.r > 0 && p.istride[p.r - 1] == is * n) {
            p.size[p.r - 1] *= n;
            p.istride[p.r - 1] = is;
        } else {
            p.size[p.r] = n;
            p.istride[p.r] = is;
            p.r++;
        }
    }
    return p;
}

// Contiguous rows: the last output axis has input stride 1.
template <typename E>
void permute_rows(E* out, const E* in, const Plan& p) {
    const int r = p.r;
    const int64_t L = p.size[r - 1];
    int64_t rows = 1;
    for (int d = 0; d < r - 1; d++) rows *= p.size[d];
    int64_t per = std::max<int64_t>(1, kChunk / L);
    int64_t nc = num_chunks(rows, per);
#pragma omp parallel for schedule(static) if (nc > 1)
    for (int64_t c = 0; c < nc; c++) {
        int64_t r0 = c * per, r1 = std::min(rows, r0 + per);
        int64_t idx[kMaxPermuteDims];
        int64_t off = 0, rem = r0;
        for (int d = r - 2; d >= 0; d--) {
            idx[d] = rem % p.size[d];
            rem /= p.size[d];
            off += idx[d] * p.istride[d];
        }
        for (int64_t row = r0; row < r1; row++) {
            std::memcpy(out + row * L, in + off, size_t(L) * sizeof(E));
            for (int d = r - 2; d >= 0; d--) {  // odometer step
                off += p.istride[d];
                if (++idx[d] < p.size[d]) break;
                off -= idx[d] * p.istride[d];
                idx[d] = 0;
            }
        }
    }
}

// The input's contiguous axis a is not last in the output: transpose tiles of
// (axis a, last axis) for every index of the other axes.
template <typename E>
void permute_tiles(E* out, const E* in, const Plan& p) {
    constexpr int64_t kT = 32;
    const int r = p.r;
    int a = 0;
    while (p.istride[a] != 1) a++;
    const int64_t A = p.size[a], Q = p.size[r - 1], qstride = p.istride[r - 1];
    int64_t ostride[kMaxPermuteDims];
    int64_t s = 1;
    for (int d = r - 1; d >= 0; d--) {
        ostride[d] = s;
        s *= p.size[d];
    }
    // the other axes, flattened
    int other[kMaxPermuteDims];
    int no = 0;
    int64_t outer = 1;
    for (int d = 0; d < r - 1; d++)
        if (d != a) {
            other[no++] = d;
            outer *= p.size[d];
        }
    const int64_t ta = (A + kT - 1) / kT, tq = (Q + kT - 1) / kT;
    const int64_t ntasks = outer * ta * tq;
#pragma omp parallel for schedule(static) if (ntasks > 16)
    for (int64_t task = 0; task < ntasks; task++) {
        int64_t t = task;
        int64_t iq = t % tq;
        t /= tq;
        int64_t ia = t % ta;
        t /= ta;
        int64_t ioff = 0, ooff = 0;
        for (int k = no - 1; k >= 0; k--) {
            int d = other[k];
            int64_t i = t % p.size[d];
            t /= p.size[d];
            ioff += i * p.istride[d];
            ooff += i * ostride[d];
        }
        int64_t a0 = ia * kT, a1 = std::min(A, a0 + kT);
        int64_t q0 = iq * kT, q1 = std::min(Q, q0 + kT);
        const int64_t astride_out = ostride[a];
        for (int64_t x = a0; x < a1; x++) {
            E* __restrict o = out + ooff + x * astride_out;
            const E* __restrict src = in + ioff + x;
            for (int64_t q = q0; q < q1; q++) o[q] = src[q * qstride];
        }
    }
}

template <typename E>
void permute_typed(E* out, const E* in, const int64_t* shape, const int* dims, int ndim) {
    int64_t n = 1;
    for (int d = 0; d < ndim; d++) n *= shape[d];
    if (n == 0) return;
    Plan p = make_plan(shape, dims, ndim);
    if (p.r == 0) {
        out[0] = in[0];
    } else if (p.istride[p.r - 1] == 1) {
        permute_rows(out, in, p);
    } else {
        permute_tiles(out, in, p);
    }
}

template <typename E>
void permute_reference_typed(E* out, const E* in, const int64_t* shape, const int* dims, int ndim) {
    int64_t st[kMaxPermuteDims], n = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        st[d] = n;
        n *= shape[d];
    }
    for (int64_t o = 0; o < n; o++) {
        int64_t rem = o, off = 0;
        for (int i = ndim - 1; i >= 0; i--) {
            int64_t sz = shape[dims[i]];
            off += (rem % sz) * st[dims[i]];
            rem /= sz;
        }
        out[o] = in[off];
    }
}

}  // namespace

void permute(void* out, const void* in, const int64_t* shape, const int* dims, int ndim, size_t elem_size) {
    if (elem_size == 4)
        permute_typed(static_cast<uint32_t*>(out), static_cast<const uint32_t*>(in), shape, dims, ndim);
    else
        permute_typed(static_cast<uint64_t*>(out), static_cast<const uint64_t*>(in), shape, dims, ndim);
}

void permute_reference(void* out, const void* in, const int64_t* shape, const int* dims, int ndim,
                       size_t elem_size) {
    if (elem_size == 4)
        permute_reference_typed(static_cast<uint32_t*>(out), static_cast<const uint32_t*>(in), shape, dims, ndim);
    else
        permute_reference_typed(static_cast<uint64_t*>(out), static_cast<const uint64_t*>(in), shape, dims, ndim);
}

void copy_blocks(void* dst, int64_t dst_stride, const void* src, int64_t src_stride, int64_t nblocks,
                 int64_t block_bytes) {
    if (nblocks <= 0 || block_bytes <= 0) return;
    char* d = static_cast<char*>(dst);
    const char* s = static_cast<const char*>(src);
    // ~256 KiB per chunk
    int64_t per = std::max<int64_t>(1, (int64_t(1) << 18) / block_bytes);
    int64_t nc = num_chunks(nblocks, per);
#pragma omp parallel for schedule(static) if (nc > 1)
    for (int64_t c = 0; c < nc; c++) {
        int64_t b1 = std::min(nblocks, (c + 1) * per);
        for (int64_t b = c * per; b < b1; b++)
            std::memcpy(d + b * dst_stride, s + b * src_stride, size_t(block_bytes));
    }
}

}  // namespace femtogpt::cpu
