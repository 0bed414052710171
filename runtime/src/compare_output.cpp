// rsi compare's output: a table per arm on stdout, the same figures as JSON (--json), and one
// self-contained HTML page (--html) with the table and the arms' capability curves overlaid (median
// over seeds, min-max band), drawn with the report's helpers (html_chart.h).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <sstream>

#include "compare.h"
#include "html_chart.h"
#include "rsi/monitoring/exporter.h"

namespace rsi::runtime {

namespace {

// `precision` decimals, or with a negative precision that many significant digits (seconds, whose
// scale goes from the surrogate's milliseconds to days).
std::string fixed(double v, int precision, bool sign = false) {
  if (!std::isfinite(v)) return "n/a";
  char buf[64];
  if (precision < 0)
    std::snprintf(buf, sizeof buf, sign ? "%+.*g" : "%.*g", -precision, v);
  else
    std::snprintf(buf, sizeof buf, sign ? "%+.*f" : "%.*f", precision, v);
  return buf;
}

std::string interval(const Estimate& e, int precision, bool sign = false) {
  std::string s = "[";
  s.append(fixed(e.low, precision, sign)).append(", ").append(fixed(e.high, precision, sign)).append("]");
  return s;
}

// "n" of a metric: seeds with a value; for a "to reach" figure, how many of the runs reached it.
std::string count_text(const Metric& m, const Estimate& e, std::size_t runs) {
  return m.threshold ? std::to_string(e.n) + "/" + std::to_string(runs) : std::to_string(e.n);
}

std::string seeds_text(const ComparedArm& arm) {
  std::string s;
  for (const auto& r : arm.runs) {
    if (!s.empty()) s += ' ';
    s += std::to_string(r.seed);
  }
  return s;
}

std::string jnum(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.10g", v);
  return buf;
}

std::string jopt(const std::optional<double>& v) { return v ? jnum(*v) : "null"; }

std::string json_estimate(const Estimate& e) {
  return "{\"n\": " + std::to_string(e.n) + ", \"mean\": " + jnum(e.mean) + ", \"ci\": [" + jnum(e.low) + ", " +
         jnum(e.high) + "]}";
}

std::string json_run(const ComparedRun& r, const std::vector<double>& thresholds) {
  std::ostringstream s;
  s << "{\"seed\": " << r.seed << ", \"dir\": " << monitoring::json_string(r.dir)
    << ", \"generations\": " << r.generations.size() << ", \"final_test\": " << jnum(r.final_test)
    << ", \"capability_area\": " << jnum(r.area) << ", \"design_skill_slope\": " << jopt(r.design_skill_slope)
    << ", \"diversity\": " << jnum(r.diversity) << ", \"predictor_rank_correlation\": " << jopt(r.predictor)
    << ", \"model_seconds\": " << jnum(r.model_seconds) << ", \"wall_seconds\": " << jnum(r.wall_seconds)
    << ", \"capability\": [";
  for (std::size_t i = 0; i < r.capability.size(); ++i) s << (i ? ", " : "") << jnum(r.capability[i]);
  s << "], \"reached\": {";
  for (std::size_t t = 0; t < thresholds.size(); ++t) {
    s << (t ? ", " : "") << monitoring::json_string(threshold_text(thresholds[t])) << ": ";
    if (const auto& x = r.reached[t])
      s << "{\"generation\": " << x->generation << ", \"model_seconds\": " << jnum(x->model_seconds)
        << ", \"wall_seconds\": " << jnum(x->wall_seconds) << "}";
    else
      s << "null";
  }
  s << "}}";
  return s.str();
}

// Per generation over an arm's runs: median, min and max of the capability (runs that have it).
struct Band {
  std::vector<std::pair<double, double>> median, low, high;
};
Band capability_band(const ComparedArm& arm) {
  std::map<int, std::vector<double>> by_generation;
  for (const auto& r : arm.runs)
    for (std::size_t i = 0; i < r.generations.size(); ++i) by_generation[r.generations[i]].push_back(r.capability[i]);
  Band b;
  for (auto& [g, values] : by_generation) {
    std::sort(values.begin(), values.end());
    const std::size_t n = values.size();
    const double median = n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
    b.median.emplace_back(g, median);
    b.low.emplace_back(g, values.front());
    b.high.emplace_back(g, values.back());
  }
  return b;
}

std::string capability_figure(const Comparison& c) {
  using namespace html;  // NOLINT(google-build-using-namespace)
  std::vector<Band> bands;
  std::vector<double> all;
  double g0 = 1e300, g1 = -1e300;
  for (const auto& arm : c.arms) {
    bands.push_back(capability_band(arm));
    for (const auto& [g, v] : bands.back().low) all.push_back(v), g0 = std::min(g0, g), g1 = std::max(g1, g);
    for (const auto& [g, v] : bands.back().high) all.push_back(v);
  }
  int marks = 0;
  std::string svg;
  std::vector<LegendEntry> legend;
  if (!all.empty()) {
    const auto [lo, hi] = padded_range(all, 0.0, 1.0);
    const Plot p(g0, g1, lo, hi);
    svg = svg_open() + p.axes("generation", "hidden test of the best by validation", true);
    for (std::size_t a = 0; a < bands.size(); ++a) svg += p.band(bands[a].low, bands[a].high, kPalette[a % 10]);
    for (double t : c.thresholds)
      if (t > lo && t < hi)
        svg += "<line class=\"zero\" x1=\"" + px(Plot::kLeft) + "\" x2=\"" + px(Plot::kWidth - Plot::kRight) +
               "\" y1=\"" + px(p.y(t)) + "\" y2=\"" + px(p.y(t)) + "\"><title>threshold " + threshold_text(t) +
               "</title></line>";
    for (std::size_t a = 0; a < bands.size(); ++a) {
      svg += p.line(bands[a].median, kPalette[a % 10], false, c.arms[a].name + " (median)", &marks);
      legend.push_back({c.arms[a].name + (a == c.baseline ? " (baseline)" : ""), kPalette[a % 10]});
    }
    svg += "</svg>";
  }
  return figure("capability", "Capability per generation, by arm",
                "Line: the median over seeds of the hidden-test accuracy of each run's best-by-validation model; "
                "band: the lowest to the highest seed. Dotted: the thresholds.",
                svg, marks, legend_html(legend), "no generations");
}

void html_table(std::ostringstream& h, const Comparison& c) {
  using html::html_escape;
  h << "<table><tr><th class=\"l\">arm</th><th class=\"l\">metric</th><th>n</th><th>mean</th><th>95% CI</th>"
       "<th>vs baseline</th><th>95% CI</th><th>won/lost/tied</th></tr>\n";
  for (std::size_t a = 0; a < c.arms.size(); ++a) {
    const ComparedArm& arm = c.arms[a];
    for (std::size_t k = 0; k < c.metrics.size(); ++k) {
      const Metric& m = c.metrics[k];
      const Estimate& e = c.summaries[a].estimates[k];
      const PairedComparison& p = c.summaries[a].paired[k];
      h << "<tr data-arm=\"" << html_escape(arm.name) << "\"><td class=\"l\">"
        << (k == 0 ? html_escape(arm.name) + (a == c.baseline ? " (baseline)" : "") : "") << "</td><td class=\"l\">"
        << html_escape(m.label) << "</td><td>" << count_text(m, e, arm.runs.size()) << "</td><td>"
        << (m.threshold && e.n == 0 ? "not reached" : fixed(e.mean, m.precision)) << "</td><td>"
        << (e.n ? interval(e, m.precision) : "") << "</td>";
      if (a == c.baseline || p.difference.n == 0)
        h << "<td></td><td></td><td></td></tr>\n";
      else
        h << "<td>" << fixed(p.difference.mean, m.precision, true) << "</td><td>"
          << interval(p.difference, m.precision, true) << "</td><td>" << p.wins << "/" << p.losses << "/" << p.ties
          << "</td></tr>\n";
    }
  }
  h << "</table>\n";
}

}  // namespace

std::string comparison_text(const Comparison& c) {
  std::ostringstream o;
  std::string thresholds;
  for (double t : c.thresholds) thresholds += (thresholds.empty() ? "" : ", ") + threshold_text(t);
  o << "rsi compare: " << c.arms.size() << " arm(s), baseline " << c.arms[c.baseline].name
    << "; means over seeds with 95% bootstrap intervals (" << kBootstrapResamples << " resamples, seed "
    << kBootstrapSeed << "); thresholds " << (thresholds.empty() ? "none" : thresholds)
    << " of the hidden-test accuracy of the best-by-validation model\n";
  char line[256];
  for (std::size_t a = 0; a < c.arms.size(); ++a) {
    const ComparedArm& arm = c.arms[a];
    o << "\narm " << arm.name << (a == c.baseline ? " (baseline)" : "") << ": " << arm.runs.size() << " run(s), seeds "
      << seeds_text(arm) << " (" << arm.source << ")\n";
    for (const auto& m : arm.missing) o << "  (no generation yet, left out: " << m << ")\n";
    std::snprintf(line, sizeof line, "  %-52s %5s %12s  %-24s", "metric", "n", "mean", "95% CI");
    o << line << (a == c.baseline ? "" : "  vs baseline (paired by seed)   95% CI                 won/lost/tied")
      << "\n";
    for (std::size_t k = 0; k < c.metrics.size(); ++k) {
      const Metric& m = c.metrics[k];
      const Estimate& e = c.summaries[a].estimates[k];
      std::snprintf(line, sizeof line, "  %-52s %5s %12s  %-24s", m.label.c_str(),
                    count_text(m, e, arm.runs.size()).c_str(),
                    (m.threshold && e.n == 0 ? "not reached" : fixed(e.mean, m.precision)).c_str(),
                    e.n ? interval(e, m.precision).c_str() : "");
      o << line;
      const PairedComparison& p = c.summaries[a].paired[k];
      if (a != c.baseline && p.difference.n > 0) {
        std::snprintf(line, sizeof line, "  %-29s  %-22s %d/%d/%d", fixed(p.difference.mean, m.precision, true).c_str(),
                      interval(p.difference, m.precision, true).c_str(), p.wins, p.losses, p.ties);
        o << line;
      }
      o << "\n";
    }
  }
  std::string text = o.str();
  for (std::size_t at; (at = text.find(" \n")) != std::string::npos;) text.erase(at, 1);  // trailing blanks
  return text;
}

std::string comparison_json(const Comparison& c) {
  using monitoring::json_string;
  std::ostringstream s;
  s << "{\"baseline\": " << json_string(c.arms[c.baseline].name) << ", \"thresholds\": [";
  for (std::size_t t = 0; t < c.thresholds.size(); ++t) s << (t ? ", " : "") << jnum(c.thresholds[t]);
  s << "], \"bootstrap\": {\"resamples\": " << kBootstrapResamples << ", \"seed\": " << kBootstrapSeed
    << ", \"confidence\": 0.95}, \"arms\": [";
  for (std::size_t a = 0; a < c.arms.size(); ++a) {
    const ComparedArm& arm = c.arms[a];
    s << (a ? ", " : "") << "{\"name\": " << json_string(arm.name) << ", \"source\": " << json_string(arm.source)
      << ", \"baseline\": " << (a == c.baseline ? "true" : "false") << ", \"runs\": [";
    for (std::size_t r = 0; r < arm.runs.size(); ++r) s << (r ? ", " : "") << json_run(arm.runs[r], c.thresholds);
    s << "], \"missing\": [";
    for (std::size_t r = 0; r < arm.missing.size(); ++r) s << (r ? ", " : "") << json_string(arm.missing[r]);
    s << "], \"metrics\": {";
    for (std::size_t k = 0; k < c.metrics.size(); ++k)
      s << (k ? ", " : "") << json_string(c.metrics[k].key) << ": " << json_estimate(c.summaries[a].estimates[k]);
    s << "}, \"vs_baseline\": {";
    for (std::size_t k = 0; k < c.metrics.size() && a != c.baseline; ++k) {
      const PairedComparison& p = c.summaries[a].paired[k];
      s << (k ? ", " : "") << json_string(c.metrics[k].key) << ": {\"difference\": " << json_estimate(p.difference)
        << ", \"wins\": " << p.wins << ", \"losses\": " << p.losses << ", \"ties\": " << p.ties
        << ", \"higher_is_better\": " << (c.metrics[k].higher_is_better ? "true" : "false") << "}";
    }
    s << "}}";
  }
  s << "]}\n";
  return s.str();
}

std::string comparison_html(const Comparison& c) {
  using html::html_escape;
  std::ostringstream h;
  std::string names;
  for (const auto& arm : c.arms) names += (names.empty() ? "" : ", ") + arm.name;
  h << "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" "
       "content=\"width=device-width,initial-scale=1\"><title>rsi compare: "
    << html_escape(names) << "</title><style>" << html::kStyle << "</style></head><body>\n";
  h << "<h1>rsi compare</h1><p class=\"sub\">" << c.arms.size() << " arm(s): " << html_escape(names)
    << " &middot; baseline " << html_escape(c.arms[c.baseline].name) << " &middot; means over seeds with 95% "
    << "bootstrap intervals (" << kBootstrapResamples << " resamples, seed " << kBootstrapSeed
    << "); differences paired by seed</p>\n";
  h << "<h2>Capability</h2><div class=\"grid2\">" << capability_figure(c) << "</div>\n";
  h << "<h2>Figures by arm</h2>";
  html_table(h, c);
  h << "<h2>Runs</h2><table><tr><th class=\"l\">arm</th><th>seed</th><th>generations</th><th>final test</th>"
       "<th>model-seconds</th><th>wall s</th><th class=\"l\">directory</th></tr>\n";
  for (const auto& arm : c.arms)
    for (const auto& r : arm.runs)
      h << "<tr><td class=\"l\">" << html_escape(arm.name) << "</td><td>" << r.seed << "</td><td>"
        << r.generations.size() << "</td><td>" << fixed(r.final_test, 4) << "</td><td>" << fixed(r.model_seconds, 1)
        << "</td><td>" << fixed(r.wall_seconds, 1) << "</td><td class=\"l\">" << html_escape(r.dir) << "</td></tr>\n";
  h << "</table>\n<p class=\"sub\">Written by <code>rsi compare</code> from the HDF5 lineages; self-contained (no "
       "network, no script).</p></body></html>\n";
  return h.str();
}

}  // namespace rsi::runtime
