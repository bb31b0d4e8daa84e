// Runs a program to completion for a test: its exit status and both output streams.
#pragma once

#include <string>
#include <vector>

namespace flyt::test {

struct ProcessResult {
  int exitCode = -1;  // -1 when it did not exit normally (signal) or could not be started
  std::string out;
  std::string err;
};

// Runs argv[0] (searched in PATH) with exactly the environment `env` ("NAME=value" entries) and
// waits for it. Blocking; no timeout (CTest's applies).
ProcessResult runProcess(const std::vector<std::string>& argv, const std::vector<std::string>& env);

// This process's environment without the variables named in `drop`, plus `add`.
std::vector<std::string> environmentWith(const std::vector<std::string>& add,
                                         const std::vector<std::string>& drop = {});

}  // namespace flyt::test
