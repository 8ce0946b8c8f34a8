// Where this process sits in a job, for error messages: a communicator sets the rank
// when it is created so that a failing library call names the rank it failed on.
#pragma once

#include <string>

namespace moe::detail {

void set_process_rank(int rank);
int process_rank();  // -1 until a communicator sets it
std::string host_name();

}  // namespace moe::detail
