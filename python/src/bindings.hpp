// The pieces of the moe extension module, one per concept.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "moe/tensor.hpp"

namespace moe::python {

void bind_config(pybind11::module_& m);
void bind_layer(pybind11::module_& m);       // MoELayer, optimizers, checkpoints
void bind_reference(pybind11::module_& m);   // the single-process reference API on numpy arrays

// numpy <-> moe::Tensor, copying (for the reference API and the small accessors).
using FloatArray = pybind11::array_t<float, pybind11::array::c_style | pybind11::array::forcecast>;
using IntArray = pybind11::array_t<std::int32_t, pybind11::array::c_style | pybind11::array::forcecast>;
Tensor<float> to_tensor(const FloatArray& array);
Tensor<std::int32_t> to_tensor(const IntArray& array);
pybind11::array to_numpy(const Tensor<float>& tensor);
pybind11::array to_numpy(const Tensor<std::int32_t>& tensor);

}  // namespace moe::python
