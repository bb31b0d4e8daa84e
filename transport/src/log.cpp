#include "flyt/transport/log.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace flyt {
namespace {

spdlog::level::level_enum levelFromEnv() {
  const char* text = std::getenv("FLYT_LOG");
  if (text == nullptr || *text == '\0') return spdlog::level::warn;
  const auto level = spdlog::level::from_str(text);
  // from_str answers "off" for unknown names; an unknown level keeps the default instead.
  if (level == spdlog::level::off && std::string_view(text) != "off") return spdlog::level::warn;
  return level;
}

}  // namespace

spdlog::logger& logger(std::string_view component) {
  static std::mutex mutex;
  static std::map<std::string, std::shared_ptr<spdlog::logger>, std::less<>> loggers;
  static const auto level = levelFromEnv();
  std::lock_guard lock(mutex);
  if (auto it = loggers.find(component); it != loggers.end()) return *it->second;
  const std::string name = "flyt." + std::string(component);
  auto created = spdlog::get(name);
  if (!created) created = spdlog::stderr_color_mt(name);
  created->set_level(level);
  return *loggers.emplace(std::string(component), std::move(created)).first->second;
}

}  // namespace flyt
