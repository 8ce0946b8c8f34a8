#include "dlpack_bridge.hpp"

#include <dlpack/dlpack.h>
#include <pybind11/stl.h>

#include "moe/error.hpp"
#include "moe/tensor.hpp"

namespace py = pybind11;

namespace moe::python {
namespace {

constexpr const char* kCapsuleName = "dltensor";
constexpr const char* kUsedCapsuleName = "used_dltensor";

const char* device_name(DLDeviceType type) {
  switch (type) {
    case kDLCPU: return "cpu";
    case kDLCUDA: return "cuda";
    case kDLCUDAHost: return "cuda_host";
    case kDLCUDAManaged: return "cuda_managed";
    case kDLROCM: return "rocm";
    default: return "an unsupported device";
  }
}

std::string dtype_name(const DLDataType& t) {
  const char* kind = t.code == kDLFloat ? "float" : t.code == kDLInt ? "int" : t.code == kDLUInt ? "uint"
                     : t.code == kDLBfloat ? "bfloat" : "other";
  std::string name = std::string(kind) + std::to_string(t.bits);
  if (t.lanes != 1) name += "x" + std::to_string(t.lanes);
  return name;
}

// True when strides (in elements) describe a C-contiguous array; dims of extent 1 may
// carry any stride (PyTorch gives them arbitrary ones).
bool is_c_contiguous(const DLTensor& t) {
  if (!t.strides) return true;
  std::int64_t expected = 1;
  for (int d = t.ndim - 1; d >= 0; --d) {
    if (t.shape[d] != 1 && t.strides[d] != expected) return false;
    expected *= t.shape[d];
  }
  return true;
}

// What an exported view owns: the DLPack struct, its shape, and a reference to the
// Python object whose memory it points into.
struct ExportedView {
  DLManagedTensor managed{};
  std::vector<std::int64_t> shape;
  PyObject* owner = nullptr;
};

void release_exported(DLManagedTensor* managed) {
  auto* view = static_cast<ExportedView*>(managed->manager_ctx);
  // A consumer may free its tensor from a thread without the GIL.
  PyGILState_STATE state = PyGILState_Ensure();
  Py_XDECREF(view->owner);
  PyGILState_Release(state);
  delete view;
}

// A capsule that nobody consumed still owns its view.
void release_unconsumed_capsule(PyObject* capsule) {
  if (!PyCapsule_IsValid(capsule, kCapsuleName)) return;  // consumed: the consumer releases it
  auto* managed = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(capsule, kCapsuleName));
  if (managed && managed->deleter) managed->deleter(managed);
}

}  // namespace

BorrowedArray::BorrowedArray(const py::handle& object, const char* where, const char* argument) {
  if (!py::hasattr(object, "__dlpack__"))
    detail::fail(where, argument, " is a ", std::string(py::str(py::type::of(object).attr("__name__"))),
                 " has no __dlpack__; expected a numpy array or a torch tensor of float32");
  py::object capsule;
  try {
    capsule = object.attr("__dlpack__")();
  } catch (py::error_already_set& e) {
    detail::fail(where, argument, " could not be exported through DLPack (", std::string(py::str(e.value())),
                 "); expected a writable numpy array or a torch tensor of float32");
  }
  auto* managed = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(capsule.ptr(), kCapsuleName));
  if (!managed) {
    PyErr_Clear();
    detail::fail(where, argument, ".__dlpack__() returned no DLPack tensor capsule");
  }
  PyCapsule_SetName(capsule.ptr(), kUsedCapsuleName);  // ours now: released by the destructor
  managed_ = managed;
  const DLTensor& t = managed->dl_tensor;
  shape_.assign(t.shape, t.shape + t.ndim);
  auto fail = [&](auto&&... parts) {
    std::string message = detail::concat(where, ": ", argument, " ", parts...);
    if (managed->deleter) managed->deleter(managed);
    managed_ = nullptr;
    throw Error(message);
  };
  if (t.dtype.code != kDLFloat || t.dtype.bits != 32 || t.dtype.lanes != 1)
    fail("has dtype ", dtype_name(t.dtype), "; expected float32");
  if (t.device.device_type == kDLCPU || t.device.device_type == kDLCUDAHost)
    memory_ = Memory::Host;
  else if (t.device.device_type == kDLCUDA || t.device.device_type == kDLCUDAManaged)
    memory_ = Memory::Cuda;
  else
    fail("is on ", device_name(t.device.device_type), "; expected cpu or cuda memory");
  if (!is_c_contiguous(t)) fail("of shape ", shape_to_string(shape_), " is not C-contiguous; expected contiguous rows");
  data_ = reinterpret_cast<float*>(static_cast<char*>(t.data) + t.byte_offset);
}

BorrowedArray::~BorrowedArray() {
  auto* managed = static_cast<DLManagedTensor*>(managed_);
  if (managed && managed->deleter) managed->deleter(managed);
}

std::int64_t BorrowedArray::numel() const {
  std::int64_t n = 1;
  for (std::int64_t d : shape_) n *= d;
  return n;
}

py::capsule ArrayView::to_dlpack() const {
  auto* view = new ExportedView;
  view->shape = shape;
  view->owner = owner.ptr();
  Py_XINCREF(view->owner);
  DLTensor& t = view->managed.dl_tensor;
  t.data = data;
  t.device = DLDevice{memory == Memory::Host ? kDLCPU : kDLCUDA, memory == Memory::Host ? 0 : device_id};
  t.ndim = static_cast<int>(view->shape.size());
  t.dtype = DLDataType{kDLFloat, 32, 1};
  t.shape = view->shape.data();
  t.strides = nullptr;  // C-contiguous
  t.byte_offset = 0;
  view->managed.manager_ctx = view;
  view->managed.deleter = release_exported;
  return py::capsule(&view->managed, kCapsuleName, release_unconsumed_capsule);
}

py::tuple ArrayView::dlpack_device() const {
  return py::make_tuple(static_cast<int>(memory == Memory::Host ? kDLCPU : kDLCUDA), memory == Memory::Host ? 0 : device_id);
}

void bind_array_view(py::module_& m) {
  py::class_<ArrayView>(m, "ArrayView",
                        "Memory of a layer (a parameter or a gradient), viewable without a copy through DLPack: "
                        "numpy.from_dlpack(view) or torch.from_dlpack(view). The view keeps its layer alive.")
      .def("__dlpack__", [](const ArrayView& v, py::object /*stream*/) { return v.to_dlpack(); },
           py::arg("stream") = py::none())
      .def("__dlpack_device__", &ArrayView::dlpack_device)
      .def_property_readonly("shape", [](const ArrayView& v) { return py::tuple(py::cast(v.shape)); })
      .def_property_readonly("data_ptr", [](const ArrayView& v) { return reinterpret_cast<std::uintptr_t>(v.data); })
      .def("__repr__", [](const ArrayView& v) {
        return "ArrayView(shape=" + shape_to_string(v.shape) + ", " + (v.memory == Memory::Host ? "cpu" : "cuda") + ")";
      });
}

}  // namespace moe::python
