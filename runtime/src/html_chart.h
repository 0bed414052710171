// The pieces of the self-contained HTML pages (`rsi report`, `rsi compare --html`): escaping,
// number formatting, a chart's plot area with axes and ticks (Plot), legends, the <figure> every
// chart sits in (class "chart", data-chart NAME, data points of class "mark": the browser tests count
// them), the shared style sheet and an atomic page write. Inline SVG only: no script, no URL.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace rsi::runtime::html {

inline std::string html_escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

inline std::string num(double v, int precision = 4) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", precision, v);
  return buf;
}

// Coordinates in SVG user units: 1 decimal is finer than a screen pixel.
inline std::string px(double v) { return num(v, 1); }

inline std::string signed_num(double v, int precision = 4) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%+.*f", precision, v);
  return buf;
}

// "1.2k", "35k", "1.1M": parameter counts on a log axis.
inline std::string short_count(double v) {
  char buf[32];
  if (v >= 1e6)
    std::snprintf(buf, sizeof buf, "%gM", std::round(v / 1e5) / 10);
  else if (v >= 1e3)
    std::snprintf(buf, sizeof buf, "%gk", std::round(v / 1e2) / 10);
  else
    std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

// Ticks at 1, 2 or 5 times a power of ten, about `count` of them over [lo, hi].
inline std::vector<double> nice_ticks(double lo, double hi, int count, bool integers) {
  const double raw = (hi - lo) / std::max(count, 1);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  if (integers) step = std::max(1.0, std::round(step));
  std::vector<double> ticks;
  for (double t = std::ceil(lo / step - 1e-9) * step; t <= hi + step * 1e-9; t += step) ticks.push_back(t);
  return ticks;
}

inline constexpr const char* kPalette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

// A lighter-to-darker blue by generation, for scatter points.
inline std::string generation_color(int generation, int last) {
  const double t = last > 0 ? static_cast<double>(generation) / last : 1.0;
  char buf[16];
  std::snprintf(buf, sizeof buf, "#%02x%02x%02x", static_cast<int>(190 - 160 * t), static_cast<int>(215 - 130 * t),
                static_cast<int>(240 - 60 * t));
  return buf;
}

struct LegendEntry {
  std::string label, color;
  bool dashed = false;
};

// One chart's SVG: a plot area with axes, ticks and grid, and marks added by the caller.
class Plot {
 public:
  static constexpr double kWidth = 640, kHeight = 300, kLeft = 62, kRight = 16, kTop = 14, kBottom = 46;

  Plot(double x0, double x1, double y0, double y1, bool log_x = false) : log_x_(log_x) {
    if (log_x_) {
      x0 = std::log10(std::max(x0, 1.0));
      x1 = std::log10(std::max(x1, 1.0));
    }
    if (!(x1 > x0)) x0 -= 0.5, x1 += 0.5;
    if (!(y1 > y0)) {
      const double pad = std::max(std::abs(y0) * 0.05, 0.01);
      y0 -= pad, y1 += pad;
    }
    x0_ = x0, x1_ = x1, y0_ = y0, y1_ = y1;
  }

  double x(double v) const {
    const double t = ((log_x_ ? std::log10(std::max(v, 1.0)) : v) - x0_) / (x1_ - x0_);
    return kLeft + t * (kWidth - kLeft - kRight);
  }
  double y(double v) const { return kHeight - kBottom - (v - y0_) / (y1_ - y0_) * (kHeight - kTop - kBottom); }
  double y_min() const { return y0_; }

  // Grid, tick labels and axis titles.
  std::string axes(const std::string& x_title, const std::string& y_title, bool integer_x) const {
    std::ostringstream s;
    const double bottom = kHeight - kBottom, right = kWidth - kRight;
    for (double t : nice_ticks(y0_, y1_, 5, false)) {
      s << "<line class=\"grid\" x1=\"" << px(kLeft) << "\" x2=\"" << px(right) << "\" y1=\"" << px(y(t)) << "\" y2=\""
        << px(y(t)) << "\"/><text class=\"tick\" x=\"" << px(kLeft - 6) << "\" y=\"" << px(y(t) + 4)
        << "\" text-anchor=\"end\">" << tick_label(t) << "</text>";
    }
    std::vector<std::pair<double, std::string>> xt;
    if (log_x_) {
      const bool fine = x1_ - x0_ < 2.5;  // under 2.5 decades, 2 and 5 times each power too
      for (int e = static_cast<int>(std::floor(x0_)); e <= static_cast<int>(std::ceil(x1_)); ++e)
        for (double m : fine ? std::vector<double>{1, 2, 5} : std::vector<double>{1}) {
          const double v = m * std::pow(10.0, e);
          if (std::log10(v) >= x0_ - 1e-9 && std::log10(v) <= x1_ + 1e-9) xt.emplace_back(v, short_count(v));
        }
    } else {
      for (double t : nice_ticks(x0_, x1_, 8, integer_x)) {
        if (std::abs(t) < 1e-9) t = 0;  // never "-0"
        xt.emplace_back(t, integer_x ? num(t, 0) : tick_label(t));
      }
    }
    for (const auto& [v, label] : xt)
      s << "<line class=\"grid\" x1=\"" << px(x(v)) << "\" x2=\"" << px(x(v)) << "\" y1=\"" << px(kTop) << "\" y2=\""
        << px(bottom) << "\"/><text class=\"tick\" x=\"" << px(x(v)) << "\" y=\"" << px(bottom + 16)
        << "\" text-anchor=\"middle\">" << html_escape(label) << "</text>";
    s << "<line class=\"axis\" x1=\"" << px(kLeft) << "\" x2=\"" << px(right) << "\" y1=\"" << px(bottom) << "\" y2=\""
      << px(bottom) << "\"/><line class=\"axis\" x1=\"" << px(kLeft) << "\" x2=\"" << px(kLeft) << "\" y1=\""
      << px(kTop) << "\" y2=\"" << px(bottom) << "\"/>";
    s << "<text class=\"title\" x=\"" << px((kLeft + right) / 2) << "\" y=\"" << px(kHeight - 6)
      << "\" text-anchor=\"middle\">" << html_escape(x_title) << "</text>";
    s << "<text class=\"title\" transform=\"translate(14," << px((kTop + bottom) / 2)
      << ") rotate(-90)\" text-anchor=\"middle\">" << html_escape(y_title) << "</text>";
    return s.str();
  }

  // A polyline through the points with a circle mark (and tooltip) on each.
  std::string line(const std::vector<std::pair<double, double>>& points, const std::string& color, bool dashed,
                   const std::string& name, int* marks) const {
    std::ostringstream s;
    s << "<polyline fill=\"none\" stroke=\"" << color << "\" stroke-width=\"2\""
      << (dashed ? " stroke-dasharray=\"6 4\"" : "") << " points=\"";
    for (const auto& [a, b] : points) s << px(x(a)) << "," << px(y(b)) << " ";
    s << "\"/>";
    for (const auto& [a, b] : points) {
      s << "<circle class=\"mark\" cx=\"" << px(x(a)) << "\" cy=\"" << px(y(b)) << "\" r=\"3\" fill=\"" << color
        << "\"><title>" << html_escape(name) << ": generation " << num(a, 0) << ", " << num(b) << "</title></circle>";
      ++*marks;
    }
    return s.str();
  }

  // A filled band between two curves over the same x (lower and upper), drawn under the lines.
  std::string band(const std::vector<std::pair<double, double>>& lower,
                   const std::vector<std::pair<double, double>>& upper, const std::string& color) const {
    std::ostringstream s;
    s << "<polygon class=\"band\" fill=\"" << color << "\" fill-opacity=\"0.18\" stroke=\"none\" points=\"";
    for (const auto& [a, b] : lower) s << px(x(a)) << "," << px(y(b)) << " ";
    for (auto it = upper.rbegin(); it != upper.rend(); ++it) s << px(x(it->first)) << "," << px(y(it->second)) << " ";
    s << "\"/>";
    return s.str();
  }

 private:
  std::string tick_label(double t) const {
    const double span = y1_ - y0_;
    const int precision = span >= 5 ? 0 : span >= 0.5 ? 1 : span >= 0.05 ? 2 : span >= 0.005 ? 3 : 4;
    return num(std::abs(t) < 1e-12 ? 0.0 : t, precision);
  }

  bool log_x_;
  double x0_ = 0, x1_ = 1, y0_ = 0, y1_ = 1;
};

inline std::string svg_open(double height = Plot::kHeight) {
  return "<svg viewBox=\"0 0 " + px(Plot::kWidth) + " " + px(height) +
         "\" role=\"img\" preserveAspectRatio=\"xMidYMid meet\">";
}

inline std::string legend_html(const std::vector<LegendEntry>& entries) {
  std::string s = "<div class=\"legend\">";
  for (const auto& e : entries)
    s += "<span><i style=\"border-top:3px " + std::string(e.dashed ? "dashed " : "solid ") + e.color + "\"></i>" +
         html_escape(e.label) + "</span>";
  return s + "</div>";
}

// A chart's figure. `marks` is the number of data marks drawn: 0 shows why the chart is empty.
inline std::string figure(const std::string& name, const std::string& title, const std::string& caption,
                   const std::string& svg, int marks, const std::string& legend = "",
                   const std::string& empty_reason = "no data") {
  std::ostringstream s;
  s << "<figure class=\"chart\" data-chart=\"" << name << "\" data-marks=\"" << marks << "\"><h3>" << html_escape(title)
    << "</h3>";
  if (marks > 0)
    s << svg << legend;
  else
    s << "<p class=\"empty\">" << html_escape(empty_reason) << "</p>";
  s << "<figcaption>" << caption << "</figcaption></figure>\n";
  return s.str();
}

// The range of the values, padded by 5% on each side (and kept within [lo_limit, hi_limit]).
inline std::pair<double, double> padded_range(const std::vector<double>& values, double lo_limit, double hi_limit) {
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (double v : values)
    if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
  if (!std::isfinite(lo)) return {0, 1};
  const double pad = std::max((hi - lo) * 0.05, 1e-3);
  return {std::max(lo - pad, lo_limit), std::min(hi + pad, hi_limit)};
}

inline constexpr const char* kStyle = R"(
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:24px auto;max-width:1340px;color:#222;
padding:0 16px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:0 0 6px}.sub{color:#666;margin:0 0 16px}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 14px;min-width:150px}
.card b{display:block;font-size:20px}.card span{color:#666;font-size:12px}
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(560px,1fr));gap:16px}
figure.chart{margin:0;border:1px solid #e3e3e3;border-radius:6px;padding:12px}figure.wide{grid-column:1/-1}
figure svg{width:100%;height:auto;display:block}figcaption{color:#555;font-size:12px;margin-top:6px}
.scroll{overflow:auto;max-height:720px}.scroll svg{width:auto;max-width:none}
.empty{color:#a33;font-style:italic}
text{font-size:11px;fill:#333}text.title{font-size:12px;fill:#222}text.cell{font-size:9px;fill:#111}
line.grid{stroke:#eee}line.axis{stroke:#888}line.zero{stroke:#999;stroke-dasharray:2 3}
.legend{font-size:12px;display:flex;flex-wrap:wrap;gap:14px;margin-top:4px}
.legend i{display:inline-block;width:22px;height:0;margin-right:5px;vertical-align:middle}
table{border-collapse:collapse;font-size:12px}td,th{border-bottom:1px solid #eee;padding:3px 8px;text-align:right}
th{background:#f6f6f6}td.l,th.l{text-align:left}pre{background:#f6f6f6;padding:10px;overflow:auto;font-size:12px}
details{margin:8px 0}summary{cursor:pointer;font-weight:600}
)";

// Written next to its final name and renamed: a reader never sees half a page.
inline bool write_page(const std::string& page, const std::string& out_path, const char* command) {
  const std::filesystem::path out(out_path);
  const std::filesystem::path tmp = out.string() + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary);
    f << page;
    f.close();
    if (!f) {
      std::error_code ec;
      std::filesystem::remove(tmp, ec);
      std::fprintf(stderr, "rsi %s: cannot write %s (does the directory exist and is it writable?)\n",
                   command, out_path.c_str());
      return false;
    }
  }
  std::filesystem::rename(tmp, out);
  return true;
}

}  // namespace rsi::runtime::html
