// Zero-copy exchange of float32 arrays with numpy and PyTorch through DLPack
// (https://dmlc.github.io/dlpack): any object with __dlpack__ comes in as a borrowed
// pointer, and the layer's parameters and gradients go out as DLPack capsules that
// keep the layer alive for as long as a view of them exists.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

namespace moe::python {

enum class Memory { Host, Cuda };

// A float32, C-contiguous array borrowed from a Python object for the length of one call.
class BorrowedArray {
 public:
  // Throws moe::Error "<where>: <argument> …" unless `object` exports float32,
  // C-contiguous data in host or CUDA memory through __dlpack__.
  BorrowedArray(const pybind11::handle& object, const char* where, const char* argument);
  ~BorrowedArray();
  BorrowedArray(const BorrowedArray&) = delete;
  BorrowedArray& operator=(const BorrowedArray&) = delete;

  float* data() const { return data_; }
  const std::vector<std::int64_t>& shape() const { return shape_; }
  std::int64_t numel() const;
  Memory memory() const { return memory_; }

 private:
  void* managed_ = nullptr;  // DLManagedTensor*, released through its deleter
  float* data_ = nullptr;
  std::vector<std::int64_t> shape_;
  Memory memory_ = Memory::Host;
};

// A view of memory that `owner` keeps alive: exported through __dlpack__ as float32 of
// `shape`, so numpy.from_dlpack and torch.from_dlpack wrap it without a copy.
struct ArrayView {
  pybind11::object owner;
  float* data = nullptr;
  std::vector<std::int64_t> shape;
  Memory memory = Memory::Host;
  int device_id = 0;

  pybind11::capsule to_dlpack() const;
  pybind11::tuple dlpack_device() const;
};

void bind_array_view(pybind11::module_& m);

}  // namespace moe::python
