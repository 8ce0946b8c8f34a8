// Buffer<T>: a move-only array in a backend's memory that grows and is then reused,
// because fresh memory is slow to touch (docs/design.md §4a: 70 ms against 10 ms for 84 MB).
#pragma once

#include <algorithm>
#include <cstddef>
#include <utility>
#include <vector>

#include "kernels/ops.hpp"

namespace moe {

template <class T>
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(kernels::Ops& ops) : ops_(&ops) {}
  ~Buffer() { release(); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  Buffer(Buffer&& other) noexcept { swap(other); }
  Buffer& operator=(Buffer&& other) noexcept {
    if (this != &other) {
      release();
      swap(other);
    }
    return *this;
  }

  void bind(kernels::Ops& ops) {
    release();
    ops_ = &ops;
  }

  // Makes room for n elements and returns the storage. Contents are not kept when the
  // buffer grows; growth is by at least half again, so slowly rising sizes settle.
  T* resize(std::size_t n) {
    if (n > capacity_) {
      const std::size_t grown = std::max(n, capacity_ + capacity_ / 2);
      release();
      ptr_ = static_cast<T*>(ops_->allocate(grown * sizeof(T)));
      capacity_ = grown;
    }
    size_ = n;
    return ptr_;
  }

  // resize(values.size()) and copy the host values in.
  T* upload(const std::vector<T>& values) {
    T* dst = resize(values.size());
    if (!values.empty()) ops_->copy_from_host(dst, values.data(), values.size() * sizeof(T));
    return dst;
  }
  T* upload(const T* values, std::size_t n) {
    T* dst = resize(n);
    if (n) ops_->copy_from_host(dst, values, n * sizeof(T));
    return dst;
  }
  std::vector<T> download() const {
    std::vector<T> host(size_);
    if (size_) ops_->copy_to_host(host.data(), ptr_, size_ * sizeof(T));
    return host;
  }
  void zero() {
    if (size_) ops_->fill_zero(ptr_, size_ * sizeof(T));
  }

  T* data() { return ptr_; }
  const T* data() const { return ptr_; }
  std::size_t size() const { return size_; }

 private:
  void release() noexcept {
    if (ptr_) ops_->deallocate(ptr_);
    ptr_ = nullptr;
    capacity_ = size_ = 0;
  }
  void swap(Buffer& other) noexcept {
    std::swap(ops_, other.ops_);
    std::swap(ptr_, other.ptr_);
    std::swap(capacity_, other.capacity_);
    std::swap(size_, other.size_);
  }

  kernels::Ops* ops_ = nullptr;
  T* ptr_ = nullptr;
  std::size_t capacity_ = 0;
  std::size_t size_ = 0;
};

}  // namespace moe
