// `rsi report RUN --out FILE`: one self-contained HTML page about a run — capability per generation
// (validation and hidden test), gain per loop, design skill, accuracy against parameters with the
// Pareto front, per-class hidden-test accuracy of the best model, the monitors (Goodhart gap, class
// disparity), governance events, failures and the lineage tree (Graphviz SVG of the pruned view, lineage_view.h).
//
// Every chart is drawn here as inline SVG, so the page needs no network, no script and no font
// download to be read, and the same lineage gives the same page byte for byte. Each chart is a
// <figure class="chart" data-chart=NAME> whose data points carry class "mark": the browser test
// (tests/integration/report.sh) counts them and fails on an empty chart.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "html_chart.h"
#include "lineage_graph.h"
#include "lineage_view.h"
#include "progress.h"
#include "rsi/runtime/commands.h"

namespace rsi::runtime {

namespace {

namespace fs = std::filesystem;
using namespace html;  // NOLINT(google-build-using-namespace): the page is made of these helpers

struct Report {
  const RunLineage& run;
  std::vector<int> generations;  // generation numbers, in order
  int last_generation = 0;

  const scheduler::ModelRecord* model(std::uint64_t id) const {
    const auto it = run.models.find(id);
    return it == run.models.end() ? nullptr : &it->second.record;
  }

  std::string capability() const {
    std::vector<std::pair<double, double>> best_val, best_test, median_val, median_test;
    std::vector<double> all;
    for (const auto& g : run.generations) {
      best_val.emplace_back(g.generation, g.best_val);
      best_test.emplace_back(g.generation, g.best_model_test);
      median_val.emplace_back(g.generation, g.median_val);
      median_test.emplace_back(g.generation, g.median_test);
      all.insert(all.end(), {g.best_val, g.best_model_test, g.median_val, g.median_test});
    }
    const auto [lo, hi] = padded_range(all, 0.0, 1.0);
    Plot p(generations.front(), generations.back(), lo, hi);
    int marks = 0;
    std::string svg = svg_open() + p.axes("generation", "accuracy", true);
    svg += p.line(median_val, kPalette[0], true, "median validation", &marks);
    svg += p.line(median_test, kPalette[1], true, "median hidden test", &marks);
    svg += p.line(best_val, kPalette[0], false, "best validation", &marks);
    svg += p.line(best_test, kPalette[1], false, "hidden test of the best", &marks);
    svg += "</svg>";
    return figure("capability", "Capability per generation",
                  "Population after selection. The best model is chosen on validation accuracy only; its hidden-test "
                  "accuracy (the official test set, never used for selection) is the honest capability.",
                  svg, marks,
                  legend_html({{"best validation", kPalette[0]},
                               {"hidden test of the best", kPalette[1]},
                               {"median validation", kPalette[0], true},
                               {"median hidden test", kPalette[1], true}}));
  }

  // Bars from zero, green up and red down, one per designed generation.
  std::string gain() const {
    std::vector<double> values{0.0};
    for (const auto& g : run.generations)
      if (g.generation > 0) values.push_back(g.gain);
    const auto [lo, hi] = padded_range(values, -1.0, 1.0);
    int marks = 0;
    std::string svg;
    if (values.size() > 1) {
      const int first_designed = std::max(generations.front(), 1);
      Plot p(first_designed - 0.5, generations.back() + 0.5, lo, hi);
      svg = svg_open() + p.axes("generation", "gain in best validation accuracy", true);
      const double step = p.x(1) - p.x(0), zero = p.y(0);
      for (const auto& g : run.generations) {
        if (g.generation == 0) continue;
        const double top = std::min(zero, p.y(g.gain)), height = std::max(std::abs(p.y(g.gain) - zero), 1.0);
        svg += "<rect class=\"mark\" x=\"" + px(p.x(g.generation) - step * 0.35) + "\" y=\"" + px(top) + "\" width=\"" +
               px(step * 0.7) + "\" height=\"" + px(height) + "\" fill=\"" + (g.gain < 0 ? "#d62728" : "#2ca02c") +
               "\"><title>generation " + std::to_string(g.generation) + ": gain " + signed_num(g.gain) +
               "</title></rect>";
        ++marks;
      }
      svg += "<line class=\"axis\" x1=\"" + px(Plot::kLeft) + "\" x2=\"" + px(Plot::kWidth - Plot::kRight) +
             "\" y1=\"" + px(zero) + "\" y2=\"" + px(zero) + "\"/></svg>";
    }
    return figure("gain", "Capability gain per loop",
                  "Best validation accuracy of the population minus that of the generation before (elitist selection "
                  "keeps it at or above zero; other selections may lose ground).",
                  svg, marks, "", "no designed generation yet (only the seeds were evaluated)");
  }

