#include "pool.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#endif

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

// A large tier segment is mapped from the OS directly, so that releasing it gives its pages
// back at once (glibc keeps freed chunks of up to 32 MiB in its heap once its mmap threshold
// has risen, and the process would keep them resident).
void* os_map_segment(size_t nbytes) {
#if defined(__unix__) || defined(__APPLE__)
    void* p = mmap(nullptr, nbytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    return p;  // page aligned
#else
    return os_allocate(nbytes);
#endif
}

void os_unmap_segment(void* p, size_t nbytes) {
#if defined(__unix__) || defined(__APPLE__)
    munmap(p, nbytes);
#else
    (void)nbytes;
    std::free(p);
#endif
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
    if (nbytes >= kLargeBytes) return (nbytes + kLargeGranule - 1) / kLargeGranule * kLargeGranule;
    // Four classes per power of two: 2^k, 1.25*2^k, 1.5*2^k, 1.75*2^k (at most 25% waste).
    size_t top = size_t(1) << (63 - __builtin_clzll(nbytes));
    size_t step = top / 4;
    if (step < kAlignment) step = kAlignment;
    return (nbytes + step - 1) / step * step;
}

void* Pool::allocate(size_t nbytes) {
    // Guard against sizes whose class computation would overflow.
    if (nbytes > (size_t(1) << 56)) throw std::bad_alloc();
    const size_t cls = size_class(nbytes);
    const bool large = cls >= kLargeBytes;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stats_.alloc_requests++;
        if (caching_) {
            void* p = nullptr;
            if (large) {
                p = take_large(cls);
            } else {
                auto it = free_lists_.find(cls);
                if (it != free_lists_.end() && !it->second.empty()) {
                    p = it->second.back();
                    it->second.pop_back();
                    stats_.current_bytes += int64_t(cls);
                }
            }
            if (p) {
                stats_.pool_hits++;
                if (stats_.current_bytes > stats_.peak_bytes) stats_.peak_bytes = stats_.current_bytes;
                return p;
            }
        }
    }
    if (caching_ && large) return new_segment(cls);
    void* p = os_allocate(cls);  // outside the lock: the OS call may be slow
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.os_allocations++;
    stats_.reserved_bytes += int64_t(cls);
    stats_.current_bytes += int64_t(cls);
    if (stats_.current_bytes > stats_.peak_bytes) stats_.peak_bytes = stats_.current_bytes;
    return p;
}

void* Pool::new_segment(size_t size) {
    // No free block fits the request.
    // - When the free blocks add up to less than it, their pages (free blocks hold no data)
    //   are all moved into the new segment with Linux's mremap, so that the pool
    //   grows by what is missing only, however fragmented it is: a free 18 MiB block and
    //   6 MiB of fresh pages become one 24 MiB block. A moved block leaves a gap in its old
    //   segment, whose two sides become segments of their own.
    // - Otherwise a whole segment is mapped and the free blocks stay as they are. Moving them
    //   here too kept a repeated workload re-splitting and re-gathering the same pages step
    //   after step; as it is, every miss makes the pool larger, so a repeated workload settles
    //   after a step or two and then maps nothing.
    // Without mremap (not Linux), the wholly free segments, which could not serve the request,
    // are unmapped before a new one is mapped.
    std::vector<std::pair<void*, size_t>> moved, released;
    size_t gathered = 0;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        size_t free_total = 0;
        for (const auto& fb : free_large_) free_total += fb.first;
#ifdef __linux__
        if (free_total < size) gathered = take_free_blocks(moved);
#else
        take_free_segments(released);
#endif
    }
    for (auto [q, n] : released) os_unmap_segment(q, n);  // outside the lock: the OS calls may be slow
    const size_t total = std::max(size, gathered);
    char* p = nullptr;
    try {
        p = static_cast<char*>(os_map_segment(total));
    } catch (...) {  // out of memory: the free blocks stay the pool's, each a segment of its own
        std::lock_guard<std::mutex> lock(mutex_);
        keep_as_free_segments(moved);
        throw;
    }
    std::vector<std::pair<void*, size_t>> unmoved;  // where mremap failed: fresh pages stand in
#ifdef __linux__
    size_t offset = 0;
    for (auto [q, n] : moved) {
        if (mremap(q, n, n, MREMAP_MAYMOVE | MREMAP_FIXED, p + offset) == MAP_FAILED) unmoved.emplace_back(q, n);
        offset += n;
    }
