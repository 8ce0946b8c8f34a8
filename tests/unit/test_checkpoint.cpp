// Checkpoints on one rank: round trip, the reference-API view, every error the format
// can meet, and checksums catching a corrupted chunk.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "checkpoint/detail/fletcher32.hpp"
#include "checkpoint/detail/hdf5.hpp"
#include "moe/checkpoint.hpp"
#include "moe/optimizer.hpp"
#include "support/test_util.hpp"

namespace fs = std::filesystem;
using moe::MOEConfig;
using moe::Tensor;

namespace {

class Checkpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = fs::temp_directory_path() / ("moe-ckpt-" + std::to_string(::getpid()) + "-" +
                                       ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir);
    config.activation = moe::Activation::SiLU;
  }
  void TearDown() override { fs::remove_all(dir); }
  std::string file(const std::string& name) const { return (dir / name).string(); }

  std::string saved(std::uint64_t seed = 3, std::int64_t step = 17) {
    moe::MoELayer layer(config, *comm, seed);
    const std::string path = file("model.h5");
    moe::save_checkpoint(path, layer, step);
    return path;
  }

  fs::path dir;
  MOEConfig config{4, 2, 8, 12, 1.5f};
  std::unique_ptr<moe::Communicator> comm = moe::make_communicator(moe::CommBackend::Local);
};

TEST_F(Checkpoint, RoundTripRestoresEveryParameterAndTheStep) {
  moe::MoELayer original(config, *comm, 3);
  Tensor<float> gate = moe::testing::random_tensor({8, 4}, 1.0, 5);
  original.set_gate_weights(gate);
  const std::string path = file("model.h5");
  moe::save_checkpoint(path, original, 17);
  EXPECT_TRUE(fs::exists(path));
  for (const auto& entry : fs::directory_iterator(dir))
    EXPECT_EQ(entry.path().filename(), "model.h5") << "a save leaves only its file behind";

  moe::MoELayer restored(config, *comm, 99);  // a different initialisation
  EXPECT_EQ(moe::load_checkpoint(path, restored), 17);
  const Tensor<float> g = restored.gate_weights();
  EXPECT_TRUE(std::equal(g.begin(), g.end(), gate.begin()));
  for (std::int64_t e = 0; e < 4; ++e) {
    const Tensor<float> a = original.expert_params(e), b = restored.expert_params(e);
    EXPECT_TRUE(std::equal(a.begin(), a.end(), b.begin())) << "expert " << e;
  }
  const moe::ReferenceModel model = moe::load_reference_model(path);
  EXPECT_EQ(model.config.to_string(), config.to_string());
  EXPECT_EQ(model.step, 17);
  for (std::int64_t e = 0; e < 4; ++e) {
    const Tensor<float> a = original.expert_params(e);
    EXPECT_TRUE(std::equal(a.begin(), a.end(), model.expert_params[e].begin()));
  }
  EXPECT_EQ(moe::read_checkpoint_config(path).to_string(), config.to_string());
}

TEST_F(Checkpoint, SummaryHasNormsAndVerifiedChecksums) {
  const std::string path = saved();
  const moe::CheckpointSummary s = moe::inspect_checkpoint(path);
  EXPECT_EQ(s.step, 17);
  EXPECT_FALSE(s.has_optimizer_state);
  ASSERT_EQ(s.experts.size(), 4u);
  const Tensor<float> e1 = moe::initial_expert_params(config, 3, 1);
  double w1 = 0;
  for (std::int64_t i = 0; i < 8 * 12; ++i) w1 += double(e1[i]) * e1[i];
  EXPECT_NEAR(s.experts[1].norms[0], std::sqrt(w1), 1e-9);
  for (const auto& e : s.experts) EXPECT_EQ(e.checksum, moe::ExpertSummary::Checksum::Verified);
}

TEST_F(Checkpoint, MissingFile) {
  moe::MoELayer layer(config, *comm, 1);
  EXPECT_MOE_ERROR(moe::load_checkpoint(file("absent.h5"), layer), "absent.h5' does not exist");
}

