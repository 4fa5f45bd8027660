// Caching allocator: every tensor's bytes (and kernels' scratch) come from here.
//
// Two tiers, so that a repeated workload stops asking the OS for memory after
// warm-up while holding little more than its peak:
// - Small requests (under kLargeBytes) are rounded up to a size class (4 classes
//   per power of two, at least 64 bytes); a freed block goes back to its class's
//   free list for the next request of that class.
// - Large requests (activations, gradients) are rounded up to kLargeGranule and
//   carved out of one growable region of address space (an arena): the lowest
//   free block that fits is taken (address-ordered first fit), split when it is
//   larger than needed, and a freed block merges with its free neighbours. When no
//   free block fits, the region grows at its end by what is missing (a free block
//   at the end is extended). The region is reserved once as a large range of
//   inaccessible address space and made usable as it grows; its pages hold memory
//   only once touched. So the pool is one piece however it grows, and since a
//   training step frees all its activations by its end, every step starts from the
//   same single free block: once a step has run without growing, the next repeats
//   its layout exactly, and the pool settles after a step or two. (Segments mapped
//   one per miss, best fit, left the free space split between segments; on the
//   small preset, checkpointed, AVX2, they held 282 MiB for a 238 MiB peak, the
//   region 245 MiB.)
// Blocks are 64-byte aligned. All methods are thread-safe. FEMTOGPT_POOL=0 in the
// environment switches caching off: every free goes straight back to the OS.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <map>
#include <unordered_map>
#include <vector>

namespace femtogpt {

struct PoolStats {
    int64_t current_bytes = 0;   // bytes handed out and not yet freed (rounded sizes)
    int64_t peak_bytes = 0;      // high-water mark of current_bytes since the last reset
    int64_t reserved_bytes = 0;  // bytes held from the OS: in use plus cached
    int64_t alloc_requests = 0;  // calls to allocate()
    int64_t pool_hits = 0;       // requests served from cached memory
    int64_t os_allocations = 0;  // requests that went to the OS
    int64_t os_frees = 0;        // blocks returned to the OS
};

class Pool {
  public:
    static constexpr size_t kAlignment = 64;

    explicit Pool(bool caching);
    ~Pool();
    Pool(const Pool&) = delete;
    Pool& operator=(const Pool&) = delete;

    // The process-wide pool; caching unless FEMTOGPT_POOL=0.
    static Pool& instance();

    void* allocate(size_t nbytes);           // throws std::bad_alloc, naming the size
    void deallocate(void* ptr, size_t nbytes);  // nbytes: the size given to allocate
    void empty_cache();                      // return every cached block to the OS
    PoolStats stats() const;
    void reset_peak();
    bool caching() const { return caching_; }

    static size_t size_class(size_t nbytes);  // the rounded size a request occupies

    static constexpr size_t kLargeBytes = size_t(1) << 18;    // requests from here on are "large"
    static constexpr size_t kLargeGranule = size_t(1) << 16;  // large sizes are multiples of this
    static constexpr size_t kRegionBytes = size_t(1) << 36;   // address space reserved at a time (64 GiB)

  private:
    // A range of address space the large tier carves blocks from: [base, base + used) is
    // covered by blocks, the rest up to capacity is reserved but inaccessible. base == nullptr:
    // a slot whose region went back to the OS (empty_cache of an empty region).
    struct Region {
        char* base;
        size_t capacity;
        size_t used;
    };
    // A piece of a region, in use or free. A free block is "released" once empty_cache has
    // given its pages back to the OS: it holds no memory until it is touched again.
    struct Block {
        size_t size;
        size_t region;  // index into regions_
        bool free;
        bool released;
    };

    // All with mutex_ held.
    void* take_large(size_t size);               // first fit; nullptr when no free block fits
    void* grow_large(size_t size);               // extends or reserves a region; throws bad_alloc
    void carve(char* ptr, size_t size);          // marks (part of) the free block at ptr in use
    void give_back_large(char* ptr);             // marks free, merges with free neighbours
    void release_free_large();                   // empty_cache's part for the large tier

    bool caching_;
    mutable std::mutex mutex_;
    std::unordered_map<size_t, std::vector<void*>> free_lists_;  // small tier, by class
    std::vector<Region> regions_;                               // large tier
    std::map<char*, Block> large_blocks_;                       // large tier: every block, by address
    std::map<char*, size_t> free_large_;                        // large tier: free blocks' sizes, by address
    PoolStats stats_;
};

// Shorthands on the process-wide pool.
inline void* pool_alloc(size_t nbytes) { return Pool::instance().allocate(nbytes); }
inline void pool_free(void* ptr, size_t nbytes) { Pool::instance().deallocate(ptr, nbytes); }

// Scratch memory from the pool for the lifetime of a scope.
class PoolBuffer {
  public:
    explicit PoolBuffer(size_t nbytes) : nbytes_(nbytes), ptr_(nbytes ? pool_alloc(nbytes) : nullptr) {}
    ~PoolBuffer() { if (ptr_) pool_free(ptr_, nbytes_); }
    PoolBuffer(const PoolBuffer&) = delete;
    PoolBuffer& operator=(const PoolBuffer&) = delete;
    template <typename T = void>
    T* data() const { return static_cast<T*>(ptr_); }
    size_t nbytes() const { return nbytes_; }

  private:
    size_t nbytes_;
    void* ptr_;
};

}  // namespace femtogpt
