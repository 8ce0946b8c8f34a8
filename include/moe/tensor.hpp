// Tensor<T>: an owning, contiguous, row-major array with a shape, as in the reference
// API. Elements start at zero. Copyable (deep copy) and movable.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <limits>
#include <new>
#include <string>
#include <type_traits>
#include <vector>

#include "moe/error.hpp"

namespace moe {

using FLOAT_TYPE = float;
using INT_TYPE = std::int32_t;

std::string shape_to_string(const std::vector<std::int64_t>& shape);

namespace detail {
// Throws moe::Error unless `bytes` fit in this machine's physical memory, naming `what`
// and both sizes: a larger request would be granted by overcommit and then end the
// process when touched, instead of failing with a message.
void check_fits_in_memory(std::int64_t bytes, const std::string& what);
}  // namespace detail

template <class T>
class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::vector<std::int64_t> shape) : shape_(std::move(shape)) {
    const std::int64_t n = count(shape_);
    detail::check_fits_in_memory(n * static_cast<std::int64_t>(sizeof(T)), "a tensor of shape " + shape_to_string(shape_));
    try {
      data_.resize(static_cast<std::size_t>(n));
    } catch (const std::bad_alloc&) {
      detail::fail("Tensor", "Failed to allocate memory for a tensor of shape ", shape_to_string(shape_), " (",
                   n * static_cast<std::int64_t>(sizeof(T)), " bytes)");
    }
  }
  Tensor(std::initializer_list<std::int64_t> shape) : Tensor(std::vector<std::int64_t>(shape)) {}
  // Tensor<float>(batch, seq, hidden), as the reference API writes it.
  template <class... Dims,
            class = std::enable_if_t<(sizeof...(Dims) > 0) && (std::is_integral_v<Dims> && ...)>>
  explicit Tensor(Dims... dims) : Tensor(std::vector<std::int64_t>{static_cast<std::int64_t>(dims)...}) {}
  Tensor(std::vector<std::int64_t> shape, std::vector<T> values) : shape_(std::move(shape)) {
    MOE_CHECK_ARG(static_cast<std::int64_t>(values.size()) == count(shape_), "Tensor",
                  "values has ", values.size(), " elements; expected ", count(shape_),
                  " for shape ", shape_to_string(shape_));
    data_ = std::move(values);
  }

  const std::vector<std::int64_t>& shape() const { return shape_; }
  std::int64_t rank() const { return static_cast<std::int64_t>(shape_.size()); }
  std::int64_t dim(std::int64_t i) const {
    MOE_CHECK_ARG(i >= 0 && i < rank(), "Tensor::dim", "i = ", i, " is outside [0, ", rank(),
                  ") for shape ", shape_to_string(shape_));
    return shape_[static_cast<std::size_t>(i)];
  }
  std::int64_t numel() const { return static_cast<std::int64_t>(data_.size()); }
  bool empty() const { return data_.empty(); }

  T* data() { return data_.data(); }
  const T* data() const { return data_.data(); }
  T& operator[](std::int64_t i) { return data_[static_cast<std::size_t>(i)]; }
  const T& operator[](std::int64_t i) const { return data_[static_cast<std::size_t>(i)]; }
  T* begin() { return data_.data(); }
  T* end() { return data_.data() + data_.size(); }
  const T* begin() const { return data_.data(); }
  const T* end() const { return data_.data() + data_.size(); }

  // Same elements, new shape of the same element count.
  Tensor reshaped(std::vector<std::int64_t> shape) const& {
    Tensor copy = *this;
    copy.reshape(std::move(shape));
    return copy;
  }
  void reshape(std::vector<std::int64_t> shape) {
    MOE_CHECK_ARG(count(shape) == numel(), "Tensor::reshape", "shape ", shape_to_string(shape),
                  " has ", count(shape), " elements; the tensor has ", numel(), " (shape ",
                  shape_to_string(shape_), ")");
    shape_ = std::move(shape);
  }

 private:
  // The element count, checked: no negative dimension, and a byte count that fits
  // (a product that overflows int64 would allocate a wrapped-around size).
  static std::int64_t count(const std::vector<std::int64_t>& shape) {
    for (std::int64_t d : shape)
      MOE_CHECK_ARG(d >= 0, "Tensor", "shape ", shape_to_string(shape),
                    " has a negative dimension; expected every dimension >= 0");
    for (std::int64_t d : shape)
      if (d == 0) return 0;
    std::int64_t n = 1;
    const std::int64_t limit = std::numeric_limits<std::int64_t>::max() / static_cast<std::int64_t>(sizeof(T));
    for (std::int64_t d : shape) {
      MOE_CHECK_ARG(n <= limit / d, "Tensor", "shape ", shape_to_string(shape),
                    " has more elements than fit in memory (its byte count overflows int64)");
      n *= d;
    }
    return n;
  }

  std::vector<std::int64_t> shape_;
  std::vector<T> data_;
};

}  // namespace moe
