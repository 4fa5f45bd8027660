// Caching allocator: every tensor's bytes (and kernels' scratch) come from here.
//
// Two tiers, so that a repeated workload stops asking the OS for memory after
// warm-up while holding little more than its peak:
// - Small requests (under kLargeBytes) are rounded up to a size class (4 classes
//   per power of two, at least 64 bytes); a freed block goes back to its class's
//   free list for the next request of that class.
// - Large requests (activations, gradients) are rounded up to kLargeGranule and
//   carved best-fit out of segments taken from the OS, as in PyTorch's caching
//   allocator: a free block larger than needed is split, and a freed block merges
//   with free neighbours of its segment. A training step's forward and backward
//   need large blocks of different sizes at different times; with fixed classes
//   the pool would hold every class's own high-water mark at once. Segments are
//   mapped from the OS directly. When the pool must grow, the pages of its free
//   blocks are moved into the new segment (Linux mremap), so that it grows only by
//   what is missing, however fragmented it is (see new_segment).
// Blocks are 64-byte aligned. All methods are thread-safe. FEMTOGPT_POOL=0 in the
// environment switches caching off: every free goes straight back to the OS.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <set>
#include <unordered_map>
#include <utility>
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

  private:
    // A piece of a segment (one OS allocation); neighbours link the segment's pieces in address order.
    struct Block {
        char* ptr;
        size_t size;
        bool free;
        Block* prev;
        Block* next;
    };

    void* take_large(size_t size);         // with mutex_ held; nullptr when no free block fits
    void* new_segment(size_t size);        // without mutex_ held: maps a segment, wholly in use
    // With mutex_ held: unlinks every free block, adding (address, size) to `pieces`; returns their sum
    size_t take_free_blocks(std::vector<std::pair<void*, size_t>>& pieces);
    // With mutex_ held: registers each (address, size), still mapped, as a wholly free segment
    void keep_as_free_segments(const std::vector<std::pair<void*, size_t>>& pieces);
    // With mutex_ held: unlinks every wholly free segment, adding (address, size) to `release`
    void take_free_segments(std::vector<std::pair<void*, size_t>>& release);
    void give_back_large(Block* block);    // with mutex_ held: mark free, merge with free neighbours

    bool caching_;
    mutable std::mutex mutex_;
    std::unordered_map<size_t, std::vector<void*>> free_lists_;  // small tier, by class
    std::set<std::pair<size_t, char*>> free_large_;             // large tier: free blocks by (size, address)
    std::unordered_map<void*, Block*> large_blocks_;            // large tier: every block by address
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
