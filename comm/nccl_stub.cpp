// Built when NCCL is not: the factory never calls this, but keep it a clear error.
#include "comm/backends.hpp"
#include "moe/error.hpp"

namespace moe::comm {

std::unique_ptr<Communicator> make_nccl() {
  detail::fail("make_communicator", "backend = nccl, but this moe was built without NCCL");
}

}  // namespace moe::comm
