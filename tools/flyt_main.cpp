// flyt: the user's command line.
//
//   flyt run [--server URL] [--executor K] [--api runtime|driver] -- PROGRAM ARGS...
//       Runs PROGRAM with Flyt's libcudart.so.13 forced in (LD_PRELOAD, so an RPATH to NVIDIA's
//       runtime cannot win) and FLYT_SERVER naming the node. With --api driver, Flyt's
//       libcuda.so.1 and libnvidia-ml.so.1 (<prefix>/lib/driver) are forced in instead, and NVIDIA's own runtime and
//       libraries run in PROGRAM on top of it. Without --server and FLYT_SERVER, a
//       private flyt-node (shared memory only, unique name) is started for the run and stopped
//       afterwards. Exits with PROGRAM's status, or 128 + the signal that killed it.
//   flyt run --orchestrator HOST:PORT --tenant NAME --token T [--config client.toml] -- PROGRAM ...
//       Cluster mode: the interposed library asks flyt-orchestrator for a placement and a signed
//       grant and connects to the node it names (FLYT_ORCHESTRATOR, FLYT_TENANT, FLYT_TOKEN,
//       FLYT_CONFIG carry the options to it); no node is started.
//   flyt node [flyt-node options]
//       Runs a node in the foreground (exec of flyt-node).
//
// Layout: flyt and flyt-node live in <prefix>/bin, libcudart.so.13 in <prefix>/lib, libcuda.so.1 in
// <prefix>/lib/driver with libnvidia-ml.so.1 (the build tree has the same shape).
#include <dlfcn.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "flyt/transport/config.hpp"
#include "flyt/transport/endpoint.hpp"
#include "flyt/transport/orchestrator_client.hpp"
#include "flyt/transport/transport.hpp"

namespace {

namespace fs = std::filesystem;
namespace ft = flyt::transport;
using namespace std::chrono_literals;

constexpr int kExitFlytError = 125;    // flyt itself failed (like env(1) and timeout(1))
constexpr int kExitCannotExec = 127;   // PROGRAM could not be executed
constexpr auto kNodeStartTimeout = 15s;
constexpr auto kNodeStopGrace = 5s;

constexpr const char* kRunFooter = R"(
Usage: flyt run [--server URL] [--executor K] [--api runtime|driver] [--] PROGRAM ARGS...
       flyt run --orchestrator HOST:PORT --tenant NAME --token T [--] PROGRAM ARGS...

Examples:
  flyt run -- ./matmul 1024                  private node for this run (shared memory)
  flyt run --server tcp://gpu1:7070 -- ./app a node on another host
  flyt run --api driver -- python3 train.py  cut at the driver API: NVIDIA's runtime, cuBLAS,
                                             cuDNN, PyTorch and static-runtime programs run
                                             unmodified on Flyt's libcuda.so.1
  FLYT_SERVER=shm://flyt flyt run -- ./app   the node started by `flyt node` on this host
  flyt run --orchestrator ctl1:7000 --tenant vm-a --token $TOKEN -- ./app
                                             cluster: the orchestrator picks the node and GPU

Without --server and FLYT_SERVER, flyt starts a private flyt-node for the run and stops it when
PROGRAM exits; that needs a GPU on this host. Where there is none, flyt refuses, unless
--executor standin asks for the GPU stand-in: a test double that keeps device memory in host memory
and does not run kernels.
flyt exits with PROGRAM's status, 128+N when a signal N killed it, 125 when flyt itself failed,
127 when PROGRAM could not be executed.)";

constexpr const char* kNodeFooter = R"(
Examples:
  flyt node                                  shm://flyt and tcp://127.0.0.1:7070
  flyt node --tcp 0.0.0.0:7070 --log debug   serve other hosts too
  flyt node --help                           every option of flyt-node)";

template <class... Args>
void say(fmt::format_string<Args...> format, Args&&... args) {
  fmt::print(stderr, "flyt: {}\n", fmt::format(format, std::forward<Args>(args)...));
}