  std::string design_skill() const {
    std::vector<std::pair<double, double>> overall;
    std::map<std::uint64_t, std::vector<std::pair<double, double>>> by_lineage;
    std::vector<double> all{0.0};
    for (const auto& g : run.generations) {
      if (g.generation == 0) continue;
      overall.emplace_back(g.generation, g.design_skill);
      all.push_back(g.design_skill);
      for (const auto& [lineage, skill] : g.design_skill_by_lineage) {
        by_lineage[lineage].emplace_back(g.generation, skill);
        all.push_back(skill);
      }
    }
    int marks = 0;
    std::string svg;
    std::vector<LegendEntry> legend{{"all designed children", "#222222"}};
    if (!overall.empty()) {
      const auto [lo, hi] = padded_range(all, -1.0, 1.0);
      Plot p(generations.front(), generations.back(), lo, hi);
      svg = svg_open() + p.axes("generation", "mean gain of children over their parent", true);
      svg += "<line class=\"zero\" x1=\"" + px(Plot::kLeft) + "\" x2=\"" + px(Plot::kWidth - Plot::kRight) +
             "\" y1=\"" + px(p.y(0)) + "\" y2=\"" + px(p.y(0)) + "\"/>";
      int k = 2;
      if (by_lineage.size() > 1) {
        for (const auto& [lineage, points] : by_lineage) {
          const std::string color = kPalette[k++ % 10];
          svg += p.line(points, color, true, "designer lineage of seed " + std::to_string(lineage), &marks);
          legend.push_back({"lineage of seed " + std::to_string(lineage), color, true});
        }
      }
      svg += p.line(overall, "#222222", false, "all designed children", &marks);
      svg += "</svg>";
    }
    return figure("design_skill", "Design skill",
                  "Mean validation gain of each generation's trained children over their first parent; dashed: "
                  "grouped by the seed their designer genes descend from (how well each lineage designs).",
                  svg, marks, legend_html(legend), "no designed generation yet");
  }

