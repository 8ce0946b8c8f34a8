// moe._moe: the C++ library as a Python extension (python/moe/__init__.py re-exports it).
#include <pybind11/pybind11.h>

#include <algorithm>

#include "bindings.hpp"
#include "dlpack_bridge.hpp"
#include "moe/error.hpp"

namespace py = pybind11;

namespace moe::python {

template <class T>
Tensor<T> to_tensor_impl(const py::array_t<T, py::array::c_style | py::array::forcecast>& array) {
  std::vector<std::int64_t> shape(array.shape(), array.shape() + array.ndim());
  Tensor<T> t(shape);
  std::copy(array.data(), array.data() + array.size(), t.data());
  return t;
}
Tensor<float> to_tensor(const FloatArray& array) { return to_tensor_impl<float>(array); }
Tensor<std::int32_t> to_tensor(const IntArray& array) { return to_tensor_impl<std::int32_t>(array); }

template <class T>
py::array to_numpy_impl(const Tensor<T>& tensor) {
  py::array_t<T> out(std::vector<py::ssize_t>(tensor.shape().begin(), tensor.shape().end()));
  std::copy(tensor.begin(), tensor.end(), out.mutable_data());
  return std::move(out);
}
py::array to_numpy(const Tensor<float>& tensor) { return to_numpy_impl(tensor); }
py::array to_numpy(const Tensor<std::int32_t>& tensor) { return to_numpy_impl(tensor); }

}  // namespace moe::python

PYBIND11_MODULE(_moe, m) {
  m.doc() = "Mixture-of-Experts layers with expert parallelism (the moe C++ library).";
  // Every moe::Error keeps its message; CollectiveError (a subclass) says that every rank
  // raised it together. Translators run newest first, so the subclass is tried first.
  auto& error = py::register_exception<moe::Error>(m, "Error", PyExc_RuntimeError);
  py::register_exception<moe::CollectiveError>(m, "CollectiveError", error.ptr());
  moe::python::bind_array_view(m);
  moe::python::bind_config(m);
  moe::python::bind_layer(m);
  moe::python::bind_reference(m);
}
