// Checks shared by the programs in tests/standin: on a failed condition, print where and which,
// and return 1 from the enclosing function (main or a test function returning int).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdio>

#define CHECK(cond)                                                        \
  do {                                                                     \
    if (!(cond)) {                                                         \
      std::fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); \
      return 1;                                                            \
    }                                                                      \
  } while (0)
#define OK(call) CHECK((call) == cudaSuccess)
