// moe make-tokens: a seeded random token file, for trying `moe infer`.
#include <cstdio>
#include <random>

#include "checkpoint/token_file.hpp"
#include "launch/command.hpp"
#include "moe/error.hpp"

namespace moe::cli {
namespace {

class MakeTokensCommand final : public Command {
 public:
  CLI::App* add_to(CLI::App& app) override {
    CLI::App* cmd = app.add_subcommand("make-tokens", "write a random token file (/tokens, standard normal)");
    cmd->add_option("--out", out_, "token file to write")->required();
    cmd->add_option("--tokens", tokens_, "number of tokens T")->required()->check(non_negative());
    cmd->add_option("--hidden", hidden_, "hidden size H")->required()->check(positive());
    cmd->add_option("--batch", batch_, "write [B, T/B, H] instead of [T, H]")->check(positive());
    cmd->add_option("--seed", seed_, "random seed")->capture_default_str()->check(non_negative());
    return cmd;
  }
  bool collective() const override { return false; }

  int run(Communicator&) override {
    std::vector<std::int64_t> shape{tokens_, hidden_};
    if (batch_ > 0) {
      MOE_CHECK_ARG(tokens_ % batch_ == 0, "make-tokens", "--tokens = ", tokens_, " is not divisible by --batch = ",
                    batch_);
      shape = {batch_, tokens_ / batch_, hidden_};
    }
    Tensor<FLOAT_TYPE> t(shape);
    std::mt19937_64 rng(seed_);
    std::normal_distribution<float> normal;
    for (auto& v : t) v = normal(rng);
    checkpoint::write_token_file(out_, t);
    std::printf("wrote %s: /tokens %s\n", out_.c_str(), shape_to_string(shape).c_str());
    return 0;
  }

 private:
  std::string out_;
  std::int64_t tokens_ = 0, hidden_ = 0, batch_ = 0;
  std::uint64_t seed_ = 1;
};

}  // namespace

std::unique_ptr<Command> make_make_tokens_command() { return std::make_unique<MakeTokensCommand>(); }

}  // namespace moe::cli