TEST_F(Checkpoint, NotHdf5) {
  std::ofstream(file("text.h5")) << "not an HDF5 file\n";
  moe::MoELayer layer(config, *comm, 1);
  EXPECT_MOE_ERROR(moe::load_checkpoint(file("text.h5"), layer), "text.h5' is not an HDF5 file");
}

// A damaged global heap (where the checkpoint's string attributes live) crashes
// Debian's libhdf5 1.10.8 itself: an object that claims 4 GB always does (a copy past
// the heap), a collection that claims 16 bytes sometimes does (a read past it: garbage
// or a segfault). The file's metadata is read in a child process first
// (checkpoint/detail/hdf5_probe.hpp), so each reader ends with an error naming the file
// instead of a segfault. (Issue 10: found by scripts/fuzz.sh.)
TEST_F(Checkpoint, ADamagedGlobalHeapIsAnErrorNotACrash) {
  struct Damage {
    std::size_t offset;  // from the heap's "GCOL" signature
    std::vector<unsigned char> bytes;
    const char* expected;  // in every reader's error, after the file's name
  };
  const Damage damages[] = {{24, {0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}, "' is damaged: libhdf5 crashed"},
                            {8, {0x10, 0, 0, 0, 0, 0, 0, 0}, "'"}};
  for (const Damage& damage : damages) {
    SCOPED_TRACE("offset " + std::to_string(damage.offset));
    std::ifstream in(saved(), std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    in.close();
    const std::size_t heap = bytes.find("GCOL");
    ASSERT_NE(heap, std::string::npos) << "the checkpoint has no global heap: its string attributes moved";
    std::copy(damage.bytes.begin(), damage.bytes.end(), bytes.begin() + static_cast<std::ptrdiff_t>(heap + damage.offset));
    const std::string path = file("damaged-" + std::to_string(damage.offset) + ".h5");
    std::ofstream(path, std::ios::binary) << bytes;
    moe::MoELayer layer(config, *comm, 1);
    const std::string expected = path + damage.expected;
    EXPECT_MOE_ERROR(moe::inspect_checkpoint(path), expected.c_str());
    EXPECT_MOE_ERROR(moe::load_checkpoint(path, layer), expected.c_str());
    EXPECT_MOE_ERROR(moe::load_reference_model(path), expected.c_str());
    EXPECT_MOE_ERROR(moe::read_checkpoint_config(path), expected.c_str());
  }
}

// A file whose scalar attribute is an array, or of the wrong type, is refused before
// anything is read into a scalar (issue 10: a 7000-value array overwrote the stack).
TEST_F(Checkpoint, AttributesThatAreNotOneValueOfTheirTypeAreRefused) {
  const std::string path = saved();
  auto replace = [&](const char* name, hid_t type, std::vector<hsize_t> dims, const void* data) {
    moe::hdf5::Handle f = moe::hdf5::open_file(path, true, nullptr);
    H5Adelete(f.get(), name);
    moe::hdf5::Handle space(dims.empty() ? H5Screate(H5S_SCALAR)
                                         : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr));
    moe::hdf5::Handle attr(H5Acreate2(f.get(), name, type, space.get(), H5P_DEFAULT, H5P_DEFAULT));
    H5Awrite(attr.get(), type, data);
  };
  moe::MoELayer layer(config, *comm, 1);
  const std::vector<std::int64_t> many(7000, 8);
  replace("hidden_dim", H5T_NATIVE_INT64, {7000}, many.data());
  EXPECT_MOE_ERROR(moe::load_checkpoint(path, layer), "attribute 'hidden_dim' of /", "holds 7000 values",
                   "expected a single integer");
  EXPECT_MOE_ERROR(moe::inspect_checkpoint(path), "holds 7000 values");
  replace("hidden_dim", H5T_NATIVE_INT64, {2}, many.data());
  EXPECT_MOE_ERROR(moe::load_checkpoint(path, layer), "holds 2 values");
  const std::int64_t eight = 8;
  replace("hidden_dim", H5T_NATIVE_INT64, {}, &eight);
  replace("step", H5T_NATIVE_INT64, {7000}, many.data());
  EXPECT_MOE_ERROR(moe::load_checkpoint(path, layer), "attribute 'step'", "holds 7000 values");
  replace("step", H5T_NATIVE_INT64, {}, &eight);
  const double wide = 1.5;
  replace("top_k", H5T_NATIVE_DOUBLE, {}, &wide);
  EXPECT_MOE_ERROR(moe::load_checkpoint(path, layer), "attribute 'top_k'", "is a floating-point number",
                   "expected integer");
  {
    moe::hdf5::Handle f = moe::hdf5::open_file(path, true, nullptr);
    H5Adelete(f.get(), "top_k");
    moe::hdf5::write_attribute(f.get(), "top_k", std::string("two"));
  }
  EXPECT_MOE_ERROR(moe::load_checkpoint(path, layer), "attribute 'top_k'", "is a string; expected integer");
}

