// Agreement on errors across ranks: a check that fails on one rank must fail on every
// rank, or the others walk into the next collective and wait there forever.
#pragma once

#include <functional>
#include <string>

#include "moe/communicator.hpp"

namespace moe {

// Runs `check` (which must not communicate) on every rank. If it throws moe::Error on
// any rank, every rank throws moe::CollectiveError: a failing rank with its own
// message, the others with one that names the lowest failing rank (by its rank in the
// job) and carries its message. Collective.
void collective_check(Communicator& comm, const std::function<void()>& check);

// collective_check of an outcome already known: throws on every rank if `error` (this
// rank's message, empty for success) is not empty on some rank. Collective.
void share_error(Communicator& comm, const std::string& error);

}  // namespace moe
