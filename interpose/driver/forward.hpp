// cu::forward<Method>(args...): the body of every generated client stub of the driver library.
// Marshals the arguments by the method's codec tags (flyt::api::cu::Spec), sends the call the way
// its kind asks (batched, waited for, or answered from the cache) in the calling thread's context,
// and unmarshals the out-arguments on success.
#pragma once

#include <cuda.h>

#include <algorithm>
#include <array>
#include <map>
#include <set>
#include <mutex>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "driver_client.hpp"
#include "flyt/api/cu_specs.hpp"

namespace flyt::interpose::cu {

// The kernel whose function (cuKernelGetFunction) `function` is, else `function` (modules.cpp).
[[nodiscard]] std::uint64_t kernelOfFunction(std::uint64_t function) noexcept;

namespace detail {

template <class Tag> struct Codec;

template <class T> struct Codec<api::Val<T>> {
  static bool encode(api::ArgWriter& w, T value) { w.put(value); return true; }
  static bool decode(api::ArgReader&, T) { return true; }
};
template <class T> struct Codec<api::In<T>> {
  static bool encode(api::ArgWriter& w, const T* p) { if (!p) return false; w.put(*p); return true; }
  static bool decode(api::ArgReader&, const T*) { return true; }
};
// An out-pointer may be null where the caller does not want that answer (the runtime passes a null
// size to cuLibraryGetGlobal): the worker answers it anyway and it is dropped here.
template <class T> struct Codec<api::Out<T>> {
  static bool encode(api::ArgWriter&, T*) { return true; }
  static bool decode(api::ArgReader& r, T* p) {
    T value{};
    if (!r.get(value)) return false;
    if (p != nullptr) *p = value;
    return true;
  }
};
template <class T> struct Codec<api::InOut<T>> {
  static bool encode(api::ArgWriter& w, T* p) { if (!p) return false; w.put(*p); return true; }
  static bool decode(api::ArgReader& r, T* p) { return r.get(*p); }
};
template <> struct Codec<api::CStr> {
  static bool encode(api::ArgWriter& w, const char* text) {
    if (text == nullptr) return false;
    const std::string_view view(text);
    if (view.size() > api::ArgReader::kMaxString) return false;
    w.putString(view);
    return true;
  }
  static bool decode(api::ArgReader&, const char*) { return true; }
};

template <class... Tags, class... A>
bool encodeAll(api::ArgList<Tags...>, api::ArgWriter& w, A... args) {
  return (Codec<Tags>::encode(w, args) && ...);
}
template <class... Tags, class... A>
bool decodeAll(api::ArgList<Tags...>, api::ArgReader& r, A... args) {
  return (Codec<Tags>::decode(r, args) && ...);
}

// What a cached answer or a setting is about: the kernel or function it names (as the kernel when
// the function is known to be a kernel's: the two alias one object) and the function attribute, if
// the call names them (found by argument type). A setting of attribute A of object K changes only
// K's answers about A and K's answers about no attribute in particular (occupancy); one naming no
// attribute (a cache configuration) changes all of K's; one naming no object, a whole group.
struct CacheScope {
  std::uint64_t object = 0;    // 0: none named
  std::int64_t attribute = -1;  // -1: none named
  [[nodiscard]] bool touches(const CacheScope& answer) const {
    if (object == 0 || answer.object == 0) return true;
    if (object != answer.object) return false;
    return attribute < 0 || answer.attribute < 0 || attribute == answer.attribute;
  }
};
template <class... A>
CacheScope cacheScope(A... args) noexcept {
  CacheScope scope;
  [[maybe_unused]] auto one = [&](auto value) {
    using T = decltype(value);
    if constexpr (std::is_same_v<T, CUkernel>) {
      scope.object = wireHandle(value);
    } else if constexpr (std::is_same_v<T, CUfunction>) {
      scope.object = kernelOfFunction(wireHandle(value));
    } else if constexpr (std::is_same_v<T, CUfunction_attribute>) {
      scope.attribute = static_cast<std::int64_t>(value);
    }
  };
  (one(args), ...);
  return scope;
}

// Results of "cached" calls, keyed by method and encoded in-arguments (and the context), with
// their scope. Also the last setting of each "idempotent" setter per method, context, context epoch
// and scope that was sent: the same setting again changes nothing and is not sent.
struct ResultCache {
  struct Answer {
    std::vector<std::byte> results;
    CacheScope scope;
  };
  std::mutex mutex;
  std::map<std::tuple<Method, std::uint64_t, std::vector<std::byte>>, Answer> results;
  std::map<std::tuple<Method, std::uint64_t, std::uint64_t, std::uint64_t, std::int64_t>, std::vector<std::byte>> applied;
};
ResultCache& resultCache() noexcept;

}  // namespace detail

template <Method M, class... A>
CUresult forward(A... args) noexcept {
  using Args = typename api::cu::Spec<M>::Args;
  constexpr auto kInfo = api::cu::methodInfo(M);
  if (CUresult ready = DriverState::get().init(); ready != CUDA_SUCCESS) return ready;
  std::vector<std::byte> encoded;
  api::ArgWriter writer(encoded);
  if (!detail::encodeAll(Args{}, writer, args...)) return CUDA_ERROR_INVALID_VALUE;

  if constexpr (kInfo.kind == api::cu::Kind::Async) {
    return DriverCall().enqueue(M, encoded);
  } else {
    auto& cache = detail::resultCache();
    const auto context = wireHandle(DriverState::get().current());
    if constexpr (kInfo.kind == api::cu::Kind::Cached) {
      std::lock_guard lock(cache.mutex);
      if (auto it = cache.results.find({M, context, encoded}); it != cache.results.end()) {
        api::ArgReader reader(it->second.results);
        return detail::decodeAll(Args{}, reader, args...) ? CUDA_SUCCESS : CUDA_ERROR_UNKNOWN;
      }
    }
    auto outcome = DriverCall().call(M, encoded, {}, std::nullopt, kInfo.synchronizes);
    if (outcome.error != CUDA_SUCCESS) return outcome.error;
    api::ArgReader reader(outcome.results);
    if (!detail::decodeAll(Args{}, reader, args...)) return CUDA_ERROR_UNKNOWN;
    if constexpr (kInfo.kind == api::cu::Kind::Cached) {
      std::lock_guard lock(cache.mutex);
      cache.results.emplace(std::tuple{M, context, std::move(encoded)},
                            detail::ResultCache::Answer{std::move(outcome.results), detail::cacheScope(args...)});
    }
    return CUDA_SUCCESS;
  }
}

// An idempotent setter (api/cuda.toml `idempotent`, e.g. cudaFuncSetAttribute before every launch):
// true when this very setting was the last one of its method sent for its scope (kernel or
// function, and attribute) in this context, with no other method's setting of that scope since (a
// kernel and its function alias one object), so it is answered without a round trip. `remember`
// records a setting that was sent and succeeded.
template <Method M, class... A>
bool alreadyApplied(A... args) noexcept {
  std::vector<std::byte> encoded;
  api::ArgWriter writer(encoded);
  if (!detail::encodeAll(typename api::cu::Spec<M>::Args{}, writer, args...)) return false;
  const auto scope = detail::cacheScope(args...);
  auto& cache = detail::resultCache();
  std::lock_guard lock(cache.mutex);
  auto it = cache.applied.find({M, wireHandle(DriverState::get().current()),
                                DriverState::get().contextEpoch().load(std::memory_order_acquire), scope.object,
                                scope.attribute});
  return it != cache.applied.end() && it->second == encoded;
}
template <Method M, class... A>
void rememberApplied(A... args) noexcept {
  std::vector<std::byte> encoded;
  api::ArgWriter writer(encoded);
  if (!detail::encodeAll(typename api::cu::Spec<M>::Args{}, writer, args...)) return;
  const auto scope = detail::cacheScope(args...);
  auto& cache = detail::resultCache();
  std::lock_guard lock(cache.mutex);
  // Settings of other methods (or without a scope) that this one may have overridden are forgotten.
  std::erase_if(cache.applied, [&](const auto& entry) {
    const auto& [method, context, epoch, object, attribute] = entry.first;
    return method != M && scope.touches(detail::CacheScope{object, attribute});
  });
  cache.applied[{M, wireHandle(DriverState::get().current()),
                 DriverState::get().contextEpoch().load(std::memory_order_acquire), scope.object, scope.attribute}] =
      std::move(encoded);
}

// Forgets the cached answers of `methods` (a cache group of api/cuda.toml: kCacheGroup_<group>)
// that a successful call with `args` changes (all of them when it names no kernel or function).
template <std::size_t N, class... A>
void forgetCached(const std::array<Method, N>& methods, A... args) noexcept {
  const auto scope = detail::cacheScope(args...);
  auto& cache = detail::resultCache();
  std::lock_guard lock(cache.mutex);
  std::erase_if(cache.results, [&](const auto& entry) {
    return std::find(methods.begin(), methods.end(), std::get<0>(entry.first)) != methods.end() &&
           scope.touches(entry.second.scope);
  });
}

// Called by the generated stubs of functions whose arguments have the roles "alloc" and "free"
// (api/cuda.toml): the client's record of the session's device allocations.
inline void allocated(CUdeviceptr base, std::uint64_t bytes) noexcept { DriverState::get().allocated(base, bytes); }
inline std::uint64_t streamGeneration(CUstream stream) noexcept { return DriverState::get().streamGeneration(stream); }
inline bool streamIdle(CUstream stream, std::uint64_t generation) noexcept {
  return DriverState::get().streamIdle(stream, generation);
}
inline void streamIdled(CUstream stream, std::uint64_t generation) noexcept {
  DriverState::get().streamIdled(stream, generation);
}
inline void released(CUdeviceptr base) noexcept { DriverState::get().released(base); }
// Stream capture in the process (streams.cpp; api/cuda.toml's `capture`).
void captureBegun(CUstream stream) noexcept;
void captureEnded(CUstream stream) noexcept;
[[nodiscard]] bool noCaptureActive() noexcept;

// Null, or the base of one of the session's allocations.
inline bool freeable(CUdeviceptr base) noexcept {
  if (base == 0) return true;
  const auto found = DriverState::get().allocation(base);
  return found && found->first == base;
}

}  // namespace flyt::interpose::cu
