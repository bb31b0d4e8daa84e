// flytctl: administers a Flyt cluster through flyt-orchestrator's RPC interface
// (transport/schema/cluster.capnp): tenants (VMs) and their quotas, nodes, sessions, status.
// Exit status: 0 on success, 1 when the orchestrator refused (the connection or the command) or
// could not be reached, 2 for a malformed command line or an unusable token file.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <chrono>
#include <cstdlib>
#include <functional>
#include <optional>
#include <string>

#include "flyt/transport/orchestrator_auth.hpp"
#include "flyt/transport/orchestrator_client.hpp"
#include "flytctl_client.hpp"
#include "flytctl_commands.hpp"

namespace {

namespace fc = flyt::flytctl;

constexpr const char* kMainFooter = R"(Examples:
  flytctl tenant add vm1 --sm 50 --memory 8GiB       prints vm1's token once
  flytctl tenant list
  flytctl node list --json
  flytctl --orchestrator 10.0.0.2:7000 status

The orchestrator is --orchestrator, else $FLYT_ORCHESTRATOR, else 127.0.0.1:7000.

flytctl connects as admin. When the orchestrator has an admin_token, flytctl must prove it holds
the same secret: --token-file FILE (a file only you may read: chmod 600), else the file named by
$FLYT_ADMIN_TOKEN_FILE, else $FLYT_ADMIN_TOKEN. The secret never travels (HMAC challenge and
response, mutual: flytctl with a token refuses an orchestrator that cannot prove the same one).
  openssl rand -hex 32 > ~/.flyt_admin_token; chmod 600 ~/.flyt_admin_token
  flytctl --token-file ~/.flyt_admin_token tenant list
Every command takes --help.)";

struct Globals {
  std::string orchestrator;
  std::string tokenFile;
  bool json = false;
  double timeoutS = 5.0;
};

using Command = std::function<flyt::transport::Result<std::string>(fc::Connection&, bool json)>;

// The admin secret: --token-file, else FLYT_ADMIN_TOKEN_FILE, else FLYT_ADMIN_TOKEN; empty: none.
flyt::transport::Result<std::string> adminToken(const Globals& globals) {
  namespace ft = flyt::transport;
  if (!globals.tokenFile.empty()) return ft::readOrchestratorSecret(globals.tokenFile, "--token-file");
  if (const char* file = std::getenv("FLYT_ADMIN_TOKEN_FILE"); file != nullptr && *file != '\0') {
    return ft::readOrchestratorSecret(file, "FLYT_ADMIN_TOKEN_FILE");
  }
  if (const char* token = std::getenv("FLYT_ADMIN_TOKEN"); token != nullptr && *token != '\0') {
    if (auto ok = ft::checkOrchestratorSecret(token, "FLYT_ADMIN_TOKEN"); !ok) return std::unexpected(ok.error());
    return std::string(token);
  }
  return std::string();
}

int run(const Globals& globals, const Command& command) {
  std::string where = globals.orchestrator;
  if (where.empty()) {
    const char* env = std::getenv("FLYT_ORCHESTRATOR");
    where = env != nullptr && *env != '\0' ? env : "127.0.0.1:7000";
  }
  auto address = flyt::transport::orchestratorAddress(where);
  if (!address) {
    fmt::print(stderr, "flytctl: {}\n", address.error().message);
    return 2;
  }
  auto token = adminToken(globals);
  if (!token) {
    fmt::print(stderr, "flytctl: {}\n", token.error().message);
    return 2;
  }
  const auto timeout = std::chrono::milliseconds(static_cast<std::int64_t>(globals.timeoutS * 1000));
  auto connection = fc::Connection::open(*address, *token, timeout);
  if (!connection) {
    fmt::print(stderr, "flytctl: {}\n", connection.error().message);
    return 1;
  }
  try {
    auto output = command(**connection, globals.json);
    if (!output) {
      fmt::print(stderr, "flytctl: {}\n", output.error().message);
      return 1;
    }
    fmt::print("{}", *output);
    return 0;
  } catch (const kj::Exception& e) {
    // Building a request can throw (a value capnp refuses); the calls themselves never do.
    fmt::print(stderr, "flytctl: {}\n", flyt::transport::plainRpcMessage(e.getDescription().cStr()));
    return 1;
  }
}

void tenantOptions(CLI::App* command, fc::TenantOptions& options, bool required) {
  command->add_option("NAME", options.name, "tenant name: 1-64 of [A-Za-z0-9_.-]")->required();
  auto* sm = command->add_option("--sm", options.smPercent, "SM share of one GPU per session, percent (1-100)")
                 ->check(CLI::Range(1, 100));
  auto* memory = command->add_option("--memory", options.memory,
                                     "device memory quota per session: 8GiB, 512MiB, 1.5GB, or bytes");
  command->add_option("--max-sessions", options.maxSessions, "sessions the tenant may hold at once (default 1)")
      ->check(CLI::Range(1, 65536));
  command->add_option("--token", options.token,
                      "the tenant's token, 8-256 characters (default: a new random one; shown once)");
  if (required) {
    sm->required();
    memory->required();
  }
}

}  // namespace

