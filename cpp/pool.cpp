#include "pool.h"

#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

namespace femtogpt {

namespace {

bool caching_from_env() {
    const char* v = std::getenv("FEMTOGPT_POOL");
    if (!v) return true;
    std::string s(v);
    return !(s == "0" || s == "off" || s == "false" || s == "no");
}

void* os_allocate(size_t nbytes) {
    // aligned_alloc wants a size that is a multiple of the alignment; size classes are.
    void* p = std::aligned_alloc(Pool::kAlignment, nbytes);
    if (!p) {
        throw std::bad_alloc();
    }
    return p;
}

}  // namespace

Pool::Pool(bool caching) : caching_(caching) {}

Pool::~Pool() { empty_cache(); }

Pool& Pool::instance() {
    // Never destroyed: tensors owned by Python objects may be freed during
    // interpreter shutdown, after static destructors would have run.
    static Pool* pool = new Pool(caching_from_env());
    return *pool;
}

size_t Pool::size_class(size_t nbytes) {
    if (nbytes <= kAlignment) return kAlignment;
    // Four classes per power of two: 2^k, 1.25*2^k, 1.5*2^k, 1.75*2^k (at most 25% waste).
    size_t top = size_t(1) << (63 - __builtin_clzll(nbytes));
    size_t step = top / 4;
    if (step < kAlignment) step = kAlignment;
    return (nbytes + step - 1) / step * step;
}

void* Pool::allocate(size_t nbytes) {
    // Guard against sizes whose class computation would overflow.
    if (nbytes > (size_t(1) << 56)) throw std::bad_alloc();
    size_t cls = size_class(nbytes);
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stats_.alloc_requests++;
        if (caching_) {
            if (void* p = take_free_block(cls)) {
                stats_.pool_hits++;
                return p;
            }
        }
    }
    void* p = os_allocate(cls);  // outside the lock: the OS call may be slow
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.os_allocations++;
    stats_.reserved_bytes += cls;
    stats_.current_bytes += cls;
    if (stats_.current_bytes > stats_.peak_bytes) stats_.peak_bytes = stats_.current_bytes;
    return p;
}

void* Pool::take_free_block(size_t cls) {
    auto it = free_lists_.find(cls);
    if (it == free_lists_.end() || it->second.empty()) {
        it = free_lists_.end();
        if (cls >= kLendMinBytes) {  // borrow the smallest larger free block
            for (auto up = free_lists_.upper_bound(cls); up != free_lists_.end() && up->first <= cls * kLendMaxRatio;
                 ++up) {
                if (!up->second.empty()) {
                    it = up;
                    break;
                }
            }
        }
        if (it == free_lists_.end()) return nullptr;
    }
    void* p = it->second.back();
    it->second.pop_back();
    if (it->first != cls) lent_.emplace(p, it->first);
    stats_.current_bytes += int64_t(it->first);
    if (stats_.current_bytes > stats_.peak_bytes) stats_.peak_bytes = stats_.current_bytes;
    return p;
}

void Pool::deallocate(void* ptr, size_t nbytes) {
    if (!ptr) return;
    size_t cls = size_class(nbytes);
    {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!lent_.empty()) {
            auto lent = lent_.find(ptr);
            if (lent != lent_.end()) {
                cls = lent->second;
                lent_.erase(lent);
            }
        }
        stats_.current_bytes -= cls;
        if (caching_) {
            free_lists_[cls].push_back(ptr);
            return;
        }
        stats_.reserved_bytes -= cls;
        stats_.os_frees++;
    }
    std::free(ptr);
}

void Pool::empty_cache() {
    std::map<size_t, std::vector<void*>> lists;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        lists.swap(free_lists_);
        for (auto& [cls, blocks] : lists) {
            stats_.reserved_bytes -= int64_t(cls * blocks.size());
            stats_.os_frees += int64_t(blocks.size());
        }
    }
    for (auto& [cls, blocks] : lists)
        for (void* p : blocks) std::free(p);
}

PoolStats Pool::stats() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
}

void Pool::reset_peak() {
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.peak_bytes = stats_.current_bytes;
}

}  // namespace femtogpt
