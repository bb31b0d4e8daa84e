#include "error_names.hpp"

#include "flyt/api/cuda_errors.inc"

namespace flyt::interpose {

const char* errorName(cudaError_t error) noexcept {
  switch (static_cast<int>(error)) {
#define FLYT_NAME(name, value, text) \
  case value: return #name;
    FLYT_API_CUDA_ERRORS(FLYT_NAME)
#undef FLYT_NAME
  }
  return "cudaErrorUnknown";
}

const char* errorString(cudaError_t error) noexcept {
  switch (static_cast<int>(error)) {
#define FLYT_TEXT(name, value, text) \
  case value: return text;
    FLYT_API_CUDA_ERRORS(FLYT_TEXT)
#undef FLYT_TEXT
  }
  return "unrecognized error code";
}

}  // namespace flyt::interpose
