#include "svg_plot.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <utility>

namespace flyt::flytbench {

namespace {

constexpr double kPanelWidth = 440, kPanelHeight = 300;
constexpr double kLeft = 62, kRight = 16, kTop = 34, kBottom = 46;  // plot area inside a panel
constexpr double kTitleHeight = 84;                                 // title, subtitle and legend
constexpr int kPanelsPerRow = 2;

struct Series {
  std::string name;
  std::string color;
  bool dashed = false;
  std::vector<std::pair<std::uint64_t, double>> points;  // bytes, GB/s
};

std::string escaped(std::string_view text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string colorOf(const std::string& transport) {
  if (transport == "native") return "#1f77b4";
  if (transport == "shm") return "#2ca02c";
  if (transport == "tcp") return "#d62728";
  return "#7f7f7f";
}

std::string shortSize(std::uint64_t bytes) {
  constexpr const char* kUnits[] = {"", "K", "M", "G"};
  int unit = 0;
  while (unit < 3 && bytes >= 1024 && bytes % 1024 == 0) {
    bytes /= 1024;
    ++unit;
  }
  return fmt::format("{}{}", bytes, unit == 0 ? "B" : kUnits[unit]);
}

// The smallest 1, 2, 2.5 or 5 times a power of ten that makes about five steps up to `top`.
double niceStep(double top) {
  const double raw = top / 5;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0}) {
    if (m * magnitude >= raw) return m * magnitude;
  }
  return 10 * magnitude;
}

std::vector<Series> seriesOf(const RunResult& run, const std::string& direction, const std::string& memory) {
  std::vector<Series> all;
  for (const auto& t : run.transports) {
    Series s{t.name, colorOf(t.name), false, {}};
    for (std::size_t i = 0; i < run.points.size(); ++i) {
      const Point& p = run.points[i];
      const Measurement& m = t.measurements[i];
      if (p.direction == direction && p.memory == memory && m.status == Status::kOk)
        s.points.emplace_back(p.bytes, m.gbps);
    }
    if (!s.points.empty()) all.push_back(std::move(s));
  }
  const bool tcp = std::ranges::any_of(all, [](const Series& s) { return s.name == "tcp"; });
  if (tcp && direction != "d2d") {
    Series raw{"raw socket", colorOf("raw"), true, {}};
    for (const auto& [bytes, r] : run.rawSocket) {
      if (r.error.empty()) raw.points.emplace_back(bytes, r.gbps);
    }
    if (!raw.points.empty()) all.push_back(std::move(raw));
  }
  return all;
}

std::string panel(const RunResult& run, const std::string& direction, const std::string& memory, double x0,
                  double y0) {
  const auto series = seriesOf(run, direction, memory);
  const double width = kPanelWidth - kLeft - kRight, height = kPanelHeight - kTop - kBottom;
  double lo = std::log2(double(run.options.sizes.front())), hi = lo, top = 0;
  for (auto bytes : run.options.sizes) {
    lo = std::min(lo, std::log2(double(bytes)));
    hi = std::max(hi, std::log2(double(bytes)));
  }
  for (const auto& s : series) {
    for (const auto& [bytes, gbps] : s.points) top = std::max(top, gbps);
  }
  // Half a doubling of room on each side, so that the first and last markers clear the frame.
  lo -= 0.5;
  hi += 0.5;
  const double step = niceStep(top > 0 ? top * 1.05 : 1);
  top = step * std::ceil((top > 0 ? top * 1.05 : 1) / step);
  const auto px = [&](double bytes) { return kLeft + (std::log2(bytes) - lo) / (hi - lo) * width; };
  const auto py = [&](double gbps) { return kTop + height - gbps / top * height; };

  std::string out = fmt::format(
      R"svg(<g class="panel" data-direction="{}" data-memory="{}" transform="translate({},{})">)svg",
      escaped(direction), escaped(memory), x0, y0);
  out += fmt::format(
      "\n<text x=\"{}\" y=\"20\" text-anchor=\"middle\" font-weight=\"bold\">{}</text>", kLeft + width / 2,
      escaped(direction == "d2d" ? "d2d (device to device)" : direction + ", " + memory + " host memory"));
  for (double v = 0; v <= top + step / 2; v += step) {  // y grid and labels
    out += fmt::format(
        "\n<line x1=\"{0}\" x2=\"{1}\" y1=\"{2:.1f}\" y2=\"{2:.1f}\" stroke=\"#e0e0e0\"/>"
        "<text x=\"{3}\" y=\"{4:.1f}\" text-anchor=\"end\">{5}</text>",
        kLeft, kLeft + width, py(v), kLeft - 6, py(v) + 4, fmt::format("{:g}", v));
  }
  for (auto bytes : run.options.sizes) {  // x ticks at the measured sizes
    out += fmt::format(
        "\n<line x1=\"{0:.1f}\" x2=\"{0:.1f}\" y1=\"{1}\" y2=\"{2}\" stroke=\"#333\"/>"
        "<text x=\"{0:.1f}\" y=\"{3}\" text-anchor=\"middle\">{4}</text>",
        px(double(bytes)), kTop + height, kTop + height + 5, kTop + height + 18, shortSize(bytes));
  }
  out += fmt::format("\n<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#333\"/>",
                     kLeft, kTop, width, height);
  out += fmt::format("\n<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">copy size (log2 scale)</text>",
                     kLeft + width / 2, kPanelHeight - 8);
  out += fmt::format("\n<text transform=\"translate(16,{}) rotate(-90)\" text-anchor=\"middle\">GB/s</text>",
                     kTop + height / 2);
  for (const auto& s : series) {
    std::string points;
    for (const auto& [bytes, gbps] : s.points)
      points += fmt::format("{}{:.1f},{:.1f}", points.empty() ? "" : " ", px(double(bytes)), py(gbps));
    out += fmt::format(
        "\n<polyline class=\"series\" data-transport=\"{}\" points=\"{}\" fill=\"none\" stroke=\"{}\" "
        "stroke-width=\"2\"{}/>",
        escaped(s.name), points, s.color, s.dashed ? " stroke-dasharray=\"6,4\"" : "");
    for (const auto& [bytes, gbps] : s.points) {
      out += fmt::format(
          "\n<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"3.5\" fill=\"{}\"><title>{} {}: {} "
          "GB/s</title></circle>",
          px(double(bytes)), py(gbps), s.color, escaped(s.name), sizeLabel(bytes), formatValue(gbps));
    }
  }
  return out + "\n</g>\n";
}

}  // namespace

