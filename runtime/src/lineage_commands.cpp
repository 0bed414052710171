// Commands that read a run's HDF5 lineage: verify, lineage, show, export, eval.
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>

#include "rsi/checkpoints/store.h"
#include "rsi/kernels/ops.h"
#include "rsi/monitoring/exporter.h"
#include "rsi/models/data.h"
#include "rsi/models/image_files.h"
#include "rsi/models/network.h"
#include "rsi/models/trainer.h"
#include "rsi/runtime/commands.h"
#include "rsi/runtime/log.h"
#include "rsi/runtime/manifest.h"
#include "json_out.h"
#include "lineage_graph.h"
#include "lineage_view.h"

namespace rsi::runtime {

namespace {

int verify(const std::string& run, bool json) {
  const checkpoints::VerifyReport report = checkpoints::verify_run(run);
  if (json) {
    std::string problems;
    for (const auto& p : report.problems) problems += (problems.empty() ? "" : ", ") + monitoring::json_string(p);
    std::printf("{\"run\": %s, \"ok\": %s, \"generations\": %d, \"last_good_generation\": %d, \"latest\": %s, "
                "\"problems\": [%s]}\n",
                monitoring::json_string(run).c_str(), report.ok() ? "true" : "false", report.generations,
                report.last_good_generation, monitoring::json_string(report.latest).c_str(), problems.c_str());
    return report.ok() ? kExitOk : kExitFailure;
  }
  for (const auto& p : report.problems) std::printf("PROBLEM %s\n", p.c_str());
  if (!report.latest.empty()) std::printf("LATEST: %s\n", report.latest.c_str());
  if (report.ok()) {
    std::printf("verified %d generation(s) of %s: every hash recomputes and the chain is intact\n", report.generations,
                run.c_str());
    return kExitOk;
  }
  std::printf("%zu problem(s); the chain verifies up to generation %d\n", report.problems.size(),
              report.last_good_generation);
  return kExitFailure;
}

struct LineageArgs {
  std::string dir, format = "text", out;
  bool json = false;
  LineageViewOptions view;
};

int lineage(const LineageArgs& a) {
  const RunLineage run = read_lineage(a.dir, false);
  const LineageView view = build_lineage_view(run, a.view);
  std::string output = a.json                ? lineage_view_json(view, run, a.dir)
                       : a.format == "text" ? lineage_view_text(view, run)
                                            : lineage_view_dot(view, run);
  if (!a.json && a.format == "svg") output = dot_to_svg(output);
  if (a.out.empty()) {
    std::fputs(output.c_str(), stdout);
    return kExitOk;
  }
  std::ofstream file(a.out);
  file << output;
  if (!file.flush()) {
    logf(LogLevel::Error, "cannot write %s: %s (is the folder there and writable?)", a.out.c_str(),
                 std::strerror(errno));
    return kExitFailure;
  }
  std::printf("wrote %s (%zu of %zu models drawn one by one, %zu generations)\n", a.out.c_str(), view.drawn,
              view.run_models, view.run_generations);
  return kExitOk;
}

// Line-by-line difference of two genome texts (the design diff).
std::string genome_diff(const std::string& parent, const std::string& child) {
  std::vector<std::string> a, b;
  std::string line;
  for (std::istringstream in(parent); std::getline(in, line);) a.push_back(line);
  for (std::istringstream in(child); std::getline(in, line);) b.push_back(line);
  // Longest common subsequence, then walk it.
  std::vector<std::vector<int>> lcs(a.size() + 1, std::vector<int>(b.size() + 1, 0));
  for (std::size_t i = a.size(); i-- > 0;)
    for (std::size_t j = b.size(); j-- > 0;)
      lcs[i][j] = a[i] == b[j] ? lcs[i + 1][j + 1] + 1 : std::max(lcs[i + 1][j], lcs[i][j + 1]);
  std::string out;
  std::size_t i = 0, j = 0;
  while (i < a.size() || j < b.size()) {
    if (i < a.size() && j < b.size() && a[i] == b[j]) ++i, ++j;
    else if (j < b.size() && (i == a.size() || lcs[i][j + 1] >= lcs[i + 1][j])) out += "  + " + b[j++] + "\n";
    else out += "  - " + a[i++] + "\n";
  }
  return out.empty() ? "  (no change: same genome)\n" : out;
}

std::string show_json(const std::string& run, const checkpoints::StoredModel& model,
                      const checkpoints::StoredModel* parent) {
  const auto& r = model.record;
  const auto& m = r.metrics;
  std::vector<std::string> parents, per_class;
  for (auto p : r.parents) parents.push_back(std::to_string(p));
  for (double c : m.test_per_class) per_class.push_back(json_number(c));
  JsonObject metrics;
  metrics.number("val_accuracy", m.val_accuracy).number("test_accuracy", m.test_accuracy);
  metrics.integer("parameters", m.parameters).integer("flops", m.flops).number("wall_seconds", m.wall_seconds);
  metrics.integer("samples", m.samples).raw("test_per_class", json_array(per_class));
  JsonObject o;
  o.text("run", run).id("id", r.id).integer("generation", r.generation).text("status", scheduler::status_name(r.status));
  o.text("op", r.op).text("description", r.description).text("failure", r.failure);
  o.raw("parents", json_array(parents)).raw("metrics", metrics.str());
  o.boolean("inherited", r.inherited).boolean("function_preserving", r.function_preserving);
  o.text("provenance", model.provenance_hash).text("weights_digest", r.weights_digest);
  if (parent) {
    const auto& pm = parent->record.metrics;
    JsonObject gain;
    gain.id("parent", parent->record.id).number("validation", m.val_accuracy - pm.val_accuracy);
    gain.number("hidden_test", m.test_accuracy - pm.test_accuracy);
    o.raw("gain", gain.str()).text("design_diff", genome_diff(parent->record.genome_yaml, r.genome_yaml));
  } else {
    o.null("gain").null("design_diff");
  }
  return o.text("genome", r.genome_yaml).str();
}

int show(const std::string& run, std::uint64_t id, bool json) {
  const auto models = all_models(run);
  const auto it = models.find(id);
  if (it == models.end()) {
    logf(LogLevel::Error, "model %llu is not in %s (models %llu..%llu)", static_cast<unsigned long long>(id),
                 run.c_str(), static_cast<unsigned long long>(models.begin()->first),
                 static_cast<unsigned long long>(models.rbegin()->first));
    return kExitBadInput;
  }
  const auto& r = it->second.record;
  const auto& m = r.metrics;
  const auto parent_it = r.parents.empty() ? models.end() : models.find(r.parents[0]);
  const checkpoints::StoredModel* parent = parent_it == models.end() ? nullptr : &parent_it->second;
  if (json) {
    std::printf("%s\n", show_json(run, it->second, parent).c_str());
    return kExitOk;
  }
  std::printf("model %llu  generation %d  %s  (%s)\n", static_cast<unsigned long long>(id), r.generation,
              scheduler::status_name(r.status), r.op.c_str());
  if (!r.failure.empty()) std::printf("failure: %s\n", r.failure.c_str());
  std::printf("design: %s\n", r.description.c_str());
  std::printf("parents:");
  for (auto p : r.parents) std::printf(" %llu", static_cast<unsigned long long>(p));
  std::printf("%s\n", r.parents.empty() ? " none (seed)" : "");
  std::printf("validation %.4f  hidden test %.4f  parameters %lld  FLOPs/sample %lld  wall %.1f s  samples %lld\n",
              m.val_accuracy, m.test_accuracy, static_cast<long long>(m.parameters), static_cast<long long>(m.flops),
              m.wall_seconds, static_cast<long long>(m.samples));
  if (!m.test_per_class.empty()) {
    // A run of task kind images may name its classes (task.classes, kept in the run's data line).
    std::vector<std::string> names;
    if (const auto files = checkpoints::generation_files(run); !files.empty())
      if (const checkpoints::RunInfo info = checkpoints::read_generation(files.front(), false).run; !info.data.empty()) {
        scheduler::TaskSpec task;
        apply_image_task_yaml(info.data, run + " (its data)", task);
        names = task.class_names;
      }
    std::printf("per-class test accuracy:");
    for (std::size_t c = 0; c < m.test_per_class.size(); ++c) {
      if (names.size() == m.test_per_class.size()) std::printf(" %s", names[c].c_str());
      std::printf(" %.3f", m.test_per_class[c]);
    }
    std::printf("\n");
  }
  std::printf("inherited weights: %s%s\n", r.inherited ? "yes" : "no",
              r.function_preserving ? " (function-preserving morphism)" : "");
  std::printf("provenance %s  weights %s\n", it->second.provenance_hash.c_str(), r.weights_digest.c_str());
  if (parent) {
    std::printf("gain over parent %llu: %+.4f validation, %+.4f hidden test\n",
                static_cast<unsigned long long>(r.parents[0]), m.val_accuracy - parent->record.metrics.val_accuracy,
                m.test_accuracy - parent->record.metrics.test_accuracy);
    std::printf("design diff against parent %llu:\n%s", static_cast<unsigned long long>(r.parents[0]),
                genome_diff(parent->record.genome_yaml, r.genome_yaml).c_str());
  }
  std::printf("genome:\n%s", r.genome_yaml.c_str());
  return kExitOk;
}

int export_model(const std::string& run, std::uint64_t id, const std::string& format, const std::string& out) {
  if (format == "onnx")
    checkpoints::export_onnx(run, id, out);
  else
    checkpoints::export_model(run, id, out);
  std::printf("wrote model %llu of %s to %s (%s)\n", static_cast<unsigned long long>(id), run.c_str(), out.c_str(),
              format.c_str());
  return kExitOk;
}

// The logits of `net` for every image of `data`, [N][classes] row-major, evaluation mode.
std::vector<float> logits_of(models::Network& net, const models::Dataset& data) {
  const int classes = net.input().classes, batch = 256;
  std::vector<float> out(static_cast<std::size_t>(data.size()) * classes);
  for (std::int64_t first = 0; first < data.size(); first += batch) {
    const int n = static_cast<int>(std::min<std::int64_t>(batch, data.size() - first));
    const kernels::Tensor& logits = net.forward(data.image(first), n, {});
    std::copy_n(logits.data(), static_cast<std::size_t>(n) * classes, out.begin() + first * classes);
  }
  return out;
}

// A float32 [rows][cols] array as a NumPy .npy file (format 1.0), readable with numpy.load.
void write_npy(const std::string& path, const std::vector<float>& values, std::int64_t rows, int cols) {
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(rows) + ", " +
                       std::to_string(cols) + "), }";
  header.append(64 - (10 + header.size() + 1) % 64, ' ');  // magic + version + length: 10 bytes; ends in \n
  header += '\n';
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  const std::uint16_t length = static_cast<std::uint16_t>(header.size());
  out.write("\x93NUMPY\x01\x00", 8);
  out.put(static_cast<char>(length & 0xff)).put(static_cast<char>(length >> 8));
  out << header;
  out.write(reinterpret_cast<const char*>(values.data()), static_cast<std::streamsize>(values.size() * sizeof(float)));
  if (!out.flush()) throw std::runtime_error(path + ": cannot write the logits: " + std::strerror(errno));
}

struct EvalOptions {
  std::string file, data_dir = models::kFashionMnistDir, logits;
  int threads = 0;
  std::int64_t limit = 0;  // the first `limit` test images (0 = all)
};

int eval(const EvalOptions& o) {
  const scheduler::ModelRecord r = checkpoints::read_exported_model(o.file);
  if (!r.weights) {
    logf(LogLevel::Error, "%s holds no weights for model %llu", o.file.c_str(), static_cast<unsigned long long>(r.id));
    return kExitBadInput;
  }
  kernels::set_num_threads(o.threads);
  const checkpoints::RunInfo run = checkpoints::read_exported_run(o.file);
  models::Network net(models::from_yaml(r.genome_yaml, o.file), run.input);
  if (static_cast<std::int64_t>(r.weights->params.size()) != net.parameter_count() ||
      static_cast<std::int64_t>(r.weights->state.size()) != net.state().numel()) {
    logf(LogLevel::Error,
         "%s: the weights (%zu values) do not fit the genome (%lld parameters)",
         o.file.c_str(), r.weights->params.size(), static_cast<long long>(net.parameter_count()));
    return kExitBadInput;
  }
  std::copy(r.weights->params.begin(), r.weights->params.end(), net.parameters().data());
  std::copy(r.weights->state.begin(), r.weights->state.end(), net.state().data());
  models::Dataset test;
  if (run.data.empty()) {
    test = models::load_fashion_mnist_test(o.data_dir);
  } else {  // kind images: the hidden test set the run named, checked against its fingerprint
    scheduler::TaskSpec task;
    apply_image_task_yaml(run.data, o.file + " (its run's data)", task);
    test = models::load_images(task.test_files, task.layout, run.input.classes);
    char fingerprint[32];
    std::snprintf(fingerprint, sizeof fingerprint, "test=%016llx",
                  static_cast<unsigned long long>(models::data_fingerprint(test)));
    if (!run.data_fingerprint.empty() && run.data_fingerprint.find(fingerprint) == std::string::npos) {
      logf(LogLevel::Error,
           "the test set (%s) is not the one the run was tested on: its fingerprint is %s, the run recorded %s",
           task.test_files.file.empty() ? task.test_files.images.c_str() : task.test_files.file.c_str(),
                   fingerprint, run.data_fingerprint.c_str());
      return kExitFailure;
    }
  }
  const bool all = o.limit <= 0 || o.limit >= test.size();
  if (!all) {
    std::vector<std::int64_t> first(static_cast<std::size_t>(o.limit));
    for (std::int64_t i = 0; i < o.limit; ++i) first[static_cast<std::size_t>(i)] = i;
    test = models::subset(test, first);
  }
  if (!o.logits.empty()) {
    write_npy(o.logits, logits_of(net, test), test.size(), net.input().classes);
    std::printf("wrote the logits [%lld, %d] to %s\n", static_cast<long long>(test.size()), net.input().classes,
                o.logits.c_str());
  }
  const models::Evaluation e = models::evaluate(net, test);
  std::printf("model %llu: hidden test accuracy %.4f (recorded %.4f) on %lld images, mean loss %.4f\n",
              static_cast<unsigned long long>(r.id), e.accuracy, r.metrics.test_accuracy,
              static_cast<long long>(e.count), e.mean_loss);
  std::printf("per-class:");
  for (double c : e.per_class) std::printf(" %.3f", c);
  std::printf("\n");
  if (!all) {
    std::printf("(the first %lld images only: not compared with the recorded accuracy)\n", static_cast<long long>(test.size()));
    return kExitOk;
  }
  if (std::abs(e.accuracy - r.metrics.test_accuracy) > 1e-9) {
    log_error("the accuracy differs from the recorded one");
    return kExitFailure;
  }
  return kExitOk;
}

}  // namespace

void add_lineage_commands(CLI::App& app, std::function<int()>& run) {
  {
    auto dir = std::make_shared<std::string>();
    auto json = std::make_shared<bool>(false);
    CLI::App* cmd = app.add_subcommand("verify",
                                       "Recompute a run's hash chain from the stored bytes. Any changed byte in a genome,\n"
                                       "weight or metric is named (generation, model, field); exit code 1 then. Says what\n"
                                       "LATEST names and whether it agrees with the files.");
    cmd->add_option("run", *dir, "Run directory")->required()->check(existing_directory());
    cmd->add_flag("--json", *json,
                  "One JSON object: run, ok, generations, last_good_generation, latest, problems (a list of strings)");
    cmd->callback([&run, dir, json] { run = [dir, json] { return guarded("verify", [&] { return verify(*dir, *json); }); }; });
  }
  {
    auto a = std::make_shared<LineageArgs>();
    CLI::App* cmd = app.add_subcommand(
        "lineage",
        "Print a run's family tree, one row per generation (text, Graphviz dot, SVG through 'dot', or JSON),\n"
        "with the path to the best model highlighted. Pruned so that a 10,000-model run stays readable: a dead\n"
        "branch (no descendant in the final population or on the best path) joins its generation's\n"
        "'+N others (best val ...)' node; a generation draws at most " + std::to_string(kMaxModelsPerRow) +
            " models (the best path, then the\n"
        "population, then by validation accuracy); at most " + std::to_string(kMaxRows) + " generation rows, the first " +
            std::to_string(kHeadRows) + " and the last " + std::to_string(kMaxRows - kHeadRows) + ", the\n"
        "generations between folded into one '... N earlier models' node; Graphviz scales a drawing larger\n"
        "than 3960 pt a side down to it. --all draws every selected model, unbounded.");
    cmd->add_option("run", a->dir, "Run directory")->required()->check(existing_directory());
    CLI::Option* format =
        cmd->add_option("--format", a->format, "text | dot | svg")->capture_default_str()->check(CLI::IsMember({"text", "dot", "svg"}));
    cmd->add_flag("--json", a->json,
                  "One JSON object: run, best, models, generations, selected, drawn, view, rows, nodes (models\n"
                  "with id, generation, parents, op, accuracies, status, on_best_path; 'others' and 'earlier'\n"
                  "groups with their models), edges")
        ->excludes(format);
    cmd->add_flag("--best-path", a->view.best_path, "Only the best model's line of first parents back to a seed, with\n"
                                                    "their crossover mates");
    cmd->add_flag("--population", a->view.population, "Only the final population and all its ancestors");
    cmd->add_option("--last", a->view.last, "Only the last K generations, the selected models before them folded\n"
                                            "into one '... N earlier models' node")->check(CLI::PositiveNumber);
    cmd->add_flag("--all", a->view.all, "No pruning: every selected model drawn, no bound on the picture's size");
    cmd->add_option("--out", a->out, "Write to this file instead of standard output");
    cmd->callback([&run, a] { run = [a] { return guarded("lineage", [&] { return lineage(*a); }); }; });
  }
  {
    struct A {
      std::string dir;
      std::uint64_t id = 0;
      bool json = false;
    };
    auto a = std::make_shared<A>();
    CLI::App* cmd = app.add_subcommand("show", "Show one model: genome, metrics, parents, and the design diff against its\n"
                                               "parent with the gain it brought.");
    cmd->add_option("run", a->dir, "Run directory")->required()->check(existing_directory());
    cmd->add_option("model", a->id, "Model id")->required();
    cmd->add_flag("--json", a->json,
                  "One JSON object: run, id, generation, status, op, description, failure, parents, metrics,\n"
                  "inherited, function_preserving, provenance, weights_digest, gain and design_diff against the\n"
                  "first parent (null for a seed), genome (YAML text)");
    cmd->callback([&run, a] { run = [a] { return guarded("show", [&] { return show(a->dir, a->id, a->json); }); }; });
  }
  {
    struct A {
      std::string dir, out, format = "hdf5";
      std::uint64_t id = 0;
    };
    auto a = std::make_shared<A>();
    CLI::App* cmd = app.add_subcommand("export", "Write one model to a standalone file: HDF5 (genome, weights by name, metrics,\n"
                                                 "provenance; rsi eval reads it) or ONNX (the network as a graph: input 'image'\n"
                                                 "[N,1,28,28] in [0,1], output 'logits' [N,10]; genome and run in its metadata).");
    cmd->add_option("run", a->dir, "Run directory")->required()->check(existing_directory());
    cmd->add_option("model", a->id, "Model id")->required();
    cmd->add_option("--format", a->format, "hdf5 | onnx")->capture_default_str()->check(CLI::IsMember({"hdf5", "onnx"}));
    cmd->add_option("--out", a->out, "Output file (.h5 or .onnx)")->required();
    cmd->callback([&run, a] {
      run = [a] { return guarded("export", [&] { return export_model(a->dir, a->id, a->format, a->out); }); };
    });
  }
  {
    auto a = std::make_shared<EvalOptions>();
    CLI::App* cmd = app.add_subcommand("eval", "Evaluate an exported model file on the hidden test set; exit code 1 when the\n"
                                               "accuracy differs from the one recorded in the file. A run of task kind images\n"
                                               "is evaluated on the test set its manifest named (the path and fingerprint\n"
                                               "kept in the file: a changed test set is exit code 1).");
    cmd->add_option("file", a->file, "Exported model (.h5, from rsi export)")->required()->check(existing_file());
    cmd->add_option("--data-dir", a->data_dir, "Directory with the Fashion-MNIST IDX files (task kind fashion_mnist)")->capture_default_str();
    cmd->add_option("--threads", a->threads, "CPU threads (0 = all cores)")->capture_default_str();
    cmd->add_option("--limit", a->limit, "Evaluate the first N test images only, without comparing with the\n"
                                         "recorded accuracy (0 = all 10,000)")->capture_default_str()->check(CLI::NonNegativeNumber);
    cmd->add_option("--logits", a->logits, "Also write the logits [N, 10] as a float32 NumPy .npy file (numpy.load)");
    cmd->callback([&run, a] { run = [a] { return guarded("eval", [&] { return eval(*a); }); }; });
  }
}

}  // namespace rsi::runtime
