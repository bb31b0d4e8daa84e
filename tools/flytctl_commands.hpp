// flytctl's commands: one function per command line, each one RPC call to the orchestrator.
// Each answers what to print on stdout (a table, a sentence, or JSON with `json`), or the error.
#pragma once

#include <cstdint>
#include <string>

#include "flyt/transport/error.hpp"
#include "flytctl_client.hpp"

namespace flyt::flytctl {

struct TenantOptions {
  std::string name;
  std::uint32_t smPercent = 0;    // 0: not given
  std::string memory;             // a size ("8GiB"); empty: not given
  std::uint32_t maxSessions = 0;  // 0: not given
  std::string token;              // empty: not given
};

[[nodiscard]] transport::Result<std::string> tenantAdd(Connection& c, const TenantOptions& options, bool json);
[[nodiscard]] transport::Result<std::string> tenantList(Connection& c, bool json);
[[nodiscard]] transport::Result<std::string> tenantSet(Connection& c, const TenantOptions& options, bool json);
[[nodiscard]] transport::Result<std::string> tenantRemove(Connection& c, const std::string& name, bool json);
[[nodiscard]] transport::Result<std::string> nodeList(Connection& c, bool json);
[[nodiscard]] transport::Result<std::string> sessionList(Connection& c, bool json);
[[nodiscard]] transport::Result<std::string> sessionKill(Connection& c, const std::string& id, bool json);
[[nodiscard]] transport::Result<std::string> status(Connection& c, bool json);

}  // namespace flyt::flytctl