TEST_F(Checkpoint, NegativeStepsAndBadHyperparametersAreRefused) {
  moe::MoELayer layer(config, *comm, 1);
  moe::Optimizer opt = moe::Optimizer::adamw(layer);
  const std::string path = file("trained.h5");
  moe::save_checkpoint(path, layer, 5, &opt);
  auto set = [&](const char* group, const char* name, auto value) {
    moe::hdf5::Handle f = moe::hdf5::open_file(path, true, nullptr);
    moe::hdf5::Handle g(H5Oopen(f.get(), group, H5P_DEFAULT));
    H5Adelete(g.get(), name);
    moe::hdf5::write_attribute(g.get(), name, value);
  };
  set("/", "step", std::int64_t{-3});
  EXPECT_MOE_ERROR(moe::load_checkpoint(path, layer, &opt), "holds step = -3; expected >= 0");
  set("/", "step", std::int64_t{5});
  set("/optimizer", "step", std::int64_t{-1});
  EXPECT_MOE_ERROR(moe::load_checkpoint(path, layer, &opt), "/optimizer step = -1");
  set("/optimizer", "step", std::int64_t{5});
  set("/optimizer", "beta2", 1.5);
  EXPECT_MOE_ERROR(moe::load_checkpoint(path, layer, &opt), "/optimizer beta2 = 1.5", "[0, 1)");
  set("/optimizer", "beta2", 0.999);
  set("/optimizer", "lr", -1.0);
  EXPECT_MOE_ERROR(moe::load_checkpoint(path, layer, &opt), "/optimizer lr = -1");
  set("/optimizer", "lr", 1e-3);
  EXPECT_EQ(moe::load_checkpoint(path, layer, &opt), 5);
}

TEST_F(Checkpoint, AConfigClaimingMoreThanTheDatasetsHoldIsRefusedBeforeAllocation) {
  const std::string path = saved();
  {
    moe::hdf5::Handle f = moe::hdf5::open_file(path, true, nullptr);
    H5Adelete(f.get(), "hidden_dim");
    moe::hdf5::write_attribute(f.get(), "hidden_dim", std::int64_t{262144});
  }
  EXPECT_MOE_ERROR(moe::read_checkpoint_config(path), "dataset /gate/weight has shape [8, 4]",
                   "expected [262144, 4]");
}

TEST_F(Checkpoint, WrongFormatOrVersion) {
  {
    moe::hdf5::Handle f = moe::hdf5::create_file(file("other.h5"), nullptr);
    moe::hdf5::write_attribute(f.get(), "format", std::string("something-else"));
  }
  moe::MoELayer layer(config, *comm, 1);
  EXPECT_MOE_ERROR(moe::load_checkpoint(file("other.h5"), layer), "format = 'something-else'",
                   "expected 'moe-checkpoint'");
  {
    moe::hdf5::Handle f = moe::hdf5::create_file(file("bare.h5"), nullptr);
  }
  EXPECT_MOE_ERROR(moe::load_checkpoint(file("bare.h5"), layer), "no 'format' attribute");
  const std::string path = saved();
  {
    moe::hdf5::Handle f = moe::hdf5::open_file(path, true, nullptr);
    H5Adelete(f.get(), "format_version");
    moe::hdf5::write_attribute(f.get(), "format_version", std::int64_t{3});
  }
  EXPECT_MOE_ERROR(moe::load_checkpoint(path, layer), "format_version = 3", "reads versions 1 to 2");
}

