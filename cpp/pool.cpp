#include "pool.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>

#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#include <sys/resource.h>
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

#if defined(__unix__) || defined(__APPLE__)
constexpr bool kReservesAddressSpace = true;
#else
constexpr bool kReservesAddressSpace = false;  // a region is memory at once: exactly the request
#endif

// Reserves `nbytes` of address space for the large tier: inaccessible and holding no memory
// (nor commit charge: an inaccessible private mapping is never charged) until os_commit.
// Not MAP_NORESERVE: that would exempt the later commits from the OS's overcommit check, and a
// request larger than memory would succeed, to be OOM-killed when touched, instead of failing.
// nullptr when the OS refuses (a limit on the address space, or no room).
char* os_reserve_region(size_t nbytes) {
#if defined(__unix__) || defined(__APPLE__)
    void* p = mmap(nullptr, nbytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? nullptr : static_cast<char*>(p);  // page aligned
#else
    return static_cast<char*>(std::aligned_alloc(Pool::kAlignment, nbytes));
#endif
}

void os_release_region(char* p, size_t nbytes) {
#if defined(__unix__) || defined(__APPLE__)
    munmap(p, nbytes);
#else
    (void)nbytes;
    std::free(p);
#endif
}

// The largest region to reserve at a time: kRegionBytes, or an eighth of the process's limit
// on address space (RLIMIT_AS, as `ulimit -v` and some batch schedulers set it), so that a
// region leaves room for everything else the process maps.
size_t region_bytes_cap() {
    size_t cap = Pool::kRegionBytes;
#if defined(__unix__) || defined(__APPLE__)
    struct rlimit limit;
    if (getrlimit(RLIMIT_AS, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY)
        cap = std::min(cap, size_t(limit.rlim_cur / 8) / Pool::kLargeGranule * Pool::kLargeGranule);
#endif
    return cap;
}

// Makes [p, p + nbytes) of a reserved region usable; its pages appear as they are touched.
// False when the OS refuses (strict overcommit accounting out of memory).
bool os_commit(char* p, size_t nbytes) {
#if defined(__unix__) || defined(__APPLE__)
    return mprotect(p, nbytes, PROT_READ | PROT_WRITE) == 0;
#else
    (void)p;
    (void)nbytes;
    return true;
#endif
}

// Gives the pages of [p, p + nbytes) back to the OS. uncommit: the range returns to reserved
// address space (a region's end); otherwise it stays usable and reads as zeros.
void os_release_pages(char* p, size_t nbytes, bool uncommit) {
#if defined(__unix__) || defined(__APPLE__)
    if (uncommit) {
        if (mmap(p, nbytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != MAP_FAILED) return;
    }
    madvise(p, nbytes, MADV_DONTNEED);
#else
    (void)p;
    (void)nbytes;
    (void)uncommit;
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
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stats_.alloc_requests++;
        if (caching_) {
            void* p = nullptr;
            if (cls >= kLargeBytes) {
                p = take_large(cls);
                if (!p) p = grow_large(cls);  // extends the region (its pages come as they are touched)
            } else {
                auto it = free_lists_.find(cls);
                if (it != free_lists_.end() && !it->second.empty()) {
                    p = it->second.back();
                    it->second.pop_back();
                    stats_.current_bytes += int64_t(cls);
                    stats_.pool_hits++;
                }
            }
            if (p) {
                if (stats_.current_bytes > stats_.peak_bytes) stats_.peak_bytes = stats_.current_bytes;
                return p;
            }
        }
    }
    void* p = os_allocate(cls);  // outside the lock: the OS call may be slow
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.os_allocations++;
    stats_.reserved_bytes += int64_t(cls);
    stats_.current_bytes += int64_t(cls);
    if (stats_.current_bytes > stats_.peak_bytes) stats_.peak_bytes = stats_.current_bytes;
    return p;
}

void* Pool::take_large(size_t size) {
    // First fit by address. The free blocks are few (a training step leaves one, plus the holes
    // between blocks still in use), so a scan is cheap beside the memory it hands out.
    for (const auto& [ptr, free_size] : free_large_) {
        if (free_size >= size) {
            char* p = ptr;
            carve(p, size);
            return p;
        }
    }
    return nullptr;
}

void Pool::carve(char* ptr, size_t size) {
    Block& block = large_blocks_.at(ptr);
    free_large_.erase(ptr);
    if (block.size - size >= kLargeBytes) {  // split off the rest as a free block of its own
        large_blocks_.emplace(ptr + size, Block{block.size - size, block.region, true, block.released});
        free_large_.emplace(ptr + size, block.size - size);
        block.size = size;
    }
    if (block.released) {  // its pages come back from the OS as they are touched
        stats_.reserved_bytes += int64_t(block.size);
        stats_.os_allocations++;
    } else {
        stats_.pool_hits++;
    }
    block.free = false;
    block.released = false;
    stats_.current_bytes += int64_t(block.size);
}

void* Pool::grow_large(size_t size) {
    // Extend the first region with room: by what is missing when it ends in a free block (never
    // a released one: empty_cache takes a free block at a region's end out of the region).
    for (size_t r = 0; r < regions_.size(); r++) {
        Region& region = regions_[r];
        char* end = region.base + region.used;
        auto last = large_blocks_.end();
        if (region.used > 0) {
            last = std::prev(large_blocks_.lower_bound(end));
            if (!last->second.free) last = large_blocks_.end();
        }
        const size_t have = last != large_blocks_.end() ? last->second.size : 0;
        if (region.capacity - region.used < size - have) continue;  // also skips unmapped regions
        if (!os_commit(end, size - have)) throw std::bad_alloc();
        char* p = end;
        if (last != large_blocks_.end()) {
            p = last->first;
            free_large_.erase(p);
            last->second = Block{size, r, false, false};
        } else {
            large_blocks_.emplace(p, Block{size, r, false, false});
        }
        region.used += size - have;
        stats_.reserved_bytes += int64_t(size - have);
        stats_.os_allocations++;
        stats_.current_bytes += int64_t(size);
        return p;
    }
    // A new region: kRegionBytes of address space (less under a limit on the address space), or
    // the request itself when it is larger; halved where the OS refuses that much, and at last
    // exactly the request.
    size_t capacity = kReservesAddressSpace ? std::max(size, region_bytes_cap()) : size;
    char* base = os_reserve_region(capacity);
    while (!base && capacity > size) {
        capacity = std::max(size, capacity / 2 / kLargeGranule * kLargeGranule);
        base = os_reserve_region(capacity);
    }
    if (!base) throw std::bad_alloc();
    if (!os_commit(base, size)) {
        os_release_region(base, capacity);
        throw std::bad_alloc();
    }
    size_t r = 0;  // an unmapped region's slot, or a new one
    while (r < regions_.size() && regions_[r].base) r++;
    try {
        if (r == regions_.size()) regions_.push_back(Region{nullptr, 0, 0});
        large_blocks_.emplace(base, Block{size, r, false, false});
    } catch (...) {
        os_release_region(base, capacity);
        throw;
    }
    regions_[r] = Region{base, capacity, size};
    stats_.reserved_bytes += int64_t(size);
    stats_.os_allocations++;
    stats_.current_bytes += int64_t(size);
    return base;
}

void Pool::give_back_large(char* ptr) {
    auto it = large_blocks_.find(ptr);
    if (it == large_blocks_.end() || it->second.free)
        throw std::logic_error("Pool: freeing a large block it did not hand out, or twice");
    stats_.current_bytes -= int64_t(it->second.size);
    it->second.free = true;
    // Merge with free neighbours in the same region. A merged block that is partly released
    // counts as held again (the released pages come back as the block is used).
    auto adjacent_free = [&](std::map<char*, Block>::iterator a, std::map<char*, Block>::iterator b) {
        return b != large_blocks_.end() && a->second.free && b->second.free &&
               a->second.region == b->second.region && a->first + a->second.size == b->first;
    };
    auto absorb = [&](std::map<char*, Block>::iterator a, std::map<char*, Block>::iterator b) {  // a takes b
        if (a->second.released != b->second.released) {
            stats_.reserved_bytes += int64_t(a->second.released ? a->second.size : b->second.size);
            a->second.released = false;
        }
        a->second.size += b->second.size;
        free_large_.erase(b->first);
        large_blocks_.erase(b);
    };
    if (auto next = std::next(it); adjacent_free(it, next)) absorb(it, next);
    if (it != large_blocks_.begin()) {
        if (auto prev = std::prev(it); adjacent_free(prev, it)) {
            absorb(prev, it);
            it = prev;
        }
    }
    free_large_[it->first] = it->second.size;
}

void Pool::release_free_large() {
    // A free block at the end of its region leaves it (its range goes back to reserved address
    // space); any other free block keeps its place, its pages given back (released).
    std::vector<char*> tails;
    for (auto& [ptr, size] : free_large_) {
        Block& block = large_blocks_.at(ptr);
        Region& region = regions_[block.region];
        const bool tail = ptr + size == region.base + region.used;
        if (!block.released) {
            stats_.reserved_bytes -= int64_t(size);
            stats_.os_frees++;
        }
        if (tail) {
            os_release_pages(ptr, size, true);
            region.used -= size;
            tails.push_back(ptr);
        } else if (!block.released) {
            os_release_pages(ptr, size, false);
            block.released = true;
        }
    }
    for (char* ptr : tails) {
        free_large_.erase(ptr);
        large_blocks_.erase(ptr);
    }
    for (Region& region : regions_) {  // an empty region gives its address space back too
        if (region.base && region.used == 0) {
            os_release_region(region.base, region.capacity);
            region = Region{nullptr, 0, 0};
        }
    }
}

void Pool::deallocate(void* ptr, size_t nbytes) {
    if (!ptr) return;
    const size_t cls = size_class(nbytes);
    {
        std::lock_guard<std::mutex> lock(mutex_);
        if (caching_) {
            if (cls >= kLargeBytes) {
                give_back_large(static_cast<char*>(ptr));
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
    {
        std::lock_guard<std::mutex> lock(mutex_);
        for (auto& [cls, blocks] : free_lists_) {
            stats_.reserved_bytes -= int64_t(cls * blocks.size());
            release.insert(release.end(), blocks.begin(), blocks.end());
        }
        stats_.os_frees += int64_t(release.size());
        free_lists_.clear();
        release_free_large();
    }
    for (void* p : release) std::free(p);
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
