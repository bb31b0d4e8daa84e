#include "report.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <map>

namespace flyt::flytbench {

namespace {

// Display width of UTF-8 text: "×" and "µ" are one column, two bytes.
std::size_t columns(std::string_view text) {
  return std::size_t(
      std::ranges::count_if(text, [](char c) { return (static_cast<unsigned char>(c) & 0xc0) != 0x80; }));
}

std::string pad(const std::string& text, std::size_t width, bool right) {
  const std::string fill(width > columns(text) ? width - columns(text) : 0, ' ');
  return right ? fill + text : text + fill;
}

std::string nodeDescription(const RunResult& run, const TransportRun& t) {
  const bool privateNode = std::ranges::find(run.nodeEndpoints, t.server) != run.nodeEndpoints.end();
  return fmt::format(
      "{} ({})", t.server,
      privateNode ? fmt::format("flytbench's node, executor {}", run.options.executor) : "given");
}

// "PyTorch 2.5.1 (CUDA 12.4), torchvision 0.20.1" from the first probe that said; empty if none.
std::string torchVersions(const RunResult& run) {
  for (const auto& t : run.transports) {
    for (const auto& info : t.infos) {
      if (auto torch = info.string("torch")) {
        return fmt::format("PyTorch {} (CUDA {}), torchvision {}", *torch, info.string("cuda").value_or("?"),
                           info.string("torchvision").value_or("?"));
      }
    }
  }
  return "";
}

std::string headerLines(const RunResult& run) {
  const auto& o = run.options;
  const bool torch = o.test == Test::kTorch;
  std::string out = fmt::format(
      "flytbench {}: {}, {}, min-time {} s per point{}, {} client{}{}\n", testName(o.test),
      run.device.empty() ? "no device" : run.device, run.date, o.minTime,
      torch ? fmt::format(" and {} iterations at least, synchronised every {}, {} warm-up iteration{}",
                          o.iterations,
                          o.syncEvery == 1 ? std::string("iteration") : fmt::format("{} iterations", o.syncEvery),
                          o.warmup, o.warmup == 1 ? "" : "s")
            : "",
      o.clients, o.clients == 1 ? "" : "s (results aggregated)",
      o.test == Test::kMemcpy && o.verify ? ", copies verified" : "");
  if (torch) {
    const std::string versions = torchVersions(run);
    out += fmt::format("  python  {}{}\n", o.python, versions.empty() ? "" : ": " + versions);
  }
  for (const auto& t : run.transports) {
    std::string what;
    if (t.status != Status::kOk) {
      what = t.note;
    } else if (t.name == "native" && torch) {
      what = "NVIDIA's runtime " + t.cudart + " and driver " + t.driver;
    } else if (t.name == "native") {
      what = "NVIDIA's runtime " + t.cudart;
    } else if (run.options.api == "driver") {
      what = nodeDescription(run, t) + ", NVIDIA's runtime " + t.cudart + " on Flyt's driver " + t.driver;
    } else {
      what = nodeDescription(run, t) + ", Flyt's runtime " + t.cudart;
    }
    out += fmt::format("  {:<6}  {}\n", t.name, what);
  }
  if (!run.rawSocket.empty())
    out += "  raw     a plain loopback TCP socket pair in flytbench, one per client\n";
  return out;
}

struct Notes {
  std::vector<std::string> texts;
  std::string ref(const std::string& text) {
    auto it = std::ranges::find(texts, text);
    if (it == texts.end()) it = texts.insert(texts.end(), text);
    return fmt::format("[{}]", it - texts.begin() + 1);
  }
};

// Whether a transport's columns include waited/it and calls/it (torch through Flyt).
bool countColumns(const RunResult& run, const TransportRun& t) {
  return run.options.test == Test::kTorch && t.name != "native";
}

std::string valueText(const RunResult& run, const Measurement& m) {
  switch (run.options.test) {
    case Test::kLatency:
      return fmt::format("{} µs", formatValue(m.us));
    case Test::kTorch:
      return fmt::format("{} ms", formatValue(m.us / 1e3));
    case Test::kMemcpy:
      break;
  }
  return fmt::format("{} GB/s", formatValue(m.gbps));
}

// The cells of one transport in one row: the value, then the ratios and counts its columns show.
std::vector<std::string> cells(const RunResult& run, const TransportRun& t, std::size_t i, bool nativeColumn,
                               bool rawColumn, Notes& notes) {
  const Measurement& m = t.measurements[i];
  std::vector<std::string> out;
  if (m.status == Status::kFailed) {
    out.push_back("error " + notes.ref(m.note));
  } else if (m.status == Status::kSkipped) {
    out.emplace_back("skipped");
  } else {
    out.push_back(valueText(run, m));
  }
  const auto ratio = [](std::optional<double> r) { return r ? fmt::format("{:.2f}×", *r) : std::string(); };
  if (nativeColumn) out.push_back(ratio(ratioToNative(run, t.name, i)));
  if (rawColumn) out.push_back(ratio(ratioToRawSocket(run, t.name, i)));
  if (countColumns(run, t)) {
    const bool ok = m.status == Status::kOk;
    const auto count = [&](std::optional<double> c) {
      return !ok || !c ? std::string() : *c == 0 ? std::string("0") : formatValue(*c);
    };
    out.push_back(count(m.waited));
    out.push_back(count(m.calls));
  }
  return out;
}

}  // namespace

std::optional<double> ratioToNative(const RunResult& run, const std::string& transport, std::size_t point) {
  const TransportRun* native = run.transport("native");
  const TransportRun* t = run.transport(transport);
  if (transport == "native" || native == nullptr || t == nullptr) return std::nullopt;
  const Measurement& a = t->measurements[point];
  const Measurement& b = native->measurements[point];
  if (a.status != Status::kOk || b.status != Status::kOk) return std::nullopt;
  const bool timed = run.options.test != Test::kMemcpy;  // time per call or per iteration
  const double base = timed ? b.us : b.gbps;
  if (base <= 0) return std::nullopt;
  return (timed ? a.us : a.gbps) / base;
}

std::optional<double> ratioToRawSocket(const RunResult& run, const std::string& transport,
                                       std::size_t point) {
  const TransportRun* t = run.transport(transport);
  // d2d copies never cross the socket: nothing to compare.
  if (transport != "tcp" || t == nullptr || run.options.test != Test::kMemcpy ||
      run.points[point].direction == "d2d") {
    return std::nullopt;
  }
  auto raw = run.rawSocket.find(run.points[point].bytes);
  const Measurement& m = t->measurements[point];
  if (raw == run.rawSocket.end() || !raw->second.error.empty() || raw->second.gbps <= 0 ||
      m.status != Status::kOk) {
    return std::nullopt;
  }
  return m.gbps / raw->second.gbps;
}

namespace {

std::string footerText(Test test, bool nativeRan) {
  switch (test) {
    case Test::kMemcpy:
      return std::string("GB/s = 1e9 bytes per second.") +
             (nativeRan ? " ×native: throughput relative to NVIDIA's runtime in this run." : "");
    case Test::kLatency:
      return std::string("µs per call.") +
             (nativeRan ? " ×native: time per call relative to NVIDIA's runtime in this run (higher is slower)." : "");
    case Test::kTorch:
      break;
  }
  return std::string("ms per iteration (a batch of 32 images).") +
         (nativeRan ? " ×native: time per iteration relative to NVIDIA's driver in this run (higher is slower)."
                    : "") +
         "\nwaited/it: calls per iteration that waited for the node's reply (round trips); calls/it: calls Flyt "
         "forwarded per iteration.";
}

}  // namespace

std::string renderTable(const RunResult& run) {
  const bool memcpy = run.options.test == Test::kMemcpy;
  const TransportRun* native = run.transport("native");
  const bool nativeRan = native != nullptr && native->status == Status::kOk;
  // A transport that never ran (skipped or failed to start) has its note in the header instead.
  std::vector<const TransportRun*> shown;
  for (const auto& t : run.transports) {
    if (t.status == Status::kOk ||
        std::ranges::any_of(t.measurements, [](auto& m) { return m.status == Status::kOk; })) {
      shown.push_back(&t);
    }
  }
  if (shown.empty() && run.rawSocket.empty())
    return headerLines(run) + "\nNothing was measured (the lines above say why).\n";
  std::vector<std::string> head = memcpy ? std::vector<std::string>{"size", "dir", "memory"}
                                         : std::vector<std::string>{"point", "measures"};
  std::vector<bool> right = memcpy ? std::vector<bool>{true, false, false} : std::vector<bool>{false, false};
  const auto column = [&](std::string title) {
    head.push_back(std::move(title));
    right.push_back(true);
  };
  for (const auto* t : shown) {
    column(t->name);
    if (t->name != "native" && nativeRan) column("×native");
    if (t->name == "tcp" && !run.rawSocket.empty()) column("×raw");
    if (countColumns(run, *t)) {
      column("waited/it");
      column("calls/it");
    }
  }
  if (memcpy && !run.rawSocket.empty()) column("raw socket");
  std::vector<std::vector<std::string>> rows{head};
  Notes notes;
  for (std::size_t i = 0; i < run.points.size(); ++i) {
    const Point& p = run.points[i];
    std::vector<std::string> row = memcpy
                                       ? std::vector<std::string>{sizeLabel(p.bytes), p.direction, p.memory}
                                       : std::vector<std::string>{p.name, pointMeaning(p.name)};
    for (const auto* t : shown) {
      auto more = cells(run, *t, i, t->name != "native" && nativeRan,
                        t->name == "tcp" && !run.rawSocket.empty(), notes);
      row.insert(row.end(), more.begin(), more.end());
    }
    if (memcpy && !run.rawSocket.empty()) {
      auto raw = run.rawSocket.find(p.bytes);
      row.push_back(raw == run.rawSocket.end() || p.direction == "d2d" ? ""
                    : !raw->second.error.empty() ? "error " + notes.ref(raw->second.error)
                                                 : formatValue(raw->second.gbps) + " GB/s");
    }
    rows.push_back(std::move(row));
  }
  std::vector<std::size_t> widths(head.size(), 0);
  for (const auto& row : rows) {
    for (std::size_t c = 0; c < row.size(); ++c) widths[c] = std::max(widths[c], columns(row[c]));
  }
  std::string out = headerLines(run) + "\n";
  for (const auto& row : rows) {
    std::string line = " ";
    for (std::size_t c = 0; c < row.size(); ++c) line += "  " + pad(row[c], widths[c], right[c]);
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  }
  out += "\n";
  out += footerText(run.options.test, nativeRan);
  if (memcpy && !run.rawSocket.empty()) {
    out +=
        "\n×raw: Flyt over TCP relative to the raw loopback socket pair, which carries host copies only "
        "(target ≥ 0.70×).";
  }
  out += "\n";
  for (std::size_t n = 0; n < notes.texts.size(); ++n) out += fmt::format("[{}] {}\n", n + 1, notes.texts[n]);
  if (run.interrupted) out += "The run was interrupted; the points not reached are marked failed.\n";
  return out;
}

// ---- JSON ------------------------------------------------------------------------------------

namespace {

std::string jsonList(const std::vector<std::string>& items, bool quote = true) {
  std::string out = "[";
  for (const auto& item : items) out += (out.size() > 1 ? "," : "") + (quote ? jsonString(item) : item);
  return out + "]";
}

std::string jsonOptional(const std::optional<double>& value) { return value ? jsonNumber(*value) : "null"; }

std::string jsonOptions(const Options& o) {
  std::vector<std::string> sizes;
  for (auto bytes : o.sizes) sizes.push_back(std::to_string(bytes));
  const std::string torch =
      o.test != Test::kTorch
          ? ""
          : fmt::format(R"(,"points":{},"iterations":{},"sync_every":{},"warmup":{},"python":{},"api":{})",
                        jsonList(o.points), o.iterations, o.syncEvery, o.warmup, jsonString(o.python),
                        jsonString(o.api));
  return fmt::format(
      R"({{"sizes":{},"directions":{},"memory":{},"transports":{},"clients":{},"min_time":{},)"
      R"("verify":{},"executor":{},"server_shm":{},"server_tcp":{}{}}})",
      jsonList(sizes, false), jsonList(o.directions), jsonList(o.memories), jsonList(o.transports), o.clients,
      jsonNumber(o.minTime), o.verify ? "true" : "false", jsonString(o.executor),
      o.serverShm.empty() ? "null" : jsonString(o.serverShm),
      o.serverTcp.empty() ? "null" : jsonString(o.serverTcp), torch);
}

std::string jsonResult(const RunResult& run, const TransportRun& t, std::size_t i) {
  const Point& p = run.points[i];
  const Measurement& m = t.measurements[i];
  const bool ok = m.status == Status::kOk || (m.verified == false);
  std::string point = p.name.empty() ? fmt::format(R"("direction":{},"memory":{},"bytes":{})",
                                                   jsonString(p.direction), jsonString(p.memory), p.bytes)
                                     : fmt::format(R"("point":{})", jsonString(p.name));
  std::vector<std::string> clients;
  for (const auto& c : m.clients) clients.push_back(c.dump());
  const auto raw = p.name.empty() ? run.rawSocket.find(p.bytes) : run.rawSocket.end();
  const auto count = [&](std::optional<double> c) { return ok && c ? jsonNumber(*c) : std::string("null"); };
  const std::string torch =
      run.options.test != Test::kTorch
          ? ""
          : fmt::format(
                R"("ms":{},"calls_per_iteration":{},"waited_per_iteration":{},"messages_per_iteration":{},)",
                ok ? jsonNumber(m.us / 1e3) : "null", count(m.calls), count(m.waited), count(m.messages));
  return fmt::format(
      R"({{{},"transport":{},"status":{},"error":{},"gbps":{},"us":{},"iterations":{},"seconds":{},)"
      R"("verified":{},"ratio_native":{},"ratio_raw_socket":{},"raw_socket_gbps":{},{}"clients":{}}})",
      point, jsonString(t.name), jsonString(statusName(m.status)),
      m.note.empty() ? "null" : jsonString(m.note), ok && p.name.empty() ? jsonNumber(m.gbps) : "null",
      ok && !p.name.empty() ? jsonNumber(m.us) : "null", m.iterations, jsonNumber(m.seconds),
      m.verified ? (*m.verified ? "true" : "false") : "null", jsonOptional(ratioToNative(run, t.name, i)),
      jsonOptional(ratioToRawSocket(run, t.name, i)),
      t.name == "tcp" && p.direction != "d2d" && raw != run.rawSocket.end() && raw->second.error.empty()
          ? jsonNumber(raw->second.gbps)
          : "null",
      torch, jsonList(clients, false));
}

}  // namespace

std::string renderJson(const RunResult& run) {
  std::string out = "{\n";
  out +=
      fmt::format(R"(  "tool": "flytbench", "test": {}, "date": {}, "device": {}, "interrupted": {},)",
                  jsonString(testName(run.options.test)), jsonString(run.date),
                  run.device.empty() ? "null" : jsonString(run.device), run.interrupted ? "true" : "false");
  out += fmt::format("\n  \"options\": {},\n", jsonOptions(run.options));
  out += fmt::format("  \"flyt_runtime\": {},\n  \"node\": {},\n", jsonString(run.flytRuntime),
                     run.nodeEndpoints.empty()
                         ? "null"
                         : fmt::format(R"({{"private":true,"executor":{},"endpoints":{}}})",
                                       jsonString(run.options.executor), jsonList(run.nodeEndpoints)));
  out += "  \"transports\": [";
  for (std::size_t n = 0; n < run.transports.size(); ++n) {
    const auto& t = run.transports[n];
    std::vector<std::string> infos;
    for (const auto& info : t.infos) infos.push_back(info.dump());
    out += fmt::format(
        R"({}{}    {{"name":{},"status":{},"note":{},"server":{},"cudart":{},"device":{},"infos":{}}})",
        n ? "," : "", "\n", jsonString(t.name), jsonString(statusName(t.status)),
        t.note.empty() ? "null" : jsonString(t.note), t.server.empty() ? "null" : jsonString(t.server),
        t.cudart.empty() ? "null" : jsonString(t.cudart), t.device.empty() ? "null" : jsonString(t.device),
        jsonList(infos, false));
  }
  out += "\n  ],\n  \"raw_socket\": [";
  bool first = true;
  for (const auto& [bytes, r] : run.rawSocket) {
    out += fmt::format(R"({}{}    {{"bytes":{},"gbps":{},"iterations":{},"seconds":{},"error":{}}})",
                       first ? "" : ",", "\n", bytes, r.error.empty() ? jsonNumber(r.gbps) : "null",
                       r.iterations, jsonNumber(r.seconds), r.error.empty() ? "null" : jsonString(r.error));
    first = false;
  }
  out += "\n  ],\n  \"results\": [";
  first = true;
  for (std::size_t i = 0; i < run.points.size(); ++i) {
    for (const auto& t : run.transports) {
      out += (first ? "\n    " : ",\n    ") + jsonResult(run, t, i);
      first = false;
    }
  }
  return out + "\n  ]\n}\n";
}

// ---- CSV -------------------------------------------------------------------------------------

namespace {

std::string csvField(const std::string& text) {
  if (text.find_first_of(",\"\n") == std::string::npos) return text;
  std::string out = "\"";
  for (char c : text) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

std::string csvNumber(const std::optional<double>& value) { return value ? fmt::format("{}", *value) : ""; }

}  // namespace

std::string renderCsv(const RunResult& run) {
  const bool memcpy = run.options.test == Test::kMemcpy;
  const bool torch = run.options.test == Test::kTorch;
  std::string out =
      "test,point,direction,memory,bytes,transport,clients,status,gbps,us,ratio_native,ratio_raw_socket,"
      "raw_socket_gbps,iterations,seconds,verified,";
  out += torch ? "ms,calls_per_iteration,waited_per_iteration,messages_per_iteration,note\n" : "note\n";
  for (std::size_t i = 0; i < run.points.size(); ++i) {
    const Point& p = run.points[i];
    for (const auto& t : run.transports) {
      const Measurement& m = t.measurements[i];
      const bool measured = m.status == Status::kOk || m.verified == false;
      const auto raw = memcpy ? run.rawSocket.find(p.bytes) : run.rawSocket.end();
      const bool rawShown =
          t.name == "tcp" && p.direction != "d2d" && raw != run.rawSocket.end() && raw->second.error.empty();
      const auto count = [&](std::optional<double> c) { return csvNumber(measured ? c : std::nullopt); };
      out += fmt::format(
          "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},", testName(run.options.test),
          csvField(memcpy ? pointLabel(p) : p.name), p.direction, p.memory,
          memcpy ? std::to_string(p.bytes) : "", t.name, run.options.clients, statusName(m.status),
          csvNumber(measured && memcpy ? std::optional(m.gbps) : std::nullopt),
          csvNumber(measured && !memcpy ? std::optional(m.us) : std::nullopt),
          csvNumber(ratioToNative(run, t.name, i)), csvNumber(ratioToRawSocket(run, t.name, i)),
          csvNumber(rawShown ? std::optional(raw->second.gbps) : std::nullopt),
          measured ? std::to_string(m.iterations) : "",
          csvNumber(measured ? std::optional(m.seconds) : std::nullopt),
          m.verified ? (*m.verified ? "true" : "false") : "");
      if (torch) {
        out += fmt::format("{},{},{},{},", count(measured ? std::optional(m.us / 1e3) : std::nullopt),
                           count(m.calls), count(m.waited), count(m.messages));
      }
      out += csvField(m.note) + "\n";
    }
  }
  return out;
}

}  // namespace flyt::flytbench
