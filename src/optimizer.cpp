#include "moe/optimizer.hpp"

#include <cmath>

#include "layer_access.hpp"
#include "moe/error.hpp"
#include "optimizer_access.hpp"

namespace moe {

const char* optimizer_name(OptimizerType type) { return type == OptimizerType::SGD ? "sgd" : "adamw"; }

struct Optimizer::Impl {
  MoELayer* layer;
  OptimizerType type;
  SGDOptions sgd;
  AdamWOptions adamw;
  std::int64_t steps = 0;
  // SGD: one state set (momentum); AdamW: two (exp_avg, exp_avg_sq), each shaped as
  // the layer's parameters.
  struct StateSet {
    std::string name;
    ParameterSet values;
  };
  std::vector<std::unique_ptr<StateSet>> state;

  Impl(MoELayer& l, OptimizerType t, const std::vector<std::string>& names) : layer(&l), type(t) {
    kernels::Ops& ops = detail::LayerAccess::ops(l);
    for (const auto& name : names) {
      auto set = std::make_unique<StateSet>(StateSet{name, ParameterSet(ops)});
      set->values.resize(l.config(), l.num_local_experts());
      set->values.zero();
      state.push_back(std::move(set));
    }
  }

  // Calls update(param, grad, state pointers…, n) for every parameter tensor.
  template <class Update>
  void for_each_tensor(Update update) {
    const auto params = detail::LayerAccess::params(*layer).tensors();
    const auto grads = detail::LayerAccess::grads(*layer).tensors();
    std::vector<std::vector<ParameterSet::Tensor>> states;
    for (auto& s : state) states.push_back(s->values.tensors());
    std::vector<float*> tensor_state;
    for (std::size_t i = 0; i < params.size(); ++i) {
      tensor_state.clear();
      for (const auto& s : states) tensor_state.push_back(s[i].data);
      update(params[i].data, grads[i].data, tensor_state, params[i].count);
    }
  }
};

namespace {

void check_positive(float v, const char* name) {
  MOE_CHECK_ARG(std::isfinite(v) && v > 0, "Optimizer", name, " = ", v, "; expected a finite value > 0");
}
void check_unit(float v, const char* name) {
  MOE_CHECK_ARG(v >= 0 && v < 1, "Optimizer", name, " = ", v, "; expected a value in [0, 1)");
}
void check_non_negative(float v, const char* name) {
  MOE_CHECK_ARG(std::isfinite(v) && v >= 0, "Optimizer", name, " = ", v, "; expected a finite value >= 0");
}

}  // namespace

Optimizer::Optimizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Optimizer::~Optimizer() = default;
Optimizer::Optimizer(Optimizer&&) noexcept = default;
Optimizer& Optimizer::operator=(Optimizer&&) noexcept = default;

Optimizer Optimizer::sgd(MoELayer& layer, SGDOptions options) {
  check_positive(options.lr, "lr");
  check_unit(options.momentum, "momentum");
  check_non_negative(options.weight_decay, "weight_decay");
  auto impl = std::make_unique<Impl>(layer, OptimizerType::SGD, std::vector<std::string>{"momentum"});
  impl->sgd = options;
  return Optimizer(std::move(impl));
}

Optimizer Optimizer::adamw(MoELayer& layer, AdamWOptions options) {
  check_positive(options.lr, "lr");
  check_unit(options.beta1, "beta1");
  check_unit(options.beta2, "beta2");
  check_positive(options.eps, "eps");
  check_non_negative(options.weight_decay, "weight_decay");
  auto impl = std::make_unique<Impl>(layer, OptimizerType::AdamW, std::vector<std::string>{"exp_avg", "exp_avg_sq"});
  impl->adamw = options;
  return Optimizer(std::move(impl));
}

void Optimizer::step() {
  Impl& o = *impl_;
  kernels::Ops& ops = detail::LayerAccess::ops(*o.layer);
  ++o.steps;
  if (o.type == OptimizerType::SGD) {
    const SGDOptions s = o.sgd;
    o.for_each_tensor([&](float* p, const float* g, const std::vector<float*>& st, std::int64_t n) {
      ops.sgd_update(p, g, st[0], n, s.lr, s.momentum, s.weight_decay);
    });
  } else {
    const AdamWOptions a = o.adamw;
    const auto c1 = static_cast<float>(1.0 - std::pow(double(a.beta1), double(o.steps)));
    const auto c2 = static_cast<float>(1.0 - std::pow(double(a.beta2), double(o.steps)));
    o.for_each_tensor([&](float* p, const float* g, const std::vector<float*>& st, std::int64_t n) {
      ops.adamw_update(p, g, st[0], st[1], n, a.lr, a.beta1, a.beta2, a.eps, a.weight_decay, c1, c2);
    });
  }
  o.layer->update_expert_bias();  // the sigmoid router's balancing step (a no-op otherwise)
}

std::int64_t Optimizer::step_count() const { return impl_->steps; }
OptimizerType Optimizer::type() const { return impl_->type; }
float Optimizer::learning_rate() const { return impl_->type == OptimizerType::SGD ? impl_->sgd.lr : impl_->adamw.lr; }
void Optimizer::set_learning_rate(float lr) {
  check_positive(lr, "lr");
  (impl_->type == OptimizerType::SGD ? impl_->sgd.lr : impl_->adamw.lr) = lr;
}

double clip_grad_norm(MoELayer& layer, double max_norm) {
  MOE_CHECK_ARG(!std::isnan(max_norm), "clip_grad_norm", "max_norm = ", max_norm,
                "; expected a number (<= 0 only measures the norm)");
  kernels::Ops& ops = detail::LayerAccess::ops(layer);
  const auto grads = detail::LayerAccess::grads(layer).tensors();
  // Each rank's experts are its own: summed over ranks. The replicated tensors' (gate,
  // shared expert) gradients are the same on every rank (already summed): counted
  // once, after the reduction. With replicas (expert groups) every gradient is already
  // the whole job's and the same in every group, so the group's sum is the job's norm.
  std::vector<const float*> data;
  std::vector<std::int64_t> counts;
  for (const auto& t : grads) data.push_back(t.data), counts.push_back(t.count);
  std::vector<double> sums(grads.size());
  ops.sum_squares_each(data, counts, sums.data());  // one wait for the device, not one per tensor
  double sharded = 0.0, replicated = 0.0;
  for (std::size_t i = 0; i < grads.size(); ++i) (grads[i].replicated ? replicated : sharded) += sums[i];
  layer.communicator().all_reduce(&sharded, 1, DataType::Float64, ReduceOp::Sum);
  const double norm = std::sqrt(sharded + replicated);
  if (max_norm > 0 && norm > max_norm) {
    const auto factor = static_cast<float>(max_norm / (norm + 1e-6));
    for (const auto& t : grads) ops.scale(t.data, t.count, factor);
  }
  return norm;
}

namespace detail {

std::vector<OptimizerState> OptimizerAccess::state(Optimizer& optimizer) {
  std::vector<OptimizerState> out;
  for (auto& s : optimizer.impl_->state) out.push_back({s->name, &s->values});
  return out;
}

std::map<std::string, double> OptimizerAccess::hyperparameters(const Optimizer& optimizer) {
  const auto& o = *optimizer.impl_;
  if (o.type == OptimizerType::SGD)
    return {{"lr", o.sgd.lr}, {"momentum", o.sgd.momentum}, {"weight_decay", o.sgd.weight_decay}};
  return {{"lr", o.adamw.lr},
          {"beta1", o.adamw.beta1},
          {"beta2", o.adamw.beta2},
          {"eps", o.adamw.eps},
          {"weight_decay", o.adamw.weight_decay}};
}

void OptimizerAccess::restore(Optimizer& optimizer, std::int64_t steps, const std::map<std::string, double>& h) {
  auto& o = *optimizer.impl_;
  o.steps = steps;
  auto get = [&](const char* name, float& field) {
    const auto it = h.find(name);
    MOE_CHECK_ARG(it != h.end(), "load_checkpoint", "the optimizer state lacks the hyperparameter '", name, "'");
    field = static_cast<float>(it->second);
  };
  if (o.type == OptimizerType::SGD) {
    get("lr", o.sgd.lr), get("momentum", o.sgd.momentum), get("weight_decay", o.sgd.weight_decay);
  } else {
    get("lr", o.adamw.lr), get("beta1", o.adamw.beta1), get("beta2", o.adamw.beta2), get("eps", o.adamw.eps);
    get("weight_decay", o.adamw.weight_decay);
  }
}

MoELayer& OptimizerAccess::layer(Optimizer& optimizer) { return *optimizer.impl_->layer; }

}  // namespace detail
}  // namespace moe
