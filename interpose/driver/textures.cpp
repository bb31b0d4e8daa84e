// Texture and surface objects. The object is the driver's own value (a kernel reads it as its
// argument), made and destroyed by the worker for the session.
//
// Wire (backend/src/driver/serve_textures.cpp): cuTexObjectCreate {CUDA_RESOURCE_DESC,
// CUDA_TEXTURE_DESC, u8 has view, [CUDA_RESOURCE_VIEW_DESC]} -> {u64 object}; cuSurfObjectCreate
// {CUDA_RESOURCE_DESC} -> {u64 object}; the destroys {u64 object}. The resource's array handles are
// the session's ids, translated by the worker.
#include <cuda.h>

#include <vector>

#include "driver_client.hpp"

#define FLYT_CU_EXPORT extern "C" __attribute__((visibility("default")))

using namespace flyt::interpose::cu;
namespace api = flyt::api;

namespace {

CUresult create(Method method, const std::vector<std::byte>& args, unsigned long long* object) {
  if (CUresult ready = DriverState::get().init(); ready != CUDA_SUCCESS) return ready;
  auto outcome = DriverCall().call(method, args);
  if (outcome.error != CUDA_SUCCESS) return outcome.error;
  std::uint64_t value = 0;
  api::ArgReader reader(outcome.results);
  if (!reader.get(value)) return CUDA_ERROR_UNKNOWN;
  *object = value;
  return CUDA_SUCCESS;
}

CUresult destroy(Method method, unsigned long long object) {
  if (CUresult ready = DriverState::get().init(); ready != CUDA_SUCCESS) return ready;
  std::vector<std::byte> args;
  api::ArgWriter(args).put(static_cast<std::uint64_t>(object));
  return DriverCall().call(method, args).error;
}

}  // namespace

FLYT_CU_EXPORT CUresult cuTexObjectCreate(CUtexObject* pTexObject, const CUDA_RESOURCE_DESC* pResDesc,
                                          const CUDA_TEXTURE_DESC* pTexDesc, const CUDA_RESOURCE_VIEW_DESC* pResViewDesc) {
  if (pTexObject == nullptr || pResDesc == nullptr || pTexDesc == nullptr) return CUDA_ERROR_INVALID_VALUE;
  std::vector<std::byte> args;
  api::ArgWriter writer(args);
  writer.put(*pResDesc);
  writer.put(*pTexDesc);
  writer.put(static_cast<std::uint8_t>(pResViewDesc != nullptr ? 1 : 0));
  if (pResViewDesc != nullptr) writer.put(*pResViewDesc);
  return create(Method::cuTexObjectCreate, args, pTexObject);
}

FLYT_CU_EXPORT CUresult cuTexObjectDestroy(CUtexObject texObject) { return destroy(Method::cuTexObjectDestroy, texObject); }

FLYT_CU_EXPORT CUresult cuSurfObjectCreate(CUsurfObject* pSurfObject, const CUDA_RESOURCE_DESC* pResDesc) {
  if (pSurfObject == nullptr || pResDesc == nullptr) return CUDA_ERROR_INVALID_VALUE;
  std::vector<std::byte> args;
  api::ArgWriter(args).put(*pResDesc);
  return create(Method::cuSurfObjectCreate, args, pSurfObject);
}

FLYT_CU_EXPORT CUresult cuSurfObjectDestroy(CUsurfObject surfObject) {
  return destroy(Method::cuSurfObjectDestroy, surfObject);
}
