// Caching allocator: every tensor's bytes (and kernels' scratch) come from here.
//
// Requests are rounded up to a size class (4 classes per power of two, at least
// 64 bytes); a freed block goes back to its class's free list and is handed out
// again to the next request of that class, so a repeated workload stops asking
// the OS for memory after warm-up. Blocks are 64-byte aligned. All methods are
// thread-safe. FEMTOGPT_POOL=0 in the environment switches caching off: every
// free goes straight back to the OS (for comparisons).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace femtogpt {

struct PoolStats {
    int64_t current_bytes = 0;   // bytes handed out and not yet freed (class sizes)
    int64_t peak_bytes = 0;      // high-water mark of current_bytes since the last reset
    int64_t reserved_bytes = 0;  // bytes held from the OS: in use plus cached
    int64_t alloc_requests = 0;  // calls to allocate()
    int64_t pool_hits = 0;       // requests served from a free list
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

  private:
    static constexpr size_t kLendMinBytes = size_t(1) << 20;
    static constexpr size_t kLendMaxRatio = 2;

    void* take_free_block(size_t cls);  // with mutex_ held; nullptr when none fits

    bool caching_;
    mutable std::mutex mutex_;
    std::map<size_t, std::vector<void*>> free_lists_;  // by class, ordered for lending
    std::unordered_map<void*, size_t> lent_;            // lent block -> its own class
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