  std::string pareto() const {
    std::vector<const scheduler::ModelRecord*> trained;
    std::vector<double> accuracies;
    double pmin = std::numeric_limits<double>::infinity(), pmax = 0;
    for (const auto& [id, m] : run.models)
      if (m.record.trained() && m.record.metrics.parameters > 0) {
        trained.push_back(&m.record);
        accuracies.push_back(m.record.metrics.test_accuracy);
        pmin = std::min(pmin, static_cast<double>(m.record.metrics.parameters));
        pmax = std::max(pmax, static_cast<double>(m.record.metrics.parameters));
      }
    int marks = 0;
    std::string svg;
    std::size_t front_size = 0;
    if (!trained.empty()) {
      // The front: models no smaller model beats on hidden-test accuracy, by parameters ascending.
      auto sorted = trained;
      std::sort(sorted.begin(), sorted.end(), [](const auto* a, const auto* b) {
        return a->metrics.parameters != b->metrics.parameters ? a->metrics.parameters < b->metrics.parameters
                                                              : a->metrics.test_accuracy > b->metrics.test_accuracy;
      });
      std::vector<const scheduler::ModelRecord*> front;
      double best = -1;
      for (const auto* m : sorted)
        if (m->metrics.test_accuracy > best) front.push_back(m), best = m->metrics.test_accuracy;
      front_size = front.size();
      const auto [lo, hi] = padded_range(accuracies, 0.0, 1.0);
      Plot p(pmin / 1.25, pmax * 1.25, lo, hi, true);
      svg = svg_open() + p.axes("parameters (log scale)", "hidden-test accuracy", false);
      std::string steps;
      for (std::size_t i = 0; i < front.size(); ++i) {
        const double fx = p.x(static_cast<double>(front[i]->metrics.parameters)),
                     fy = p.y(front[i]->metrics.test_accuracy);
        if (i > 0) steps += px(fx) + "," + px(p.y(front[i - 1]->metrics.test_accuracy)) + " ";
        steps += px(fx) + "," + px(fy) + " ";
      }
      svg += "<polyline fill=\"none\" stroke=\"#d62728\" stroke-width=\"1.5\" points=\"" + steps + "\"/>";
      const std::set<const scheduler::ModelRecord*> on_front(front.begin(), front.end());
      for (const auto* m : trained) {
        const bool is_front = on_front.count(m) > 0, is_best = m->id == run.best_id;
        svg += "<circle class=\"mark" + std::string(is_front ? " front" : "") + "\" cx=\"" +
               px(p.x(static_cast<double>(m->metrics.parameters))) + "\" cy=\"" + px(p.y(m->metrics.test_accuracy)) +
               "\" r=\"" + (is_best ? "6" : "4") + "\" fill=\"" + generation_color(m->generation, last_generation) +
               "\" stroke=\"" +
               (is_best    ? "#000"
                : is_front ? "#d62728"
                           : "none") +
               "\" stroke-width=\"" + (is_best ? "2" : "1.5") + "\"><title>model " + std::to_string(m->id) +
               " (generation " + std::to_string(m->generation) + ", " + html_escape(m->op) +
               "): " + std::to_string(m->metrics.parameters) + " parameters, hidden test " +
               num(m->metrics.test_accuracy) + ", validation " + num(m->metrics.val_accuracy) +
               (is_front ? ", on the Pareto front" : "") + "</title></circle>";
        ++marks;
      }
      svg += "</svg>";
    }
    return figure("pareto", "Accuracy against parameters",
                  "Every trained model; colour from light (early generations) to dark (late). Red outline and step "
                  "line: the Pareto front (" +
                      std::to_string(front_size) +
                      " models that no smaller model beats on hidden-test accuracy). Black outline: the best model by "
                      "validation.",
                  svg, marks,
                  legend_html({{"generation 0", generation_color(0, last_generation)},
                               {"generation " + std::to_string(last_generation),
                                generation_color(last_generation, last_generation)},
                               {"Pareto front", "#d62728"}}),
                  "no trained model");
  }