int main(int argc, char** argv) {
  Globals globals;
  CLI::App app{"flytctl: administers a Flyt cluster through flyt-orchestrator: tenants (VMs) with their SM share "
               "and memory quota per session, GPU nodes, sessions.",
               "flytctl"};
  app.footer(kMainFooter);
  app.require_subcommand(1);
  app.fallthrough();
  app.add_option("--orchestrator", globals.orchestrator,
                 "orchestrator address HOST:PORT or tcp://HOST:PORT (default $FLYT_ORCHESTRATOR, else 127.0.0.1:7000)");
  app.add_option("--token-file", globals.tokenFile,
                 "file (mode 0600) holding the orchestrator's admin token (default $FLYT_ADMIN_TOKEN_FILE, else "
                 "$FLYT_ADMIN_TOKEN, else none)");
  app.add_flag("--json", globals.json, "print machine-readable JSON instead of tables");
  app.add_option("--timeout", globals.timeoutS, "seconds to wait for the orchestrator (default 5)")
      ->check(CLI::Range(0.1, 600.0));

  std::optional<Command> chosen;
  fc::TenantOptions tenant;
  std::string argument;

  auto* tenantCmd = app.add_subcommand("tenant", "add, list, change or remove tenants (VMs)");
  tenantCmd->require_subcommand(1);
  tenantCmd->footer("Examples:\n  flytctl tenant add vm1 --sm 50 --memory 8GiB\n  flytctl tenant list\n"
                    "  flytctl tenant set vm1 --memory 16GiB --max-sessions 2\n  flytctl tenant rm vm1");
  auto* add = tenantCmd->add_subcommand("add", "add a tenant; prints its token once");
  tenantOptions(add, tenant, true);
  add->footer("Each session of the tenant gets --sm percent of one GPU's SMs and --memory of its memory.\n"
              "Examples:\n  flytctl tenant add vm1 --sm 50 --memory 8GiB\n"
              "  flytctl tenant add batch --sm 25 --memory 512MiB --max-sessions 4 --token \"$TOKEN\"");
  add->callback([&] { chosen = [&](fc::Connection& c, bool json) { return fc::tenantAdd(c, tenant, json); }; });
  auto* list = tenantCmd->add_subcommand("list", "list tenants with their quotas and live sessions");
  list->footer("Examples:\n  flytctl tenant list\n  flytctl tenant list --json");
  list->callback([&] { chosen = [](fc::Connection& c, bool json) { return fc::tenantList(c, json); }; });
  auto* set = tenantCmd->add_subcommand("set", "change a tenant's quotas or token");
  tenantOptions(set, tenant, false);
  set->footer("New sessions get the new values at once. Live sessions get a new memory quota at their node's next "
              "heartbeat; they keep their SM share until they end.\n"
              "Examples:\n  flytctl tenant set vm1 --memory 16GiB\n  flytctl tenant set vm1 --sm 25 --max-sessions 2\n"
              "  flytctl tenant set vm1 --token \"$NEW_TOKEN\"");
  set->callback([&] { chosen = [&](fc::Connection& c, bool json) { return fc::tenantSet(c, tenant, json); }; });
  auto* rm = tenantCmd->add_subcommand("rm", "remove a tenant and end its sessions");
  rm->add_option("NAME", argument, "tenant name")->required();
  rm->footer("Examples:\n  flytctl tenant rm vm1");
  rm->callback([&] { chosen = [&](fc::Connection& c, bool json) { return fc::tenantRemove(c, argument, json); }; });

  auto* nodeCmd = app.add_subcommand("node", "GPU nodes and their GPUs");
  nodeCmd->require_subcommand(1);
  auto* nodes = nodeCmd->add_subcommand("list", "list nodes, one line per GPU, with used SM share, memory, sessions");
  nodes->footer("Memory used counts each session's quota plus the per-session overhead.\n"
                "Examples:\n  flytctl node list\n  flytctl node list --json");
  nodes->callback([&] { chosen = [](fc::Connection& c, bool json) { return fc::nodeList(c, json); }; });

  auto* sessionCmd = app.add_subcommand("session", "sessions (one per application process)");
  sessionCmd->require_subcommand(1);
  auto* sessions = sessionCmd->add_subcommand("list", "list sessions: granted (not started yet) or active");
  sessions->footer("Examples:\n  flytctl session list\n  flytctl session list --json");
  sessions->callback([&] { chosen = [](fc::Connection& c, bool json) { return fc::sessionList(c, json); }; });
  auto* kill = sessionCmd->add_subcommand("kill", "end a session: its quota is released, its node kills it");
  kill->add_option("ID", argument, "session id, 16 hex digits as session list shows")->required();
  kill->footer("Examples:\n  flytctl session kill 9f3c2a1b00d4e5f6");
  kill->callback([&] { chosen = [&](fc::Connection& c, bool json) { return fc::sessionKill(c, argument, json); }; });

  auto* statusCmd = app.add_subcommand("status", "the orchestrator's version, database, placement and counts");
  statusCmd->footer("Examples:\n  flytctl status\n  flytctl --json status");
  statusCmd->callback([&] { chosen = [](fc::Connection& c, bool json) { return fc::status(c, json); }; });

  CLI11_PARSE(app, argc, argv);
  if (!chosen) {
    fmt::print(stderr, "flytctl: no command (see flytctl --help)\n");
    return 2;
  }
  return run(globals, *chosen);
}