fs::path selfDirectory() {
  std::error_code ec;
  auto self = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::path(".") : self.parent_path();
}

// True when the CUDA driver loads and sees a device. Loaded at run time: CI hosts have no driver.
bool gpuPresent() {
  void* driver = ::dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (driver == nullptr) return false;
  using InitFn = int (*)(unsigned);
  using CountFn = int (*)(int*);
  auto init = reinterpret_cast<InitFn>(::dlsym(driver, "cuInit"));
  auto count = reinterpret_cast<CountFn>(::dlsym(driver, "cuDeviceGetCount"));
  int devices = 0;
  const bool present = init != nullptr && count != nullptr && init(0) == 0 && count(&devices) == 0 &&
                       devices > 0;
  ::dlclose(driver);
  return present;
}

// The child's side of fork: signals back to defaults, then exec; never returns.
[[noreturn]] void execChild(const std::vector<std::string>& args) {
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  for (int sig : {SIGINT, SIGQUIT, SIGTERM, SIGHUP, SIGPIPE}) ::signal(sig, SIG_DFL);
  std::vector<char*> argv;
  for (const auto& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);
  ::execvp(argv[0], argv.data());
  const int err = errno;
  say("cannot run '{}': {}", args[0], std::strerror(err));
  ::_exit(kExitCannotExec);
}

int exitCodeOf(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return kExitFlytError;
}

// A flyt-node started for one run: shared memory only, in its own process group (so that a Ctrl-C
// meant for the program does not stop the node under it), told to stop when flyt dies.
class PrivateNode {
 public:
  static std::optional<PrivateNode> start(const fs::path& nodePath, std::string_view executor) {
    std::mt19937 rng{std::random_device{}()};
    const std::string name = fmt::format("flyt-run-{}-{:04x}", ::getpid(), rng() & 0xffff);
    std::vector<std::string> args = {nodePath.string(), "--shm", name, "--tcp", "none",
                                     "--executor", std::string(executor), "--ready-fd", "3"};
    if (std::getenv("FLYT_LOG") == nullptr) args.insert(args.end(), {"--log", "warn"});
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) {
      say("pipe: {}", std::strerror(errno));
      return std::nullopt;
    }
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::setpgid(0, 0);
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (::getppid() != parent) ::_exit(kExitFlytError);  // flyt died before prctl took hold
      ::dup2(fds[1], 3);  // dup2 clears close-on-exec on the copy
      execChild(args);
    }
    ::close(fds[1]);
    if (pid < 0) {
      say("fork: {}", std::strerror(errno));
      ::close(fds[0]);
      return std::nullopt;
    }
    PrivateNode node(pid);
    auto endpoint = readReadyLine(fds[0]);
    ::close(fds[0]);
    if (!endpoint) {
      say("the private flyt-node did not start (its messages, if any, are above)");
      return std::nullopt;
    }
    node.m_endpoint = *endpoint;
    return node;
  }

  PrivateNode(PrivateNode&& other) noexcept
      : m_pid(std::exchange(other.m_pid, -1)), m_endpoint(std::move(other.m_endpoint)) {}
  PrivateNode& operator=(PrivateNode&&) = delete;
  ~PrivateNode() { stop(); }

  [[nodiscard]] const std::string& endpoint() const { return m_endpoint; }

  // SIGTERM, then SIGKILL after kNodeStopGrace; reaps the node.
  void stop() {
    if (m_pid <= 0) return;
    ::kill(m_pid, SIGTERM);
    int status = 0;
    for (auto deadline = std::chrono::steady_clock::now() + kNodeStopGrace;;) {
      if (::waitpid(m_pid, &status, WNOHANG) == m_pid) break;
      if (std::chrono::steady_clock::now() > deadline) {
        say("the private flyt-node did not stop within {} s: killing it", kNodeStopGrace.count());
        ::kill(m_pid, SIGKILL);
        ::waitpid(m_pid, &status, 0);
        break;
      }
      std::this_thread::sleep_for(10ms);
    }
    m_pid = -1;
  }

 private:
  explicit PrivateNode(pid_t pid) : m_pid(pid) {}

  // The node's --ready-fd line: its endpoints, the shm one first. nullopt when it exits or stays
  // silent.
  static std::optional<std::string> readReadyLine(int fd) {
    std::string line;
    const auto deadline = std::chrono::steady_clock::now() + kNodeStartTimeout;
    while (line.find('\n') == std::string::npos) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      pollfd pfd{fd, POLLIN, 0};
      if (left.count() <= 0 || ::poll(&pfd, 1, int(left.count())) == 0) return std::nullopt;
      char buffer[256];
      const ssize_t got = ::read(fd, buffer, sizeof buffer);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) return std::nullopt;
      line.append(buffer, std::size_t(got));
    }
    line.resize(line.find('\n'));
    return line.substr(0, line.find(' '));
  }

  pid_t m_pid;
  std::string m_endpoint;
};

