// Every rank of a collective command must be given the same command line: a rank with
// another --ckpt or --steps would wait forever in a collective the others never reach,
// and one with another --lr would train a different model silently (issue 10).
#include <functional>
#include <string>
#include <vector>

#include "collective_check.hpp"
#include "launch/command.hpp"
#include "moe/error.hpp"

namespace moe::cli {
namespace {

std::int64_t hash_of(const std::string& text) {
  return static_cast<std::int64_t>(std::hash<std::string>{}(text) & 0x7fffffffffffffffull);
}

// Each option's name and the text it was given ("" when not given), in declaration order.
std::vector<std::pair<std::string, std::string>> given_options(const CLI::App& app, const CLI::App& command) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const CLI::App* a : {&app, &command})
    for (const CLI::Option* option : a->get_options()) {
      if (option->get_name() == "--help") continue;
      std::string value;
      for (const std::string& r : option->results()) value += r + '\x1f';
      out.emplace_back(option->get_name(), option->count() ? value : std::string());
    }
  return out;
}

std::string shown(const std::string& raw) {
  if (raw.empty()) return "not given";
  std::string text = raw.substr(0, raw.size() - 1);
  for (char& c : text)
    if (c == '\x1f') c = ' ';
  return "'" + text + "'";
}

}  // namespace

void check_same_command_line(Communicator& comm, const CLI::App& app, const CLI::App& command) {
  if (comm.size() == 1) return;
  const auto options = given_options(app, command);
  // The subcommand and the number of options first: the per-option vectors below must
  // have the same length on every rank.
  std::int64_t shape[2] = {hash_of(command.get_name()), static_cast<std::int64_t>(options.size())};
  std::int64_t low[2] = {shape[0], shape[1]}, high[2] = {shape[0], shape[1]};
  comm.all_reduce(low, 2, DataType::Int64, ReduceOp::Min);
  comm.all_reduce(high, 2, DataType::Int64, ReduceOp::Max);
  collective_check(comm, [&] {
    MOE_CHECK_ARG(low[0] == high[0] && low[1] == high[1], "moe", "the ranks were given different commands (this rank, ",
                  comm.rank(), ", runs '", command.get_name(), "'); every rank must get the same command line");
  });
  std::vector<std::int64_t> mine, min_hash, max_hash;
  for (const auto& [name, value] : options) mine.push_back(hash_of(value));
  min_hash = max_hash = mine;
  comm.all_reduce(min_hash.data(), static_cast<std::int64_t>(min_hash.size()), DataType::Int64, ReduceOp::Min);
  comm.all_reduce(max_hash.data(), static_cast<std::int64_t>(max_hash.size()), DataType::Int64, ReduceOp::Max);
  for (std::size_t i = 0; i < options.size(); ++i) {
    if (min_hash[i] == max_hash[i]) continue;
    // Which ranks share the lowest hash's value, to name them.
    std::vector<std::int64_t> with_first(static_cast<std::size_t>(comm.size()), 0);
    with_first[static_cast<std::size_t>(comm.rank())] = mine[i] == min_hash[i];
    comm.all_reduce(with_first.data(), comm.size(), DataType::Int64, ReduceOp::Sum);
    std::string group, others;
    // Rank 0's group named first.
    for (int r = 0; r < comm.size(); ++r)
      ((with_first[static_cast<std::size_t>(r)] == with_first[0]) ? group : others) += " " + std::to_string(r);
    collective_check(comm, [&] {
      detail::fail("moe", options[i].first, " differs between ranks (rank(s)", group, " have one value, rank(s)", others,
                   " another; this rank, ", comm.rank(), ", has ", shown(options[i].second),
                   "); every rank must get the same command line");
    });
  }
}

}  // namespace moe::cli