#endif
    std::lock_guard<std::mutex> lock(mutex_);
    size_t kept = 0;
    for (auto [q, n] : unmoved) kept += n;
    keep_as_free_segments(unmoved);  // still the pool's (and counted), now beside the new segment
    stats_.os_allocations++;
    stats_.reserved_bytes += int64_t(total - gathered + kept);
    large_blocks_.emplace(p, new Block{p, total, false, nullptr, nullptr});  // wholly in use
    stats_.current_bytes += int64_t(total);
    if (stats_.current_bytes > stats_.peak_bytes) stats_.peak_bytes = stats_.current_bytes;
    return p;
}

size_t Pool::take_free_blocks(std::vector<std::pair<void*, size_t>>& pieces) {
    size_t got = 0;
    for (const auto& [size, ptr] : free_large_) {
        Block* b = large_blocks_.at(ptr);
        // b leaves its segment: the pieces on either side become the ends of two segments
        if (b->prev) b->prev->next = nullptr;
        if (b->next) b->next->prev = nullptr;
        pieces.emplace_back(b->ptr, size);
        got += size;
        large_blocks_.erase(ptr);
        delete b;
    }
    free_large_.clear();
    return got;
}

void Pool::keep_as_free_segments(const std::vector<std::pair<void*, size_t>>& pieces) {
    for (auto [q, n] : pieces) {
        char* ptr = static_cast<char*>(q);
        large_blocks_.emplace(ptr, new Block{ptr, n, true, nullptr, nullptr});
        free_large_.insert({n, ptr});
    }
}

void Pool::take_free_segments(std::vector<std::pair<void*, size_t>>& release) {
    for (auto it = free_large_.begin(); it != free_large_.end();) {
        Block* b = large_blocks_.at(it->second);
        if (b->prev || b->next) {  // a piece of a segment that is partly in use
            ++it;
            continue;
        }
        stats_.reserved_bytes -= int64_t(b->size);
        stats_.os_frees++;
        release.emplace_back(b->ptr, b->size);
        large_blocks_.erase(b->ptr);
        delete b;
        it = free_large_.erase(it);
    }
}

void* Pool::take_large(size_t size) {
    auto it = free_large_.lower_bound({size, nullptr});  // best fit: the smallest free block that fits
    if (it == free_large_.end()) return nullptr;
    Block* block = large_blocks_.at(it->second);
    free_large_.erase(it);
    if (block->size - size >= kLargeBytes) {  // split off the rest as a free block of its own
        Block* rest = new Block{block->ptr + size, block->size - size, true, block, block->next};
        if (block->next) block->next->prev = rest;
        block->next = rest;
        block->size = size;
        large_blocks_.emplace(rest->ptr, rest);
        free_large_.insert({rest->size, rest->ptr});
    }
    block->free = false;
    stats_.current_bytes += int64_t(block->size);
    return block->ptr;
}

void Pool::give_back_large(Block* block) {
    stats_.current_bytes -= int64_t(block->size);
    block->free = true;
    // Merge with free neighbours (they are in free_large_ under their old sizes).
    auto absorb_next = [&](Block* b) {
        Block* n = b->next;
        free_large_.erase({n->size, n->ptr});
        large_blocks_.erase(n->ptr);
        b->size += n->size;
        b->next = n->next;
        if (n->next) n->next->prev = b;
        delete n;
    };
    if (block->next && block->next->free) absorb_next(block);
    if (block->prev && block->prev->free) {
        Block* p = block->prev;
        free_large_.erase({p->size, p->ptr});
        absorb_next(p);
        block = p;
    }
    free_large_.insert({block->size, block->ptr});
}

void Pool::deallocate(void* ptr, size_t nbytes) {
    if (!ptr) return;
    const size_t cls = size_class(nbytes);
    {
        std::lock_guard<std::mutex> lock(mutex_);
        if (caching_) {
            if (cls >= kLargeBytes) {
                give_back_large(large_blocks_.at(ptr));
            } else {
                stats_.current_bytes -= int64_t(cls);
                free_lists_[cls].push_back(ptr);
            }
            return;
        }
        stats_.current_bytes -= int64_t(cls);
        stats_.reserved_bytes -= int64_t(cls);
        stats_.os_frees++;
    }
    std::free(ptr);
}

void Pool::empty_cache() {
    std::vector<void*> release;
    std::vector<std::pair<void*, size_t>> segments;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        for (auto& [cls, blocks] : free_lists_) {
            stats_.reserved_bytes -= int64_t(cls * blocks.size());
            release.insert(release.end(), blocks.begin(), blocks.end());
        }
        stats_.os_frees += int64_t(release.size());
        free_lists_.clear();
        take_free_segments(segments);  // a segment can go back only when it is one free block
    }
    for (void* p : release) std::free(p);
    for (auto [p, n] : segments) os_unmap_segment(p, n);
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