  // Rows: classes; columns: generations; a cell is the best model's hidden-test accuracy on that class.
  std::string per_class() const {
    static const char* const kFashionClasses[] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                  "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
    std::size_t classes = 0;
    double lo = 1, hi = 0;
    for (const auto& g : run.generations)
      if (const auto* m = model(g.best_id)) {
        classes = std::max(classes, m->metrics.test_per_class.size());
        for (double v : m->metrics.test_per_class) lo = std::min(lo, v), hi = std::max(hi, v);
      }
    int marks = 0;
    std::string svg;
    if (classes > 0) {
      const double left = 96, top = 8, right = 16, row = 20, bottom = 40;
      const double height = top + row * static_cast<double>(classes) + bottom;
      const double col = (Plot::kWidth - left - right) / static_cast<double>(run.generations.size());
      svg = svg_open(height);
      for (std::size_t c = 0; c < classes; ++c)
        svg += "<text class=\"tick\" x=\"" + px(left - 6) + "\" y=\"" + px(top + row * (c + 0.5) + 4) +
               "\" text-anchor=\"end\">" + (classes == 10 ? kFashionClasses[c] : "class " + std::to_string(c)) +
               "</text>";
      const int label_every = std::max(1, static_cast<int>(std::ceil(24 / col)));
      for (std::size_t k = 0; k < run.generations.size(); ++k) {
        const auto& g = run.generations[k];
        const auto* m = model(g.best_id);
        const double x = left + col * static_cast<double>(k);
        if (static_cast<int>(k) % label_every == 0)
          svg += "<text class=\"tick\" x=\"" + px(x + col / 2) + "\" y=\"" + px(top + row * classes + 14) +
                 "\" text-anchor=\"middle\">" + std::to_string(g.generation) + "</text>";
        if (!m) continue;
        for (std::size_t c = 0; c < m->metrics.test_per_class.size(); ++c) {
          const double v = m->metrics.test_per_class[c];
          const double t = hi - lo > 1e-9 ? (v - lo) / (hi - lo) : 0.5;
          // Red (the model's weakest classes) through yellow to green.
          char fill[16];
          std::snprintf(fill, sizeof fill, "#%02x%02x%02x",
                        static_cast<int>(t < 0.5 ? 215 + 39 * t * 2 : 254 - 228 * (t - 0.5) * 2),
                        static_cast<int>(t < 0.5 ? 48 + 176 * t * 2 : 224 - 72 * (t - 0.5) * 2),
                        static_cast<int>(t < 0.5 ? 39 + 100 * t * 2 : 139 - 59 * (t - 0.5) * 2));
          svg += "<rect class=\"mark\" x=\"" + px(x + 0.5) + "\" y=\"" + px(top + row * c + 0.5) + "\" width=\"" +
                 px(col - 1) + "\" height=\"" + px(row - 1) + "\" fill=\"" + fill + "\"><title>generation " +
                 std::to_string(g.generation) + ", model " + std::to_string(m->id) + ", " +
                 (classes == 10 ? kFashionClasses[c] : "class " + std::to_string(c)) + ": " + num(v) +
                 "</title></rect>";
          if (col >= 38)
            svg += "<text class=\"cell\" x=\"" + px(x + col / 2) + "\" y=\"" + px(top + row * c + 14) +
                   "\" text-anchor=\"middle\">" + num(v, 2) + "</text>";
          ++marks;
        }
      }
      svg += "<text class=\"title\" x=\"" + px((left + Plot::kWidth - right) / 2) + "\" y=\"" + px(height - 6) +
             "\" text-anchor=\"middle\">generation (best model by validation)</text></svg>";
    }
    return figure("per_class", "Per-class hidden-test accuracy of the best model",
                  "One column per generation: the best model by validation, its accuracy on each class of the hidden "
                  "test set. Colour from red (" +
                      num(lo, 3) + ") to green (" + num(hi, 3) +
                      "); a class that stays red is one the lineage does not learn.",
                  svg, marks, "", "the models record no per-class accuracy");
  }

