#include "forward.hpp"

namespace flyt::interpose::detail {

ResultCache& resultCache() noexcept {
  static auto* const cache = new ResultCache();  // leaked: used until the process's last call
  return *cache;
}

}  // namespace flyt::interpose::detail
