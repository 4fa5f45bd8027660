#include "backend.h"

#include <cstring>

#include "pool.h"

namespace femtogpt {

namespace {

class CpuBackend final : public Backend {
  public:
    const char* name() const override { return "cpu"; }
    void* allocate(size_t nbytes) override { return pool_alloc(nbytes); }
    void deallocate(void* ptr, size_t nbytes) override { pool_free(ptr, nbytes); }
    void copy_from_host(void* dst, const void* src, size_t n) override { if (n) std::memcpy(dst, src, n); }
    void copy_to_host(void* dst, const void* src, size_t n) override { if (n) std::memcpy(dst, src, n); }
    void copy(void* dst, const void* src, size_t n) override { if (n) std::memcpy(dst, src, n); }
    void fill_zero(void* dst, size_t n) override { if (n) std::memset(dst, 0, n); }
};

}  // namespace

Backend& backend_for(const Device& device) {
    static CpuBackend cpu;
    if (device.type == DeviceType::cpu) return cpu;
    throw ValueError(fmt("device '", device.str(), "' is not available: this build of femtogpt has no OpenCL backend"));
}

Tensor to_device(const Tensor& t, const Device& device) {
    Tensor out = Tensor::empty(t.shape(), t.dtype(), device);
    if (t.device().type == DeviceType::cpu)
        backend_for(device).copy_from_host(out.raw_data(), t.raw_data(), t.nbytes());
    else if (device.type == DeviceType::cpu)
        backend_for(t.device()).copy_to_host(out.raw_data(), t.raw_data(), t.nbytes());
    else
        throw ValueError(fmt("cannot copy directly from ", t.device().str(), " to ", device.str()));
    return out;
}

}  // namespace femtogpt