// Connects once, without a handshake: the node reads it as a probe.
bool checkReachable(const std::string& server) {
  auto endpoint = ft::Endpoint::parse(server);
  if (!endpoint) {
    say("'{}' is not a Flyt endpoint: {}", server, endpoint.error().message);
    return false;
  }
  auto config = ft::transportConfigFromEnv();
  if (!config) {
    say("{}", config.error().describe());
    return false;
  }
  auto channel = ft::connect(*endpoint, *config);
  if (!channel) {
    say("server {} is unreachable: {}", server, channel.error().describe());
    return false;
  }
  return true;
}

volatile sig_atomic_t g_program = 0;

void forwardSignal(int sig) {
  if (g_program > 0) ::kill(g_program, sig);
}

// Runs the program with Flyt's runtime and `server`; returns its exit code.
int runProgram(const std::vector<std::string>& program, const fs::path& runtime,
               const std::string& server) {
  // Like a shell waiting for a command: the terminal's Ctrl-C is for the program, which gets it
  // itself; a SIGTERM/SIGHUP sent to flyt is passed on.
  ::signal(SIGINT, SIG_IGN);
  ::signal(SIGQUIT, SIG_IGN);
  const pid_t pid = ::fork();
  if (pid == 0) {
    const char* preload = std::getenv("LD_PRELOAD");
    const char* path = std::getenv("LD_LIBRARY_PATH");
    const std::string libDir = runtime.parent_path().string();
    std::string ours = runtime.string();
    // With the driver: Flyt's NVML too (from the same directory), and the dlopen guard, which
    // answers a request for NVIDIA's driver or NVML by path with Flyt's library of that name.
    for (const char* companion : {"libnvidia-ml.so.1", "libflyt-dlopen.so"}) {
      if (const auto file = runtime.parent_path() / companion; runtime.filename() == "libcuda.so.1" && fs::exists(file)) {
        ours += ":" + file.string();
      }
    }
    const std::string newPreload = ours + (preload && *preload ? fmt::format(":{}", preload) : std::string());
    const std::string newPath = libDir + (path && *path ? fmt::format(":{}", path) : std::string());
    ::setenv("LD_PRELOAD", newPreload.c_str(), 1);
    ::setenv("LD_LIBRARY_PATH", newPath.c_str(), 1);
    if (!server.empty()) ::setenv("FLYT_SERVER", server.c_str(), 1);
    execChild(program);
  }
  if (pid < 0) {
    say("fork: {}", std::strerror(errno));
    return kExitFlytError;
  }
  g_program = pid;
  struct sigaction forward {};
  forward.sa_handler = forwardSignal;
  sigaction(SIGTERM, &forward, nullptr);
  sigaction(SIGHUP, &forward, nullptr);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  g_program = 0;
  return exitCodeOf(status);
}

