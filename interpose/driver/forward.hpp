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
#include <utility>
#include <vector>

#include "driver_client.hpp"
#include "flyt/api/cu_specs.hpp"

namespace flyt::interpose::cu {
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

// Results of "cached" calls, keyed by method and encoded in-arguments (and the context).
// Also the last settings of "idempotent" setters that were sent, keyed by method, context and
// context epoch and encoded arguments: the same setting again changes nothing and is not sent.
struct ResultCache {
  std::mutex mutex;
  std::map<std::tuple<Method, std::uint64_t, std::vector<std::byte>>, std::vector<std::byte>> results;
  std::set<std::tuple<Method, std::uint64_t, std::uint64_t, std::vector<std::byte>>> applied;
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
        api::ArgReader reader(it->second);
        return detail::decodeAll(Args{}, reader, args...) ? CUDA_SUCCESS : CUDA_ERROR_UNKNOWN;
      }
    }
    auto outcome = DriverCall().call(M, encoded, {}, std::nullopt, kInfo.synchronizes);
    if (outcome.error != CUDA_SUCCESS) return outcome.error;
    api::ArgReader reader(outcome.results);
    if (!detail::decodeAll(Args{}, reader, args...)) return CUDA_ERROR_UNKNOWN;
    if constexpr (kInfo.kind == api::cu::Kind::Cached) {
      std::lock_guard lock(cache.mutex);
      cache.results.emplace(std::tuple{M, context, std::move(encoded)}, std::move(outcome.results));
    }
    return CUDA_SUCCESS;
  }
}

// An idempotent setter (api/cuda.toml `idempotent`, e.g. cudaFuncSetAttribute before every launch):
// true when this very setting was the last one sent, in this context, since no other setting was
// sent (another handle may alias the same object: a kernel and its function), so it is answered
// without a round trip. `remember` records a setting that was sent and succeeded.
template <Method M, class... A>
bool alreadyApplied(A... args) noexcept {
  std::vector<std::byte> encoded;
  api::ArgWriter writer(encoded);
  if (!detail::encodeAll(typename api::cu::Spec<M>::Args{}, writer, args...)) return false;
  auto& cache = detail::resultCache();
  std::lock_guard lock(cache.mutex);
  return cache.applied.contains({M, wireHandle(DriverState::get().current()),
                                 DriverState::get().contextEpoch().load(std::memory_order_acquire), std::move(encoded)});
}
template <Method M, class... A>
void rememberApplied(A... args) noexcept {
  std::vector<std::byte> encoded;
  api::ArgWriter writer(encoded);
  if (!detail::encodeAll(typename api::cu::Spec<M>::Args{}, writer, args...)) return;
  auto& cache = detail::resultCache();
  std::lock_guard lock(cache.mutex);
  cache.applied.clear();
  cache.applied.emplace(M, wireHandle(DriverState::get().current()),
                        DriverState::get().contextEpoch().load(std::memory_order_acquire), std::move(encoded));
}

// Forgets the cached answers of `methods` (a cache group of api/cuda.toml: kCacheGroup_<group>),
// after a call that changes them.
template <std::size_t N>
void forgetCached(const std::array<Method, N>& methods) noexcept {
  auto& cache = detail::resultCache();
  std::lock_guard lock(cache.mutex);
  std::erase_if(cache.results, [&](const auto& entry) {
    return std::find(methods.begin(), methods.end(), std::get<0>(entry.first)) != methods.end();
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
