// One checkpoint file whatever P: saved by P ranks, loaded by P' ranks (4→2, 2→4,
// 1→4, 4→1 and P→P, as far as this job's size allows), and by the single-process
// reference API. Smaller groups are sub-communicators of this job.
#include <unistd.h>

#include <filesystem>
#include <numeric>

#include "moe/checkpoint.hpp"
#include "moe/mpi.hpp"
#include "mpi_test_env.hpp"
#include "support/test_util.hpp"

using moe::MOEConfig;
using moe::Tensor;
using moe::testing::world;

namespace {

// A communicator over world ranks [0, size); null on the others.
std::unique_ptr<moe::Communicator> first_ranks(int size) {
  MPI_Comm sub = MPI_COMM_NULL;
  MPI_Comm_split(MPI_COMM_WORLD, world().rank() < size ? 0 : MPI_UNDEFINED, world().rank(), &sub);
  if (sub == MPI_COMM_NULL) return nullptr;
  auto comm = moe::make_mpi_communicator(sub);
  MPI_Comm_free(&sub);
  return comm;
}

// A directory every rank agrees on.
std::string shared_directory() {
  std::int64_t pid = world().rank() == 0 ? ::getpid() : 0;
  world().broadcast(&pid, sizeof pid, 0);
  const std::string dir = "/tmp/moe-reshard-" + std::to_string(pid);
  if (world().rank() == 0) std::filesystem::create_directories(dir);
  world().barrier();
  return dir;
}

class Resharding : public moe::testing::MpiTest {
 protected:
  // Experts that every saver and loader count below shares evenly: 1, 2, 4 and the job's P.
  const std::int64_t experts = std::lcm(std::int64_t{8}, std::int64_t{world().size()});
  MOEConfig config{experts, 2, 16, 24};
  std::uint64_t trained_seed = 77;  // stands for trained parameters, unlike the init seed
  Tensor<float> gate = moe::testing::random_tensor({16, experts}, 1.0, 4);

  // The "trained" parameters: the gate above, each expert from trained_seed.
  void train(moe::MoELayer& layer) const {
    layer.set_gate_weights(gate);
    for (std::int64_t e = layer.first_local_expert(); e < layer.first_local_expert() + layer.num_local_experts(); ++e)
      layer.set_expert_params(e, moe::initial_expert_params(config, trained_seed, e));
  }
  void expect_trained(const moe::MoELayer& layer) const {
    const Tensor<float> g = layer.gate_weights();
    EXPECT_TRUE(std::equal(g.begin(), g.end(), gate.begin()));
    for (std::int64_t e = layer.first_local_expert(); e < layer.first_local_expert() + layer.num_local_experts(); ++e) {
      const Tensor<float> mine = layer.expert_params(e), expected = moe::initial_expert_params(config, trained_seed, e);
      EXPECT_TRUE(std::equal(mine.begin(), mine.end(), expected.begin())) << "expert " << e;
    }
  }
  // The file holds every trained expert, as the single-process reference API reads it.
  void expect_file_trained(const std::string& path) const {
    if (world().rank() != 0) return;
    const moe::ReferenceModel model = moe::load_reference_model(path);
    for (std::int64_t e = 0; e < experts; ++e) {
      const Tensor<float> expected = moe::initial_expert_params(config, trained_seed, e);
      EXPECT_TRUE(std::equal(expected.begin(), expected.end(), model.expert_params[e].begin())) << "expert " << e;
    }
  }
};

TEST_F(Resharding, AnyRankCountLoadsWhatAnyOtherSaved) {
  const int P = world().size();
  const std::string dir = shared_directory();
  const std::pair<int, int> cases[] = {{4, 2}, {2, 4}, {1, 4}, {4, 1}, {P, P}, {2, 1}, {1, 2}};
  for (const auto& [saver_count, loader_count] : cases) {
    if (saver_count > P || loader_count > P) continue;
    SCOPED_TRACE(std::to_string(saver_count) + " → " + std::to_string(loader_count) + " ranks");
    const std::string path = dir + "/model_" + std::to_string(saver_count) + "_" + std::to_string(loader_count) + ".h5";
    if (auto savers = first_ranks(saver_count)) {
      moe::MoELayer layer(config, *savers, 1);
      train(layer);
      moe::save_checkpoint(path, layer, 100 * saver_count);
    }
    world().barrier();
    if (auto loaders = first_ranks(loader_count)) {
      moe::MoELayer layer(config, *loaders, 2);
      EXPECT_EQ(moe::load_checkpoint(path, layer), 100 * saver_count);
      EXPECT_EQ(layer.num_local_experts(), experts / loader_count);
      expect_trained(layer);
    }
    expect_file_trained(path);
    world().barrier();
  }
  if (world().rank() == 0) std::filesystem::remove_all(dir);
}

// Expert groups with replicas (split_expert_parallel): the first group writes the file
// once, the same file the whole job would write, and every group reads it back.
TEST_F(Resharding, ExpertGroupsSaveOnceAndEveryGroupLoads) {
  const int P = world().size();
  const std::string dir = shared_directory();
  for (int group = 1; group <= P; ++group) {
    if (P % group != 0 || experts % group != 0) continue;
    SCOPED_TRACE("groups of " + std::to_string(group));
    const std::string path = dir + "/groups_" + std::to_string(group) + ".h5";
    moe::ExpertParallelGroups groups = moe::split_expert_parallel(world(), group);
    {
      moe::MoELayer layer(config, *groups.experts, *groups.replicas, 1);
      train(layer);
      moe::save_checkpoint(path, layer, 7);
    }
    // Every rank returns after the file is complete: a load right after reads all of it.
    moe::MoELayer loaded(config, *groups.experts, *groups.replicas, 2);
    EXPECT_EQ(moe::load_checkpoint(path, loaded), 7);
    expect_trained(loaded);
    expect_file_trained(path);
    // A failed write (here: into a directory that does not exist) fails every rank.
    EXPECT_MOE_ERROR(moe::save_checkpoint(dir + "/absent/m.h5", loaded, 8), "absent");
    world().barrier();
  }
  if (world().rank() == 0) std::filesystem::remove_all(dir);
}

TEST_F(Resharding, ErrorsReachEveryRank) {
  const std::string dir = shared_directory();
  moe::MoELayer layer(config, world(), 1);
  EXPECT_MOE_ERROR(moe::load_checkpoint(dir + "/absent.h5", layer), "does not exist");
  moe::save_checkpoint(dir + "/m.h5", layer, 1);
  MOEConfig other = config;
  other.expert_dim = 32;
  moe::MoELayer different(other, world(), 1);
  EXPECT_MOE_ERROR(moe::load_checkpoint(dir + "/m.h5", different), "expert_dim = 24 but the layer has expert_dim = 32");
  world().barrier();
  if (world().rank() == 0) std::filesystem::remove_all(dir);
}

}  // namespace
