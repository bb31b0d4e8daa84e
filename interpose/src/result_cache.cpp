#include "cached_answers.hpp"
#include "forward.hpp"

namespace flyt::interpose::detail {

ResultCache& resultCache() noexcept {
  static auto* const cache = new ResultCache();  // leaked: used until the process's last call
  return *cache;
}

}  // namespace flyt::interpose::detail

namespace flyt::interpose {

void forgetCachedResults() noexcept {
  auto& cache = detail::resultCache();
  std::lock_guard lock(cache.mutex);
  cache.results.clear();
}

}  // namespace flyt::interpose
