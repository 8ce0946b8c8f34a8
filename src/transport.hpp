// Moves the layer's payload (token rows, the gate's gradient) between ranks for any
// pairing of compute backend and communicator: directly when the communicator takes
// the memory the ops compute in, through host copies when a GPU layer runs over a
// host-memory transport (MPI; e.g. two ranks sharing one GPU, which NCCL refuses).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/ops.hpp"
#include "moe/communicator.hpp"

namespace moe {

class Transport {
 public:
  Transport(Communicator& comm, kernels::Ops& ops);
  // Throws if the pairing cannot work (a CPU layer over a device-memory communicator);
  // the constructor only records it, so that ranks can agree before throwing.
  void check() const;

  // Rows of row_bytes, in the ops' memory, packed by peer (Communicator::all_to_allv).
  void all_to_allv(const void* send, const std::int64_t* send_rows, void* recv, const std::int64_t* recv_rows,
                   std::size_t row_bytes);
  // In-place sum over ranks of n floats in the ops' memory.
  void all_reduce_sum(float* data, std::int64_t n);

  bool staged() const { return staged_; }

 private:
  Communicator& comm_;
  kernels::Ops& ops_;
  bool staged_;
  std::string problem_;
  std::vector<char> host_send_, host_recv_;
};

}  // namespace moe
