// Shared by the library programs in this folder: a library call that does not return its success
// status ends the program (exit 1) with the call and the status, named where the library can name it.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>

#include "../gpu_check.cuh"

// The status as a number, for libraries without a name function.
template <class Status>
inline const char* statusNumber(Status status) {
  static thread_local std::string text;
  text = std::to_string(static_cast<long long>(status));
  return text.c_str();
}

#define CHECK_LIBRARY(call, success, nameOf)                                                          \
  do {                                                                                               \
    const auto check_library_status_ = (call);                                                       \
    if (check_library_status_ != (success)) {                                                        \
      std::fprintf(stderr, "FAIL %s:%d: %s returned %s\n", __FILE__, __LINE__, #call,               \
                   nameOf(check_library_status_));                                                   \
      std::exit(kExitFailed);                                                                        \
    }                                                                                                \
  } while (0)