TEST_F(Checkpoint, MissingDataset) {
  const std::string path = saved();
  {
    moe::hdf5::Handle f = moe::hdf5::open_file(path, true, nullptr);
    ASSERT_GE(H5Ldelete(f.get(), "/experts/b2", H5P_DEFAULT), 0);
  }
  moe::MoELayer layer(config, *comm, 1);
  EXPECT_MOE_ERROR(moe::load_checkpoint(path, layer), "lacks the dataset /experts/b2 [4, 8]");
  EXPECT_MOE_ERROR(moe::load_reference_model(path), "lacks the dataset /experts/b2");
}

TEST_F(Checkpoint, WrongShape) {
  const std::string path = saved();
  {
    moe::hdf5::Handle f = moe::hdf5::open_file(path, true, nullptr);
    ASSERT_GE(H5Ldelete(f.get(), "/experts/w1", H5P_DEFAULT), 0);
    moe::hdf5::create_dataset(f.get(), "/experts/w1", H5T_IEEE_F32LE, {4, 8, 13});
  }
  moe::MoELayer layer(config, *comm, 1);
  EXPECT_MOE_ERROR(moe::load_checkpoint(path, layer), "dataset /experts/w1 has shape [4, 8, 13]",
                   "expected [4, 8, 12] (num_experts, hidden_dim, expert_dim)");
}

TEST_F(Checkpoint, ConfigDifferingFromTheLayerNamesTheFieldAndBothValues) {
  const std::string path = saved();
  MOEConfig other = config;
  other.top_k = 3;
  moe::MoELayer layer(other, *comm, 1);
  EXPECT_MOE_ERROR(moe::load_checkpoint(path, layer), "saved with top_k = 2 but the layer has top_k = 3");
  other = config;
  other.activation = moe::Activation::ReLU;
  moe::MoELayer relu(other, *comm, 1);
  EXPECT_MOE_ERROR(moe::load_checkpoint(path, relu), "activation = silu but the layer has activation = relu");
  other = config;
  other.drop_tokens = false;
  moe::MoELayer dropless(other, *comm, 1);
  EXPECT_MOE_ERROR(moe::load_checkpoint(path, dropless), "drop_tokens = true but the layer has drop_tokens = false");
}

TEST_F(Checkpoint, CorruptedChunkFailsItsChecksum) {
  const std::string path = saved();
  haddr_t address = 0;
  hsize_t size = 0;
  {
    moe::hdf5::Handle f = moe::hdf5::open_file(path, false, nullptr);
    moe::hdf5::Handle d = moe::hdf5::open_dataset(f.get(), "/experts/w1");
    const hsize_t expert2[3] = {2, 0, 0};
    unsigned mask = 0;
    ASSERT_GE(H5Dget_chunk_info_by_coord(d.get(), expert2, &mask, &address, &size), 0);
  }
  {
    std::fstream bytes(path, std::ios::in | std::ios::out | std::ios::binary);
    bytes.seekg(static_cast<std::streamoff>(address + size / 2));
    char c = 0;
    bytes.read(&c, 1);
    c = static_cast<char>(c ^ 0x5A);
    bytes.seekp(static_cast<std::streamoff>(address + size / 2));
    bytes.write(&c, 1);
  }
  moe::MoELayer layer(config, *comm, 1);
  EXPECT_MOE_ERROR(moe::load_checkpoint(path, layer), "reading /experts/w1", "Fletcher32", "checksum");
  const moe::CheckpointSummary s = moe::inspect_checkpoint(path);
  EXPECT_EQ(s.experts[2].checksum, moe::ExpertSummary::Checksum::Failed);
  EXPECT_EQ(s.experts[1].checksum, moe::ExpertSummary::Checksum::Verified);
}

