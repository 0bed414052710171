// rsi::kernels::Tensor — an f32 tensor with a shape, an owning buffer (64-byte aligned host memory,
// or device memory from cudaMalloc for Device::CUDA) and a device tag. Views (non-owning) alias
// another tensor's memory, e.g. one parameter inside a network's flat parameter buffer. Element
// access (operator[], span) is for CPU tensors only; move CUDA tensors with copy_tensor/to_device
// (cuda.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace rsi::kernels {

enum class Device { CPU, CUDA };
const char* device_name(Device device);

using Shape = std::vector<std::int64_t>;
std::string shape_string(const Shape& shape);
std::int64_t shape_numel(const Shape& shape);

class Tensor {
 public:
  Tensor() = default;
  // Allocates an owning, zero-filled tensor.
  explicit Tensor(Shape shape, Device device = Device::CPU);
  Tensor(std::initializer_list<std::int64_t> shape) : Tensor(Shape(shape)) {}
  // A non-owning view of `data` (which must outlive the view).
  static Tensor view(float* data, Shape shape, Device device = Device::CPU);

  Tensor(Tensor&&) noexcept = default;
  Tensor& operator=(Tensor&&) noexcept = default;
  Tensor(const Tensor&) = delete;
  Tensor& operator=(const Tensor&) = delete;
  Tensor clone() const;

  const Shape& shape() const { return shape_; }
  std::int64_t dim(std::size_t i) const { return shape_.at(i); }
  std::size_t rank() const { return shape_.size(); }
  std::int64_t numel() const { return numel_; }
  Device device() const { return device_; }
  bool owns() const { return static_cast<bool>(storage_); }
  bool empty() const { return numel_ == 0; }

  float* data() { return data_; }
  const float* data() const { return data_; }
  float& operator[](std::int64_t i) { return data_[i]; }
  float operator[](std::int64_t i) const { return data_[i]; }
  std::span<float> span() { return {data_, static_cast<std::size_t>(numel_)}; }
  std::span<const float> span() const { return {data_, static_cast<std::size_t>(numel_)}; }

  // Reinterprets the same elements with another shape of equal element count.
  Tensor reshaped(Shape shape);
  // Grows (reallocating) or shrinks the logical shape of an owning tensor; contents are undefined
  // after a growth. Used for per-batch activations whose batch size varies.
  void resize(Shape shape);
  void fill(float value);
  void zero() { fill(0.0f); }

 private:
  struct FreeAligned {
    FreeAligned() noexcept : device(Device::CPU) {}
    explicit FreeAligned(Device d) noexcept : device(d) {}
    Device device;
    void operator()(float* p) const;
  };
  void allocate(std::int64_t count);
  Shape shape_;
  std::int64_t numel_ = 0;
  std::int64_t capacity_ = 0;
  Device device_ = Device::CPU;
  std::unique_ptr<float, FreeAligned> storage_;
  float* data_ = nullptr;
};

}  // namespace rsi::kernels
