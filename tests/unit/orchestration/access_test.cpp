// Which role may call which method of the orchestrator (flyt/orchestration/access.hpp): the table
// covers the whole schema, and refusals say which secret would have opened the call.
#include <capnp/schema.h>
#include <gtest/gtest.h>

#include <string>

#include "flyt/orchestration/access.hpp"

namespace {

namespace fo = flyt::orchestration;
using flyt::transport::OrchestratorRole;

std::uint16_t idOf(std::string_view method) {
  auto methods = capnp::Schema::from<flyt::wire::Orchestrator>().getMethods();
  for (unsigned i = 0; i < methods.size(); ++i) {
    if (fo::methodName(std::uint16_t(i)) == method) return std::uint16_t(i);
  }
  ADD_FAILURE() << "no method " << method;
  return 0xffff;
}

}  // namespace

TEST(OrchestratorAccess, EveryMethodOfTheSchemaHasOneRow) {
  auto methods = capnp::Schema::from<flyt::wire::Orchestrator>().getMethods();
  ASSERT_EQ(fo::methodAccess().size(), methods.size());
  for (unsigned i = 0; i < methods.size(); ++i) {
    const auto name = fo::methodName(std::uint16_t(i));
    int rows = 0;
    for (const auto& row : fo::methodAccess()) rows += row.method == name ? 1 : 0;
    EXPECT_EQ(rows, 1) << name;
  }
}

TEST(OrchestratorAccess, AdminMayCallEverything) {
  for (const auto& row : fo::methodAccess()) {
    EXPECT_TRUE(fo::mayCall(OrchestratorRole::kAdmin, idOf(row.method))) << row.method;
  }
}

TEST(OrchestratorAccess, NodesMayOnlyRegisterAndHeartbeat) {
  for (const auto& row : fo::methodAccess()) {
    const bool expected = row.method == "registerNode" || row.method == "heartbeat";
    EXPECT_EQ(bool(fo::mayCall(OrchestratorRole::kNode, idOf(row.method))), expected) << row.method;
  }
  auto refused = fo::mayCall(OrchestratorRole::kNode, idOf("openSession"));
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().message,
            "permission denied: this connection is authenticated as node; opening a session is for applications "
            "(tenant connections)");
}

TEST(OrchestratorAccess, TenantConnectionsMayOnlyOpenSessions) {
  for (const auto& row : fo::methodAccess()) {
    EXPECT_EQ(bool(fo::mayCall(OrchestratorRole::kTenant, idOf(row.method))), row.method == "openSession")
        << row.method;
  }
  auto admin = fo::mayCall(OrchestratorRole::kTenant, idOf("addTenant"));
  ASSERT_FALSE(admin);
  EXPECT_EQ(admin.error().code, flyt::transport::Errc::kUnauthenticated);
  EXPECT_EQ(admin.error().message,
            "permission denied: this connection is authenticated as tenant; tenant administration needs the admin "
            "token (flytctl --token-file or FLYT_ADMIN_TOKEN)");
  auto node = fo::mayCall(OrchestratorRole::kTenant, idOf("registerNode"));
  ASSERT_FALSE(node);
  EXPECT_EQ(node.error().message,
            "permission denied: this connection is authenticated as tenant; registering a node needs the node token "
            "([node] orchestrator_token_file or FLYT_NODE_TOKEN)");
}

TEST(OrchestratorAccess, MethodsTheTableDoesNotKnowAreForAdminsOnly) {
  EXPECT_TRUE(fo::mayCall(OrchestratorRole::kAdmin, 999));
  auto refused = fo::mayCall(OrchestratorRole::kTenant, 999);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().message,
            "permission denied: this connection is authenticated as tenant; method #999 needs the admin token "
            "(flytctl --token-file or FLYT_ADMIN_TOKEN)");
}
