// Tensor: a dtype, a shape, a device, and refcounted bytes from that device's backend.
//
// Tensors are always contiguous (row-major). A view (reshape) shares storage;
// everything else that rearranges elements makes a new tensor. Transposed
// operands of matmul are handled by flags, not by strides.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common.h"

namespace femtogpt {

enum class DType : uint8_t { float32, float64, int32, int64 };

size_t dtype_size(DType dt);
const char* dtype_name(DType dt);
inline bool is_floating(DType dt) { return dt == DType::float32 || dt == DType::float64; }

template <typename T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::float32; }
template <> constexpr DType dtype_of<double>() { return DType::float64; }
template <> constexpr DType dtype_of<int32_t>() { return DType::int32; }
template <> constexpr DType dtype_of<int64_t>() { return DType::int64; }

enum class DeviceType : uint8_t { cpu, opencl };

struct Device {
    DeviceType type = DeviceType::cpu;
    int index = 0;
    std::string str() const;  // "cpu", "opencl:0"
    static Device parse(const std::string& s);  // throws ValueError for unknown names
    bool operator==(const Device& o) const { return type == o.type && index == o.index; }
    bool operator!=(const Device& o) const { return !(*this == o); }
};

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);  // "(2, 3, 4)"
int64_t shape_numel(const Shape& s);

// Bytes owned on one device; returned to the device's allocator on destruction.
struct Storage {
    void* data = nullptr;
    size_t nbytes = 0;
    Device device;
    Storage(size_t nbytes, Device device);
    ~Storage();
    Storage(const Storage&) = delete;
    Storage& operator=(const Storage&) = delete;
};

class Tensor {
  public:
    Tensor() = default;
    static Tensor empty(const Shape& shape, DType dtype, Device device = {});
    static Tensor zeros(const Shape& shape, DType dtype, Device device = {});

    bool defined() const { return storage_ != nullptr; }
    const Shape& shape() const { return shape_; }
    int64_t dim() const { return int64_t(shape_.size()); }
    int64_t size(int64_t d) const;  // negative d counts from the end
    int64_t numel() const { return numel_; }
    DType dtype() const { return dtype_; }
    Device device() const { return storage_ ? storage_->device : Device{}; }
    size_t nbytes() const { return size_t(numel_) * dtype_size(dtype_); }
    const std::shared_ptr<Storage>& storage() const { return storage_; }

    void* raw_data() const { return static_cast<char*>(storage_->data) + offset_; }
    template <typename T>
    T* data() const {
        FG_CHECK_TYPE(dtype_ == dtype_of<T>(), "tensor has dtype ", dtype_name(dtype_),
                      ", expected ", dtype_name(dtype_of<T>()));
        return static_cast<T*>(raw_data());
    }

    // Same storage, another shape with the same number of elements; one entry may be -1.
    Tensor view(Shape shape) const;
    // Rows [start, start+len) of the leading dimension, sharing storage.
    Tensor narrow0(int64_t start, int64_t len) const;

    std::string repr() const;

  private:
    std::shared_ptr<Storage> storage_;
    size_t offset_ = 0;  // bytes
    Shape shape_;
    int64_t numel_ = 0;
    DType dtype_ = DType::float32;
};

// Argument checks shared by ops; each throws with a message naming `what`.
void check_float(const Tensor& t, const char* what);
void check_dtype(const Tensor& t, DType dt, const char* what);
void check_dim(const Tensor& t, int64_t dim, const char* what);
void check_same_device(const Tensor& a, const Tensor& b, const char* what);
void check_same_dtype(const Tensor& a, const Tensor& b, const char* what);

}  // namespace femtogpt
