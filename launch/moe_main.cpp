// The `moe` program: init, info, infer, make-tokens, train, import. Run it as one process, or under
// moe-run for the collective commands:
//   moe init --out model.h5 --experts 8 --top-k 2 --hidden 512 --expert-dim 2048
//   moe-run -np 2 moe infer --ckpt model.h5 --input tokens.h5 --output out.h5
#include <cstdio>
#include <new>
#include <string>
#include <vector>

#include "launch/command.hpp"
#include "moe/error.hpp"

int main(int argc, char** argv) {
  CLI::App app{"moe: Mixture-of-Experts layers with expert parallelism"};
  app.require_subcommand(1);
  // A repeated option takes its last value, as most command lines do.
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  // The job's transport; accepted after the subcommand too (moe train --comm nccl).
  std::string comm_name = "auto";
  app.add_option("--comm", comm_name, "communicator: auto (MPI under mpirun, else local), local, mpi, or nccl (GPU)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "local", "mpi", "nccl"}));
  app.fallthrough();
  std::vector<std::unique_ptr<moe::cli::Command>> commands;
  commands.push_back(moe::cli::make_init_command());
  commands.push_back(moe::cli::make_info_command());
  commands.push_back(moe::cli::make_infer_command());
  commands.push_back(moe::cli::make_make_tokens_command());
  commands.push_back(moe::cli::make_train_command());
  commands.push_back(moe::cli::make_import_command());
  commands.push_back(moe::cli::make_bench_command());
  std::vector<CLI::App*> subcommands;
  for (auto& c : commands) subcommands.push_back(c->add_to(app));
  // A first word that is no subcommand is named, rather than CLI11's "A subcommand is
  // required".
  if (argc > 1 && argv[1][0] != '-') {
    bool known = false;
    std::string names;
    for (CLI::App* sub : subcommands) {
      known = known || sub->get_name() == argv[1];
      names += (names.empty() ? "" : ", ") + sub->get_name();
    }
    if (!known) {
      std::fprintf(stderr, "moe: unknown command '%s'; expected one of %s (moe --help)\n", argv[1], names.c_str());
      return 2;
    }
  }
  // Every rank parses the same command line, so a bad argument fails on every rank.
  CLI11_PARSE(app, argc, argv);

  moe::cli::Command* command = nullptr;
  std::string name;
  for (std::size_t i = 0; i < commands.size(); ++i)
    if (subcommands[i]->parsed()) command = commands[i].get(), name = subcommands[i]->get_name();

  std::unique_ptr<moe::Communicator> comm;
  try {
    const moe::CommBackend backend = comm_name == "local" ? moe::CommBackend::Local
                                     : comm_name == "mpi"   ? moe::CommBackend::MPI
                                     : comm_name == "nccl"  ? moe::CommBackend::NCCL
                                                            : moe::CommBackend::Auto;
    comm = moe::make_communicator(command->collective() ? backend : moe::CommBackend::Auto);
    if (!command->collective() && comm->rank() != 0) return 0;  // one-process tools run on rank 0
    if (!command->collective()) comm = moe::make_communicator(moe::CommBackend::Local);
    for (std::size_t i = 0; i < commands.size(); ++i)
      if (commands[i].get() == command && command->collective())
        moe::cli::check_same_command_line(*comm, app, *subcommands[i]);
    return command->run(*comm);
  } catch (const moe::CollectiveError& e) {
    // Every rank has this error: each leaves cleanly, rank 0 says why.
    if (comm->rank() == 0) std::fprintf(stderr, "moe %s: error: %s\n", name.c_str(), e.what());
    return 1;
  } catch (const std::exception& e) {
    // Possibly this rank alone: the others could be waiting for it, so end the job.
    // An allocation that failed outside moe's own checks still gets the reference
    // API's words, not a bare "std::bad_alloc".
    const std::string message = dynamic_cast<const std::bad_alloc*>(&e)
                                    ? "Failed to allocate memory for activations (" + std::string(e.what()) +
                                          "); use fewer tokens per call or more ranks"
                                    : e.what();
    if (comm && comm->size() > 1) comm->abort("moe " + name + ": error: " + message);
    std::fprintf(stderr, "moe %s: error: %s\n", name.c_str(), message.c_str());
    return 1;
  }
}
