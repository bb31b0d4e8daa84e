// Texture and surface objects (interpose/driver/textures.cpp is the other side, with the wire
// formats). A resource must be the session's: its array or mipmapped array by handle, its linear
// or pitched memory inside the session's ranges from the first byte to the last. The object the
// driver makes is recorded as the session's; only those are destroyed.
#include "handlers.hpp"

namespace flyt::backend::cu {
namespace {

// Translates the resource's handles and checks its memory, in place.
std::optional<Outcome> checkResource(ServeContext& c, const char* name, CUDA_RESOURCE_DESC& resource) {
  switch (resource.resType) {
    case CU_RESOURCE_TYPE_ARRAY: {
      CUarray real{};
      if (auto refused = c.handles().use(name, "hArray", resource.res.array.hArray, {HandleKind::array}, &real)) return refused;
      if (real == nullptr) return c.malformed(fmt::format("{}: a null array", name));
      resource.res.array.hArray = real;
      return std::nullopt;
    }
    case CU_RESOURCE_TYPE_MIPMAPPED_ARRAY: {
      CUmipmappedArray real{};
      if (auto refused = c.handles().use(name, "hMipmappedArray", resource.res.mipmap.hMipmappedArray,
                                         {HandleKind::mipmappedArray}, &real)) {
        return refused;
      }
      if (real == nullptr) return c.malformed(fmt::format("{}: a null mipmapped array", name));
      resource.res.mipmap.hMipmappedArray = real;
      return std::nullopt;
    }
    case CU_RESOURCE_TYPE_LINEAR:
      return c.deviceRange(name, "res.linear.devPtr", resource.res.linear.devPtr, resource.res.linear.sizeInBytes);
    case CU_RESOURCE_TYPE_PITCH2D: {
      const auto& p = resource.res.pitch2D;
      if (p.height == 0) return c.malformed(fmt::format("{}: a pitched resource of no rows", name));
      return c.deviceRange(name, "res.pitch2D.devPtr", p.devPtr, api::satMul(p.pitchInBytes, p.height));
    }
  }
  return c.malformed(fmt::format("{}: resource type {}", name, static_cast<int>(resource.resType)));
}

}  // namespace

Outcome serveTexObjectCreate(ServeContext& c, CallInput in) {
  constexpr const char* kName = "cuTexObjectCreate";
  if (c.driver().cuTexObjectCreate == nullptr) return c.unsupported(kName);
  CUDA_RESOURCE_DESC resource{};
  CUDA_TEXTURE_DESC texture{};
  CUDA_RESOURCE_VIEW_DESC view{};
  std::uint8_t hasView = 0;
  if (!in.args.get(resource) || !in.args.get(texture) || !in.args.get(hasView) || hasView > 1 ||
      (hasView == 1 && !in.args.get(view)) || !in.args.exhausted()) {
    return c.malformed(fmt::format("{}: bad arguments", kName));
  }
  if (auto refused = checkResource(c, kName, resource)) return *refused;
  Outcome out;
  CUtexObject object = 0;
  out.error = c.driver().cuTexObjectCreate(&object, &resource, &texture, hasView == 1 ? &view : nullptr);
  if (out.error != CUDA_SUCCESS) return out;
  c.textureObjects.insert(object);
  api::ArgWriter(out.results).put(static_cast<std::uint64_t>(object));
  return out;
}

Outcome serveSurfObjectCreate(ServeContext& c, CallInput in) {
  constexpr const char* kName = "cuSurfObjectCreate";
  if (c.driver().cuSurfObjectCreate == nullptr) return c.unsupported(kName);
  CUDA_RESOURCE_DESC resource{};
  if (!in.args.get(resource) || !in.args.exhausted()) return c.malformed(fmt::format("{}: bad arguments", kName));
  if (resource.resType != CU_RESOURCE_TYPE_ARRAY) return c.malformed(fmt::format("{}: a surface needs an array", kName));
  if (auto refused = checkResource(c, kName, resource)) return *refused;
  Outcome out;
  CUsurfObject object = 0;
  out.error = c.driver().cuSurfObjectCreate(&object, &resource);
  if (out.error != CUDA_SUCCESS) return out;
  c.surfaceObjects.insert(object);
  api::ArgWriter(out.results).put(static_cast<std::uint64_t>(object));
  return out;
}

Outcome serveObjectDestroy(ServeContext& c, CallInput in, bool surface) {
  const char* name = surface ? "cuSurfObjectDestroy" : "cuTexObjectDestroy";
  std::uint64_t object = 0;
  if (!in.args.get(object) || !in.args.exhausted()) return c.malformed(fmt::format("{}: bad arguments", name));
  auto& owned = surface ? c.surfaceObjects : c.textureObjects;
  if (owned.count(object) == 0) {
    return c.malformed(fmt::format("{}: {:#x} is not a {} object of this session", name, object, surface ? "surface" : "texture"));
  }
  auto destroy = surface ? c.driver().cuSurfObjectDestroy : c.driver().cuTexObjectDestroy;
  if (destroy == nullptr) return c.unsupported(name);
  Outcome out;
  out.error = destroy(object);
  if (out.error == CUDA_SUCCESS) owned.erase(object);
  return out;
}

}  // namespace flyt::backend::cu
