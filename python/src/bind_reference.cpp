// The single-process reference API (moe/moe.hpp) on numpy arrays. These functions copy
// their arguments into moe::Tensor: they are the reference, not the fast path.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings.hpp"
#include "moe/layer.hpp"
#include "moe/moe.hpp"

namespace py = pybind11;

namespace moe::python {

void bind_reference(py::module_& m) {
  m.def("moe_gating_forward",
        [](const FloatArray& input, const FloatArray& gate_weights, const MOEConfig& config) {
          auto [weights, indices, loss] = moe_gating_forward(to_tensor(input), to_tensor(gate_weights), config);
          return py::make_tuple(to_numpy(weights), to_numpy(indices), to_numpy(loss));
        },
        py::arg("input"), py::arg("gate_weights"), py::arg("config"),
        "Routing: (expert_weights [T,k], expert_indices [T,k] int32, load_balancing_loss [1]).");
  m.def("moe_gate_probabilities",
        [](const FloatArray& input, const FloatArray& gate_weights, const MOEConfig& config) {
          return to_numpy(moe_gate_probabilities(to_tensor(input), to_tensor(gate_weights), config));
        },
        py::arg("input"), py::arg("gate_weights"), py::arg("config"), "The router's normalised scores [T, E].");
  m.def("moe_expert_computation",
        [](const FloatArray& input, const FloatArray& expert_weights, const IntArray& expert_indices,
           const std::vector<FloatArray>& expert_params, const MOEConfig& config) {
          std::vector<Tensor<float>> params;
          for (const FloatArray& p : expert_params) params.push_back(to_tensor(p));
          return to_numpy(moe_expert_computation(to_tensor(input), to_tensor(expert_weights),
                                                 to_tensor(expert_indices), params, config));
        },
        py::arg("input"), py::arg("expert_weights"), py::arg("expert_indices"), py::arg("expert_params"),
        py::arg("config"), "Runs the selected experts and combines them (capacity applied when drop_tokens).");
  m.def("compute_load_balancing_loss",
        [](const FloatArray& gate_probs, const IntArray& expert_indices, const MOEConfig& config) {
          return to_numpy(compute_load_balancing_loss(to_tensor(gate_probs), to_tensor(expert_indices), config));
        },
        py::arg("gate_probs"), py::arg("expert_indices"), py::arg("config"), "L_aux = E * sum_i f_i * P_i, [1].");
  m.def("apply_expert_ffn",
        [](const FloatArray& input, const FloatArray& expert_weights, const MOEConfig& config) {
          return to_numpy(apply_expert_ffn(to_tensor(input), to_tensor(expert_weights), config));
        },
        py::arg("input"), py::arg("expert_weights"), py::arg("config"), "One expert on input [n, H].");
  m.def("initial_gate_weights",
        [](const MOEConfig& config, std::uint64_t seed) { return to_numpy(initial_gate_weights(config, seed)); },
        py::arg("config"), py::arg("seed") = 0, "The gate a layer built with seed starts from, [H, E].");
  m.def("initial_expert_params",
        [](const MOEConfig& config, std::uint64_t seed, std::int64_t global_id) {
          return to_numpy(initial_expert_params(config, seed, global_id));
        },
        py::arg("config"), py::arg("seed"), py::arg("global_id"), "An expert's initial flat parameters.");

  py::class_<BenchmarkResult>(m, "BenchmarkResult")
      .def_readonly("average_ms", &BenchmarkResult::average_ms)
      .def_readonly("tokens_per_second", &BenchmarkResult::tokens_per_second)
      .def_readonly("num_tokens", &BenchmarkResult::num_tokens)
      .def_readonly("num_runs", &BenchmarkResult::num_runs)
      .def("__repr__", [](const BenchmarkResult& r) {
        return "BenchmarkResult(average_ms=" + std::to_string(r.average_ms) +
               ", tokens_per_second=" + std::to_string(r.tokens_per_second) + ")";
      });
  m.def("benchmark_moe_performance",
        [](const MOEConfig& config, int num_runs, std::int64_t num_tokens) {
          py::gil_scoped_release release;
          return benchmark_moe_performance(config, num_runs, num_tokens);
        },
        py::arg("config"), py::arg("num_runs") = 100, py::arg("num_tokens") = 64,
        "The reference API's benchmark: prints the average time per forward and the throughput, and returns them.");
}

}  // namespace moe::python