  // Computed from the best model's own metrics, so runs written before the monitors existed show them too.
  std::string monitors() const {
    std::vector<std::pair<double, double>> gap, disparity, worst;
    std::vector<double> all{0.0};
    for (const auto& g : run.generations) {
      const auto* m = model(g.best_id);
      if (!m) continue;
      gap.emplace_back(g.generation, m->metrics.val_accuracy - m->metrics.test_accuracy);
      all.push_back(gap.back().second);
      const auto& pc = m->metrics.test_per_class;
      if (!pc.empty()) {
        const auto [lo, hi] = std::minmax_element(pc.begin(), pc.end());
        disparity.emplace_back(g.generation, *hi - *lo);
        all.push_back(*hi - *lo);
      }
    }
    int marks = 0;
    std::string svg;
    if (!gap.empty()) {
      const auto [lo, hi] = padded_range(all, -1.0, 1.0);
      Plot p(generations.front(), generations.back(), lo, hi);
      svg = svg_open() + p.axes("generation", "accuracy difference", true);
      svg += "<line class=\"zero\" x1=\"" + px(Plot::kLeft) + "\" x2=\"" + px(Plot::kWidth - Plot::kRight) +
             "\" y1=\"" + px(p.y(0)) + "\" y2=\"" + px(p.y(0)) + "\"/>";
      svg += p.line(gap, kPalette[3], false, "Goodhart gap", &marks);
      if (!disparity.empty()) svg += p.line(disparity, kPalette[4], false, "class disparity", &marks);
      svg += "</svg>";
    }
    return figure("monitors", "Monitors: Goodhart gap and class disparity",
                  "Of the best model by validation. Goodhart gap: validation minus hidden-test accuracy (a growing "
                  "gap means the proxy is being gamed). Class disparity: its best minus its worst class on the hidden "
                  "test set.",
                  svg, marks, legend_html({{"Goodhart gap", kPalette[3]}, {"class disparity", kPalette[4]}}));
  }

