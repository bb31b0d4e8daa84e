// flytctl node list, session list, status: the cluster as the orchestrator sees it.
#include <fmt/format.h>

#include "flyt/orchestration/service.hpp"
#include "flyt/transport/units.hpp"
#include "flyt/transport/grant.hpp"
#include "flytctl_commands.hpp"
#include "flytctl_output.hpp"

namespace flyt::flytctl {
namespace {

using transport::formatBytes;
using transport::Result;

void writeNode(JsonWriter& out, wire::NodeStatus::Reader node) {
  auto info = node.getInfo();
  out.beginObject()
      .key("name").value(info.getName().cStr())
      .key("up").value(node.getUp())
      .key("lastSeenMs").value(std::int64_t(node.getLastSeenMs()))
      .key("hostId").value(info.getHostId().cStr())
      .key("shmEndpoint").value(info.getShmEndpoint().cStr())
      .key("tcpEndpoint").value(info.getTcpEndpoint().cStr())
      .key("executor").value(info.getExecutor().cStr())
      .key("gpus").beginArray();
  for (auto gpu : node.getGpus()) {
    out.beginObject()
        .key("uuid").value(gpu.getGpu().getUuid().cStr())
        .key("name").value(gpu.getGpu().getName().cStr())
        .key("smCount").value(gpu.getGpu().getSmCount())
        .key("memoryBytes").value(gpu.getGpu().getMemoryBytes())
        .key("mps").value(gpu.getGpu().getMps())
        .key("smPercentUsed").value(gpu.getSmPercentUsed())
        .key("memoryUsed").value(gpu.getMemoryUsed())
        .key("sessions").value(gpu.getSessions())
        .endObject();
  }
  out.endArray().endObject();
}

}  // namespace

Result<std::string> nodeList(Connection& c, bool json) {
  auto request = c.orchestrator().listNodesRequest();
  auto response = c.send(request);
  if (!response) return std::unexpected(response.error());
  if (json) {
    JsonWriter out;
    out.beginArray();
    for (auto node : response->getNodes()) writeNode(out, node);
    out.endArray();
    return out.str() + "\n";
  }
  if (response->getNodes().size() == 0) return std::string("no nodes have registered\n");
  const auto now = transport::unixMillis();
  Table table({"NODE", "STATE", "LAST SEEN", "EXECUTOR", "GPU", "NAME", "SMS", "SM USED", "MEMORY USED", "SESSIONS"});
  for (auto node : response->getNodes()) {
    auto info = node.getInfo();
    const std::vector<std::string> head = {info.getName().cStr(), node.getUp() ? "up" : "down",
                                           age(node.getLastSeenMs(), now), info.getExecutor().cStr()};
    if (node.getGpus().size() == 0) {
      auto row = head;
      row.insert(row.end(), {"-", "-", "-", "-", "-", "-"});
      table.add(row);
    }
    for (auto gpu : node.getGpus()) {
      auto row = head;
      row.insert(row.end(), {gpu.getGpu().getUuid().cStr(), gpu.getGpu().getName().cStr(),
                             fmt::format("{}", gpu.getGpu().getSmCount()), fmt::format("{}%", gpu.getSmPercentUsed()),
                             fmt::format("{} / {}", formatBytes(gpu.getMemoryUsed()),
                                         formatBytes(gpu.getGpu().getMemoryBytes())),
                             fmt::format("{}", gpu.getSessions())});
      table.add(row);
    }
  }
  return table.render();
}

Result<std::string> sessionList(Connection& c, bool json) {
  auto request = c.orchestrator().listSessionsRequest();
  auto response = c.send(request);
  if (!response) return std::unexpected(response.error());
  if (json) {
    JsonWriter out;
    out.beginArray();
    for (auto s : response->getSessions()) {
      out.beginObject()
          .key("sessionId").value(orchestration::sessionIdText(s.getSessionId()))
          .key("tenant").value(s.getTenant().cStr())
          .key("node").value(s.getNode().cStr())
          .key("gpuUuid").value(s.getGpuUuid().cStr())
          .key("smPercent").value(s.getSmPercent())
          .key("memoryBytes").value(s.getMemoryBytes())
          .key("state").value(s.getState().cStr())
          .key("clientName").value(s.getClientName().cStr())
          .key("pid").value(s.getPid())
          .key("createdMs").value(std::int64_t(s.getCreatedMs()))
          .endObject();
    }
    out.endArray();
    return out.str() + "\n";
  }
  if (response->getSessions().size() == 0) return std::string("no sessions\n");
  const auto now = transport::unixMillis();
  Table table({"ID", "TENANT", "NODE", "GPU", "SM SHARE", "MEMORY", "STATE", "CLIENT", "PID", "STARTED"});
  for (auto s : response->getSessions()) {
    table.add({orchestration::sessionIdText(s.getSessionId()), s.getTenant().cStr(), s.getNode().cStr(),
               s.getGpuUuid().cStr(), fmt::format("{}%", s.getSmPercent()), formatBytes(s.getMemoryBytes()),
               s.getState().cStr(), s.getClientName().size() == 0 ? "-" : s.getClientName().cStr(),
               fmt::format("{}", s.getPid()), age(s.getCreatedMs(), now)});
  }
  return table.render();
}

Result<std::string> status(Connection& c, bool json) {
  auto request = c.orchestrator().statusRequest();
  auto response = c.send(request);
  if (!response) return std::unexpected(response.error());
  auto s = response->getStatus();
  if (json) {
    JsonWriter out;
    out.beginObject()
        .key("version").value(s.getVersion().cStr())
        .key("startedMs").value(std::int64_t(s.getStartedMs()))
        .key("database").value(s.getDatabase().cStr())
        .key("placement").value(s.getPlacement().cStr())
        .key("tenants").value(s.getTenants())
        .key("nodesUp").value(s.getNodesUp())
        .key("nodesDown").value(s.getNodesDown())
        .key("gpus").value(s.getGpus())
        .key("sessions").value(s.getSessions())
        .endObject();
    return out.str() + "\n";
  }
  Table table({});
  table.add({"version", s.getVersion().cStr()});
  table.add({"started", age(s.getStartedMs(), transport::unixMillis())});
  table.add({"database", s.getDatabase().cStr()});
  table.add({"placement", s.getPlacement().cStr()});
  table.add({"tenants", fmt::format("{}", s.getTenants())});
  table.add({"nodes", fmt::format("{} up, {} down", s.getNodesUp(), s.getNodesDown())});
  table.add({"gpus", fmt::format("{}", s.getGpus())});
  table.add({"sessions", fmt::format("{}", s.getSessions())});
  return table.render();
}

}  // namespace flyt::flytctl