std::string renderSvg(const RunResult& run) {
  std::vector<std::pair<std::string, std::string>> panels;  // (direction, memory), in point order
  for (const auto& p : run.points) {
    if (std::ranges::find(panels, std::pair{p.direction, p.memory}) == panels.end())
      panels.emplace_back(p.direction, p.memory);
  }
  const int perRow = std::min<int>(kPanelsPerRow, std::max<int>(1, int(panels.size())));
  const int rows = std::max(1, int((panels.size() + perRow - 1) / perRow));
  const double width = perRow * kPanelWidth, height = kTitleHeight + rows * kPanelHeight;
  std::string out = fmt::format(
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n",
      width, height);
  const std::string title =
      fmt::format("flytbench memcpy: {}", run.device.empty() ? "no device" : run.device);
  const std::string subtitle =
      fmt::format("cudaMemcpy throughput, {} client{}, min-time {} s per point, {}", run.options.clients,
                  run.options.clients == 1 ? "" : "s (aggregate)", run.options.minTime, run.date);
  out += fmt::format("<title>{}</title>\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
                     escaped(title));
  out += fmt::format(
      "<text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"16\" font-weight=\"bold\">{}</text>\n",
      width / 2, escaped(title));
  out += fmt::format("<text x=\"{}\" y=\"44\" text-anchor=\"middle\" fill=\"#555\">{}</text>\n", width / 2,
                     escaped(subtitle));
  // Legend: the transports with a measured point, and the raw socket where it was measured.
  std::vector<std::pair<std::string, bool>> legend;
  for (const auto& t : run.transports) {
    if (std::ranges::any_of(t.measurements, [](const Measurement& m) { return m.status == Status::kOk; })) {
      legend.emplace_back(t.name, false);
    }
  }
  if (!run.rawSocket.empty()) legend.emplace_back("raw socket", true);
  const auto entryWidth = [](const std::string& name) { return 44 + 8 * double(name.size()); };
  double x = width / 2;
  for (const auto& entry : legend) x -= entryWidth(entry.first) / 2;
  for (const auto& [name, dashed] : legend) {
    out += fmt::format(
        "<g class=\"legend\"><line x1=\"{0}\" x2=\"{1}\" y1=\"64\" y2=\"64\" stroke=\"{2}\" "
        "stroke-width=\"2\"{3}/>"
        "<circle cx=\"{4}\" cy=\"64\" r=\"3.5\" fill=\"{2}\"/><text x=\"{5}\" y=\"68\">{6}</text></g>\n",
        x, x + 28, colorOf(dashed ? "raw" : name), dashed ? " stroke-dasharray=\"6,4\"" : "", x + 14, x + 34,
        escaped(name));
    x += entryWidth(name);
  }
  for (std::size_t i = 0; i < panels.size(); ++i) {
    out += panel(run, panels[i].first, panels[i].second, double(i % perRow) * kPanelWidth,
                 kTitleHeight + double(i / perRow) * kPanelHeight);
  }
  return out + "</svg>\n";
}

}  // namespace flyt::flytbench