  // Graphviz's SVG of the pruned view (`rsi lineage`'s default), inlined: the XML prologue, DOCTYPE and
  // namespace declarations (URLs that an HTML page does not need) are dropped so the page holds no
  // external reference at all. data-models: the models the view stands for, drawn or folded.
  std::string lineage_tree() const {
    const LineageView view = build_lineage_view(run, {});
    std::string svg = dot_to_svg(lineage_view_dot(view, run));
    svg.erase(0, svg.find("<svg"));
    for (const std::string attr :
         {" xmlns=\"http://www.w3.org/2000/svg\"", " xmlns:xlink=\"http://www.w3.org/1999/xlink\""})
      for (std::size_t at; (at = svg.find(attr)) != std::string::npos;) svg.erase(at, attr.size());
    std::size_t nodes = 0;
    for (std::size_t at = 0; (at = svg.find("class=\"node\"", at)) != std::string::npos; ++at) ++nodes;
    std::ostringstream s;
    s << "<figure class=\"chart wide\" data-chart=\"lineage\" data-marks=\"" << nodes << "\" data-models=\""
      << view.drawn + view.folded << "\"><h3>Lineage tree</h3><div class=\"scroll\">" << svg
      << "</div><figcaption>One row per generation; " << view.drawn << " of " << view.run_models
      << " models drawn with their parents (dashed: the second parent of a crossover). Filled yellow: the path from "
         "a seed to the best model "
      << run.best_id
      << "; green: the final population; red: failed or refused children (failures are data). Dead branches (no "
         "descendant in the final population or on the path) are folded into each generation's \u201c+N "
         "others\u201d node; at most "
      << kMaxModelsPerRow << " models per generation and " << kMaxRows
      << " generation rows, the middle generations folded (<code>rsi lineage RUN --all</code> draws "
         "every model).</figcaption></figure>\n";
    return s.str();
  }
};


// The page's header: run, host and manifest line, and the summary cards.
void write_header(std::ostringstream& h, const Report& r, const RunLineage& run, const std::string& run_dir) {
  int trained = 0, failed = 0, refused = 0;
  double seconds = 0;
  for (const auto& g : run.generations) {
    trained += g.trained, failed += g.failed, refused += g.refused;
    seconds += g.seconds;
  }
  const auto* best = r.model(run.best_id);
  const auto& info = run.run;
  h << "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" "
       "content=\"width=device-width,initial-scale=1\"><title>rsi report: "
    << html_escape(info.run_name) << "</title><style>" << kStyle << "</style></head><body>\n";
  h << "<h1>rsi report: " << html_escape(info.run_name) << "</h1><p class=\"sub\">run directory "
    << html_escape(run_dir) << " &middot; started " << html_escape(info.start_time) << " &middot; rsi "
    << html_escape(info.program_version) << " (" << html_escape(info.git_commit) << ") &middot; " << info.ranks
    << " rank(s) in groups of " << info.group_size << " on " << html_escape(info.hosts)
    << (info.cpu_kernels.empty() ? "" : " (CPU kernels " + html_escape(info.cpu_kernels) + ")")
    << (info.cuda_settings.empty() ? "" : " (GPU " + html_escape(info.cuda_settings) + ")") << " &middot; manifest "
    << html_escape(info.manifest_hash.substr(0, 16)) << "</p>\n<div class=\"cards\">";
  auto card = [&h](const std::string& value, const std::string& label) {
    h << "<div class=\"card\"><b>" << value << "</b><span>" << label << "</span></div>";
  };
  if (best) {
    card(num(best->metrics.test_accuracy), "hidden-test accuracy of the best model " + std::to_string(best->id));
    card(num(best->metrics.val_accuracy),
         "its validation accuracy (generation " + std::to_string(best->generation) + ")");
  }
  const auto& first = run.generations.front();
  if (const auto* seed_best = r.model(first.best_id))
    card(signed_num(best ? best->metrics.test_accuracy - seed_best->metrics.test_accuracy : 0.0),
         "hidden-test gain over the best of generation " + std::to_string(first.generation));
  card(std::to_string(run.generations.size()),
       "generations (" + std::to_string(first.generation) + ".." + std::to_string(r.last_generation) + ")");
  card(std::to_string(trained) + " / " + std::to_string(failed) + " / " + std::to_string(refused),
       "models trained / failed / refused");
  card(html_escape(fmt_seconds(seconds)), "wall time of the generations");
  h << "</div>\n";
}

void write_generation_table(std::ostringstream& h, const RunLineage& run) {
  h << "<h2>Generations</h2><table><tr><th>gen</th><th>best model</th><th>best val</th><th>its test</th>"
       "<th>median val</th><th>median test</th><th>gain</th><th>design skill</th><th>diversity</th><th>trained</th>"
       "<th>failed</th><th>refused</th><th>seconds</th></tr>\n";
  for (const auto& g : run.generations)
    h << "<tr><td>" << g.generation << "</td><td>" << g.best_id << "</td><td>" << num(g.best_val) << "</td><td>"
      << num(g.best_model_test) << "</td><td>" << num(g.median_val) << "</td><td>" << num(g.median_test) << "</td><td>"
      << signed_num(g.gain) << "</td><td>" << signed_num(g.design_skill) << "</td><td>" << num(g.diversity, 2)
      << "</td><td>" << g.trained << "</td><td>" << g.failed << "</td><td>" << g.refused << "</td><td>"
      << num(g.seconds, 1) << "</td></tr>\n";
  h << "</table>\n";
}

// The failed and refused models, and the governance events, as collapsible tables.
void write_failures_and_events(std::ostringstream& h, const RunLineage& run) {
  std::ostringstream failures;
  int failure_count = 0;
  for (const auto& [id, m] : run.models)
    if (!m.record.trained()) {
      ++failure_count;
      failures << "<tr><td>" << id << "</td><td>" << m.record.generation << "</td><td class=\"l\">"
               << scheduler::status_name(m.record.status) << "</td><td class=\"l\">" << html_escape(m.record.op)
               << "</td><td class=\"l\">" << html_escape(m.record.failure) << "</td></tr>\n";
    }
  h << "<details" << (failure_count > 0 && failure_count <= 20 ? " open" : "")
    << "><summary>Failed and refused models (" << failure_count << ")</summary>";
  if (failure_count > 0)
    h << "<table><tr><th>model</th><th>gen</th><th class=\"l\">status</th><th class=\"l\">operator</th>"
         "<th class=\"l\">reason</th></tr>\n"
      << failures.str() << "</table>";
  else
    h << "<p>none: every designed child trained.</p>";
  h << "</details>\n";

  std::ostringstream events;
  int event_count = 0;
  for (const auto& g : run.generations)
    for (const auto& e : g.events) {
      ++event_count;
      events << "<tr><td>" << e.generation << "</td><td class=\"l\">" << html_escape(e.kind) << "</td><td>"
             << (e.model_id ? std::to_string(e.model_id) : "-") << "</td><td class=\"l\">" << html_escape(e.reason)
             << "</td><td class=\"l\">" << html_escape(e.who) << "</td><td class=\"l\">" << html_escape(e.when)
             << "</td></tr>\n";
    }
  h << "<details" << (event_count > 0 ? " open" : "") << "><summary>Governance events (" << event_count
    << ")</summary>";
  if (event_count > 0)
    h << "<table><tr><th>gen</th><th class=\"l\">kind</th><th>model</th><th class=\"l\">reason</th>"
         "<th class=\"l\">who</th><th class=\"l\">when</th></tr>\n"
      << events.str() << "</table>";
  else
    h << "<p>none recorded.</p>";
  h << "</details>\n";
}

int report(const std::string& run_dir, const std::string& out_path) {
  const RunLineage run = read_lineage(run_dir, false);
  Report r{run, {}, 0};
  for (const auto& g : run.generations) r.generations.push_back(g.generation);
  r.last_generation = r.generations.back();
  const std::string lineage_svg = r.lineage_tree();  // first: a missing Graphviz fails before any work

  std::ostringstream h;
  write_header(h, r, run, run_dir);
  h << "<h2>Capability</h2><div class=\"grid2\">" << r.capability() << r.gain() << r.design_skill() << r.pareto()
    << "</div>\n<h2>Monitors</h2><div class=\"grid2\">" << r.per_class() << r.monitors() << "</div>\n";
  h << "<h2>Lineage</h2><div class=\"grid2\">" << lineage_svg << "</div>\n";
  write_generation_table(h, run);
  write_failures_and_events(h, run);
  if (const auto* best = r.model(run.best_id))
    h << "<details><summary>Genome of the best model " << best->id << "</summary><pre>"
      << html_escape(best->genome_yaml) << "</pre></details>\n";
  h << "<details><summary>Manifest</summary><pre>" << html_escape(run.run.manifest_text) << "</pre></details>\n";
  h << "<p class=\"sub\">Written by <code>rsi report</code> from the HDF5 lineage; self-contained (no network, no "
       "script).</p></body></html>\n";

  const std::string page = h.str();
  if (!html::write_page(page, out_path, "report")) return kExitFailure;
  std::size_t charts = 0;
  for (std::size_t at = 0; (at = page.find("<figure class=\"chart", at)) != std::string::npos; ++at) ++charts;
  std::printf("wrote %s (%zu KiB: %zu charts, %zu models, %zu generations)\n", out_path.c_str(), page.size() / 1024,
              charts, run.models.size(), run.generations.size());
  return kExitOk;
}

}  // namespace

void add_report_command(CLI::App& app, std::function<int()>& run) {
  struct A {
    std::string dir, out;
  };
  auto a = std::make_shared<A>();
  CLI::App* cmd = app.add_subcommand(
      "report",
      "Write one self-contained HTML page about a run (no network needed to view it): capability per generation\n"
      "(validation and hidden test), gain per loop, design skill, accuracy against parameters with the Pareto\n"
      "front, per-class accuracy, monitors, failures, governance events and the lineage tree, pruned as\n"
      "`rsi lineage` prunes it by default (needs Graphviz).");
  cmd->add_option("run", a->dir, "Run directory")->required()->check(existing_directory());
  cmd->add_option("--out", a->out, "HTML file to write (default RUN/report.html)");
  cmd->callback([&run, a] {
    run = [a] {
      const std::string out = a->out.empty() ? (fs::path(a->dir) / "report.html").string() : a->out;
      return guarded("report", [&] { return report(a->dir, out); });
    };
  });
}

}  // namespace rsi::runtime
