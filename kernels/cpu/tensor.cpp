// Tensor storage: 64-byte aligned, zero-filled owning buffers and non-owning views.
#include "rsi/kernels/tensor.h"

#include "rsi/kernels/cuda.h"

#include <algorithm>
#include <cstdlib>
#include <new>
#include <sstream>
#include <stdexcept>

namespace rsi::kernels {

const char* device_name(Device device) { return device == Device::CPU ? "cpu" : "cuda"; }

std::string shape_string(const Shape& shape) {
  std::ostringstream out;
  out << '[';
  for (std::size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
  out << ']';
  return out.str();
}

std::int64_t shape_numel(const Shape& shape) {
  std::int64_t n = 1;
  for (auto d : shape) {
    if (d < 0) throw std::invalid_argument("tensor shape " + shape_string(shape) + " has a negative dimension");
    n *= d;
  }
  return n;
}

void Tensor::FreeAligned::operator()(float* p) const {
  if (device == Device::CUDA)
    detail::cuda_free(p);
  else
    std::free(p);
}

namespace {
float* allocate_aligned(std::int64_t count) {
  const std::size_t bytes = ((static_cast<std::size_t>(count) * sizeof(float) + 63) / 64) * 64;
  void* p = std::aligned_alloc(64, std::max<std::size_t>(bytes, 64));
  if (!p) throw std::bad_alloc();
  return static_cast<float*>(p);
}
}  // namespace

Tensor::Tensor(Shape shape, Device device) : shape_(std::move(shape)), numel_(shape_numel(shape_)), device_(device) {
  allocate(numel_);
  fill(0.0f);
}

void Tensor::allocate(std::int64_t count) {
  storage_ = std::unique_ptr<float, FreeAligned>(
      device_ == Device::CUDA ? detail::cuda_alloc_floats(count) : allocate_aligned(count), FreeAligned{device_});
  data_ = storage_.get();
  capacity_ = count;
}

Tensor Tensor::view(float* data, Shape shape, Device device) {
  Tensor t;
  t.shape_ = std::move(shape);
  t.numel_ = shape_numel(t.shape_);
  t.capacity_ = t.numel_;
  t.device_ = device;
  t.data_ = data;
  return t;
}

Tensor Tensor::clone() const {
  Tensor t(shape_, device_);
  copy_floats(t.data_, device_, data_, device_, numel_);
  return t;
}

Tensor Tensor::reshaped(Shape shape) {
  if (shape_numel(shape) != numel_)
    throw std::invalid_argument("cannot reshape " + shape_string(shape_) + " to " + shape_string(shape));
  return view(data_, std::move(shape), device_);
}

void Tensor::resize(Shape shape) {
  const std::int64_t n = shape_numel(shape);
  if (n > capacity_) {
    if (!owns() && data_) throw std::invalid_argument("cannot grow a tensor view to " + shape_string(shape));
    allocate(n);
  }
  shape_ = std::move(shape);
  numel_ = n;
}

void Tensor::fill(float value) {
  if (device_ == Device::CUDA)
    detail::cuda_fill(data_, numel_, value);
  else
    std::fill_n(data_, numel_, value);
}

}  // namespace rsi::kernels
