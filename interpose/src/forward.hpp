// forward<Method>(args...): the body of every generated client stub. Marshals the arguments by the
// method's codec tags (flyt::api::Spec), sends the call the way its kind asks (batched, waited for,
// or answered from the cache), unmarshals out-arguments and records the result as the thread's last
// error.
#pragma once

#include <cuda_runtime_api.h>

#include <map>
#include <mutex>
#include <tuple>
#include <utility>
#include <vector>

#include "client.hpp"
#include "flyt/api/specs.hpp"

namespace flyt::interpose {
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
template <class T> struct Codec<api::Out<T>> {
  static bool encode(api::ArgWriter&, T* p) { return p != nullptr; }
  static bool decode(api::ArgReader& r, T* p) { return r.get(*p); }
};
template <class T> struct Codec<api::InOut<T>> {
  static bool encode(api::ArgWriter& w, T* p) { if (!p) return false; w.put(*p); return true; }
  static bool decode(api::ArgReader& r, T* p) { return r.get(*p); }
};

template <class... Tags, class... A>
bool encodeAll(api::ArgList<Tags...>, api::ArgWriter& w, A... args) {
  return (Codec<Tags>::encode(w, args) && ...);
}
template <class... Tags, class... A>
bool decodeAll(api::ArgList<Tags...>, api::ArgReader& r, A... args) {
  return (Codec<Tags>::decode(r, args) && ...);
}

// Results of "cached" calls, keyed by method and encoded in-arguments.
struct ResultCache {
  std::mutex mutex;
  std::map<std::pair<api::Method, std::vector<std::byte>>, std::vector<std::byte>> results;
};
ResultCache& resultCache() noexcept;

}  // namespace detail

template <api::Method M, class... A>
cudaError_t forward(A... args) noexcept {
  using Args = typename api::Spec<M>::Args;
  constexpr api::Kind kKind = api::methodInfo(M).kind;
  std::vector<std::byte> encoded;
  api::ArgWriter writer(encoded);
  if (!detail::encodeAll(Args{}, writer, args...)) return recordResult(cudaErrorInvalidValue);

  if constexpr (kKind == api::Kind::Async) {
    return recordResult(Client::get().enqueue(M, encoded));
  } else {
    auto& cache = detail::resultCache();
    if constexpr (kKind == api::Kind::Cached) {
      std::lock_guard lock(cache.mutex);
      if (auto it = cache.results.find({M, encoded}); it != cache.results.end()) {
        api::ArgReader reader(it->second);
        return recordResult(detail::decodeAll(Args{}, reader, args...) ? cudaSuccess
                                                                       : cudaErrorUnknown);
      }
    }
    auto outcome = Client::get().call(M, encoded);
    if (outcome.error != cudaSuccess) return recordResult(outcome.error);
    // Waiting for the device reports what failed in the work waited for, as in NVIDIA's runtime;
    // other calls only leave it as the thread's last error.
    if constexpr (M == api::Method::cudaDeviceSynchronize || M == api::Method::cudaStreamSynchronize ||
                  M == api::Method::cudaEventSynchronize) {
      if (outcome.earlier != cudaSuccess) return recordResult(outcome.earlier);
    }
    api::ArgReader reader(outcome.results);
    if (!detail::decodeAll(Args{}, reader, args...)) return recordResult(cudaErrorUnknown);
    if constexpr (kKind == api::Kind::Cached) {
      std::lock_guard lock(cache.mutex);
      cache.results.emplace(std::pair{M, std::move(encoded)}, std::move(outcome.results));
    }
    return cudaSuccess;
  }
}

}  // namespace flyt::interpose