TEST_F(Checkpoint, UnwritableDestination) {
  moe::MoELayer layer(config, *comm, 1);
  EXPECT_MOE_ERROR(moe::save_checkpoint(file("no/such/dir/model.h5"), layer), "does not exist");
}

TEST_F(Checkpoint, FileWithoutTheChecksumFilterStillLoads) {
  // As another tool (h5py) would write it: contiguous float64 datasets, no filter.
  const std::string path = file("plain.h5");
  const moe::Tensor<float> gate = moe::initial_gate_weights(config, 8);
  {
    moe::hdf5::Handle f = moe::hdf5::create_file(path, nullptr);
    moe::hdf5::write_attribute(f.get(), "format", std::string("moe-checkpoint"));
    moe::hdf5::write_attribute(f.get(), "format_version", std::int64_t{1});
    for (auto [name, v] : {std::pair{"num_experts", 4}, {"top_k", 2}, {"hidden_dim", 8}, {"expert_dim", 12},
                           {"normalize_top_k", 1}, {"drop_tokens", 1}})
      moe::hdf5::write_attribute(f.get(), name, std::int64_t{v});
    moe::hdf5::write_attribute(f.get(), "capacity_factor", 1.5);
    moe::hdf5::write_attribute(f.get(), "activation", std::string("silu"));
    std::vector<double> g(gate.begin(), gate.end());
    moe::hdf5::Handle d = moe::hdf5::create_dataset(f.get(), "/gate/weight", H5T_IEEE_F64LE, {8, 4});
    moe::hdf5::write(d.get(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, g.data(), false);
    const std::pair<const char*, std::vector<hsize_t>> tensors[] = {
        {"/experts/w1", {4, 8, 12}}, {"/experts/w2", {4, 12, 8}}, {"/experts/b1", {4, 12}}, {"/experts/b2", {4, 8}}};
    for (const auto& [name, dims] : tensors) {
      hsize_t n = 1;
      for (hsize_t x : dims) n *= x;
      std::vector<double> values(n, 0.25);
      moe::hdf5::Handle ds = moe::hdf5::create_dataset(f.get(), name, H5T_IEEE_F64LE, dims);
      moe::hdf5::write(ds.get(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, values.data(), false);
    }
  }
  moe::MoELayer layer(config, *comm, 1);
  EXPECT_EQ(moe::load_checkpoint(path, layer), 0) << "no step attribute: step 0";
  const Tensor<float> e3 = layer.expert_params(3);
  for (float v : e3) EXPECT_EQ(v, 0.25f);
  const Tensor<float> g = layer.gate_weights();
  EXPECT_TRUE(std::equal(g.begin(), g.end(), gate.begin()));
  for (const auto& e : moe::inspect_checkpoint(path).experts)
    EXPECT_EQ(e.checksum, moe::ExpertSummary::Checksum::NotPresent);
}

}  // namespace

// HDF5's own checksum (exported by libhdf5, not declared in its public headers).
extern "C" std::uint32_t H5_checksum_fletcher32(const void* data, std::size_t len);

namespace {

TEST(Fletcher32, BitIdenticalToHdf5sOwn) {
  std::vector<unsigned char> bytes(5000);
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<unsigned char>((i * 2654435761u) >> 13);
  for (std::size_t len : {0u, 1u, 2u, 3u, 719u, 720u, 721u, 722u, 1441u, 4096u, 5000u})
    EXPECT_EQ(moe::hdf5::fletcher32(bytes.data(), len), H5_checksum_fletcher32(bytes.data(), len)) << len;
  std::vector<unsigned char> ones(100000, 0xff);  // the largest sums HDF5 can meet
  EXPECT_EQ(moe::hdf5::fletcher32(ones.data(), ones.size()), H5_checksum_fletcher32(ones.data(), ones.size()));
}

}  // namespace