struct RunOptions {
  std::string server;
  std::string executor = "auto";
  std::string api = "runtime";
  std::string config;
  std::string orchestrator;
  std::string tenant;
  std::string token;
  std::vector<std::string> program;
};

// Cluster mode: the options become the environment the interposed library reads (FLYT_CONFIG,
// FLYT_ORCHESTRATOR, FLYT_TENANT, FLYT_TOKEN), checked here so that a mistake is reported before
// the program starts. True when an orchestrator is configured (then no node is named or started).
std::optional<bool> exportClusterSettings(const RunOptions& options) {
  if (!options.config.empty()) {
    ::setenv("FLYT_CONFIG", fs::absolute(options.config).c_str(), 1);
  }
  for (const auto& [value, name] : {std::pair{&options.orchestrator, "FLYT_ORCHESTRATOR"},
                                    std::pair{&options.tenant, "FLYT_TENANT"}, std::pair{&options.token, "FLYT_TOKEN"}}) {
    if (!value->empty()) ::setenv(name, value->c_str(), 1);
  }
  std::optional<toml::table> file;
  const char* path = std::getenv("FLYT_CONFIG");
  if (path != nullptr && *path != '\0') {
    auto table = ft::loadTomlFile(path);
    if (!table) {
      say("{}", table.error().describe());
      return std::nullopt;
    }
    file = std::move(*table);
  }
  auto cluster = ft::clusterClientConfig(file ? &*file : nullptr, path != nullptr ? path : "");
  if (!cluster) {
    say("{}", cluster.error().message);
    return std::nullopt;
  }
  return cluster->enabled();
}

int run(const RunOptions& options, bool executorGiven) {
  const fs::path self = selfDirectory();
  std::error_code ec;
  const bool driver = options.api == "driver";
  const fs::path library = driver ? fs::path("driver") / "libcuda.so.1" : fs::path("libcudart.so.13");
  const fs::path runtime = fs::weakly_canonical(self / ".." / "lib" / library, ec);
  if (ec || !fs::exists(runtime)) {
    say("Flyt's {} is not at {} (flyt expects <prefix>/bin/flyt and <prefix>/lib/{})", library.filename().string(),
        (self / ".." / "lib" / library).string(), library.string());
    return kExitFlytError;
  }
  const auto clustered = exportClusterSettings(options);
  if (!clustered) return kExitFlytError;
  if (*clustered) {
    if (!options.server.empty()) say("--server is ignored with an orchestrator: it places the session");
    return runProgram(options.program, runtime, "");
  }
  std::string server = options.server;
  if (server.empty()) {
    if (const char* env = std::getenv("FLYT_SERVER"); env != nullptr) server = env;
  }
  if (!server.empty()) {
    if (executorGiven) say("--executor is ignored with a server: the node's configuration decides");
    if (!checkReachable(server)) return kExitFlytError;
    return runProgram(options.program, runtime, server);
  }
  if (options.executor == "standin") {
    say("running on the GPU stand-in (test double): device memory is host memory, kernels do not run");
  } else if (!gpuPresent()) {
    if (options.executor == "cuda") {
      say("no GPU found (the CUDA driver libcuda.so.1 did not load or sees no device), and "
          "--executor cuda was requested");
    } else {
      say("no Flyt server (--server, FLYT_SERVER) and no GPU on this host (the CUDA driver "
          "libcuda.so.1 did not load or sees no device): nothing can serve the program's CUDA "
          "calls. Name a node with --server tcp://HOST:PORT, or test against the GPU stand-in (a "
          "test double) with --executor standin");
    }
    return kExitFlytError;
  }
  auto node = PrivateNode::start(self / "flyt-node", options.executor);
  if (!node) return kExitFlytError;
  const int code = runProgram(options.program, runtime, node->endpoint());
  node->stop();
  return code;
}

