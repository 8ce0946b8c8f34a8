// An expert-parallel forward: run it under moe-run, e.g.
//   launch/moe-run -np 2 build/examples/distributed_forward
// Each rank routes its own tokens; experts are sharded across the ranks.
#include <cstdio>
#include <random>

#include <moe/layer.hpp>

int main() {
  auto comm = moe::make_communicator();  // MPI under mpirun/moe-run, else one local rank
  const moe::MOEConfig config(/*num_experts=*/8, /*top_k=*/2, /*hidden_dim=*/256, /*expert_dim=*/1024);
  moe::MoELayer layer(config, *comm, /*seed=*/42);

  moe::Tensor<float> tokens(512, config.hidden_dim);
  std::mt19937 rng(1000 + comm->rank());
  std::normal_distribution<float> normal;
  for (auto& v : tokens) v = normal(rng);

  const moe::ForwardResult result = layer.forward(tokens);
  std::printf("rank %d of %d: experts [%ld, %ld), output %s, aux loss %.4f, dropped %ld, sent %ld bytes\n",
              comm->rank(), comm->size(), layer.first_local_expert(),
              layer.first_local_expert() + layer.num_local_experts(),
              moe::shape_to_string(result.output.shape()).c_str(), result.aux_loss, result.stats.dropped,
              result.stats.bytes_sent);
  if (comm->rank() == 0) {
    std::printf("tokens per expert (all ranks):");
    for (auto n : result.stats.tokens_per_expert) std::printf(" %ld", n);
    std::printf("\n");
  }
  return 0;
}
