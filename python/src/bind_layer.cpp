// moe.MoELayer with its optimizers and checkpoints. Token rows cross as DLPack without
// copies (dlpack_bridge.hpp); parameters and gradients are exported as views of the
// layer's own storage, which is how moe.torch.MoE gives PyTorch its nn.Parameters.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <memory>
#include <optional>

#include "bindings.hpp"
#include "collective_check.hpp"
#include "dlpack_bridge.hpp"
#include "input_checks.hpp"
#include "moe/checkpoint.hpp"
#include "moe/communicator.hpp"
#include "moe/layer.hpp"
#include "moe/mpi.hpp"
#include "moe/optimizer.hpp"

namespace py = pybind11;

namespace moe::python {
namespace {

// A layer and the communicator it runs on (the communicator must outlive the layer:
// members are destroyed in reverse order).
struct PyLayer {
  std::unique_ptr<Communicator> comm;
  std::unique_ptr<Communicator> replicas;  // with expert groups: the ranks holding the same experts
  std::unique_ptr<MoELayer> layer;
  int cuda_device = 0;
  std::vector<std::int64_t> training_shape;  // the last training forward's input shape
  bool has_training_forward = false;
};

// comm: None for one process, else an mpi4py communicator (moe duplicates it); `name`
// is the argument's, for the errors.
std::unique_ptr<Communicator> communicator_from(const py::object& comm, const char* name = "comm") {
  if (comm.is_none()) return make_communicator(CommBackend::Local);
  if (!py::hasattr(comm, "py2f"))
    detail::fail("MoELayer", name, " is a ", std::string(py::str(py::type::of(comm).attr("__name__"))),
                 "; expected an mpi4py communicator (mpi4py.MPI.Comm) or None");
  int initialized = 0;
  MPI_Initialized(&initialized);
  MOE_CHECK_ARG(initialized, "MoELayer", name, " is an mpi4py communicator but MPI is not initialised in this "
                "process; import mpi4py.MPI before building the layer");
  const MPI_Comm handle = MPI_Comm_f2c(comm.attr("py2f")().cast<MPI_Fint>());
  return make_mpi_communicator(handle);
}

Device parse_device(const std::string& name) {
  if (name == "cpu") return Device::CPU;
  if (name == "cuda") return Device::CUDA;
  detail::fail("MoELayer", "device = '", name, "'; expected 'cpu' or 'cuda'");
}

Precision parse_precision(const std::string& name) {
  if (name == "fp32") return Precision::FP32;
  if (name == "tf32") return Precision::TF32;
  if (name == "bf16") return Precision::BF16;
  detail::fail("MoELayer", "precision = '", name, "'; expected 'fp32', 'tf32' or 'bf16'");
}

TrafficMode parse_traffic(const std::string& name) {
  if (name == "deduplicated") return TrafficMode::Deduplicated;
  if (name == "per_assignment") return TrafficMode::PerAssignment;
  detail::fail("MoELayer", "traffic = '", name, "'; expected 'deduplicated' or 'per_assignment'");
}

Memory layer_memory(const PyLayer& l) { return l.layer->options().device == Device::CUDA ? Memory::Cuda : Memory::Host; }
const char* memory_name(Memory m) { return m == Memory::Host ? "cpu" : "cuda"; }

py::dict times_dict(const PhaseTimes& t) {
  py::dict d;
  for (const PhaseTimes::Field& f : PhaseTimes::fields) d[f.name] = t.*f.seconds;
  d["total"] = t.total();
  return d;
}

py::dict stats_dict(const ForwardStats& s) {
  py::dict d;
  d["rows_sent"] = s.rows_sent;
  d["rows_received"] = s.rows_received;
  d["bytes_sent"] = s.bytes_sent;
  d["metadata_bytes_sent"] = s.metadata_bytes_sent;
  d["dropped"] = s.dropped;
  d["tokens_per_expert"] = s.tokens_per_expert;
  d["chosen_per_expert"] = s.chosen_per_expert;
  d["times"] = times_dict(s.times);
  return d;
}

// What one forward returns to Python.
struct PyForward {
  py::object output;
  float aux_loss = 0, z_loss = 0;
  py::array expert_indices, expert_weights;
  py::dict stats;
  std::uintptr_t input_address = 0;  // where the layer read the tokens: the caller's memory, or a copy's
};

// Checks run on every rank together, so a bad argument on one rank ends the call on all
// (moe.CollectiveError) instead of leaving the others in the layer's collectives. A
// Python exception inside (numpy failing to allocate, say) is agreed on like a moe one.
template <class Check>
void agreed(PyLayer& l, const char* where, Check&& check) {
  collective_check(*l.comm, [&] {
    try {
      check();
    } catch (py::error_already_set& e) {
      detail::fail(where, std::string(py::str(e.value())));
    }
  });
}

// A new float32 numpy array of `shape`: the default destination on the CPU.
py::object numpy_empty(const std::vector<std::int64_t>& shape) {
  return py::module_::import("numpy").attr("empty")(py::cast(shape), "float32");
}

PyForward forward(PyLayer& l, const py::object& x, const py::object& out, bool training) {
  constexpr const char* where = "MoELayer.forward";
  std::optional<BorrowedArray> in, target;
  py::object output = out;
  std::int64_t tokens = 0;
  agreed(l, where, [&] {
    in.emplace(x, where, "x");
    MOE_CHECK_ARG(in->memory() == layer_memory(l), where, "x is in ", memory_name(in->memory()),
                  " memory; expected ", memory_name(layer_memory(l)), " memory, where the layer computes");
    tokens = checks::input_tokens(in->shape(), l.layer->config(), where);
    if (output.is_none()) {
      MOE_CHECK_ARG(in->memory() == Memory::Host, where,
                    "out is None for an input in cuda memory; pass out= (a torch tensor of x's shape)");
      output = numpy_empty(in->shape());
    }
    target.emplace(output, where, "out");
    MOE_CHECK_ARG(target->shape() == in->shape() && target->memory() == in->memory(), where, "out has shape ",
                  shape_to_string(target->shape()), " in ", memory_name(target->memory()),
                  " memory; expected x's shape ", shape_to_string(in->shape()), " in ", memory_name(in->memory()),
                  " memory");
  });
  ForwardResult r;
  {
    py::gil_scoped_release release;
    r = l.layer->forward(in->data(), tokens, target->data(), training ? Pass::Training : Pass::Inference);
  }
  l.has_training_forward = training;  // any forward discards the previous one's activations
  if (training) l.training_shape = in->shape();
  PyForward f;
  f.output = output;
  f.aux_loss = r.aux_loss;
  f.z_loss = r.z_loss;
  f.expert_indices = to_numpy(r.expert_indices);
  f.expert_weights = to_numpy(r.expert_weights);
  f.stats = stats_dict(r.stats);
  f.input_address = reinterpret_cast<std::uintptr_t>(in->data());
  return f;
}

py::object backward(PyLayer& l, const py::object& grad_output, const py::object& grad_input) {
  constexpr const char* where = "MoELayer.backward";
  std::optional<BorrowedArray> g, dx;
  py::object result = grad_input;
  agreed(l, where, [&] {
    MOE_CHECK_ARG(l.has_training_forward, where, "no forward(x, training=True) to differentiate");
    g.emplace(grad_output, where, "grad_output");
    MOE_CHECK_ARG(g->shape() == l.training_shape && g->memory() == layer_memory(l), where, "grad_output has shape ",
                  shape_to_string(g->shape()), " in ", memory_name(g->memory()),
                  " memory; expected the training forward's input shape ", shape_to_string(l.training_shape), " in ",
                  memory_name(layer_memory(l)), " memory");
    if (result.is_none()) {
      MOE_CHECK_ARG(g->memory() == Memory::Host, where, "grad_input is None for cuda memory; pass grad_input=");
      result = numpy_empty(g->shape());
    }
    dx.emplace(result, where, "grad_input");
    MOE_CHECK_ARG(dx->shape() == g->shape() && dx->memory() == g->memory(), where, "grad_input has shape ",
                  shape_to_string(dx->shape()), "; expected ", shape_to_string(g->shape()), " in ",
                  memory_name(g->memory()), " memory");
  });
  {
    py::gil_scoped_release release;
    l.layer->backward(g->data(), dx->data());
  }
  l.has_training_forward = false;
  return result;
}

// One trainable tensor for Python: its name, and views of its value and gradient.
struct PyParameter {
  std::string name;
  ArrayView data, grad;
  bool replicated;
};

std::vector<PyParameter> parameters(const py::object& self) {
  PyLayer& l = self.cast<PyLayer&>();
  std::vector<PyParameter> out;
  for (const ParameterView& v : l.layer->parameter_views()) {
    const Memory memory = layer_memory(l);
    out.push_back({v.name, ArrayView{self, v.data, v.shape, memory, l.cuda_device},
                   ArrayView{self, v.grad, v.shape, memory, l.cuda_device}, v.replicated});
  }
  return out;
}

}  // namespace

void bind_layer(py::module_& m) {
  py::class_<PyForward>(m, "ForwardResult", "What one forward returns.")
      .def_readonly("output", &PyForward::output, "The output (out= when given), the input's shape.")
      .def_readonly("aux_loss", &PyForward::aux_loss, "This rank's load-balancing loss L_aux.")
      .def_readonly("z_loss", &PyForward::z_loss, "This rank's router z-loss L_z.")
      .def_readonly("expert_indices", &PyForward::expert_indices, "[T, k] int32: each token's experts.")
      .def_readonly("expert_weights", &PyForward::expert_weights, "[T, k]: their gate weights.")
      .def_readonly("stats", &PyForward::stats,
                    "Rows and bytes moved, drops, per-expert loads (all ranks) and per-phase times in seconds.")
      .def_readonly("input_address", &PyForward::input_address,
                    "The address the layer read the tokens from: x's own data when x was not copied.");

  py::class_<PyParameter>(m, "Parameter", "One trainable tensor of a layer, with views of its storage.")
      .def_readonly("name", &PyParameter::name)
      .def_readonly("data", &PyParameter::data, "A DLPack view of the values (the layer's storage).")
      .def_readonly("grad", &PyParameter::grad, "A DLPack view of the gradient backward() accumulates into.")
      .def_readonly("replicated", &PyParameter::replicated,
                    "True when every rank holds the same copy (gate, shared expert); False for this rank's experts.")
      .def("__repr__", [](const PyParameter& p) { return "Parameter(" + p.name + ", " + shape_to_string(p.data.shape) + ")"; });

  py::class_<PyLayer>(m, "MoELayer",
                      "One MoE layer with its experts sharded over the ranks of comm (docs/design.md §2). "
                      "Collective: every rank builds it with the same config, seed and options. With replicas "
                      "(an mpi4py communicator joining the ranks at the same position of every expert group, "
                      "comm being the group), backward() sums every gradient over the whole job.")
      .def(py::init([](const MOEConfig& config, const py::object& comm, std::uint64_t seed, const std::string& device,
                       const std::string& precision, float aux_loss_coef, float z_loss_coef,
                       const std::string& traffic, bool static_shapes, const py::object& replicas) {
             LayerOptions options;
             options.static_shapes = static_shapes;
             options.device = parse_device(device);
             options.precision = parse_precision(precision);
             options.aux_loss_coef = aux_loss_coef;
             options.z_loss_coef = z_loss_coef;
             options.traffic = parse_traffic(traffic);
             auto l = std::make_unique<PyLayer>();
             if (!replicas.is_none()) {
               l->replicas = communicator_from(replicas, "replicas");
               MOE_CHECK_ARG(!comm.is_none(), "MoELayer", "replicas is given but comm is None; expected both as "
                             "mpi4py communicators (the expert group and its replicas) or replicas = None");
             }
             l->comm = communicator_from(comm);
             {
               py::gil_scoped_release release;
               l->layer = l->replicas ? std::make_unique<MoELayer>(config, *l->comm, *l->replicas, seed, options)
                                      : std::make_unique<MoELayer>(config, *l->comm, seed, options);
             }
             const int gpus = cuda_device_count();
             l->cuda_device = gpus > 0 ? l->comm->local_rank() % gpus : 0;
             return l;
           }),
           py::arg("config"), py::arg("comm") = py::none(), py::arg("seed") = 0, py::arg("device") = "cpu",
           py::arg("precision") = "fp32", py::arg("aux_loss_coef") = 0.01f, py::arg("z_loss_coef") = 0.0f,
           py::arg("traffic") = "deduplicated", py::arg("static_shapes") = false, py::arg("replicas") = py::none())
      .def("forward", &forward, py::arg("x"), py::arg("out") = py::none(), py::arg("training") = false,
           "Collective. x: float32 [T, H] or [B, S, H], C-contiguous, in the layer's memory (numpy or torch, "
           "read in place through DLPack). Writes the output into out (allocated as numpy when None).")
      .def("backward", &backward, py::arg("grad_output"), py::arg("grad_input") = py::none(),
           "Collective, after forward(..., training=True): accumulates the parameters' gradients and writes dL/dx.")
      .def("set_loss_weights", [](PyLayer& l, float aux, float z) { l.layer->set_loss_weights(aux, z); },
           py::arg("aux_loss_weight"), py::arg("z_loss_weight"),
           "dL/dL_aux and dL/dL_z for the next backward (aux_loss_coef and z_loss_coef until set).")
      .def("zero_grad", [](PyLayer& l) { l.layer->zero_grad(); })
      .def("parameters", &parameters, "Every trainable tensor, with views of its value and gradient.")
      .def("parameters_written", [](PyLayer& l) { l.layer->parameters_written(); },
           "Call after writing parameters through their views (drops derived copies, e.g. CUDA BF16 weights).")
      .def("backward_times", [](const PyLayer& l) { return times_dict(l.layer->backward_times()); })
      .def_property_readonly("config", [](const PyLayer& l) { return l.layer->config(); })
      .def_property_readonly("rank", [](const PyLayer& l) { return l.comm->rank(); })
      .def_property_readonly("size", [](const PyLayer& l) { return l.comm->size(); })
      .def_property_readonly("device", [](const PyLayer& l) { return memory_name(layer_memory(l)); })
      .def_property_readonly("cuda_device", [](const PyLayer& l) { return l.cuda_device; })
      .def_property_readonly("num_local_experts", [](const PyLayer& l) { return l.layer->num_local_experts(); })
      .def_property_readonly("first_local_expert", [](const PyLayer& l) { return l.layer->first_local_expert(); })
      .def("gate_weights", [](const PyLayer& l) { return to_numpy(l.layer->gate_weights()); })
      .def("set_gate_weights", [](PyLayer& l, const FloatArray& w) { l.layer->set_gate_weights(to_tensor(w)); })
      .def("expert_params", [](const PyLayer& l, std::int64_t id) { return to_numpy(l.layer->expert_params(id)); },
           py::arg("global_id"))
      .def("set_expert_params",
           [](PyLayer& l, std::int64_t id, const FloatArray& p) { l.layer->set_expert_params(id, to_tensor(p)); },
           py::arg("global_id"), py::arg("flat_params"))
      .def("expert_grad", [](const PyLayer& l, std::int64_t id) { return to_numpy(l.layer->expert_grad(id)); })
      .def("gate_grad", [](const PyLayer& l) { return to_numpy(l.layer->gate_grad()); })
      .def("expert_bias", [](const PyLayer& l) { return to_numpy(l.layer->expert_bias()); })
      .def("set_expert_bias", [](PyLayer& l, const FloatArray& b) { l.layer->set_expert_bias(to_tensor(b)); })
      .def("update_expert_bias", [](PyLayer& l) { l.layer->update_expert_bias(); },
           "Sigmoid router: b += rate * sign(mean load - load) from the loads since the last update. "
           "Every rank calls it after the same steps (after each optimizer step).")
      .def("shared_expert_params", [](const PyLayer& l) { return to_numpy(l.layer->shared_expert_params()); })
      .def("set_shared_expert_params",
           [](PyLayer& l, const FloatArray& p) { l.layer->set_shared_expert_params(to_tensor(p)); })
      .def("shared_gate_weights", [](const PyLayer& l) { return to_numpy(l.layer->shared_gate_weights()); })
      .def("set_shared_gate_weights",
           [](PyLayer& l, const FloatArray& w) { l.layer->set_shared_gate_weights(to_tensor(w)); });

  py::class_<Optimizer>(m, "Optimizer", "An optimizer over one layer's parameters (state sharded like them).")
      .def("step", [](Optimizer& o) {
             py::gil_scoped_release release;
             o.step();
           },
           "One update from the gradients; also the sigmoid router's bias update.")
      .def_property_readonly("step_count", &Optimizer::step_count)
      .def_property_readonly("type", [](const Optimizer& o) { return optimizer_name(o.type()); })
      .def_property("lr", &Optimizer::learning_rate, &Optimizer::set_learning_rate);
  m.def("SGD",
        [](PyLayer& l, float lr, float momentum, float weight_decay) {
          return Optimizer::sgd(*l.layer, SGDOptions{lr, momentum, weight_decay});
        },
        py::arg("layer"), py::arg("lr") = 0.01f, py::arg("momentum") = 0.9f, py::arg("weight_decay") = 0.0f,
        py::keep_alive<0, 1>(), "SGD with momentum and decoupled weight decay.");
  m.def("AdamW",
        [](PyLayer& l, float lr, std::pair<float, float> betas, float eps, float weight_decay) {
          return Optimizer::adamw(*l.layer, AdamWOptions{lr, betas.first, betas.second, eps, weight_decay});
        },
        py::arg("layer"), py::arg("lr") = 1e-3f, py::arg("betas") = std::make_pair(0.9f, 0.999f),
        py::arg("eps") = 1e-8f, py::arg("weight_decay") = 0.01f, py::keep_alive<0, 1>(), "AdamW (decoupled).");
  m.def("clip_grad_norm", [](PyLayer& l, double max_norm) { return clip_grad_norm(*l.layer, max_norm); },
        py::arg("layer"), py::arg("max_norm"),
        "Collective: the global L2 norm of the gradients; scales them to max_norm when above (<= 0 only measures).");

  m.def("save_checkpoint",
        [](const std::string& path, PyLayer& l, std::int64_t step, Optimizer* optimizer,
           const TrainingAttributes& training) {
          py::gil_scoped_release release;
          save_checkpoint(path, *l.layer, step, optimizer, training);
        },
        py::arg("path"), py::arg("layer"), py::arg("step") = 0, py::arg("optimizer") = nullptr,
        py::arg("training") = TrainingAttributes{},
        "Collective: one HDF5 file for the whole layer (docs/design.md §6), written atomically.");
  m.def("load_checkpoint",
        [](const std::string& path, PyLayer& l, Optimizer* optimizer) {
          py::gil_scoped_release release;
          return load_checkpoint(path, *l.layer, optimizer);
        },
        py::arg("path"), py::arg("layer"), py::arg("optimizer") = nullptr,
        "Collective: checks the file against the layer, loads it, and returns the stored step.");
  m.def("read_checkpoint_config", &read_checkpoint_config, py::arg("path"),
        "The config stored in a checkpoint, to build a layer that can load it.");
}

}  // namespace moe::python
