// A backend is a table of functions for one kind of device (as in ggml):
// memory (allocate, free, copy in and out, fill) and, through the op files, the
// kernels. Tensor-level ops (cpp/ops/) validate their arguments once and then
// call the backend of their tensors' device, so an OpenCL backend plugs in
// without changing the Python API.
#pragma once

#include <cstddef>

#include "tensor.h"

namespace femtogpt {

class Backend {
  public:
    virtual ~Backend() = default;
    virtual const char* name() const = 0;
    virtual void* allocate(size_t nbytes) = 0;
    virtual void deallocate(void* ptr, size_t nbytes) = 0;
    virtual void copy_from_host(void* dst, const void* src, size_t nbytes) = 0;
    virtual void copy_to_host(void* dst, const void* src, size_t nbytes) = 0;
    virtual void copy(void* dst, const void* src, size_t nbytes) = 0;  // within the device
    virtual void fill_zero(void* dst, size_t nbytes) = 0;
};

// The backend of a device; throws ValueError when the device is not available.
Backend& backend_for(const Device& device);

// Copies a tensor to a device (or a fresh copy on the same one).
Tensor to_device(const Tensor& t, const Device& device);

}  // namespace femtogpt
