#include "flytctl_commands.hpp"

#include <fmt/format.h>

#include <charconv>

#include "flyt/orchestration/service.hpp"
#include "flyt/transport/units.hpp"
#include "flyt/transport/grant.hpp"
#include "flytctl_output.hpp"

namespace flyt::flytctl {
namespace {

using transport::formatBytes;
using transport::Errc;
using transport::fail;
using transport::Result;

std::string plural(std::uint64_t count, std::string_view noun) {
  return fmt::format("{} {}{}", count, noun, count == 1 ? "" : "s");
}

void writeTenant(JsonWriter& json, wire::Tenant::Reader tenant) {
  json.beginObject()
      .key("name").value(tenant.getName().cStr())
      .key("smPercent").value(tenant.getSmPercent())
      .key("memoryBytes").value(tenant.getMemoryBytes())
      .key("maxSessions").value(tenant.getMaxSessions())
      .key("sessions").value(tenant.getSessions())
      .endObject();
}

std::string describeTenant(wire::Tenant::Reader tenant) {
  return fmt::format("{}% of a GPU's SMs and {} per session, at most {}", tenant.getSmPercent(),
                     formatBytes(tenant.getMemoryBytes()), plural(tenant.getMaxSessions(), "session"));
}

Result<std::uint64_t> memoryOption(const std::string& text) {
  auto bytes = transport::parseSize(text);
  if (!bytes) return fail(Errc::kInvalidArgument, fmt::format("--memory: {}", bytes.error().message));
  if (*bytes == 0) return fail(Errc::kInvalidArgument, "--memory must be larger than 0");
  return bytes;
}

Result<std::uint64_t> sessionIdOption(std::string_view text) {
  std::string_view digits = text.starts_with("0x") ? text.substr(2) : text;
  std::uint64_t id = 0;
  auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), id, 16);
  if (digits.empty() || digits.size() > 16 || ec != std::errc{} || ptr != digits.data() + digits.size() || id == 0) {
    return fail(Errc::kInvalidArgument,
                fmt::format("'{}' is not a session id (16 hex digits, as flytctl session list shows)", text));
  }
  return id;
}

}  // namespace

Result<std::string> tenantAdd(Connection& c, const TenantOptions& options, bool json) {
  auto memory = memoryOption(options.memory);
  if (!memory) return std::unexpected(memory.error());
  auto request = c.orchestrator().addTenantRequest();
  auto tenant = request.initTenant();
  tenant.setName(options.name);
  tenant.setSmPercent(options.smPercent);
  tenant.setMemoryBytes(*memory);
  tenant.setMaxSessions(options.maxSessions);
  request.setToken(options.token);
  auto response = c.send(request);
  if (!response) return std::unexpected(response.error());
  if (json) {
    JsonWriter out;
    out.beginObject().key("tenant");
    writeTenant(out, response->getTenant());
    out.key("token").value(response->getToken().cStr()).endObject();
    return out.str() + "\n";
  }
  return fmt::format("tenant {} added: {}\ntoken: {}\nKeep the token: it is shown only now (the orchestrator keeps "
                     "only its hash). Applications pass it with FLYT_TENANT={} FLYT_TOKEN=<token>.\n",
                     response->getTenant().getName().cStr(), describeTenant(response->getTenant()),
                     response->getToken().cStr(), response->getTenant().getName().cStr());
}

Result<std::string> tenantList(Connection& c, bool json) {
  auto request = c.orchestrator().listTenantsRequest();
  auto response = c.send(request);
  if (!response) return std::unexpected(response.error());
  if (json) {
    JsonWriter out;
    out.beginArray();
    for (auto tenant : response->getTenants()) writeTenant(out, tenant);
    out.endArray();
    return out.str() + "\n";
  }
  if (response->getTenants().size() == 0) return std::string("no tenants (add one with flytctl tenant add)\n");
  Table table({"NAME", "SM SHARE", "MEMORY", "MAX SESSIONS", "SESSIONS"});
  for (auto tenant : response->getTenants()) {
    table.add({tenant.getName().cStr(), fmt::format("{}%", tenant.getSmPercent()), formatBytes(tenant.getMemoryBytes()),
               fmt::format("{}", tenant.getMaxSessions()), fmt::format("{}", tenant.getSessions())});
  }
  return table.render();
}

Result<std::string> tenantSet(Connection& c, const TenantOptions& options, bool json) {
  if (options.smPercent == 0 && options.memory.empty() && options.maxSessions == 0 && options.token.empty()) {
    return fail(Errc::kInvalidArgument, "nothing to change: give --sm, --memory, --max-sessions or --token");
  }
  auto request = c.orchestrator().setTenantRequest();
  auto change = request.initChange();
  change.setName(options.name);
  change.setSmPercent(options.smPercent);
  if (!options.memory.empty()) {
    auto memory = memoryOption(options.memory);
    if (!memory) return std::unexpected(memory.error());
    change.setMemoryBytes(*memory);
  }
  change.setMaxSessions(options.maxSessions);
  change.setToken(options.token);
  auto response = c.send(request);
  if (!response) return std::unexpected(response.error());
  auto tenant = response->getTenant();
  if (json) {
    JsonWriter out;
    writeTenant(out, tenant);
    return out.str() + "\n";
  }
  std::string text = fmt::format("tenant {} set: {}\n", tenant.getName().cStr(), describeTenant(tenant));
  const auto live = tenant.getSessions();
  if (live > 0 && !options.memory.empty()) {
    text += fmt::format("Its {} get the new memory quota at their node's next heartbeat.\n", plural(live, "live session"));
  }
  if (live > 0 && options.smPercent != 0) {
    text += fmt::format("Its {} keep their SM share until they end; new sessions get {}%.\n",
                        plural(live, "live session"), tenant.getSmPercent());
  }
  return text;
}

Result<std::string> tenantRemove(Connection& c, const std::string& name, bool json) {
  auto request = c.orchestrator().removeTenantRequest();
  request.setName(name);
  auto response = c.send(request);
  if (!response) return std::unexpected(response.error());
  const auto ended = response->getEndedSessions();
  if (json) {
    JsonWriter out;
    out.beginObject().key("name").value(name).key("endedSessions").value(ended).endObject();
    return out.str() + "\n";
  }
  return fmt::format("tenant {} removed; {} ended\n", name, plural(ended, "session"));
}

Result<std::string> sessionKill(Connection& c, const std::string& text, bool json) {
  auto id = sessionIdOption(text);
  if (!id) return std::unexpected(id.error());
  auto request = c.orchestrator().killSessionRequest();
  request.setSessionId(*id);
  auto response = c.send(request);
  if (!response) return std::unexpected(response.error());
  if (json) {
    JsonWriter out;
    out.beginObject().key("sessionId").value(orchestration::sessionIdText(*id)).key("killed").value(true).endObject();
    return out.str() + "\n";
  }
  return fmt::format("session {} killed: its quota is released, and its node ends it at its next heartbeat\n",
                     orchestration::sessionIdText(*id));
}

}  // namespace flyt::flytctl