[[noreturn]] void execNode(int argc, char** argv) {
  const std::string nodePath = (selfDirectory() / "flyt-node").string();
  std::vector<std::string> args = {nodePath};
  for (int i = 2; i < argc; ++i) args.emplace_back(argv[i]);
  std::vector<char*> cargs;
  for (auto& arg : args) cargs.push_back(arg.data());
  cargs.push_back(nullptr);
  ::execv(nodePath.c_str(), cargs.data());
  say("cannot run {}: {}", nodePath, std::strerror(errno));
  ::_exit(kExitFlytError);
}

}  // namespace

int main(int argc, char** argv) {
  // `flyt node ...` hands every argument, --help included, to flyt-node.
  if (argc >= 2 && std::string_view(argv[1]) == "node") execNode(argc, argv);

  CLI::App app{"flyt: run CUDA programs on a Flyt GPU node (GPU remoting).", "flyt"};
  app.require_subcommand(1);
  app.footer("Run 'flyt SUBCOMMAND --help' for a subcommand's options.");

  RunOptions options;
  auto* runCommand = app.add_subcommand("run", "run PROGRAM with its CUDA calls served by Flyt");
  runCommand->add_option("--server", options.server,
                         "node endpoint, e.g. shm://flyt or tcp://gpu1:7070 (default: $FLYT_SERVER, "
                         "else a private node for this run)");
  runCommand->add_option("--executor", options.executor,
                         "private node only: auto or cuda (the GPU), standin (the GPU stand-in, a test double)")
      ->check(CLI::IsMember({"auto", "cuda", "standin"}));
  runCommand->add_option("--api", options.api,
                         "where Flyt cuts: runtime (Flyt's libcudart.so.13, the default) or driver (Flyt's "
                         "libcuda.so.1 under NVIDIA's own runtime and libraries)")
      ->check(CLI::IsMember({"runtime", "driver"}));
  runCommand->add_option("--config", options.config, "client.toml ([transport], [cluster]); sets FLYT_CONFIG")
      ->check(CLI::ExistingFile);
  runCommand->add_option("--orchestrator", options.orchestrator,
                         "cluster mode: flyt-orchestrator's address HOST:PORT (default: $FLYT_ORCHESTRATOR); "
                         "it places the session on a node with room for the tenant's quota");
  runCommand->add_option("--tenant", options.tenant, "cluster mode: the tenant (VM) to run as (default: $FLYT_TENANT)");
  runCommand->add_option("--token", options.token,
                         "cluster mode: the tenant's token from `flytctl tenant add` (default: $FLYT_TOKEN)");
  // Everything from PROGRAM on belongs to PROGRAM, options included (`flyt run ./app -n 3`).
  runCommand->prefix_command();
  runCommand->footer(kRunFooter);

  auto* nodeCommand = app.add_subcommand("node", "run a flyt-node in the foreground (flyt node --help)");
  nodeCommand->footer(kNodeFooter);
  // CLI11's prefix_command() does not take "--" itself: drop the first one after "run".
  std::vector<std::string> args(argv + 1, argv + argc);
  if (!args.empty() && args[0] == "run") {
    if (auto dashes = std::find(args.begin(), args.end(), "--"); dashes != args.end()) {
      args.erase(dashes);
    }
  }
  std::reverse(args.begin(), args.end());  // CLI11 parses a reversed vector
  try {
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    if (argc >= 2 && argv[1][0] != '-' && std::string_view(argv[1]) != "run") {
      say("unknown subcommand '{}' (expected run or node; see flyt --help)", argv[1]);
      return kExitFlytError;
    }
    return app.exit(e);
  }
  if (runCommand->parsed()) {
    options.program = runCommand->remaining();
    if (options.program.empty()) {
      say("run: no PROGRAM given (usage: flyt run [--server URL] -- PROGRAM ARGS...)");
      return kExitFlytError;
    }
    return run(options, runCommand->count("--executor") > 0);
  }
  return kExitFlytError;
}
