// libFuzzer target: configuration parsing. The input is a TOML document; when it parses, it is
// read the way each program reads its file: [transport] (client.toml, node.toml), [cluster]
// (client.toml), [node] (node.toml), [orchestrator] and [log] (orchestrator.toml) with the
// orchestrator's cross-key checks. Each must accept or refuse with an error, never crash.
#include <toml++/toml.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "flyt/orchestration/config.hpp"
#include "flyt/transport/config.hpp"
#include "flyt/transport/orchestrator_client.hpp"
#include "node_config.hpp"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  ::setenv("FLYT_LOG", "off", 0);
  // Only the file is under test: no FLYT_* variable may override what it says.
  for (const char* name : {"FLYT_ORCHESTRATOR", "FLYT_TENANT", "FLYT_TOKEN", "FLYT_SERVER", "FLYT_CONFIG"}) {
    ::unsetenv(name);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  toml::table root;
  try {
    root = toml::parse(text, std::string_view("fuzz.toml"));
  } catch (const toml::parse_error&) {
    return 0;  // a syntax error is toml++'s to report; Flyt never sees the table
  }
  (void)flyt::transport::transportConfigFromToml(root, "fuzz.toml");
  (void)flyt::transport::clusterClientConfig(&root, "fuzz.toml");
  (void)flyt::backend::nodeConfigFromToml(root, "fuzz.toml");
  auto orchestrator = flyt::orchestration::orchestratorConfigFromToml(root, "fuzz.toml");
  if (orchestrator) (void)flyt::orchestration::checkConfig(*orchestrator);
  return 0;
}
